"""The configuration of a fine-tuning run, and what each strategy and task may be given.

`FinetuneConfig` extends minigpt/train_config.py's `TrainConfig` (lr, max_iters, eval, resume,
...: every field a command-line flag) with the fine-tuning choices: the pretrained model to start
from (`--init`, which fixes the shape, so train's shape flags are refused with the reason), the
task (`lm`, `classify` or `sft`) and the strategy (`frozen`, `partial`, `full`, `lora`).

Some options belong to one strategy or one task only (`--lora-rank` to lora, `--pooling` to
classify). Given for another, they would be ignored while the user believes they took effect,
so they are refused instead (`check_ignored_options`): by value in the Python API, where a
default means "not set", and at any value when typed on the command line. `check_strategy` is
everything `apply_strategy` (minigpt/finetune.py) refuses before it changes a model.

Where it sits: read by `minigpt finetune` (minigpt/finetune.py, which applies the strategy and
runs the training loop), by minigpt/classify_data.py (the classify task's data options) and by
minigpt/sft_data.py (the sft task's).
"""
from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from minigpt.checks import as_count, check_flag
from minigpt.classifier import POOLINGS, GPTClassifier
from minigpt.config import PRESETS
from minigpt.lora import DEFAULT_TARGETS, check_no_adapters, find_lora_targets, target_names
from minigpt.model import GPT
from minigpt.optimizer import HALF_WEIGHTS_ERROR
from minigpt.train_config import TrainConfig, as_flag, as_path_str, flag

STRATEGIES = ("frozen", "partial", "full", "lora")
FROZEN_LM_ERROR = ("strategy 'frozen' trains only a new head, and the lm task has none, nor has sft (their LM head "
                   "is the pretrained, tied wte): nothing would train. Use 'lora', 'partial' or 'full' for lm and sft")
# The options that one strategy alone reads. Set for another strategy they would be ignored while
# the user believes they took effect, so a value other than the default is refused instead.
STRATEGY_OPTIONS = {"n_trainable_blocks": "partial", "train_embeddings": "partial", "lora_rank": "lora",
                    "lora_alpha": "lora", "lora_dropout": "lora", "lora_targets": "lora"}
# What finetune's shape flags answer (train's --n-layer etc.): the shape is the --init checkpoint's.
SHAPE_FLAG_REFUSED = "fine-tuning takes the model's shape from the --init checkpoint, which fixes it; drop this flag"
# (nanoGPT's crop_block_size shrinks the position table; here the table stays and the windows shrink.)
N_POSITIONS_REFUSED = f"{SHAPE_FLAG_REFUSED}; to train on shorter windows, use --block-size N (the model keeps its position table)"
# The same for the options of one task (or of the tasks named).
TASK_OPTIONS = {name: "classify" for name in ("pooling", "head_hidden", "num_labels", "max_examples", "max_val_examples")}
TASK_OPTIONS["val_data"] = ("classify", "sft")  # lm holds out a part of each text file, or reads a prepared val.bin
TASK_OPTIONS["chunked_loss"] = ("lm", "sft")  # a classifier's loss is over its labels: no vocabulary-wide logits to chunk


# A new classify head, where --pooling and --head-hidden are not given: Hugging Face's
# GPT2ForSequenceClassification (the last real token, one linear layer). An --init classifier's head
# keeps its own (minigpt/finetune.py's `settle_head_options`).
NEW_HEAD = {"pooling": "last", "head_hidden": ""}


def hidden_widths(spec: str | None) -> tuple[int, ...]:
    """The classify head's hidden widths from the CLI's "512,256" ("" or None: none, one linear layer)."""
    try:
        return tuple(int(w) for w in (spec or "").split(",") if w.strip())
    except ValueError:
        raise ValueError(f"head_hidden must be comma-separated integer widths such as 256 or 512,256, got {spec!r}") from None


def hidden_spec(widths: tuple[int, ...]) -> str:
    """The head's hidden widths as --head-hidden takes them: (512, 256) → "512,256", () → ""."""
    return ",".join(map(str, widths))


