"""The classify task's data: labelled texts in, batches and scores out.

Where it sits: between the files and minigpt/finetune.py's training loop for `--task classify`:
`train.tsv / dev.tsv (text<TAB>label) → read_tsv → examples → Tokenizer.encode_batch → ids,
cut to the context → pad_right → (ids, mask, labels) batches → GPTClassifier → classification_loss`,
and at each evaluation `score_examples` (loss and accuracy) on every validation example.

Batches are right-padded: real tokens first, then pads. Attention is causal, so a real token
never looks at the pads to its right, and the classifier finds each text's last real token from
the mask (minigpt/classifier.py explains the pooling).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from minigpt.classifier import GPTClassifier
from minigpt.files import read_text
from minigpt.finetune_config import VAL_FRACTION_DEFAULT, FinetuneConfig
from minigpt.tokenizer_batch import pad_rows



_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only


def read_tsv(path: str | Path) -> tuple[list[str], list[int]]:
    """A classification file: one `text<TAB>label` per line, label an integer id.

    A first line of column names, its label not an integer (e.g. `sentence<TAB>label`, as in
    SST-2), is a header and is skipped (one naming more than two columns is refused: an index
    column would join every text, as it is without a header, where every line starting with an
    integer field is); blank lines and a leading BOM are skipped. Anything else malformed is an
    error naming the line, never a silently dropped example: a first line with an empty label, or
    a text with spaces (`great movie<TAB>l`, a typo), is an example, not a header. A label is ASCII
    digits (`int()` alone would also read `1_0` as 10 and other scripts' digits).

    CSV quoting, as Python's csv.writer and pandas' to_csv(sep="\\t") write it, is undone: a field
    wholly in double quotes, every quote inside it doubled (`"he said ""wow"", loved it"`), is the
    text between them with each `""` one quote (`_csv_unquoted`). Any other quote is part of the
    text (`"great" and "bad"`; SST-2 quotes with `` and ''). A quoted field that goes on past its
    line (a text holding a line end) is refused: an example is one line.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"TSV file {path} is a directory; pass the file itself (e.g. {path / 'dev.tsv'})")
    if not path.is_file():
        raise FileNotFoundError(f"TSV file {path} does not exist")
    texts, labels = [], []
    first, indexed = True, 0  # indexed: the lines whose text starts with an integer field
    # (A BOM, which some editors write first, would otherwise start the first text.)
    # Lines end at "\n" alone (read_text made "\r\n" one): splitlines() would also cut at U+0085,
    # U+2028, form feeds..., which scraped text holds inside its sentences.
    for lineno, line in enumerate(read_text(path).removeprefix("\ufeff").split("\n"), start=1):
        if not line.strip():
            continue
        is_first, first = first, False
        text, tab, label = line.rpartition("\t")  # the label is the last field; text may hold tabs
        text, label = _csv_unquoted(text), _csv_unquoted(label)
        if _opens_a_quote(line) and not (tab and _INTEGER.fullmatch(label.strip())):
            raise ValueError(f"{path}:{lineno}: a quoted text goes on past this line ({line[:60]!r}): it holds a line end, "
                             "and classify reads one example per line; replace the line ends in the texts (e.g. with "
                             "spaces) before writing the file")
        if not tab:
            raise ValueError(f"{path}:{lineno}: expected 'text<TAB>label', found no tab in {line[:60]!r}")
        if not _INTEGER.fullmatch(label.strip()):
            if is_first and label.strip() and not any(c.isspace() for c in text.replace("\t", "")):
                columns = line.split("\t")
                if len(columns) > 2:  # e.g. GLUE's `index<TAB>sentence<TAB>label`: the index would join each text
                    raise ValueError(f"{path}:{lineno}: the header names {len(columns)} columns ({', '.join(columns)}); "
                                     "classify reads two, text<TAB>label: keep just those (e.g. with `cut -f`)")
                continue  # the header
            header = " (a first line is taken for a header only when its columns are names, without spaces)" if is_first else ""
            raise ValueError(f"{path}:{lineno}: label {label!r} is not an integer class id{header}")
        label_id = int(label)
        if label_id < 0:
            raise ValueError(f"{path}:{lineno}: label {label_id} is negative; class ids are 0, 1, 2, ...")
        if not text.strip():
            raise ValueError(f"{path}:{lineno}: empty text")
        indexed += "\t" in text and bool(_INTEGER.fullmatch(text.split("\t", 1)[0].strip()))
        texts.append(text.strip())
        labels.append(label_id)
    if not texts:
        raise ValueError(f"{path} holds no examples (expected lines of 'text<TAB>label')")
    if indexed == len(texts):  # e.g. GLUE's `index<TAB>sentence<TAB>label` without its header
        raise ValueError(f"{path}: every line has 3 or more columns, the first an integer ({texts[0][:40]!r} ...): an index "
                         "column would join every text; classify reads two, text<TAB>label: keep just those (e.g. with `cut -f`)")
    return texts, labels


