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
from typing import Any

from tqdm import tqdm

# Seconds between a bar's redraws into a file or pipe: a few lines per hour of training, not one per step.
LOG_REFRESH_S = 30.0


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar (the same arguments) that redraws rarely when its stream, `file` (default stderr),
    is a file or pipe. `maxinterval` goes up with `mininterval`: at its default (10 s), tqdm's
    monitor thread would force a redraw of a slow bar every 10 s anyway. tqdm's own settings
    (`TQDM_MININTERVAL`, `TQDM_MAXINTERVAL`), when set, are the user's choice and win."""
    stream = kwargs.get("file") or sys.stderr
    if not is_interactive(stream):
        for name in ("mininterval", "maxinterval"):
            if f"TQDM_{name.upper()}" not in os.environ:
                kwargs.setdefault(name, LOG_REFRESH_S)
    return tqdm(*args, **kwargs)


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
