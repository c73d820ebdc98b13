"""A run's log.jsonl and loss.png: what a run writes as it goes, for people and plots to read.

Where it sits: `train_loop` (minigpt/train.py) appends a record at each log and evaluation step
(`append_log`), and one at each start and resume (`opening_record`: the run's provenance); the
curves are drawn from the log at each checkpoint (`plot_log`). The checkpoints, and what
--resume reads back, are minigpt/run_dir.py's and minigpt/resume.py's; --resume cuts the log back to the checkpoint it
resumes from (`truncate_log`), so the log never holds steps the run threw away.

log.jsonl is JSON Lines, one object per line, each with its "step":
    {"step": 200, "loss": 3.1, "lr": 0.0006, "tokens_per_s": ...}        a log step's train loss
    {"step": 200, "val_loss": 3.3, "val_ppl": 27.1, ...}                  an evaluation
    {"step": 0, "run": "start", "config": {...}, "git": ..., ...}        a start's or resume's record
A float16 run's log steps also hold "skipped_steps" (those since the record before, whose update its
loss scaler skipped) and "loss_scale". A number that is not finite (a skipped step's gradient norm, a
NaN val loss) is written as null: Python's json would write NaN or Infinity, which strict JSON readers
(jq, JavaScript's JSON.parse) refuse.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from minigpt import __version__
from minigpt.config import LOG_FILE
from minigpt.files import atomic_path, atomic_write_text, json_line, no_follow, read_text, stored_path

if TYPE_CHECKING:  # type hints only
    from matplotlib.figure import Figure

    from minigpt.train_runtime import Runtime

PLOT_FILE = "loss.png"


def plain_config(cfg) -> dict:
    """cfg's settings by name, in plain types. torch.load(weights_only=True), like JSON, reads back
    plain types only: a Path (the Python API takes one for out, data or init) is kept as its string,
    or the run could never be resumed."""
    return {k: plain(v) for k, v in asdict(cfg).items()}


def plain(value):
    """A setting's value as a string if it is a path, else as it is."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value



def append_log(out: Path, record: dict) -> None:
    """Append `record` to the run's log.jsonl, which is refused if it is a symbolic link (`no_follow`):
    one planted in the run's folder would have every record appended to the file it points at."""
    with open(out / LOG_FILE, "a", encoding="utf-8", newline="", opener=no_follow) as f:  # "\n" on every system, as atomic_write_text
        f.write(json_line(record) + "\n")


def opening_record(cfg, rt: Runtime, step: int, changed: dict | None, loss_unit: str | None = None) -> dict:
    """The log record that opens a start (`changed` None) or a resume (`changed`: the settings it
    changed from the saved run's, {name: (saved, now)}, as `restore` returns them) at `step`.
    `loss_unit` is what the loss is measured in ("nats/token", "nats per text"), or None where
    train_loop does not know (a loss of its caller's): loss.png's axis says it (`logged_loss_unit`).

    It is the run's readable provenance: training_state.pt holds only the latest settings (a
    resume with new flags rewrites them), in a pickle, so the log says how each stretch of steps
    was run: with the settings of the record before it, in what code (minigpt's version, and its
    git commit when run from a checkout), on what machine. "threads" is torch's intra-op thread
    count, which a CPU run needs again to resume bitwise (a matmul splits its sums by it). A
    record holds no loss: every reader of the log tells it by its "run" key (`is_opening`).
    """
    # The settings, not the process's command line: a script that runs many trainings (a sweep) has
    # one argv for all of them, which holds none of their flags and may hold its own secrets.
    record = {"step": step, "run": "start" if changed is None else "resume", "command": cfg.COMMAND,
              "config": plain_config(cfg), "loss_unit": loss_unit}
    if changed is not None:
        record["changed"] = {name: [plain(saved), plain(now)] for name, (saved, now) in changed.items()}
    device = str(rt.device)
    if rt.device.type == "cuda":  # which GPU: an index alone says nothing once the job is gone
        device += f" ({torch.cuda.get_device_name(rt.device)})"
    return {**record, "minigpt": __version__, "git": git_commit(), "torch": torch.__version__, "device": device,
            "dtype": str(rt.dtype).removeprefix("torch."), "threads": torch.get_num_threads(), "world_size": rt.world,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def is_opening(record: dict) -> bool:
    """Whether a log record is a start's or a resume's (`opening_record`), not a step's."""
    return "run" in record


# The folder minigpt/ sits in: a git checkout's top when minigpt runs from one.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def git_commit(root: Path = PACKAGE_PARENT) -> str | None:
    """The commit checked out at `root`, with "-dirty" when the package's tracked files (minigpt/)
    differ from it; None when it cannot be read: `root` is not the top of a git checkout (minigpt
    installed from a wheel, whose site-packages may even lie inside another project's repository),
    or git is missing, refuses the checkout (another user's: "dubious ownership") or fails.
    Provenance is a side matter: it never stops a run."""
    try:
        top, commit = git(root, "rev-parse", "--show-toplevel", "HEAD").splitlines()  # (a path may hold spaces)
        if Path(top).resolve() != root.resolve():
            return None
        # The code that ran: the package's tracked files, not a checkpoint or a script beside it.
        dirty = git(root, "status", "--porcelain", "--untracked-files=no", "--", "minigpt")
    except (OSError, subprocess.SubprocessError, ValueError):  # no git, not a checkout, a slow disk, odd output
        return None
    return commit + ("-dirty" if dirty else "")


def git(root: Path, *args: str) -> str:
    """git's output for `args`, run in `root`; CalledProcessError when it fails. Without optional
    locks: `git status` would otherwise refresh the index, racing the user's own git commands."""
    return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                          check=True, timeout=10).stdout


