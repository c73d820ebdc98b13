"""Resuming a run (`--resume`): read its training_state.pt back, check that this run can go on
from it, and load it into the model, optimizer and grad scaler.

Where it sits: minigpt/run_dir.py writes a run's directory (checkpoints, best/, the lock, the
checks before a run starts); `train_loop` (minigpt/train.py) calls `restore` here when a run
resumes, and `read_state` is how anything reads a saved state.

Why it checks so much: a resume is meant to be the same run, carried on (the same weights,
optimizer moments, step, loss scale and data), so that its losses are those of a run never
stopped, bit for bit. No random state is saved for it: every draw (batches, dropout) is seeded by
the step (minigpt/train.py's `seed_for`). What would quietly break that is refused by name instead: a damaged or foreign state
file (`read_state` checks each field's type), other data (`check_data`), frozen weights that
changed (`with_frozen_weights`), optimizer state that does not fit the parameters
(`check_optimizer_state`). A changed setting (a new --lr, more --max-iters) is allowed, and said:
a warning, notes on what it changes, and the resume's record in the log.
"""
from __future__ import annotations

import collections.abc
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from contextlib import suppress
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from minigpt.checks import is_int
from minigpt.config import STATE_FILE
from minigpt.files import refuse_lfs_pointer
from minigpt.optimizer import schedule_note
from minigpt.run_dir import COMPILED_PREFIX, frozen_weights, settle_best
from minigpt.run_log import append_log, comparable_evaluations, is_opening, records_of_state, truncate_log

if TYPE_CHECKING:  # type hints only
    from minigpt.train_config import TrainConfig
    from minigpt.train_runtime import Runtime


# ---- the saved state, read back and each field checked -------------------------------------------


def read_state(path: Path, config: type | None = None, **load_kwargs) -> dict:
    """A saved training_state.pt, or a ValueError naming the file when it is not one. With `config`
    (the run's config class: TrainConfig, FinetuneConfig), each saved setting is checked to be of the
    type its field takes (`_setting_fits`), for a resume to read."""
    try:
        state = torch.load(path, weights_only=True, **load_kwargs)
    except torch.OutOfMemoryError:
        raise  # the file is fine; the device is full
    except Exception as e:
        # weights_only met an object ("Unsupported global", naming its class): torch's advice, to load
        # it unchecked, is no answer. Any other failure (not a torch zip file, truncated, random bytes,
        # which fail as an UnpicklingError too, "Unsupported operand 118") is named without that advice.
        if found := re.search(r"Unsupported global: GLOBAL (\S+)", str(e)):
            raise ValueError(f"{path} is not a training state saved by minigpt: it holds an object of class {found[1]}; "
                             "not unpickling it, which could run any code the file holds") from None
        with suppress(OSError):  # (a file that cannot be read is named below)
            refuse_lfs_pointer(path)
        # (torch's UnpicklingError puts its finding, "Unsupported operand 118", after its advice)
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        detail = found[1].splitlines()[0] if found else str(e)
        raise ValueError(f"{path} is not a readable training state ({type(e).__name__}: {detail[:200]})") from None
    missing = {"config", "model", "optimizer", "scaler", "step", "best_val_loss"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path} is not a training state saved by minigpt: it lacks {', '.join(sorted(missing))}")
    # Each field checked here, once: a wrong type would otherwise surface wherever it is first used,
    # as a TypeError or KeyError that names neither the file nor the field.
    for field, (fits, what) in STATE_FIELDS.items():
        if field in state and not fits(state[field]):
            raise ValueError(f"{path} is damaged: its {field} ({_shown(state[field])}) is not {what}, so the run cannot be "
                             f"resumed; to train its weights further, start a new run from them with --init {path.parent} "
                             "and another --out")
    # The settings too: a wrong type (lr="0.1", batch_size=4.0) would be refused by the config's
    # checks without naming the file, or, where a flag typed overrides it, reach restore's
    # comparisons as it is (a string lr divided in the schedule's note: a TypeError). Not those of
    # another command's run, whose fields differ: parse_config refuses it by name.
    ours = config is not None and state.get("command", config.COMMAND) == config.COMMAND
    hints = typing.get_type_hints(config) if ours else {}  # (the annotations are strings: resolved here)
    for f in fields(config) if ours else ():
        if f.init and f.name in state["config"] and not _setting_fits(hints[f.name], value := state["config"][f.name]):
            raise ValueError(f"{path} is damaged: its config's {f.name} ({_shown(value)}) is not {_setting_kind(hints[f.name])}, "
                             f"so the run cannot be resumed; to train its weights further, start a new run from them "
                             f"with --init {path.parent} and another --out")
    return state


