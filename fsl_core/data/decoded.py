"""Images decoded once and kept in memory, so that training stops paying for decoding at every episode.

A JPEG the size of a CUB photo (about 450×350) takes longer to decode than the whole training augmentation
takes on it: decoding each training image once and keeping its 8-bit RGB pixels makes the loader's work per
image that of the augmentation alone, with the very same pixels (``load_rgb`` decodes them), so the same
seeds give the same tensors. ``bench/data_speed.py`` measures both ways.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fsl_core.progress import format_bytes, format_duration
from fsl_core.runtime import usable_cpu_cores

from .images import FewShotDataError, load_rgb

MEMORY_SHARE = 0.8
"""The largest share of the memory the system reports available that the decoded images may take."""


def available_memory() -> int | None:
    """Bytes of memory the system reports available to new allocations (Linux ``MemAvailable``), or None
    where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding; an unreadable file raises ``load_rgb``'s
    error naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                return handle.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        load_rgb(path)  # raises ImageLoadError with the reason
        raise


class DecodedImages:
    """The images of a list of files, decoded once (``load_rgb``) into one buffer of 8-bit RGB pixels.

    Image i occupies H_i·W_i·3 bytes of the buffer, row-major (H, W, 3), as PIL holds it. The files' headers
    give the sizes first, so the buffer is allocated once and a pool of threads decodes straight into it
    (Pillow releases the interpreter lock while it decodes). Nothing writes to the buffer afterwards, so
    DataLoader workers started by ``fork`` (Linux's default) share its pages instead of copying them; under
    ``spawn`` each worker receives a copy, and every process of a ``torchrun`` job builds its own.

    Args:
        paths: image files (JPEG, PNG, BMP, WebP; any mode ``load_rgb`` reads).
        threads: decoding threads (0: the usable cores, at most 8).

    Raises:
        FewShotDataError: the decoded images (one copy per ``torchrun`` process of this machine) would take
            more than ``MEMORY_SHARE`` of the memory the system reports available; the message gives both
            sizes and the way out.
        ImageLoadError: a file cannot be read; the message names it.
    """

    def __init__(self, paths: Sequence[str | Path], threads: int = 0) -> None:
        start = time.perf_counter()
        self.paths = [Path(path) for path in paths]
        sizes = [_header_size(path) for path in self.paths]
        self.shapes = [(height, width, 3) for width, height in sizes]
        lengths = np.array([height * width * 3 for height, width, _ in self.shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.nbytes = int(self.offsets[-1])
        self._check_memory()
        self.buffer = np.empty(self.nbytes, dtype=np.uint8)
        if threads <= 0:
            threads = min(8, usable_cpu_cores())
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(self._decode, range(len(self.paths))))
        self.seconds = time.perf_counter() - start
        """Time taken to read the headers and decode every image."""

    def _check_memory(self) -> None:
        """Refuse, before allocating, a buffer that the memory left could not hold: every process of a
        ``torchrun`` job on this machine (``LOCAL_WORLD_SIZE``) keeps its own copy, so all are counted."""
        available = available_memory()
        copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        if available is None or copies * self.nbytes <= MEMORY_SHARE * available:
            return
        processes = f" × {copies} processes of this machine" if copies > 1 else ""
        raise FewShotDataError(
            f"keeping the {len(self.paths):,} images of {self._folder()} decoded in memory needs "
            f"{format_bytes(self.nbytes)}{processes}, more than {MEMORY_SHARE:.0%} of the "
            f"{format_bytes(available)} available; leave images_in_memory off (each image is then decoded "
            "when it is used), or free memory"
        )

    def _folder(self) -> str:
        if not self.paths:
            return "an empty list"
        return str(Path(os.path.commonpath([str(path.parent) for path in self.paths])))

    def _decode(self, index: int) -> None:
        pixels = np.asarray(load_rgb(self.paths[index]))
        if pixels.shape != self.shapes[index]:
            raise FewShotDataError(
                f"image file {self.paths[index]} decoded to {pixels.shape[1]}×{pixels.shape[0]} pixels but its "
                f"header says {self.shapes[index][1]}×{self.shapes[index][0]}; re-save the file"
            )
        self.buffer[self.offsets[index] : self.offsets[index + 1]] = pixels.reshape(-1)

    def __len__(self) -> int:
        return len(self.paths)

    def array(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only (H, W, 3) uint8 view of the buffer."""
        view = self.buffer[self.offsets[index] : self.offsets[index + 1]].reshape(self.shapes[index])
        view.flags.writeable = False
        return view

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL RGB image: the pixels ``load_rgb`` gives for its file."""
        return Image.fromarray(self.array(index))

    def describe(self) -> str:
        """'5,994 images, 1.9 GB, decoded in 4.1 s'."""
        seconds = format_duration(self.seconds) if self.seconds >= 1 else f"{self.seconds:.2f} s"
        return f"{len(self):,} images, {format_bytes(self.nbytes)}, decoded in {seconds}"


__all__ = ["DecodedImages", "MEMORY_SHARE", "available_memory"]
