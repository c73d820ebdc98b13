"""A run's directory (OUT_DIR): its checkpoints and the state for exact resume.

Where it sits: `train_loop` (minigpt/train.py) trains; this file is what it leaves on disk (the
log and its loss curve: minigpt/run_log.py), and the checks on OUT_DIR before a run starts;
minigpt/resume.py reads the saved state back and checks that a resume can go on from it. Every
file is written atomically (minigpt/files.py's `atomic_path`), so a crash at any moment leaves
the previous version whole, never half of a new one; log.jsonl alone is appended a record at a
time, and `read_log` drops a torn last record.

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

import errno
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from minigpt.config import INDEX_NAME, STATE_FILE, WEIGHTS_NAME
from minigpt.files import atomic_path, atomic_write_text, file_lock, no_follow, read_json, stored_path
from minigpt.run_log import LOG_FILE, PLOT_FILE, is_opening, plain_config, read_log
from minigpt.tokenizer_files import TOKENIZER_FILES

if TYPE_CHECKING:  # type hints only: train.py and train_config.py import this module
    from minigpt.tokenizer import Tokenizer
    from minigpt.train_config import TrainConfig

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
