"""Training on two CPU processes with torchrun (DistributedDataParallel over gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fsl_core.engine.tracking import EVENT_FILE_PREFIX, tensorboard_available
from fsl_core.engine.train import parameter_digest
from fsl_core.models import load_model

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")


def _torchrun(birds: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "fsl_core.cli.train",
        "--protocol",
        "quick",
        "--model",
        "hmdrn",
        "--data",
        str(birds),
        "--run-dir",
        str(run_dir),
        "--image-size",
        "16",
        "--way",
        "3",
        "--shot",
        "1",
        "--query",
        "2",
        "--episodes-per-epoch",
        "4",
        "--epochs",
        "2",
        "--val-every",
        "1",
        "--val-way",
        "3",
        "--val-shot",
        "1",
        "--val-query",
        "2",
        "--val-episodes",
        "4",
        "--lr",
        "0.05",
        "--rank-log",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def test_two_processes_train_one_model_on_different_episodes(birds: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    first = _torchrun(birds, run_dir, "--stop-after-epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    # the plan says how the processes share an epoch and its validation
    assert (
        "3-way 1-shot 2-query episodes, 4 per epoch ('fixed' sampler; 2 per process, each step averaging the "
        "gradients of 2 episodes, one per process), epochs 1 to 2" in first.stdout
    )
    assert "on 4 3-way 1-shot 2-query episodes (run by process 0; the others wait for it)" in first.stdout
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1]
    # the second launch resumes from last.pt on both processes, each keeping the training images in memory
    # and making the augmented images on its device (the loader's images: a run may switch path when resumed)
    second = _torchrun(birds, run_dir, "--images-in-memory", "--augment-on-device", "--no-progress")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "epochs: 2/2" in second.stdout

    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # identical parameters on both processes, and identical to what rank 0 saved
    assert ranks[0]["parameters_sha256"] == ranks[1]["parameters_sha256"]
    assert parameter_digest(load_model(run_dir / "last.pt")) == ranks[0]["parameters_sha256"]
    # each process trained epoch 2 on its own 2 of the epoch's 4 episodes
    episodes = [[tuple(e["indices"]) for e in r["episodes"]] for r in ranks]
    assert [len(e) for e in episodes] == [2, 2] and not set(episodes[0]) & set(episodes[1])
    assert {e["epoch"] for r in ranks for e in r["episodes"]} == {2}

    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and metrics["episodes"].tolist() == [4, 4]
    assert metrics["val_acc"].notna().all()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world_size"] == 2 and config["resumed_at_epoch"] == 1
    # only rank 0 writes the run files (and TensorBoard's, when it is installed)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(EVENT_FILE_PREFIX)) == [
        ".lock",
        "best.pt",
        "config.json",
        "last.pt",
        "metrics.csv",
        "rank0.json",
        "rank1.json",
        "run.json",
    ]
    events = list(run_dir.glob(EVENT_FILE_PREFIX + "*"))
    assert len(events) == (2 if tensorboard_available() else 0)  # one per launch, from rank 0
    assert json.loads((run_dir / "run.json").read_text())["identity"]["seed"] == config["seed"]

    # continued by one process: it says that the steps now average one episode, not two
    def one_process(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "fsl_core.cli.train", "--run-dir", str(run_dir), *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    assert (
        "note: epochs 1–2 with 2 processes trained this run; these epochs train with 1 process: a step averages the "
        "gradients of as many episodes as there are processes, so the run is not the one a single count would have "
        "trained"
    ) in one_process("--epochs", "3").stderr
    counts = [{"from_epoch": 1, "world_size": 2}, {"from_epoch": 3, "world_size": 1}]
    assert json.loads((run_dir / "config.json").read_text())["process_counts"] == counts
    # and again, without progress lines: the mixed record stays, and so does the note
    fourth = one_process("--epochs", "4", "--no-progress")
    assert (
        "note: epochs 1–2 with 2 processes, 3 with 1 process trained this run; these epochs train"
        in fourth.stderr
    )
    assert json.loads((run_dir / "config.json").read_text())["process_counts"] == counts
