"""Fine-tuning: start from a pretrained GPT-2 and decide which of its weights may change.

Where it sits: the pretrained model (`--init`, loaded as `GPT.from_pretrained` does, in fp32) → `apply_strategy` (which parameters train) → the
training loop (`minigpt/train.py`) → `save_pretrained` in Hugging Face layout. Three tasks:
`lm` (keep predicting the next token, on new text: text files, tokenized into OUT_DIR/data, or a
DATA_DIR that `minigpt prepare` wrote), `classify` (`minigpt/classifier.py`: a
new head labels each text, or an --init classifier's own head goes on training; its TSV data,
batches and accuracy are minigpt/classify_data.py) and `sft` (instruction tuning: the completion
of each prompt, the loss on the completion's tokens alone; its JSON Lines data and batches are
minigpt/sft_data.py).

The four classic strategies, cheapest first:
- frozen:  the pretrained model is fixed; only a *new* head trains, on the model's features
           (a linear probe, or a small MLP). Frozen is not eval mode: the blocks keep the
           checkpoint's dropout while training, noise on the features (`--dropout 0` turns it
           off). For `lm` and `sft` there is no new head, the LM head is the pretrained `wte`, so
           `frozen` would train nothing and is refused.
- lora:    every pretrained weight is fixed; low-rank adapters on the attention/MLP projections
           train (`minigpt/lora.py`), and are merged into the weights when saved.
- partial: the last N blocks and `ln_f` train, the rest is frozen. GPT-2 ties the LM head to the
           input embedding `wte`: one matrix, used at the bottom and at the top. By default it
           stays frozen. `train_embeddings=True` trains it, which for `lm` trains the output layer
           *and* changes how every input token is embedded (they cannot be separated without
           untying, which HF's GPT-2 layout cannot store), and makes the backward pass run all
           the way down to the embedding instead of stopping at the lowest trainable block.
- full:    everything trains.
The optimizer only ever sees trainable parameters, so its state (AdamW keeps two fp32 moments
per parameter: 8 bytes a parameter) shrinks with the strategy, and so does memory for gradients.

`minigpt finetune` (`main`) runs it end to end, from the settings in minigpt/finetune_config.py
(`FinetuneConfig`), with `train_loop` from minigpt/train.py (the loop's other driver is `minigpt
train`, minigpt/pretrain.py), so resume, eval, logs, the loss plot and DDP are the training
loop's: under `torchrun --nproc_per_node=N` each process draws its own micro-batches (N processes
end where one does with the same --grad-accum), frozen parameters take no part in DDP's gradient
all-reduce, the processes split the accuracy evaluation, and rank 0 alone writes files (the lm
task's tokens included).
Outputs go in OUT_DIR in HF layout with the tokenizer files: a `GPT2LMHeadModel` for lm and sft (LoRA
merged in), a `GPT2ForSequenceClassification` for classify; `finetune_summary.json` holds the
figures `scripts/compare_strategies.py` tabulates: the last evaluation, and the best val loss (and
accuracy) seen, with the step each came from.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import statistics
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from minigpt.classifier import GPTClassifier
from minigpt.classify_data import (Examples, batch_pad_id, check_labels, classification_loss, encode_examples,
                                   examples_fingerprint, label_ids, load_classification_data, pad_right, score_examples,
                                   split_files, val_source)
from minigpt.checkpoint import download_hint, pickle_hint
from minigpt.checks import check_flag, first_few
from minigpt.cli import prog
from minigpt.config import gpt2_name
from minigpt.data import data_fingerprint, load_splits, prepare, read_meta, sample_batch
from minigpt.files import atomic_write_text, finite_or_null, read_json
from minigpt.finetune_config import (NEW_HEAD, SUMMARY_FILE, VAL_FRACTION_DEFAULT, FinetuneConfig, check_strategy,
                                     hidden_spec, hidden_widths)
from minigpt.lora import ADAPTER_CONFIG, ADAPTER_DIR, DEFAULT_TARGETS, adapter_base, inject_lora, lora_merged, save_adapters
from minigpt.model import GPT
from minigpt.sft_data import (encode_pairs, holds_pairs, load_pairs, reading_record, sft_batch, sft_val_loss,
                              val_in_train)
from minigpt.sft_data import val_source as sft_val_source
from minigpt.resume import check_data, read_state
from minigpt.run_dir import (MOVED_DATA_HINT, STATE_FILE, check_out_dir, data_meta, run_dir_lock, run_tokens,
                             tokens_differ)
from minigpt.run_log import comparable_evaluations, read_log
from minigpt.stats import peak_memory_bytes
from minigpt.pretrain import build_model, check_block_size, check_same_tokenizer, seeded, trained_length
from minigpt.tokenizer import Tokenizer, model_tokenizer
from minigpt.train import lm_loss, train_loop
from minigpt.train_config import as_flag, parse_config
from minigpt.train_runtime import Runtime, on_rank_0, run_command, setup_runtime

ADAMW_BYTES_PER_PARAM = 8  # exp_avg + exp_avg_sq, one fp32 each
# A classify evaluation's batches hold this many times --batch-size texts. The assumption: under
# no_grad no block keeps its activations for a backward pass (a training step keeps every block's),
# so a batch 4 times a training one fits in the memory a training step used. Its limit: with
# --gradient-checkpointing a training step keeps only each block's input and rebuilds one block at a
# time, while an evaluation builds one block at a time at 4 times the batch, its attention scores
# included where SDPA's math kernel makes them (B·n_head·T², for the first batch, the longest
# texts): that may exceed a training step's peak; a smaller --batch-size then helps.
EVAL_BATCH_SCALE = 4


@dataclass
class StrategySummary:
    strategy: str
    trainable: int  # parameters with requires_grad
    total: int  # all parameters (tied wte/lm_head counted once, LoRA adapters included)

    @property
    def optimizer_bytes(self) -> int:
        return ADAMW_BYTES_PER_PARAM * self.trainable

    def __str__(self) -> str:
        return (f"strategy {self.strategy}: training {self.trainable:,} of {self.total:,} parameters "
                f"({100 * self.trainable / self.total:.2f}%); AdamW state {self.optimizer_bytes / 2**20:.2f} MiB")


def apply_strategy(
    model: GPT | GPTClassifier,
    strategy: str,
    *,
    n_trainable_blocks: int = 1,
    train_embeddings: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
    lora_targets: tuple[str, ...] | str = DEFAULT_TARGETS,
    verbose: bool = True,
) -> StrategySummary:
    """Set `requires_grad` on `model` for `strategy` (in place; "lora" also inserts adapters).

    The task follows from the model: a `GPT` is fine-tuned as a language model, a
    `GPTClassifier` as a classifier, whose head (`score`) always trains because it is new.
    `n_trainable_blocks` (0..n_layer) and `train_embeddings` apply to "partial" only; the
    `lora_*` arguments to "lora" only (set for another strategy, they are refused rather than
    ignored). Whatever is refused is refused first (minigpt/finetune_config.py's `check_strategy`),
    so a refused call leaves the model as it was. Prints and returns the trainable/total counts.
    """
    options = dict(n_trainable_blocks=n_trainable_blocks, train_embeddings=train_embeddings, lora_rank=lora_rank,
                   lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_targets=lora_targets)
    is_classifier = isinstance(model, GPTClassifier)
    gpt = model.gpt if is_classifier else model
    gpt.check_config()  # "partial" counts its blocks from config.n_layer: blocks appended would shift them
    check_flag("verbose", verbose)
    check_strategy(model, strategy, options, apply_strategy.__kwdefaults__)

    model.requires_grad_(strategy == "full")
    if strategy == "partial":
        # Blocks are counted from the top: features near the output are the most task-specific.
        for block in gpt.transformer.h[gpt.config.n_layer - n_trainable_blocks:]:
            block.requires_grad_(True)
        gpt.transformer.ln_f.requires_grad_(True)
        if train_embeddings:
            gpt.transformer.wte.requires_grad_(True)  # also the LM head: the same Parameter
    elif strategy == "lora":
        inject_lora(gpt, lora_targets, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout)  # new A, B train
    if is_classifier:
        model.score.requires_grad_(True)

    params = list(model.parameters())  # yields the tied wte/lm_head once
    summary = StrategySummary(strategy, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    if verbose:
        print(summary, file=sys.stderr)
    return summary


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What the optimizer should hold: frozen parameters get no AdamW state at all."""
    return [p for p in model.parameters() if p.requires_grad]


def export(model: GPT | GPTClassifier, path: Path, tokenizer, max_length: int) -> None:
    """Save in HF layout with the tokenizer, `max_length` its model_max_length; LoRA adapters are
    merged for the time of the save (`lora_merged`), so the checkpoint is a plain GPT-2 and the model
    being trained keeps its adapters."""
    with lora_merged(model):
        model.save_pretrained(path)  # GPT2LMHeadModel, or GPT2ForSequenceClassification for a classifier
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(path)


def _lm_task(cfg: FinetuneConfig, gpt: GPT, tokenizer, rt: Runtime, progress: bool):
    """Next-token prediction on text files, tokenized once into OUT_DIR/data (train.bin/val.bin), or
    on a DATA_DIR `minigpt prepare` wrote, read where it is (as `minigpt train` reads one).
    progress=False: the text files are tokenized without a bar. (Its evaluations are train_loop's
    sampled val loss, which draws no bar of its own.)"""
    prepared = cfg.prepared_data()
    if prepared:
        check_prepared_tokenizer(cfg, prepared)
    tokens_dir = prepared or _text_tokens(cfg, tokenizer, rt, progress)
    meta = read_meta(tokens_dir)
    tokens = load_splits(tokens_dir, meta, gpt.config.vocab_size, cfg.block_size + 1)

    def get_batch(split: str, rng: torch.Generator):
        return sample_batch(tokens[split], cfg.block_size, cfg.batch_size, rng)

    # The fingerprint hashes the ids themselves, however they came: the same text in other files
    # (or prepared elsewhere) resumes, other text is refused (`check_data`).
    bytes_per_token = meta["val_bytes"] / meta["val_tokens"] if meta.get("val_bytes") else None  # (older prepared data: none)
    return gpt, get_batch, lm_loss, {"bytes_per_token": bytes_per_token,
                                     "data_fingerprint": data_fingerprint(tokens, meta["vocab_size"])}


def _text_tokens(cfg: FinetuneConfig, tokenizer, rt: Runtime, progress: bool) -> Path:
    """The directory of --data's text files as tokens: OUT_DIR/data, tokenized now (with a bar if
    `progress`) unless a resumed run made them there from the same files and split.

    The tokens are written into data.new (NEW_TOKENS) and come to data/ by a rename, once whole
    (prepare writes meta.json last): a data/ that finetune made is never half-written, and a run
    killed while it tokenized leaves data.new, which the next one clears (run_dir.py's
    `own_tokens` counts data/ as a run's by its meta.json and tokenizer/ alone; a --data inside
    data.new is refused: `check_finetune_inputs`). A new run renames them into place
    at once, over a data/ of the same tokens (check_out_dir refused any other). A resumed run
    reuses its tokens, unless --data now names other files or --val-fraction another split (a flag
    given with --resume overrides the saved one, so the text is tokenized again, the flag not
    silently ignored; other tokens are then refused, as `minigpt train` refuses other data, unless
    --allow-new-data): its new tokens wait in data.new, and replace data/ only when it saves a
    checkpoint on them (`adopt_new_tokens`), so a --resume refused later (by --max-iters, say, or
    a model flag) leaves the run as it was."""
    out = Path(cfg.out)
    data_dir, new = out / "data", out / NEW_TOKENS
    found = data_meta(data_dir) if cfg.resume else None
    # (the run's tokenizer, loaded already, is the one its settings name: `tokens_differ` loads only data/'s)
    reused = found is not None and not tokens_differ(data_dir, found, run_tokens(vars(cfg)), tokenizer)
    if cfg.resume and not reused:
        check_replaceable_tokens(cfg, found)

    # Under torchrun rank 0 alone writes the files (two writers would clobber each other's temp
    # files) and the others wait for it (`on_rank_0`).
    def tokenize() -> None:
        shutil.rmtree(new, ignore_errors=True)  # left by a run killed while it tokenized, or a resume refused or killed
        if reused:
            return
        _tokenize(cfg, tokenizer, new, progress)
        if not cfg.resume:  # (a kill between these two leaves no data/, and data.new, cleared next time)
            shutil.rmtree(data_dir, ignore_errors=True)
            new.rename(data_dir)

    on_rank_0(rt, tokenize)  # the others wait for the tokens, and learn if rank 0 failed
    return new if cfg.resume and not reused else data_dir


NEW_TOKENS = "data.new"  # in OUT_DIR: tokens being written, or a resumed lm run's of another --data until a checkpoint records them


def check_replaceable_tokens(cfg: FinetuneConfig, found: dict | None) -> None:
    """Refuse a resume that would replace an OUT_DIR/data that holds no tokens the run made: the
    prepared data the run read there (--data OUT_DIR/data, the user's input, not its product), or
    a data/ without a meta.json (no run's tokens). `found`: data/'s meta.json, None if it has none."""
    out = Path(cfg.out)
    data_dir = out / "data"
    if not data_dir.exists():
        return
    saved = read_state(out / STATE_FILE, map_location="cpu", mmap=True)["config"].get("data")
    read_there = isinstance(saved, str) and Path(saved).resolve() == data_dir.resolve()
    if found is not None and not read_there:
        return
    held = "the prepared data the run read (its --data)" if read_there else "files of its own, and no meta.json: no run's tokens"
    raise FileExistsError(f"{data_dir} holds {held}, which tokens of --data's text files would replace: to train on "
                          f"that text, prepare it into another folder (`minigpt prepare FILES --out DIR`) and resume with "
                          f"--data DIR, or start a new run with another --out")


def _tokenize(cfg: FinetuneConfig, tokenizer, tokens_dir: Path, progress: bool) -> None:
    """Tokenize --data's text files (with a bar if `progress`) into tokens_dir (OUT_DIR/data.new:
    `_text_tokens`). A resumed run's are checked there by `check_data` (the same tokens, say from
    the text files moved elsewhere, or other ones with --allow-new-data) and removed if refused."""
    # Several files are joined as `minigpt prepare FILES` joins them: <|endoftext|> after each, and
    # the last --val-fraction of each held out.
    meta = prepare(cfg.data_paths(), tokenizer, tokens_dir, cfg.val_fraction, overwrite=True, progress=progress)
    if not cfg.resume:
        return
    state = read_state(Path(cfg.out) / STATE_FILE, map_location="cpu", mmap=True)
    now = data_fingerprint(load_splits(tokens_dir, meta, meta["vocab_size"]), meta["vocab_size"])
    try:
        check_data(Path(cfg.out), state.get("data"), now, cfg, state["config"])  # (its note is restore's to print)
    except ValueError:
        shutil.rmtree(tokens_dir)
        raise


def adopt_new_tokens(out: Path) -> None:
    """Move a resumed run's new tokens (OUT_DIR/data.new, see `_text_tokens`) into data/, as the
    checkpoint being saved records them; nothing when there are none. The processes keep reading
    the files they opened (memory-mapped: a rename or an unlink leaves them be)."""
    new = out / NEW_TOKENS
    if new.is_dir():
        shutil.rmtree(out / "data", ignore_errors=True)  # (the run's own: `check_replaceable_tokens`)
        new.rename(out / "data")


def settle_head_options(cfg: FinetuneConfig, init: GPT | GPTClassifier) -> None:
    """Fill in the --pooling and --head-hidden not given: an --init classifier's own (its head goes
    on training; any given must be its own, `check_head_options`), else a new head's (`NEW_HEAD`).
    Written into `cfg`, so the config the run saves, which --resume reads back, names its head."""
    if isinstance(init, GPTClassifier):
        check_head_options(cfg, init)
        own = {"pooling": init.pooling, "head_hidden": hidden_spec(init.hidden)}
    else:
        own = NEW_HEAD
    for name, value in own.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)