def one_or_several(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str | tuple[str, ...]:
    """--data as FinetuneConfig keeps it: one path as a str (classify's only form, and what runs saved
    before the lm task took several files hold), several as a tuple of str. The command line gives a
    list, even of one path; the Python API a str, a Path, or a list or tuple of them. An existing
    path is made absolute, as TrainConfig makes its PATH_FIELDS, so a bare --resume from another
    directory finds it; a missing one stays as typed, for its error. Anything else is a TypeError
    naming it, checked before os.path reads it (which takes an int for an open file's descriptor)."""
    if isinstance(data, (str, os.PathLike)):
        paths = [as_path_str("data", data)]
    elif isinstance(data, Sequence) and not isinstance(data, bytes):  # (bytes: a sequence of ints)
        paths = [as_path_str(f"data[{i}]", p) for i, p in enumerate(data)]
    else:
        raise TypeError(f"data must be a path (a str or a pathlib.Path) or a list of them, got {data!r}")
    kept = tuple(os.path.abspath(p) if os.path.exists(p) else p for p in paths)
    return kept[0] if len(kept) == 1 else kept


def check_ignored_options(kind: str, chosen: str, owners: dict[str, str | tuple[str, ...]], options: dict, defaults: dict,
                          typed: Collection[str] = (), flags: bool = False) -> None:
    """Refuse an option that the chosen strategy (or task) would ignore: one whose value in
    `options` is not its default, or that was `typed` on the command line at any value, while
    `owners` says another `kind` (or other kinds, a tuple) reads it. With `flags` (FinetuneConfig,
    whose fields are the command line's flags) the error names the flag beside the field:
    lora_rank=4 (--lora-rank)."""
    for name, owner in owners.items():
        readers = (owner,) if isinstance(owner, str) else owner
        value, default = options[name], defaults[name]
        if name == "lora_targets":
            value, default = target_names(value), target_names(default)
        if chosen not in readers and (value != default or name in typed):
            flag_ = f" ({as_flag(name, options[name])})" if flags else ""
            named = " or ".join(map(repr, readers))
            raise ValueError(f"{name}={options[name]!r}{flag_} applies to {kind} {named} only; {kind} {chosen!r} would "
                             f"ignore it (leave it unset, or use {kind} {named})")


def check_strategy(model: GPT | GPTClassifier, strategy: str, options: dict, defaults: dict) -> None:
    """Refuse what `apply_strategy(model, strategy, **options)` cannot do, before it changes
    anything, so that a refused call leaves the model as it was: an unknown strategy, an option
    out of range or for another strategy (`defaults`: apply_strategy's), 16-bit weights to train,
    LoRA adapters that do not fit the model."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    check_flag("train_embeddings", options["train_embeddings"])  # "False" would read as True: wte would train
    is_classifier = isinstance(model, GPTClassifier)
    gpt = model.gpt if is_classifier else model
    n_layer, n_trainable_blocks = gpt.config.n_layer, options["n_trainable_blocks"]
    if strategy == "partial" and not 0 <= as_count("n_trainable_blocks", n_trainable_blocks) <= n_layer:
        raise ValueError(f"n_trainable_blocks must be an integer in [0, {n_layer}] (the model has {n_layer} blocks), "
                         f"got {n_trainable_blocks!r}")
    if options["train_embeddings"] and strategy != "partial":
        raise ValueError(f"train_embeddings applies to the 'partial' strategy only, not {strategy!r} "
                         "('full' always trains wte; 'frozen' and 'lora' never do)")
    if strategy == "frozen" and not is_classifier:
        raise ValueError(FROZEN_LM_ERROR)
    check_no_adapters(gpt)  # whatever the strategy
    check_ignored_options("strategy", strategy, STRATEGY_OPTIONS, options, defaults)
    # What trains: the head, and (unless frozen) weights of the backbone's dtype: adapters take it too.
    trained = ({p.dtype for p in model.score.parameters()} if is_classifier else set()) | \
        ({gpt.transformer.wte.weight.dtype} if strategy != "frozen" else set())
    half = sorted(str(d).removeprefix("torch.") for d in trained & {torch.float16, torch.bfloat16})
    if half:
        raise ValueError(HALF_WEIGHTS_ERROR.format(dtype=" and ".join(half)))
    if strategy == "lora":  # every adapter checked (rank against each layer, targets, ...) before any change
        find_lora_targets(gpt, options["lora_targets"], options["lora_rank"], options["lora_alpha"],
                          options["lora_dropout"])


TASKS = ("lm", "classify", "sft")
VAL_FRACTION_DEFAULT = 0.1  # the share held out when no val data is given: other values are refused where unused
SUMMARY_FILE = "finetune_summary.json"


@dataclass
class FinetuneConfig(TrainConfig):
    """TrainConfig's knobs (lr, max_iters, eval, resume, ...) plus the fine-tuning choices.

    As TrainConfig's, the paths take a str or a Path and are kept as a str; `data` takes several
    too (a list or tuple), kept as a tuple of str (`one_or_several`)."""

    # nargs: the lm task takes several text files (`--data a.txt b.txt`), as `minigpt prepare FILES` does.
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = field(default="", metadata={"nargs": "+", "help": (
        "lm: UTF-8 text files (joined as `minigpt prepare FILES` joins them, an end-of-document token between two), or "
        "a DATA_DIR `minigpt prepare` wrote with the --init model's tokenizer; classify: a TSV (text<TAB>label) or a "
        "directory with train.tsv [+ dev.tsv]; sft: a JSON Lines file of {\"prompt\": ..., \"completion\": ...}; required")})
    out: str | os.PathLike[str] = flag("out", "OUT_DIR: the fine-tuned checkpoint, best/, training_state.pt, log.jsonl, loss.png, "
                           f"{SUMMARY_FILE} (lm: also data/, the tokenized text)")
    init: str | os.PathLike[str] | None = flag(None, "the pretrained GPT-2 directory (HF layout), or a GPT-2 size by name (gpt2, ..., gpt2-xl), "
                                    "to start from; it fixes the model's shape; required (classify: a classifier too, whose "
                                    "head goes on training)")
    # The model's shape comes from --init, so TrainConfig's shape fields are fixed here (init=False):
    # they are not arguments, their flags only say why they are refused, and build_model
    # (minigpt/pretrain.py) reads None as "no override". Nor are they in the repr (repr=False), which
    # lists the arguments that make this config again: eval(repr(cfg)) would fail on preset=None.
    preset: str | None = field(default=None, init=False, repr=False, metadata={"refused": (
        f"fine-tuning takes the model's shape from --init, so it has no presets (they make fresh models for `minigpt train`: "
        f"{', '.join(PRESETS)}); pass the checkpoint to start from as --init")})
    n_layer: int | None = field(default=None, init=False, repr=False, metadata={"refused": SHAPE_FLAG_REFUSED})
    n_head: int | None = field(default=None, init=False, repr=False, metadata={"refused": SHAPE_FLAG_REFUSED})
    n_embd: int | None = field(default=None, init=False, repr=False, metadata={"refused": SHAPE_FLAG_REFUSED})
    n_positions: int | None = field(default=None, init=False, repr=False, metadata={"refused": N_POSITIONS_REFUSED})
    dropout: float | None = flag(None, "dropout rate (default: the --init checkpoint's)")
    # TrainConfig's batch knobs, whose unit a classifier changes from windows to texts.
    block_size: int | None = flag(None, "lm: tokens per training window; classify: the tokens of each text kept, its first; "
                                        "sft: the tokens of each prompt + completion read, its first "
                                        "(default: the model's n_positions)")
    batch_size: int = flag(8, "lm: windows per micro-batch; classify: texts per micro-batch; sft: examples per micro-batch; "
                              "per process")
    eval_iters: int = flag(20, "lm: val batches per evaluation (classify and sft score every val example, and refuse it)")
    task: str = flag("lm", "lm (next-token prediction on the text), classify (labels from the TSV) or sft (completions "
                           "of prompts, the loss on the completions alone)")
    strategy: str = flag("lora", "frozen, partial, full or lora (see minigpt/finetune.py)")
    n_trainable_blocks: int = flag(1, "partial: how many of the last blocks train")
    train_embeddings: bool = flag(False, "partial: also train wte, which GPT-2 ties to the LM head")
    lora_rank: int = flag(8, "lora: rank r of each update B@A")
    lora_alpha: float = flag(16.0, "lora: the update is scaled by alpha / r")
    lora_dropout: float = flag(0.0, "lora: dropout on the adapters' input")
    lora_targets: str | Sequence[str] = flag(",".join(DEFAULT_TARGETS), "lora: comma-separated names of the projections that get adapters")
    # None: an --init classifier's own, else NEW_HEAD's (settled by finetune, so the run's saved config says which).
    pooling: str | None = flag(None, "classify: last (the last real token, as HF) or mean (average of real tokens) "
                                     "(default: an --init classifier's own, else last)")
    head_hidden: str | None = flag(None, "classify: comma-separated hidden widths of an MLP head (empty: one linear layer, "
                                         "as HF; default: an --init classifier's own, else empty)")
    num_labels: int | None = flag(None, "classify: number of classes (default: largest training label + 1)")
    val_data: str | os.PathLike[str] | None = flag(None, "classify: a TSV of validation examples (default: DIR/dev.tsv, else a split of --data); "
                                      "sft: a JSON Lines file of them (default: a split of --data)")
    val_fraction: float = flag(VAL_FRACTION_DEFAULT, "share of --data held out for validation when no separate val data is given "
                                                         "(lm: of each text file; a prepared DATA_DIR holds its own split)")
    max_examples: int | None = flag(None, "classify: train on a seeded random subset of this many examples")
    max_val_examples: int | None = flag(None, "classify: evaluate on a seeded random subset of this many examples")
    tokenizer: str | os.PathLike[str] | None = flag(None, "tokenizer directory (vocab.json + merges.txt, or tokenizer.json; default: --init's; "
                                      "needed for an --init saved without one)")
    # Fine-tuning starts from good weights: a smaller peak lr and a short warmup.
    lr: float = flag(3e-4, "peak learning rate, reached at the end of warmup")
    min_lr: float = flag(3e-5, "learning rate at the end of the cosine decay")
    warmup_iters: int = flag(20, "steps of linear warmup to lr (step s at lr·(s+1)/N)")
    max_iters: int = flag(300, "optimizer steps in the whole run")
    eval_interval: int = flag(100, "evaluate and save a checkpoint every this many steps and at the end (0: only at the end)")

    # Not "data": it may hold several paths, which `one_or_several` makes absolute (TrainConfig's loop takes one a field).
    PATH_FIELDS = ("init", "val_data", "tokenizer")
    COMMAND = "finetune"
    KEPT_ON_RESUME = ("task", "strategy")
    # Refused even where the saved tensors would still load: a new alpha rescales every trained
    # adapter at once, a new pooling reads another vector than the head learned from.
    MODEL_KEPT_ON_RESUME = ("n_trainable_blocks", "train_embeddings", "lora_rank", "lora_alpha", "lora_targets",
                            "pooling", "head_hidden", "num_labels")

    def kept_form(self, name: str, value):
        """TrainConfig's, and --data (one path or several, out of PATH_FIELDS) made absolute as
        `one_or_several` makes it: a run saved before it was kept absolute holds it as typed."""
        if name == "data" and value:
            return one_or_several(value)
        return super().kept_form(name, value)

    def __post_init__(self) -> None:
        self.data = one_or_several(self.data)
        super().__post_init__()
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {TASKS}")
        if self.task == "classify" and isinstance(self.data, tuple):
            raise ValueError(f"--data (data= in Python) names {len(self.data)} paths, but task 'classify' reads one TSV "
                             "file, or one directory of train.tsv and an optional dev.tsv; several text files are for "
                             "--task lm (task='lm' in Python)")
        if self.task == "sft" and isinstance(self.data, tuple):
            raise ValueError(f"--data (data= in Python) names {len(self.data)} paths, but task 'sft' reads one JSON Lines "
                             "file, and its validation examples from another, given as --val-data (val_data= in Python); "
                             "several text files are for --task lm (task='lm' in Python)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.task in ("lm", "sft") and self.strategy == "frozen":
            raise ValueError(FROZEN_LM_ERROR)  # before any data is prepared
        targets = self.lora_targets  # (read as names by the check below: an int there was "not iterable", naming nothing)
        if not (isinstance(targets, str) or (isinstance(targets, (list, tuple)) and all(isinstance(t, str) for t in targets))):
            raise TypeError(f"lora_targets must be comma-separated projection names (a str such as 'attn.c_attn,mlp.c_fc'), "
                            f"or a list or tuple of them, got {targets!r}")
        self.refuse_ignored_options()  # before any data is read or model loaded, as every check here
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {POOLINGS}")
        hidden_widths(self.head_hidden)  # a malformed spec is refused before any work
        if not self.init:
            raise ValueError("--init (init= in Python) is required: the pretrained model to start from: a checkpoint "
                             "directory or a GPT-2 size by name")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.num_labels is not None and self.num_labels < 2:  # 0 read as "unset" (inferred), 1 as "labels out of range"
            raise ValueError(f"num_labels must be at least 2 (a classifier chooses among 2 classes or more; leave it "
                             f"unset for the largest training label + 1), got {self.num_labels}")
        for name in ("max_examples", "max_val_examples"):  # a negative limit would slice from the end
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (leave it unset for all examples), got {getattr(self, name)}")

    def data_paths(self) -> list[Path]:
        """--data's paths, one or several."""
        return [Path(p) for p in ((self.data,) if isinstance(self.data, str) else self.data)]

    def prepared_data(self) -> Path | None:
        """lm: the DATA_DIR when --data is one that `minigpt prepare` wrote (it holds meta.json), read
        where it is; None for text files, which the run tokenizes into OUT_DIR/data."""
        paths = self.data_paths()
        prepared = self.task == "lm" and len(paths) == 1 and (paths[0] / "meta.json").is_file()
        return paths[0] if prepared else None

    def data_settings(self) -> tuple[str, ...]:
        """lm: --val-fraction cuts each text file in two (none for a prepared DATA_DIR, which `minigpt
        prepare` cut). classify: which examples are held out and which subsets are taken
        (minigpt/classify_data.py's `load_classification_data`): --seed shuffles them when a subset
        is taken or no validation file holds the val examples. sft: --val-data, or --val-fraction and --seed
        hold out the val examples (minigpt/sft_data.py's `load_pairs`)."""
        if self.task == "lm":
            return () if self.prepared_data() else ("val_fraction",)
        if self.task == "sft":
            return ("val_data", "val_fraction", *(() if self.val_data else ("seed",)))
        held_out = not self.val_data and not (Path(self.data) / "dev.tsv").is_file()
        seeded = held_out or self.max_examples is not None or self.max_val_examples is not None
        return ("val_data", "val_fraction", "max_examples", "max_val_examples", *(("seed",) if seeded else ()))

    def refuse_ignored_options(self, typed: Collection[str] = ()) -> None:
        """A strategy's or a task's option set for another one is refused: set to a value other
        than its default, or typed on the command line (`typed`, from parse_config) at any value,
        so that `--strategy partial --lora-rank 8` does not run as if the rank did something."""
        defaults = {f.name: f.default for f in fields(self)}
        # A new head's pooling and head_hidden are no choice either: they were the defaults once, and
        # an lm run saved then holds them in its config, which --resume reads back.
        defaults |= {name: value for name, value in NEW_HEAD.items() if getattr(self, name) == value}
        check_ignored_options("strategy", self.strategy, STRATEGY_OPTIONS, vars(self), defaults, typed, flags=True)
        check_ignored_options("task", self.task, TASK_OPTIONS, vars(self), defaults, typed, flags=True)
        if self.task in ("classify", "sft") and "eval_iters" in typed:  # (typed only: a default is no choice)
            smaller = "--max-val-examples takes" if self.task == "classify" else "--val-data can name"
            raise ValueError(f"eval_iters (--eval-iters) is how many val batches the lm task samples; task {self.task!r} "
                             "scores every val example at each evaluation, so it would ignore it (leave it unset; "
                             f"{smaller} a smaller validation set)")
        if self.strategy == "frozen" and (self.gradient_checkpointing or "gradient_checkpointing" in typed):
            # No block trains, so backward never enters one: there are no block activations to drop.
            raise ValueError(f"gradient_checkpointing ({as_flag('gradient_checkpointing', self.gradient_checkpointing)}) "
                             "recomputes the blocks that train; strategy 'frozen' trains only the new head, so it would "
                             "ignore it (leave it unset, or use strategy 'partial', 'full' or 'lora')")
