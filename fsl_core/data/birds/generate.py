"""Writing a complete birds set, and reusing one that is already there.

The set is drawn into a temporary sibling folder (classes in parallel processes) and renamed into place at
the end, with the completion marker written last, so an interrupted run never leaves a set that looks
complete. Output (the few-shot folder layout, see ``fsl_core.data.folder``)::

    OUT/{train,val,test}/<class>/<NNN>.png        images
    OUT/parts/{train,val,test}/<class>/<NNN>.png  part maps (uint8 ids, names in metadata.json)
    OUT/metadata.json  OUT/card.json  OUT/README.md  OUT/.complete (written last)
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fsl_core.progress import note, tqdm

from ...runtime import atomic_write_bytes, atomic_write_json, blocking_file, way_out
from ..images import FewShotDataError
from .card import build_card, readme_text
from .ground_truth import build_metadata
from .nearest_neighbour import nn_pixel_accuracy
from .render import render_image
from .taxonomy import GENERATOR, GENERATOR_VERSION, BirdSettings, GroupSpec, SpeciesSpec, make_taxonomy

COMPLETE_MARKER = ".complete"


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _file_name(index: int, count: int) -> str:
    return f"{index:0{max(3, len(str(count - 1)))}d}.png"


def _render_class(job: tuple[BirdSettings, SpeciesSpec, tuple[GroupSpec, ...], str]) -> str:
    """Render and write every image and part map of one class (runs in a worker process)."""
    settings, species, groups, out = job
    image_dir = Path(out) / species.split / species.name
    part_dir = Path(out) / "parts" / species.split / species.name
    image_dir.mkdir(parents=True, exist_ok=True)
    part_dir.mkdir(parents=True, exist_ok=True)
    for i in range(settings.images_per_class):
        rgb, part_map = render_image(species, groups, settings.seed, i, settings.image_size)
        name = _file_name(i, settings.images_per_class)
        (image_dir / name).write_bytes(_png_bytes(rgb))
        (part_dir / name).write_bytes(_png_bytes(part_map))
    return species.name


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def _is_generator_output(path: Path) -> bool:
    """A folder written by this generator (complete, or at least carrying its metadata)."""
    if _read_marker(path) is not None:
        return True
    try:
        return json.loads((path / "metadata.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def is_complete(out_dir: str | Path, settings: BirdSettings | Mapping[str, Any] | None = None) -> bool:
    """True when ``out_dir`` holds a complete set (with ``settings``: made by this version of the generator with
    them; a mapping names only the settings that must match)."""
    marker = _read_marker(Path(out_dir))
    if marker is None:
        return False
    if settings is None:
        return True
    wanted = asdict(settings) if isinstance(settings, BirdSettings) else settings
    made = marker.get("settings") if isinstance(marker.get("settings"), dict) else {}
    return marker.get("version") == GENERATOR_VERSION and all(made.get(k) == v for k, v in wanted.items())


def _replaced_settings(out_dir: Path, wanted: BirdSettings) -> str | None:
    """What differs between the complete set in ``out_dir`` and the one ``wanted`` (the settings, e.g. "seed 0 →
    5", or the generator's version), None when ``out_dir`` holds no complete set or the same one."""
    marker = _read_marker(out_dir)
    if marker is None or is_complete(out_dir, wanted):
        return None
    made = marker.get("settings") if isinstance(marker.get("settings"), dict) else {}
    changes = [
        f"{name} {made.get(name)!r} → {value!r}"
        for name, value in asdict(wanted).items()
        if made.get(name) != value
    ]
    if marker.get("version") != GENERATOR_VERSION:
        changes.append(
            f"drawn by generator version {marker.get('version')!r}, this one is {GENERATOR_VERSION!r}"
        )
    return ", ".join(changes)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporary siblings left by killed runs (their process is gone)."""
    for candidate in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        try:
            pid = int(candidate.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
        except OSError:
            pass


def generate_birds(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 84,
    images_per_class: int = 40,
    groups: int = 10,
    species_per_group: int = 10,
    progress: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate the birds set into ``out_dir``: a new or empty folder, an unfinished output of this generator, a
    complete one made with the same settings (drawn again, to the same bytes), or with ``overwrite`` a complete
    one made with other settings or by another version of the generator (replaced; refused otherwise, since runs
    trained on it would then be evaluated on other images).

    Everything is written into a temporary sibling folder that is renamed into place at the end, with the
    completion marker written last, so an interrupted run never leaves a complete-looking set.

    Args:
        out_dir: target folder; must be absent, empty, or an earlier output of this generator.
        seed, image_size, images_per_class, groups, species_per_group: the settings (same settings → the same
            bytes in every file).
        progress: show a progress bar.
        workers: processes drawing classes in parallel (default: the CPU count, at most 8; at least 1).
        overwrite: replace a complete set made with other settings.

    Returns:
        ``out_dir`` as a Path.
    """
    settings = BirdSettings(seed, image_size, images_per_class, groups, species_per_group).validate()
    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FewShotDataError(f"output path {out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not _is_generator_output(out_dir):
            raise FewShotDataError(
                f"refusing to write into {out_dir}: the folder is not empty and is not an output of the "
                f"birds generator (no {COMPLETE_MARKER} or metadata.json of {GENERATOR}); choose an empty or "
                "new folder"
            )
        if not overwrite and (changes := _replaced_settings(out_dir, settings)) is not None:
            flags = " ".join(
                f"--{name.replace('_', '-')} {value}" for name, value in asdict(settings).items()
            )
            raise FewShotDataError(
                f"{out_dir} holds a complete birds set that these settings would replace ({changes}), and runs "
                "trained on it would then be evaluated on other images; choose another folder, or replace it on "
                f"purpose: fsl-birds {out_dir} {flags} --overwrite{way_out(' (from Python: overwrite=True)', '')}"
            )
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise FewShotDataError(f"workers={workers!r}: expected a positive number of processes, or None")
    if (blocking := blocking_file(out_dir.parent)) is not None:
        raise FewShotDataError(
            f"cannot make {out_dir}: {blocking} is a file, not a folder; choose another folder"
        )
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    needed = (
        settings.groups * settings.species_per_group * settings.images_per_class * settings.image_size**2 * 3
    )
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise FewShotDataError(
            f"the set would take about {needed / 1e9:.3g} GB (an image and its part map at about 3 bytes per "
            f"pixel) and {existing} has {free / 1e9:.3g} GB free; use fewer or smaller images "
            "(--images-per-class, --image-size)"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    temp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        group_specs, species = make_taxonomy(settings)
        jobs = [(settings, sp, tuple(group_specs), str(temp)) for sp in species]
        n_workers = min(workers if workers is not None else min(os.cpu_count() or 1, 8), len(jobs))
        bar = tqdm(total=len(jobs), desc="drawing bird species", unit="class", disable=not progress)
        if n_workers <= 1:
            for job in jobs:
                _render_class(job)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                for _ in pool.map(_render_class, jobs, chunksize=max(1, len(jobs) // (8 * n_workers))):
                    bar.update()
        bar.close()
        atomic_write_json(build_metadata(settings, group_specs, species), temp / "metadata.json")
        test_classes = sum(sp.split == "test" for sp in species)
        nn = nn_pixel_accuracy(temp, "test", way=min(5, test_classes), episodes=1000, seed=settings.seed)
        card = build_card(settings, species, nn)
        atomic_write_json(card, temp / "card.json")
        atomic_write_bytes(readme_text(card).encode(), temp / "README.md")
        marker = {"generator": GENERATOR, "version": GENERATOR_VERSION, "settings": asdict(settings)}
        atomic_write_json(marker, temp / COMPLETE_MARKER)
        _move_into_place(temp, out_dir, settings)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return out_dir


def _move_into_place(temp: Path, out_dir: Path, settings: BirdSettings) -> None:
    """Rename the finished temporary folder to ``out_dir``, moving an earlier output aside first."""
    old = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
        else:
            out_dir.rmdir()
    try:
        os.replace(temp, out_dir)
    except OSError:
        if is_complete(out_dir, settings):  # another process finished the same set first
            return
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def ensure_birds(
    out_dir: str | Path, progress: bool = True, workers: int | None = None, **settings: Any
) -> Path:
    """Reuse the complete set in ``out_dir`` when this version of the generator made it with the ``settings``
    given (those not given may have any value), else generate it with ``settings`` (the others at their
    defaults). A complete set made with other settings, or by another version of the generator, is never
    replaced here: the ``FewShotDataError`` says how to replace it on purpose (``generate_birds`` with
    ``overwrite=True``, ``fsl-birds --overwrite``).

    ``settings``: seed, image_size, images_per_class, groups, species_per_group (defaults as
    ``generate_birds``).
    """
    wanted = BirdSettings(**settings).validate()
    if is_complete(out_dir, settings):
        return Path(out_dir).absolute()
    if progress:  # the notebook runner's line: the set is drawn once, then reused
        note(f"generating the embedded birds set into {Path(out_dir).absolute()} (once; later runs reuse it)")
    return generate_birds(out_dir, **asdict(wanted), progress=progress, workers=workers)
