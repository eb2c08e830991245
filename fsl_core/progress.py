"""Progress of long work: bars where someone watches, one plain line per step where output is kept.

Two ways to show progress, chosen by the environment variable ``FSL_CORE_PROGRESS``:

- unset (a terminal, JupyterLab): tqdm bars (``tqdm.auto``: widgets in JupyterLab, text in a terminal), and
  the few lines of ``report`` (a training plan, one line per epoch) printed above the bars;
- ``lines`` (set by the notebook runner for its kernels): no bars that would be saved into the executed
  notebook as frozen widgets. ``report`` prints each line with the prefix ``PREFIX`` to stdout, which the
  runner forwards to its terminal, and ``note`` adds the lines only the runner's terminal needs (one per
  evaluation). A bar kept after its loop (``leave=True``) becomes plain text that ends at 100 %.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any

ENVIRONMENT = "FSL_CORE_PROGRESS"
"""The environment variable that asks for plain progress lines (value ``"lines"``)."""
LINES = "lines"
PREFIX = "[fsl_core] "
"""The start of every progress line printed in plain-lines mode: the runner forwards exactly these lines."""
PLAIN_BAR_INTERVAL = 60.0
"""Seconds between two updates of a plain-text bar (its end is always shown)."""

_lock = threading.Lock()


def plain_lines() -> bool:
    """True when progress is shown as plain lines (``FSL_CORE_PROGRESS=lines``, as under the runner)."""
    return os.environ.get(ENVIRONMENT, "").strip().lower() == LINES


def report(text: str) -> None:
    """Print one progress line to stdout: prefixed with ``PREFIX`` in plain-lines mode, else above any
    tqdm bars."""
    if plain_lines():
        with _lock:
            print(PREFIX + text, flush=True)
    else:
        from tqdm.auto import tqdm as auto

        auto.write(text, file=sys.stdout)


def note(text: str) -> None:
    """``report`` a line in plain-lines mode only: for what a bar or a printed table shows elsewhere."""
    if plain_lines():
        report(text)


def tqdm(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm``; in plain-lines mode a text bar on stdout that is updated at most every
    ``PLAIN_BAR_INTERVAL`` seconds and ends at 100 %, or no bar at all for one that would vanish
    (``leave=False``)."""
    if not plain_lines():
        from tqdm.auto import tqdm as auto

        return auto(iterable, *args, **kwargs)
    from tqdm.std import tqdm as text

    if not kwargs.get("leave", True):
        kwargs["disable"] = True
    kwargs.setdefault("file", sys.stdout)
    kwargs.setdefault("ncols", 100)
    kwargs.setdefault("mininterval", PLAIN_BAR_INTERVAL)
    kwargs.setdefault("maxinterval", PLAIN_BAR_INTERVAL)
    return text(iterable, *args, **kwargs)


def format_duration(seconds: float) -> str:
    """A duration in words of the right size: ``0.4 s``, ``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``."""
    if not math.isfinite(seconds):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h"
