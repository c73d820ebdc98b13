"""The sft task's data: prompt/completion pairs in, batches whose loss counts the completions only.

Supervised fine-tuning ("SFT", instruction tuning) in TRL's prompt-completion format: the model
reads each prompt and learns to write its completion. The prompt's own tokens are context, never
targets (TRL's `completion_only_loss`): the model is not taught to write prompts.

Where it sits: between the files and minigpt/finetune.py's training loop for `--task sft`:
`pairs.jsonl ({"prompt": ..., "completion": ...} a line) → read_pairs → encode_pairs (prompt and
completion tokenized apart, their ids joined, <|endoftext|> after, an empty prompt <|endoftext|>,
cut to the block) → SftExamples → sft_batch (right-padded (x, y); y the next token, IGNORE_INDEX on
prompt and pad positions) → GPT.forward's loss, the mean over completion tokens`; at each
evaluation `sft_val_loss` over every validation example. The classify task's pieces are reused
where they fit: the seeded hold-out and the fingerprint (minigpt/classify_data.py).

Not handled: chat templates (roles, several turns), and packing several examples into one window.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn

from minigpt.checks import check_flag
from minigpt.classify_data import Examples, _shuffled
from minigpt.files import read_text
from minigpt.finetune_config import VAL_FRACTION_DEFAULT, FinetuneConfig
from minigpt.model import IGNORE_INDEX
from minigpt.progress_bar import progress_bar
from minigpt.tokenizer_batch import pad_rows

FIELDS = ("prompt", "completion")
# How `encode_pairs` makes a pair's row, recorded in the run's data fingerprint (`reading_record`).
# 1: an empty prompt was no ids, so its completion's first token was no target; 2: it is
# [<|endoftext|>], and that token is one. A val loss over rows of one is not comparable with one
# over rows of the other, and a run's best val loss was measured with the encoding its state records.
SFT_ENCODING = 2


def read_pairs(path: str | Path) -> Examples:
    """(prompts, completions) from a JSON Lines file, one `{"prompt": str, "completion": str}` a
    line; other fields are ignored, blank lines and a leading BOM skipped. Anything else (a line
    that is no JSON object, a field missing or not a string) is an error naming file:line, never a
    silently dropped example."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory; pass the JSON Lines file itself" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"sft data {path} {what}")
    prompts, completions = [], []
    text = read_text(path)
    if text.lstrip().startswith("["):  # Alpaca's own file: one JSON array
        raise ValueError(f"{path} is a JSON array, not JSON Lines (a JSON object a line): {convert_hint(path, '.[]')}")
    # Lines end at "\n" alone (read_text made "\r\n" one): JSON escapes every line end inside a string.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not JSON ({e.msg} at column {e.colno}): {line[:60]!r}; each line is "
                             '{"prompt": "...", "completion": "..."}') from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: a JSON {type(record).__name__}, not an object: each line is "
                             '{"prompt": "...", "completion": "..."}')
        for name in FIELDS:
            if not isinstance(record.get(name), str):
                found = "is missing" if name not in record else f"is {type(record[name]).__name__} {record[name]!r:.40}"
                raise ValueError(f"{path}:{lineno}: field {name!r} {found}; it must be a string "
                                 f"(the line's fields: {', '.join(map(repr, record)) or 'none'}){other_format(record, path)}")
        prompts.append(record["prompt"])
        completions.append(record["completion"])
    if not prompts:
        raise ValueError(f'{path} holds no examples (expected lines of {{"prompt": "...", "completion": "..."}})')
    return prompts, completions


# jq's filter from Alpaca's records (instruction, input, output) to pairs: the input, where there is
# one (a missing or null one is none), on a line after the instruction.
ALPACA_TO_PAIR = ('{prompt: (.instruction + (if (.input // "") != "" then "\\n" + .input else "" end) + "\\n"), '
                  'completion: .output}')


def convert_hint(path: Path, records: str) -> str:
    """The command that writes Alpaca's records (`records`: jq's path to them in the file) as pairs
    beside `path`, quoted for the shell, into another file (`> path` would empty it first)."""
    out = path.with_name(f"{path.stem}_pairs.jsonl")
    return (f"if they are Alpaca's (instruction, input, output), `jq -c {shlex.quote(f'{records} | {ALPACA_TO_PAIR}')} "
            f"{shlex.quote(str(path))} > {shlex.quote(str(out))}` writes them as pairs")


def other_format(record: dict, path: Path) -> str:
    """What to do with a record of a format that is not prompt/completion, for read_pairs' error."""
    if "instruction" in record and "output" in record:
        return f": {convert_hint(path, '.')}"
    if "messages" in record:
        return ": a chat (\"messages\") file, which sft does not read: it takes one prompt and its completion a line"
    return ""


