"""A run's directory (OUT_DIR): its checkpoints and the state for exact resume.

Where it sits: `train_loop` (minigpt/train.py) trains; this file is what it leaves on disk, and
what `--resume` reads back (the log and its loss curve: minigpt/run_log.py). Every file is
written atomically (minigpt/files.py's `atomic_path`), so a crash at any moment leaves the
previous version whole, never half of a new one; log.jsonl alone is appended a record at a time,
and `read_log` drops a torn last record.

OUT_DIR layout:
    config.json, model.safetensors   latest weights (HF layout), beside the tokenizer's files
                         (vocab.json, merges.txt, ...: the data's, or the fine-tuned model's)
    training_state.pt    the weights that train, optimizer, grad scaler, step, best val loss, config,
                         command (train/finetune), the frozen weights' names and digest (`frozen_weights`),
                         the data's fingerprint (what --resume checks the data against), the
                         train losses since the last log record (log_partial), and float16's
                         skipped updates counted so far (scaler_skips)
    best/                the checkpoint with the lowest val loss (+ metrics.json)
    best.prev/           the best/ a new best replaced, until the state that knows of the new one
                         is saved (`save_best`); best.new/: a new best/ being written; best.stale/:
                         a best/ later than the saved state, being deleted by --resume (`settle_best`)
    log.jsonl, loss.png  one JSON record per log/eval, one at each start and resume of the run
                         (minigpt/run_log.py's `opening_record`: its settings, versions, machine), and
                         the curves drawn from it
    log.lost.jsonl       the log of a run killed before its first checkpoint, set aside when
                         --resume started it again (`restart_unsaved_run`)
    checkpoint.lost/     what that run had saved of its first checkpoint, set aside with it
    data/, data.new/     fine-tuning's lm task: the tokens it trains on, and those being written (renamed
                         to data/ once whole) or a resume's of another --data until a checkpoint
                         records them (minigpt/finetune.py)
    adapter/             a LoRA run's adapters alone (its lm and sft tasks), beside each checkpoint's weights
    .lock                there while a run writes OUT_DIR (`run_dir_lock`): one run at a time
"""
from __future__ import annotations

import collections.abc
import errno
import hashlib
import json
import math
import os
import re
import shutil
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from minigpt.checks import is_int
from minigpt.config import INDEX_NAME, STATE_FILE, WEIGHTS_NAME
from minigpt.files import atomic_path, atomic_write_text, file_lock, no_follow, read_json, refuse_lfs_pointer, stored_path
from minigpt.optimizer import schedule_note
from minigpt.run_log import (LOG_FILE, PLOT_FILE, append_log, comparable_evaluations, is_opening, plain_config, read_log,
                              records_of_state, truncate_log)
from minigpt.tokenizer_files import TOKENIZER_FILES

if TYPE_CHECKING:  # type hints only: train.py and train_config.py import this module
    from minigpt.tokenizer import Tokenizer
    from minigpt.train_config import TrainConfig
    from minigpt.train_runtime import Runtime

# What torch.compile's wrapper puts before each name in its state dict (the module inside is `_orig_mod`).
COMPILED_PREFIX = "_orig_mod."
# What marks a directory as a checkpoint or a run's OUT_DIR: a run without --resume refuses one.
RUN_FILES = (STATE_FILE, LOG_FILE, "config.json", WEIGHTS_NAME, INDEX_NAME)


# ---- checkpoints --------------------------------------------------------------------------------


def frozen_weights(model: nn.Module, prefix: str = "") -> dict | None:
    """The names of the weights that do not train (a fine-tuning strategy froze them), and a digest
    of their values; None when every weight trains. `prefix` goes before each name the digest
    hashes: COMPILED_PREFIX gives the digest an earlier minigpt saved of torch.compile(model), which
    hashed the wrapper's names (`with_module_names`); the names returned are the model's own.

    training_state.pt keeps only the weights that train: the frozen rest are the --init
    checkpoint's, which --resume loads again anyway. So a LoRA run's state holds MBs of adapters,
    not another GBs-large copy of GPT-2, whose merged weights the checkpoint beside it already holds.
    The digest (blake2b of each frozen tensor's name, dtype, shape and bytes) is how --resume knows
    that --init still holds the weights the trained ones were learned on top of.
    """
    params = dict(model.named_parameters(remove_duplicate=False))  # a tied weight under each of its names
    state = model.state_dict()
    names = sorted(name for name in state if name in params and not params[name].requires_grad)
    if not names:
        return None
    digest, seen = hashlib.blake2b(digest_size=16), set()
    for name in names:
        t = state[name].detach()
        digest.update(f"{prefix}{name} {t.dtype} {tuple(t.shape)}\n".encode())
        if id(params[name]) not in seen:  # a tied weight (GPT-2's wte is its LM head) read once
            seen.add(id(params[name]))
            digest.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return {"names": names, "digest": digest.hexdigest()}


