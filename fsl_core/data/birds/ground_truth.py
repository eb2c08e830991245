"""The ground truth stored with a generated set, and how to read it back.

``metadata.json`` names the part ids and gives every class its split, group, attributes and the parts that
tell it from its group siblings; ``parts/<split>/<class>/<image>.png`` holds one part id per pixel.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..images import FewShotDataError
from .taxonomy import (
    BIRD_PART_IDS,
    GENERATOR,
    GENERATOR_VERSION,
    MARK_COLOURS,
    MARK_PARTS,
    PART_IDS,
    PART_NAMES,
    BirdSettings,
    GroupSpec,
    SpeciesSpec,
)


def build_metadata(
    settings: BirdSettings, groups: list[GroupSpec], species: list[SpeciesSpec]
) -> dict[str, Any]:
    """The ``metadata.json`` content: generator stamp, settings, parts, groups, per-class ground truth."""
    classes = {}
    for sp in species:
        group = groups[sp.group]
        marks = sp.mark_dict
        attributes = {
            "crown": marks.get("crown"),
            "wing_bar": marks.get("wingbar"),
            "eye_ring": marks.get("eyering"),
            "beak_length": "long" if marks.get("beak") == "long" else "regular",
            "beak_colour": marks["beak"] if marks.get("beak") in MARK_COLOURS else "group",
            "breast_spots": marks.get("spots"),
            "tail_tip": marks.get("tailtip"),
        }
        parts = sorted({PART_IDS[MARK_PARTS[m]] for m in marks})
        classes[sp.name] = {
            "split": sp.split,
            "group": sp.group,
            "group_name": group.name,
            "species": sp.species,
            "marks": [f"{m}-{v}" for m, v in sp.marks],
            "attributes": attributes,
            "discriminative_parts": parts,
            "discriminative_part_names": [PART_NAMES[p] for p in parts],
        }
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "settings": asdict(settings),
        "parts": {str(i): name for i, name in enumerate(PART_NAMES)},
        "bird_parts": list(BIRD_PART_IDS),
        "groups": [asdict(g) for g in groups],
        "classes": classes,
    }


def load_metadata(root: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` of a generated set (part names, groups, per-class split/attributes/parts)."""
    return read_set_file(root, "metadata.json")


def read_set_file(root: str | Path, name: str) -> dict[str, Any]:
    """A JSON file ``name`` of a generated set; a missing one says the folder is not such a set."""
    path = Path(root).absolute() / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise FewShotDataError(
            f"{path} does not exist; {path.parent} is not a generated birds set"
        ) from error


def true_groups(metadata: dict[str, Any], classes: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """(the true group id of each of ``classes`` (len(classes),), {group id: group name}) from a set's metadata.

    Raises ``FewShotDataError`` naming classes the metadata does not place in a group: only a set whose groups
    are known (the generated birds set) has them.
    """
    known = metadata.get("classes", {})
    missing = [name for name in classes if name not in known]
    if missing:
        raise FewShotDataError(
            f"the set's metadata.json places no group for classes {missing[:5]}; the true groups are known only "
            "for a generated birds set"
        )
    ids = np.array([known[name]["group"] for name in classes])
    return ids, {known[name]["group"]: known[name].get("group_name", "") for name in classes}


def part_map(root: str | Path, split: str, class_name: str, file_name: str) -> np.ndarray:
    """Part ids (H, W) uint8 of one image (names in ``PART_NAMES`` / metadata "parts")."""
    path = Path(root).absolute() / "parts" / split / class_name / Path(file_name).name
    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.uint8).copy()
    except FileNotFoundError as error:
        raise FewShotDataError(f"part map {path} does not exist") from error


def discriminative_mask(
    root: str | Path, split: str, class_name: str, file_name: str, metadata: dict[str, Any] | None = None
) -> np.ndarray:
    """(H, W) bool: the visible pixels of the parts that tell this species from its group siblings."""
    meta = metadata if metadata is not None else load_metadata(root)
    if class_name not in meta["classes"]:
        raise FewShotDataError(f"class {class_name!r} is not in {Path(root) / 'metadata.json'}")
    ids = meta["classes"][class_name]["discriminative_parts"]
    return np.isin(part_map(root, split, class_name, file_name), ids)


def bird_mask(root: str | Path, split: str, class_name: str, file_name: str) -> np.ndarray:
    """(H, W) bool: the visible bird pixels of one image (not background, not occluders)."""
    return np.isin(part_map(root, split, class_name, file_name), BIRD_PART_IDS)
