"""Write a read source into the few-shot folder layout: ROOT/{train,val,test}/<class>/<image>, plus
``val_pre/`` and ``test_pre/`` (Resize([92, 92]) -> CenterCrop(84), as FRN's ``get_pre_folder``) and
``prepare_summary.json``.

Every file is written through a temporary file and an atomic rename, so an interrupted run leaves no
half-written image that looks finished; a re-run skips the images already written.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ...progress import tqdm
from ...runtime import atomic_write_bytes, new_file_mode
from ..images import ImageLoadError, load_rgb
from .source import Box, PrepareError, SourceDataset
from .splits import SPLIT_NAMES, ClassSplit, match_split

SUMMARY_NAME = "prepare_summary.json"
SUMMARY_VERSION = 1
PRE_RESIZE = 92
PRE_CROP = 84
IMAGE_FORMATS = {"png": ".png", "jpeg": ".jpg"}
JPEG_QUALITY = 95
#: Settings that must agree between a destination's summary and a new run into it.
SETTING_KEYS = ("dataset", "source", "split", "split_digest", "crop", "image_format")


def pre_resize(image: Image.Image) -> Image.Image:
    """The evaluation view of FRN's ``*_pre`` folders: Resize([92, 92]) (bilinear) -> CenterCrop(84)."""
    resized = image.resize((PRE_RESIZE, PRE_RESIZE), Image.Resampling.BILINEAR)
    offset = int(round((PRE_RESIZE - PRE_CROP) / 2.0))
    return resized.crop((offset, offset, offset + PRE_CROP, offset + PRE_CROP))


def encode(image: Image.Image, image_format: str) -> bytes:
    """PNG (lossless) or JPEG at quality 95."""
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


@dataclass(frozen=True)
class Job:
    """One source image and the file(s) it becomes."""

    source: Path
    box: Box | None
    output: Path
    pre: Path | None


def _run_job(job: Job, image_format: str, mode: int) -> tuple[str, str | None]:
    """("done" | "written" | "skipped", reason) for one image."""
    if job.output.is_file() and (job.pre is None or job.pre.is_file()):
        return "done", None
    try:
        image = load_rgb(job.source)
    except ImageLoadError as error:
        return "skipped", str(error)
    if job.box is not None:
        box = job.box.clamped(*image.size)
        if box is None:
            return (
                "skipped",
                f"bounding box {job.box.as_tuple()} lies outside the {image.width}x{image.height} image",
            )
        image = image.crop(box.as_tuple())
    if job.pre is not None:
        atomic_write_bytes(encode(pre_resize(image), image_format), job.pre, mode)
    atomic_write_bytes(encode(image, image_format), job.output, mode)
    return "written", None


def read_summary(root: Path) -> dict[str, Any] | None:
    """The ``prepare_summary.json`` of ``root`` or None; a PrepareError if it exists but is not readable."""
    path = root / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PrepareError(f"{path} is not a readable preparation summary: {error}") from error
    if not isinstance(summary, dict):
        raise PrepareError(f"{path} is not a preparation summary (expected a JSON object)")
    return summary


def check_destination(dst: Path, src: Path, settings: dict[str, Any]) -> None:
    """Refuse a destination inside the source, or one that holds another data set or unrelated files."""
    if dst == src or src in dst.parents:
        raise PrepareError(
            f"destination {dst} is inside the source folder {src}; the source is never written to, "
            "choose a destination outside it"
        )
    if dst.exists() and not dst.is_dir():
        raise PrepareError(f"destination {dst} exists and is not a folder")
    summary = read_summary(dst)
    if summary is not None:
        recorded = summary.get("settings", {})
        differences = [
            f"{key} {recorded.get(key)!r} (now {settings[key]!r})"
            for key in SETTING_KEYS
            if recorded.get(key) != settings[key]
        ]
        if differences:
            raise PrepareError(
                f"destination {dst} already holds a preparation with other settings: "
                f"{'; '.join(differences)}. Choose another destination or delete it first."
            )
        return
    if dst.is_dir():
        entries = sorted(p.name for p in dst.iterdir())
        if entries:
            raise PrepareError(
                f"destination {dst} is not empty and holds no {SUMMARY_NAME} (it holds "
                f"{entries[:3]}{' ...' if len(entries) > 3 else ''}); choose an empty or new folder"
            )


def _remove_stale_temporaries(dst: Path) -> None:
    for split in (*SPLIT_NAMES, "val_pre", "test_pre"):
        folder = dst / split
        if folder.is_dir():
            for stale in folder.glob("*/.*.tmp"):
                stale.unlink(missing_ok=True)


def _jobs(source: SourceDataset, split: ClassSplit, dst: Path, image_format: str) -> list[Job]:
    split_of = split.split_of()
    suffix = IMAGE_FORMATS[image_format]
    jobs, owner = [], {}
    for item in source.images:
        part = split_of[item.class_name]
        folder = source.folder_names[item.class_name]
        output = dst / part / folder / f"{item.output_stem}{suffix}"
        if output in owner:
            raise PrepareError(
                f"{source.name}: {source.relative(item.path)} and {source.relative(owner[output])} "
                f"would both become {output.relative_to(dst)}"
            )
        owner[output] = item.path
        pre = dst / f"{part}_pre" / folder / output.name if part != "train" else None
        jobs.append(Job(item.path, item.box, output, pre))
    return jobs