def _as_typed(name: str, value) -> str:
    """A head option as its flag is typed: --pooling mean, --head-hidden 32,16 (from (32, 16)), --head-hidden ""."""
    text = hidden_spec(value) if name == "head_hidden" else str(value)
    return f"{as_flag(name)} " + (text or '""')


def check_head_options(cfg: FinetuneConfig, clf: GPTClassifier) -> None:
    """An --init classifier keeps its head, so the head options given must be its own: every
    --num-labels, --pooling or --head-hidden that differs is refused, all in one error (unset, each
    is taken from the head)."""
    head = {"num_labels": clf.num_labels, "pooling": clf.pooling, "head_hidden": clf.hidden}
    given = {"num_labels": cfg.num_labels, "pooling": cfg.pooling,
             "head_hidden": None if cfg.head_hidden is None else hidden_widths(cfg.head_hidden)}
    differ = [name for name, value in head.items() if given[name] is not None and given[name] != value]
    if differ:
        theirs = ", ".join(_as_typed(name, head[name]) for name in differ)
        ours = ", ".join(_as_typed(name, given[name]) for name in differ)
        flags = " and ".join(as_flag(name) for name in differ)
        raise ValueError(f"--init {cfg.init} is a classifier, whose head goes on training: its head has {theirs}, not "
                         f"{ours}; leave {flags} unset (the head's own are then taken), or start from a language model "
                         "to train a new head")


