"""Progress of long work: bars where someone watches, plain lines where the output is kept.

Two ways to show progress:

- **bars** (a terminal, a live JupyterLab session): tqdm bars (``tqdm.auto``: widgets in JupyterLab, text in a
  terminal), and the few lines of ``report`` (a training plan, one line per epoch) printed above them;
- **plain lines** (a notebook executed headless, whose outputs are saved): no widget bars, which a saved
  notebook would show frozen at 0 % (it keeps a widget's view but not its state). ``report`` prints plain lines,
  a bar kept after its loop (``leave=True``) prints a line at most every ``PLAIN_BAR_INTERVAL`` seconds and a
  last one at 100 %, and a bar that would vanish (``leave=False``) is not shown at all.

Plain lines are chosen when

- the environment variable ``FSL_CORE_PROGRESS`` is ``lines``: the notebook runner (``fsl_core.notebooks``)
  sets it for its kernels. ``report`` then starts each line with ``PREFIX``, which the runner forwards to its
  terminal, and ``note`` adds the lines only that terminal needs (one per evaluation);
- or the code runs in a Jupyter kernel started by nbclient, the engine of ``papermill`` (command line or
  ``papermill.execute_notebook``) and of ``jupyter nbconvert --execute``: nbclient starts IPython kernels with
  the argument ``HEADLESS_KERNEL_ARGUMENT`` (an in-memory history: nobody types into such a kernel), which a
  kernel started by JupyterLab or a console never has;
- or, outside any Jupyter kernel, standard error is not a terminal (``fsl-train ... > log 2>&1``, a pipe, a
  batch job): tqdm's bars would fill the file with carriage returns and cursor codes.

``FSL_CORE_PROGRESS=bars`` asks for bars everywhere (a headless kernel included).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
from typing import Any

ENVIRONMENT = "FSL_CORE_PROGRESS"
"""The environment variable that chooses how progress is shown: ``"lines"`` or ``"bars"`` (unset: automatic)."""
LINES = "lines"
BARS = "bars"
PREFIX = "[fsl_core] "
"""The start of every progress line printed for the notebook runner: the runner forwards exactly these lines."""
PLAIN_BAR_INTERVAL = 60.0
"""Seconds between two lines of a plain-text bar (its end is always shown)."""
HEADLESS_KERNEL_ARGUMENT = "--HistoryManager.hist_file=:memory:"
"""The argument nbclient (papermill, ``jupyter nbconvert --execute``) gives the IPython kernels it starts."""

_lock = threading.Lock()


def _asked() -> str:
    return os.environ.get(ENVIRONMENT, "").strip().lower()


def runner_lines() -> bool:
    """True in a kernel of the notebook runner (``FSL_CORE_PROGRESS=lines``): lines carry ``PREFIX``."""
    return _asked() == LINES


def headless_kernel() -> bool:
    """True in a Jupyter kernel started by nbclient (papermill, ``jupyter nbconvert --execute``), whose
    outputs are saved into a notebook file rather than watched."""
    return "ipykernel" in sys.modules and HEADLESS_KERNEL_ARGUMENT in sys.argv


def jupyter_kernel() -> bool:
    """True in a Jupyter kernel, whoever started it (JupyterLab, a console, nbclient)."""
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    launcher = bool(sys.argv) and os.path.basename(sys.argv[0]) == "ipykernel_launcher.py"
    return getattr(shell, "kernel", None) is not None or launcher


def redirected_output() -> bool:
    """True outside a Jupyter kernel when standard error, where tqdm draws, is not a terminal (a file, a
    pipe)."""
    if jupyter_kernel():
        return False
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return True


def plain_lines() -> bool:
    """True when progress is shown as plain lines: under the notebook runner, in a notebook executed headless,
    or with the output going to a file or a pipe (unless ``FSL_CORE_PROGRESS=bars``)."""
    asked = _asked()
    if asked in (LINES, BARS):
        return asked == LINES
    return headless_kernel() or redirected_output()


def report(text: str) -> None:
    """Print one progress line to stdout: with ``PREFIX`` for the notebook runner, plain in another headless
    kernel, else above any tqdm bars."""
    if runner_lines():
        with _lock:
            print(PREFIX + text, flush=True)
    elif plain_lines():
        with _lock:
            print(text, flush=True)
    else:
        from tqdm.auto import tqdm as auto

        auto.write(text, file=sys.stdout)


def note(text: str) -> None:
    """``report`` a line for the notebook runner's terminal only: for what a bar or a printed table shows
    elsewhere."""
    if runner_lines():
        report(text)


@functools.cache
def _plain_bar_class() -> type:
    """tqdm's text bar that prints whole lines: no carriage returns, no line for the untouched start (0 %),
    at most one line per ``mininterval`` seconds, and its last state once when it closes."""
    from tqdm.std import tqdm as text

    class PlainBar(text):
        _printed: float | None = None

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            closing = self.disable  # close() sets it before the last display
            if msg is not None or (self.n == 0 and not closing) or self._printed == self.n:
                return True
            self._printed = self.n
            self.fp.write(self.__str__() + "\n")
            self.fp.flush()
            return True

        def close(self) -> None:
            if getattr(self, "disable", True):
                return
            leave = self.leave if self.leave is not None else abs(self.pos) == 0
            self.disable = True
            self._decr_instances(self)
            if leave and hasattr(self, "last_print_t"):
                with self._lock:
                    self.display()

        def clear(self, nolock: bool = False) -> None:
            pass  # lines are never taken back

        def moveto(self, n: int) -> None:
            pass  # each line is printed where the output stands

    return PlainBar


def tqdm(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm``; in plain-lines mode a text bar on stdout that prints a line at most every
    ``PLAIN_BAR_INTERVAL`` seconds and a last one at the end (100 % when the loop ran through), or no bar at
    all for one that would vanish (``leave=False``)."""
    if not plain_lines():
        from tqdm.auto import tqdm as auto

        return auto(iterable, *args, **kwargs)
    if not kwargs.get("leave", True):
        kwargs["disable"] = True
    kwargs.setdefault("file", sys.stdout)
    kwargs.setdefault("ncols", 100)
    kwargs.setdefault("mininterval", PLAIN_BAR_INTERVAL)
    kwargs.setdefault("maxinterval", PLAIN_BAR_INTERVAL)
    return _plain_bar_class()(iterable, *args, **kwargs)


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


def format_bytes(count: float) -> str:
    """A size in decimal units: ``512 B``, ``84.7 kB``, ``21.2 MB``, ``1.9 GB``."""
    for unit in ("B", "kB", "MB"):
        if count < (999.5 if unit == "B" else 999.95):
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"