def _members(hint) -> tuple:
    """The types a field's type hint allows: a union's members (`int | None`: int, NoneType), or itself."""
    return typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)


def _setting_fits(hint, value) -> bool:
    """Whether a saved setting's `value` is of a type its field's `hint` allows, as `plain_config`
    saved it: a path as a str, a device or dtype by name, several data files as a list. A switch an
    older minigpt saved as given (0 or 1) is one. A type minigpt's configs do not use (a field of the
    user's own subclass) is left to the config. Its range is the config's to check."""
    for kind in _members(hint):
        if kind is type(None):
            fits = value is None
        elif kind is bool:
            fits = isinstance(value, bool) or (is_int(value) and value in (0, 1))
        elif kind is int:
            fits = is_int(value)
        elif kind is float:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind in (str, torch.device, torch.dtype) or typing.get_origin(kind) is os.PathLike:
            fits = isinstance(value, str)
        elif typing.get_origin(kind) is collections.abc.Sequence:  # Sequence[str | PathLike]: saved as a list of str
            fits = isinstance(value, (list, tuple)) and all(_setting_fits(typing.get_args(kind)[0], v) for v in value)
        else:
            return True
        if fits:
            return True
    return False


def _setting_kind(hint) -> str:
    """What a setting of type `hint` holds, in words, for `read_state`'s error."""
    def words(kind) -> str:
        if typing.get_origin(kind) is collections.abc.Sequence:
            return "a list of strings"
        return {type(None): "None", bool: "True or False", int: "an integer", float: "a number"}.get(kind, "a string")
    return " or ".join(dict.fromkeys(words(kind) for kind in _members(hint)))


def _is_count(value) -> bool:
    """An int of 0 or more (`checks.is_int`: not a bool)."""
    return is_int(value) and value >= 0


def _is_number(value) -> bool:
    """An int or float that is not NaN (inf is a number: the best val loss before any evaluation)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_optimizer_state(value) -> bool:
    """The layout of `optimizer.state_dict()`: each parameter's state (its tensors by name) by id,
    and groups listing those ids. The state's fit to the parameters is checked once they are
    loaded (`check_optimizer_state`): load_state_dict would mangle anything else (a string becomes
    the text of a generator) before it could be named."""
    return (isinstance(value, dict) and isinstance(value.get("state"), dict)
            and all(isinstance(s, dict) and all(isinstance(t, torch.Tensor) for t in s.values())
                    for s in value["state"].values())
            and isinstance(value.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in value["param_groups"]))


# What each field of a training state holds (as `save_checkpoint` writes it): a test, and its words.
# command, log_partial, scaler_skips, data and frozen are tested only when present (states saved by an earlier
# minigpt lack them).
STATE_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "step": (_is_count, "an integer >= 0"),
    "best_val_loss": (_is_number, "a number (inf before the first evaluation)"),
    "config": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a dict of the run's settings by name"),
    "model": (lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values()),
              "a dict of the weights' tensors by name"),
    "optimizer": (_is_optimizer_state, "an optimizer's state_dict (a dict of 'state', each parameter's tensors by "
                                       "its id, and 'param_groups', a list of dicts that each list their 'params')"),
    "scaler": (lambda v: isinstance(v, dict), "a grad scaler's state_dict (a dict)"),
    "command": (lambda v: isinstance(v, str), "the name of a command (train or finetune)"),
    "log_partial": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and _is_number(v[0]) and _is_count(v[1]),
                    "[sum of train losses, steps]: a number and an integer >= 0"),
    "scaler_skips": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and _is_count(v[0]) and _is_count(v[1])
                     and isinstance(v[2], bool),
                     "[skipped since the last log record, skipped in a row, whether a step was kept]: two integers "
                     ">= 0 and a bool"),
    "data": (lambda v: v is None or isinstance(v, dict), "the data's fingerprint (a dict, or None)"),
    "frozen": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("digest"), str)
                                       and isinstance(v.get("names"), list) and all(isinstance(n, str) for n in v["names"])),
               "the frozen weights' names and digest (a dict of 'names', a list of strings, and 'digest', a string; or None)"),
}


def _shown(value) -> str:
    """A field's value in an error: a container by its type and size (a model's weights are no message)."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)} entries"
    return repr(value)[:80]