def save_checkpoint(out: Path, raw_model: nn.Module, save_fn, optimizer, scaler, step: int, best: float, cfg,
                    log_partial: tuple[float, int] = (0.0, 0), data: dict | None = None,
                    frozen: dict | None = None, *, scaler_skips: tuple[int, int, bool]) -> None:
    """The HF-layout files first, then the training state (which carries its own copy of the
    weights that train).

    log_partial is (sum of train losses, steps) since the last log record: a run stopped between
    two records resumes with them, so its next record averages the same steps as an unbroken run's.
    data is the fingerprint of the data trained on (None: the driver gives none), for `check_data`.
    frozen is `frozen_weights(raw_model)`, taken once per run: those weights are left out of the state.
    scaler_skips is float16's count of the updates its loss scaler skipped (minigpt/train.py's
    `Progress`): (since the last log record, in a row now, whether the run kept one yet), so a resumed
    run's next record counts the skips before the resume too, and its rule for skips in a row goes on
    where it stood. It has no default: none is right for every state (a saved run that made steps
    and a fresh one differ in kept_one; `restore`'s guess for a state without it says so).

    Each file is replaced atomically. A crash between the two leaves newer HF files beside an
    older state; resume reads weights *from the state*, so it still restarts consistently.
    """
    save_fn(raw_model, out)
    left_out = set(frozen["names"]) if frozen else set()
    state = {
        "model": {name: t for name, t in raw_model.state_dict().items() if name not in left_out},
        "frozen": frozen,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,  # also the data position: batches are drawn from (seed, step)
        "best_val_loss": best,
        "config": plain_config(cfg),
        "command": cfg.COMMAND,  # train or finetune: the one whose --resume continues this run
        "log_partial": list(log_partial),
        "scaler_skips": list(scaler_skips),
        "data": data,
    }
    # A crash midway leaves the previous state whole. torch.save writes into a file of ours, whose
    # failed write keeps its own error (`KeepsWriteError`).
    with atomic_path(out / STATE_FILE) as tmp, open(tmp, "wb", opener=no_follow) as f:
        file = KeepsWriteError(f)
        try:
            torch.save(state, file)
            file.flush()  # the bytes torch.save left buffered, written here, where their failure is caught
        # torch's zip writer fails any write as "[enforce fail ...] unexpected pos ..."; the flush, as an OSError
        except (RuntimeError, OSError) as e:
            # Closed now, its own error ignored: else the `with` closes it after our raise, flushing
            # the bytes still buffered, which fails again, and that error (naming no file) replaces ours.
            with suppress(OSError):
                f.close()
            if file.error is not None:  # what it was: ENOSPC (the disk full), EFBIG (over `ulimit -f`), ...
                raise OSError(file.error.errno, file.error.strerror or str(file.error), str(out / STATE_FILE)) from e
            if "unexpected pos" not in str(e) and "PytorchStreamWriter" not in str(e):
                raise
            raise OSError(errno.EIO, f"could not write it ({e}); is the disk full?", str(out / STATE_FILE)) from e


class KeepsWriteError:
    """The file torch.save writes a training state into, keeping the OSError of a failed write.
    torch's zip writer reports that as "[enforce fail ...] unexpected pos ...", the same for a full
    disk and a file over `ulimit -f`, with no errno (given a path, it writes the file itself)."""

    def __init__(self, file) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as e:  # (a write of the bytes buffered so far)
            self.error = self.error or e
            raise


def saved_step(out: Path) -> int | None:
    """The step of the checkpoint in OUT_DIR (its training_state.pt), or None when it holds none
    that can be read."""
    try:  # mmap: the step is read without loading the weights and optimizer state into memory
        return read_state(out / STATE_FILE, map_location="cpu", mmap=True)["step"]
    except (OSError, ValueError):
        return None


# ---- best/: the lowest val loss, as the saved state knows it -------------------------------------
# best/ is written at an evaluation before the training state that records it. A run killed in
# between resumes from an earlier step, and best/ would hold weights of steps it throws away, over
# the best it does know of. So a new best/ is written whole as best.new/, swapped in, and the one
# it replaces waits as best.prev/ until the state is saved; a resume puts back whichever one its
# state knows (`settle_best`).
#
# The invariant a kill at any moment keeps: best/ is always whole, as it appears and goes only by
# a rename (of a best.new/ whose metrics.json is written last, or of best.prev/), never by a delete
# in place; and the best/ the saved state knows of is best.prev/ when that exists and best/ is
# missing, unreadable or from a later step, else best/. best.new/ (not yet swapped in) and
# best.stale/ (a later best/ on its way out) never hold it, so a resume deletes them first.


