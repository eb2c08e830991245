"""Progress: the training plan, one line per epoch with the time left, one per evaluation; bars where
someone watches them, plain lines (``FSL_CORE_PROGRESS=lines``) where output is kept."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, cli_command

from fsl_core.data import FewShotFolder
from fsl_core.engine import evaluate, train
from fsl_core.models import build_model
from fsl_core.progress import ENVIRONMENT, PREFIX, format_duration, note, report, tqdm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain-lines mode, as in a kernel of the notebook runner."""
    monkeypatch.setenv(ENVIRONMENT, "lines")


def test_durations_read_at_their_size() -> None:
    assert [format_duration(s) for s in (0.42, 9.9, 45, 89.6, 600, 5399, 3 * 3600 + 5 * 60, 50 * 3600)] == [
        "0.4 s",
        "9.9 s",
        "45 s",
        "90 s",
        "10 min",
        "90 min",
        "3 h 05 min",
        "2 d 2 h",
    ]
    assert format_duration(float("nan")) == "unknown"


def test_report_and_note(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENVIRONMENT, "bars")  # a terminal: the line goes above the bars
    report("epoch 1/2")
    note("only for the runner")
    assert capsys.readouterr().out == "epoch 1/2\n"
    monkeypatch.delenv(ENVIRONMENT)  # output kept in a file (pytest captures it): a plain line
    report("epoch 1/2")
    note("only for the runner")
    assert capsys.readouterr().out == "epoch 1/2\n"
    monkeypatch.setenv(ENVIRONMENT, "lines")
    report("epoch 1/2")
    note("evaluation")
    assert capsys.readouterr().out == f"{PREFIX}epoch 1/2\n{PREFIX}evaluation\n"


def test_plain_bars_end_at_100_percent_and_inner_bars_vanish(
    lines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sum(tqdm(range(4), desc="drawing", unit="class")) == 6
    assert sum(tqdm(range(4), desc="episodes", leave=False)) == 6
    out = capsys.readouterr().out
    final = out.split("\r")[-1]
    assert final.startswith("drawing: 100%") and "4/4" in final and final.endswith("\n")
    assert "episodes" not in out and "\x1b" not in out  # plain text


def test_training_prints_its_plan_and_one_line_per_epoch(
    lines: None, birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "progress": True})
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert all(line.startswith(PREFIX) for line in out)
    out = [line[len(PREFIX) :] for line in out]
    assert out[:6] == [
        "plan: hmdrn on conv4, protocol 'quick' (a short CPU demonstration)",
        f"  data: {birds}, 16 px",
        "  training: 3-way 1-shot 2-query episodes, 3 per epoch ('fixed' sampler), epochs 1 to 3; "
        "SGD lr 0.05, cosine schedule restarting every 3 epochs",
        "  validation: every 2 epochs and after the last, on 6 3-way 1-shot 2-query episodes",
        "  device: cpu, 1 CPU thread (as asked)",
        f"  run folder: {run_dir}",
    ]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    epochs = out[6:]
    assert len(epochs) == len(metrics) == 3
    for line, row in zip(epochs, metrics.itertuples()):
        expected = f"epoch {row.epoch}/3: loss {row.loss:.4f}, train {row.train_acc:.2f} %"
        if row.epoch > 1:  # validated at epochs 2 and 3
            expected += f", val {row.val_acc:.2f} ± {row.val_ci95:.2f} %"
        assert line.startswith(expected + ", "), (line, expected)
    # the time left: after epoch 1 the validations are not timed yet, after epoch 2 they are
    assert re.search(r"; about [\d.]+ s left, plus 2 validations not timed yet$", epochs[0])
    assert re.search(r"; about [\d.]+ s left$", epochs[1])
    assert "left" not in epochs[2]
    assert "epoch" not in captured.err  # no bars in plain-lines mode
    # validated after the last epoch only: said in full once, then briefly
    train(data_root=str(birds), run_dir=str(tmp_path / "end"), **{**TINY, "progress": True, "val_every": 3})
    ends = [line for line in capsys.readouterr().out.splitlines() if line.startswith(PREFIX + "epoch ")]
    assert re.search(r"; about [\d.]+ s left, plus 1 validation not timed yet$", ends[0])
    assert re.search(r"; about [\d.]+ s left \+ 1 validation$", ends[1]) and "left" not in ends[2]


