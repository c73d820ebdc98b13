"""The classify task's data: labelled texts in, batches and scores out.

Where it sits: between the files and minigpt/finetune.py's training loop for `--task classify`:
`train.tsv / dev.tsv (text<TAB>label) → read_tsv → examples → encode_examples (Tokenizer.encode_batch,
cut to the context) → ids → pad_right → (ids, mask, labels) batches → GPTClassifier → classification_loss`,
and at each evaluation `score_examples` (loss and accuracy) on every validation example. `minigpt
eval CLASSIFIER FILE.tsv` (minigpt/evaluate.py) reads, encodes, pads and scores a test file with the same functions.
A label is a class id (0, 1, 2, ...) or a name (`positive`); names become class ids through
`label_ids` (minigpt/finetune.py's `_class_ids` numbers them), and are the model's id2label.

Batches are right-padded: real tokens first, then pads. Attention is causal, so a real token
never looks at the pads to its right, and the classifier finds each text's last real token from
the mask (minigpt/classifier.py explains the pooling).
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from minigpt.checks import check_flag, first_few
from minigpt.classifier import GPTClassifier
from minigpt.files import read_text
from minigpt.finetune_config import VAL_FRACTION_DEFAULT, FinetuneConfig
from minigpt.progress_bar import progress_bar
from minigpt.run_dir import env_rank
from minigpt.tokenizer_batch import pad_rows

_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only
# A text holding a line end, as a CSV writer quotes it: its first line opens the quote and never
# closes it, its last line closes it and goes on with a tab (the label), the quotes inside doubled.
_OPENS_A_QUOTE = re.compile(r'"(?:[^"]|"")*')  # whole line (fullmatch)
_CLOSES_A_QUOTE = re.compile(r'(?:[^"]|"")*"(?:\t|$)')  # at the line's start (match)
# Below this many examples, a file's width and label<TAB>text checks have too few lines to see a pattern in:
# one title<TAB>body text, or two texts alike, are not an extra column or swapped columns.
FEW_LINES = 4
HEADER_RULE = ("a first line is taken for a header only when its columns are names without spaces and its label is "
               "no other line's")
Row = tuple[int, str, str, str]  # a line as read: (its number, the line, its text, its label)


class MissingTab(ValueError):
    """A line of a classification file without a tab, so no `text<TAB>label`: as every line of a
    plain text, which a caller can say more about (`minigpt eval`: its perplexity wants a language model)."""


def read_tsv(path: str | Path) -> tuple[list[str], list[int] | list[str]]:
    """A classification file: one `text<TAB>label` per line. The labels are class ids (integers
    0, 1, 2, ...) or names (`negative`, `positive`: fine-tuning numbers them, see minigpt/finetune.py's
    `_class_ids`), one kind for the whole file: a file mixing them is refused.

    A first line of column names is a header, and is skipped, saying so on stderr: its columns
    (text and label) are names without spaces, and its label is not an integer and no other line's
    (`sentence<TAB>label`, as in SST-2, over lines labelled 0/1 or positive/negative). One naming
    more than two columns is refused, and so is a file of `FEW_LINES` examples or more whose every line
    has the same 3 or more columns (counted as CSV, so a quoted text's tabs are its own), or one whose
    every line starts with an integer field (an index or an extra column would join every text);
    blank lines and a leading BOM are skipped. Anything else malformed is an
    error naming the line, never a silently dropped example: a first line with an empty label, or a
    text or label with spaces (`great movie<TAB>l`, a typo; `Superb!<TAB>very positive`), is an
    example, not a header; so is a one-word first example (`great<TAB>positive`), as other lines
    are labelled `positive` too; a first line that would be a header but for a space in it is
    refused (`_check_not_a_header`). In a tiny file, where a class may have one line, a one-word
    first example of it is taken for a header: give such a file a header. Columns the wrong way
    round (`label<TAB>text`: more distinct labels than texts, and more than half the lines a label
    of their own) are refused (`_check_not_label_first`), in a file of `FEW_LINES` examples or more:
    in fewer, two texts alike (`good<TAB>1`, `good<TAB>0`) would be enough.
    A class id is ASCII digits (`int()` alone would also read `1_0` as 10 and other scripts' digits).

    CSV quoting, as Python's csv.writer and pandas' to_csv(sep="\\t") write it, is undone: a field
    wholly in double quotes, every quote inside it doubled (`"he said ""wow"", loved it"`), is the
    text between them with each `""` one quote (`_csv_unquoted`). Any other quote is part of the
    text (`"great" and "bad"`; SST-2 quotes with `` and ''). A quoted field that goes on past its
    line (a text holding a line end: a line opening a quote it never closes, and a later one closing
    it) is refused, whatever the labels: an example is one line (`_check_no_quoted_line_end`).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"TSV file {path} is a directory; pass the file itself (e.g. {path / 'dev.tsv'})")
    if not path.is_file():
        raise FileNotFoundError(f"TSV file {path} does not exist")
    rows = _tsv_rows(path)
    first = rows[0][0] if rows else 0  # the number of the one line that may be a header
    count = Counter(label for *_, label in rows)  # a header's label is on its line alone, a class's on its examples'
    if rows and _is_header(rows[0], count):
        columns = rows[0][1].split("\t")
        if len(columns) > 2:  # e.g. GLUE's `index<TAB>sentence<TAB>label`: the index would join each text
            # A first column without a name is the index pandas' to_csv writes unless told index=False.
            pandas = ("the unnamed first is pandas' index, which to_csv(sep='\\t', index=False) leaves out; or "
                      if not columns[0].strip() else "")
            named = ", ".join(name or repr(name) for name in columns)
            raise ValueError(f"{path}:{first}: the header names {len(columns)} columns ({named}); classify reads two, "
                             f"text<TAB>label: {pandas}keep just those (e.g. with `cut -f`)")
        _say_header_skipped(path, first, columns)
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path} holds no examples (expected lines of 'text<TAB>label')")
    texts, labels = [], []
    indexed = 0  # the lines whose text starts with an integer field
    for lineno, line, text, label in rows:
        is_id = bool(_INTEGER.fullmatch(label))
        hint = f" ({HEADER_RULE})" if lineno == first else ""
        if not label:
            raise ValueError(f"{path}:{lineno}: label '' is not an integer class id nor a name{hint}")
        if is_id and int(label) < 0:
            raise ValueError(f"{path}:{lineno}: label {int(label)} is negative; class ids are 0, 1, 2, ...")
        if not text.strip():
            raise ValueError(f"{path}:{lineno}: empty text")
        indexed += "\t" in text and bool(_INTEGER.fullmatch(text.split("\t", 1)[0].strip()))
        texts.append(text.strip())
        labels.append(int(label) if is_id else label)
    _check_one_kind(path, [row[0] for row in rows], labels, first)
    if indexed == len(texts):  # e.g. GLUE's `index<TAB>sentence<TAB>label` without its header
        raise ValueError(f"{path}: every line has 3 or more columns, the first an integer ({texts[0][:40]!r} ...): "
                         "an index column would join every text; classify reads two, text<TAB>label: keep just those "
                         "(e.g. with `cut -f`)")
    _check_not_extra_columns(path, rows, texts)
    if rows[0][0] == first and isinstance(labels[0], str):  # no header was skipped: is the first line one with a space?
        _check_not_a_header(path, first, labels[0], count)
    _check_not_label_first(path, texts, labels)
    return texts, labels