def _csv_unquoted(field: str) -> str:
    """A CSV-quoted field's text: `"a ""b"" c"` → `a "b" c`. Any other field is returned as it is,
    quotes and all: one whose inner quotes are not all doubled was not written by a CSV writer."""
    inner = field[1:-1]
    if len(field) < 2 or field[0] != '"' or field[-1] != '"' or '"' in inner.replace('""', ""):
        return field
    return inner.replace('""', '"')


def _opens_a_quote(line: str) -> bool:
    """Whether `line` starts a CSV-quoted field that it never closes: an odd number of quotes
    (an opening one, then pairs), as when the field holds a line end and goes on below."""
    return line.startswith('"') and line.count('"') % 2 == 1


Examples = tuple[list[str], list[int]]  # (texts, labels)


def _shuffled(examples: Examples, seed: int, limit: int | None = None) -> Examples:
    """A seeded shuffle, cut to `limit`: a subset of a file sorted by label still mixes labels."""
    texts, labels = examples
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    order = order[:limit]
    return [texts[i] for i in order], [labels[i] for i in order]


def load_classification_data(cfg: FinetuneConfig) -> dict[str, Examples]:
    """{"train": ..., "val": ...} from --data (file, or DIR/train.tsv) and --val-data or DIR/dev.tsv;
    with neither, a seeded val_fraction of --data is held out. Subsets (--max-*) are seeded."""
    data = Path(cfg.data)
    train = _shuffled(read_tsv(data / "train.tsv" if data.is_dir() else data), cfg.seed)
    val_file = Path(cfg.val_data) if cfg.val_data else data / "dev.tsv"
    if cfg.val_data or val_file.is_file():
        if cfg.val_fraction != VAL_FRACTION_DEFAULT:  # it would be ignored: refused, as other unused options are
            raise ValueError(f"--val-fraction holds out part of --data when there is no validation file, but here "
                             f"validation comes from {val_file}: drop --val-fraction")
        val = read_tsv(val_file)
    else:
        n_val = int(len(train[0]) * cfg.val_fraction)
        if n_val == 0:
            raise ValueError(f"{data} has {len(train[0])} example(s): too few to hold out {cfg.val_fraction:.0%} for validation; pass --val-data")
        train, val = (train[0][n_val:], train[1][n_val:]), (train[0][:n_val], train[1][:n_val])
    return {"train": _shuffled(train, cfg.seed, cfg.max_examples), "val": _shuffled(val, cfg.seed + 1, cfg.max_val_examples)}