def saved_step(out: Path) -> int | None:
    """The step of the checkpoint in OUT_DIR (its training_state.pt), or None when it holds none
    that can be read."""
    try:  # mmap: the step is read without loading the weights and optimizer state into memory
        return read_state(out / STATE_FILE, map_location="cpu", mmap=True)["step"]
    except (OSError, ValueError):
        return None


# ---- restore: this run goes on from the saved one ------------------------------------------------


def restore(out: Path, raw_model: nn.Module, optimizer, scaler, cfg, rt: Runtime,
            data: dict | None = None, frozen: dict | None = None
            ) -> tuple[int, float, tuple[float, int], tuple[int, int, bool], dict, dict | None]:
    """Load the saved run in `out` into the model, optimizer and scaler, after checking that this
    run can continue it (`data`: the fingerprint of the data it trains on now, for `check_data`;
    `frozen`: `frozen_weights(raw_model)`, the weights it does not train, as --init gave them);
    return (step, best val loss, log_partial, scaler_skips (`save_checkpoint`), the settings changed
    from the saved run's as {name: (saved, now)}, for the resume's record in the log: `opening_record`,
    and the log's last opening record before the saved step, which says how those steps ran, for
    minigpt/train.py's `machine_notes`: None if it has none, and on a process but the main one)."""
    state = read_state(out / STATE_FILE, type(cfg), map_location=rt.device)
    # The settings compared are those a user gives this config: not --out (a run directory moved or
    # copied elsewhere is the same run), nor a field it fixes itself (init=False: finetune's shape
    # fields, which --init decides, though a run saved by an earlier minigpt holds the preset it was
    # given), nor a field it no longer has.
    settings = {f.name for f in fields(cfg) if f.init} - {*cfg.INVOCATION_FLAGS, "out"}
    changed = {k: (v, getattr(cfg, k)) for k, v in state["config"].items()
               if k in settings and cfg.kept_form(k, getattr(cfg, k)) != cfg.kept_form(k, v)}
    if cfg.max_iters < state["step"]:  # e.g. `--resume --max-iters 500` meant as "500 more": it would train nothing
        raise ValueError(f"--max-iters {cfg.max_iters} is below the step the saved run reached ({state['step']}): "
                         f"--max-iters (max_iters= in Python) counts the whole run, so pass more than {state['step']} "
                         "to train further")
    # Printed once every check has passed: a note says what the resumed run does.
    saved_data, now_data = data_only(state.get("data")), data_only(data)  # (states saved before it was recorded: None)
    notes = [schedule_note(state["step"], state["config"], cfg) if cfg.max_iters > state["step"] else None,  # (no step runs)
             check_data(out, saved_data, now_data, cfg, state["config"])]
    best = state["best_val_loss"]
    if (best < math.inf and now_data and saved_data  # (no evaluation yet: nothing to start over)
            and any(saved_data.get(k) != now_data.get(k) for k in {**saved_data, **now_data} if not k.startswith("train"))):
        # Other val data (--allow-new-data let it by): the run's best val loss measured other texts,
        # and a better model on this data could lose to it, so best/ would never follow this data.
        # (Every fingerprint key but the train split's, "train.bin ..." in minigpt/data.py's
        # data_fingerprint and "train examples ..." in minigpt/classify_data.py's, says what val reads.)
        notes.append(f"note: the val data differs from the run's, whose best val loss ({best:.4g}) measured other data: "
                     f"best/ follows this data's val loss from here")
        best = math.inf
    # The same val data, measured otherwise: other batches of it (the lm task's --eval-iters,
    # --batch-size, --seed draw them), other windows (--block-size), or, for a classify run saved
    # by an earlier minigpt, sampled batches where every example is scored now. Not comparable.
    measure = [f"--{k.replace('_', '-')} {old} → {now}" for k, (old, now) in changed.items() if k in val_settings(cfg)]
    if sampled_classify_loss(out, state, cfg):
        measure.insert(0, "sampled val batches → every val example")
    if encoding := sft_encoding_change(state.get("data"), data):
        measure.insert(0, encoding)
    if best < math.inf and measure:
        notes.append(f"note: val loss is measured otherwise than the run's ({', '.join(measure)}), so its best val loss ({best:.4g}) "
                     "is not comparable: best/ follows this val loss from here")
        best = math.inf
    state = with_module_names(state)
    weights = with_frozen_weights(out / STATE_FILE, state, raw_model, frozen, cfg)
    try:
        raw_model.load_state_dict(weights)
        optimizer.load_state_dict(with_settings_of(optimizer, state["optimizer"]))
    except torch.OutOfMemoryError:
        raise  # the state is fine; the device is full
    except (RuntimeError, ValueError) as e:  # a shape flag given again, other LoRA targets, other trainable weights
        detail = str(e).strip().splitlines()[-1].strip()[:200]
        differ = f"settings changed from the saved run (saved, now): {changed}" if changed else "no setting changed"
        raise ValueError(f"{out / STATE_FILE} was saved from another model or other trainable parameters than these settings "
                         f"build ({detail}); {differ}. Drop the flags that change the model, or start a new run with "
                         "another --out") from None
    check_optimizer_state(optimizer, raw_model, out / STATE_FILE)
    scaler.load_state_dict(state["scaler"])
    if changed and rt.is_main:  # (said once every check has passed: a refused resume names its own cause)
        print(f"warning: resuming with settings that differ from the saved run (saved, now): {changed}", file=sys.stderr)
    if rt.is_main:
        print(f"resuming the run in {out} at step {state['step']} of {cfg.max_iters}", file=sys.stderr)
    for note in notes:
        if note and rt.is_main:
            print(note, file=sys.stderr)
    if rt.is_main and (note := settle_best(out, state["step"])):
        print(note, file=sys.stderr)
    opening = None
    if rt.is_main:  # Where best/ started over, for the best the summary reports (finetune's best_evaluations).
        # The log as this checkpoint left it (`records_of_state`); this resume marks best_reset again if it starts over.
        kept = truncate_log(out, state["step"])
        opening = next((r for r in reversed(kept) if is_opening(r) and r["step"] < state["step"]), None)
        if best != state["best_val_loss"]:
            append_log(out, {"step": state["step"], "best_reset": True})
    loss_sum, steps = state.get("log_partial", (0.0, 0))  # (states saved before it existed: none)
    # A state saved before scaler_skips existed: no skips counted, and a step kept if the run made
    # one (likely, and a resumed run's few skips are then no divergence, as they were read before).
    since, in_a_row, kept_one = state.get("scaler_skips", (0, 0, state["step"] > 0))
    return state["step"], best, (loss_sum, steps), (since, in_a_row, kept_one), changed, opening