def _tsv_rows(path: Path) -> list[Row]:
    """Each line of `path` but the blank ones, cut at its last tab (the text may hold tabs),
    its CSV quoting undone and its label stripped; a line without a tab is refused, and so is a
    quoted text holding a line end (`_check_no_quoted_line_end`)."""
    # Lines end at "\n" alone (read_text made "\r\n" one): splitlines() would also cut at U+0085,
    # U+2028, form feeds..., which scraped text holds inside its sentences.
    lines = read_text(path).split("\n")
    _check_no_quoted_line_end(path, lines)
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        text, tab, label = line.rpartition("\t")
        if not tab:
            if _OPENS_A_QUOTE.fullmatch(line):  # a quoted text's first line, though its end is missing
                raise _goes_on_past_its_line(path, lineno, line)
            raise MissingTab(f"{path}:{lineno}: expected 'text<TAB>label', found no tab in {line[:60]!r}")
        rows.append((lineno, line, _csv_unquoted(text), _csv_unquoted(label).strip()))
    return rows


def _check_no_quoted_line_end(path: Path, lines: list[str]) -> None:
    """Refuse a CSV-quoted text holding a line end, whatever the labels: a line that opens a quote it
    never closes, then a later one that closes a quote it never opened, with only doubled quotes on
    the lines between (read line by line, it would be two examples or more, quotes left in). Checked
    before any line is cut at its tab, as the lines inside such a text may have none.
    A quote opened alone (`"unclosed<TAB>1`), or closed alone (`6'2"<TAB>1`), is the text's own: no
    CSV writer writes one."""
    opened = None  # (number, line) of the last line that opened a quote, while it may still be open
    for lineno, line in enumerate(lines, start=1):
        if opened and _CLOSES_A_QUOTE.match(line):
            raise _goes_on_past_its_line(path, *opened, closed_at=lineno)
        if _OPENS_A_QUOTE.fullmatch(line):
            opened = (lineno, line)
        elif '"' in line.replace('""', ""):  # a lone quote: not a line inside a quoted text, which doubles them
            opened = None