def save_best(out: Path, raw_model: nn.Module, save_fn, record: dict) -> None:
    """Make the model at this evaluation (`record`: its log record, kept as metrics.json) best/."""
    new, best, prev = out / "best.new", out / "best", out / "best.prev"
    shutil.rmtree(new, ignore_errors=True)  # a kill's half-written one
    new.mkdir()  # save_fn(model, dir) writes into a dir that exists
    save_fn(raw_model, new)
    atomic_write_text(new / "metrics.json", json.dumps(record, indent=2) + "\n")  # last: a whole best.new/ has it
    if best.exists():
        shutil.rmtree(prev, ignore_errors=True)  # (one the saved state no longer needs: its best/ came after)
        best.rename(prev)
    new.rename(best)


def drop_previous_best(out: Path) -> None:
    """The state that records the new best/ is saved: the one it replaced is no longer needed."""
    shutil.rmtree(out / "best.prev", ignore_errors=True)


def settle_best(out: Path, step: int) -> str | None:
    """On resume at `step`: best/ as the saved state knows it. A best/ from a later evaluation (a
    kill before its state was saved), or one without a readable metrics.json beside a best.prev/
    (left half-deleted by an earlier minigpt), goes, and the one it replaced (best.prev/) comes
    back; a best.new/ never swapped in goes. Returns a note when best/ changed."""
    new, best, prev, stale = out / "best.new", out / "best", out / "best.prev", out / "best.stale"
    shutil.rmtree(new, ignore_errors=True)  # its evaluation came after the saved state
    shutil.rmtree(stale, ignore_errors=True)  # a kill while an earlier resume deleted it
    if prev.exists() and not best.exists():  # a kill between the two renames (save_best's, or those below)
        prev.rename(best)
        return None
    at = best_step(best)
    # Unreadable beside a best.prev/, best/ is the half-deleted one (an earlier minigpt deleted in place).
    later = at > step if at is not None else prev.exists()
    if not later:  # the state knows of it, or of none better (best.prev/, if any: a kill before it went)
        drop_previous_best(out)
        return None
    said = (f"note: best/ held the evaluation at step {at}, after the saved step {step} this run resumes from"
            if at is not None else "note: best/ was left half-deleted (it has no readable metrics.json)")
    best.rename(stale)  # out of the way in one step: a delete in place, killed midway, left best/ without its metrics.json
    if prev.exists():
        prev.rename(best)
    shutil.rmtree(stale)
    if best.exists():
        return f"{said}: the best/ before it (step {best_step(best)}) is put back"
    return f"{said}: it is removed (there was none before it)"