def _class_ids(cfg: FinetuneConfig, data: dict[str, Examples], init: GPT | GPTClassifier) -> tuple[dict[str, Examples], dict[int, str] | None]:
    """Named labels as class ids, and the names by id (None for labels that are class ids already,
    kept as they are). The ids are an --init classifier's own (its label2id: the rows of its head
    keep their classes), else the training split's names sorted, 0..n-1. The val split goes through
    the same mapping, so that a name is one class in both; a name it lacks is refused by file and line."""
    if not isinstance(data["train"][1][0], str):
        return data, None
    if isinstance(init, GPTClassifier):
        label2id, whose = init.label2id, f"the labels of --init {cfg.init}, whose head goes on training"
    else:
        label2id = {name: i for i, name in enumerate(sorted(set(data["train"][1])))}
        whose = "the training split's labels, the classes a new head learns"
    files = split_files(cfg)
    ids = {split: (texts, label_ids(labels, label2id, files[split], whose)) for split, (texts, labels) in data.items()}
    return ids, {i: name for name, i in label2id.items()}


def _more_classes(cfg: FinetuneConfig, labels: list[int], from_head: bool) -> str:
    """How to give a class id past the last class a place, for check_labels' error: a new head's
    --num-labels; an --init classifier's head has its classes."""
    largest = max(labels)
    if from_head:
        return (f"; --init {cfg.init}'s head has no more: if class {largest} really exists, start from a language model "
                f"with --num-labels {largest + 1}")
    return f"; if class {largest} really exists, pass --num-labels {largest + 1}"