def _check_not_extra_columns(path: Path, rows: list[Row], texts: list[str]) -> None:
    """Refuse a file whose every line has the same 3 or more columns (an id, a source...): the ones
    before the label would join every text. Texts with tabs are on some lines only, or are quoted;
    a file of fewer than `FEW_LINES` examples is let be: its one text with a tab is no pattern."""
    if len(rows) < FEW_LINES:
        return
    widths = {_columns(line) for _, line, *_ in rows}
    if len(widths) == 1 and (width := widths.pop()) > 2:
        raise ValueError(f"{path}: every line has {width} columns ({texts[0][:40]!r} ...): the ones before the label "
                         "would join every text; classify reads two, text<TAB>label: keep just those (e.g. with "
                         "`cut -f`), or, if the tabs are inside the texts, CSV-quote each text (as Python's csv module "
                         "writes it)")


def _columns(line: str) -> int:
    """How many columns `line` has, read as CSV: a quoted field is one column whatever tabs it holds,
    wherever it is (`r002<TAB>"awful<TAB>film"<TAB>0`: 3). A line that is not CSV (a stray quote:
    `"great" and "bad"`, `"unclosed`) has its tabs + 1, as read_tsv reads the quote as the text's."""
    try:
        return len(next(csv.reader([line], delimiter="\t", strict=True)))
    except csv.Error:  # strict: not CSV, rather than a stray quote swallowing the tabs after it
        return line.count("\t") + 1


def _is_header(row: Row, count: Counter) -> bool:
    """Whether a file's first line is its column names, by read_tsv's rule (`HEADER_RULE`): the
    label's column counts too (`Superb!<TAB>very positive` is an example)."""
    _, _, text, label = row
    names = not any(c.isspace() for c in text.replace("\t", "") + label)
    return names and bool(label) and not _INTEGER.fullmatch(label) and count[label] == 1


def _say_header_skipped(path: Path, lineno: int, columns: list[str]) -> None:
    """Say on stderr (rank 0's alone, under torchrun) that a first line was taken for a header: were
    it an example, it would be missing from the counts, and this line is where one sees why."""
    if env_rank()[0] == 0:
        print(f"{path}: skipped line {lineno} as a header: {', '.join(columns)}", file=sys.stderr)


