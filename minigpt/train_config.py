"""The configuration of a run, and the command line built from it.

One dataclass is the config: `TrainConfig` holds every knob of a run, with its checks in
`__post_init__`. Each field is also a command-line flag (`lr` → `--lr`): `flag()` puts the help
text in the field's metadata, and `add_config_flags` builds the argparse flags, their types,
help and defaults from the fields, so the two cannot drift apart. A field a command does not
take (init=False) gets no flag, or, if its metadata says why, a hidden `RefusedFlag` that answers
with that reason. `parse_config` reads the command line, and with --resume takes the saved run's
settings as the defaults.

Where it sits: read by `minigpt train` (minigpt/pretrain.py) and `minigpt finetune`
(minigpt/finetune.py; its `FinetuneConfig`, in minigpt/finetune_config.py, extends `TrainConfig`),
and by the training loop both of them call (minigpt/train.py's `train_loop`, which runs on the config).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch

from minigpt.checkpoint import DTYPE_NAMES
from minigpt.checks import as_count, as_real, as_switch, check_rate
from minigpt.config import shipped_path
from minigpt.files import user_path
from minigpt.resume import read_state
from minigpt.run_dir import (STATE_FILE, check_resumable, holds_run, is_rank_0, own_tokens, run_tokens, unsaved_run,
                             unsaved_story)

# The shape of a fresh model when no --preset is given.
DEFAULT_PRESET = "gpt2-mini"
# The largest --seed: torch's generators take 64 bits. (generate's --seed takes negatives too,
# -2**63 and up, as torch.manual_seed does: minigpt/sampling.py's check_seed; a run's is >= 0.)
SEED_MAX = 2**64 - 1


def as_path_str(name: str, value: str | os.PathLike[str]) -> str:
    """A path setting (a str or a Path) as a str, or a TypeError naming it."""
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str):  # None, a number, bytes
        raise TypeError(f"{name} must be a path (a str or a pathlib.Path), got {value!r}")
    return path


def flag(default, help: str):
    """A config field that is also a command-line flag: `lr: float = flag(6e-4, "peak learning rate")`.

    The help text rides in the field's metadata, where `add_config_flags` finds it for --help.
    """
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of a run; each field is also a command-line flag (`lr` → `--lr`).

    The paths (`data`, `out`, `init`) take a str or a Path, and are kept as a str; `device` and
    `dtype` take torch's objects too (torch.device("cuda", 0), torch.float32), kept by name
    ("cuda:0", "float32"). Their annotations name what is taken; the fields hold the str."""

    # data and output
    data: str | os.PathLike[str] = flag("", "DATA_DIR written by `minigpt prepare` (train.bin, val.bin, meta.json); required")
    out: str | os.PathLike[str] = flag("out", "OUT_DIR: latest checkpoint, training_state.pt, best/, log.jsonl, loss.png")
    init: str | os.PathLike[str] | None = flag(None, "start from this checkpoint directory (or a GPT-2 size by name: gpt2, ..., gpt2-xl) "
                                          "instead of random weights")
    resume: bool = flag(False, "continue the run saved in OUT_DIR exactly where it stopped")
    auto_resume: bool = flag(False, "continue the run in OUT_DIR if it holds one (as --resume), else start it: a command "
                                    "that can run again as it was (torchrun --max-restarts)")
    allow_new_data: bool = flag(False, "with --resume: go on although the data is not the data the run trained on "
                                       "(refused otherwise)")
    # model shape (from scratch; with --init only block_size and dropout apply)
    # None, not DEFAULT_PRESET, so that a --preset passed with --init can be told apart and refused.
    preset: str | None = flag(None, "GPTConfig preset of a fresh model: gpt2, gpt2-medium, ..., gpt2-mini, gpt2-tiny "
                                    f"(default: {DEFAULT_PRESET}; not with --init, which fixes the shape)")
    n_layer: int | None = flag(None, "override the preset's number of blocks")
    n_head: int | None = flag(None, "override the preset's number of heads")
    n_embd: int | None = flag(None, "override the preset's width")
    n_positions: int | None = flag(None, "override the preset's context length (its position embeddings)")
    block_size: int | None = flag(None, "tokens per training window (default: the model's n_positions)")
    dropout: float | None = flag(None, "dropout rate (default: the --init checkpoint's; 0.0 for a fresh model)")
    # optimisation
    batch_size: int = flag(8, "windows per micro-batch, per process")
    grad_accum: int = flag(1, "micro-batches per optimizer step, summed over all processes")
    max_iters: int = flag(1000, "optimizer steps in the whole run")
    lr: float = flag(6e-4, "peak learning rate, reached at the end of warmup")
    min_lr: float = flag(6e-5, "learning rate at the end of the cosine decay")
    warmup_iters: int = flag(100, "steps of linear warmup to lr (step s at lr·(s+1)/N)")
    lr_decay_iters: int | None = flag(None, "step where the cosine reaches min_lr (default: max_iters)")
    weight_decay: float = flag(0.1, "AdamW decoupled weight decay of the matmul weights")
    beta1: float = flag(0.9, "AdamW beta1")
    beta2: float = flag(0.95, "AdamW beta2")
    grad_clip: float = flag(1.0, "clip the global gradient norm to this (0: off)")
    # eval and logging
    eval_interval: int = flag(200, "evaluate and save a checkpoint every this many steps and at the end (0: only at the end)")
    save_interval: int = flag(0, "also save a checkpoint, without evaluating, every this many steps (0: only at evaluations): "
                                 "a crash then loses fewer steps where evaluations are rare or long")
    eval_iters: int = flag(20, "val batches per evaluation")
    log_interval: int = flag(10, "write a log record every this many steps")
    # system
    device: str | torch.device = flag("auto", "cpu, cuda, cuda:N, mps or auto: cuda when available")
    dtype: str | torch.dtype = flag("auto", "float32, bfloat16 or float16 autocast; auto: bfloat16 on a GPU that has it, else float32")
    compile: bool = flag(False, "torch.compile the model (slow to start; on a CPU it needs a C++ compiler: g++, "
                                "clang++ on macOS, or $CXX)")
    gradient_checkpointing: bool = flag(False, "keep only each block's input and recompute the rest during backward: "
                                               "a fraction of the activation memory, for about a third more compute")
    chunked_loss: bool = flag(False, "compute the logits and the loss a chunk of positions at a time, never all at once: "
                                     "far less memory at a large vocabulary; the gradients are taken in forward, so nothing runs twice")
    seed: int = flag(1337, "seeds the weights, every batch and every dropout mask")

    # The inputs a run reads by path. training_state.pt keeps the config, and a bare --resume takes
    # them from it, possibly in another working directory: so an existing path is kept absolute.
    # A missing one stays as typed, for its error message (and a GPT-2 size by name, `--init gpt2`
    # or `--tokenizer gpt2`, stays a name). --out is left alone: it is given again on every
    # --resume, and a run may be moved.
    PATH_FIELDS: typing.ClassVar[tuple[str, ...]] = ("data", "init")
    # The command that runs this config, saved with the run: `--resume` with another one is refused.
    COMMAND: typing.ClassVar[str] = "train"
    # Settings that decide what the run *is* (finetune's task and strategy): a resumed run keeps
    # them, so a flag giving another value is refused by name, before any check of the options
    # that the new value would make meaningless.
    KEPT_ON_RESUME: typing.ClassVar[tuple[str, ...]] = ()
    # Settings that shape the model within that kind of run (finetune's lora_alpha, pooling, ...): a
    # resumed run keeps them too, but they are checked after an option meant for another strategy
    # or task is refused, which says more (--lora-alpha on a partial run is no lora run's alpha).
    MODEL_KEPT_ON_RESUME: typing.ClassVar[tuple[str, ...]] = ()
    # Flags that ask something of this invocation, not settings of the run: --resume never takes
    # them from the saved run (an --allow-new-data given once would hold for every later resume).
    INVOCATION_FLAGS: typing.ClassVar[tuple[str, ...]] = ("resume", "auto_resume", "allow_new_data")

    def data_settings(self) -> tuple[str, ...]:
        """The settings, beside --data, that choose what of --data the run trains on: a resume
        that changes one gets other data from the same --data, and minigpt/resume.py's
        `check_data` names it. `minigpt train` reads a prepared folder whole: none."""
        return ()

    def kept_form(self, name: str, value):
        """Setting `name`'s `value` in the form this config keeps it, for --resume to compare the
        saved run's with this one's (minigpt/resume.py's `restore`). Runs saved before input
        paths were kept absolute hold them as typed: relative to the directory they started in,
        which --resume from there makes absolute. The same setting."""
        return os.path.abspath(value) if name in self.PATH_FIELDS and value else value

    def refuse_ignored_options(self, typed: typing.Collection[str] = ()) -> None:
        """Refuse options this run would ignore, set or `typed` on the command line (parse_config
        passes the flags typed, at whatever value). A training run reads all of its options (the
        shape flags that --init fixes default to None, so minigpt/pretrain.py's build_model tells a
        typed one apart)."""

    def __post_init__(self) -> None:
        # A Path given is kept as its str, as the command line gives it: the same config either way.
        self.out = as_path_str("out", self.out)
        for name in self.PATH_FIELDS:
            if getattr(self, name) is not None:  # (init=False is no path: refused, not taken for "none")
                setattr(self, name, as_path_str(name, getattr(self, name)))
            # (README's checkpoints/..., installed; a Hub model's id for a model or tokenizer, never for data:
            # a mistyped --data would be taken for a model of that name in the Hugging Face cache)
            path = getattr(self, name) and shipped_path(getattr(self, name), hub=name in ("init", "tokenizer"))
            if path and os.path.exists(path):
                setattr(self, name, os.path.abspath(path))
        # Each setting in the plain type its annotation names (annotations are strings here), or a
        # TypeError naming it. Counts are ints (as GPTConfig's sizes): batch_size=4.0 would fail in
        # torch.randint with an overload list, 2.5 steps would pass every comparison below. Switches
        # are bools: "False" or "no" is a non-empty string, which reads as True. Rates and factors are
        # plain floats: "3e-4" would fail a comparison below with an error naming no field. A NumPy
        # number or bool would fail log.jsonl's JSON after the first step. The device and the dtype
        # are names, as --device and --dtype give them; torch's own objects, which torch's functions
        # take (GPT.from_pretrained's dtype=torch.float32), are kept by name: log.jsonl's JSON failed
        # on a torch.device after the first step.
        if isinstance(self.device, torch.device):  # torch.device("cuda", 0) → "cuda:0"
            self.device = str(self.device)
        if isinstance(self.dtype, torch.dtype):  # torch.float32 → "float32", its DTYPE_NAMES name (float64's is refused below)
            self.dtype = str(self.dtype).removeprefix("torch.")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.type in ("int | None", "float | None"):  # unset: decided later (by the model, the data)
                continue
            if f.type in ("int", "int | None"):
                setattr(self, f.name, as_count(f.name, value))
            elif f.type == "bool":
                setattr(self, f.name, as_switch(f.name, value))
            elif f.type in ("float", "float | None"):
                setattr(self, f.name, as_real(f.name, value))
            elif f.type in ("str", "str | None") and value is not None and not isinstance(value, str):
                # (head_hidden=0 saved, then refused on resume); a flag's help says what the str holds
                said = f" ({f.metadata['help']})" if "help" in f.metadata else ""  # (a subclass's own field may have none)
                raise TypeError(f"{f.name} must be a str, got {value!r}{said}")
        if self.allow_new_data and not (self.resume or self.auto_resume):
            raise ValueError("allow_new_data applies to --resume (or --auto-resume) only: a new run has no earlier data to "
                             "differ from")
        for name in ("batch_size", "grad_accum", "max_iters", "eval_iters", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip", "lr", "min_lr"):  # NaN fails no comparison below: it needs its own check
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        for name in ("warmup_iters", "eval_interval", "save_interval", "weight_decay", "grad_clip", "lr", "min_lr", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seed > SEED_MAX:  # else torch.manual_seed's bare "Overflow when unpacking long long", once the run starts
            raise ValueError(f"seed must be <= 2**64 - 1 (torch's generators take a 64-bit seed), got {self.seed}")
        if self.min_lr > self.lr:  # else the "decay" would climb from lr up to min_lr
            raise ValueError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr}): the cosine decays from lr down to min_lr; "
                             "lower --min-lr (min_lr= in Python)")
        if self.lr_decay_iters is not None and self.lr_decay_iters <= self.warmup_iters:
            raise ValueError(f"lr_decay_iters ({self.lr_decay_iters}) must be > warmup_iters ({self.warmup_iters}): the cosine runs "
                             "from the end of warmup to lr_decay_iters (unset: max_iters)")
        for name in ("beta1", "beta2"):  # Adam's moving-average factors
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be >= 1 (unset: the model's n_positions), got {self.block_size}")
        if self.dropout is not None:  # None: the model's own rate
            check_rate("dropout", self.dropout)
        if self.dtype not in ("auto", *DTYPE_NAMES):  # auto: bfloat16 on a GPU that has it, else float32
            raise ValueError(f"dtype must be one of auto, {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")


# ---- config ↔ command line ----------------------------------------------------------------------


class RefusedFlag(argparse.Action):
    """A flag that is there only to say, in one line, why this command does not take it (`const`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = " ".join([option_string, *values])  # nargs="*": the flag alone is refused the same way
        parser.exit(2, f"{parser.prog}: error: {given}: {self.const}\n")


UNRECOGNIZED = "unrecognized arguments: "  # how argparse's error begins for flags it does not know


# argparse's error for a value given to a true/false flag: nanoGPT's configurator takes --compile=False.
IGNORED_VALUE = re.compile(r"argument (--[\w-]+)/(--no-[\w-]+): ignored explicit argument '(.*)'")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")


def switch(on: str, off: str, typed: str, value: str) -> str:
    """How to say `typed=value` (--compile=False, --no-compile=0) with a true/false flag, which takes
    no value: `on` (--compile) or `off` (--no-compile); both where the value is no true or false word."""
    if value.lower() not in TRUE_WORDS + FALSE_WORDS:
        return f"{on} or {off}"
    wants = value.lower() in TRUE_WORDS
    return on if wants != (typed == off) else off


class ConfigParser(argparse.ArgumentParser):
    """train's and finetune's parser, which answers nanoGPT's spellings with minigpt's: an unknown
    flag spelled with underscores, as nanoGPT's configurator takes them (--max_iters=10), with its
    dashed name (did you mean --max-iters?), and a value given to a true/false flag (--compile=False)
    with the flag that says it (--no-compile)."""

    def parse_known_args(self, args=None, namespace=None):
        self.typed = list(sys.argv[1:] if args is None else args)  # what was typed, for `error` to read
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        if ignored := IGNORED_VALUE.fullmatch(message):
            on, off, value = ignored.groups()  # argparse names both spellings: which one was typed is in argv
            typed = off if any(arg.startswith(off + "=") for arg in getattr(self, "typed", [])) else on
            message += f"; a true/false flag takes no value: use {switch(on, off, typed, value)}"
        unknown = message.removeprefix(UNRECOGNIZED)  # argparse's words, then the arguments it did not take
        if unknown != message:
            args = unknown.split()
            # What follows "--" is no flag to argparse, spelled right or not: suggesting it would repeat it.
            flags = args[:args.index("--")] if "--" in args else args
            hints = [hint for arg in flags if arg.startswith("--") and (hint := self.dashed(arg))]
            if suggested := [hint for hint in hints if not hint.startswith(";")]:
                message += f"; did you mean {', '.join(suggested)}?"
            message += "".join(hint for hint in hints if hint.startswith(";"))  # refusals, as they are said
            if "--" in args:
                message += "; the arguments after `--` are not read as flags: drop the `--`"
        super().error(message)

    def dashed(self, arg: str) -> str | None:
        """What to say of the unknown `arg` (--max_iters=10): its dashed flag (--max-iters), the spelling
        of a true/false one that gives its value, or the refusal of a flag this command does not take
        (finetune's --n-positions: `RefusedFlag`); None where no flag has its name."""
        typed, given, value = arg.partition("=")
        flag = typed.replace("_", "-")
        action = self._option_string_actions.get(flag)
        if action is None:
            return None
        if isinstance(action, RefusedFlag):
            return f"; {flag}: {action.const}"
        if isinstance(action, argparse.BooleanOptionalAction) and given:
            return switch(*action.option_strings, flag, value)
        return flag


def add_config_flags(parser: argparse.ArgumentParser, cls: type, defaults: bool = True) -> None:
    """One `--field-name` flag per dataclass field, typed from its annotation, help from metadata.

    A field declared with init=False cannot be set, so it gets no flag (fine-tuning fixes the
    model-shape fields that way: the shape comes from --init); if its metadata says why
    ("refused"), a hidden flag of that name answers with that reason instead of argparse's bare
    "unrecognized arguments" after a screen of usage. A None default means "decided
    later" (by the model, the data or another flag), so its help says what happens instead of
    showing "(default: None)". With defaults=False a flag that is not given is left out of the
    parsed namespace, which tells the flags a user typed from the ones left at their default.
    """
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if not f.init:
            if "refused" in f.metadata:
                parser.add_argument(as_flag(f.name), action=RefusedFlag, nargs="*", const=f.metadata["refused"],
                                    default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # `int | None` → int
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if f.name in (*getattr(cls, "PATH_FIELDS", ()), "data", "out"):  # a path: a leading `~` expanded,
            kind = user_path                                              # as the shell leaves `--out=~/run`
        option = as_flag(f.name)
        default = f.default if f.default is not MISSING else f.default_factory()
        help_ = f.metadata.get("help", "") + ("" if default in (None, "") else f" (default: {default})")
        default = default if defaults else argparse.SUPPRESS
        if kind is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif f.metadata.get("nargs"):  # several values (finetune's --data a.txt b.txt), a repeated flag's too
            # "extend": --data a.txt --data b.txt is both files, not the last alone (argparse's "store").
            parser.add_argument(option, type=kind, nargs=f.metadata["nargs"], action="extend", help=help_,
                                default=[] if defaults else argparse.SUPPRESS)
        else:
            parser.add_argument(option, type=kind, default=default, help=help_)


def parse_config(cls: type, argv: list[str] | None, prog: str, description: str):
    """The config from the command line (`argv`; None: sys.argv).

    With --resume, the settings the saved run used (kept in its training_state.pt) are the
    defaults: `--resume` alone continues the run exactly as it was started, and a flag given
    again overrides its saved value (say, --max-iters to train longer). A run that stopped before
    its first checkpoint saved no settings: --resume there starts it again with the flags given
    (minigpt/run_dir.py's `restart_unsaved_run`), and a bare --resume is refused with that advice.
    """
    parser = ConfigParser(prog=prog, description=description)
    add_config_flags(parser, cls)
    args = vars(parser.parse_args(argv))
    typed = argparse.ArgumentParser(add_help=False)
    add_config_flags(typed, cls, defaults=False)
    given = vars(typed.parse_args(argv))  # the flags typed, at whatever value
    state, saved, kept = Path(args["out"]) / STATE_FILE, None, {}  # kept: the saved run's settings, when resumed
    # --auto-resume is --resume when OUT_DIR holds a run to continue or start again, else nothing.
    asked = "--resume" if args["resume"] else "--auto-resume"  # the flag typed, for what is said of it
    # Whether data/ holds this run's tokens, a trace of it too (finetune's lm task): asked once (it loads
    # two tokenizers), and only where it may tell whether OUT_DIR holds a run: no training_state.pt.
    asks = (args["resume"] or args["auto_resume"]) and not state.exists()
    own = asks and own_tokens(Path(args["out"]), run_tokens(args))
    args["resume"] = args["resume"] or (args["auto_resume"] and holds_run(Path(args["out"]), own))
    unsaved = unsaved_run(Path(args["out"]), own) if args["resume"] else []
    if unsaved and not set(given) - {"out", *cls.INVOCATION_FLAGS}:  # nothing to restart it with
        raise ValueError(f"{asked}: {unsaved_story(Path(args['out']), unsaved)}, and its settings were not saved either: "
                         f"to start it again from step 0 (its log set aside), give the flags that started it with {asked}")
    # An unsaved run restarts with the flags given (check_out_dir says so). Under torchrun, rank 0
    # alone judges an OUT_DIR without a training_state.pt: it may be setting such a run aside
    # while the others look (minigpt/run_dir.py's `check_out_dir`).
    if args["resume"] and (state.exists() or (not unsaved and is_rank_0())):
        check_resumable(Path(args["out"]))  # first: a bare --resume lacks --data too, but that is not the problem
        # mmap: the config is read without loading the weights and optimizer state into memory.
        saved_run = read_state(state, cls, map_location="cpu", mmap=True)
        command = saved_run.get("command", cls.COMMAND)  # (states saved before it was recorded: not checked)
        if command != cls.COMMAND:  # its settings would be read as this command's: a confusing error, or a wrong run
            raise ValueError(f"{args['out']} holds a run of `minigpt {command}`; continue it with "
                             f"`minigpt {command} --out {args['out']} --resume`")
        saved = saved_run["config"]
        refuse_changes(args["out"], saved, given, cls.KEPT_ON_RESUME)
        if given.get("init") and saved.get("init") is None:  # else build_model blames shape flags the user never typed
            raise ValueError(f"the run in {args['out']} started from fresh weights (no --init), and a resumed run continues "
                             "from its own saved weights: drop --init, or start a new run from that checkpoint with another --out")
        switches = {f.name for f in fields(cls) if f.type == "bool"}  # one an older minigpt saved as given (0 or 1) is that bool
        kept = {k: bool(v) if k in switches and v in (0, 1) else v
                for k, v in saved.items() if k in args and k not in cls.INVOCATION_FLAGS}
        args.update({k: v for k, v in kept.items() if k not in given})
    try:
        config = cls(**args)
        config.refuse_ignored_options(given)
    except (TypeError, ValueError):
        # A saved value of the right type (read_state checked each one's) that the saved run could not
        # have had (its training_state.pt edited by hand: batch_size=0) is refused as the config refuses
        # it, naming neither the file nor that the value came from it. Whose fault it is, is tried, not
        # read from the error's words: the run's settings without the flags typed fail too, or not
        # (then a flag typed is at fault, and its error stays as it is).
        if not kept or (fault := saved_settings_fault(cls, {**args, **kept})) is None:
            raise
        raise ValueError(f"{state} is damaged: its config is refused ({fault}), so the run cannot be resumed; to train "
                         f"its weights further, start a new run from them with --init {args['out']} and another --out") from None
    if saved is not None:
        refuse_changes(args["out"], saved, given, cls.MODEL_KEPT_ON_RESUME)
    return config


def saved_settings_fault(cls: type, settings: dict) -> Exception | None:
    """The error of the config `cls` built from `settings` (parse_config's, each of the saved run's
    at its saved value, the flags typed over them dropped), or None when they build one."""
    try:
        cls(**settings).refuse_ignored_options()
    except (TypeError, ValueError) as e:
        return e
    return None


def as_flag(name: str, value=None) -> str:
    """The command-line form of a config field: lora_rank → --lora-rank (False → --no-lora-rank)."""
    return f"--{'no-' if value is False else ''}{name.replace('_', '-')}"


def refuse_changes(out: str, saved: dict, given: dict, names: tuple[str, ...]) -> None:
    """Refuse a flag that gives a resumed run another value of a setting it keeps (`names`)."""
    for name in names:
        if name in given and name in saved and given[name] != saved[name]:
            flag_ = as_flag(name)
            was, now = ('""' if v == "" else v for v in (saved[name], given[name]))  # (--head-hidden "": no hidden layer)
            raise ValueError(f"the run in {out} is a {flag_} {was} run, and a resumed run keeps its {name} "
                             f"(its weights and optimizer state are that run's): drop {flag_} {now}, or start a "
                             "new run with another --out")