def holds_pairs(path: Path) -> bool:
    """Whether `path` is a file whose first non-blank line is a prompt/completion pair (`is_pair_line`):
    the lm task, given it, would train on its braces and keys as text (what `--task sft` is for)."""
    return path.is_file() and is_pair_line(first_line(path))


def first_line(path: Path) -> str:
    """The file's first non-blank line ("" for none), its BOM dropped: what tells its format."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return next((line for line in f if line.strip()), "").removeprefix("\ufeff")


def is_pair_line(line: str, whole: bool = False) -> bool:
    """Whether `line` (a BOM allowed) is a JSON object meant as a pair: with a prompt or a
    completion (a record with one of them and a typo for the other, "response", is a pair that
    `read_pairs` names the missing field of, not text); `whole`: with both."""
    try:
        record = json.loads(line.removeprefix("\ufeff"))
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and (all if whole else any)(name in record for name in FIELDS)


def other_records(path: Path) -> bool:
    """Whether a file of JSON (`minigpt.data.json_file`) holds records that read_pairs refuses with
    a way to convert them: a JSON array (Alpaca's own file), or Alpaca's or a chat's records."""
    first = first_line(path)
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return first.lstrip().startswith("[")  # (an array's first line is not a whole JSON value)
    return isinstance(record, list) or (isinstance(record, dict) and bool(other_format(record, path)))


def val_source(cfg: FinetuneConfig) -> str:
    """Where the val examples came from, as the `sft:` line says it."""
    if cfg.val_data:
        return f"from --val-data {cfg.val_data}"
    return f"held out of {cfg.data} by --val-fraction {cfg.val_fraction:g}"


def load_pairs(cfg: FinetuneConfig) -> dict[str, Examples]:
    """{"train": (prompts, completions), "val": ...} from --data and --val-data; without a
    --val-data, a seeded --val-fraction of --data is held out (as classify holds out its rows)."""
    train = _shuffled(read_pairs(cfg.data), cfg.seed)
    if cfg.val_data:
        if cfg.val_fraction != VAL_FRACTION_DEFAULT:  # it would be ignored: refused, as other unused options are
            raise ValueError(f"--val-fraction holds out part of --data when there is no --val-data, but here validation "
                             f"comes from {cfg.val_data}: drop --val-fraction")
        return {"train": train, "val": read_pairs(cfg.val_data)}
    n_val = int(len(train[0]) * cfg.val_fraction)
    if n_val == 0:
        raise ValueError(f"{cfg.data} has {len(train[0])} example(s): too few to hold out {cfg.val_fraction:.0%} for "
                         "validation; pass --val-data")
    return {"train": (train[0][n_val:], train[1][n_val:]), "val": (train[0][:n_val], train[1][:n_val])}


def val_in_train(pairs: dict[str, Examples]) -> int:
    """How many val pairs are also train pairs (the same prompt and the same completion): a file
    with repeated pairs, split by --val-fraction, or a --val-data drawn from --data, puts them on
    both sides, and their val loss measures memory, not what the model learned. Counted for the
    run to say, not removed: which copy is "the" duplicate, and whether repeats are meant (a pair
    weighed up on purpose), is the user's call."""
    train = set(zip(*pairs["train"]))
    return sum(pair in train for pair in zip(*pairs["val"]))


def reading_record(pairs: dict[str, Examples]) -> dict:
    """How these pairs were read into rows, for the run's data fingerprint beside the pairs' hash:
    the encoding, and how many val prompts are empty (the rows the encodings make otherwise).
    `restore` (minigpt/resume.py) starts best/ over when a resume reads them otherwise than the
    run's saved state says (a state saved before the encoding was recorded read them as 1)."""
    return {"sft encoding": SFT_ENCODING, "val empty prompts": pairs["val"][0].count("")}


class SftExamples(NamedTuple):
    """`encode_pairs`' answer: the examples kept, and what the cut did to them."""

    rows: list[list[int]]  # prompt ids + completion ids + EOS, at most block_size + 1 ids
    prompt_lens: list[int]  # how many of each row's first ids are the prompt's: at least 1 (an empty prompt is EOS)
    cut: int  # rows longer than the block, that lost their end (the completion's, and its EOS)
    dropped: int  # examples whose prompt is longer than the block: no completion token left to learn
    longest: int  # the longest kept row's ids, before the cut


def encode_pairs(tokenizer, pairs: Examples, block_size: int) -> SftExamples:
    """Each pair as ids: the prompt and the completion tokenized apart, their ids joined, then EOS.

    Apart, not as one text: BPE merges across the join (a prompt ending in a space, a completion
    starting with a letter), so the joined text's tokens could straddle it, and no position would
    be the prompt's end. Apart, the boundary is exact, and a prompt is tokenized as generation will
    tokenize it alone. GPT-2's tokens carry their leading space (" Paris"), so the space between
    prompt and completion belongs at the completion's start. The EOS teaches the model to stop.
    "<|endoftext|>" written in a text is its characters, not the token (as classify reads texts).

    An empty prompt is the one id EOS: generation starts an empty prompt from <|endoftext|>
    (GPT-2's begin token too; minigpt/text_generation.py, as transformers' `generate` starts from
    bos_token_id), so training reads what generation will. Without it the row would start at the
    completion's first token, which no position predicts: never learnt, so a tuned model prompted
    with nothing would write nothing. (TRL adds what the tokenizer adds: a BOS for Llama's, which
    gives these rows, and nothing for GPT-2's, which leaves that first token untaught.) So every
    prompt is at least one id, and every completion token, and the EOS after it, is a target.

    A row keeps its first block_size + 1 ids: the model reads block_size of them, and each but the
    first is the target of the one before. An example whose prompt is longer than block_size ids
    fills that and leaves no completion token to learn from: it is dropped, counted (a batch of
    only such would have no target: its mean loss would be 0/0, a NaN the training loop stops on).
    Both counts are the caller's to say."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-text token, which sft puts after each completion so that the "
                         "model learns to stop: use the model's own tokenizer (GPT-2's <|endoftext|>)")
    prompts = tokenizer.encode_batch(pairs[0], disallowed_special=())
    completions = tokenizer.encode_batch(pairs[1], disallowed_special=())
    rows, prompt_lens, cut, longest = [], [], 0, 0
    for prompt, completion in zip(prompts, completions):
        prompt = prompt or [eos]  # an empty prompt: the token generation starts from (docstring)
        row = prompt + completion + [eos]
        if n_targets(min(len(row), block_size + 1), len(prompt)) > 0:  # else dropped: counted once, not as cut too
            longest = max(longest, len(row))
            cut += len(row) > block_size + 1
            rows.append(row[: block_size + 1])
            prompt_lens.append(len(prompt))
    return SftExamples(rows, prompt_lens, cut, len(prompts) - len(rows), longest)


def n_targets(row_len: int, prompt_len: int) -> int:
    """How many of a row's ids are targets: those after the prompt, the completion's and its EOS
    (the row's first id, which no position predicts, is the prompt's: it is never empty)."""
    return row_len - prompt_len


def sft_batch(examples: SftExamples, picks: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples `picks` as (x, y), both (B, T), right-padded to the longest: x its ids but the
    last, y[t] the id after x[t] where that id is the completion's, else IGNORE_INDEX (a prompt's
    position, or padding). So GPT.forward's loss is the mean over the batch's completion tokens.

    Right padding: real tokens keep positions 0..n-1 and, attention being causal, never see the
    pads to their right; no mask is needed, as no pad is a target. The mean is the micro-batch's:
    with --grad-accum each micro-batch counts alike, however many completion tokens it holds (as
    transformers' Trainer counted them until 2024), where the val loss counts each token once."""
    xs, ys = [], []
    for i in picks:
        row, first = examples.rows[i], examples.prompt_lens[i]  # first: the first target id (a prompt has ≥ 1)
        xs.append(row[:-1])
        ys.append([IGNORE_INDEX] * (first - 1) + row[first:])  # y[t] = row[t + 1], kept from t = first - 1
    x, _ = pad_rows(xs, pad_id, "right")
    y, _ = pad_rows(ys, IGNORE_INDEX, "right")
    return torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)