def _check_not_a_header(path: Path, lineno: int, label: str, count: Counter) -> None:
    """Refuse a names file's first line, not taken for a header, whose label is the only one on a
    single line, every other on two lines or more: far more often a header with a space in it
    (`review text<TAB>sentiment`) than the one example of a class."""
    lone = [y for y, n in count.items() if n == 1]
    if lone == [label] and len(count) > 1:
        raise ValueError(f"{path}:{lineno}: label {label!r} is the only one no other line has, as a header's, but "
                         f"{HEADER_RULE}: if it is the header, write its column names without spaces; if it is an "
                         "example of a class of its own, move it below another line")


def _check_not_label_first(path: Path, texts: list[str], labels: list[int] | list[str]) -> None:
    """Refuse a file whose columns look swapped, `label<TAB>text`: more distinct labels than distinct
    texts, and more than half the lines a label of their own. A classifier's labels are few and its
    texts many; read the wrong way round, every text would be a class of one example. A file of
    fewer than `FEW_LINES` examples is let be: two alike (`good<TAB>1`, `good<TAB>0`) would do."""
    if len(labels) < FEW_LINES:
        return
    distinct = list(dict.fromkeys(labels))  # in file order: the lines one sees first
    kinds = list(dict.fromkeys(texts))
    if len(distinct) > len(kinds) and 2 * len(distinct) > len(labels):
        raise ValueError(f"{path}: the columns look like label<TAB>text, but classify reads text<TAB>label: the labels "
                         f"are {len(distinct)} distinct values in {len(labels)} lines ({first_few(distinct, quoted=True)}), "
                         f"the texts {len(kinds)} ({first_few(kinds, quoted=True)}): swap the columns (e.g. with "
                         "`awk -F'\\t' -v OFS='\\t' '{print $2, $1}'`)")


def _check_one_kind(path: Path, linenos: list[int], labels: list[int] | list[str], first: int) -> None:
    """Refuse a file whose labels mix class ids and names: `1` and `positive` cannot both be classes
    of one classifier (is `positive` class 0, or 2?), and a lone name among ids is a typo."""
    names = [(lineno, y) for lineno, y in zip(linenos, labels) if isinstance(y, str)]
    ids = [(lineno, y) for lineno, y in zip(linenos, labels) if isinstance(y, int)]
    if names and ids:
        (lineno, name), (other, class_id) = names[0], ids[0]
        hint = f" ({HEADER_RULE})" if lineno == first else ""
        raise ValueError(f"{path}:{lineno}: label {name!r} is not an integer class id{hint}, but line {other}'s label "
                         f"{class_id} is: a file's labels are all class ids (0, 1, 2, ...) or all names, not both")


def _goes_on_past_its_line(path: Path, lineno: int, line: str, closed_at: int | None = None) -> ValueError:
    """The error for a quoted text holding a line end, closed on line `closed_at` (None: never)."""
    to = f" to line {closed_at}" if closed_at else ""
    own = (f"; if the quotes on lines {lineno} and {closed_at} are the texts' own, CSV-quote those texts (as Python's "
           "csv module writes them)" if closed_at else "")
    return ValueError(f"{path}:{lineno}: a quoted text goes on past this line{to} ({line[:60]!r}): it holds a line "
                      "end, and classify reads one example per line; replace the line ends in the texts (e.g. with "
                      f"spaces) before writing the file{own}")


def _csv_unquoted(field: str) -> str:
    """A CSV-quoted field's text: `"a ""b"" c"` → `a "b" c`. Any other field is returned as it is,
    quotes and all: one whose inner quotes are not all doubled was not written by a CSV writer."""
    inner = field[1:-1]
    if len(field) < 2 or field[0] != '"' or field[-1] != '"' or '"' in inner.replace('""', ""):
        return field
    return inner.replace('""', '"')


