"""Stanford Cars (Krause et al. 2013): read both halves through the devkit's ``.mat`` files and pool them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from .source import Box, PrepareError, SourceDataset, SourceImage, is_image_file, require, source_root
from .splits import committed_split, load_split
from .writer import prepare_folder

CARS_LAYOUT = (
    "a folder holding cars_train/<image>.jpg, cars_test/<image>.jpg, devkit/cars_meta.mat (class_names), "
    "devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (at the top or in devkit/; annotations "
    "with fields bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname)"
)
ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def class_folder_name(class_id: int, class_name: str) -> str:
    """A stable folder name: the 1-based class id and the name with every run of other characters than
    letters, digits, '.', '+' and '-' replaced by '_' ("Ram C/V Cargo Van Minivan 2012", id 174 ->
    "174.Ram_C_V_Cargo_Van_Minivan_2012")."""
    cleaned = re.sub(r"[^A-Za-z0-9.+-]+", "_", class_name).strip("_")
    return f"{class_id:03d}.{cleaned}"


def cars_box(x1: float, y1: float, x2: float, y2: float) -> Box:
    """The crop of a Stanford Cars box: the devkit's (bbox_x1, bbox_y1, bbox_x2, bbox_y2) used as the PIL
    box, each rounded, as the common preparation scripts do (``image.crop((x1, y1, x2, y2))``); the box
    is later clamped to the image."""
    return Box(round(x1), round(y1), round(x2), round(y2))


def _load_mat(path: Path, key: str, what: str) -> np.ndarray:
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as error:  # scipy raises several types for unreadable files
        raise PrepareError(f"{what}: {path} is not a readable .mat file: {error}") from error
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise PrepareError(f"{what}: {path} has no '{key}' (it holds {found})")
    return np.asarray(content[key]).ravel()


def _scalar(value: Any) -> Any:
    flat = np.asarray(value).ravel()
    if flat.size != 1:
        raise ValueError(f"expected one value, found {flat.size}")
    return flat[0].item() if hasattr(flat[0], "item") else flat[0]


def _annotations(path: Path, what: str) -> list[dict[str, Any]]:
    records = _load_mat(path, "annotations", what)
    names = records.dtype.names or ()
    missing = [f for f in ANNOTATION_FIELDS if f not in names]
    if missing:
        hint = (
            " (this is the unlabelled test file; cars_test_annos_withlabels.mat is needed)"
            if missing == ["class"]
            else ""
        )
        raise PrepareError(f"{what}: annotations in {path} lack fields {missing}{hint}; found {list(names)}")
    rows = []
    for index, record in enumerate(records):
        try:
            rows.append({field: _scalar(record[field]) for field in ANNOTATION_FIELDS})
        except ValueError as error:
            raise PrepareError(f"{what}: annotation {index} of {path}: {error}") from error
    return rows


def find_test_annotations(root: Path, what: str = "Stanford Cars") -> Path:
    """``cars_test_annos_withlabels.mat`` at the top of the source or in ``devkit/``."""
    for candidate in (
        root / "cars_test_annos_withlabels.mat",
        root / "devkit" / "cars_test_annos_withlabels.mat",
    ):
        if candidate.is_file():
            return candidate
    hint = ""
    if (root / "devkit" / "cars_test_annos.mat").is_file():
        hint = (
            " (devkit/cars_test_annos.mat has no class labels; the labelled file is distributed separately)"
        )
    raise PrepareError(
        f"{what}: missing file {root / 'cars_test_annos_withlabels.mat'} (looked at the top and in "
        f"devkit/){hint}. Expected layout: {CARS_LAYOUT}"
    )


def read_cars(src: str | Path, crop: bool = False) -> SourceDataset:
    """Read Stanford Cars' 196 classes and both halves (train and test pooled), with boxes when ``crop``."""
    what = "Stanford Cars"
    root = source_root(src, what, CARS_LAYOUT)
    halves = {
        half: require(root / f"cars_{half}", what, CARS_LAYOUT, folder=True) for half in ("train", "test")
    }
    meta = require(root / "devkit" / "cars_meta.mat", what, CARS_LAYOUT)
    train_annos = require(root / "devkit" / "cars_train_annos.mat", what, CARS_LAYOUT)
    test_annos = find_test_annotations(root, what)

    try:
        class_names = [str(_scalar(name)) for name in _load_mat(meta, "class_names", what)]
    except ValueError as error:
        raise PrepareError(f"{what}: class_names in {meta} is not a list of strings: {error}") from error
    duplicates = sorted({n for n in class_names if class_names.count(n) > 1})
    if duplicates:
        raise PrepareError(f"{what}: {meta} lists class names {duplicates[:3]} more than once")
    folders = {name: class_folder_name(i + 1, name) for i, name in enumerate(class_names)}
    dataset = SourceDataset(name="cars", root=root, classes=class_names, folder_names=folders, images=[])

    for half, annos_file in (("train", train_annos), ("test", test_annos)):
        for row in _annotations(annos_file, what):
            class_id = int(row["class"])
            if not 1 <= class_id <= len(class_names):
                raise PrepareError(
                    f"{what}: {annos_file.name}: image {row['fname']} has class {class_id}; "
                    f"expected 1..{len(class_names)} ({meta.name} has {len(class_names)} classes)"
                )
            path = halves[half] / str(row["fname"])
            if not path.is_file():
                dataset.problems.append((dataset.relative(path), f"listed in {annos_file.name} but missing"))
                continue
            if not is_image_file(path):
                dataset.problems.append(
                    (dataset.relative(path), "not an image file (.jpg .jpeg .png .bmp .webp)")
                )
                continue
            box = None
            if crop:
                box = cars_box(*(float(row[f]) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")))
            dataset.images.append(
                SourceImage(
                    path=path,
                    class_name=class_names[class_id - 1],
                    output_stem=f"{half}_{path.stem}",
                    box=box,
                )
            )
    return dataset


def prepare_cars(
    src: str | Path,
    dst: str | Path,
    *,
    split_file: str | Path | None = None,
    crop: bool = False,
    image_format: str = "png",
    workers: int | None = None,
    progress: bool = True,
    echo: bool = True,
) -> dict[str, Any]:
    """Stanford Cars (both halves pooled) -> DST/{train,val,test,val_pre,test_pre}/<id.name>/<image>,
    130/17/49 classes by default (``data/splits/cars_130_17_49.json``); ``crop`` crops to the boxes."""
    chosen = load_split(split_file) if split_file is not None else committed_split("cars", "130-17-49")
    return prepare_folder(
        read_cars(src, crop=crop),
        dst,
        chosen,
        crop=crop,
        image_format=image_format,
        workers=workers,
        progress=progress,
        echo=echo,
    )