def read_log(out: Path) -> list[dict]:
    """The records in OUT_DIR/log.jsonl, without a torn last one.

    Each record is appended as one line ending in "\\n", so a crash mid-write can only leave a
    last line without its newline: that half record is dropped (resume writes it again). Any
    other line that is not a record was damaged by something else, and is a ValueError naming
    the file and the line (json's own error names neither).
    """
    path = out / LOG_FILE
    *complete, _torn = read_text(path).split("\n")  # _torn is "" after a whole record
    records = []
    for lineno, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
        except ValueError:  # not JSON
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}, line {lineno}, is not a log record (a JSON object with its step): "
                             f"{line[:80]!r}. The log is damaged: mend or delete that line (the checkpoint's training "
                             "state, not the log, holds what --resume needs)")
        records.append(record)
    return records


def evaluated_at(out: Path, step: int) -> bool:
    """Whether OUT_DIR's log records an evaluation of `step` (a run without a log: none)."""
    return (out / LOG_FILE).exists() and any(r["step"] == step and "val_loss" in r for r in read_log(out))


def reported_at(out: Path, step: int) -> dict:
    """What the run reported at `step`, as the log records it: its training record's and its
    evaluation's metrics, merged as the loop merges them (the result line of a run that ended
    there), for a resume that finds the run already done; {"step": step} where the log has none."""
    merged = {"step": step}
    for r in read_log(out) if (out / LOG_FILE).exists() else []:
        if r["step"] == step and not is_opening(r) and not r.get("best_reset"):
            merged.update(r)
    return merged


def records_of_state(out: Path, step: int) -> list[dict]:
    """The log's records that a checkpoint saved at `step` stands on: those before its step, and
    those at it but a best_reset mark. A mark there is a resume's from this same checkpoint that
    died before its next one: stale, as best/ is what that checkpoint left. Records past the step
    are a run's that died before saving them: a resume writes them again. (A resume's opening
    record at the step stays, stale or not: the log keeps each try of the run, and the last one
    before the steps that follow is the one they ran under.)"""
    if not (out / LOG_FILE).exists():
        return []
    return [r for r in read_log(out) if r["step"] < step or (r["step"] == step and not r.get("best_reset"))]


def truncate_log(out: Path, step: int) -> list[dict]:
    """On resume, keep the log's records that the checkpoint at `step` stands on (`records_of_state`),
    and return them: the resume reads its notes from them, not from a second read of the log."""
    records = records_of_state(out, step)
    if (out / LOG_FILE).exists():
        atomic_write_text(out / LOG_FILE, "".join(json_line(r) + "\n" for r in records))
    return records


def comparable_evaluations(records: list[dict]) -> list[dict]:
    """The evaluations (records with a val_loss) since the log's last best_reset mark: the ones a
    best val loss is chosen among, as they alone are comparable (other val data, or val loss
    measured otherwise, came before the mark). An evaluation whose val loss was NaN or inf (logged
    as null) is none of them: it is never the best, and min() cannot compare None."""
    since = max((i for i, r in enumerate(records) if r.get("best_reset")), default=-1)
    return [r for r in records[since + 1:] if r.get("val_loss") is not None]


# Why loss.png was skipped, each cause said once (`plot_log`), not at every evaluation of the run.
_curve_skipped: set[str] = set()