def examples_fingerprint(data: dict[str, Examples]) -> dict:
    """What a resumed run checks its examples against (minigpt/run_dir.py's `check_data`): each
    split's count, and a hash of its (text, label) pairs sorted, since their order comes from
    --seed, a setting of its own (reported as one when it changes), not from the data."""
    fingerprint: dict = {f"{split} examples": len(texts) for split, (texts, _) in data.items()}
    for split, (texts, labels) in data.items():
        pairs = json.dumps(sorted(zip(texts, labels))).encode()
        fingerprint[f"{split} examples hash"] = hashlib.blake2b(pairs, digest_size=8).hexdigest()
    return fingerprint


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists → (ids (B, T), mask (B, T)), real tokens first, then padding (`pad_rows`).

    Tokenizer.__call__(padding=True) pads texts; this pads ids, since classify examples are
    tokenized and truncated once, when the data is read, not at every batch. Right padding: real
    tokens keep positions 0..n-1 and, attention being causal, never see the pads; the classifier's
    pooling finds them from the mask."""
    ids, mask = pad_rows(rows, pad_id, "right")
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def classification_loss(model: nn.Module, idx: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return model(idx, mask, labels)[1]


@torch.no_grad()
def score_examples(model: GPTClassifier, ids: list[list[int]], labels: list[int], pad_id: int, batch_size: int,
                   rank: int = 0, world: int = 1, *, progress: bool = False) -> dict:
    """The loss (mean cross-entropy) and the accuracy (share of texts whose highest logit is the
    true label) over the whole (sub)set, with what they are made of: {"loss", "accuracy",
    "confusion": [[texts of true class t predicted as p, for each p] for each t], "class_loss":
    [each true class's summed loss]}.

    Every example, not a sample: each evaluation's val loss chooses best/, and a few random batches
    of a dev set of thousands would choose it by noise (SST-2's: 0.731 on the 160 examples that
    20 batches of 8 sample, 0.712 on all 6,735).
    The texts are scored longest first, `batch_size` at a time: a batch of texts of about one
    length pads little, where one drawn at random pads every text to its longest (SST-2's dev set
    in GPT-2 tokens, batches of 8: 2.4 times its real tokens at random, 1.003 times longest
    first). A text's logits do not depend on the others in its batch (right padding, causal
    attention), so the order changes the figures by float rounding alone. Longest first: the
    batch that needs the most memory comes first, not last.
    Under torchrun, process `rank` of `world` scores batches rank, rank + world, ... and the sums
    are added over processes: each text is scored once, in the same batch (so with the same
    padding) as on one process, and every process gets the same answer.
    `progress`: a bar of the texts scored, gone when done (rank 0's alone, as the training bar).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    longest_first = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    batches = [longest_first[i : i + batch_size] for i in range(rank * batch_size, len(ids), world * batch_size)]
    n = model.num_labels
    confusion = torch.zeros(n, n, dtype=torch.float64, device=device)  # [true class, predicted class]: texts
    class_loss = torch.zeros(n, dtype=torch.float64, device=device)  # [true class]: summed loss
    with tqdm(total=sum(map(len, batches)), desc="evaluating", unit="text", leave=False, disable=not progress,
              dynamic_ncols=True) as bar:
        for batch in batches:
            idx, mask = pad_right([ids[i] for i in batch], pad_id)
            y = torch.tensor([labels[i] for i in batch], device=device)
            logits, _ = model(idx.to(device), mask.to(device), y)  # (y: checked there, a label past num_labels refused)
            losses = F.cross_entropy(logits.float(), y, reduction="none")  # each text's: training's loss is their mean
            class_loss.index_add_(0, y, losses.double())
            confusion.index_put_((y, logits.argmax(-1)), torch.ones_like(class_loss[y]), accumulate=True)
            bar.update(len(batch))
    if world > 1:
        dist.all_reduce(confusion)
        dist.all_reduce(class_loss)
    model.train(was_training)
    return {"loss": class_loss.sum().item() / len(ids), "accuracy": confusion.trace().item() / len(ids),
            "confusion": confusion.long().tolist(), "class_loss": class_loss.tolist()}