def _classify_task(cfg: FinetuneConfig, init: GPT | GPTClassifier, tokenizer, rt: Runtime, progress: bool):
    """Labels from a TSV: right-padded batches, accuracy at eval, and a GPTClassifier: `init` itself
    when --init is one (its head goes on training), else a new head on top of the GPT `init`.
    progress=False: each evaluation scores the val texts without a bar."""
    as_written = load_classification_data(cfg)
    data, id2label = _class_ids(cfg, as_written, init)
    from_head = isinstance(init, GPTClassifier)
    num_labels = init.num_labels if from_head else cfg.num_labels  # (a --num-labels not the head's was refused)
    if id2label and not from_head and num_labels not in (None, len(id2label)):  # else "id2label must name labels 0..n-1"
        raise ValueError(f"--num-labels {num_labels}, but the training labels name {len(id2label)} classes "
                         f"({', '.join(id2label.values())}): drop --num-labels, the names are the classes")
    if num_labels is None:  # read from the data: its names, else the largest training label + 1
        num_labels = len(id2label) if id2label else max(data["train"][1]) + 1
        if num_labels < 2:  # else GPTClassifier's "num_labels must be an integer ≥ 2", for a flag not given
            only, flag = (id2label[0], "") if id2label else (0, ", or pass --num-labels")
            raise ValueError(f"every training example is labelled {only!r}: a classifier needs 2 classes or more; check "
                             f"--data (and --max-examples){flag}")
        if unseen := sorted(set(range(num_labels)) - set(data["train"][1])):  # e.g. labels 1 and 2 (as Yelp's files number them)
            raise ValueError(f"no training example is labelled {first_few(unseen)}: labels are class ids 0 to "
                             f"num_labels - 1, read here as {num_labels} classes from the largest label; number the labels "
                             "from 0, or pass --num-labels if those classes exist but --data (or --max-examples) has none")
    files = split_files(cfg)
    for split, (_, y) in data.items():  # (named labels were checked by name, in _class_ids)
        check_labels(y, num_labels, f"{split} ", None if id2label else files[split], _more_classes(cfg, y, from_head))
    pad_id = batch_pad_id(tokenizer)
    encoded = {s: encode_examples(tokenizer, texts, cfg.block_size) for s, (texts, _) in data.items()}
    ids = {s: e.rows for s, e in encoded.items()}
    labels = {s: torch.tensor(y) for s, (_, y) in data.items()}
    if rt.is_main:
        names = f" ({', '.join(f'{i} {name}' for i, name in id2label.items())})" if id2label else ""
        print(f"classify: {len(ids['train']):,} train / {len(ids['val']):,} val examples ({val_source(cfg)}), "
              f"{num_labels} labels{names}", file=sys.stderr)
        # Said, not silent: a cut text is classified from its beginning only (the last pooled token is
        # the block_size-th), which a larger --block-size would avoid.
        if encoded["train"].cut or encoded["val"].cut:
            longest = max(e.longest for e in encoded.values())
            print(f"classify: {encoded['train'].cut:,} train / {encoded['val'].cut:,} val texts are longer than --block-size "
                  f"{cfg.block_size} tokens and keep their first {cfg.block_size} (the longest has {longest})",
                  file=sys.stderr)
    model = init if from_head else GPTClassifier(init, num_labels, pooling=cfg.pooling, hidden=hidden_widths(cfg.head_hidden),
                                                 id2label=id2label, pad_token_id=tokenizer.pad_token_id)

    def get_batch(split: str, rng: torch.Generator):
        picks = torch.randint(len(ids[split]), (cfg.batch_size,), generator=rng).tolist()
        idx, mask = pad_right([ids[split][i] for i in picks], pad_id)
        return idx, mask, labels[split][picks]

    def eval_fn(m: GPTClassifier) -> dict[str, float]:  # every val example: its val_loss replaces the sampled one
        scores = score_examples(m, ids["val"], data["val"][1], pad_id, EVAL_BATCH_SCALE * cfg.batch_size, rt.rank, rt.world,
                                progress=rt.is_main and progress)
        return {"val_loss": scores["loss"], "val_accuracy": scores["accuracy"]}

    # A cross-entropy per text, not per token: the log's and loss.png's unit (train_loop knows only lm_loss's).
    return model, get_batch, classification_loss, {"eval_fn": eval_fn, "data_fingerprint": examples_fingerprint(as_written),
                                                   "loss_unit": "nats per text"}


