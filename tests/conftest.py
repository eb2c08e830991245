"""Shared fixtures: tiny generated birds sets, a tiny hand-made folder data set, one-thread torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsl_core.data.synthetic import ensure_birds

TINY_BIRDS = dict(seed=0, image_size=32, images_per_class=6, groups=3, species_per_group=3)
"""Settings of the session's tiny birds set: 9 classes (3 train, 3 val, 3 test) of 6 images, 32x32."""


@pytest.fixture(scope="session")
def tiny_birds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedded birds set (generated once per test session; treat it as read-only)."""
    from fsl_core.data.synthetic import generate_birds

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
    """One intra-op thread: tiny tensors gain nothing from more, and a busy machine makes them much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