def plot_log(out: Path) -> None:
    """Draw train and val loss against step from log.jsonl into loss.png, and a classifier's val
    accuracy on a second axis (its loss is per text, not per token).

    The curve is a side product (log.jsonl holds its numbers): without matplotlib, or when drawing
    or saving it fails, a warning says so once and the run trains on, where it died at its first
    evaluation with a traceback."""
    records = read_log(out)  # (a damaged log is no side matter: --resume reads it)
    try:
        draw_curves(records, out)
    except Exception as e:  # ImportError, a broken matplotlib or font cache, a full disk
        cause = f"{type(e).__name__}: {e}"
        if cause not in _curve_skipped:
            _curve_skipped.add(cause)
            # tqdm.write: on a line of its own, above the progress bar (`train_loop`'s), not after it
            tqdm.write(f"warning: {out / PLOT_FILE} is not drawn ({cause}); the run goes on, and {LOG_FILE} holds the "
                       "losses", file=sys.stderr)


def logged_loss_unit(opening: dict) -> str | None:
    """The loss unit an opening record (`opening_record`) says: None for a loss whose unit
    train_loop was not told (its caller's own), and loss.png's axis says "loss" alone.

    Logs written by earlier versions say less, and are drawn as they were then: a classify run's
    opening record held no unit (null, or no field), which its task told; any other log older than
    the field is minigpt's own language model's, in nats/token. A null unit under a classify config
    is always read as such an old classify log, so a loss of a caller's own trained under a
    task="classify" config without train_loop's loss_unit is labelled "nats per text" too: name
    its unit there."""
    if opening.get("loss_unit") is None and opening.get("config", {}).get("task") == "classify":
        return "nats per text"  # an old classify log
    return opening.get("loss_unit", "nats/token")  # (no field: an old log)


def draw_curves(records: list[dict], out: Path) -> None:
    """`plot_log`'s drawing: the log's `records` into OUT_DIR/loss.png (`curves`)."""
    # Under a non-UTF-8 locale (LC_ALL=C) Python holds a path's bytes as lone surrogates ("é" is
    # "\udcc3\udca9"), which matplotlib cannot draw: the title is its bytes read as UTF-8.
    fig = curves(records, stored_path(out))
    with atomic_path(out / PLOT_FILE) as tmp, open(tmp, "wb", opener=no_follow) as f:
        fig.savefig(f, dpi=100, format="png")  # the format by name: a file object has no suffix


def curves(records: list[dict], title: str) -> Figure:
    """The log's `records` drawn: train and val loss against step, a classifier's val accuracy on a
    second axis, and a dotted line at each resume. A resume that measures val otherwise (other val
    data or batches: `restore`'s best_reset) starts the val curves over: no line joins points that
    are not comparable.

    It draws on a matplotlib Figure of its own, not through pyplot: pyplot's figures and backend
    are the process's, shared with its caller (a notebook's inline plots, a GUI's plt.show()), and
    matplotlib.use("Agg") would switch that caller's backend for good. A bare Figure needs no
    display, and savefig renders its PNG with Agg whatever the backend; nothing is left open: no
    pyplot registry holds it; the garbage collector frees it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    def plot(axes, key: str, **style) -> None:
        pieces = [[]]  # the points, in the log's order, a new piece after each best_reset mark (val curves)
        for r in records:
            if r.get("best_reset") and key != "loss" and pieces[-1]:  # (train loss: always comparable)
                pieces.append([])
            if r.get(key) is not None:  # (null: NaN or inf)
                pieces[-1].append((r["step"], r[key]))
        for piece in filter(None, pieces):
            (line,) = axes.plot(*zip(*piece), **style)
            style = {**style, "color": line.get_color(), "label": None}  # the same curve, one legend entry

    plot(ax, "loss", label="train")
    plot(ax, "val_loss", label="val", marker="o")
    for i, step in enumerate(r["step"] for r in records if r.get("run") == "resume"):
        ax.axvline(step, color="gray", linestyle=":", linewidth=1, label=None if i else "resume")
    # The unit of the loss the run trains on now, from its last opening record.
    unit = logged_loss_unit(next((r for r in reversed(records) if is_opening(r)), {}))
    ylabel = f"loss ({unit})" if unit else "loss"
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    handles = ax.get_legend_handles_labels()
    if any(r.get("val_accuracy") is not None for r in records):
        right = ax.twinx()
        plot(right, "val_accuracy", color="tab:green", marker="s", label="val accuracy")
        right.set_ylabel("accuracy")
        handles = [a + b for a, b in zip(handles, right.get_legend_handles_labels())]
    ax.legend(*handles)
    ax.grid(alpha=0.3)
    return fig