Examples = tuple[list[str], list[int] | list[str]]  # (texts, labels): class ids, or names as read_tsv gives them


def _shuffled(examples: Examples, seed: int, limit: int | None = None) -> Examples:
    """A seeded shuffle, cut to `limit`: a subset of a file sorted by label still mixes labels."""
    texts, labels = examples
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    order = order[:limit]
    return [texts[i] for i in order], [labels[i] for i in order]


def tsv_files(cfg: FinetuneConfig) -> tuple[Path, Path | None]:
    """The training file (--data, or DIR/train.tsv) and the validation file (--val-data, else
    DIR/dev.tsv if there is one; None: a share of the training file is held out)."""
    data = Path(cfg.data)
    val_file = Path(cfg.val_data) if cfg.val_data else data / "dev.tsv"
    return data / "train.tsv" if data.is_dir() else data, val_file if cfg.val_data or val_file.is_file() else None


def split_files(cfg: FinetuneConfig) -> dict[str, Path]:
    """The file each split's examples were read from, for errors that name a line: without a
    validation file, the val examples were held out of the training file."""
    train_file, val_file = tsv_files(cfg)
    return {"train": train_file, "val": val_file or train_file}


# What other tools name a validation split (Hugging Face datasets' is `validation`): --data DIR reads
# DIR/dev.tsv alone, so a DIR holding one of these instead is refused rather than silently left unread.
VAL_NAMES = ("validation.tsv", "val.tsv", "valid.tsv")


def _check_no_unread_val_file(cfg: FinetuneConfig) -> None:
    """Refuse --data DIR without dev.tsv (nor --val-data) but with a file named as a validation split:
    holding out training rows instead would train on fewer examples and choose best/ by another set,
    said in one line of a long log at best. Refused, not noted: the fix is one flag, and both ways
    are named."""
    data = Path(cfg.data)
    if cfg.val_data or not data.is_dir() or (data / "dev.tsv").is_file():
        return
    if found := next((data / name for name in VAL_NAMES if (data / name).is_file()), None):
        raise ValueError(f"--data {data} holds {found.name} but no dev.tsv, the validation file --data DIR reads: pass "
                         f"--val-data {found} (or rename it dev.tsv); to hold out --val-fraction of the training "
                         f"examples instead, pass --data {data / 'train.tsv'}")


def val_source(cfg: FinetuneConfig) -> str:
    """Where the val examples came from, as the `classify:` line says it: --val-data, DIR/dev.tsv, or
    rows held out of the training file. A DIR/test.tsv is named as not read: a test set that chose
    best/ would no longer measure it (score it after training, with `minigpt eval`)."""
    train_file, val_file = tsv_files(cfg)
    if cfg.val_data:
        return f"from --val-data {val_file}"
    if val_file:
        return f"from {val_file}"
    held = f"held out of {train_file} by --val-fraction {cfg.val_fraction:g}"
    test = Path(cfg.data) / "test.tsv"
    if test.is_file():
        held += (f"; {test} is not read: score it after training with `minigpt eval`, or pass --val-data {test} if it "
                 "is the validation set")
    return held