def best_step(best: Path) -> int | None:
    """The step of best/'s evaluation (its metrics.json), or None when there is none to read."""
    try:
        return int(json.loads((best / "metrics.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_resumable(out: Path) -> None:
    if (out / STATE_FILE).exists():
        return
    found = [name for name in (*RUN_FILES, "best/", PLOT_FILE) if (out / name).exists()]
    if found:  # e.g. a finished run whose training_state.pt was deleted to save space
        raise FileNotFoundError(f"--resume: no {STATE_FILE} in {out}, so the run there cannot be continued (it holds "
                                f"{', '.join(found)}: a run that saved checkpoints, or a model); to train its weights "
                                f"further, start a new run from them with --init {out} and another --out")
    # (e.g. a run killed while it started, before it saved anything)
    raise FileNotFoundError(f"--resume: no {STATE_FILE} in {out}; there is no run to continue there, as nothing was saved "
                            "there: give the same command without --resume (resume=False in Python), or, in a script "
                            "that may run again, with --auto-resume (auto_resume=True in Python), which starts the run or "
                            "continues it")


# ---- a run that never saved a checkpoint ---------------------------------------------------------
# The first checkpoint comes at step --eval-interval (train's default 200, finetune's 100), at step
# --save-interval when that is set and comes first, or at a stop (Ctrl-C, SIGTERM). A run killed
# before it is whole leaves its log.jsonl (finetune --task lm: also data/, its tokens), perhaps
# the part of that checkpoint it had written (best/, config.json, model.safetensors), and nothing
# to resume from: no training_state.pt, so no optimizer state, not even its settings. `--resume`
# there starts it again from step 0, with the log set aside, never mixed with the new run's;
# without --resume it is refused (the run may still be going, before its first checkpoint), with
# the command that restarts it.

# A tokenizer's files in a folder: those a checkpoint writes beside its weights, and a tokenizer.json (read first).
TOKENIZER_WRITTEN = (*TOKENIZER_FILES, "tokenizer_config.json")
# A --data gone on --resume is most often the saved run's, moved since.
MOVED_DATA_HINT = "; if the run's data has moved, pass --data with where it is now"

# What a first checkpoint writes before its training_state.pt, which a kill can leave behind.
CHECKPOINT_FILES = ("best/", "config.json", WEIGHTS_NAME, INDEX_NAME)
# The trace of a LoRA run's adapters, as this file names what a folder holds ("best/"): its checkpoint
# saves them alone, after its weights, in minigpt/lora.py's ADAPTER_DIR.
ADAPTER_TRACE = "adapter/"


def unsaved_run(out: Path, own_data: bool = False) -> list[str]:
    """What OUT_DIR holds of a run that stopped before its first checkpoint was whole, when that
    is all it holds of a run; [] when it holds a checkpoint, or nothing of a run.

    At an evaluation a checkpoint is written in this order: best/, the evaluation's log record,
    config.json + model.safetensors, training_state.pt, loss.png; at a stop (Ctrl-C, SIGTERM) or
    at --save-interval without one, the same less best/ and the record. A run killed at any point
    before its first training_state.pt leaves neither it nor a loss.png, a log that records nothing
    past that first evaluation, and config.json + model.safetensors only after best/, or with no
    evaluation logged. A run that got further is told apart by them, even when its
    training_state.pt was deleted (to save space, say), and so is a model with the log of the run
    that made it: a model is never started over. A run is known by its log, a log set aside by an earlier restart, best/
    or training_state.pt.tmp: config.json + model.safetensors alone are a model (a download, say).
    `own_data`: whether OUT_DIR/data holds the run's tokens (`own_tokens`), a trace of it too, as
    the lm task writes them before training; the caller decides it once for all it asks."""
    if (out / STATE_FILE).exists() or (out / PLOT_FILE).exists():
        return []
    try:
        records = read_log(out) if (out / LOG_FILE).exists() else []
    except (OSError, ValueError):  # damaged, or set aside by rank 0 this moment: it tells nothing
        records = []
    evaluations = [i for i, r in enumerate(records) if "val_loss" in r]
    if evaluations and evaluations[0] < len(records) - 1:  # logged on after its first checkpoint
        return []
    saved = [name for name in CHECKPOINT_FILES[1:] if (out / name).exists()]
    if saved and evaluations and not (out / "best").exists():  # weights, not from a first checkpoint
        return []
    marks = [name for name in (LOG_FILE, "best/", "best.new/", STATE_FILE + ".tmp") if (out / name).exists()]
    # The logs set aside by an earlier restart (`next_lost`): under torchrun rank 0 may be renaming the log now.
    marks += sorted(p.name for p in out.glob("log.lost*.jsonl"))
    if own_data:  # the lm task's tokens, written before training
        marks.append("data/")
    return marks and [*marks, *saved]


def unsaved_story(out: Path, traces: list[str]) -> str:
    """Why OUT_DIR, holding an unsaved run (`traces`: what `unsaved_run` found), has nothing to
    resume: with the last step its log recorded, and the part of a checkpoint it left."""
    try:  # (a start's record logs no step of training)
        steps = [r["step"] for r in read_log(out) if not is_opening(r)] if (out / LOG_FILE).exists() else []
    except ValueError:  # a log damaged otherwise than by a torn last record: it is set aside anyway
        steps = []
    logged = f"logged up to step {steps[-1]} and " if steps else ""
    left = [name for name in CHECKPOINT_FILES if name in traces]
    when = f"while saving its first one (it left {', '.join(left)}, but not " if left else "before saving its first one ("
    return (f"{out} holds no checkpoint: its run {logged}stopped {when}{STATE_FILE}, saved every --eval-interval "
            "(or --save-interval) steps), so there is nothing to resume")


def holds_run(out: Path, own_data: bool = False) -> bool:
    """Whether OUT_DIR holds a run that --resume takes on: a saved one, or an unsaved one it starts
    again (--auto-resume's question: resume if so, else start a new run). `own_data`: `unsaved_run`'s."""
    return (out / STATE_FILE).exists() or bool(unsaved_run(out, own_data))


def run_tokens(settings: Mapping) -> dict | None:
    """What a run of these `settings` (a config's fields, or the flags parsed) tokenizes into
    OUT_DIR/data, as its meta.json records it (minigpt/data.py's `prepare`): the text files, the
    split, and the tokenizer, --tokenizer's or --init's (which `tokens_differ` loads only when the
    rest matches). None for a run that writes no data/: `minigpt train`, finetune's other tasks,
    and an lm --data that is one prepared DATA_DIR, read where it is (FinetuneConfig's `prepared_data`)."""
    from minigpt.finetune_config import one_or_several  # (it imports this module, through train_config)

    data = settings.get("data")
    if settings.get("task") != "lm" or not data:
        return None
    kept = one_or_several(data)
    paths = [kept] if isinstance(kept, str) else list(kept)
    if len(paths) == 1 and (Path(paths[0]) / "meta.json").is_file():
        return None
    return {"sources": [stored_path(p) for p in paths], "val_fraction": settings.get("val_fraction"),
            "init": settings.get("init"), "tokenizer": settings.get("tokenizer")}


def tokens_differ(data: Path, meta: dict, tokens: dict, tokenizer: Tokenizer | None = None) -> list[str]:
    """What differs between the tokens a prepared folder `data` holds (`meta`: its meta.json) and
    those a run tokenizes (`tokens`: `run_tokens`), as "the tokens of" them: "other text files",
    "another --val-fraction", "another tokenizer", "a tokenizer/ that cannot be read"; [] when none does.
    `tokenizer`: the one `tokens` names, where the caller has it loaded already (else loaded here).

    A source is compared as a resolved absolute path: `minigpt prepare` records each as it was
    typed (b/corpus.txt), read here from the current directory, as the run's own --data is. The
    tokenizer is loaded only when the rest matches: its vocabulary size and <|endoftext|> id, and
    the tokenizer `prepare` saved in data/tokenizer, where there is one, table by table (two
    tokenizers of one size trained on other texts give other ids): a damaged one makes the tokens
    nobody's known, so a resume tokenizes again, and a new run is refused rather than write over it."""
    from minigpt.pretrain import tokenizer_tables_differ  # (it imports the training code, which imports this module)
    from minigpt.tokenizer import model_tokenizer  # (loaded with the GPT-2 tables only when asked)

    sources = meta.get("sources")
    differ = []
    if (not isinstance(sources, list) or not all(isinstance(p, str) for p in sources)
            or [os.path.realpath(p) for p in sources] != [os.path.realpath(p) for p in tokens["sources"]]):
        differ.append("other text files")
    if meta.get("val_fraction") != tokens["val_fraction"]:
        differ.append("another --val-fraction")
    if not differ and tokens["init"]:  # (no --init: a bare --resume, whose flags come from the saved run later)
        tokenizer = tokenizer or model_tokenizer(tokens["init"], tokens["tokenizer"])
        try:
            tables = tokenizer_tables_differ(tokenizer, data / "tokenizer")
        except (OSError, ValueError):  # a file missing or torn
            differ.append("a tokenizer/ that cannot be read")
        else:
            if tables or (meta.get("vocab_size"), meta.get("eos_token_id")) != (tokenizer.vocab_size, tokenizer.eos_token_id):
                differ.append("another tokenizer")
    return differ


def data_meta(data: Path) -> dict | None:
    """A data/ folder's meta.json, or None when it has none that reads as a dict."""
    try:
        meta = read_json(data / "meta.json") if (data / "meta.json").is_file() else None
    except (OSError, ValueError):  # unreadable: no sign of whose it is
        return None
    return meta if isinstance(meta, dict) else None


def started_tokens(out: Path) -> list[dict]:
    """The tokens (`run_tokens`) that each start of a run in OUT_DIR wrote into data/, read from the
    config in the opening record that begins its log: log.jsonl's, and those of the logs an earlier
    restart set aside (`next_lost`). A restart with another --data or --val-fraction (a typo mended)
    writes over that run's data/, which its own config no longer describes."""
    found = []
    for log in (out / LOG_FILE, *out.glob("log.lost*.jsonl")):
        try:
            with open(log, encoding="utf-8") as f:
                record = json.loads(f.readline())
        except (OSError, ValueError):  # gone, unreadable or torn: it tells nothing
            continue
        if isinstance(record, dict) and is_opening(record) and isinstance(record.get("config"), Mapping):
            if (tokens := run_tokens(record["config"])) is not None:
                found.append(tokens)
    return found


def own_tokens(out: Path, tokens: dict | None) -> bool:
    """Whether OUT_DIR/data is the run's to write into, for a run that tokenizes its text there
    (`tokens`: `run_tokens`; None: a run that writes no data/, whose it never is): when its
    meta.json records the same tokens (`tokens_differ`), which the run writes again, the same, or
    those a start of the run in OUT_DIR wrote (`started_tokens`: an unsaved run, restarted with
    other flags).

    finetune writes its tokens into data.new/ and renames that to data/ once whole, meta.json
    included (minigpt/finetune.py's `_text_tokens`), so a data/ it made always has its meta.json;
    a kill while it tokenized leaves data.new/, which the next run that tokenizes clears. Any other data/ (text
    the user keeps there, the output of a `minigpt prepare` of other files, or of another
    tokenizer) is the user's own: a new run there is refused (`check_out_dir`).

    It loads two tokenizers (--init's and data/tokenizer, at each comparison that gets that far):
    each look at OUT_DIR (`check_out_dir`, train_config.py's `parse_config`) asks it once and passes
    the answer on (`unsaved_run`, `holds_run`, `check_folders`)."""
    data = out / "data"
    if tokens is None or not data.is_dir():
        return False
    meta = data_meta(data)
    if meta is None:
        return False
    if not tokens_differ(data, meta, tokens):
        return True
    for made in started_tokens(out):
        with suppress(OSError, ValueError):  # a start's --init or --tokenizer gone or unreadable since: not its tokens
            if not tokens_differ(data, meta, made):
                return True
    return False


def next_lost(out: Path, name: str = "log", suffix: str = ".jsonl") -> Path:
    """Where `restart_unsaved_run` sets a log (or a checkpoint: name "checkpoint", no suffix) aside:
    log.lost.jsonl, or log.lost.2.jsonl, ... beside earlier ones."""
    names = (f"{name}.lost{suffix}", *(f"{name}.lost.{i}{suffix}" for i in range(2, 10_000)))
    return next(out / n for n in names if not (out / n).exists())


def env_rank() -> tuple[int, int]:
    """(rank, world size) of this process, as torchrun sets them in RANK and WORLD_SIZE; (0, 1) for
    a plain run, which sets neither. Both are checked, as a stray RANK (left exported in a shell,
    or copied from a job script) made a plain run a "rank 1" of one process: it trained, saved
    nothing (rank 0 writes OUT_DIR) and exited 0, or kept its errors to itself."""
    world, rank = env_int("WORLD_SIZE", 1), env_int("RANK", 0)
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} is set: a run has 1 process or more; unset WORLD_SIZE, or launch with "
                         "torchrun")
    if world == 1 and rank != 0:
        raise ValueError(f"RANK={rank} is set but WORLD_SIZE is not (or is 1): unset RANK, or launch with torchrun")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is set, outside 0..{world - 1} (WORLD_SIZE={world}): unset RANK and WORLD_SIZE, "
                         "or launch with torchrun")
    return rank, world


