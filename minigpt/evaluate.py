"""Perplexity of a model on a text file, with a sliding window (`minigpt eval MODEL_DIR FILE`), and a
classifier's loss and accuracy on a labelled file (`minigpt eval CLASSIFIER_DIR FILE.tsv`).

Where it sits: text → the tokenizer's ids (special tokens' text read as their ids, as `minigpt
prepare` reads it: minigpt/data.py's `encode_text`) → windows of ≤ max_length tokens → GPT → logits →
cross-entropy of each token that the window is responsible for → exp(mean) = perplexity.

Why a sliding window: a model sees at most n_positions tokens. Cutting the text into disjoint
blocks would score the first tokens of every block with almost no context, which overstates the
perplexity. Instead each window starts `stride` tokens after the previous one and scores only
its last tokens, the ones no earlier window scored; the tokens before them are context only (label
IGNORE_INDEX = -100). With stride < max_length every token but the first is scored exactly once,
with at least max_length - stride tokens of context (except near the start); smaller strides give
more context and cost more forward passes. With stride = max_length the windows are disjoint, and
the first token of each is not scored at all (nothing before it is in the window). `minigpt eval`'s
windows are the model's context, or shorter where the tokenizer saved beside its weights says the
model trained on shorter ones (its model_max_length: a fresh model pretrained with a smaller
--block-size never trained its later positions).

This is the computation of Hugging Face's perplexity guide
(https://huggingface.co/docs/transformers/perplexity), with one difference: the guide weights each
window's mean loss by (valid labels - 1), which undercounts every window after the first by one
token; here each token's negative log-likelihood is summed, so the mean is over exactly the
tokens scored.

A classifier (a checkpoint of `minigpt finetune --task classify`) is scored as fine-tuning scores
its val set: each `text<TAB>label` line (classify_data's `read_tsv`; a label that is a name is
the model's class of that name, through its config.json's label2id) is cut to the run's
--block-size, and classify_data's `score_examples` gives the mean loss and the accuracy, here also
for each true class, with the classes its examples were taken for (a row of the confusion matrix).
That is the way to measure a test set: given to fine-tuning as --val-data, it would choose best/.
`--predictions FILE` also writes each example's class probabilities (score_examples keeps them on
request), one JSON line per example with its line number in the TSV, to join back to the input rows.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TypedDict

import torch
import torch.nn.functional as F
from tqdm import tqdm

from minigpt.checks import as_count
from minigpt.classify_data import score_examples
from minigpt.files import json_line, unwritable, user_path
from minigpt.generate_args import NONFINITE, warn_if_training
from minigpt.model import GPT, IGNORE_INDEX  # IGNORE_INDEX: the label of a context-only position: the loss skips it
from minigpt.progress_bar import given_or_new_bar  # progress=True/False/a tqdm bar, read as generate_texts reads it
from minigpt.sft_data import holds_pairs, is_pair_line, other_records

# perplexity's arguments that a flag of `minigpt eval` sets (max_length is --max-length): its errors
# name the argument, the CLI's name the flag (minigpt/cli.py's flag_words renames them).
FLAG_ARGS = ("max_length", "stride")
BATCH_SIZE_DEFAULT = 32  # a classifier's examples scored at once: no gradients are kept, so 4x training's default 8


@torch.no_grad()
def sliding_window_nll(model, ids: torch.Tensor, max_length: int, stride: int,
                       progress: bool | tqdm = False) -> tuple[float, int, torch.Tensor]:
    """Sum of -log p(token | up to max_length - 1 earlier tokens) over the scored tokens, their
    count, and which they are: (N,) bool, True = scored (bits per byte counts their bytes).

    `model(x)` must return (logits, ...) as minigpt's GPT does. ids: (N,) token ids. `progress=True`
    shows a bar of the windows; a tqdm bar given is moved on by one per window instead.
    """
    n = ids.numel()
    if n < 2:
        raise ValueError(f"need at least 2 tokens to score, got {n}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}")
    device = next(model.parameters()).device
    nll_sum, prev_end = 0.0, 0
    scored = torch.zeros(n, dtype=torch.bool)
    # The last window is the first to reach the end (begin + max_length >= n): the range stops
    # there, so the progress bar's total is the number of windows that run.
    starts = range(0, max(n - max_length, 0) + stride, stride)
    with given_or_new_bar(progress, total=len(starts), desc="windows") as bar:
        for begin in starts:
            end = min(begin + max_length, n)
            new = end - prev_end  # tokens no earlier window scored: this window's last `new`
            window = ids[begin:end].to(device)  # (L,)
            labels = window.clone()
            labels[: len(window) - new] = IGNORE_INDEX  # context only
            # logits[t] predicts token t + 1, so the targets are the labels shifted left by one.
            targets = torch.cat([labels[1:], labels.new_full((1,), IGNORE_INDEX)])  # (L,)
            logits = model(window[None])[0][0]  # (L, V)
            nll_sum += F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
            scored[max(end - new, begin + 1) : end] = True  # the window's first token has no context: never scored
            prev_end = end  # (the last start's window ends at n: `starts` stops there)
            bar.update(1)  # after the window's work: the bar counts the windows done
    return nll_sum, int(scored.sum()), scored


def check_ids(model, ids) -> torch.Tensor:
    """ids as a (N,) integer tensor: (1, N) (one text, as the tokenizer returns it) is squeezed. A
    list, float ids or ids outside the vocabulary would fail deep inside torch; here they are named."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a tensor of token ids, (N,) or (1, N); got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:  # truncated, or a mask: no ids
        raise TypeError(f"ids must be an integer tensor of token ids, got {ids.dtype}")
    ids = ids.long()  # int32, uint8, or a uint16 token file's: the embedding and cross_entropy's targets take int64
    if ids.dim() == 2 and ids.size(0) == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"ids must be (N,) or (1, N): one text's token ids, got shape {tuple(ids.shape)}")
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < model.config.vocab_size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"ids must be in [0, vocab_size={model.config.vocab_size}), got token id {bad}")
    return ids


