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
        "--no-progress",
        "--rank-log",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def test_two_processes_train_one_model_on_different_episodes(birds: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    first = _torchrun(birds, run_dir, "--stop-after-epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1]
    # the second launch resumes from last.pt on both processes, each keeping the training images in memory
    # and making the augmented images on its device (the loader's images: a run may switch path when resumed)
    second = _torchrun(birds, run_dir, "--images-in-memory", "--augment-on-device")
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