def env_int(name: str, default: int) -> int:
    """An environment variable that holds a count, or a ValueError naming it (int's own names neither)."""
    text = os.environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is set, not a whole number: unset {name}, or launch with torchrun") from None


def is_rank_0() -> bool:
    """Whether this is the process that writes OUT_DIR (rank 0 under torchrun; the only one otherwise),
    for the checks that run before train_loop's Runtime exists."""
    return env_rank()[0] == 0


def restart_unsaved_run(out: Path, cfg: TrainConfig, traces: list[str], asked: str, adapters: bool = False) -> None:
    """--resume (or --auto-resume: `asked`, the flag the note names) on a run that never saved a
    checkpoint: start it again from step 0.

    Its log.jsonl is renamed (`next_lost`), so the new log holds only the new run's steps; the
    part of a first checkpoint it left is moved into checkpoint.lost/ (the same flags write it
    again, bit for bit; and were it a finished run's model, its training_state.pt and loss.png
    deleted by hand, nothing would be lost), adapter/ with it only for a run that saves its
    adapters there (`adapters`: finetune's LoRA runs), else it is the user's, and stays;
    cfg.resume turns False: from here on the run is a new one (finetune --task lm tokenizes --data
    again into data/, as a new run does). Only rank 0 gets here (`check_out_dir`).
    """
    story, kept = unsaved_story(out, traces), ""
    left = [name for name in ("best.new/", *CHECKPOINT_FILES) if name in traces]
    if set(left) - {"best/", "best.new/"}:  # the checkpoint's weights come with its tokenizer's files, and a LoRA
        # run's adapters: they go too
        written = (*TOKENIZER_WRITTEN, *((ADAPTER_TRACE,) if adapters else ()))
        left += [name for name in written if (out / name.rstrip("/")).exists()]
    if (out / LOG_FILE).exists():
        target = next_lost(out)
        (out / LOG_FILE).rename(target)
        kept = f"; its log is kept as {target.name}"
    elif not left:
        kept = f" (it left {', '.join(traces)})"
    if left:
        aside = next_lost(out, "checkpoint", "")
        aside.mkdir()
        for name in left:
            (out / name.rstrip("/")).rename(aside / name.rstrip("/"))
        kept += (f"; what it had saved of its first checkpoint ({', '.join(left)}) is moved to {aside.name}/: the same "
                 "flags save it again")
    print(f"note: {asked}: {story}. Starting it again from step 0 with the flags given (no settings were "
          f"saved to take the rest from){kept}", file=sys.stderr)
    cfg.resume = False