def _sft_task(cfg: FinetuneConfig, gpt: GPT, tokenizer, rt: Runtime, progress: bool):
    """Prompt/completion pairs from JSON Lines (minigpt/sft_data.py): right-padded batches of whole
    examples drawn as classify draws them, the loss on the completion tokens alone, and at each
    evaluation the val loss over every completion token of every val example (progress=False: without a bar)."""
    pairs = load_pairs(cfg)
    examples = {split: encode_pairs(tokenizer, p, cfg.block_size) for split, p in pairs.items()}
    for split, e in examples.items():  # (a split of examples all dropped would have no batch to draw)
        if not e.rows:
            raise ValueError(f"every {split} example's prompt fills --block-size {cfg.block_size} tokens, leaving no "
                             "completion token to learn from: pass a larger --block-size, or shorter prompts")
    if rt.is_main:
        train, val = examples["train"], examples["val"]
        # Said, not removed (`val_in_train`): a val pair the model also trains on is no held-out example.
        shared = val_in_train(pairs)
        also = (f"; {shared:,} of {len(pairs['val'][0]):,} val pairs are also train pairs: their loss is not held out"
                if shared else "")
        print(f"sft: {len(train.rows):,} train / {len(val.rows):,} val examples ({sft_val_source(cfg)}){also}", file=sys.stderr)
        # Said, not silent: a cut example loses its completion's end and its EOS (the model is not
        # taught to stop there); a dropped one had no completion token in the block.
        if train.cut or val.cut:
            longest = max(e.longest for e in examples.values())
            print(f"sft: {train.cut:,} train / {val.cut:,} val examples are longer than --block-size + 1 "
                  f"({cfg.block_size + 1} tokens: the inputs and the last one's target) and keep their first "
                  f"{cfg.block_size + 1} (the longest has {longest})", file=sys.stderr)
        if train.dropped or val.dropped:
            print(f"sft: dropped {train.dropped:,} train / {val.dropped:,} val examples whose prompt fills --block-size "
                  f"{cfg.block_size}: no completion token is left to learn from", file=sys.stderr)
        # GPT-2's words carry their space (" Paris"): a prompt's trailing space becomes a lone " " token
        # and its completion a word without one, pairs of tokens pretraining never wrote.
        if spaced := sum(prompt.endswith(" ") for prompt in pairs["train"][0]):
            print(f"sft: note: {spaced:,} train prompts end in a space, a token of its own before a completion "
                  "whose first word has none, unlike GPT-2's text: put the space at the completion's start "
                  '("Answer:" + " Paris"), and prompt the model without it', file=sys.stderr)
    pad_id = batch_pad_id(tokenizer)

    def get_batch(split: str, rng: torch.Generator):
        picks = torch.randint(len(examples[split].rows), (cfg.batch_size,), generator=rng).tolist()
        return sft_batch(examples[split], picks, pad_id)

    def eval_fn(m: GPT) -> dict[str, float]:  # every val example: its val_loss replaces the sampled one
        with rt.autocast():  # as the lm task's evaluation runs
            loss = sft_val_loss(m, examples["val"], pad_id, cfg.batch_size, rt.rank, rt.world,
                                progress=rt.is_main and progress)
        # A loss per completion token, so a perplexity too (exp() overflows past ~709).
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700))}

    # The pairs themselves, sorted: other examples are refused on --resume (`check_data`). And how
    # they were encoded: a resume that encodes them otherwise measures another val loss (`restore`).
    fingerprint = {**examples_fingerprint(pairs), **reading_record(pairs)}
    # The positions it trains: its longest example's inputs (a row but its last id), within the block.
    windows = min(examples["train"].longest - 1, cfg.block_size)
    return gpt, get_batch, lm_loss, {"eval_fn": eval_fn, "data_fingerprint": fingerprint, "windows": windows}


TASK_BUILDERS = {"lm": _lm_task, "classify": _classify_task, "sft": _sft_task}