# ---- what restore checks: the data, frozen weights, optimizer state, val measure -----------------


# The flag that lets a resume go on with other data (check_data's way on): said to `minigpt train` /
# `finetune` and to a Python caller alike.
ALLOW_NEW_DATA = "--allow-new-data (allow_new_data=True in Python)"


def check_data(out: Path, saved: dict | None, now: dict | None, cfg: TrainConfig,
               saved_config: dict | None = None) -> str | None:
    """Refuse to resume on data other than the run's, naming what differs; return a note to print.

    `saved` is the fingerprint the run's training state recorded, `now` the data's (both from the
    driver: minigpt/data.py's `data_fingerprint` for token files): a file's token count, say, and
    a hash of its ids. Resume is exact only on the same data, and the same --data may hold other
    data by now (prepared again from other text); a folder moved or copied is still the same.
    Other data also comes from the same --data when a setting that chooses from it changed
    (`cfg.data_settings()`: classify's --seed and --max-examples pick a subset): compared with
    the saved run's settings (`saved_config`), such a change is named as the cause.
    --allow-new-data (cfg.allow_new_data) goes on anyway, and the next checkpoint records the new data.
    """
    if now is None:  # a driver that gives no fingerprint (train_loop called from Python): nothing to check
        return None
    if saved is None:
        return (f"note: {out / STATE_FILE} records no fingerprint of its data (saved by an earlier minigpt), so the "
                "data is not checked against the run's; the next checkpoint records it")
    differ = [k for k in {**saved, **now} if saved.get(k) != now.get(k)]
    if not differ:
        return None
    # A count that changed says enough (its file's hash changed too); a hash alone, when nothing else did.
    counts = [k for k in differ if not isinstance(now.get(k, saved.get(k)), str)]
    shown = "; ".join(f"{k}: {_figure(saved.get(k))} then, {_figure(now.get(k))} now" for k in counts or differ)
    if cfg.allow_new_data:
        return f"note: --allow-new-data: going on with data other than the run's ({shown})"
    data = cfg.data if isinstance(cfg.data, str) else " ".join(cfg.data)  # (finetune's lm task: several files)
    settings = cfg.data_settings() if saved_config else ()  # (called without the saved run's config: none compared)
    choosers = {name: (saved_config[name], getattr(cfg, name)) for name in settings
                if name in saved_config and saved_config[name] != getattr(cfg, name)}
    if choosers:
        flags = ", ".join(f"--{name.replace('_', '-')} ({then} then, {now_} now)" for name, (then, now_) in choosers.items())
        raise ValueError(f"the data differs from the data the run in {out} trained on ({shown}): {flags} chose other "
                         f"data from --data {data}; resume with the run's setting (drop the flag), or pass "
                         f"{ALLOW_NEW_DATA} to go on with this data")
    # A Python caller of train_loop gives the fingerprint, and no --data (cfg.data empty) to name.
    differs = f"--data {data} is not the data" if data else "the data (data_fingerprint=) differs from the data"
    raise ValueError(f"{differs} the run in {out} trained on ({shown}); resume with the run's data, or pass "
                     f"{ALLOW_NEW_DATA} to go on with this data")


