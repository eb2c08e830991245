"""Images decoded once and kept in memory, so that training stops paying for decoding at every episode.

A JPEG the size of a CUB photo (about 450×350) takes longer to decode than the whole training augmentation
takes on it: decoding each training image once and keeping its 8-bit RGB pixels makes the loader's work per
image that of the augmentation alone, with the very same pixels (``load_rgb`` decodes them), so the same
seeds give the same tensors. ``bench/data_speed.py`` measures both ways.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
from PIL import Image

from fsl_core.progress import format_bytes, format_duration
from fsl_core.runtime import local_processes, usable_cpu_cores

from .images import FewShotDataError, ImageLoadError, large_images_allowed, read_rgb

MEMORY_SHARE = 0.8
"""The largest share of the available memory (``available_memory``) that the decoded images may take."""

NO_CGROUP_LIMIT = 1 << 60
"""A cgroup v1 memory limit at or above this (the kernel writes 2⁶³ rounded down to a page) means none."""


def available_memory(root: str | Path = "/") -> int | None:
    """Bytes this process can still allocate, or None where the system does not say (not Linux).

    The smaller of the machine's ``MemAvailable`` and, for every memory cgroup from the process's own up to
    the root (a container's or a batch job's limit), its limit minus its working set (the memory in use
    less the file cache it could drop, ``inactive_file``), read from cgroup v2 or v1 files under ``root``.
    """
    root = Path(root)
    figures = []
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                figures.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroups = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        cgroups = []
    for line in cgroups:
        number, controllers, path = line.split(":", 2)
        if number == "0" and not controllers:  # cgroup v2
            files = ("sys/fs/cgroup", "memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # cgroup v1
            files = (
                "sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            )
        else:
            continue
        mount, limit_name, usage_name, inactive_name = files
        folder = root / mount / path.strip("/")
        while True:
            left = _cgroup_memory_left(folder, limit_name, usage_name, inactive_name)
            if left is not None:
                figures.append(left)
            if folder == root / mount:
                break
            folder = folder.parent
    return min(figures) if figures else None


def _cgroup_memory_left(folder: Path, limit_name: str, usage_name: str, inactive_name: str) -> int | None:
    """A memory cgroup's limit minus its working set, or None without a limit (or its files)."""
    try:
        limit = (folder / limit_name).read_text().strip()
        if limit == "max" or int(limit) >= NO_CGROUP_LIMIT:
            return None
        usage = int((folder / usage_name).read_text())
        inactive = 0
        for line in (folder / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == inactive_name:
                inactive = int(value)
        return max(0, int(limit) - (usage - inactive))
    except (OSError, ValueError):
        return None


def worker_sharing(num_workers: int) -> tuple[str | None, int]:
    """How DataLoader workers reading a ``DecodedImages`` buffer get it: (their ``multiprocessing_context``,
    the number of copies of the buffer they make).

    On Linux they are started by ``fork`` and share the buffer's pages (from Python 3.14 the default there is
    ``forkserver``, which would pickle a copy into each); elsewhere (``spawn``) each worker receives a copy.
    """
    if num_workers == 0:
        return None, 0
    if sys.platform.startswith("linux"):
        return "fork", 0
    return None, num_workers


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding; an unreadable file raises
    ``ImageLoadError`` naming it (inside a ``large_images_allowed`` block)."""
    try:
        with Image.open(path) as handle:
            return handle.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        read_rgb(path)  # raises ImageLoadError with the reason, naming the file
        raise ImageLoadError(f"cannot read the size of image file {path}: {error}") from error


class DecodedImages:
    """The images of a list of files, decoded once (``load_rgb``) into one buffer of 8-bit RGB pixels.

    Image i occupies H_i·W_i·3 bytes of the buffer, row-major (H, W, 3), as PIL holds it. The files' headers
    give the sizes first, so the memory is checked and the buffer allocated once, and a pool of threads
    decodes straight into it (Pillow releases the interpreter lock while it decodes). Nothing writes to the
    buffer afterwards: DataLoader workers started by ``fork`` share its pages (``worker_sharing``).

    Args:
        paths: image files (JPEG, PNG, BMP, WebP; any mode ``load_rgb`` reads).
        threads: decoding threads (0: the usable cores, at most 8).
        worker_copies: copies of the buffer that DataLoader workers of this process will make (see
            ``worker_sharing``); the memory check counts them, and one buffer for every process of a
            ``torchrun`` job on this machine (``LOCAL_WORLD_SIZE``).

    Raises:
        FewShotDataError: those copies would take more than ``MEMORY_SHARE`` of the available memory (the
            message gives both sizes and the way out), or a file decodes to another size than its header
            gives.
        ImageLoadError: a file cannot be read; the message names it.
    """

    def __init__(self, paths: Sequence[str | Path], threads: int = 0, worker_copies: int = 0) -> None:
        start = time.perf_counter()
        self.paths = [Path(path) for path in paths]
        with large_images_allowed():
            sizes = [_header_size(path) for path in self.paths]
            self.shapes = [(height, width, 3) for width, height in sizes]
            lengths = np.array([height * width * 3 for height, width, _ in self.shapes], dtype=np.int64)
            self.offsets = np.concatenate([[0], np.cumsum(lengths)])
            self.nbytes = int(self.offsets[-1])
            self._check_memory(local_processes() * (1 + worker_copies))
            self.buffer: np.ndarray | None = np.empty(self.nbytes, dtype=np.uint8)
            threads = threads if threads > 0 else min(8, usable_cpu_cores())
            with ThreadPoolExecutor(max_workers=threads) as pool:
                jobs = [pool.submit(self._decode, index) for index in range(len(self.paths))]
                done, _ = wait(jobs, return_when=FIRST_EXCEPTION)
                failed = [job for job in jobs if job in done and job.exception() is not None]
                if failed:  # the first failure is raised; the images not started yet are skipped
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise failed[0].exception()  # type: ignore[misc]
        self.seconds = time.perf_counter() - start
        """Time taken to read the headers and decode every image."""

    @classmethod
    def from_arrays(cls, images: Sequence[np.ndarray]) -> DecodedImages:
        """The same buffer made from (H, W, 3) uint8 arrays already in memory (no files, nothing checked):
        image i is named ``array i``."""
        decoded = cls.__new__(cls)
        decoded.paths = [Path(f"array {index}") for index in range(len(images))]
        decoded.shapes = [tuple(image.shape) for image in images]
        decoded.offsets = np.concatenate([[0], np.cumsum([image.size for image in images])])
        decoded.nbytes = int(decoded.offsets[-1])
        decoded.buffer = np.concatenate(
            [np.ascontiguousarray(image, np.uint8).reshape(-1) for image in images]
        )
        decoded.seconds = 0.0
        return decoded

    def _check_memory(self, copies: int) -> None:
        """Refuse, before allocating, ``copies`` buffers that the memory left could not hold."""
        available = available_memory()
        if available is None or copies * self.nbytes <= MEMORY_SHARE * available:
            return
        times = f" × {copies} copies (processes of this machine and their workers)" if copies > 1 else ""
        raise FewShotDataError(
            f"keeping the {len(self.paths):,} images of {self._common_folder()} decoded in memory needs "
            f"{format_bytes(self.nbytes)}{times}, more than {MEMORY_SHARE:.0%} of the "
            f"{format_bytes(available)} available; leave images_in_memory off (each image is then decoded "
            "when it is used), or free memory"
        )

    def _common_folder(self) -> str:
        if not self.paths:
            return "an empty list"
        return str(Path(os.path.commonpath([str(path.parent) for path in self.paths])))

    def _decode(self, index: int) -> None:
        pixels = np.asarray(read_rgb(self.paths[index]))
        if pixels.shape != self.shapes[index]:
            raise FewShotDataError(
                f"image file {self.paths[index]} decoded to {pixels.shape[1]}×{pixels.shape[0]} pixels but "
                f"its header says {self.shapes[index][1]}×{self.shapes[index][0]}; re-save the file"
            )
        self.buffer[self.offsets[index] : self.offsets[index + 1]] = pixels.reshape(-1)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def holds_pixels(self) -> bool:
        """Whether the buffer is still here (``release_pixels`` frees it)."""
        return self.buffer is not None

    def release_pixels(self) -> None:
        """Free the buffer once another copy of the pixels serves (a GPU's, under ``augment_on_device``); the
        sizes, ``nbytes`` and ``describe`` stay, and ``array`` refuses from then on."""
        self.buffer = None

    def array(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only (H, W, 3) uint8 view of the buffer."""
        if self.buffer is None:
            raise FewShotDataError(
                f"the decoded pixels of {self._common_folder()} were released (a device holds its own copy); "
                "read the image from its file instead (FewShotFolder.load_image does so)"
            )
        view = self.buffer[self.offsets[index] : self.offsets[index + 1]].reshape(self.shapes[index])
        view.flags.writeable = False
        return view

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL RGB image (a copy): the pixels ``load_rgb`` gives for its file."""
        return Image.fromarray(self.array(index))

    def describe(self) -> str:
        """E.g. '2,400 images, 50.8 MB, decoded in 0.73 s'."""
        seconds = format_duration(self.seconds) if self.seconds >= 1 else f"{self.seconds:.2f} s"
        return f"{len(self):,} images, {format_bytes(self.nbytes)}, decoded in {seconds}"


__all__ = ["DecodedImages", "MEMORY_SHARE", "available_memory", "worker_sharing"]
