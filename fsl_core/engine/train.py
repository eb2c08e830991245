"""Episodic training from scratch, resumable, on one or several processes.

``train(protocol="quick", model="hmdrn", data_root="data/birds", run_dir="outputs/train/demo")`` trains and
writes the run folder::

    run_dir/config.json   every setting, the model config, fsl_core/torch versions, git revision, device, whether
                          training ran under bfloat16 autocast (bfloat16_autocast: amp on a device that has it)
    run_dir/metrics.csv   one row per epoch: epoch, loss, train_acc, val_acc, val_ci95 (empty when not
                          validated), lr, the model's fusion weights, episodes, seconds (the whole epoch),
                          data_seconds (the part of its training spent waiting for the next episode's images;
                          with several processes, the main process's wait)
    run_dir/last.pt       resumable state after the last finished epoch (``fsl_core.models.checkpoints``)
    run_dir/best.pt       model of the best validation accuracy (``fsl_core.models.load_model`` reads it)
    run_dir/events.out.tfevents.*   the rows of metrics.csv as TensorBoard scalars, when ``tensorboard`` is
                          installed (``fsl_core.engine.tracking``); metrics.csv stays the record

    run_dir/run.json      the manifest, written first: the settings that identify the run (``fsl_core.run_folder``)

A run folder belongs to one run. Training into a folder that holds another run, or files no run wrote, stops
before any work (``RunFolderConflict``; ``overwrite=True`` moves the old files aside into ``replaced-<time>/``),
and a process writing a run folder holds its lock (a second one fails with ``RunFolderInUse``). Weights are
checked finite after every step and before every save. Calling ``train`` again with the same ``run_dir`` and
settings continues from ``last.pt``; ``epochs`` may grow on resume. Everything random is a pure
function of (seed, epoch): the episodes (``fsl_core.data`` samplers), each image's augmentation (seeded per
image from its episode, see ``episodes.py``) and dropout (generators reseeded at the start of every epoch), so
on CPU a run that is stopped after any epoch and resumed ends with exactly the weights and metrics of an
uninterrupted run (wall-clock ``seconds`` aside).

Several processes: ``torchrun --nproc_per_node=N -m fsl_core.cli.train ...`` trains with
DistributedDataParallel; each process draws different episodes, gradients are averaged, validation runs on
rank 0 and only rank 0 writes files. Episode counts and loss/accuracy in ``metrics.csv`` cover all processes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

import fsl_core
from fsl_core.data import (
    AugmentationPlanner,
    DeviceAugmentation,
    EpisodeCollate,
    FewShotFolder,
    PlannedImages,
)
from fsl_core.data.decoded import worker_sharing
from fsl_core.data.transforms import augmentation_label, augmentation_transform
from fsl_core.engine.config import TrainConfig, check_setting_names, config_differences, epochs_last_asked
from fsl_core.engine.distributed import EpisodeLoss, Processes, start_processes
from fsl_core.engine.episodes import SeededImages, TrainingEpisodes
from fsl_core.engine.evaluate import check_episodes_fit, evaluate
from fsl_core.engine.random_state import restore_rng_state, rng_state
from fsl_core.engine.tracking import open_tensorboard_log
from fsl_core.models import EpisodicModel, build_model, save_model
from fsl_core.models.checkpoints import load_checkpoint, save_checkpoint
from fsl_core.progress import PLAIN_BAR_INTERVAL, format_duration, plain_lines, report, tqdm
from fsl_core.run_folder import (
    RunFolder,
    RunFolderConflict,
    claim_run_folder,
    finished_notebook_run_holding,
    read_manifest,
)
from fsl_core.runtime import (
    Terminated,
    atomic_write_bytes,
    atomic_write_json,
    choose_cpu_threads,
    derive_seed,
    git_revision,
    native_bfloat16,
    non_finite_tensors,
    seed_everything,
    termination_as_interrupt,
    use_cpu_threads,
    way_out,
)

# Models whose constructor takes the input size (it fixes feature-map token counts).
_SIZED_MODELS = ("protonet", "frn", "bifrn", "hmdrn")


def _restart_advice() -> str:
    """The way out of a diverged run, in the words of the user at hand."""
    return (
        f"Lower {way_out('lr', '--lr')} and start again in another {way_out('run_dir', '--run-dir')} (or in this "
        f"one with {way_out('overwrite=True', '--overwrite')}), or check the data"
    )


class TrainingDiverged(RuntimeError):
    """The loss or, after a step, the weights became NaN or infinite. Nothing non-finite is ever saved, so the run
    folder's ``last.pt`` and ``best.pt`` keep the last finite state (the epoch the message names)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped training; the message says which, where, and what ``last.pt`` holds.
    ``signal_number``: the signal (``signal.SIGINT`` or ``signal.SIGTERM``)."""

    def __init__(self, message: str, signal_number: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signal_number = signal_number


@dataclass(repr=False)
class TrainResult:
    """What a training run produced.

    ``model`` holds the weights after the last epoch run (in eval mode); ``metrics`` one row per epoch (as
    metrics.csv). Accuracies are percentages. Printed, it is one line: model, folder, epochs, best validation
    and the checkpoint to use.
    """

    run_dir: Path
    config: TrainConfig
    model: EpisodicModel
    metrics: pd.DataFrame
    epochs_done: int
    best_val_acc: float | None
    best_val_ci95: float | None
    best_epoch: int | None

    def __repr__(self) -> str:
        config = self.config
        best = (
            f"best validation {self.best_val_acc:.2f} ± {self.best_val_ci95:.2f} % at epoch {self.best_epoch}"
            if self.best_val_acc is not None and self.best_val_ci95 is not None
            else "no validation"
        )
        return (
            f"TrainResult({config.model} on {config.backbone} in {self.run_dir}: {self.epochs_done} of "
            f"{config.epochs} epochs, {best}; checkpoint {self.checkpoint.name})"
        )

    @property
    def finished(self) -> bool:
        """True when every configured epoch has been trained."""
        return self.epochs_done >= self.config.epochs

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def checkpoint(self) -> Path:
        """The checkpoint to use: ``best.pt`` when validation chose one, else ``last.pt``."""
        return self.best_checkpoint if self.best_checkpoint.is_file() else self.last_checkpoint


def train(
    config: TrainConfig | dict[str, Any] | None = None,
    /,
    *,
    stop_after_epochs: int | None = None,
    rank_log: bool = False,
    **settings: Any,
) -> TrainResult:
    """Train a few-shot model episodically (see the module docstring for the run folder).

    Args:
        config: a ``TrainConfig`` or a dict of settings; ``settings`` override it (or make it alone,
            e.g. ``train(protocol="quick", model="protonet", data_root=...)``).
        stop_after_epochs: return after this many epochs of this call (the run can be resumed later).
        rank_log: every process writes ``run_dir/rank<r>.json`` with the episodes it trained on and a digest
            of its parameters (a check of multi-process training).

    Every setting is validated before any work: unknown model, backbone or option names, episodes that the
    data cannot provide, and a ``run_dir`` holding another run (``RunFolderConflict``, a ValueError) or in use
    by another process (``RunFolderInUse``). A NaN or infinite loss, or a step that makes a weight non-finite,
    raises ``TrainingDiverged``; Ctrl-C or SIGTERM (``kill``) raises ``TrainingInterrupted``; ``last.pt`` then keeps
    the last finished epoch.

    ``augmentation`` (a preset of ``fsl_core.data.AUGMENTATIONS`` or a callable) transforms the training
    images; a callable is recorded in config.json and the checkpoints by its qualified name and repr, and a
    resumed run is refused when they differ and continues with a note on stderr when they match.
    """
    config = _resolve_config(config, settings)
    if stop_after_epochs is not None and (not isinstance(stop_after_epochs, int) or stop_after_epochs < 1):
        raise ValueError(f"stop_after_epochs must be a positive integer or None, got {stop_after_epochs!r}")
    processes = start_processes(config.device)
    threads_before = torch.get_num_threads()
    run: _Run | None = None
    try:
        run = _Run(config, processes, rank_log)
        return run.run(stop_after_epochs)
    finally:
        if run is not None and run.folder is not None:
            run.folder.release()
        processes.close()
        torch.set_num_threads(threads_before)  # the caller's setting again


def _resolve_config(config: TrainConfig | dict[str, Any] | None, settings: dict[str, Any]) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config.replace(**settings)
    if isinstance(config, dict):
        base = dict(config)
    elif config is None:
        base = {}
    else:
        raise TypeError(f"config must be a TrainConfig, a dict or None, got {type(config).__name__}")
    check_setting_names(settings)
    return TrainConfig.from_dict({**base, **settings})


def build_training_model(config: TrainConfig, train_classes: int | None = None) -> EpisodicModel:
    """``build_model`` for the settings of ``config``; invalid names or options raise a ValueError.

    The input size is passed on as the ``image_size`` option of the models that take one, and GSFL's
    ``num_classes`` (model "gsfl", or the ``gsfl`` plug-in option) defaults to ``train_classes``, the number of
    classes of the training split.
    """
    options = dict(config.options)
    if train_classes is not None:
        if config.model == "gsfl":
            options.setdefault("num_classes", train_classes)
            given, where = options["num_classes"], "num_classes"
        elif isinstance(options.get("gsfl"), dict):
            options["gsfl"] = {"num_classes": train_classes, **options["gsfl"]}
            given, where = options["gsfl"]["num_classes"], "the gsfl plug-in's num_classes"
        else:
            given = where = None
        if isinstance(given, int) and given < train_classes:
            raise ValueError(
                f"{where}={given} is less than the {train_classes} classes of the training split, whose class "
                f"ids it must cover; leave it out (it defaults to {train_classes}) or give at least {train_classes}"
            )
    if "image_size" in options and options["image_size"] != config.image_size:
        raise ValueError(
            f"options image_size={options['image_size']!r} contradicts image_size={config.image_size}; "
            "set image_size only once"
        )
    if config.model in _SIZED_MODELS:
        options["image_size"] = config.image_size
    try:
        return build_model(config.model, config.backbone, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cannot build model {config.model!r} on {config.backbone!r}: {error}") from error


def _continued_schedule(config: TrainConfig, run_dir: Path) -> tuple[TrainConfig, str | None]:
    """``config`` for continuing the run in ``run_dir`` with more epochs than it started with, and the note
    that says so (None when there is nothing to say; only the call that grows the epochs says it).

    A schedule period derived from ``epochs`` (the "quick" protocol: one cosine cycle over the run; not one given
    explicitly) keeps the value the run started with, as the saved scheduler state does: the learning rate starts
    a new cycle of the same length after the first one. Every other setting is returned unchanged.
    """
    manifest = read_manifest(run_dir) if run_dir.is_dir() and not config.overwrite else None
    if manifest is None or manifest.get("kind") != "train":  # no run to continue, or a new one asked for
        return config, None
    started = manifest["identity"]
    old_epochs, old_period = started.get("epochs"), started.get("scheduler_period")
    grows = isinstance(old_epochs, int) and config.epochs > old_epochs
    derived = old_period == old_epochs and "scheduler_period" not in config.explicit_settings
    if not (grows and derived):
        return config, None
    note = None
    if config.scheduler != "none" and epochs_last_asked(run_dir) < config.epochs:
        note = (
            f"{run_dir}: epochs grow from {max(epochs_last_asked(run_dir), old_epochs)} to {config.epochs}; the "
            f"{config.scheduler} schedule keeps "
            f"the period it started with (the learning rate starts a new cycle every {old_period} "
            f"epoch{'s' * (old_period != 1)}); one schedule over all the epochs needs a new run (another "
            f"{way_out('run_dir', '--run-dir')})"
        )
    return dataclasses.replace(config, scheduler_period=old_period), note


def _fewer_epochs(trained: int, asked: int) -> str:
    """The refusal of a call asking for fewer epochs than the run has trained, with the way out."""
    at_least = way_out(f"epochs >= {trained}", f"--epochs {trained} or more")
    same = way_out(f"epochs={trained}", f"--epochs {trained}")
    return (
        f"it has already trained {trained} epochs, more than epochs={asked}; a run never trains backwards: give "
        f"{at_least} ({same} leaves it as it is)"
    )


def _process_counts(run_dir: Path, done: int) -> list[dict[str, int]]:
    """How many processes trained the first ``done`` epochs of the run in ``run_dir``: its config.json's
    ``process_counts``, [{"from_epoch": e, "world_size": n}, ...] in order, each entry holding until the next
    (a call that trained nothing leaves an entry that the next call replaces). A run recorded before the list
    existed gives its last ``world_size`` from epoch 1; [] when nothing is recorded."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        counts = config.get("process_counts") or [{"from_epoch": 1, "world_size": int(config["world_size"])}]
        return [
            {"from_epoch": int(c["from_epoch"]), "world_size": int(c["world_size"])}
            for c in counts
            if int(c["from_epoch"]) <= done
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _epochs_by_process_count(counts: list[dict[str, int]], done: int) -> str:
    """``_process_counts`` in words: "epochs 1–4 with 2 processes, 5 with 1 process"."""
    spans = []
    for i, count in enumerate(counts):
        first, last = count["from_epoch"], counts[i + 1]["from_epoch"] - 1 if i + 1 < len(counts) else done
        size = count["world_size"]
        spans.append(f"{first}–{last}" if last > first else f"{first}")
        spans[-1] += f" with {size} process{'es' * (size != 1)}"
    return "epoch" + "s" * (done > 1) + " " + ", ".join(spans)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Reseed Python, NumPy and torch for epoch ``epoch`` of process ``rank`` (dropout, loader seeds)."""
    seed_everything(derive_seed(seed, 0x7E, epoch, rank))


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's values, in registration order (equal digests = equal weights)."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _data_share(waited: float, trained: float) -> str:
    """The part of an epoch's training spent waiting for the data loader, in words for the epoch's line."""
    share = 100 * waited / trained if trained > 0 else 0.0
    return f"{share:.0f} % of it waiting for images"


def _write_metrics(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    """metrics.csv, atomically; None becomes an empty cell, floats keep their exact repr."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                "" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else row[c]
                for c in columns
            ]
        )
    atomic_write_bytes(buffer.getvalue().encode(), path)


