"""Class splits: the committed split files under ``data/splits/``, FRN's CUB rule, and seeded draws.

A split file is JSON with the class lists ``"train"``, ``"val"`` and ``"test"`` (names as the source
data set spells them: CUB ``classes.txt`` names, Stanford Dogs synset folders, Stanford Cars
``cars_meta.mat`` class names) and optional ``"name"``, ``"description"``, ``"rule"`` and ``"seed"``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .source import PrepareError

SPLIT_NAMES = ("train", "val", "test")
SPLITS_DIR = Path(__file__).resolve().parents[3] / "data" / "splits"

#: The split each data set gets by default, and the other committed ones.
COMMITTED_SPLITS = {
    "cub": ("130-20-50", "100-50-50"),
    "dogs": ("70-20-30",),
    "cars": ("130-17-49",),
}


@dataclass(frozen=True)
class ClassSplit:
    """Class lists per split (``classes["train"]`` ...), with the split's name and the file it came from."""

    name: str
    classes: dict[str, list[str]]
    file: str

    def split_of(self) -> dict[str, str]:
        """Class name -> "train" | "val" | "test"."""
        return {name: split for split in SPLIT_NAMES for name in self.classes[split]}

    def digest(self) -> str:
        """SHA-256 of the class lists (order-independent): two splits with the same classes agree."""
        canonical = json.dumps({split: sorted(self.classes[split]) for split in SPLIT_NAMES}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def counts(self) -> dict[str, int]:
        return {split: len(self.classes[split]) for split in SPLIT_NAMES}


def load_split(path: str | Path) -> ClassSplit:
    """Read and validate a split file: three non-empty, duplicate-free, disjoint class lists."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise PrepareError(f"split file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PrepareError(f"split file {path} is not readable JSON: {error}") from error
    if not isinstance(data, dict):
        raise PrepareError(
            f"split file {path} holds {type(data).__name__}; expected an object with "
            "'train', 'val' and 'test' class lists"
        )
    classes: dict[str, list[str]] = {}
    for split in SPLIT_NAMES:
        names = data.get(split)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise PrepareError(f"split file {path}: '{split}' must be a non-empty list of class names")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PrepareError(f"split file {path}: '{split}' lists {duplicates[:5]} more than once")
        classes[split] = list(names)
    for i, first in enumerate(SPLIT_NAMES):
        for second in SPLIT_NAMES[i + 1 :]:
            shared = sorted(set(classes[first]) & set(classes[second]))
            if shared:
                raise PrepareError(
                    f"split file {path}: classes {shared[:5]} are in both '{first}' and "
                    f"'{second}'; splits must be class-disjoint"
                )
    name = data.get("name") if isinstance(data.get("name"), str) else path.stem
    return ClassSplit(name=name, classes=classes, file=str(path))


def committed_split_path(dataset: str, name: str) -> Path:
    """The committed file of split ``name`` (e.g. "130-20-50") of ``dataset`` ("cub", "dogs", "cars")."""
    known = COMMITTED_SPLITS.get(dataset, ())
    if name not in known:
        raise PrepareError(
            f"{dataset}: no committed split named {name!r}; choose one of {list(known)} or pass --split-file"
        )
    return SPLITS_DIR / f"{dataset}_{name.replace('-', '_')}.json"


def committed_split(dataset: str, name: str) -> ClassSplit:
    """Load a committed split; a clear error where the repository's ``data/splits/`` is not at hand."""
    path = committed_split_path(dataset, name)
    if not path.is_file():
        raise PrepareError(
            f"committed split file {path} is not there (fsl_core installed without its "
            "repository?); pass --split-file with a copy of data/splits/"
            f"{path.name}"
        )
    split = load_split(path)
    return ClassSplit(name=name, classes=split.classes, file=split.file)


def draw_split(class_names: Sequence[str], counts: Sequence[int], seed: int) -> dict[str, list[str]]:
    """Split classes at random but reproducibly, with no dependence on any library's random generator.

    Classes are ranked by the SHA-256 hex digest of ``f"{seed}:{name}"``; the first ``counts[0]`` go
    to train, the next ``counts[1]`` to val, the rest to test. Each list keeps the input order.
    """
    names = list(class_names)
    if len(set(names)) != len(names):
        raise PrepareError("draw_split: class names must be unique")
    if len(counts) != 3 or any(c < 1 for c in counts) or sum(counts) != len(names):
        raise PrepareError(
            f"draw_split: counts {list(counts)} must be three positive numbers summing to "
            f"the {len(names)} classes"
        )
    ranked = sorted(names, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    position = {name: i for i, name in enumerate(names)}
    bounds = (0, counts[0], counts[0] + counts[1], len(names))
    return {
        split: sorted(ranked[bounds[i] : bounds[i + 1]], key=position.__getitem__)
        for i, split in enumerate(SPLIT_NAMES)
    }


def frn_cub_split(class_names: Sequence[str]) -> dict[str, list[str]]:
    """FRN's CUB rule (Wertheimer et al. 2021): class id even -> train, id % 4 == 1 -> val, 3 -> test.

    ``class_names`` are ``classes.txt`` names ("001.Black_footed_Albatross"); the id is the number
    before the dot, 1-based.
    """
    result: dict[str, list[str]] = {split: [] for split in SPLIT_NAMES}
    for name in class_names:
        head = name.split(".", 1)[0]
        if not head.isdigit():
            raise PrepareError(f"FRN CUB rule: class name {name!r} does not start with its id ('001.')")
        class_id = int(head)
        split = "train" if class_id % 2 == 0 else ("val" if class_id % 4 == 1 else "test")
        result[split].append(name)
    return result


def match_split(split: ClassSplit, classes: Sequence[str], what: str) -> None:
    """Check that the split lists exactly the source's classes; else say which differ."""
    listed = set(split.split_of())
    present = set(classes)
    if listed == present:
        return
    parts = []
    missing = sorted(listed - present)
    extra = sorted(present - listed)
    if missing:
        parts.append(f"{len(missing)} classes of the split are not in the source ({_some(missing)})")
    if extra:
        parts.append(f"{len(extra)} classes of the source are in no split ({_some(extra)})")
    raise PrepareError(
        f"{what}: split {split.name!r} ({split.file}) does not match the source's "
        f"{len(present)} classes: {'; '.join(parts)}. Pass --split-file with a split of "
        "these classes."
    )


def _some(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")