class _Scores(TypedDict):
    nll: float
    ppl: float
    tokens: int
    nll_sum: float


class Perplexity(_Scores, total=False):
    """What `perplexity` returns, each key with its type (`tokens` an int); "bpb" only with
    `token_bytes`. (Two classes: Python 3.10's typing has no NotRequired to mark one key optional.)"""
    bpb: float


def perplexity(model: GPT, ids: torch.Tensor, max_length: int | None = None, stride: int | None = None,
               progress: bool | tqdm = False, token_bytes: torch.Tensor | None = None) -> Perplexity:
    """{"nll": mean nats per token, "ppl": exp(nll), "tokens": how many were scored, "nll_sum": their
    total nats}, and with `token_bytes` (V,), each token's length in bytes, "bpb": bits per byte of
    the scored tokens. max_length defaults to the context, stride to half of max_length. ids: (N,)
    token ids, or (1, N) as the tokenizer's return_tensors="pt" gives them. `progress` is as
    `generate_texts`' (`given_or_new_bar`): True shows a bar of the windows, a tqdm bar given is
    moved on by one per window (so that several calls can share one)."""
    ids = check_ids(model, ids)
    if token_bytes is not None:  # before the windows run: a wrong table would give a plausible, wrong bpb
        check_token_bytes(token_bytes, model.config.vocab_size)
    warn_if_training(model, "scoring")
    max_length = model.config.n_positions if max_length is None else as_count("max_length", max_length)  # 0: an error
    if not 2 <= max_length <= model.config.n_positions:  # a window's first token has no context: 1 scores nothing
        raise ValueError(f"max_length must be in [2, n_positions={model.config.n_positions}] (a window's first token "
                         f"is context only, so a 1-token window scores nothing), got {max_length}")
    stride = max(max_length // 2, 1) if stride is None else as_count("stride", stride)  # 2.5 or True: no stride
    nll_sum, count, scored = sliding_window_nll(model, ids, max_length, stride, progress)
    nll = nll_sum / count
    # exp overflows a float past ~709.78 (a diverged model): its perplexity is then inf, not an error
    result: Perplexity = {"nll": nll, "ppl": math.exp(nll) if nll < 709 else math.inf, "tokens": count, "nll_sum": nll_sum}
    if token_bytes is not None:
        # Bits per byte: nats → bits, spread over the bytes of the tokens scored (not the first token,
        # nor, with disjoint windows, each window's first). Unlike perplexity it does not depend on
        # the tokenizer, so models with different vocabularies compare.
        n_bytes = int(token_bytes.cpu()[ids.cpu()[scored]].sum())
        if n_bytes <= 0:
            raise ValueError("token_bytes gives the scored tokens 0 bytes in all, so bits per byte is undefined: "
                             "it must hold each token's length in bytes (len(tok.decode_bytes([i])))")
        result["bpb"] = nll_sum / math.log(2) / n_bytes
    return result


def classifier_scores(model, ids: list[list[int]], labels: list[int], pad_id: int, batch_size: int,
                      progress: bool = False, probabilities: bool = False) -> dict:
    """A classifier's mean loss (nats per example) and accuracy over labelled examples, overall and
    for each true class the file has: {"examples", "right", "loss", "accuracy", "classes": {label:
    the same four, and "predicted": how many of its examples were taken for each class}}. A class's
    accuracy is its recall: the share of its examples predicted as it. ids: each example's token
    ids, already cut to what the model reads. The scoring is fine-tuning's (`score_examples`);
    `probabilities=True` adds its "probabilities", each example's (N, num_labels), in the order of `ids`."""
    if not labels or len(ids) != len(labels):
        raise ValueError(f"need one label per example, and an example at least: got {len(ids)} examples, "
                         f"{len(labels)} labels")
    scores = score_examples(model=model, ids=ids, labels=labels, pad_id=pad_id, batch_size=batch_size,
                            progress=progress, probabilities=probabilities)
    classes = {}
    for label, (predicted, loss) in enumerate(zip(scores["confusion"], scores["class_loss"])):
        if examples := sum(predicted):
            classes[label] = {"examples": examples, "right": predicted[label], "loss": loss / examples,
                              "accuracy": predicted[label] / examples, "predicted": predicted}
    result = {"examples": len(labels), "right": scores["right"], "loss": scores["loss"], "accuracy": scores["accuracy"],
              "classes": classes}
    if probabilities:
        result["probabilities"] = scores["probabilities"]
    return result


def example_line_numbers(path: str, examples: int) -> list[int]:
    """The line of the TSV `path` (1-based, as an editor counts) that each of read_tsv's examples came
    from. read_tsv reads every line but the blank ones, and drops at most the first, a header:
    anything else malformed is an error, never a dropped line. So the examples are the last
    `examples` of the lines it read."""
    from minigpt.classify_data import _tsv_rows  # the lines read_tsv reads, with their numbers

    return [lineno for lineno, *_ in _tsv_rows(Path(path))][-examples:]


def check_predictions_path(dest: str, tsv: str) -> None:
    """Refuse a --predictions path that could not take the file, before the model loads and the file
    is scored: standard output (where the report goes), the TSV itself (its lines would be lost), a
    directory or a device (the atomic write renames a new file over it), a folder that does not exist
    or may not be written (the atomic write makes its temp file there; os.access sees a read-only
    file system, a container's read-only mount, as well as the permission bits)."""
    from minigpt.files import STDIN

    if dest == STDIN:
        raise ValueError("--predictions - would mix the predictions into the report on standard output: give a file name")
    path = Path(dest)
    if path.exists() and path.samefile(tsv):
        raise ValueError(f"--predictions {dest} is the TSV file being scored, which it would overwrite: give another file")
    if path.exists() and not path.is_file():
        what_it_is = "a directory" if path.is_dir() else "not a regular file"
        raise ValueError(f"--predictions {dest} is {what_it_is}: give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"--predictions {dest}: the folder {path.parent} does not exist")
    if (problem := unwritable(path.parent)) is not None:
        raise ValueError(f"--predictions {dest}: {problem}: give a path in another folder")


def write_predictions(path: str, linenos: list[int], labels: list[int], probs: torch.Tensor,
                      id2label: dict[int, str]) -> None:
    """One JSON line per example, in the file's order: {"line": its line number in the TSV, "label":
    its class's name, "prediction": the likeliest class's name, "probabilities": {each class's name:
    p}}, written atomically (a reader never sees half a file) as UTF-8, names as they are."""
    from minigpt.files import atomic_write_text, failure_reason

    records = []
    for lineno, label, predicted, p in zip(linenos, labels, probs.argmax(-1).tolist(), probs.tolist()):
        records.append(json_line({"line": lineno, "label": id2label[label], "prediction": id2label[predicted],
                                  "probabilities": {id2label[i]: x for i, x in enumerate(p)}}))
    try:
        atomic_write_text(Path(path), "".join(record + "\n" for record in records))
    except OSError as e:  # a full disk, say: named once, as the user typed it; another file (its temp) by its name
        raise OSError(f"cannot write --predictions {path}: {failure_reason(e, Path(path))}") from e


def check_token_bytes(token_bytes, vocab_size: int) -> None:
    """`token_bytes` as perplexity reads it: (vocab_size,), each token's length in bytes, none
    negative. Another tokenizer's table (longer or shorter) or a negative count would give a bits
    per byte that looks right and is not, or fail as a bare IndexError."""
    if not isinstance(token_bytes, torch.Tensor) or tuple(token_bytes.shape) != (vocab_size,):
        is_tensor = isinstance(token_bytes, torch.Tensor)
        got = f"shape {tuple(token_bytes.shape)}" if is_tensor else type(token_bytes).__name__
        raise ValueError(f"token_bytes must be a ({vocab_size},) tensor, each token's length in bytes (the model's "
                         f"vocab_size={vocab_size}; 0 for ids past its tokenizer's), got {got}")
    if token_bytes.numel() and int(token_bytes.min()) < 0:
        raise ValueError(f"token_bytes must be ≥ 0 (each token's length in bytes), got {int(token_bytes.min())}")


def check_tokenizer_fits(config, tokenizer, model_dir, tokenizer_dir) -> None:
    """Refuse a tokenizer that is not the model's own (`GPTConfig.fits_tokenizer`), for the CLIs
    that take --tokenizer (eval, generate). A larger tokenizer's ids would index past the embedding
    table, and a smaller one's mean other tokens to the model, unless the model's vocabulary is the
    same one padded."""
    if why := config.tokenizer_mismatch(tokenizer.vocab_size, tokenizer.eos_token_id, f"the model {model_dir}",
                                        f"the tokenizer in {tokenizer_dir}"):
        raise ValueError(f"{why}; pass --tokenizer with the model's own tokenizer")


def check_file(path: str, what: str) -> None:
    """A regular file, or an error that says what `path` is instead."""
    path = Path(path)
    if not path.is_file():
        what_it_is = ("is a directory" if path.is_dir() else "is not a regular file" if path.exists()
                      else "does not exist")
        raise FileNotFoundError(f"{what} {path} {what_it_is}")  # (a device such as /dev/null, a FIFO: not a file)


def load_tokenizer(args, config):
    """The tokenizer of --tokenizer, else the model directory's, checked to be the model's."""
    from minigpt.tokenizer import model_tokenizer

    tok = model_tokenizer(args.model, args.tokenizer)
    check_tokenizer_fits(config, tok, args.model, args.tokenizer or args.model)  # a meaningless score
    return tok


def model_record(args) -> int | None:
    """The length the model in MODEL was trained on, as the tokenizer saved beside its weights records
    it (`recorded_length`: its model_max_length), whatever --tokenizer says: another folder's
    tokenizer, even an identical vocabulary, carries another run's record (GPT-2's: 1024). None
    where MODEL records none (a model saved alone, a GPT-2 size by name)."""
    from minigpt.config import shipped_path
    from minigpt.tokenizer_files import recorded_length

    return recorded_length(shipped_path(args.model))


def shorter_trained_length(recorded: int | None, n_positions: int) -> int | None:
    """The length the model was trained on (`recorded`: `model_record`), only where it is shorter
    than its context, n_positions: a fresh model pretrained with a smaller --block-size, or a
    classifier fine-tuned with one, never trained its later positions. None where it trained them
    all (a record of n_positions or more, GPT-2's 1024) or records nothing. (pretrain.py's
    `trained_length` answers another question: the length a run trains on, a number always.)"""
    return recorded if recorded is not None and recorded < n_positions else None


def window_length(args, n_positions: int) -> int | None:
    """The sliding window's length: --max-length as given, else the length the model trained on
    where that is shorter than its context (`shorter_trained_length`), else None (perplexity's
    default, n_positions). A fresh model trained on shorter windows never trained its later
    positions: scored there, its perplexity would count random position embeddings. The window
    chosen is said; an explicit one past the trained length is warned of."""
    trained = shorter_trained_length(model_record(args), n_positions)
    if trained is None:
        return args.max_length
    if args.max_length is None:
        # (at least 2, perplexity's least: a 2-token window's one prediction comes from position 0 alone)
        length = max(trained, 2)
        print(f"note: windows of {length} tokens, the length {args.model} was trained on (its tokenizer's "
              f"model_max_length; positions {trained}-{n_positions - 1} of its {n_positions} never trained); "
              "--max-length sets another", file=sys.stderr)
        return length
    if trained < args.max_length <= n_positions:
        print(f"warning: --max-length {args.max_length} is longer than the {trained} tokens {args.model} was trained on "
              f"(its tokenizer's model_max_length): positions {trained}-{args.max_length - 1} of each window never "
              "trained, and the score counts them", file=sys.stderr)
    return args.max_length


def language_model_report(args) -> tuple[str, dict]:
    """`minigpt eval LM FILE`: the sliding-window perplexity of a text, as one line, and as the
    record `--json` prints."""
    from minigpt.cli import flag_words
    from minigpt.data import encode_text, json_file
    from minigpt.files import STDIN, read_text_or_stdin, refuse_nul_bytes, source_name
    from minigpt.model import GPT

    if args.predictions is not None:
        raise ValueError(f"--predictions writes a classifier's prediction for each example of a TSV file; {args.model} "
                         "is a language model: drop --predictions")
    if args.file != STDIN and holds_pairs(Path(args.file)):
        return pairs_report(args)
    if args.batch_size is not None:
        raise ValueError(f"--batch-size sets how many examples are scored at once, a classifier's or a file of sft "
                         f"pairs'; {args.model} is a language model and {args.file} no pairs file (JSON Lines of prompt "
                         "and completion), so it is scored in windows of --max-length tokens: drop --batch-size")
    if Path(args.file).suffix.lower() == ".tsv":  # a perplexity of "text<TAB>1" lines would pass for the model's
        raise ValueError(f"{args.file} is a .tsv file (text<TAB>label, what a classifier is scored on), but "
                         f"{args.model} is a language model, scored on plain text; to score the file's text as it is, "
                         f"pipe it: `minigpt eval {args.model} - < {args.file}`")
    if args.file != STDIN:
        check_file(args.file, "text file")
        if json_kind := json_file(Path(args.file)):  # its braces and keys would be scored as text
            if other_records(Path(args.file)):  # Alpaca's, or an array: read_pairs says how to convert them
                return pairs_report(args)
            raise ValueError(f"{args.file} {json_kind}, but not prompt/completion pairs (what `minigpt eval` scores a "
                             f"language model on, by their completions' loss); to score the file as text, braces and "
                             f"keys included, pipe it: `minigpt eval {args.model} - < {args.file}`")
    text = read_text_or_stdin(args.file)
    refuse_nul_bytes(source_name(args.file), text)  # nanoGPT's character-level val.bin decodes as UTF-8: its ids are < 0x80
    if args.file == STDIN and is_pair_line(next((line for line in text.split("\n") if line.strip()), ""), whole=True):
        raise ValueError("standard input holds prompt/completion pairs, which would be scored as text, braces and keys "
                         "included: save them to a file, which `minigpt eval` scores as pairs (their completions' loss)")
    # The model first: a wrong MODEL path should be reported as the model's, not as a missing tokenizer.
    model = GPT.from_pretrained(args.model, dtype=args.dtype, device=args.device)
    tok = load_tokenizer(args, model.config)
    ids = torch.tensor(encode_text(tok, text), dtype=torch.long)
    token_bytes = torch.zeros(model.config.vocab_size, dtype=torch.long)  # (V,): each token's length in bytes
    for i in ids.unique().tolist():  # (only the tokens of this text are needed)
        token_bytes[i] = len(tok.decode_bytes([i]))
    max_length = window_length(args, model.config.n_positions)
    with flag_words(FLAG_ARGS):  # "stride must be in [1, max_length=64]" → "--stride ... --max-length 64"
        result = perplexity(model, ids, max_length, args.stride, progress=True, token_bytes=token_bytes)
    if not math.isfinite(result["nll"]):  # "perplexity nan" and exit 0 would pass for a score
        raise ValueError(f"the loss is {result['nll']}: {NONFINITE}")
    text = (f"perplexity {result['ppl']:.4f}  nll {result['nll']:.4f} nats/token  {result['bpb']:.4f} bits/byte  "
            f"({result['tokens']:,} tokens scored)")
    # A perplexity past exp's range (a diverged model) is inf: null in --json (files.json_line); nll stays.
    return text, {"model": args.model, "file": args.file, "perplexity": result["ppl"],
                  "nll": result["nll"], "bits_per_byte": result["bpb"], "tokens": result["tokens"]}


def whole_examples_batch_size(args, why: str) -> int:
    """--batch-size (BATCH_SIZE_DEFAULT where not given) for a file scored example by example (a
    classifier's TSV, sft pairs), after refusing the sliding window's flags, --max-length and
    --stride: "FLAG `why`: drop FLAG"."""
    for flag, value in (("--max-length", args.max_length), ("--stride", args.stride)):
        if value is not None:
            raise ValueError(f"{flag} {why}: drop {flag}")
    batch_size = BATCH_SIZE_DEFAULT if args.batch_size is None else as_count("--batch-size", args.batch_size)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {batch_size}")
    return batch_size


def pairs_report(args) -> tuple[str, dict]:
    """`minigpt eval LM PAIRS.jsonl`: a file of prompt/completion pairs, what `minigpt finetune --task
    sft` trains on, scored as that task's val loss (minigpt/sft_data.py's `sft_val_loss`): the mean
    loss over the completions' tokens (their EOS included), the prompts context. Scored as text, its
    braces, keys and prompts would make a perplexity of something else. Each pair is cut to the
    length the model was trained on (`model_record`: its context, or less for a fresh model
    pretrained on shorter windows; an sft run's --block-size is not kept: a run that cut its pairs
    shorter scored fewer tokens of them); the pairs cut are said."""
    from minigpt.classify_data import batch_pad_id
    from minigpt.model import GPT
    from minigpt.sft_data import encode_pairs, n_targets, read_pairs, sft_val_loss

    batch_size = whole_examples_batch_size(args, f"sets a sliding window, but {args.file} holds prompt/completion pairs, "
                                                 "each scored whole (its completion's tokens)")
    pairs = read_pairs(args.file)
    model = GPT.from_pretrained(args.model, dtype=args.dtype, device=args.device)
    tok = load_tokenizer(args, model.config)
    trained = shorter_trained_length(model_record(args), model.config.n_positions)
    block = model.config.n_positions if trained is None else trained
    examples = encode_pairs(tok, pairs, block)
    if not examples.rows:
        raise ValueError(f"every prompt in {args.file} fills the {block} tokens scored: no completion token is left to score")
    if examples.cut:  # said, as fine-tuning says it: a cut pair is scored on its first tokens only
        length = "the context" if trained is None else f"the {block} tokens {args.model} was trained on"
        print(f"{examples.cut:,} of {len(examples.rows):,} pairs are longer than {length} ({block}) and keep their first "
              "tokens", file=sys.stderr)
    loss = sft_val_loss(model, examples, batch_pad_id(tok), batch_size, progress=True)
    if not math.isfinite(loss):
        raise ValueError(f"the loss is {loss}: {NONFINITE}")
    targets = sum(n_targets(len(row), n) for row, n in zip(examples.rows, examples.prompt_lens))
    dropped = f"; {examples.dropped:,} dropped, their prompt filling the context" if examples.dropped else ""
    text = (f"completion loss {loss:.4f} nats/token  perplexity {math.exp(min(loss, 700)):.4f}  ({targets:,} completion "
            f"tokens of {len(examples.rows):,} pairs{dropped}; the prompts are context, as `finetune --task sft` scores them)")
    return text, {"model": args.model, "file": args.file, "completion_loss": loss, "tokens": targets,
                  "pairs": len(examples.rows), "cut": examples.cut, "dropped": examples.dropped}


def cut_length(args, tok, n_positions: int) -> tuple[int, str]:
    """The length a classifier's texts are cut to, and where it comes from, in words. Fine-tuning cut
    them to its --block-size and saved it as the model_max_length of the tokenizer beside the weights
    (`model_record`), so that one is read, whatever --tokenizer is given. A folder that records
    none: the tokenizer read (--tokenizer) gives it, else the context, and a note says which, as
    the texts being cut or not tells nothing of it."""
    recorded = model_record(args)
    trained = shorter_trained_length(recorded, n_positions)
    if trained is not None:
        return trained, f"fine-tuning's --block-size, as {args.model} records it"
    if recorded is not None:
        return n_positions, "the model's context, n_positions"
    read = f"--tokenizer {args.tokenizer}" if args.tokenizer else "its own tokenizer"
    max_tokens = min(tok.model_max_length or n_positions, n_positions)  # never past the context
    limit = f"the model_max_length of {read}" if max_tokens == tok.model_max_length else "the model's context, n_positions"
    print(f"note: {args.model} records no model_max_length (fine-tuning's --block-size, in its tokenizer_config.json): "
          f"each text is cut to {max_tokens} tokens, {limit}", file=sys.stderr)
    return max_tokens, limit


def classifier_report(args) -> tuple[str, dict]:
    """`minigpt eval CLASSIFIER FILE.tsv`: accuracy and loss over the file, then one line per class;
    and the record `--json` prints, with every class (`examples` 0 for one the file lacks). With
    --predictions, each example's prediction is written to that file (`write_predictions`)."""
    from minigpt.classifier import GPTClassifier
    from minigpt.classify_data import MissingTab, batch_pad_id, check_labels, encode_examples, label_ids, read_tsv
    from minigpt.files import STDIN

    batch_size = whole_examples_batch_size(args, f"sets a language model's sliding window; {args.model} is a classifier, "
                                                 "which reads each example whole (up to its fine-tuning's --block-size)")
    if args.file == STDIN:
        raise ValueError(f"{args.model} is a classifier, scored on a TSV file of text<TAB>label lines; standard input "
                         "is not read for it: save the lines to a file")
    check_file(args.file, "TSV file")
    if args.predictions is not None:
        check_predictions_path(args.predictions, args.file)
    try:  # before the model loads: a file it cannot score is said at once
        texts, labels = read_tsv(path=args.file)
    except MissingTab as e:  # a plain text, likely
        raise ValueError(f"{e}: {args.model} is a classifier, scored on labelled examples, one text<TAB>label per line "
                         "(as `minigpt finetune --task classify` reads them); the perplexity of a plain text needs a "
                         "language model") from None
    model = GPTClassifier.from_pretrained(args.model, dtype=args.dtype, device=args.device)
    tok = load_tokenizer(args, model.config)
    if isinstance(labels[0], str):  # names: the model's class ids for them (its config.json's label2id)
        labels = label_ids(labels, model.label2id, Path(args.file), f"the labels of {args.model}")
    check_labels(labels, model.num_labels, path=Path(args.file))  # the error names the first line holding one
    max_tokens, limit = cut_length(args, tok, model.config.n_positions)
    encoded = encode_examples(tok, texts, max_tokens)
    if encoded.cut:  # said, as fine-tuning says it: a cut text is classified from its beginning only
        print(f"{encoded.cut:,} of {len(texts):,} texts are longer than {max_tokens} tokens ({limit}) and keep their "
              f"first {max_tokens}", file=sys.stderr)
    result = classifier_scores(model, encoded.rows, labels, batch_pad_id(tok), batch_size, progress=True,
                               probabilities=args.predictions is not None)
    if not math.isfinite(result["loss"]):
        raise ValueError(f"the loss is {result['loss']}: {NONFINITE}")
    lines = [f"accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f} nats/example  "
             f"({result['right']:,} of {result['examples']:,} examples right)"]
    for label in range(model.num_labels):  # a class the file lacks is said, not skipped
        c = result["classes"].get(label)
        if c is None:
            lines.append(f"  class {label} ({model.id2label[label]}): no examples")
            continue
        # The row of the confusion matrix: which classes its examples were taken for, when wrong.
        mistaken = ", ".join(f"{model.id2label[other]}: {count:,}" for other, count in enumerate(c["predicted"])
                             if count and other != label)
        lines.append(f"  class {label} ({model.id2label[label]}): accuracy {c['accuracy']:.4f}  loss {c['loss']:.4f}  "
                     f"({c['right']:,} of {c['examples']:,} right" + (f"; taken for {mistaken})" if mistaken else ")"))
    classes = [{"id": label, "label": model.id2label[label], "examples": 0, "right": 0, "accuracy": None, "loss": None,
                "predicted": {}} for label in range(model.num_labels)]
    for label, c in result["classes"].items():  # "predicted": the count taken for each class, by its name
        classes[label].update({k: c[k] for k in ("examples", "right", "accuracy", "loss")},
                              predicted={model.id2label[i]: n for i, n in enumerate(c["predicted"]) if n})
    if args.predictions is not None:
        write_predictions(args.predictions, example_line_numbers(args.file, len(labels)), labels,
                          result["probabilities"], model.id2label)
    return "\n".join(lines), {"model": args.model, "file": args.file, "accuracy": result["accuracy"],
                              "loss": result["loss"], "right": result["right"], "examples": result["examples"],
                              "classes": classes}


def main(argv: list[str] | None = None) -> int:
    from minigpt.checkpoint import DTYPE_NAMES, is_classifier_checkpoint
    from minigpt.cli import FAILED, prog

    parser = argparse.ArgumentParser(prog=prog("eval"), description="Sliding-window perplexity of a language model on "
                                     "a text file, or a classifier's accuracy and loss on a labelled TSV file.")
    parser.add_argument("model", type=user_path, help="model directory (HF layout: config.json, model.safetensors), or a GPT-2 size by "
                        "name (gpt2, ..., gpt2-xl); a classifier's (minigpt finetune --task classify) is scored on a "
                        "TSV file")
    parser.add_argument("file", type=user_path, help="UTF-8 text file to score (-: standard input), read as text: CRLF and a lone CR "
                        "become LF and a leading byte order mark is dropped, so bits per byte count the bytes of that "
                        "text, not the file's; for a classifier, a TSV file of text<TAB>label lines, as fine-tuning "
                        "reads them; a JSON Lines file of prompt/completion pairs is scored on its completions, as "
                        "`finetune --task sft` scores them")
    parser.add_argument("--tokenizer", type=user_path, help="tokenizer directory (default: the model directory)")
    parser.add_argument("--max-length", type=int,
                        help="window length (default: the model's n_positions, or the length it was trained on where "
                        "its own tokenizer's model_max_length says less); plain text only")
    parser.add_argument("--stride", type=int,
                        help="tokens between window starts (default: max_length / 2); plain text only")
    parser.add_argument("--batch-size", type=int,
                        help=f"examples scored at once (default: {BATCH_SIZE_DEFAULT}); classifiers and sft pairs only")
    parser.add_argument("--predictions", metavar="FILE", type=user_path,
                        help="classifiers only: also write each example's prediction to FILE, one JSON line per "
                        "example in the TSV's order: its line number there, its label, the prediction and each "
                        "class's probability")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N, mps or auto: cuda when available (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="weights and math (default: float32)")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object instead of text")
    args = parser.parse_args(argv)
    try:
        report, record = classifier_report(args) if is_classifier_checkpoint(args.model) else language_model_report(args)
    except (ValueError, OSError) as e:  # OSError: a file it may not read, or a directory where a file should be
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:  # Ctrl-C on a long text: one line, as the other commands end, not a traceback
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT
    print(json_line(record) if args.json else report)
    return 0