class _Run:
    """One call of ``train``: set-up (all validation first), then the epoch loop."""

    def __init__(self, config: TrainConfig, processes: Processes, rank_log: bool) -> None:
        self.run_dir = Path(config.run_dir)  # type: ignore[arg-type]
        config, schedule_note = _continued_schedule(config, self.run_dir)
        self.config = config
        self.processes = processes
        self.device = processes.device
        self.rank_log = rank_log
        self.cpu_threads = use_cpu_threads(config.threads)
        self.cpu_threads_reason = choose_cpu_threads(config.threads)[1]
        self.autocast = bool(config.amp) and native_bfloat16(self.device)  # bfloat16 where the device has it
        self.folder: RunFolder | None = None
        self.position = "set-up"  # where an interruption stops the run, for the message
        self.saved_epoch = 0  # the epoch last.pt holds
        self.last_path = self.run_dir / "last.pt"
        self.best_path = self.run_dir / "best.pt"
        self.versions = {
            "fsl_core": fsl_core.__version__,
            "torch": str(torch.__version__),
            "git": git_revision(),
        }

        # -- validation of everything, before any work --------------------------------------------------
        self.train_set = FewShotFolder(
            config.data_root,
            "train",
            transform=augmentation_transform(config.augmentation, config.image_size),
            image_size=config.image_size,
        )
        self.planner = AugmentationPlanner(self.train_set.transform) if config.augment_on_device else None
        self.augmenter: DeviceAugmentation | None = None  # set with the loader under augment_on_device
        seed_everything(config.seed)
        self.model = build_training_model(config, len(self.train_set.classes))
        check_episodes_fit(self.train_set, config.way, config.shot, config.query, "training")
        self.episodes = TrainingEpisodes(
            self.train_set.targets,
            config.way,
            config.shot,
            config.query,
            config.sampler,
            config.episodes_per_epoch,
            config.seed,
            processes.rank,
            processes.world_size,
        )
        if len(self.episodes) == 0:
            raise ValueError(
                f"an epoch of the 'epoch' sampler on {self.train_set.root}/train holds fewer episodes "
                f"({len(self.episodes)} per process) than the {processes.world_size} process(es) need; "
                "use sampler='fixed' or a smaller way/shot/query"
            )
        self.val_set: FewShotFolder | None = None
        if config.val_every:
            self.val_set = FewShotFolder(
                config.data_root, "val", transform="eval", image_size=config.image_size
            )
            check_episodes_fit(
                self.val_set,
                config.val_way,
                config.val_shot,
                config.val_query,
                "validation",
                tuple(way_out(f"val_{name}", f"--val-{name}") for name in ("way", "shot", "query")),
            )
        if processes.is_main:  # only the main process writes the run folder
            self._refuse_a_finished_notebook_run()
            self.folder = claim_run_folder(
                self.run_dir,
                "train",
                config.to_dict(),
                same_run=self._cannot_continue,
                overwrite=config.overwrite,
                overwrite_hint=way_out("overwrite=True", "--overwrite"),
                other_hint=way_out("another run_dir", "another --run-dir"),
            )
            if self.folder.moved_aside is not None:
                print(
                    f"the files of the earlier run in {self.run_dir} were moved to {self.folder.moved_aside}",
                    file=sys.stderr,
                )
            if schedule_note is not None and self.folder.moved_aside is None:
                print(schedule_note, file=sys.stderr)
        processes.barrier()  # the other processes look at the folder once it is claimed
        self.checkpoint = self._previous_run()

    def _refuse_a_finished_notebook_run(self) -> None:
        """A training folder inside a finished notebook run (02's ``<run>/train``) stays as that run's results.json
        and figures describe it: the same finished run is returned as it is; training it on, another run there
        (other settings, ``overwrite``) and a new run beside it are refused, naming the way out (a copy to train
        on, the epochs that return it, or a folder outside for a new run)."""
        holder = finished_notebook_run_holding(self.run_dir)
        if holder is None:
            return
        manifest = read_manifest(self.run_dir) if self.run_dir.is_dir() else None
        outside = f"Choose {way_out('another run_dir', 'another --run-dir')} outside {holder} for a new run"
        trained = load_checkpoint(self.last_path).get("epoch", 0) if self.last_path.is_file() else 0
        way = outside
        if manifest is None:
            change = "a new run there would mix with them"
        elif manifest["kind"] != "train":
            change = f"it holds a {manifest['kind']} run"
        elif self.config.overwrite:
            change = f"{way_out('overwrite=True', '--overwrite')} would move its files aside"
        elif trained > self.config.epochs:
            same = way_out(f"epochs={trained}", f"--epochs {trained}")
            change = (
                f"it has trained {trained} epochs, more than epochs={self.config.epochs} ({same} returns it)"
            )
        elif reasons := self._cannot_continue(manifest["identity"]):
            change = f"it holds a run of other settings ({'; '.join(reasons)})"
        elif trained == self.config.epochs:
            return  # the same finished run: returned as it is, nothing written
        else:
            change = f"training it on from epoch {trained} to {self.config.epochs} would change them"
            way = (
                f"To train on from it, train a copy: cp -r {self.run_dir.resolve()} NEW_FOLDER, then give "
                + way_out("run_dir=NEW_FOLDER", "--run-dir NEW_FOLDER")
                + "; or c"
                + outside[1:]
            )
        raise RunFolderConflict(
            f"run folder {self.run_dir} belongs to the finished notebook run {holder}, whose results.json and "
            f"figures describe it as that run left it; {change}. Nothing was changed. {way}"
        )

    def _cannot_continue(self, identity: dict[str, Any]) -> list[str]:
        """Why this call cannot continue the run whose manifest holds ``identity`` ([]: it can). Fewer epochs
        than the run has trained is the one reason given when it applies: the settings derived from epochs
        (a schedule period) then differ too, as a consequence."""
        asked = self.config.epochs
        if self.last_path.exists() and asked < max(
            identity.get("epochs", 0), epochs_last_asked(self.run_dir)
        ):
            trained = load_checkpoint(self.last_path, map_location="cpu").get("epoch", 0)
            if trained > asked:
                return [_fewer_epochs(trained, asked)]
        reasons = config_differences(identity, self.config.to_dict(), where="the run")
        if self.last_path.exists() and not self.config.resume:
            reasons.append("it holds last.pt and resume=False was asked")
        if not self.last_path.exists() and self.best_path.exists():
            reasons.append("it holds best.pt but no last.pt to continue from")
        return reasons

    def _previous_run(self) -> dict[str, Any] | None:
        """The ``last.pt`` to continue from (None for a fresh run); refuses one of other settings."""
        if not self.last_path.exists():
            return None
        # read onto the host: the model and the optimiser copy their tensors to the device themselves, and the
        # random states are host tensors
        checkpoint = load_checkpoint(self.last_path, map_location="cpu")
        if "train_config" not in checkpoint or "optimizer" not in checkpoint:
            raise ValueError(f"{self.last_path} is not a resumable training checkpoint (no optimizer state)")
        differences = config_differences(checkpoint["train_config"], self.config.to_dict())
        if checkpoint["config"] != self.model.config:
            differences.append(
                f"model config: {checkpoint['config']!r} in the checkpoint, {self.model.config!r} now"
            )
        if differences:
            raise ValueError(
                f"{self.last_path} was written with other settings, so this run cannot continue it: "
                + "; ".join(differences)
                + f". Use the same settings to resume, or another {way_out('run_dir', '--run-dir')} for a new run"
            )
        if checkpoint["epoch"] > self.config.epochs:
            raise ValueError(f"{self.last_path}: {_fewer_epochs(checkpoint['epoch'], self.config.epochs)}")
        if callable(self.config.augmentation) and self.processes.is_main:
            label = augmentation_label(self.config.augmentation)
            print(
                f"{self.last_path}: continuing with the augmentation {label!r}; the run recorded the same "
                "name and repr, which is all that can be compared for a callable, so make sure it is the "
                "same transform (a different one changes the run without error)",
                file=sys.stderr,
            )
        return checkpoint

    # -- set-up ---------------------------------------------------------------------------------------------
    def _optimisation(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        config = self.config
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if config.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                optimizer, T_0=config.scheduler_period
            )
        elif config.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=config.scheduler_period, gamma=config.scheduler_gamma
            )
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        return optimizer, scheduler

    def _environment(self, resumed_at: int | None) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "model_config": self.model.config,
            "fsl_core_version": self.versions["fsl_core"],
            "git_revision": self.versions["git"],
            "torch_version": self.versions["torch"],
            "device_used": str(self.device),
            "cpu_threads": self.cpu_threads,
            "bfloat16_autocast": self.autocast,  # what amp did on this device
            "huge_pages": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
            "world_size": self.processes.world_size,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resumed_at_epoch": resumed_at,
        }

    def _plan(self, done: int) -> list[str]:
        """What this call will do, in words: printed before the first epoch."""
        config = self.config
        protocol = {"authors": "the HMDRN authors' protocol", "quick": "a short CPU demonstration"}
        hint = "; protocol 'quick' trains a short run" if config.protocol == "authors" else ""
        per_epoch = len(self.episodes) * self.processes.world_size
        period = f"{config.scheduler_period:,} epoch" + "s" * (config.scheduler_period != 1)
        schedule = {
            "cosine": f"cosine schedule restarting every {period}",
            "step": f"x{config.scheduler_gamma:g} every {period}",
            "none": "constant",
        }[config.scheduler]
        if self.val_set is None:
            validation = "none (val_every 0)"
        else:
            every = (
                "every epoch"
                if config.val_every == 1
                else f"every {config.val_every:,} epochs and after the last"
            )
            validation = (
                f"{every}, on {config.val_episodes:,} "
                f"{config.val_way}-way {config.val_shot}-shot {config.val_query}-query episodes"
            )
        processes = self.processes.world_size
        decoded = self.train_set.decoded
        held = "in memory"
        if self.augmenter is not None and self.augmenter.copied_pixels:
            held = f"in the memory of {self.device}"
        return [
            f"plan: {config.model} on {config.backbone}, protocol {config.protocol!r} "
            f"({protocol[config.protocol]}{hint})",
            f"  data: {Path(config.data_root).absolute()}, {config.image_size} px"
            + (f"; training images {held}: {decoded.describe()}" if decoded is not None else "")
            + (f", augmented on {self.device}" if self.augmenter is not None else ""),
            f"  training: {config.way}-way {config.shot}-shot {config.query}-query episodes, "
            f"{per_epoch:,} per epoch ({config.sampler!r} sampler"
            + (
                f"; {len(self.episodes):,} per process, each step averaging the gradients of {processes} episodes, "
                "one per process), "
                if processes > 1
                else "), "
            )
            + f"epochs {done + 1:,} to {config.epochs:,}; SGD lr {config.lr:g}, {schedule}",
            f"  validation: {validation}"
            + (" (run by process 0; the others wait for it)" if processes > 1 else ""),
            f"  device: {self.device}, {self.cpu_threads} CPU thread{'s' if self.cpu_threads > 1 else ''} "
            f"({self.cpu_threads_reason})"
            + (f", {processes} processes" if processes > 1 else "")
            + (f"; {self._precision()}" if config.amp else ""),
            f"  run folder: {self.run_dir}",
        ]

    def _precision(self) -> str:
        """What ``amp`` does on this device, in words."""
        if self.autocast:
            return "bfloat16 autocast while training (amp), float32 validation"
        hardware = "GPU" if self.device.type == "cuda" else "CPU (no AMX or AVX-512 BF16)"
        return f"float32: amp asked for bfloat16, which this {hardware} would only emulate, more slowly"

    def _time_left(self, epoch: int, epoch_seconds: list[float], validation_seconds: list[float]) -> str:
        """The time the epochs after ``epoch`` will take, from the epochs of this call (words). Validations not
        timed yet are said in full on the call's first epoch line, then briefly ("+ 1 validation")."""
        config = self.config
        left = (config.epochs - epoch) * sum(epoch_seconds) / len(epoch_seconds)
        validations = 0
        if self.val_set is not None:
            later = range(epoch + 1, config.epochs + 1)
            validations = sum(1 for e in later if e % config.val_every == 0 or e == config.epochs)
        if validations and not validation_seconds:
            plural = "s" if validations > 1 else ""
            if len(epoch_seconds) > 1:
                return f"about {format_duration(left)} left + {validations} validation{plural}"
            return f"about {format_duration(left)} left, plus {validations} validation{plural} not timed yet"
        if validations:
            left += validations * sum(validation_seconds) / len(validation_seconds)
        return f"about {format_duration(left)} left"

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self, stop_after_epochs: int | None) -> TrainResult:
        config, processes, model = self.config, self.processes, self.model
        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer, scheduler = self._optimisation()
        rows: list[dict[str, Any]] = []
        best: dict[str, Any] = {"val_acc": None, "val_ci95": None, "epoch": None}
        done = 0
        if self.checkpoint is not None:
            model.load_state_dict(self.checkpoint["state_dict"])
            optimizer.load_state_dict(self.checkpoint["optimizer"])
            scheduler.load_state_dict(self.checkpoint["scheduler"])
            rows, best, done = (
                list(self.checkpoint["metrics"]),
                dict(self.checkpoint["best"]),
                self.checkpoint["epoch"],
            )
            restore_rng_state(self.checkpoint["rng"])
            self.saved_epoch = done
            self.checkpoint = None  # free the memory
        fusion_names = list(model.fusion_weights())
        columns = [
            "epoch",
            "loss",
            "train_acc",
            "val_acc",
            "val_ci95",
            "lr",
            *fusion_names,
            "episodes",
            "seconds",
            "data_seconds",
        ]
        finished = done >= config.epochs  # a finished run is returned as it is: nothing is written
        if done and processes.is_main and config.progress:
            state = "has finished; nothing to train" if finished else "continues from last.pt"
            print(f"{self.run_dir}: the run {state} (epoch {done} of {config.epochs})", file=sys.stderr)
        counts = _process_counts(self.run_dir, done) if processes.is_main and done else []
        if not finished and {c["world_size"] for c in counts} - {processes.world_size}:
            now = processes.world_size
            print(
                f"note: {_epochs_by_process_count(counts, done)} trained this run; these epochs train with {now} "
                f"process{'es' * (now != 1)}: a step averages the gradients of as many episodes as there are "
                "processes, so the run is not the one a single count would have trained",
                file=sys.stderr,
            )
        if processes.is_main and not finished:
            if not counts or counts[-1]["world_size"] != processes.world_size:
                counts.append({"from_epoch": done + 1, "world_size": processes.world_size})
            atomic_write_json(
                {**self._environment(done or None), "process_counts": counts}, self.run_dir / "config.json"
            )
            _write_metrics(rows, columns, self.run_dir / "metrics.csv")

        module: nn.Module = EpisodeLoss(model)
        if processes.distributed:
            module = DistributedDataParallel(
                module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )
        in_memory = config.images_in_memory or config.augment_on_device
        context, worker_copies = worker_sharing(config.num_workers) if in_memory else (None, 0)
        if self.planner is not None:
            worker_copies = 0  # the workers draw plans from the images' sizes; they never read a pixel
        if in_memory and not finished:
            processes.barrier()  # every process of the machine measures the memory left before any fills it
            self.train_set.keep_in_memory(self.cpu_threads, worker_copies)
        items: Dataset = self.train_set
        if self.planner is not None and not finished:
            decoded = self.train_set.keep_in_memory()  # decoded just above: returned as it is
            self.augmenter = DeviceAugmentation(decoded, self.planner, self.device)
            items = PlannedImages(decoded, self.train_set.targets, self.planner)
            if self.augmenter.copied_pixels:
                decoded.release_pixels()  # the device holds its copy; the workers need only the sizes
        loader = DataLoader(
            SeededImages(items),
            batch_sampler=self.episodes,
            collate_fn=EpisodeCollate(config.way, config.shot, config.query),
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=config.num_workers > 0,
            multiprocessing_context=context,  # forked workers share the decoded images the host keeps
            generator=torch.Generator(),  # the loader's own seed draws leave the global generators alone
        )
        self.show = show = config.progress and processes.is_main
        bars = show and not plain_lines()  # plain lines (a notebook run headless): one per epoch, no bar
        if show and not finished:
            for line in self._plan(done):
                report(line)
        seen: list[dict[str, Any]] = []
        epochs_bar = tqdm(total=config.epochs, initial=done, desc="epochs", unit="epoch", disable=not bars)
        first_epoch = done + 1
        epoch_seconds: list[float] = []  # each epoch of this call without its validation
        validation_seconds: list[float] = []
        # TensorBoard's copy of metrics.csv (when tensorboard is installed), opened last so that it is closed
        tensorboard = open_tensorboard_log(self.run_dir, rows) if processes.is_main and not finished else None
        # `kill`, `timeout` and a pre-emption stop the run as Ctrl-C does, with the same line on what is kept
        with termination_as_interrupt():
            try:
                for epoch in range(first_epoch, config.epochs + 1):
                    started = time.perf_counter()
                    lr = float(optimizer.param_groups[0]["lr"])
                    loss, accuracy, count, waited = self._train_epoch(
                        module, optimizer, loader, epoch, done, bars, seen
                    )
                    trained = time.perf_counter() - started
                    scheduler.step()
                    self.position = f"epoch {epoch}, during validation"
                    validation_started = time.perf_counter()
                    result = self._validate(epoch, bars)
                    validated = time.perf_counter() - validation_started
                    row: dict[str, Any] = {
                        "epoch": epoch,
                        "loss": loss,
                        "train_acc": accuracy,
                        "val_acc": None if result is None else result[0],
                        "val_ci95": None if result is None else result[1],
                        "lr": lr,
                        **{k: float(v) for k, v in model.fusion_weights().items()},
                        "episodes": count,
                        "seconds": time.perf_counter() - started,
                        "data_seconds": waited,
                    }
                    rows.append(row)
                    improved = result is not None and (best["val_acc"] is None or result[0] > best["val_acc"])
                    if improved:
                        best = {"val_acc": result[0], "val_ci95": result[1], "epoch": epoch}
                    self.position = f"epoch {epoch}, while saving it"
                    if processes.is_main:
                        self._save(model, optimizer, scheduler, epoch, best, rows, columns, improved)
                    done = epoch
                    # the epoch is saved; its TensorBoard scalars are a copy of metrics.csv, rewritten on resume
                    self.position = f"epoch {epoch + 1}, before its first episode"
                    if tensorboard is not None:
                        tensorboard.write(row)
                    if result is not None:
                        validation_seconds.append(validated)
                    epoch_seconds.append(time.perf_counter() - started - (validated if result else 0.0))
                    if show:
                        line = f"epoch {epoch}/{config.epochs}: loss {loss:.4f}, train {accuracy:.2f} %"
                        if result is not None:
                            line += f", val {result[0]:.2f} ± {result[1]:.2f} %"
                        line += f", {format_duration(time.perf_counter() - started)}, {_data_share(waited, trained)}"
                        if epoch < config.epochs:
                            line += f"; {self._time_left(epoch, epoch_seconds, validation_seconds)}"
                        report(line)
                    epochs_bar.update(1)
                    postfix = f"loss {loss:.3f} train {accuracy:.1f}%"
                    if result is not None:
                        postfix += f" val {result[0]:.2f}±{result[1]:.2f}"
                    epochs_bar.set_postfix_str(postfix)
                    if stop_after_epochs is not None and epoch - first_epoch + 1 >= stop_after_epochs:
                        break
            except KeyboardInterrupt as interruption:
                saved = self.saved_epoch
                if saved:
                    kept = f"{self.last_path.name} holds epoch {saved}; run the same command to resume"
                else:
                    kept = "no checkpoint was written yet; run the same command to start again"
                by, number = (
                    (" by SIGTERM", signal.SIGTERM)
                    if isinstance(interruption, Terminated)
                    else ("", signal.SIGINT)
                )
                raise TrainingInterrupted(f"interrupted{by} at {self.position}; {kept}", number) from None
            finally:
                epochs_bar.close()
                if tensorboard is not None:
                    tensorboard.close()
        processes.barrier()
        if self.rank_log:
            atomic_write_json(
                {
                    "rank": processes.rank,
                    "world_size": processes.world_size,
                    "episodes": seen,
                    "parameters_sha256": parameter_digest(model),
                },
                self.run_dir / f"rank{processes.rank}.json",
            )
        model.eval()
        metrics = pd.DataFrame(rows, columns=columns)
        return TrainResult(
            run_dir=self.run_dir,
            config=config,
            model=model,
            metrics=metrics,
            epochs_done=done,
            best_val_acc=best["val_acc"],
            best_val_ci95=best["val_ci95"],
            best_epoch=best["epoch"],
        )

    def _train_epoch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: DataLoader,
        epoch: int,
        last_good: int,
        show: bool,
        seen: list[dict[str, Any]],
    ) -> tuple[float, float, int, float]:
        """One epoch of episodes → (mean loss, mean query accuracy in %, episodes over all processes, seconds
        this process waited for the data loader's next episode: where it is a large share of the epoch, the
        loader limits training, and more ``num_workers`` would help)."""
        config, processes, device = self.config, self.processes, self.device
        _seed_epoch(config.seed, epoch, processes.rank)
        self.episodes.set_epoch(epoch - 1)
        if self.rank_log:
            seen.extend({"epoch": epoch, "indices": indices} for _, indices in self.episodes.episodes())
        self.model.train()
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        loss_sum = accuracy_sum = 0.0
        count = 0
        steps = len(self.episodes)
        if steps == 0:
            raise ValueError(
                f"epoch {epoch} of the 'epoch' sampler holds no episode for each of the {processes.world_size} "
                "process(es); use sampler='fixed' or a smaller way/shot/query"
            )
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch}", unit="episode", leave=False, disable=not show)
        kept = f"{self.last_path} still holds epoch {last_good}" if last_good else "no checkpoint was written"
        heartbeat = time.perf_counter()  # plain lines: a line at least every PLAIN_BAR_INTERVAL seconds
        waited, asked = 0.0, time.perf_counter()
        for step, episode in enumerate(bar):
            waited += time.perf_counter() - asked
            self.position = f"epoch {epoch}, episode {step + 1} of {steps}"
            if self.augmenter is not None:  # the loader's episode holds plans: the images are made here
                episode = self.augmenter.episode(episode)
            else:
                episode = episode.to(device, non_blocking=True)
            support = episode.support_images.contiguous(memory_format=memory_format)
            query = episode.query_images.contiguous(memory_format=memory_format)
            autocast = (
                torch.autocast(device.type, dtype=torch.bfloat16)
                if self.autocast
                else contextlib.nullcontext()
            )
            with autocast:
                loss, logits = module(
                    support, episode.support_labels, query, episode.query_labels, episode.class_ids
                )
            accuracy = (logits.argmax(dim=1) == episode.query_labels).double().mean() * 100.0
            totals = processes.sum(torch.stack([loss.detach().double(), accuracy]))
            step_loss, step_accuracy = totals.tolist()
            if not math.isfinite(step_loss):
                raise TrainingDiverged(
                    f"training diverged: the loss is {step_loss / processes.world_size} at epoch {epoch}, "
                    f"episode {step + 1} of {steps} "
                    f"(lr {optimizer.param_groups[0]['lr']:.4g}); {kept}. {_restart_advice()}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self._check_finite_after_step(epoch, step, steps, optimizer, kept)
            loss_sum += step_loss
            accuracy_sum += step_accuracy
            count += processes.world_size
            bar.set_postfix_str(f"loss {step_loss / processes.world_size:.3f}")
            if self.show and not show and time.perf_counter() - heartbeat >= PLAIN_BAR_INTERVAL:
                heartbeat = time.perf_counter()
                report(
                    f"epoch {epoch}/{config.epochs}: episode {step + 1}/{steps}, "
                    f"loss {loss_sum / count:.4f} so far"
                )
            asked = time.perf_counter()
        bar.close()
        return loss_sum / count, accuracy_sum / count, count, waited

    def _check_finite_after_step(
        self, epoch: int, step: int, steps: int, optimizer: torch.optim.Optimizer, kept: str
    ) -> None:
        """Raise ``TrainingDiverged`` when the step just taken made a weight or a buffer NaN or infinite."""
        tensors = [t for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()]
        if bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            return
        state = self.model.state_dict(keep_vars=True)
        names = [
            name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())
        ]
        raise TrainingDiverged(
            f"training diverged: the step of epoch {epoch}, episode {step + 1} of {steps} "
            f"(lr {optimizer.param_groups[0]['lr']:.4g}) made {len(names)} weight or buffer tensors NaN or "
            f"infinite ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}); {kept}. {_restart_advice()}"
        )

    def _validate(self, epoch: int, show: bool) -> tuple[float, float] | None:
        """(mean, ci95) on the fixed validation episodes when due this epoch (computed on rank 0 and shared)."""
        config = self.config
        if self.val_set is None or not (epoch % config.val_every == 0 or epoch == config.epochs):
            return None
        values = torch.zeros(2, dtype=torch.float64, device=self.device)
        if self.processes.is_main:
            result = evaluate(
                self.model,
                self.val_set,
                way=config.val_way,
                shot=config.val_shot,
                query=config.val_query,
                episodes=config.val_episodes,
                seed=config.val_seed,
                cached=True,
                device=self.device,
                progress=show,
                num_workers=config.num_workers,
            )
            values[0], values[1] = result.mean, result.ci95
        mean, ci95 = self.processes.sum(values).tolist()
        return mean, ci95

    def _save(
        self,
        model: EpisodicModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epoch: int,
        best: dict[str, Any],
        rows: list[dict[str, Any]],
        columns: list[str],
        improved: bool,
    ) -> None:
        """best.pt (when improved), then last.pt, then metrics.csv — each atomically, all only when every
        weight, buffer and optimiser state is finite (else ``TrainingDiverged`` and nothing is written)."""
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        optimizer_state = optimizer.state_dict()
        bad = non_finite_tensors({"model": state, "optimizer": optimizer_state})
        if bad:
            saved = self.saved_epoch
            kept = f"{self.last_path} still holds epoch {saved}" if saved else "no checkpoint was written"
            raise TrainingDiverged(
                f"training diverged in epoch {epoch}: {len(bad)} tensors are NaN or infinite ({', '.join(bad[:4])}"
                f"{', ...' if len(bad) > 4 else ''}); nothing of epoch {epoch} was saved and {kept}"
            )
        if improved:
            save_model(
                model,
                self.best_path,
                train_config=self.config.to_dict(),
                epoch=epoch,
                val_acc=best["val_acc"],
                val_ci95=best["val_ci95"],
                versions=dict(self.versions),
            )
        save_checkpoint(
            self.last_path,
            {
                "config": dict(model.config),
                "state_dict": state,
                "train_config": self.config.to_dict(),
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best": dict(best),
                "sampler": {
                    "mode": self.config.sampler,
                    "seed": self.config.seed,
                    "next_epoch": epoch,
                    "next_episode": self.episodes.next_episode(),
                },
                "rng": rng_state(),
                "metrics": [dict(row) for row in rows],
                "versions": dict(self.versions),
            },
        )
        self.saved_epoch = epoch
        _write_metrics(rows, columns, self.run_dir / "metrics.csv")