def load_classification_data(cfg: FinetuneConfig) -> dict[str, Examples]:
    """{"train": ..., "val": ...} from --data (file, or DIR/train.tsv) and --val-data or DIR/dev.tsv;
    with neither, a seeded val_fraction of --data is held out (a DIR holding validation.tsv instead
    is refused: `_check_no_unread_val_file`). Subsets (--max-*) are seeded.
    The labels are as the files write them, class ids or names (minigpt/finetune.py's `_class_ids`
    numbers names), the same kind in both splits."""
    _check_no_unread_val_file(cfg)
    train_file, val_file = tsv_files(cfg)
    train = _shuffled(read_tsv(train_file), cfg.seed)
    if val_file:
        if cfg.val_fraction != VAL_FRACTION_DEFAULT:  # it would be ignored: refused, as other unused options are
            raise ValueError(f"--val-fraction holds out part of --data when there is no validation file, but here "
                             f"validation comes from {val_file}: drop --val-fraction")
        val = read_tsv(val_file)
        named = {file: isinstance(labels[0], str) for file, (_, labels) in ((train_file, train), (val_file, val))}
        if len(set(named.values())) > 1:  # one file's `1` would be some other class than the other's `positive`
            kinds = {file: "names" if is_named else "class ids" for file, is_named in named.items()}
            raise ValueError(f"{train_file}'s labels are {kinds[train_file]}, but {val_file}'s are {kinds[val_file]}: "
                             "label both files alike, with class ids (0, 1, 2, ...) or with names")
    else:
        n_val = int(len(train[0]) * cfg.val_fraction)
        if n_val == 0:
            raise ValueError(f"{train_file} has {len(train[0])} example(s): too few to hold out {cfg.val_fraction:.0%} "
                             "for validation; pass --val-data")
        train, val = (train[0][n_val:], train[1][n_val:]), (train[0][:n_val], train[1][:n_val])
    return {"train": _shuffled(train, cfg.seed, cfg.max_examples),
            "val": _shuffled(val, cfg.seed + 1, cfg.max_val_examples)}


def label_ids(labels: list[str], label2id: dict[str, int], path: Path, whose: str) -> list[int]:
    """Named labels, read from `path`, as class ids through `label2id` (`whose` labels: say, a
    classifier's). A name it lacks is refused, by the first line of `path` that has it: a class the
    model does not have cannot be scored, nor trained."""
    unknown = next((name for name in labels if name not in label2id), None)
    if unknown is not None:
        raise ValueError(f"{path}:{_first_line_labelled(path, unknown)}: label {unknown!r} is none of {whose}: "
                         f"{first_few(list(label2id), quoted=True)}")
    return [label2id[name] for name in labels]


def _first_line_labelled(path: Path, label: int | str) -> int:
    """The number of the first line of `path` whose label is `label` (a class id or a name): where
    an error about it points. (A header's label is a name no other line has, so it is never the one.)"""
    def is_it(written: str) -> bool:
        return written == label if isinstance(label, str) else bool(_INTEGER.fullmatch(written)) and int(written) == label
    return next(lineno for lineno, *_, written in _tsv_rows(path) if is_it(written))


def examples_fingerprint(data: dict[str, Examples]) -> dict:
    """What a resumed run checks its examples against (minigpt/resume.py's `check_data`): each
    split's count, and a hash of its (text, label) pairs sorted, since their order comes from
    --seed, a setting of its own (reported as one when it changes), not from the data."""
    fingerprint: dict = {f"{split} examples": len(texts) for split, (texts, _) in data.items()}
    for split, (texts, labels) in data.items():
        pairs = json.dumps(sorted(zip(texts, labels))).encode()
        fingerprint[f"{split} examples hash"] = hashlib.blake2b(pairs, digest_size=8).hexdigest()
    return fingerprint


class Encoded(NamedTuple):
    """`encode_examples`' answer."""

    rows: list[list[int]]  # each text's token ids, cut to max_tokens
    cut: int  # how many texts were longer, and lost their end
    longest: int  # the longest text's tokens, before the cut


def encode_examples(tokenizer, texts: list[str], max_tokens: int) -> Encoded:
    """Each text's token ids, its first `max_tokens` (a cut text is classified from its beginning
    only: the callers say how many were cut). Each text is one example, not a stream of documents:
    "<|endoftext|>" in a review is its characters, not a boundary."""
    rows = tokenizer.encode_batch(texts, disallowed_special=())
    return Encoded([row[:max_tokens] for row in rows], sum(len(row) > max_tokens for row in rows),
                   max(map(len, rows), default=0))


