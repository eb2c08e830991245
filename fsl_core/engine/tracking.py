"""Live training curves in TensorBoard: event files beside a training run's ``metrics.csv``.

When the package ``tensorboard`` is installed (the optional extra: ``pip install -e ".[tracking]"``), training
(``fsl_core.engine.train``) writes every row of ``metrics.csv`` as TensorBoard scalars into the run folder
(``events.out.tfevents.*``, through ``torch.utils.tensorboard.SummaryWriter``), one step per epoch, right after
the row is saved. ``tensorboard --logdir outputs`` (``make tensorboard``) then shows every run under
``outputs/`` as it trains. ``metrics.csv`` stays the record: the event files are a view of it, and training
does exactly the same with or without them (they take no random numbers and change no setting).

A resumed run opens a new event file that first marks step 1 as a restart (TensorBoard's ``purge_step``: the
steps an earlier file holds are dropped) and then writes the rows of ``metrics.csv`` again, so what
TensorBoard shows always equals ``metrics.csv``, even after an interruption between a save and its scalars.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

EVENT_FILE_PREFIX = "events.out.tfevents."
"""The start of the name of every TensorBoard event file."""

TAGS = {
    "loss": "loss/train",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "val_ci95": "accuracy/val_ci95",
    "lr": "schedule/lr",
    "episodes": "epoch/episodes",
    "seconds": "epoch/seconds",
    "data_seconds": "epoch/data_seconds",
}
"""TensorBoard tag of each ``metrics.csv`` column (accuracies in %, seconds of wall-clock time); a model's
learned scalars (``w_last``, ``gamma``, ``scale``) go under ``learned_scalars/``. Values are stored as 32-bit
floats."""


def tensorboard_tag(column: str) -> str:
    """The TensorBoard tag of a ``metrics.csv`` column."""
    return TAGS.get(column, f"learned_scalars/{column}")


def tensorboard_available() -> bool:
    """True when the package ``tensorboard`` is installed (the ``tracking`` extra)."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog:
    """The TensorBoard event file of one training call in ``run_dir``.

    Args:
        run_dir: the training run folder (claimed by the caller).
        rows: the ``metrics.csv`` rows of the epochs already done (a resumed run): written again after a
            restart mark, so that TensorBoard shows exactly ``metrics.csv``.
    """

    def __init__(self, run_dir: str | Path, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        from torch.utils.tensorboard import SummaryWriter

        rows = list(rows)
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=1 if rows else None)
        for row in rows:
            self.write(row, flush=False)
        self.writer.flush()

    def write(self, row: Mapping[str, Any], flush: bool = True) -> None:
        """One ``metrics.csv`` row (``epoch`` is the step; empty cells are left out)."""
        step = int(row["epoch"])
        for column, value in row.items():
            if column == "epoch" or value is None or not math.isfinite(float(value)):
                continue
            self.writer.add_scalar(tensorboard_tag(column), float(value), global_step=step)
        if flush:
            self.writer.flush()

    def close(self) -> None:
        """Write what is pending and close the file."""
        self.writer.close()


def open_tensorboard_log(
    run_dir: str | Path, rows: Iterable[Mapping[str, Any]] = ()
) -> TensorBoardLog | None:
    """A ``TensorBoardLog`` in ``run_dir`` when ``tensorboard`` is installed, else None."""
    return TensorBoardLog(run_dir, rows) if tensorboard_available() else None


__all__ = [
    "EVENT_FILE_PREFIX",
    "TAGS",
    "TensorBoardLog",
    "open_tensorboard_log",
    "tensorboard_available",
    "tensorboard_tag",
]