LOCK_FILE = ".lock"


class RunInUse(FileExistsError):
    """OUT_DIR is held by another run (`run_dir_lock`)."""


_held: set[Path] = set()  # the OUT_DIRs this process holds


@contextmanager
def run_dir_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold OUT_DIR for one run, or refuse: a second run there (a job launched twice, a requeue
    while the first still runs, --resume in another shell) would write the same log, checkpoints
    and temporary files, each undoing the other's.

    An flock on OUT_DIR/.lock (minigpt/files.py's `file_lock`), which dies with its process: a
    killed run leaves no stale lock, and a resume after it finds OUT_DIR free. The directories made
    for it go again when the run ends, if empty (a run refused at once leaves nothing behind).
    Where no lock can be had, the run goes unguarded: a folder this process may not make or write
    (check_out_dir and the first write say so), or a file system without flock (with a warning).
    Rank 0 alone takes it, as it alone writes OUT_DIR. Reentrant within a process: `minigpt train`
    and `finetune` hold it from their first look at OUT_DIR, and their `train_loop` again. (Two
    threads of one process are not kept apart: a run is a process.)"""
    out = Path(out).resolve()
    if not is_rank_0() or out in _held:  # another process's to hold, or held already by an outer call
        yield
        return
    made = [d for d in (out, *out.parents) if not d.exists()]  # leaf first

    def busy() -> None:
        raise RunInUse(f"{out} is in use by another run, still going (its process holds {out / LOCK_FILE}): wait for "
                       "it to end, or stop it (Ctrl-C saves), before you resume it; or choose another --out")

    _held.add(out)
    try:
        with ExitStack() as held:
            try:
                held.enter_context(file_lock(out / LOCK_FILE, busy))
            except RunInUse:
                raise
            except OSError as e:  # (a folder it may not make or write is refused by check_out_dir, or at the first write)
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR):
                    with suppress(OSError):  # e.g. ENOLCK (an NFS mount without its lock service): no lock file left
                        (out / LOCK_FILE).unlink()
                    print(f"warning: cannot lock {out / LOCK_FILE} ({e.strerror}): nothing keeps another run out of {out}",
                          file=sys.stderr)
            yield
    finally:
        _held.discard(out)
        for d in made:
            try:
                d.rmdir()  # (only if empty)
            except OSError:
                break


def check_out_dir(cfg: TrainConfig, adapters: bool = False) -> None:
    """Refuse an OUT_DIR whose files the run would destroy, before anything is written there.

    A run replaces the checkpoint files in OUT_DIR and starts a new log.jsonl, so without
    --resume OUT_DIR must not hold a checkpoint or another run's files: not a finished run, not
    a downloaded or shipped model, and not the --init checkpoint itself. Nor a folder the run
    writes into that is not its own (`check_folders`): finetune's lm task tokenizes its text into
    data/, and a LoRA run (`adapters`) saves its adapters in adapter/. An empty or missing OUT_DIR, or
    one holding only unrelated files, is fine. With --resume OUT_DIR must hold the
    run to continue (its training_state.pt); --out may then equal --init, since the files that
    get replaced are the run's own. One change, not only a check: --resume on a run that never
    saved a checkpoint starts it again (`restart_unsaved_run`: its log set aside, cfg.resume False).
    cfg.auto_resume turns into cfg.resume when OUT_DIR holds a run (`holds_run`), else a new run.

    Under torchrun only rank 0 judges what OUT_DIR holds, since it alone writes there (and may be
    setting an unsaved run aside while the others look): another process resumes if there is a
    training_state.pt and starts anew if not. If rank 0 refuses, torchrun stops the others while
    they wait for it to join the process group.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():  # else "[Errno 17] File exists", after the data and model are loaded
        raise FileExistsError(f"--out {out} is a file; OUT_DIR is a directory (checkpoint, training_state.pt, log.jsonl, "
                              "...): choose another --out")
    above = next(p for p in out.absolute().parents if p.exists())  # ("/" at worst) what mkdir would create OUT_DIR in
    if not above.is_dir():  # else a bare "[Errno 20] Not a directory: '.../file/out'" at the first write
        raise NotADirectoryError(f"--out {out} is below {above}, which is a file, not a directory: choose another --out")
    asked = "--auto-resume" if cfg.auto_resume else "--resume"  # (parse_config may have made it a --resume already)
    tokens = run_tokens(vars(cfg))
    # Whether data/ holds this run's tokens (`own_tokens`: it loads two tokenizers), decided once for
    # each question below. None asks it where a training_state.pt is (a saved run); under torchrun
    # only rank 0 does, which judges the rest, but for --auto-resume's question, which each process asks.
    asks = is_rank_0() or (cfg.auto_resume and not cfg.resume)
    own = asks and not (out / STATE_FILE).exists() and own_tokens(out, tokens)
    if cfg.auto_resume:  # decided once: a run started again below is a new one, for train_loop's call too
        cfg.resume, cfg.auto_resume = cfg.resume or holds_run(out, own), False
    if not cfg.resume and cfg.init and out.resolve() == Path(cfg.init).resolve():
        raise FileExistsError(f"--out {out} is the --init checkpoint: training would overwrite the weights it starts from; "
                              "choose another --out")
    if not is_rank_0():
        cfg.resume = cfg.resume and (out / STATE_FILE).exists()
        return
    traces = unsaved_run(out, own)
    if cfg.resume:
        if not traces:
            check_resumable(out)
            return
        check_folders(out, tokens, own, adapters, traces)  # before the restart moves anything
        restart_unsaved_run(out, cfg, traces, asked, adapters)
        return
    found = [name for name in (*RUN_FILES, "best/") if (out / name).exists()]
    if found and traces:
        raise FileExistsError(f"{unsaved_story(out, traces)}; a new run there would replace its {', '.join(found)}. To "
                              f"start it again from step 0, give the same command with --resume (resume=True in Python; "
                              f"its log is then kept as {next_lost(out).name}), or choose another --out")
    if found:
        # (said to `minigpt train` and to a Python caller of `pretrain` / `finetune` alike: both spellings)
        what = ("pass --resume (resume=True in Python) to continue that run, or choose another --out"
                if STATE_FILE in found else
                f"it is not a run that --resume can continue (no {STATE_FILE}): choose another --out, or move those files away")
        raise FileExistsError(f"{out} already holds a checkpoint or a run ({', '.join(found)}); {what}")
    # A tokenizer alone (one saved there by transformers, say): the run's checkpoints write theirs
    # over it, and a tokenizer.json the run does not write would stay, to be read first.
    if tokenizer := [name for name in TOKENIZER_WRITTEN if (out / name).exists()]:
        raise FileExistsError(f"{out} holds a tokenizer ({', '.join(tokenizer)}), which the run's checkpoints would "
                              "replace, or leave beside another tokenizer's: choose another --out, or move those files away")
    check_folders(out, tokens, own, adapters, traces)


def check_folders(out: Path, tokens: dict | None, own_data: bool, adapters: bool, traces: list[str]) -> None:
    """Refuse an OUT_DIR holding a folder that this run would write over and that is not its own:
    a data/ where the lm task tokenizes its text (`tokens`: `run_tokens`), unless it holds the run's
    tokens (`own_data`: `own_tokens`, decided by `check_out_dir`); an
    adapter/, where a LoRA run (`adapters`) saves its adapters, unless it goes with the part of a
    first checkpoint that the unsaved run being started again left (`traces`), which
    `restart_unsaved_run` sets aside with it.
    prepare(overwrite=True) and save_adapters write over what is there without a word."""
    theirs, hint = {}, ""
    if tokens is not None and (out / "data").exists() and not own_data:
        if (meta := data_meta(out / "data")) is not None:
            differ = tokens_differ(out / "data", meta, tokens)
            tokenizer = {"another tokenizer", "a tokenizer/ that cannot be read"} & set(differ)
            # (meta.json records the files and split; a tokenizer differs by meta.json or by tokenizer/)
            held = f"the tokens of {' and of '.join(differ)}" + ("" if tokenizer else ", as its meta.json says")
            if not tokenizer:  # (prepared with another, they are no ids of this model's)
                hint = f"; to train on those tokens, pass --data {out / 'data'} (prepared data is read where it is)"
        else:
            held = "files of its own, and no meta.json: no run's tokens"
        theirs["data/"] = f"data/ ({held}), where the lm task writes the tokens of --data's text files"
    weights = set(traces) & {"config.json", WEIGHTS_NAME, INDEX_NAME}  # a first checkpoint's, set aside with its adapter/
    if adapters and (out / ADAPTER_TRACE).exists() and not weights:
        theirs[ADAPTER_TRACE] = f"{ADAPTER_TRACE}, where each checkpoint of this LoRA run saves its adapters alone"
    if theirs:
        raise FileExistsError(f"{out} holds {'; and '.join(theirs.values())}: this run would write over "
                              f"{'it' if len(theirs) == 1 else 'them'}. Choose another --out, or move {' and '.join(theirs)} "
                              f"away{hint}")


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
    if changed and rt.is_main:
        print(f"warning: resuming with settings that differ from the saved run (saved, now): {changed}", file=sys.stderr)
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