def _figure(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def with_frozen_weights(path: Path, state: dict, raw_model: nn.Module, frozen: dict | None, cfg) -> dict:
    """The saved state's weights, completed with the frozen ones this run loaded from --init: every
    weight of the model, for one strict `load_state_dict`.

    A state that froze other weights than these settings freeze is left to `restore`'s error for
    other trainable parameters. Frozen weights that differ from --init's are refused here: the
    run's adapters or blocks were trained on top of other weights. A state saved before minigpt
    left the frozen weights out (no "frozen" entry) holds them all, and they are compared with
    --init's too: the next checkpoint records --init's digest as the weights this run trained on."""
    saved = state.get("frozen")
    if frozen is None or (saved is not None and saved["names"] != frozen["names"]):
        return state["model"]  # nothing frozen now, or other weights: load_state_dict names what differs
    now = raw_model.state_dict()
    if saved is None:
        same = all(name not in state["model"] or torch.equal(state["model"][name], now[name]) for name in frozen["names"])
    elif prefix := saved.get("prefix"):  # (hashed again under the names the saved digest hashed)
        same = saved["digest"] == frozen_weights(raw_model, prefix)["digest"]
    else:
        same = saved["digest"] == frozen["digest"]
    if not same:
        raise ValueError(frozen_weights_changed(path, state, cfg))
    return {**{name: now[name] for name in frozen["names"]}, **state["model"]}


def with_module_names(state: dict) -> dict:
    """The state with its weights named as the model names them. An earlier minigpt, given
    torch.compile(model), saved the wrapper's state dict, where each name has COMPILED_PREFIX
    before it: the same weights, read back under the module's own names. So are the names of its
    frozen weights (`frozen_weights`), whose digest hashed each under the prefix, which "prefix"
    then keeps: `with_frozen_weights` hashes the model's weights that way to compare them."""
    model = {name.removeprefix(COMPILED_PREFIX): t for name, t in state["model"].items()}
    frozen = state.get("frozen")
    if frozen and frozen["names"] and all(name.startswith(COMPILED_PREFIX) for name in frozen["names"]):
        names = [name.removeprefix(COMPILED_PREFIX) for name in frozen["names"]]
        frozen = {**frozen, "names": names, "prefix": COMPILED_PREFIX}
    return {**state, "model": model, "frozen": frozen}


def frozen_weights_changed(path: Path, state: dict, cfg) -> str:
    """The error for a resume whose --init holds other frozen weights than the run trained beside."""
    init, started = getattr(cfg, "init", None), state["config"].get("init")
    out = Path(cfg.out).resolve()
    from_run = f" (the run started from --init {started})" if started and started != init else ""
    if init and (Path(init).resolve() == out or out in Path(init).resolve().parents):
        return (f"--init {init} is this run's own checkpoint, whose weights hold what the run trained (merged in), not "
                f"the frozen weights it trains beside: give --init the checkpoint the run started from{from_run}")
    if not init:  # the model came built, from a Python caller of train_loop (`minigpt train` freezes nothing)
        return (f"{path} was saved beside other frozen weights than the model given to train_loop holds "
                f"now{from_run}: the run trained its weights on top of frozen ones that differ from these. To resume, "
                "the model given must hold the same frozen weights as the run's (built from the same seed, or loaded "
                "from the same checkpoint); or start a new run in another cfg.out")
    return (f"{path} was saved beside other frozen weights than --init {init} holds now{from_run}: the run trained its "
            "weights on top of frozen ones that have changed since (other files, another revision). Give --init the "
            "checkpoint the run started from, or start a new run with another --out")


# What AdamW (minigpt/optimizer.py's, without amsgrad) keeps for each parameter it has stepped.
ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")


def check_optimizer_state(optimizer, model: nn.Module, path: Path) -> None:
    """Refuse optimizer state, just loaded from `path`, that does not fit its parameters.

    `optimizer.load_state_dict` checks the number and sizes of the groups, and casts each tensor
    to its parameter's dtype and device, but checks no shape. The fused AdamW kernel then reads and
    writes as many numbers as the parameter holds: past the end of a smaller moment (the process
    dies at the first step, with a segfault or "free(): invalid size"), or over the start of a
    larger one (it steps on, wrong, without a word). So each parameter's state is checked here,
    before any step: the moments of its shape, `step` a single number of 0 or more.
    """
    names = {param: name for name, param in model.named_parameters()}  # (the optimizer was built over `model`)
    for param, state in optimizer.state.items():
        if not isinstance(param, torch.Tensor):  # load_state_dict keeps the state of an id no group lists, under that id
            raise ValueError(f"{path} is damaged: its optimizer state is for parameter {param!r}, which none of its "
                             "param_groups lists")
        name = names[param]
        if missing := [key for key in ADAMW_STATE if key not in state]:
            raise ValueError(f"{path} is damaged: its optimizer state for {name} lacks {', '.join(missing)}")
        for key, value in state.items():
            # A moment has its parameter's shape; step is one number, of shape ().
            shape, whose = ((), "a step's") if key == "step" else (tuple(param.shape), "the parameter's")
            if tuple(value.shape) != shape:
                raise ValueError(f"{path} is damaged: its optimizer state for {name} holds {key} of shape "
                                 f"{tuple(value.shape)}, where {whose} shape is {shape}")
            if key == "step" and not 0 <= value.item() < math.inf:
                raise ValueError(f"{path} is damaged: its optimizer state for {name} holds step {value.item()}, "
                                 "where it counts the steps taken (0 or more)")


def val_settings(cfg) -> tuple[str, ...]:
    """The settings a val loss depends on, beyond the val data: which windows of the val tokens the
    lm task's evaluation draws, or, for the classify and sft tasks (which score every val example),
    where a long text is cut."""
    every_example = getattr(cfg, "task", "lm") in ("classify", "sft")
    return ("block_size",) if every_example else ("block_size", "batch_size", "eval_iters", "seed")


# Data fingerprint entries that say how the data was read, not what it holds (minigpt/sft_data.py's
# `reading_record`): no part of the data's check, compared as a way of measuring (`sft_encoding_change`).
READING_KEYS = ("sft encoding", "val empty prompts")


def data_only(fingerprint: dict | None) -> dict | None:
    """A data fingerprint without its READING_KEYS (None: none)."""
    return None if fingerprint is None else {k: v for k, v in fingerprint.items() if k not in READING_KEYS}


def sft_encoding_change(saved: dict | None, now: dict | None) -> str | None:
    """How the val loss of an sft run is measured otherwise than its saved state's, when it is: the
    pairs encoded otherwise (minigpt/sft_data.py's SFT_ENCODING; a state without the entry, saved
    before it was recorded, encoded them as 1), where a val prompt is empty, the one pair the
    encodings tell apart. Else None: the same rows, the same val loss, nothing to say."""
    if not now or "sft encoding" not in now or not now["val empty prompts"]:
        return None
    then = (saved or {}).get("sft encoding", 1)
    if then == now["sft encoding"]:
        return None
    return (f"sft encoding {then} → {now['sft encoding']}: val pairs with an empty prompt ({now['val empty prompts']:,}) "
            "read it as <|endoftext|> now, their completion's first token a target")


def sampled_classify_loss(out: Path, state: dict, cfg) -> bool:
    """Whether the saved `state` of a classify run (in `out`) holds a best val loss that an earlier
    minigpt measured as the lm task does, the mean of --eval-iters sampled val batches, where a
    classifier's val loss is now over every val example: a noisy figure, not comparable.

    Two signs, either enough. The state lacks the data's fingerprint: it was saved before minigpt
    recorded one, earlier still than every example was scored. Or the run's log holds, since
    best/ last started over, an evaluation with a perplexity (val_ppl): it came with the sampled
    loss, never with a loss over every example (a loss per text). The log tells the states saved
    in between, and an old run that a minigpt resumed, keeping its best, before this check."""
    if getattr(cfg, "task", "lm") != "classify":
        return False
    if "data" not in state:
        return True
    return any("val_ppl" in r for r in comparable_evaluations(records_of_state(out, state["step"])))


def with_settings_of(optimizer, saved: dict) -> dict:
    """The saved optimizer state with the hyperparameters of `optimizer`'s groups in place of its own.

    `optimizer.load_state_dict` brings back each group's saved settings (weight decay, betas, eps)
    along with the per-parameter state (moments, step). The optimizer was built from *this* run's
    config, so a flag given again on --resume (--weight-decay, --beta2) takes effect only if its
    groups keep their settings: the saved ones would silently win (lr is set every step: the saved one is kept).
    Each group keeps its own: the no-decay group stays at weight decay 0. Groups that do not
    match in number are left as saved, for load_state_dict to refuse.
    """
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        return saved
    # "params": the saved ids, which index the state. "lr": the last step's, as saved; every step
    # sets its own, and a run resumed at its last step logs it (train_loop).
    groups = [{**then, **{k: v for k, v in now.items() if k not in ("params", "lr")}}
              for then, now in zip(saved["param_groups"], optimizer.param_groups)]
    return {**saved, "param_groups": groups}