DATA_KINDS = ("text files or a DATA_DIR `minigpt prepare` wrote (lm), a TSV file or directory (classify), or a JSON "
              "Lines file of prompts and completions (sft)")


def check_finetune_inputs(cfg: FinetuneConfig) -> None:
    """Refuse a --data or --init the run could not start from, naming what is wrong and how to fix
    it: a missing path, one inside OUT_DIR/data.new (the lm task's scratch), lm data that is neither
    text nor one prepared DATA_DIR (`check_lm_data`), or an --init that is no checkpoint (a folder
    of LoRA adapters alone, a file, a folder without config.json). Before OUT_DIR is locked or any model, tokenizer or data is read: a typo costs no
    wait. Every process checks (under torchrun rank 0 alone reads the lm text)."""
    if not cfg.data:
        raise ValueError(f"--data (data= in Python) is required: {DATA_KINDS}")
    for path in cfg.data_paths():
        if not path.exists():
            moved = MOVED_DATA_HINT if cfg.resume else ""
            raise FileNotFoundError(f"--data {path} does not exist: {DATA_KINDS}{moved}")
    scratch = Path(cfg.out) / NEW_TOKENS
    for path in (*cfg.data_paths(), *((Path(cfg.val_data),) if cfg.val_data else ())):
        # Where it points, and where it is (a link inside data.new goes with the folder): the lm task
        # clears data.new, and renames it to data/.
        if any(p.is_relative_to(s) for p in (path.resolve(), Path(os.path.abspath(path)))
               for s in (scratch.resolve(), Path(os.path.abspath(scratch)))):
            flag = "--data" if path in cfg.data_paths() else "--val-data"
            raise ValueError(f"{flag} {path} is in {NEW_TOKENS}/ of --out {cfg.out}, the folder where a fine-tuning "
                             "run there writes the tokens of its text files before they become data/ (clearing it "
                             "first): move or rename it, and pass its new path")
    if cfg.task == "lm":
        check_lm_data(cfg)
    init = Path(cfg.init)
    if not (init / "config.json").is_file() and (init / ADAPTER_CONFIG).is_file():
        # generate and eval load such a folder (its base, adapted: lora.load_adapted); a run starting
        # from one would save its adapters' base as --init, and take the base's tokenizer: merged
        # first, it is a plain checkpoint.
        base = adapter_base(init)
        raise FileNotFoundError(f"--init {cfg.init} holds LoRA adapters alone (for the base model {base!r}): start from "
                                f"the model they make, merged: save it with GPT.from_pretrained('{cfg.init}')"
                                f".save_pretrained(DIR), then pass --init DIR --tokenizer {base} (a minigpt LoRA run's "
                                "merged model, with its tokenizer, is the folder above its adapter/)")
    if not gpt2_name(cfg.init) and not (init / "config.json").is_file():  # else the first to fail is the tokenizer, read from --init
        what = ("is a file; it names a checkpoint directory" if init.is_file() else
                "holds no config.json: it is no checkpoint directory" if init.is_dir() else "does not exist")
        # As `train --init` says it (checkpoint.py): nanoGPT's ckpt.pt, or its out_dir, gets the command that converts it.
        hint = pickle_hint(init) if init.is_file() else download_hint(init)
        moved = "; if the run's --init has moved, pass --init with where it is now" if cfg.resume else ""
        raise FileNotFoundError(f"--init {cfg.init} {what} (config.json + model.safetensors, as save_pretrained and "
                                f"minigpt train write), or a GPT-2 size by name{hint}{moved}")


def check_lm_data(cfg: FinetuneConfig) -> None:
    """Refuse an lm --data that is neither text files nor one DATA_DIR `minigpt prepare` wrote,
    naming what it lacks, and a --val-fraction that prepared data would ignore: before any model
    is loaded, or any text tokenized."""
    if prepared := cfg.prepared_data():
        if cfg.val_fraction != VAL_FRACTION_DEFAULT:  # refused, as classify refuses it beside a dev.tsv
            raise ValueError(f"--val-fraction holds out part of each text file, but --data {prepared} is prepared data, "
                             "whose val.bin `minigpt prepare` split off already: drop --val-fraction")
        return
    for path in cfg.data_paths():
        if (path / "meta.json").is_file():  # one of several paths
            raise ValueError(f"--data {path} is prepared data (it holds meta.json), which is read alone: pass it as the "
                             "only --data, or prepare the text files together with `minigpt prepare FILES --out DATA_DIR`")
        if path.is_dir():  # e.g. an SST-2 directory with --task left at its default
            tsv = "; its train.tsv is for --task classify" if (path / "train.tsv").is_file() else ""
            raise ValueError(f"--data {path} is a directory without meta.json, so not prepared data (train.bin, val.bin, "
                             f"meta.json, as `minigpt prepare` writes): the lm task reads text files (name them) or such "
                             f"a directory{tsv}")
        if holds_pairs(path):  # (prepare would refuse it as JSON, with advice for text, not for pairs)
            raise ValueError(f"--data {path} holds prompt/completion pairs (JSON Lines), which the lm task would read as "
                             "text, braces and keys included: pass --task sft to train on the completions")


