"""Stanford Dogs (Khosla et al. 2011): read ``Images/`` and, to crop, the PASCAL-VOC style ``Annotation/``."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from .source import Box, PrepareError, SourceDataset, SourceImage, is_image_file, require, source_root
from .splits import committed_split, load_split
from .writer import prepare_folder

DOGS_LAYOUT = (
    "a folder holding Images/<synset>-<breed>/<image>.jpg (e.g. Images/n02085620-Chihuahua/"
    "n02085620_10074.jpg) and, to crop, Annotation/<synset>-<breed>/<image name without suffix> "
    "(PASCAL-VOC XML boxes)"
)


def dogs_box(annotation: Path) -> Box:
    """The union of all ``<object><bndbox>`` boxes of one annotation, as the PIL box (xmin, ymin, xmax, ymax).

    Every object annotated in a Stanford Dogs image is a dog of the image's breed, so the union keeps
    each of them and does not depend on the order of the objects in the file.
    """
    try:
        tree = ElementTree.parse(annotation)
    except (OSError, ElementTree.ParseError) as error:
        raise ValueError(f"annotation {annotation.name} is not readable XML: {error}") from error
    box: Box | None = None
    for bndbox in tree.getroot().iter("bndbox"):
        try:
            edges = [round(float(bndbox.findtext(tag, ""))) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise ValueError(
                f"annotation {annotation.name} has a box without numeric xmin/ymin/xmax/ymax"
            ) from None
        current = Box(*edges)
        box = current if box is None else box.union(current)
    if box is None:
        raise ValueError(f"annotation {annotation.name} holds no <bndbox>")
    return box


def read_dogs(src: str | Path, crop: bool = False) -> SourceDataset:
    """Read Stanford Dogs' classes (the synset folders of ``Images/``), images and, with ``crop``, boxes."""
    what = "Stanford Dogs"
    root = source_root(src, what, DOGS_LAYOUT)
    images_dir = require(root / "Images", what, DOGS_LAYOUT, folder=True)
    annotation_dir = require(root / "Annotation", what, DOGS_LAYOUT, folder=True) if crop else None
    classes = sorted(p.name for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise PrepareError(f"{what}: {images_dir} holds no class folders. Expected layout: {DOGS_LAYOUT}")
    dataset = SourceDataset(
        name="dogs", root=root, classes=classes, folder_names={name: name for name in classes}, images=[]
    )
    for class_name in classes:
        for path in sorted((images_dir / class_name).iterdir()):
            if path.name.startswith(".") or path.is_dir():
                continue
            if not is_image_file(path):
                dataset.problems.append(
                    (dataset.relative(path), "not an image file (.jpg .jpeg .png .bmp .webp)")
                )
                continue
            box = None
            if annotation_dir is not None:
                annotation = annotation_dir / class_name / path.stem
                if not annotation.is_file():
                    dataset.problems.append(
                        (dataset.relative(path), f"no annotation {dataset.relative(annotation)}")
                    )
                    continue
                try:
                    box = dogs_box(annotation)
                except ValueError as error:
                    dataset.problems.append((dataset.relative(path), str(error)))
                    continue
            dataset.images.append(
                SourceImage(path=path, class_name=class_name, output_stem=path.stem, box=box)
            )
    return dataset


def prepare_dogs(
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
    """Stanford Dogs -> DST/{train,val,test,val_pre,test_pre}/<synset>/<image>, 70/20/30 classes by default
    (``data/splits/dogs_70_20_30.json``); ``crop`` crops to the union of the annotated boxes."""
    chosen = load_split(split_file) if split_file is not None else committed_split("dogs", "70-20-30")
    return prepare_folder(
        read_dogs(src, crop=crop),
        dst,
        chosen,
        crop=crop,
        image_format=image_format,
        workers=workers,
        progress=progress,
        echo=echo,
    )
