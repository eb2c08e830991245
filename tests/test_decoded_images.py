"""Images decoded once and kept in memory (``images_in_memory``): the same pixels, tensors and episodes as
decoding each time, one buffer of the expected size, and clear errors."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsl_core.data import FewShotDataError, FewShotFolder, ImageLoadError, load_rgb
from fsl_core.data import decoded as decoded_module
from fsl_core.data.decoded import DecodedImages, available_memory, worker_sharing
from fsl_core.engine.episodes import SeededImages
from fsl_core.progress import format_bytes


def odd_images(folder: Path) -> list[Path]:
    """Files of every mode ``load_rgb`` converts, each with random pixels and its own size."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    modes = [("RGB", ".jpg"), ("L", ".png"), ("P", ".png"), ("RGBA", ".png"), ("CMYK", ".jpg")]
    modes += [("RGB", ".webp"), ("LA", ".png"), ("1", ".png"), ("I;16", ".png")]
    for i, (mode, suffix) in enumerate(modes):
        width, height = 17 + 5 * i, 11 + 3 * i
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if mode == "I;16":  # 16-bit greyscale, rescaled to 8 bits when read
            image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
        else:
            image = Image.fromarray(pixels).convert(mode)
        if mode in ("RGBA", "LA"):  # some transparent pixels, composited over white when read
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


def test_released_pixels_are_freed_and_the_folder_reads_its_files_again(tiny_birds: Path) -> None:
    """Under ``augment_on_device`` on a GPU the host's copy is released: the buffer goes, the sizes and the
    description stay, ``array`` names the way out, and the folder's items (the same tensors) and a later
    ``keep_in_memory`` (a fresh buffer) come from the files."""
    folder = FewShotFolder(tiny_birds, "train", transform="train", image_size=32, in_memory=True)
    decoded = folder.decoded
    keys = [(1000 + index, index) for index in range(len(folder))]
    expected = SeededImages(folder).__getitems__(keys)
    shapes, description = list(decoded.shapes), decoded.describe()
    decoded.release_pixels()
    assert not decoded.holds_pixels and decoded.buffer is None and "in_memory=False" in repr(folder)
    assert decoded.shapes == shapes and decoded.describe() == description
    with pytest.raises(FewShotDataError, match="were released .* read the image from its file instead"):
        decoded.array(0)
    for (image, label), (reference, reference_label) in zip(
        SeededImages(folder).__getitems__(keys), expected
    ):
        assert label == reference_label and torch.equal(image, reference)
    again = folder.keep_in_memory()
    assert (
        again is not decoded
        and again.holds_pixels
        and np.array_equal(again.array(4), np.asarray(load_rgb(folder.image_path(4))))
    )


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
    # copies made by workers started without fork are counted, and one per torchrun process of the machine
    with pytest.raises(FewShotDataError, match=rf"needs {format_bytes(needed)} × 3 copies \(processes"):
        DecodedImages(paths, worker_copies=2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(FewShotDataError, match=rf"needs {format_bytes(needed)} × 2 copies"):
        DecodedImages(paths)


def test_workers_share_the_buffer_where_they_can_be_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_sharing(0) == (None, 0)
    monkeypatch.setattr(sys, "platform", "linux")
    assert worker_sharing(4) == ("fork", 0)
    monkeypatch.setattr(sys, "platform", "darwin")  # spawned workers each receive a copy
    assert worker_sharing(4) == (None, 4)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Files of a fake file system root: {relative path: text}."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_available_memory_takes_the_tightest_of_the_machine_and_its_cgroups(tmp_path: Path) -> None:
    meminfo = "MemTotal:       32000000 kB\nMemAvailable:   20000000 kB\n"
    machine = write_tree(tmp_path / "machine", {"proc/meminfo": meminfo, "proc/self/cgroup": "0::/\n"})
    assert available_memory(machine) == 20_000_000 * 1024
    # cgroup v2: a job's limit of 8 GB with 5 GB in use, 1 GB of it file cache that can be dropped
    v2 = {
        "proc/meminfo": meminfo,
        "proc/self/cgroup": "0::/jobs/42\n",
        "sys/fs/cgroup/jobs/42/memory.max": "8000000000\n",
        "sys/fs/cgroup/jobs/42/memory.current": "5000000000\n",
        "sys/fs/cgroup/jobs/42/memory.stat": "anon 4000000000\ninactive_file 1000000000\n",
        "sys/fs/cgroup/jobs/memory.max": "max\n",
    }
    assert available_memory(write_tree(tmp_path / "v2", v2)) == 4_000_000_000
    # a parent's limit binds too
    v2["sys/fs/cgroup/jobs/memory.max"] = "6000000000\n"
    v2["sys/fs/cgroup/jobs/memory.current"] = "5500000000\n"
    v2["sys/fs/cgroup/jobs/memory.stat"] = "inactive_file 0\n"
    assert available_memory(write_tree(tmp_path / "v2_parent", v2)) == 500_000_000
    # cgroup v1: the memory controller's own hierarchy; the root's "no limit" is ignored
    v1 = {
        "proc/meminfo": meminfo,
        "proc/self/cgroup": "4:memory:/docker/abc\n3:cpuset:/\n",
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "2000000000\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "1200000000\n",
        "sys/fs/cgroup/memory/docker/abc/memory.stat": "total_inactive_file 200000000\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    }
    assert available_memory(write_tree(tmp_path / "v1", v1)) == 1_000_000_000
    assert available_memory(tmp_path / "nothing") is None


def test_an_image_whose_header_lies_about_its_size_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = odd_images(tmp_path / "images")
    monkeypatch.setattr(decoded_module, "_header_size", lambda path: (5, 4))
    with pytest.raises(
        FewShotDataError, match=r"image_0.jpg decoded to 17×11 pixels but its header says 5×4"
    ):
        DecodedImages(paths[:1])


def test_an_unreadable_image_is_named_and_the_warning_filters_are_kept(tmp_path: Path) -> None:
    paths = odd_images(tmp_path / "images")
    paths[2].write_bytes(b"\x89PNG broken")
    filters = list(warnings.filters)
    with pytest.raises(ImageLoadError, match="image_2.png"):
        DecodedImages(paths)
    assert DecodedImages(paths[3:], threads=4).nbytes > 0 and warnings.filters == filters
