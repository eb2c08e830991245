"""TensorBoard event files beside metrics.csv (the ``tracking`` extra): the same numbers as metrics.csv, after a
resume too, and a training that does exactly the same without them."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, assert_same_run

from fsl_core.engine import train
from fsl_core.engine.tracking import EVENT_FILE_PREFIX, TensorBoardLog, tensorboard_tag

pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
pytestmark = pytest.mark.usefixtures("one_thread")


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard reads the run folder (restart marks applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_scalars_equal_metrics(run_dir: Path) -> None:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    scalars = tensorboard_scalars(run_dir)
    expected = {}
    for column in metrics.columns.drop("epoch"):
        rows = metrics[["epoch", column]].dropna()
        if len(rows):
            expected[tensorboard_tag(column)] = (rows["epoch"].tolist(), rows[column].tolist())
    assert sorted(scalars) == sorted(expected)
    for tag, (steps, values) in expected.items():
        assert [step for step, _ in scalars[tag]] == steps, tag
        assert [value for _, value in scalars[tag]] == pytest.approx(values, rel=1e-6, abs=1e-9), tag


def test_training_writes_the_rows_of_metrics_csv_as_tensorboard_scalars(reference_run: Path) -> None:
    assert len(list(reference_run.glob(EVENT_FILE_PREFIX + "*"))) == 1
    assert_scalars_equal_metrics(reference_run)
    tags = set(tensorboard_scalars(reference_run))
    assert {
        "loss/train",
        "accuracy/train",
        "accuracy/val",
        "learned_scalars/w_last",
        "learned_scalars/gamma",
    } <= tags
    # validated at epochs 2 and 3 only (TINY: val_every=2, 3 epochs)
    assert [step for step, _ in tensorboard_scalars(reference_run)["accuracy/val"]] == [2, 3]


def test_a_resumed_run_shows_metrics_csv_exactly(
    birds: Path, tmp_path: Path, reference_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    train(data_root=str(birds), run_dir=str(run_dir), stop_after_epochs=1, **TINY)
    with monkeypatch.context() as patch:  # stopped after saving epoch 2, before its scalars were written
        replay = TensorBoardLog.write  # the rows of the epochs done, written when the file opens

        def write(self: TensorBoardLog, row: dict, flush: bool = True) -> None:
            if not flush:
                replay(self, row, flush)

        patch.setattr(TensorBoardLog, "write", write)
        train(data_root=str(birds), run_dir=str(run_dir), stop_after_epochs=1, **TINY)
    assert [step for step, _ in tensorboard_scalars(run_dir)["loss/train"]] == [1]
    train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    assert len(list(run_dir.glob(EVENT_FILE_PREFIX + "*"))) == 3  # one per call that trained
    assert_same_run(reference_run, run_dir)
    assert_scalars_equal_metrics(run_dir)  # epoch 1 and 2 written again after the restart mark, then 3
    # a finished run is returned as it is: no new event file
    before = sorted(p.name for p in run_dir.iterdir())
    train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_training_is_the_same_without_tensorboard(
    birds: Path, tmp_path: Path, reference_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    from fsl_core.engine.tracking import tensorboard_available

    assert not tensorboard_available()
    run_dir = tmp_path / "run"
    train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    assert not list(run_dir.glob(EVENT_FILE_PREFIX + "*"))
    assert_same_run(reference_run, run_dir)
