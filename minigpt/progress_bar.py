"""Every progress bar minigpt shows (training, prepare, BPE training, eval windows, download,
generate, a classifier's evaluation) is made here, so that one rule decides how often it redraws.

On a terminal (or in a notebook's cell) a bar redraws itself in place (a carriage return, then
the new state) every 0.1 s, tqdm's default. Redirected to a file (`minigpt train ... 2> train.log`,
a batch job's log), each of those redraws is kept: one per step, for a run whose steps take
longer than 0.1 s. There a bar redraws at most every LOG_REFRESH_S seconds (a larger tqdm
`mininterval`), and still writes its first and last states, so the log shows where a run got to
and when. A caller that changes what a bar shows passes
`refresh=False` (`set_postfix(..., refresh=False)`): tqdm's default redraws at once, whatever
`mininterval` says.
"""
from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from tqdm import tqdm

from minigpt.checks import check_flag

# Seconds between a bar's redraws into a file or pipe: a few lines per hour of training, not one per step.
LOG_REFRESH_S = 30.0


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar (the same arguments) that redraws rarely when its stream, `file` (default stderr),
    is a file or pipe. `maxinterval` goes up with `mininterval`: at its default (10 s), tqdm's
    monitor thread would force a redraw of a slow bar every 10 s anyway. tqdm's own settings
    (`TQDM_MININTERVAL`, `TQDM_MAXINTERVAL`), when set, are the user's choice and win; so does
    `TQDM_DISABLE`, over a caller's `disable=` too (`quiet_by_env`)."""
    if quiet_by_env():
        kwargs["disable"] = True
    stream = kwargs.get("file") or sys.stderr
    if not is_interactive(stream):
        for name in ("mininterval", "maxinterval"):
            if f"TQDM_{name.upper()}" not in os.environ:
                kwargs.setdefault(name, LOG_REFRESH_S)
    return tqdm(*args, **kwargs)


def quiet_by_env() -> bool:
    """Whether `TQDM_DISABLE` asks for no bars at all. tqdm reads its TQDM_* variables as defaults
    only, so a caller's explicit `disable=not progress` (train, eval, BPE training) would beat it
    and the bar would draw. The value is read as tqdm reads it: its default's type (bool) applied
    to the string, so any non-empty value disables, "0" and "false" too; unset or empty does not."""
    return bool(os.environ.get("TQDM_DISABLE", ""))


def is_interactive(stream: Any) -> bool:
    """Whether `stream` shows a bar redrawn in place: a terminal, or a Jupyter notebook's output
    (ipykernel's stream says it is no terminal, yet its cell shows the latest state). A stream
    without isatty (some wrappers), or a closed one, counts as a file."""
    from minigpt.cli import Guarded

    stream = stream.stream if isinstance(stream, Guarded) else stream  # (a command's sys.stdout/stderr)
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # ValueError: isatty on a closed file
        return False


def given_or_new_bar(progress: bool | tqdm, **bar: Any) -> AbstractContextManager[tqdm]:
    """The bar that a `progress` argument asks for (`generate_texts`', `perplexity`'s), to update
    inside a `with`: True, a new one (`progress_bar(**bar)`); False, a disabled one (its updates draw
    nothing); a tqdm bar, that bar itself, moved on and left open, its total the caller's, so that
    several calls can share one. Anything else is a TypeError here: "yes" would read as True, and a
    bar given with no total cannot even be tested for truth (tqdm raises). The bool is checked as
    every bool-only `progress` is (`check_flag`: Tokenizer.train, train_loop, ...), with the same
    message, so a slip reads alike wherever it is made."""
    if isinstance(progress, tqdm):  # first: a tqdm is no bool (and bool() of one may raise)
        return nullcontext(progress)
    check_flag("progress", progress)
    return progress_bar(disable=not progress, **bar)