def _map(function: Any, jobs: list[Job], workers: int, progress: bool, label: str) -> Iterable[Any]:
    bar = tqdm(total=len(jobs), desc=label, unit="img", disable=not progress)
    try:
        # the bar moves before each result is handed on: a consumer that stops after the last one (zip with
        # the jobs) never resumes this generator, and the bar would end one short
        if workers <= 1:
            for job in jobs:
                result = function(job)
                bar.update()
                yield result
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                for result in pool.map(function, jobs):
                    bar.update()
                    yield result
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _count_outputs(dst: Path, suffix: str) -> dict[str, dict[str, int]]:
    counts = {}
    for part in SPLIT_NAMES:
        folders = [p for p in sorted((dst / part).iterdir()) if p.is_dir()] if (dst / part).is_dir() else []
        sizes = [
            sum(1 for f in folder.iterdir() if f.suffix == suffix and not f.name.startswith("."))
            for folder in folders
        ]
        counts[part] = {"classes": sum(1 for n in sizes if n), "images": sum(sizes)}
    return counts


def prepare_folder(
    source: SourceDataset,
    dst: str | Path,
    split: ClassSplit,
    *,
    crop: bool,
    image_format: str = "png",
    workers: int | None = None,
    progress: bool = True,
    echo: bool = True,
) -> dict[str, Any]:
    """Write ``source`` into ``dst`` in the few-shot folder layout under ``split``; return the summary.

    Re-runnable: images whose output files exist are skipped. ``image_format``: "png" (lossless, as FRN's
    prepared folders) or "jpeg" (quality 95). Unreadable images are skipped and listed with the reason.
    """
    if image_format not in IMAGE_FORMATS:
        raise PrepareError(f"image_format={image_format!r}; expected one of {sorted(IMAGE_FORMATS)}")
    match_split(split, source.classes, source.name)
    dst = Path(dst).expanduser().resolve()
    settings = {
        "dataset": source.name,
        "source": str(source.root),
        "split": split.name,
        "split_digest": split.digest(),
        "crop": crop,
        "image_format": image_format,
    }
    check_destination(dst, source.root, settings)
    mode = new_file_mode()  # read here, before the writing threads start
    summary: dict[str, Any] = {
        "format_version": SUMMARY_VERSION,
        "status": "incomplete",
        "settings": settings,
        "split_file": split.file,
        "split_classes": split.counts(),
        "pre": {
            "folders": ["val_pre", "test_pre"],
            "resize": [PRE_RESIZE, PRE_RESIZE],
            "center_crop": PRE_CROP,
        },
    }
    dst.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes((json.dumps(summary, indent=2) + "\n").encode(), dst / SUMMARY_NAME, mode)
    _remove_stale_temporaries(dst)

    jobs = _jobs(source, split, dst, image_format)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    tally = {"written": 0, "done": 0, "skipped": 0}
    skipped = [{"path": path, "reason": reason} for path, reason in source.problems]
    run = lambda job: _run_job(job, image_format, mode)
    for job, (outcome, reason) in zip(jobs, _map(run, jobs, workers, progress, f"prepare {source.name}")):
        tally[outcome] += 1
        if reason is not None:
            skipped.append({"path": source.relative(job.source), "reason": reason})

    counts = _count_outputs(dst, IMAGE_FORMATS[image_format])
    summary.update(
        {
            "status": "complete",
            "splits": counts,
            "images": {"written": tally["written"], "already_done": tally["done"], "skipped": len(skipped)},
            "skipped": skipped,
        }
    )
    atomic_write_bytes((json.dumps(summary, indent=2) + "\n").encode(), dst / SUMMARY_NAME, mode)
    if echo:
        print(format_summary(summary, dst))
    return summary


def format_summary(summary: dict[str, Any], root: Path, limit: int = 10) -> str:
    """A short text table of a summary (classes and images per split, skipped files)."""
    settings = summary.get("settings", {})
    lines = []
    if settings:
        how = "cropped to boxes" if settings.get("crop") else "uncropped"
        lines.append(
            f"{settings.get('dataset')} split {settings.get('split')} ({how}, "
            f"{settings.get('image_format')}) from {settings.get('source')} -> {root}"
        )
    lines.append(f"  {'split':<6} {'classes':>7} {'images':>7}")
    for part, count in summary.get("splits", {}).items():
        lines.append(f"  {part:<6} {count['classes']:>7} {count['images']:>7}")
    images = summary.get("images")
    if images:
        lines.append(
            f"  written {images['written']}, already there {images['already_done']}, "
            f"skipped {images['skipped']}"
        )
    skipped = summary.get("skipped", [])
    for entry in skipped[:limit]:
        lines.append(f"  skipped {entry['path']}: {entry['reason']}")
    if len(skipped) > limit:
        lines.append(f"  ... {len(skipped) - limit} more skipped files listed in {root / SUMMARY_NAME}")
    return "\n".join(lines)
