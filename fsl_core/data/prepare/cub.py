"""CUB-200-2011 (Wah et al. 2011): read the original archive's layout; crop to the bounding boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .source import Box, PrepareError, SourceDataset, SourceImage, require, source_root
from .splits import committed_split, load_split
from .writer import prepare_folder

CUB_LAYOUT = (
    "CUB_200_2011/ holding images/<class>/<image>.jpg, images.txt (<image id> <path under images/>), "
    "image_class_labels.txt (<image id> <class id>), classes.txt (<class id> <class name>), "
    "bounding_boxes.txt (<image id> <x> <y> <width> <height>; needed to crop) and train_test_split.txt "
    "(not used: few-shot splits are by class)"
)


def cub_box(x: float, y: float, width: float, height: float) -> Box:
    """The crop of a CUB box: ``(x, y, x + width, y + height)`` with each edge rounded as PIL's ``crop`` does.

    CUB boxes are 0-based pixel offsets of the top-left corner plus a size, written as floats; FRN's
    ``image.crop((x, y, x + w, y + h))`` rounds each coordinate with Python's ``round`` (half to even),
    so this gives the same pixels. The box is later clamped to the image.
    """
    return Box(round(x), round(y), round(x + width), round(y + height))


def _read_table(path: Path, columns: int, what: str) -> list[tuple[int, list[str]]]:
    """Rows of a whitespace-separated CUB text file as (line number, fields); blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PrepareError(f"{what}: cannot read {path}: {error}") from error
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns:
            raise PrepareError(
                f"{what}: {path} line {number} has {len(fields)} fields, expected {columns}: {line.strip()!r}"
            )
        rows.append((number, fields))
    return rows


def _int(value: str, path: Path, number: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise PrepareError(f"{what}: {path} line {number}: {value!r} is not an integer id") from None


def find_cub_root(src: str | Path) -> Path:
    """SRC itself, or SRC/CUB_200_2011 when SRC is the folder the archive was extracted into."""
    root = source_root(src, "CUB-200-2011", CUB_LAYOUT)
    if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
        return root / "CUB_200_2011"
    return root


def read_cub(src: str | Path, crop: bool = True) -> SourceDataset:
    """Read CUB-200-2011's images, classes and (with ``crop``) boxes from its original layout."""
    what = "CUB-200-2011"
    root = find_cub_root(src)
    require(root / "images", what, CUB_LAYOUT, folder=True)
    images_txt = require(root / "images.txt", what, CUB_LAYOUT)
    labels_txt = require(root / "image_class_labels.txt", what, CUB_LAYOUT)
    classes_txt = require(root / "classes.txt", what, CUB_LAYOUT)
    boxes_txt = require(root / "bounding_boxes.txt", what, CUB_LAYOUT) if crop else None

    class_names: dict[int, str] = {}
    for number, (class_id, name) in _read_table(classes_txt, 2, what):
        class_names[_int(class_id, classes_txt, number, what)] = name
    labels: dict[int, int] = {}
    for number, (image_id, class_id) in _read_table(labels_txt, 2, what):
        class_number = _int(class_id, labels_txt, number, what)
        if class_number not in class_names:
            raise PrepareError(
                f"{what}: {labels_txt} line {number}: class id {class_number} is not in {classes_txt.name}"
            )
        labels[_int(image_id, labels_txt, number, what)] = class_number
    boxes: dict[int, Box] = {}
    if boxes_txt is not None:
        for number, (image_id, *coords) in _read_table(boxes_txt, 5, what):
            try:
                x, y, width, height = (float(c) for c in coords)
            except ValueError:
                raise PrepareError(
                    f"{what}: {boxes_txt} line {number}: box {coords} is not four numbers"
                ) from None
            boxes[_int(image_id, boxes_txt, number, what)] = cub_box(x, y, width, height)

    dataset = SourceDataset(
        name="cub",
        root=root,
        classes=[class_names[i] for i in sorted(class_names)],
        folder_names={name: name for name in class_names.values()},
        images=[],
    )
    for number, (image_id, relative) in _read_table(images_txt, 2, what):
        key = _int(image_id, images_txt, number, what)
        path = root / "images" / relative
        if key not in labels:
            raise PrepareError(f"{what}: image id {key} ({relative}) has no class in {labels_txt.name}")
        if not path.is_file():
            dataset.problems.append((dataset.relative(path), f"listed in {images_txt.name} but missing"))
            continue
        if crop and key not in boxes:
            dataset.problems.append((dataset.relative(path), f"no bounding box in {boxes_txt.name}"))
            continue
        dataset.images.append(
            SourceImage(
                path=path,
                class_name=class_names[labels[key]],
                output_stem=Path(relative).stem,
                box=boxes.get(key) if crop else None,
            )
        )
    return dataset


def prepare_cub(
    src: str | Path,
    dst: str | Path,
    *,
    split: str = "130-20-50",
    split_file: str | Path | None = None,
    crop: bool = True,
    image_format: str = "png",
    workers: int | None = None,
    progress: bool = True,
    echo: bool = True,
) -> dict[str, Any]:
    """CUB-200-2011 -> DST/{train,val,test,val_pre,test_pre}/<class>/<image>; returns the summary.

    ``split``: "130-20-50" (BiFRN/HMDRN class lists) or "100-50-50" (FRN's rule); ``split_file``
    overrides it. ``crop`` (default on, as FRN's ``CUB_fewshot_cropped``) crops to the bounding boxes.
    """
    chosen = load_split(split_file) if split_file is not None else committed_split("cub", split)
    return prepare_folder(
        read_cub(src, crop=crop),
        dst,
        chosen,
        crop=crop,
        image_format=image_format,
        workers=workers,
        progress=progress,
        echo=echo,
    )
