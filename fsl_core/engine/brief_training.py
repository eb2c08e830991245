"""A trained model at hand: loaded from a checkpoint when one is given, else trained briefly on the spot.

The visualisation notebooks (masks and reconstructions, Grad-CAM) look at trained models. A user brings a
checkpoint; a student without one gets a model trained for a few quick-protocol epochs into the run folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from fsl_core.engine.config import TrainConfig, config_differences, epochs_last_asked
from fsl_core.engine.train import train
from fsl_core.models import EpisodicModel, load_checkpoint, load_model
from fsl_core.models.checkpoints import trained_image_size
from fsl_core.run_folder import REPLACED_PREFIX, RunFolderConflict, in_use, read_manifest
from fsl_core.runtime import resolve_device

TRAINING_FOLDERS = ("*/*/train", "*/*/train/*")
"""Where the notebooks keep their brief trainings, below the output root: ``<notebook>/<run>/train`` (05, 08) and
``<notebook>/<run>/train/<model>`` (00, 06)."""


def finished_training_with(settings: dict[str, Any], under: str | Path, besides: str | Path) -> Path | None:
    """The newest training folder below ``under`` (``TRAINING_FOLDERS``), other than ``besides``, whose run has
    the very settings of ``train(**settings)`` (``config_differences``: none but where it ran) and trained exactly
    its epochs, not more (a run trained on is another model), while no process writes it; files moved aside
    (``replaced-*``) are not runs. None when there is none. Such a run is what training here again would give."""
    wanted = TrainConfig.from_dict(settings).to_dict()
    found = []
    for pattern in TRAINING_FOLDERS:
        for folder in Path(under).glob(pattern):
            if (
                any(part.startswith(REPLACED_PREFIX) for part in folder.relative_to(under).parts)
                or folder.resolve() == Path(besides).resolve()
                or not (folder / "metrics.csv").is_file()
            ):
                continue
            try:
                manifest = read_manifest(folder)
                rows = len((folder / "metrics.csv").read_text().splitlines()) - 1
            except (RunFolderConflict, OSError, ValueError):
                continue
            if (
                manifest is not None
                and manifest["kind"] == "train"
                and not config_differences(manifest["identity"], wanted)
                and rows == epochs_last_asked(folder) == wanted["epochs"]
                and any((folder / name).is_file() for name in ("best.pt", "last.pt"))
                and not in_use(folder)
            ):
                found.append(((folder / "metrics.csv").stat().st_mtime, folder))
    return max(found)[1] if found else None


def checkpoint_or_brief_training(
    model: str,
    checkpoint: str | Path | None,
    run_dir: str | Path,
    *,
    data_root: str | Path,
    backbone: str = "conv4",
    options: dict[str, Any] | None = None,
    image_size: int = 84,
    epochs: int = 5,
    episodes_per_epoch: int = 20,
    query: int = 8,
    lr: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "auto",
    accepted: tuple[str, ...] | None = None,
    threads: int = 0,
    reuse_under: str | Path | None = None,
) -> tuple[EpisodicModel, Path, int]:
    """``(model in eval mode on device, its checkpoint, the input size it was trained at)``.

    With ``checkpoint`` the model is loaded from it (its recorded training size, else ``image_size``).
    Without, ``model`` is trained with the "quick" protocol (5-way 5-shot episodes, ``query`` queries per
    class, validated once at the end on ``query`` queries) into ``run_dir``, and its best checkpoint loaded: the
    run there is continued (or returned, when finished) if it has the same settings, else moved aside into
    ``run_dir/replaced-<time>/`` (a notebook re-run after its parameters changed).
    ``accepted``: the model names the caller can use; a checkpoint of another model raises a ValueError.
    ``threads``: CPU threads of the training (``TrainConfig.threads``; 0: every core this process may use).
    ``reuse_under``: an output root (the notebooks give theirs) whose finished training with these very settings,
    by another notebook run, is loaded instead of training again (``finished_training_with``), and said so.
    """
    if checkpoint:
        path = Path(checkpoint)
        content = load_checkpoint(path)  # read once: the size it records, then the model
        size = trained_image_size(content) or image_size
    else:
        settings = dict(
            protocol="quick",
            model=model,
            backbone=backbone,
            options=options or {},
            data_root=str(data_root),
            run_dir=str(run_dir),
            image_size=image_size,
            epochs=epochs,
            episodes_per_epoch=episodes_per_epoch,
            query=query,
            val_query=query,
            lr=lr,
            val_every=epochs,
            seed=seed,
            device=str(device),
            threads=threads,
            overwrite=True,  # other settings than the run there (a notebook re-run after an edit): moved aside
        )
        earlier = None
        if reuse_under is not None and not (Path(run_dir) / "metrics.csv").is_file():
            earlier = finished_training_with(settings, reuse_under, run_dir)
        if earlier is not None:
            path = earlier / "best.pt" if (earlier / "best.pt").is_file() else earlier / "last.pt"
            print(f"{model}: reusing {path}, a finished training with these very settings: nothing to train")
            sys.stdout.flush()
        else:
            path = train(**settings).checkpoint
        content, size = load_checkpoint(path), image_size
    loaded = load_model(content, device=resolve_device(device), read_from=path).eval()
    if accepted is not None and loaded.config["name"] not in accepted:
        raise ValueError(
            f"{path} holds a {loaded.config['name']} model; expected one of {list(accepted)}: give the checkpoint "
            "of such a model, or none to train one here"
        )
    return loaded, path, size


def same_image_size(sizes: dict[str, int]) -> int:
    """The one input size of several models ({name: size}); models of different sizes raise a ValueError."""
    if len(set(sizes.values())) != 1:
        raise ValueError(
            f"the models were trained at different image sizes {sizes}; compare models of one size"
        )
    return next(iter(sizes.values()))