def test_the_plan_names_the_authors_protocol_and_the_way_to_a_short_run(
    birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With bars, as in a terminal: the plan and the epoch lines above them on stdout, the bars on stderr."""
    monkeypatch.setenv(ENVIRONMENT, "bars")
    settings = {k: v for k, v in TINY.items() if k not in ("protocol", "sampler", "progress", "epochs")}
    train(
        data_root=str(birds), run_dir=str(tmp_path / "a"), protocol="authors", stop_after_epochs=1, **settings
    )
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0] == (
        "plan: hmdrn on conv4, protocol 'authors' (the HMDRN authors' protocol; protocol 'quick' trains a "
        "short run)"
    )
    assert out[2].startswith("  training: 3-way 1-shot 2-query episodes, ") and "'epoch' sampler" in out[2]
    assert "epochs 1 to 1,200" in out[2] and "restarting every 400 epochs" in out[2]
    assert out[6].startswith("epoch 1/1200: loss ")
    assert re.search(r"; about .+ left", out[6])
    assert "epochs:" in captured.err and "\r" in captured.err  # the bars, drawn in place


def test_an_evaluation_prints_one_line_for_the_runner(
    lines: None, tiny_birds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = FewShotFolder(tiny_birds, "test", transform="eval", image_size=16)
    model = build_model("protonet", "conv4")
    result = evaluate(model, data, way=3, shot=1, query=2, episodes=5, seed=0, device="cpu")
    out = capsys.readouterr().out
    assert out.startswith(
        f"{PREFIX}evaluation of protonet 3-way 1-shot 2-query, 5 episodes: {result.mean:.2f} ± {result.ci95:.2f} % ("
    )
    assert out.count("\n") == 1
    evaluate(model, data, way=3, shot=1, query=2, episodes=5, seed=0, device="cpu", progress=False)
    assert capsys.readouterr().out == ""


def test_a_long_epoch_reports_its_episodes_in_plain_lines_mode(
    lines: None,
    birds: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = sys.modules["fsl_core.engine.train"]  # the module (fsl_core.engine.train is the function)
    monkeypatch.setattr(engine, "PLAIN_BAR_INTERVAL", 0.0)  # a line after every episode
    run_dir = tmp_path / "run"
    train(
        data_root=str(birds), run_dir=str(run_dir), **{**TINY, "progress": True, "epochs": 1, "val_every": 0}
    )
    beats = [line[len(PREFIX) :] for line in capsys.readouterr().out.splitlines() if "so far" in line]
    loss = pd.read_csv(run_dir / "metrics.csv")["loss"].iloc[0]
    assert [beat.split(",")[0] for beat in beats] == [f"epoch 1/1: episode {e}/3" for e in (1, 2, 3)]
    assert beats[-1] == f"epoch 1/1: episode 3/3, loss {loss:.4f} so far"  # the epoch's mean loss


def test_a_command_line_run_into_a_file_writes_plain_lines(birds: Path, tmp_path: Path) -> None:
    """``fsl-train ... > log 2>&1``: the plan and one line per epoch, no bar's carriage returns or cursor codes;
    outside a kernel a terminal keeps the bars, and FSL_CORE_PROGRESS decides over both."""
    import os
    import subprocess

    from fsl_core import progress

    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    command = cli_command(run_dir, birds, progress=True)
    environment = {key: value for key, value in os.environ.items() if key != ENVIRONMENT}
    with log.open("w") as out:
        subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env=environment, check=True, timeout=300
        )
    text = log.read_text()
    assert "\r" not in text and "\x1b[" not in text, text
    lines = text.splitlines()
    assert "plan: hmdrn on conv4, protocol 'quick' (a short CPU demonstration)" in lines
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]
    assert not progress.jupyter_kernel()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(ENVIRONMENT, raising=False)
        patch.setattr(sys, "stderr", type("File", (), {"isatty": staticmethod(lambda: False)})())
        assert progress.redirected_output() and progress.plain_lines()
        patch.setattr(sys, "stderr", type("Terminal", (), {"isatty": staticmethod(lambda: True)})())
        assert not progress.plain_lines()
        patch.setenv(ENVIRONMENT, "lines")
        assert progress.plain_lines()


def test_generating_the_birds_set_is_one_line_for_the_runner(
    lines: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fsl_core.data import ensure_birds

    settings = dict(image_size=16, images_per_class=3, groups=3, species_per_group=3)
    ensure_birds(tmp_path / "birds", workers=1, **settings)
    out = capsys.readouterr().out
    assert out.startswith(
        f"{PREFIX}generating the embedded birds set into {tmp_path / 'birds'} (once; later runs reuse it)\n"
    )
    ensure_birds(tmp_path / "birds", workers=1, **settings)  # reused: nothing said
    assert "generating" not in capsys.readouterr().out
