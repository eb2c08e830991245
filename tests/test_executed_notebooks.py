"""Executed notebooks read well: a notebook run headless, by the runner or by papermill itself, keeps its
progress as plain text (one line per epoch, bars that end at 100 %), never as widget bars frozen at 0 %."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from fsl_core.notebooks import notebooks_dir
from fsl_core.progress import (
    ENVIRONMENT,
    HEADLESS_KERNEL_ARGUMENT,
    PREFIX,
    headless_kernel,
    plain_lines,
    report,
    tqdm,
)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BAR = re.compile(r"^(?P<desc>.*?):?\s*(?P<percent>\d+)%\|")


def bar_lines(text: str) -> dict[str, list[int]]:
    """{bar description: the percentages its lines show, in order} of printed text."""
    bars: dict[str, list[int]] = {}
    for line in text.splitlines():
        match = BAR.match(line)
        if match:
            bars.setdefault(match["desc"], []).append(int(match["percent"]))
    return bars


@pytest.fixture
def headless(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as a kernel that nbclient (papermill) started, without the runner's variable."""
    import ipykernel  # noqa: F401 -- in sys.modules, as in every kernel

    monkeypatch.delenv(ENVIRONMENT, raising=False)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json", HEADLESS_KERNEL_ARGUMENT])


def test_a_kernel_started_by_papermill_gets_plain_lines(
    headless: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert headless_kernel() and plain_lines()
    report("epoch 1/2: loss 1.5000")
    assert sum(tqdm(range(7), desc="drawing bird species", unit="class")) == 21
    assert sum(tqdm(range(7), desc="episodes", leave=False)) == 21  # a bar that would vanish: not shown
    out = capsys.readouterr().out
    assert "\r" not in out and PREFIX not in out and "episodes" not in out
    assert out.splitlines()[0] == "epoch 1/2: loss 1.5000"  # plain: no prefix, nobody forwards it
    assert bar_lines(out) == {"drawing bird species": [100]}  # no 0 % line, one at the end
    # an interrupted loop ends its bar where it stopped
    bar = tqdm(total=5, desc="copying", mininterval=0, maxinterval=0)
    bar.update(2)
    bar.close()
    assert bar_lines(capsys.readouterr().out) == {"copying": [40]}
    # a kernel of JupyterLab (no such argument) keeps the bars; FSL_CORE_PROGRESS=bars asks for them anywhere
    monkeypatch.setenv(ENVIRONMENT, "bars")
    assert not plain_lines()
    monkeypatch.delenv(ENVIRONMENT)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    assert not headless_kernel() and not plain_lines()


def test_a_notebook_executed_by_papermill_keeps_its_progress_as_plain_text(
    birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """papermill called directly (not through fsl_core.notebooks): no widget bars, no 0 % bars, the plan and one
    line per epoch, equal to metrics.csv."""
    monkeypatch.delenv(ENVIRONMENT, raising=False)  # the kernel inherits the environment
    executed = tmp_path / "02_train.ipynb"
    papermill.execute_notebook(
        str(notebooks_dir() / "02_train.ipynb"),
        str(executed),
        parameters=dict(
            data_root=str(birds),
            run_dir=str(tmp_path / "run"),
            image_size=32,
            epochs=2,
            episodes_per_epoch=2,
            query=2,
            val_every=1,
            val_episodes=3,
            val_query=2,
            test_episodes=3,
            test_shots=[1],
            test_query=2,
            threads=1,
        ),
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    notebook = nbformat.read(executed, as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "\r" not in text and PREFIX not in text
    assert not re.search(r"\b0%\|", text)
    assert all(percents[-1] == 100 for percents in bar_lines(text).values())
    lines = text.splitlines()
    assert any(line.startswith("plan: hmdrn on conv4, protocol 'quick'") for line in lines)
    epochs = [line for line in lines if line.startswith("epoch ")]
    metrics = pd.read_csv(tmp_path / "run" / "train" / "metrics.csv")
    assert len(epochs) == len(metrics) == 2  # one line per epoch
    for line, row in zip(epochs, metrics.itertuples()):
        assert line.startswith(
            f"epoch {row.epoch}/2: loss {row.loss:.4f}, train {row.train_acc:.2f} %, "
            f"val {row.val_acc:.2f} ± {row.val_ci95:.2f} %"
        ), line
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and (tmp_path / "run" / "curves.png").is_file()  # the training curves
    assert io.BytesIO(images[0]["data"]["image/png"].encode()).getbuffer().nbytes > 1000