def check_prepared_tokenizer(cfg: FinetuneConfig, data_dir: Path) -> None:
    """Prepared tokens are the ids of the tokenizer that made them, saved beside them in
    DATA_DIR/tokenizer: refused unless it is the run's (--tokenizer's, else --init's), whose ids the
    model learned, as `minigpt train --init` refuses it (`check_same_tokenizer`)."""
    source = cfg.tokenizer or cfg.init
    remedy = f"`minigpt prepare FILES --tokenizer {source} --out DATA_DIR`"
    if not (data_dir / "tokenizer").is_dir():
        raise ValueError(f"--data {data_dir} holds no tokenizer/ (`minigpt prepare` writes it beside the tokens), so "
                         f"nothing tells which tokenizer's ids they are: prepare the text again, {remedy}")
    check_same_tokenizer(Tokenizer.from_pretrained(data_dir / "tokenizer"), source,
                         f"the data's tokenizer ({data_dir / 'tokenizer'})", f"Prepare the text with the model's own: {remedy}")


def best_evaluations(records: list[dict]) -> dict:
    """The best val loss, and for classify the best val accuracy, over a run's evaluations (the
    log.jsonl records that hold a val_loss), each with the step it came from; the earliest on a tie.
    Only the evaluations since a resume started best/ over (its "best_reset" record: other val data,
    or val loss measured otherwise) count, as they alone are comparable.

    The weights of the best val loss are the ones in OUT_DIR/best. The best accuracy may come
    from another step; its weights are kept only if that step is also the last (OUT_DIR itself).
    """
    evals = comparable_evaluations(records)
    best = {}
    if evals:
        by_loss = min(evals, key=lambda r: r["val_loss"])
        best.update(best_val_loss=by_loss["val_loss"], best_val_loss_step=by_loss["step"])
    scored = [r for r in evals if "val_accuracy" in r]
    if scored:
        by_accuracy = max(scored, key=lambda r: r["val_accuracy"])
        best.update(best_val_accuracy=by_accuracy["val_accuracy"], best_val_accuracy_step=by_accuracy["step"])
    return best


def finetune(cfg: FinetuneConfig, *, progress: bool = True) -> dict | None:
    """Load --init, apply the strategy, train with `train_loop`, write the summary; return it.

    Under torchrun every process trains; rank 0 alone writes and returns the summary (None elsewhere).
    progress=False: no progress bar, step lines or closing line (train_loop's `progress`), no bar
    while classify or sft scores its val examples, and no line of trainable parameters; warnings and
    notes (the examples read, texts cut) are still said, on stderr.
    `cfg` is left as it was passed: the run settles its own copy, which it saves and logs.
    """
    # The run settles settings in its config (--block-size from the model, a classify head's pooling
    # and hidden widths, --auto-resume into --resume or not), so that the config it saves names them
    # for --resume. On a copy: the caller's, reused for another run, would carry this one's values.
    check_flag("progress", progress)  # before the model and data are read, not at train_loop
    cfg = copy.copy(cfg)  # a copy, not dataclasses.replace: train_loop's copy says why
    check_finetune_inputs(cfg)
    with run_dir_lock(cfg.out):  # one run at a time in OUT_DIR, from its first look at it
        # Before the process group: a refusal by rank 0 (it alone judges OUT_DIR) then stops the
        # others while they wait for it to join, and the lm task writes its tokens into OUT_DIR/data.
        check_out_dir(cfg, adapters=saves_adapters(cfg))
        # Join the process group (train_loop's own call finds it joined) before any data is read: in
        # it the lm task's processes wait for rank 0's tokens, and a bad --grad-accum fails first.
        rt = setup_runtime(cfg)
        tokenizer = model_tokenizer(cfg.init, cfg.tokenizer)
        # A resumed run's weights learned the ids of the tokenizer saved in OUT_DIR, a new run's
        # those of --init's own: another of the same size (--tokenizer) would pair them with other
        # ids, which no data check sees (the classify fingerprint hashes the texts).
        if cfg.resume:
            check_same_tokenizer(tokenizer, cfg.out, f"--resume: the tokenizer from {cfg.tokenizer or cfg.init}",
                                 f"Resume without --tokenizer (or with the run's --init), or start a new run from this "
                                 f"one: --init {cfg.out}")
        # From --init in float32 whatever its stored dtype (build_model's fp32 master weights), with
        # --dropout applied; refused if the tokenizer is not the model's. A classifier --init goes on
        # training, head and all (a linear probe, then all weights; or new data): the classify task's
        # alone, as the lm task has no use for its head and no LM head of its own.
        init = build_model(cfg, tokenizer.vocab_size, tokenizer.eos_token_id, classifier_init=cfg.task == "classify")
        gpt = init.gpt if isinstance(init, GPTClassifier) else init
        if cfg.task == "classify":
            settle_head_options(cfg, init)
        if cfg.tokenizer and not cfg.resume:  # (one of another size: refused by build_model, which says so)
            check_same_tokenizer(tokenizer, cfg.init, f"--tokenizer {cfg.tokenizer}",
                                 "Drop --tokenizer: the model's own is read from --init")
        cfg.block_size = cfg.block_size or gpt.config.n_positions
        check_block_size(cfg.block_size, gpt.config.n_positions)

        strategy = dict(n_trainable_blocks=cfg.n_trainable_blocks, train_embeddings=cfg.train_embeddings, lora_rank=cfg.lora_rank,
                        lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets)
        # The strategy is tried first on a weightless copy of the model (the real one prints), so that a
        # bad --n-trainable-blocks, LoRA rank or target fails before the data is read: minutes to
        # tokenize a large text, or to read SST-2's 67k examples. A classifier's number of labels comes
        # from the data; no strategy depends on it, so 2 stands in for it.
        with torch.device("meta"):
            trial = GPT(gpt.config)
            if cfg.task == "classify":
                trial = GPTClassifier(trial, 2, pooling=cfg.pooling, hidden=hidden_widths(cfg.head_hidden))
            apply_strategy(trial, cfg.strategy, **strategy, verbose=False)
        # New weights (a classify head, LoRA adapters) depend only on the seed: torch's default
        # generator starts from a different random seed in every process. Seeded in a fork of it,
        # so the caller's random state comes back.
        with seeded(cfg.seed):
            model, get_batch, loss_fn, extra = TASK_BUILDERS[cfg.task](cfg, init, tokenizer, rt, progress)
            summary = apply_strategy(model, cfg.strategy, **strategy, verbose=rt.is_main and progress)
        out = Path(cfg.out)

        # The tokenizer's limit, which transformers' truncation=True (its text-classification pipeline's)
        # cuts each text to: for a classifier, the length its texts were cut to in training and
        # evaluation, so the pipeline scores what finetune scored; for a language model, the length
        # it was trained on (its context, unless --init records less: pretrain's trained_length), an sft
        # run's windows being its longest example, not --block-size, which only caps them.
        windows = extra.pop("windows", cfg.block_size)
        max_length = cfg.block_size if cfg.task == "classify" else trained_length(cfg, windows, model.config.n_positions)

        # Only a run that tokenizes text (`_text_tokens`) writes data.new: another's (classify, sft, an lm
        # run on prepared data) may be a folder of the user's that happens to bear that name, not to be touched.
        tokenizes = run_tokens(vars(cfg)) is not None

        def save_fn(m: nn.Module, path: Path) -> None:  # (rank 0 alone saves)
            export(m, Path(path), tokenizer, max_length)
            if saves_adapters(cfg):  # the adapters alone too: MBs beside the merged model's GBs
                save_adapters(m, Path(path) / ADAPTER_DIR, base=cfg.init)
            if tokenizes and Path(path) == out:  # the run's checkpoint, whose training state records the data it trains on
                adopt_new_tokens(out)

        try:
            metrics = train_loop(model, cfg, get_batch, loss_fn, save_fn, **extra, progress=progress)
        finally:  # new tokens no checkpoint recorded: the resume was refused, failed, or ran nothing to save
            if rt.is_main and tokenizes:
                shutil.rmtree(out / NEW_TOKENS, ignore_errors=True)
        # log.jsonl is rank 0's, and so is the summary: the others wait for it, and learn if it failed.
        return on_rank_0(rt, lambda: write_summary(cfg, rt, metrics["step"], summary))


