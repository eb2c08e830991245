"""The few-shot folder data set: ``ROOT/{train,val,test}/<class name>/<image file>``.

One layout serves every data set (the embedded birds, CUB, Stanford Dogs, Stanford Cars): the one FRN, BiFRN
and HMDRN read. Optional ``val_pre``/``test_pre`` folders hold the same images already resized and cropped
for evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ..runtime import did_you_mean, some_names, way_out
from .decoded import DecodedImages
from .images import FewShotDataError, image_file_problem, is_image_file, load_rgb
from .transforms import eval_transform, train_transform

LAYOUT = "ROOT/{train,val,test}/<class>/<image>"
SHOWN_BAD_FILES = 20
"""How many unreadable files a ``FewShotFolder`` error lists by name (the rest are counted)."""


def _visible_children(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def split_folders(root: str | Path, required: str | None = None) -> list[str]:
    """The split folders ``train``/``val``/``test`` present under ``root``, in that order.

    Raises ``FewShotDataError`` when ``root`` is not a folder, holds none of them, or lacks ``required``.
    """
    root = Path(root).expanduser().absolute()
    check_data_root(root)
    present = [split for split in ("train", "val", "test") if (root / split).is_dir()]
    if not present or (required is not None and required not in present):
        wanted = f"split {required!r}" if required else "any of train/, val/, test/"
        raise FewShotDataError(
            f"data root {root} holds no {wanted} (present: {some_names(present)}); expected the layout {LAYOUT}"
            + _split_folder_hint(root)
        )
    return present


def check_data_root(root: Path) -> None:
    """Raise ``FewShotDataError`` when ``root`` is not a folder, saying whether it is missing or a file."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        if not root.exists() and root.parent.is_dir():  # a misspelt name: the closest folder beside it
            what += did_you_mean(root.name, [p.name for p in _visible_children(root.parent) if p.is_dir()])
        raise FewShotDataError(f"data root {root} {what}; expected the few-shot layout {LAYOUT}")


def _split_folder_hint(root: Path) -> str:
    """ "; ... give its parent" when ``root`` looks like a split folder of a data set rather than its root."""
    if root.name in ("train", "val", "test") or root.name.endswith("_pre"):
        return f"; {root} looks like a split folder itself: give the data set's root, {root.parent}"
    return ""


