"""What a preparation reads from a user's source folder: classes, image files and bounding boxes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..images import FewShotDataError
from ..images import is_image_file as has_image_suffix


class PrepareError(FewShotDataError):
    """A source folder, split file or destination that a preparation cannot use; the message says why."""


@dataclass(frozen=True)
class Box:
    """A box in pixel edges, PIL's crop convention: columns ``left..right-1``, rows ``top..bottom-1``."""

    left: int
    top: int
    right: int
    bottom: int

    def clamped(self, width: int, height: int) -> Box | None:
        """The box cut to a ``width`` x ``height`` image, or None when nothing of it is left."""
        left, right = max(0, min(self.left, width)), max(0, min(self.right, width))
        top, bottom = max(0, min(self.top, height)), max(0, min(self.bottom, height))
        if right - left < 1 or bottom - top < 1:
            return None
        return Box(left, top, right, bottom)

    def union(self, other: Box) -> Box:
        """The smallest box holding both boxes."""
        return Box(
            min(self.left, other.left),
            min(self.top, other.top),
            max(self.right, other.right),
            max(self.bottom, other.bottom),
        )

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


@dataclass(frozen=True)
class SourceImage:
    """One image of the source: its file, its class, the output file stem, and its box (None: no crop)."""

    path: Path
    class_name: str
    output_stem: str
    box: Box | None = None


@dataclass
class SourceDataset:
    """A source folder read into class names, class folder names and images.

    ``classes`` are the names a split file lists; ``folder_names`` maps each to its output folder.
    ``problems`` lists (path relative to the source, reason) for files found unusable while reading.
    """

    name: str
    root: Path
    classes: list[str]
    folder_names: dict[str, str]
    images: list[SourceImage]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        """``path`` relative to the source root, with forward slashes (for reports)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def require(path: Path, what: str, layout: str, *, folder: bool = False) -> Path:
    """``path`` if it exists as a file (or folder); else a PrepareError naming it and the expected layout."""
    ok = path.is_dir() if folder else path.is_file()
    if not ok:
        kind = "folder" if folder else "file"
        raise PrepareError(f"{what}: missing {kind} {path}. Expected layout: {layout}")
    return path


def source_root(src: str | Path, what: str, layout: str) -> Path:
    """The resolved source folder; a PrepareError naming it and the expected ``layout`` if it is not a folder."""
    root = Path(src).expanduser().resolve()
    if not root.is_dir():
        raise PrepareError(
            f"{what}: source folder {root} does not exist or is not a folder; give the folder the data set was "
            f"extracted into. Expected layout: {layout}"
        )
    return root


def is_image_file(path: Path) -> bool:
    """True for a visible file with a supported image suffix (case-insensitive)."""
    return has_image_suffix(path) and path.is_file()
