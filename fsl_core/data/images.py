"""Reading image files of any common format and mode as 8-bit RGB."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""File suffixes (compared case-insensitively) that are read as images."""


class FewShotDataError(ValueError):
    """A data set, split, class, image or sampling request that cannot be used as asked."""


class ImageLoadError(FewShotDataError):
    """An image file that cannot be read or decoded; the message names the file."""


def is_image_file(path: str | Path) -> bool:
    """True when ``path`` has one of the suffixes in ``IMAGE_EXTENSIONS`` and is not hidden."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode → RGB. Transparent pixels are composited over white; 16-bit and float greyscale are
    rescaled to 8 bits instead of being clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) if array.size else 0.0
        if top > 255.0:
            array = array * (255.0 / (65535.0 if top <= 65535.0 else top))
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Read an image file (JPEG, PNG, BMP, WebP; greyscale, palette, RGBA, CMYK, 16-bit) as an RGB image.

    Raises:
        ImageLoadError: the file is missing, truncated, corrupt or not an image; the message names it.
    """
    with large_images_allowed():
        return read_rgb(path)


@contextlib.contextmanager
def large_images_allowed() -> Iterator[None]:
    """Pillow's warning about very large images silenced inside the block. ``warnings.catch_warnings`` sets
    the filters of the whole process, not of one thread, so threads that decode run inside one such block
    opened by the thread that starts them (and call ``read_rgb``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def read_rgb(path: str | Path) -> Image.Image:
    """``load_rgb`` without its warning filter: for threads inside a ``large_images_allowed`` block."""
    path = Path(path)
    try:
        with Image.open(path) as handle:
            handle.load()
            image = _to_rgb(handle)
            if image is handle:
                image = handle.copy()
    except FileNotFoundError as error:
        raise ImageLoadError(f"image file {path.absolute()} does not exist") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(
            f"cannot read image file {path}: {error} (expected a readable JPEG, PNG, BMP or WebP file)"
        ) from error
    return image


def image_file_problem(path: str | Path) -> str | None:
    """What a quick check finds wrong with image file ``path``, or None when it looks whole.

    Cheap (about 0.02 ms per file once the file is cached): the header is parsed, PNG chunks are read and
    their checksums compared without decompressing, a JPEG must end with its end-of-image marker (a JPEG
    without one, e.g. with data appended after the image, is decoded at 1/8 scale to decide), other formats
    are decoded. Finds empty files, files that are not images, truncated and most damaged images.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as error:
        return f"cannot be opened: {error.strerror or error}"
    with handle, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            head = handle.read(64)
            if not head:
                return "empty (0 bytes)"
            handle.seek(0)
            try:
                image = Image.open(handle)
            except Image.UnidentifiedImageError:
                return _unknown_content(head)
            with image:
                if image.format == "PNG":
                    image.verify()
                elif image.format == "JPEG":
                    handle.seek(-2, 2)
                    if handle.read(2) != b"\xff\xd9":
                        image.draft("RGB", (1, 1))
                        image.load()
                else:
                    image.load()
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            return f"damaged or truncated ({error})"
    return None


def _unknown_content(head: bytes) -> str:
    """'not an image' and, for text, how it begins (escaped)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not an image (first bytes: {head[:8].hex(' ')})"
    if all(ch.isprintable() or ch in "\t\n\r" for ch in text):
        return f"not an image but text beginning {ascii(text[:24])}"
    return f"not an image (first bytes: {head[:8].hex(' ')})"