@torch.no_grad()
def sft_val_loss(model: nn.Module, examples: SftExamples, pad_id: int, batch_size: int, rank: int = 0, world: int = 1,
                 *, progress: bool = False) -> float:
    """The mean loss over every completion token of every example: each evaluation's val loss,
    which chooses best/, so every example, not a sample (as classify scores every text).

    Each batch's mean is weighed by its targets: a token counts once, however its batch was made.
    Longest first, `batch_size` at a time: a batch of rows of about one length pads little, and the
    batch that needs the most memory comes first. Under torchrun, process `rank` of `world` scores
    batches rank, rank + world, ..., and the sums are added over processes. Runs under the
    caller's autocast, as the lm task's evaluation does."""
    check_flag("progress", progress)  # "no" would read as True
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    longest_first = sorted(range(len(examples.rows)), key=lambda i: len(examples.rows[i]), reverse=True)
    batches = [longest_first[i : i + batch_size] for i in range(rank * batch_size, len(longest_first), world * batch_size)]
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (summed loss, targets)
    with progress_bar(total=sum(map(len, batches)), desc="evaluating", unit="example", leave=False, disable=not progress,
                      dynamic_ncols=True) as bar:
        for batch in batches:
            x, y = (t.to(device) for t in sft_batch(examples, batch, pad_id))
            count = (y != IGNORE_INDEX).sum()
            total += torch.stack([model(x, y)[1].double() * count, count.double()])
            bar.update(len(batch))
    if world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1]).item()