class FewShotFolder(Dataset):
    """Images of one split, labelled by class folder (classes sorted by name, labels 0..n_classes-1).

    Args:
        root: data set root holding the split folders.
        split: split folder name, usually "train", "val" or "test".
        transform: "train" (augmentation), "eval", a callable on PIL RGB images, or None (items are PIL images).
        image_size: output side of the "train"/"eval" transforms.
        use_pre: read ``<split>_pre`` (images pre-resized for evaluation) instead of ``<split>``; only for
            non-training splits, ignored for "train". The "eval" transform then only converts and normalises.
        min_images: every class must have at least this many images.
        verify: check every image file at construction (``image_file_problem``: header, PNG checksums,
            JPEG end marker; about 0.02-0.03 ms per image once cached, 0.3 s for 10,000 images) and report
            all unreadable ones in one error. ``False`` skips the check; a bad file then fails when loaded.
        in_memory: decode every image now and read items from memory (``keep_in_memory``).

    Items: ``(image (3, H, W) float tensor, label int)``.

    Raises:
        FewShotDataError: missing root or split folder, a split without class folders, a class folder without
            images or with fewer than ``min_images``; with ``verify``, every empty, truncated or non-image
            file (up to ``SHOWN_BAD_FILES`` named, the rest counted) in one error. Without ``verify``,
            unreadable images raise ``ImageLoadError`` (a subclass) when they are loaded.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: str | Callable[[Image.Image], Any] | None = "eval",
        image_size: int = 84,
        use_pre: bool = False,
        min_images: int = 0,
        verify: bool = True,
        in_memory: bool = False,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.split = split
        self.image_size = image_size
        self.use_pre = bool(use_pre) and split != "train"
        check_data_root(self.root)
        folder_name = f"{split}_pre" if self.use_pre else split
        self.folder = self.root / folder_name
        if not self.folder.is_dir():
            present = [p.name for p in _visible_children(self.root) if p.is_dir()]
            named = [name for name in present if not name.endswith("_pre")]  # a split is named without _pre
            closest = "" if self.use_pre else did_you_mean(split, named)
            hint = (
                " (use_pre=True needs the pre-resized copy made by data preparation)" if self.use_pre else ""
            )
            raise FewShotDataError(
                f"split folder {self.folder} does not exist{closest}{hint}; expected "
                f"the few-shot layout {LAYOUT}; "
                f"folders present in {self.root}: {some_names(present)}{_split_folder_hint(self.root)}"
            )
        class_dirs = [p for p in _visible_children(self.folder) if p.is_dir()]
        if not class_dirs:
            raise FewShotDataError(
                f"split folder {self.folder} is empty: it holds no class folders; expected {LAYOUT}"
            )
        self.classes: list[str] = [p.name for p in class_dirs]
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        counts: dict[str, int] = {}
        for label, class_dir in enumerate(class_dirs):
            files = [p for p in _visible_children(class_dir) if p.is_file() and is_image_file(p)]
            counts[class_dir.name] = len(files)
            self.samples.extend((path, label) for path in files)
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise FewShotDataError(
                f"{len(empty)} class folder(s) in {self.folder} hold no image files (.jpg, .jpeg, .png, .bmp, "
                f".webp): {some_names(empty)}; put images in them, or move them out of {self.folder}"
            )
        small = {name: n for name, n in counts.items() if n < min_images}
        if small:
            listed = ", ".join(
                f"{name} ({n} images)" for name, n in sorted(small.items(), key=lambda kv: kv[1])
            )
            raise FewShotDataError(
                f"{len(small)} class(es) in {self.folder} have fewer than min_images={min_images} images: {listed}"
            )
        if verify:
            self._verify_files()
        self.targets: list[int] = [label for _, label in self.samples]
        self.transform = self._resolve_transform(transform)
        self.decoded: DecodedImages | None = None
        """The decoded images once ``keep_in_memory`` has run, else None (their pixels may since have been
        released: see ``in_memory``)."""
        if in_memory:
            self.keep_in_memory()

    @property
    def in_memory(self) -> bool:
        """Whether items are made from decoded pixels held in memory (``keep_in_memory``) rather than files."""
        return self.decoded is not None and self.decoded.holds_pixels

    def keep_in_memory(self, threads: int = 0, worker_copies: int = 0) -> DecodedImages:
        """Decode every image once and keep its pixels in memory (``DecodedImages``: H·W·3 bytes per image;
        ``threads`` and ``worker_copies`` are its arguments). Items are made from those pixels while they are
        held (``in_memory``): the pixels a file read gives, so the same seeds give the same tensors. Worth it
        for JPEG sets such as CUB, whose decoding costs more than the training augmentation."""
        if not self.in_memory:
            self.decoded = DecodedImages([path for path, _ in self.samples], threads, worker_copies)
        return self.decoded

    def _verify_files(self) -> None:
        """Raise one FewShotDataError naming every sample file that ``image_file_problem`` rejects."""
        bad = [(path, problem) for path, _ in self.samples if (problem := image_file_problem(path))]
        if not bad:
            return
        shown = some_names(
            [f"{path.relative_to(self.folder)}: {problem}" for path, problem in bad], SHOWN_BAD_FILES, "; "
        )
        raise FewShotDataError(
            f"{len(bad)} of {len(self.samples)} image files in {self.folder} cannot be read: {shown}. "
            f"Remove or replace them (fsl-prepare check {self.root} checks every split"
            + way_out(
                "; verify=False skips this check, and an unreadable file then fails when it is loaded", ""
            )
            + ")"
        )

    def _resolve_transform(self, transform: str | Callable | None) -> Callable | None:
        if transform == "train":
            return train_transform(self.image_size)
        if transform == "eval":
            return eval_transform(self.image_size, pre_resized=self.use_pre)
        if transform is None or callable(transform):
            return transform
        raise ValueError(f"transform={transform!r}: expected 'train', 'eval', a callable or None")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """index → (transformed image, e.g. (3, H, W) tensor; class label)."""
        image = self.load_image(index)
        return (self.transform(image) if self.transform is not None else image), self.samples[index][1]

    def image_path(self, index: int) -> Path:
        """Path of image ``index``."""
        return self.samples[index][0]

    def load_image(self, index: int) -> Image.Image:
        """Image ``index`` as an untransformed PIL RGB image (from memory while ``keep_in_memory``'s pixels are
        held, else from its file: the same pixels)."""
        if self.in_memory:
            return self.decoded.image(index)  # type: ignore[union-attr]
        return load_rgb(self.samples[index][0])

    def indices_by_class(self) -> list[list[int]]:
        """For each class label, the indices of its images (in file-name order)."""
        groups: list[list[int]] = [[] for _ in self.classes]
        for index, label in enumerate(self.targets):
            groups[label].append(index)
        return groups

    def files_sha256(self) -> str:
        """SHA-256 of the split's file list: each image's path below the split folder and its size in bytes, in
        order (one ``stat`` per image, no reading). A result records it, so an image added, removed, renamed or
        resized under the same folder is told apart; a replacement of the very same size is not."""
        digest = hashlib.sha256()
        for path, _ in self.samples:
            digest.update(f"{path.relative_to(self.folder).as_posix()}\t{path.stat().st_size}\n".encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"FewShotFolder(root={str(self.root)!r}, split={self.split!r}, classes={len(self.classes)}, "
            f"images={len(self.samples)}, use_pre={self.use_pre}, in_memory={self.in_memory})"
        )
