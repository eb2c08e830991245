"""Shared fixtures: tiny generated birds sets, a tiny hand-made folder data set, one-thread torch."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fsl_core.data.birds import ensure_birds
from fsl_core.engine import train
from fsl_core.models.checkpoints import load_checkpoint
from fsl_core.runtime import AUTO_DEVICE

# "auto" means the CPU in the tests (and in the notebooks and processes they start) even where CUDA is
# present: their bit-exact checks (resume, fixed episodes) hold on CPU; tests/test_cuda.py asks for CUDA.
os.environ.setdefault(AUTO_DEVICE, "cpu")

TINY_BIRDS = dict(seed=0, image_size=32, images_per_class=6, groups=3, species_per_group=3)
"""Settings of the session's tiny birds set: 9 classes (3 train, 3 val, 3 test) of 6 images, 32x32."""


@pytest.fixture(scope="session")
def tiny_birds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedded birds set (generated once per test session; treat it as read-only)."""
    from fsl_core.data.birds import generate_birds

    return generate_birds(tmp_path_factory.mktemp("birds") / "birds", **TINY_BIRDS, progress=False, workers=1)


def write_image(
    path: Path, size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 30, 10)
) -> Path:
    """Write a small solid RGB image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """ROOT/{train,val,test}/<class>/<image>: 4 classes per split with 5, 6, 7, 8 images of mixed formats."""
    rng = np.random.default_rng(0)
    suffixes = [".png", ".jpg", ".bmp", ".webp", ".JPEG"]
    for split in ("train", "val", "test"):
        for c, count in enumerate((5, 6, 7, 8)):
            for i in range(count):
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                write_image(
                    tmp_path / split / f"class_{c}" / f"img_{i}{suffixes[i % len(suffixes)]}", colour=colour
                )
    return tmp_path


@pytest.fixture(scope="session")
def birds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedded birds set (24/6/10 classes of 12 images, 32×32), shared by the engine tests."""
    return ensure_birds(
        tmp_path_factory.getbasetemp() / "engine_birds",
        image_size=32,
        images_per_class=12,
        groups=2,
        species_per_group=20,
        progress=False,
    )


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors gain nothing from more, and a busy machine makes them much slower.
    ``OMP_NUM_THREADS=1`` makes training (``threads=0``) and the processes started meanwhile use one too."""
    threads = torch.get_num_threads()
    saved = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if saved is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = saved


# A tiny run: HMDRN (two levels, fusion weights) on 16×16 inputs, 3-way 1-shot 2-query.
TINY = dict(
    protocol="quick",
    model="hmdrn",
    image_size=16,
    way=3,
    shot=1,
    query=2,
    sampler="fixed",
    episodes_per_epoch=3,
    epochs=3,
    val_every=2,
    val_way=3,
    val_shot=1,
    val_query=2,
    val_episodes=6,
    lr=0.05,
    progress=False,
    threads=1,
)


def cli_command(run_dir: Path, birds: Path, **overrides: object) -> list[str]:
    """``fsl-train`` with the TINY settings (``overrides`` win)."""
    command = [sys.executable, "-m", "fsl_core.cli.train", "--data", str(birds), "--run-dir", str(run_dir)]
    for name, value in {**TINY, **overrides}.items():
        flag = "--" + name.replace("_", "-")
        command += [flag if value else f"--no-{name}"] if isinstance(value, bool) else [flag, str(value)]
    return command


@pytest.fixture(scope="session")
def reference_run(birds: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted TINY run, the reference of the resume tests (treat it as read-only: copy it to change it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    torch.set_num_threads(threads)
    return run_dir


def assert_same_run(a: Path, b: Path) -> None:
    """Same weights, optimizer state, best metric and metrics (wall-clock seconds aside)."""
    last_a, last_b = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert last_a["epoch"] == last_b["epoch"]
    assert last_a["state_dict"].keys() == last_b["state_dict"].keys()
    for key, value in last_a["state_dict"].items():
        assert torch.equal(value, last_b["state_dict"][key]), key
    for key, state in last_a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], last_b["optimizer"]["state"][key]["momentum_buffer"])
    assert last_a["best"] == last_b["best"]
    wall_clock = ["seconds", "data_seconds"]
    metrics_a = pd.read_csv(a / "metrics.csv").drop(columns=wall_clock)
    metrics_b = pd.read_csv(b / "metrics.csv").drop(columns=wall_clock)
    pd.testing.assert_frame_equal(metrics_a, metrics_b, check_exact=True)
    best_a = torch.load(a / "best.pt", weights_only=True)["state_dict"]
    best_b = torch.load(b / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (relative path → digest), the lock file left out."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture
def paths_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook parameters checked without looking at the disk (``_path_problems``): for tests of the other
    checks, whose defaults name data/birds, which a clone holds only after ``make data``."""
    import fsl_core.notebook_parameters

    monkeypatch.setattr(fsl_core.notebook_parameters, "_path_problems", lambda *args: [])
