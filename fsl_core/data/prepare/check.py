"""Validate a prepared few-shot folder: ours, or FRN/BiFRN's `CUB_fewshot_cropped`, `cars_196`, `dogs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...runtime import some_names
from ..images import IMAGE_EXTENSIONS, ImageLoadError, image_file_problem, load_rgb
from .source import PrepareError
from .splits import SPLIT_NAMES
from .writer import SUMMARY_NAME, read_summary


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _classes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_prepared(root: str | Path, verify_images: bool = False) -> dict[str, Any]:
    """Check ROOT/{train,val,test}/<class>/<image> (+ optional val_pre/, test_pre/) and return its counts.

    Checks: each split exists and has classes with images; splits are class-disjoint; ``*_pre``
    folders mirror their split file by file; a ``prepare_summary.json`` (if any) is complete and agrees
    with the counts; every image file passes the quick check that loading a data set makes
    (``image_file_problem``), and with ``verify_images`` is decoded too. A PrepareError lists what is wrong.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise PrepareError(
            f"{root} {'is not a folder' if root.exists() else 'does not exist'}; give the folder that holds "
            "train/, val/ and test/"
        )
    problems: list[str] = []
    result: dict[str, Any] = {"root": str(root), "splits": {}, "pre": [], "prepared_by": None}
    members: dict[str, set[str]] = {}
    files: dict[str, dict[str, list[str]]] = {}
    for split in SPLIT_NAMES:
        folder = root / split
        if not folder.is_dir():
            problems.append(f"missing folder {folder}")
            continue
        per_class = {c.name: [p.name for p in _images(c)] for c in _classes(folder)}
        empty = sorted(name for name, names in per_class.items() if not names)
        if not per_class:
            problems.append(f"{folder} holds no class folders")
        if empty:
            problems.append(f"{folder}: classes without images: {empty[:5]}")
        members[split] = set(per_class)
        files[split] = per_class
        sizes = [len(v) for v in per_class.values()]
        result["splits"][split] = {
            "classes": sum(1 for n in sizes if n),
            "images": sum(sizes),
            "smallest_class": min(sizes) if sizes else 0,
        }
    for i, first in enumerate(SPLIT_NAMES):
        for second in SPLIT_NAMES[i + 1 :]:
            shared = sorted(members.get(first, set()) & members.get(second, set()))
            if shared:
                problems.append(f"classes {shared[:5]} are in both {first}/ and {second}/")
    for split in ("val", "test"):
        pre = root / f"{split}_pre"
        if not pre.is_dir():
            continue
        result["pre"].append(pre.name)
        pre_files = {c.name: [p.name for p in _images(c)] for c in _classes(pre)}
        if split in files and pre_files != files[split]:
            differing = sorted(set(pre_files) ^ set(files[split])) or sorted(
                c for c in files[split] if pre_files.get(c) != files[split][c]
            )
            problems.append(
                f"{pre.name}/ does not mirror {split}/ file by file (e.g. classes {differing[:3]})"
            )
    summary = read_summary(root)
    if summary is not None:
        result["prepared_by"] = summary.get("settings")
        if summary.get("status") != "complete":
            problems.append(
                f"{SUMMARY_NAME} says the preparation is {summary.get('status')!r}; re-run it to finish"
            )
        elif summary.get("splits"):
            for split, count in summary["splits"].items():
                found = result["splits"].get(split, {})
                if (found.get("classes"), found.get("images")) != (count.get("classes"), count.get("images")):
                    problems.append(
                        f"{split}/ has {found.get('classes')} classes / {found.get('images')} images; "
                        f"{SUMMARY_NAME} records {count.get('classes')} / {count.get('images')}"
                    )
    for folder in [root / s for s in SPLIT_NAMES] + [root / p for p in result["pre"]]:
        for class_folder in _classes(folder) if folder.is_dir() else []:
            for path in _images(class_folder):
                if problem := image_file_problem(path):  # the check every data set's loading makes
                    problems.append(f"{path.relative_to(root)}: {problem}")
                elif verify_images:
                    try:
                        load_rgb(path)
                    except ImageLoadError as error:
                        problems.append(f"{path.relative_to(root)}: {error}")
    if problems:
        raise PrepareError(f"{root} is not a valid few-shot folder: {some_names(problems, 20, '; ')}")
    return result
