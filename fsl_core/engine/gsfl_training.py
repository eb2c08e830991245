"""Ordinary (non-episodic) batch training of GSFL-Net over the base classes (Li & Monga, BMVC 2019).

The two stages of the authors' release:

1. backbone frozen (parameters fixed, BatchNorm statistics too), encoders, decoder and classifier trained
   with Adam, lr 1e-3, weight decay 1e-5;
2. everything trained with Adam, lr 1e-4 (same weight decay).

Each stage's learning rate is reduced on a plateau of *validation* accuracy when a validation set is given
(the release steps it on test accuracy, which leaks the test set); without one the rate stays constant.
The centres follow their update rule inside ``model.batch_loss`` at every step.

Also here: a brief supervised warm-up of a bare backbone (a linear classifier on its pooled last map), used
to form the class groups when no pretrained backbone is at hand; the per-class split of a data set into
fitting and held-out images; and the classifier accuracy on a data set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..models.checkpoints import load_checkpoint, save_model
from ..models.gsfl import GSFLClassifier
from ..progress import report, tqdm
from ..run_folder import claim_run_folder
from ..runtime import evaluation_mode, resolve_device

CHECKPOINT_NAME = "gsfl_last.pt"
BEST_NAME = "gsfl_best.pt"


@dataclass
class GSFLTrainConfig:
    """Settings of ``train_gsfl``.

    stage1_epochs / stage2_epochs: epochs of the frozen-backbone and the full stage (0 skips a stage);
    stage1_lr / stage2_lr, weight_decay: Adam settings (release: 1e-3, 1e-4, 1e-5);
    lr_factor, lr_patience: ReduceLROnPlateau on validation accuracy (only with a validation set);
    run_dir: folder for ``gsfl_last.pt`` (every epoch) and ``gsfl_best.pt`` (best validation accuracy), a run
    folder of one run (``fsl_core.run_folder``: a folder holding another run is refused);
    resume: continue from ``run_dir/gsfl_last.pt`` when it exists;
    overwrite: when ``run_dir`` holds another run, move its files aside into ``replaced-<time>/`` and start anew.
    """

    stage1_epochs: int = 10
    stage2_epochs: int = 10
    batch_size: int = 32
    stage1_lr: float = 1e-3
    stage2_lr: float = 1e-4
    weight_decay: float = 1e-5
    lr_factor: float = 0.1
    lr_patience: int = 3
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    run_dir: str | None = None
    resume: bool = True
    overwrite: bool = False
    progress: bool = True

    # Settings that may differ when a run is continued: how it executes, and the epochs (a run may grow).
    RUNTIME = ("device", "num_workers", "run_dir", "resume", "overwrite", "progress")
    LENGTH = ("stage1_epochs", "stage2_epochs")

    def __post_init__(self) -> None:
        for name in ("stage1_epochs", "stage2_epochs", "lr_patience", "num_workers", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"GSFLTrainConfig.{name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                f"GSFLTrainConfig.batch_size must be a positive integer, got {self.batch_size!r}"
            )
        for name in ("stage1_lr", "stage2_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"GSFLTrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0 or not 0 < self.lr_factor < 1:
            raise ValueError(
                f"GSFLTrainConfig: weight_decay={self.weight_decay} must be >= 0 and lr_factor={self.lr_factor} "
                "in (0, 1)"
            )
        if self.run_dir is not None:
            self.run_dir = str(self.run_dir)


def split_per_class(
    targets: Sequence[int], held_out_fraction: float = 0.25, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split the images of every class into (fit indices, held-out indices), a fixed fraction per class.

    Each class keeps at least one image on each side (so it needs two images). Deterministic for a seed.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction={held_out_fraction}; expected a fraction in (0, 1)")
    labels = np.asarray(targets)
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise ValueError(f"class {int(label)} has {len(members)} image(s); splitting needs at least 2")
        members = rng.permutation(members)
        n_held = min(max(1, round(held_out_fraction * len(members))), len(members) - 1)
        held.extend(members[:n_held].tolist())
        fit.extend(members[n_held:].tolist())
    return sorted(fit), sorted(held)


def _loader(data: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=False,
    )


@torch.no_grad()
def classifier_accuracy(
    model: GSFLClassifier,
    data: Dataset,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    num_workers: int = 0,
) -> float:
    """Top-1 accuracy in percent of ``model.classify`` on ``data`` (labels are base-class ids); eval mode."""
    device = resolve_device(device)
    correct = total = 0
    with evaluation_mode(model, device):
        for images, labels in _loader(data, batch_size, False, 0, num_workers):
            labels = torch.as_tensor(labels).to(device)
            correct += int((model.classify(images.to(device)).argmax(1) == labels).sum())
            total += labels.numel()
    if total == 0:
        raise ValueError("classifier_accuracy: the data set is empty")
    return 100.0 * correct / total


def pretrain_backbone(
    backbone: nn.Module,
    data: Dataset,
    num_classes: int,
    epochs: int = 5,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Briefly train a bare backbone with a linear classifier on its pooled last map (Adam, cross-entropy).

    Stands in for the pretrained backbone GSFL groups its classes with. Returns one row per epoch
    {"epoch", "loss", "train_accuracy"}. The linear classifier is discarded.
    """
    device = resolve_device(device)
    torch.manual_seed(seed)
    backbone.to(device).train()
    linear = nn.Linear(int(backbone.channels[1]), int(num_classes)).to(device)
    optimiser = torch.optim.Adam(
        [*backbone.parameters(), *linear.parameters()], lr=lr, weight_decay=weight_decay
    )
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        loss_sum = correct = seen = 0.0
        loader = _loader(data, batch_size, True, seed * 1000 + epoch, num_workers)
        for images, labels in tqdm(
            loader, desc=f"warm-up {epoch + 1}/{epochs}", leave=False, disable=not progress
        ):
            images, labels = images.to(device), torch.as_tensor(labels).to(device)
            logits = linear(backbone(images)[1].mean(dim=(2, 3)))
            loss = F.cross_entropy(logits, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += float(loss.detach()) * len(labels)
            correct += float((logits.argmax(1) == labels).sum())
            seen += len(labels)
        history.append(
            {"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": 100.0 * correct / seen}
        )
        if progress:  # the bar above vanishes: one line per epoch stays
            row = history[-1]
            report(
                f"warm-up {epoch + 1}/{epochs}: loss {row['loss']:.4f}, train {row['train_accuracy']:.2f} %, "
                f"{time.perf_counter() - started:.0f} s"
            )
    backbone.eval()
    return history


def _stage_parameters(model: GSFLClassifier, stage: int) -> list[nn.Parameter]:
    frozen = stage == 1
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(not frozen)
    return [p for p in model.parameters() if p.requires_grad]


def _make_stage(model: GSFLClassifier, stage: int, config: GSFLTrainConfig):
    lr = config.stage1_lr if stage == 1 else config.stage2_lr
    optimiser = torch.optim.Adam(_stage_parameters(model, stage), lr=lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, mode="max", factor=config.lr_factor, patience=config.lr_patience
    )
    return optimiser, scheduler


def train_gsfl(
    model: GSFLClassifier,
    train_data: Dataset,
    config: GSFLTrainConfig | None = None,
    val_data: Dataset | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` with standard batches of ``train_data`` (items (image, base-class id)) in two stages.

    ``val_data`` (held-out images of the same classes) drives the learning-rate schedule and the best
    checkpoint. Checkpoints ({"config", "state_dict" (buffers included: centres, patterns, groups),
    "optimizer", "scheduler", "stage", "epoch", "history", "train_config"}) are written atomically to
    ``config.run_dir`` and load with ``fsl_core.models.load_model``. Returns one row per epoch:
    {"stage", "epoch", "loss", "ce", "rec", "d", "s", "train_accuracy", "val_accuracy", "lr"}.
    """
    config = config or GSFLTrainConfig()
    if not isinstance(model, GSFLClassifier):
        raise TypeError(f"train_gsfl trains a GSFLClassifier, got {type(model).__name__}")
    device = resolve_device(config.device)
    model.to(device)
    run_dir = Path(config.run_dir) if config.run_dir else None
    history: list[dict[str, Any]] = []
    start_stage, start_epoch = 1, 0
    resumed: dict[str, Any] | None = None
    folder = None
    if run_dir is not None:
        settings = {k: v for k, v in asdict(config).items() if k not in config.RUNTIME + config.LENGTH}
        identity = {"settings": settings, "model": dict(model.config)}

        def cannot_continue(saved: dict[str, Any]) -> list[str]:
            reasons = [
                f"{key}: {saved.get(key)!r} in the run, {value!r} now"
                for key, value in identity.items()
                if saved.get(key) != value
            ]
            if (run_dir / CHECKPOINT_NAME).is_file() and not config.resume:
                reasons.append(f"it holds {CHECKPOINT_NAME} and resume=False was asked")
            return reasons

        folder = claim_run_folder(
            run_dir, "gsfl", identity, same_run=cannot_continue, overwrite=config.overwrite
        )
    try:
        if run_dir is not None and (run_dir / CHECKPOINT_NAME).is_file():
            resumed = load_checkpoint(run_dir / CHECKPOINT_NAME)
            model.load_state_dict(resumed["state_dict"])
            history = list(resumed["history"])
            start_stage, start_epoch = int(resumed["stage"]), int(resumed["epoch"])
        best = max(
            (row["val_accuracy"] for row in history if row.get("val_accuracy") is not None), default=-1.0
        )
        for stage, epochs in ((1, config.stage1_epochs), (2, config.stage2_epochs)):
            if stage < start_stage or epochs == 0:
                continue
            first = start_epoch if stage == start_stage else 0
            if first >= epochs:
                continue
            optimiser, scheduler = _make_stage(model, stage, config)
            if resumed is not None and stage == start_stage and first > 0:
                optimiser.load_state_dict(resumed["optimizer"])
                scheduler.load_state_dict(resumed["scheduler"])
            for epoch in range(first, epochs):
                torch.manual_seed(config.seed * 100_003 + stage * 1009 + epoch)
                model.train()
                if stage == 1:
                    model.backbone.eval()
                sums = {"loss": 0.0, "ce": 0.0, "rec": 0.0, "d": 0.0, "s": 0.0}
                correct = seen = 0
                loader = _loader(
                    train_data,
                    config.batch_size,
                    True,
                    config.seed * 1009 + stage * 101 + epoch,
                    config.num_workers,
                )
                started = time.perf_counter()
                bar = tqdm(
                    loader,
                    desc=f"GSFL stage {stage} epoch {epoch + 1}/{epochs}",
                    leave=False,
                    disable=not config.progress,
                )
                for images, labels in bar:
                    images, labels = images.to(device), torch.as_tensor(labels).to(device)
                    loss, logits = model.batch_loss(images, labels)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    n = labels.numel()
                    sums["loss"] += float(loss.detach()) * n
                    for key in ("ce", "rec", "d", "s"):
                        sums[key] += model.last_terms[key] * n
                    correct += int((logits.argmax(1) == labels).sum())
                    seen += n
                row: dict[str, Any] = {
                    "stage": stage,
                    "epoch": epoch + 1,
                    **{k: v / seen for k, v in sums.items()},
                    "train_accuracy": 100.0 * correct / seen,
                    "val_accuracy": None,
                    "lr": optimiser.param_groups[0]["lr"],
                }
                if val_data is not None:
                    row["val_accuracy"] = classifier_accuracy(
                        model, val_data, config.batch_size, device, config.num_workers
                    )
                    scheduler.step(row["val_accuracy"])
                history.append(row)
                if config.progress:  # the bar above vanishes: one line per epoch stays
                    validated = "" if row["val_accuracy"] is None else f", val {row['val_accuracy']:.2f} %"
                    report(
                        f"GSFL stage {stage} epoch {epoch + 1}/{epochs}: loss {row['loss']:.4f}, "
                        f"train {row['train_accuracy']:.2f} %{validated}, {time.perf_counter() - started:.0f} s"
                    )
                if run_dir is not None:
                    content = {
                        "optimizer": optimiser.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "stage": stage,
                        "epoch": epoch + 1,
                        "history": history,
                        "train_config": asdict(config),
                    }
                    save_model(model, run_dir / CHECKPOINT_NAME, **content)
                    if row["val_accuracy"] is not None and row["val_accuracy"] > best:
                        best = row["val_accuracy"]
                        save_model(
                            model, run_dir / BEST_NAME, stage=stage, epoch=epoch + 1, val_accuracy=best
                        )
    finally:
        if folder is not None:
            folder.release()
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(True)
    model.eval()
    return history


__all__ = [
    "GSFLTrainConfig",
    "classifier_accuracy",
    "pretrain_backbone",
    "split_per_class",
    "train_gsfl",
]
