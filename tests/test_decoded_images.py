"""Images decoded once and kept in memory (``images_in_memory``): the same pixels, tensors and episodes as
decoding each time, one buffer of the expected size, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsl_core.data import FewShotDataError, FewShotFolder, ImageLoadError, load_rgb
from fsl_core.data import decoded as decoded_module
from fsl_core.data.decoded import DecodedImages
from fsl_core.engine.episodes import SeededImages
from fsl_core.progress import format_bytes


def odd_images(folder: Path) -> list[Path]:
    """Files of every mode ``load_rgb`` converts, each with random pixels and its own size."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (mode, suffix) in enumerate(
        [("RGB", ".jpg"), ("L", ".png"), ("P", ".png"), ("RGBA", ".png"), ("CMYK", ".jpg"), ("RGB", ".webp")]
    ):
        width, height = 17 + 5 * i, 11 + 3 * i
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        if mode == "RGBA":  # some transparent pixels, composited over white when read
            alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
            image.putalpha(Image.fromarray(alpha))
        path = folder / f"image_{i}{suffix}"
        image.save(path)
        paths.append(path)
    return paths


def test_decoded_pixels_are_those_of_load_rgb_in_one_buffer(tmp_path: Path) -> None:
    paths = odd_images(tmp_path / "images")
    decoded = DecodedImages(paths, threads=3)
    assert len(decoded) == len(paths)
    expected = [np.asarray(load_rgb(path)) for path in paths]
    assert decoded.nbytes == decoded.buffer.nbytes == sum(pixels.size for pixels in expected)
    for index, pixels in enumerate(expected):
        assert decoded.shapes[index] == pixels.shape
        assert np.array_equal(decoded.array(index), pixels)
        assert np.array_equal(np.asarray(decoded.image(index)), pixels) and decoded.image(index).mode == "RGB"
        assert not decoded.array(index).flags.writeable
    assert decoded.describe().startswith(f"{len(paths)} images, {format_bytes(decoded.nbytes)}, decoded in ")


def test_images_in_memory_give_the_same_episodes_through_worker_processes(tiny_birds: Path) -> None:
    on_disk = FewShotFolder(tiny_birds, "train", transform="train", image_size=32)
    in_memory = FewShotFolder(tiny_birds, "train", transform="train", image_size=32, in_memory=True)
    assert in_memory.decoded is not None and on_disk.decoded is None and "in_memory=True" in repr(in_memory)
    assert in_memory.decoded.nbytes == len(in_memory) * 32 * 32 * 3
    keys = [(1000 + index, index) for index in range(len(on_disk))]
    expected = SeededImages(on_disk).__getitems__(keys)
    loader = torch.utils.data.DataLoader(
        SeededImages(in_memory), batch_sampler=[keys[:7], keys[7:]], collate_fn=list, num_workers=2
    )
    loaded = [item for batch in loader for item in batch]
    assert len(loaded) == len(expected) == 18
    for (image, label), (reference, reference_label) in zip(loaded, expected):
        assert label == reference_label and torch.equal(image, reference)


def test_too_little_memory_is_refused_with_the_sizes_and_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = odd_images(tmp_path / "images")
    needed = sum(np.asarray(load_rgb(path)).size for path in paths)
    monkeypatch.setattr(decoded_module, "available_memory", lambda: needed)  # 80 % of it is too little
    with pytest.raises(FewShotDataError) as error:
        DecodedImages(paths)
    message = str(error.value)
    assert f"the {len(paths)} images of {tmp_path / 'images'}" in message
    assert f"needs {format_bytes(needed)}, more than 80% of the {format_bytes(needed)} available" in message
    assert "leave images_in_memory off" in message
    monkeypatch.setattr(decoded_module, "available_memory", lambda: 2 * needed)
    assert DecodedImages(paths).nbytes == needed
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four processes here, four copies
    with pytest.raises(
        FewShotDataError, match=rf"needs {format_bytes(needed)} × 4 processes of this machine"
    ):
        DecodedImages(paths)


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    paths = odd_images(tmp_path / "images")
    paths[2].write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageLoadError, match="image_2.png"):
        DecodedImages(paths)