def saves_adapters(cfg: FinetuneConfig) -> bool:
    """Whether each checkpoint of the run saves its LoRA adapters alone, in adapter/ (a classifier's
    head trains whole: the adapters alone are not the model)."""
    return cfg.strategy == "lora" and cfg.task != "classify"


def write_summary(cfg: FinetuneConfig, rt: Runtime, steps: int, summary: StrategySummary) -> dict:
    """OUT_DIR/finetune_summary.json, from the run's log: the figures of its last records, the best
    evaluations, the parameters and the speed; returned too."""
    out = Path(cfg.out)
    records = read_log(out)
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    # The figures from the log, not from `metrics`: a --resume that finds the run already at
    # max_iters (killed before this summary was written) runs no step and has none. Each from the
    # last record of its kind, whole: the train loss from the last that holds one, and every figure
    # of the last evaluation from it, never from an older one where it lacks them (a classify run of
    # an earlier minigpt, resumed, logged a perplexity its evaluations since have not).
    trained = next((r for r in reversed(records) if "loss" in r), {})
    evaluated = next((r for r in reversed(records) if "val_loss" in r), {})
    # The run's peak: this process's, or where higher its earlier sessions' (the summary the last one to
    # finish left; rank 0's), so a resume with nothing left to do does not report its own alone.
    kind = "CUDA peak allocated" if rt.device.type == "cuda" else "process peak RSS"
    peak = peak_memory_bytes(rt.device) / 2**20
    with suppress(OSError, ValueError, AttributeError):  # none yet, or unreadable: this session's
        before = read_json(out / SUMMARY_FILE) if cfg.resume else {}  # (a new run's OUT_DIR may hold another's)
        if before.get("peak_memory_kind") == kind and isinstance(before.get("peak_memory_mib"), (int, float)):
            peak = max(peak, before["peak_memory_mib"])
    result = finite_or_null({  # strict JSON: a NaN an older minigpt logged is null, as in log.jsonl now
        "task": cfg.task, "strategy": cfg.strategy, "steps": steps,
        "trainable_params": summary.trainable, "total_params": summary.total, "optimizer_state_bytes": summary.optimizer_bytes,
        "tokens_per_s": statistics.median(rates) if rates else None,  # median of the logged intervals
        # Measured as generate --stats measures it: the CUDA allocator's peak, else the process's peak RSS.
        "peak_memory_mib": peak,
        "peak_memory_kind": kind,
        **({"loss": trained["loss"]} if trained else {}),
        **{k: evaluated[k] for k in ("val_loss", "val_ppl", "val_accuracy", "val_bpb") if k in evaluated},
        **best_evaluations(records),
    })
    atomic_write_text(out / SUMMARY_FILE, json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    about = ("Fine-tune a pretrained GPT-2 (frozen, partial, full or LoRA) as a language model on new text (--task lm), "
             "a text classifier (--task classify) or an instruction follower (--task sft).")
    return run_command(prog("finetune"), lambda: finetune(parse_config(FinetuneConfig, argv, prog("finetune"), about)))