def batch_pad_id(tokenizer) -> int:
    """What pads a batch: the tokenizer's pad token (the EOS, unless its files name a pad); with
    neither, any id does, as the mask marks the padding. Only a real pad token is the model's
    pad_token_id: transformers takes a text's trailing pad ids for padding, and id 0 is a token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def check_labels(labels: list[int], num_labels: int, whose: str = "", path: Path | None = None, fix: str = "") -> None:
    """Refuse class ids outside [0, num_labels), the first few named (`whose`: where they come from,
    a split or a file), before any batch is scored: past the head's rows, cross-entropy would fail
    deep in torch, or on a GPU as a device-side assert. Given the file they were read from (`path`),
    the error starts with the first line holding one, and ends with `fix`."""
    bad = sorted({label for label in labels if not 0 <= label < num_labels})
    if bad:
        where = f"{path}:{_first_line_labelled(path, bad[0])}: " if path else ""
        said = f"label {bad[0]} is" if len(bad) == 1 else f"labels {first_few(bad)} are"
        raise ValueError(f"{where}{whose}{said} out of range: with num_labels={num_labels}, labels must be "
                         f"in [0, {num_labels}){fix}")


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
                   rank: int = 0, world: int = 1, *, progress: bool = False, probabilities: bool = False) -> dict:
    """The loss (mean cross-entropy) and the accuracy (share of texts whose highest logit is the
    true label) over the whole (sub)set, with what they are made of: {"loss", "accuracy", "right":
    the texts predicted right, "confusion": [[texts of true class t predicted as p, for each p] for
    each t], "class_loss": [each true class's summed loss]}. A label outside [0, num_labels) is
    refused before any text is scored (`check_labels`).

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
    `probabilities=True` (one process) adds "probabilities": each text's class probabilities, the
    softmax of the very logits counted, (len(ids), num_labels) float64 on the CPU in the order of `ids`.
    """
    check_flag("progress", progress)  # "no" would read as True
    check_labels(labels, model.num_labels)
    if probabilities and world > 1:
        raise ValueError("score_examples keeps each text's probabilities on one process only: each rank scores a part")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    longest_first = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    batches = [longest_first[i : i + batch_size] for i in range(rank * batch_size, len(ids), world * batch_size)]
    n = model.num_labels
    confusion = torch.zeros(n, n, dtype=torch.float64, device=device)  # [true class, predicted class]: texts
    class_loss = torch.zeros(n, dtype=torch.float64, device=device)  # [true class]: summed loss
    probs = torch.empty(len(ids), n, dtype=torch.float64) if probabilities else None  # softmax in float64: rows sum to 1
    with progress_bar(total=sum(map(len, batches)), desc="evaluating", unit="text", leave=False, disable=not progress,
              dynamic_ncols=True) as bar:
        for batch in batches:
            idx, mask = pad_right([ids[i] for i in batch], pad_id)
            y = torch.tensor([labels[i] for i in batch], device=device)
            logits, _ = model(idx.to(device), mask.to(device))
            losses = F.cross_entropy(logits.float(), y, reduction="none")  # each text's: training's loss is their mean
            class_loss.index_add_(0, y, losses.double())
            one_each = torch.ones(len(batch), dtype=torch.float64, device=device)
            confusion.index_put_((y, logits.argmax(-1)), one_each, accumulate=True)
            if probs is not None:
                probs[batch] = logits.double().softmax(-1).cpu()
            bar.update(len(batch))
    if world > 1:
        dist.all_reduce(confusion)
        dist.all_reduce(class_loss)
    model.train(was_training)
    right = int(confusion.trace().item())
    return {"loss": class_loss.sum().item() / len(ids), "accuracy": right / len(ids), "right": right,
            "confusion": confusion.long().tolist(), "class_loss": class_loss.tolist(),
            **({"probabilities": probs} if probs is not None else {})}
