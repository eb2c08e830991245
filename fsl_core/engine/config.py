"""Training settings: one dataclass holding every setting of a run, and the protocols that fill in defaults.

Two protocols ship:

- ``"authors"`` — the HMDRN authors' protocol (Luo, Hu, Wan, Yang, Jiang & Wei, "Hierarchical Mask-Enhanced
  Dual Reconstruction Network for Few-Shot Fine-Grained Image Classification", 2025, arXiv:2506.20263), applied to
  every model so that models are compared under one protocol: Conv-4 30-way / ResNet-12 10-way, 5-shot,
  15 queries, FRN-style epochs, SGD Nesterov lr 0.1, cosine annealing with warm restarts every 400 epochs,
  1,200 epochs, validation every 20 epochs on 1,000 5-way 5-shot 16-query episodes. (FRN's own paper used
  Conv-4 20-way and StepLR: ``way=20, scheduler="step"``.)
- ``"quick"`` — a CPU demonstration: 5-way 5-shot 10-query, 10 epochs of 40 episodes, cosine schedule over
  the run, validation every 5 epochs (and after the last) on 100 episodes.

Every setting left as ``None`` takes the protocol's value; any setting can be given explicitly.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from fsl_core.data.transforms import AUGMENTATIONS, CALLABLE_RECORD, ImageTransform, augmentation_label
from fsl_core.run_folder import read_manifest
from fsl_core.runtime import did_you_mean, same_path, way_out

PROTOCOLS = ("authors", "quick")
"""The protocols a ``TrainConfig`` can start from (see the module docstring)."""
SAMPLERS = ("epoch", "fixed")
SCHEDULERS = ("cosine", "step", "none")

# Settings of one call, not of the run: the machine it runs on and how the folder is treated. A command that
# continues a run takes every other setting it leaves out from the run (``continued_settings``).
CALL_SETTINGS = frozenset(
    {
        "run_dir",
        "device",
        "num_workers",
        "images_in_memory",
        "augment_on_device",
        "threads",
        "progress",
        "find_unused_parameters",
        "resume",
        "overwrite",
    }
)
# Settings that change how a run executes, not what it computes: they may differ when a run is resumed.
# ``epochs`` may grow (train longer): a schedule period that was derived from ``epochs`` (the "quick" protocol's
# cosine cycle over the run) keeps the value the run started with, so the learning rate restarts its cycle.
RUNTIME_SETTINGS = CALL_SETTINGS | {"protocol", "epochs"}

# Settings added after runs had been written without them, with the value those runs used: a run folder or
# checkpoint that lacks one is compared as if it held this value.
EARLIER_RUNS_VALUES: dict[str, Any] = {"augmentation": "papers"}


def _protocol_values(protocol: str, backbone: str) -> dict[str, Any]:
    """The defaults of ``protocol`` for ``backbone`` (every field that may be left as None)."""
    common: dict[str, Any] = dict(
        image_size=84,
        shot=5,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        scheduler_gamma=0.1,
        val_way=5,
        val_shot=5,
        val_query=16,
        val_seed=0,
        channels_last=True,
        amp=False,
    )
    if protocol == "authors":
        return common | dict(
            way=10 if backbone == "resnet12" else 30,
            query=15,
            sampler="epoch",
            episodes_per_epoch=100,
            epochs=1200,
            scheduler="cosine",
            scheduler_period=400,
            val_every=20,
            val_episodes=1000,
        )
    if protocol == "quick":
        return common | dict(
            way=5,
            query=10,
            sampler="fixed",
            episodes_per_epoch=40,
            epochs=10,
            scheduler="cosine",
            scheduler_period=None,  # the run's length, filled in below
            val_every=5,
            val_episodes=100,
        )
    raise ValueError(f"protocol={protocol!r} is not known; expected one of {list(PROTOCOLS)}")


PROTOCOL_SETTINGS = frozenset(_protocol_values("authors", "conv4"))


def protocol_value(protocol: str, backbone: str, name: str) -> Any:
    """The value ``protocol`` gives setting ``name`` on ``backbone`` (None: derived, e.g. from epochs)."""
    return _protocol_values(protocol, backbone)[name]


def _setting(default: Any = None, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field carrying its command-line help text."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of an episodic training run. ``None`` means "the protocol's value"."""

    protocol: str = _setting("authors", "preset filling every setting left unset: 'authors' or 'quick'")
    # model
    model: str = _setting("hmdrn", "model name: protonet, frn, bifrn, hmdrn, gsfl")
    backbone: str = _setting("conv4", "backbone: conv4 or resnet12")
    options: dict[str, Any] = _setting(
        help="model options (ablation switches) passed to build_model", factory=dict
    )
    # data
    data_root: str = _setting(
        "data/birds", "data set root holding train/ and val/ class folders (recorded as an absolute path)"
    )
    image_size: int | None = _setting(None, "square input size in pixels (84 in the papers)")
    augmentation: str | ImageTransform = _setting(
        "papers",
        "training augmentation: 'papers', 'no_flip', 'light' or 'none' (fsl_core.data.AUGMENTATIONS says "
        "what each does); from Python also a callable",
    )
    # training episodes
    way: int | None = _setting(None, "classes per training episode")
    shot: int | None = _setting(None, "support images per class in training episodes")
    query: int | None = _setting(None, "query images per class in training episodes")
    sampler: str | None = _setting(
        None,
        "'epoch': FRN epochs (classes drawn without replacement until fewer than `way` remain); "
        "'fixed': episodes_per_epoch episodes per epoch",
    )
    episodes_per_epoch: int | None = _setting(None, "episodes per epoch with the 'fixed' sampler")
    epochs: int | None = _setting(None, "number of epochs")
    # optimisation
    lr: float | None = _setting(None, "SGD learning rate")
    momentum: float | None = _setting(None, "SGD momentum")
    nesterov: bool | None = _setting(None, "Nesterov momentum")
    weight_decay: float | None = _setting(None, "weight decay (applied to every parameter)")
    scheduler: str | None = _setting(
        None, "'cosine' (warm restarts every scheduler_period epochs), 'step' (x gamma every period), 'none'"
    )
    scheduler_period: int | None = _setting(None, "epochs per cosine cycle or per step decay")
    scheduler_gamma: float | None = _setting(None, "decay factor of the 'step' scheduler")
    # validation
    val_every: int | None = _setting(None, "validate every N epochs (and after the last); 0: never")
    val_way: int | None = _setting(None, "classes per validation episode")
    val_shot: int | None = _setting(None, "support images per class in validation episodes")
    val_query: int | None = _setting(None, "query images per class in validation episodes")
    val_episodes: int | None = _setting(None, "number of (fixed) validation episodes")
    val_seed: int | None = _setting(None, "seed of the fixed validation episodes")
    # run
    seed: int = _setting(0, "seed of initialisation, episodes, augmentation and dropout")
    run_dir: str | None = _setting(
        None, "run folder (default outputs/train/<model>-<backbone>-<way>w<shot>s-seed<seed>)"
    )
    resume: bool = _setting(True, "continue from run_dir/last.pt when it exists (False: refuse to reuse it)")
    overwrite: bool = _setting(
        False,
        "when run_dir holds another run (or files no run wrote): move them aside into run_dir/replaced-<time>/ "
        "and start a new run, instead of refusing",
    )
    device: str = _setting("auto", "'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N'")
    num_workers: int = _setting(0, "DataLoader worker processes")
    images_in_memory: bool = _setting(
        False,
        "decode the training images once, at the start, and keep their 8-bit pixels in memory (H·W·3 bytes "
        "each; the same tensors as decoding each time): for JPEG sets such as CUB, whose decoding costs more "
        "than the augmentation",
    )
    augment_on_device: bool = _setting(
        False,
        "keep the training images (decoded once) on the training device and make the augmentation preset's "
        "images there, a whole episode at once, the loader's workers only drawing each image's crop, jitter "
        "and flip: for a GPU that the loader cannot keep fed. The images are the loader's, bit for bit "
        "(fsl_core.data.device_augmentation), so a run may switch it on or off when it is resumed",
    )
    threads: int = _setting(
        0,
        "CPU threads of torch (0: every core this process may use, or OMP_NUM_THREADS when set; under "
        "torchrun the cores are divided between the processes of a machine)",
    )
    amp: bool | None = _setting(
        None,
        "bfloat16 autocast while training, where the device computes in bfloat16 natively (CUDA; CPUs with AMX "
        "or AVX-512 BF16); float32 elsewhere, as the plan says",
    )
    channels_last: bool | None = _setting(None, "channels-last memory format for model and images")
    find_unused_parameters: bool = _setting(
        False, "DistributedDataParallel: allow parameters that an episode does not use"
    )
    progress: bool = _setting(
        True, "print the plan, one line per epoch with the time left, and tqdm progress bars"
    )

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is not known; expected one of {list(PROTOCOLS)}")
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a dict of model options, got {type(self.options).__name__}")
        self.options = dict(self.options)
        self.data_root = str(Path(self.data_root).expanduser().absolute())  # recorded as where it is
        if self.run_dir is not None:
            self.run_dir = str(self.run_dir)
        # the settings given explicitly (not left to the protocol): ``replace`` keeps them
        self._explicit = frozenset(f.name for f in fields(self) if getattr(self, f.name) is not None)
        for name, value in _protocol_values(self.protocol, self.backbone).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.scheduler_period is None:
            self.scheduler_period = self.epochs
        if self.run_dir is None:
            self.run_dir = self.default_run_dir()
        self._check()

    def default_run_dir(self) -> str:
        """``outputs/train/<model>-<backbone>-<way>w<shot>s-seed<seed>`` (relative to the working folder)."""
        return str(
            Path("outputs/train") / f"{self.model}-{self.backbone}-{self.way}w{self.shot}s-seed{self.seed}"
        )

    def _check(self) -> None:
        """Types, ranges and choices of every setting (data-dependent checks happen in ``train``)."""
        positive = ["image_size", "way", "shot", "query", "episodes_per_epoch", "epochs", "scheduler_period"]
        positive += ["val_way", "val_shot", "val_query", "val_episodes"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("val_every", "num_workers", "threads", "seed", "val_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.way < 2 or self.val_way < 2:
            raise ValueError(
                f"way and val_way must be at least 2, got way={self.way}, val_way={self.val_way}"
            )
        for name in ("lr", "momentum", "weight_decay", "scheduler_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if value < 0 or (name == "lr" and value == 0):
                raise ValueError(f"{name} must be {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
        bools = (
            "nesterov",
            "amp",
            "channels_last",
            "find_unused_parameters",
            "images_in_memory",
            "augment_on_device",
            "progress",
            "resume",
            "overwrite",
        )
        for name in bools:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r} is not known; expected one of {list(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={self.scheduler!r} is not known; expected one of {list(SCHEDULERS)}")
        if self.momentum >= 1:
            raise ValueError(
                f"momentum must be below 1 (each step keeps this share of the last update; at 1 or more updates "
                f"never fade and training diverges), got {self.momentum!r}; the papers use 0.9"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self._check_apart()
        augmentation = self.augmentation
        if not callable(augmentation) and not (
            isinstance(augmentation, str)
            and (augmentation in AUGMENTATIONS or augmentation.startswith(CALLABLE_RECORD))
        ):
            raise ValueError(
                f"augmentation={augmentation!r} is not known{did_you_mean(augmentation, AUGMENTATIONS)}; "
                f"expected one of {list(AUGMENTATIONS)}"
                + way_out(
                    " or a callable (PIL RGB image → normalised (3, image_size, image_size) tensor)", ""
                )
            )
        if self.augment_on_device and callable(augmentation):
            raise ValueError(
                f"augment_on_device=True applies the presets {list(AUGMENTATIONS)} on the device; the callable "
                f"augmentation {augmentation_label(augmentation)!r} runs in the loader: leave augment_on_device "
                "off, or pass a preset name"
            )

    def _check_apart(self) -> None:
        """Refuse an empty run folder name, and a run folder that is the data set's folder, holds it or lies inside
        it: a run writes its folder (and with ``overwrite`` moves what it holds aside), so the two are kept apart."""
        if not str(self.run_dir).strip():
            raise ValueError(
                "run_dir is empty; give a folder for the run (--run-dir outputs/train/NAME), or leave it out for "
                f"the default, {self.default_run_dir()}"
            )
        run = Path(self.run_dir).expanduser().resolve()  # type: ignore[arg-type]
        data = Path(self.data_root).resolve()
        if run == data or data.is_relative_to(run) or run.is_relative_to(data):
            where = "is" if run == data else "holds" if data.is_relative_to(run) else "lies inside"
            folder, overwrite = way_out("run_dir", "--run-dir"), way_out("overwrite=True", "--overwrite")
            raise ValueError(
                f"{folder} {self.run_dir} {where} the data set {self.data_root}: a run writes its folder and with "
                f"{overwrite} moves what it holds aside, so it must be apart from the data; give a {folder} outside "
                f"the data set, e.g. the default {self.default_run_dir()}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON- and ``weights_only``-safe) dict of every setting.

        A callable ``augmentation`` is written as its record (``fsl_core.data.transforms.augmentation_label``:
        "callable <qualified name>[: <repr>]"), which ``from_dict`` keeps as text: such a config describes a
        run, but ``train`` refuses to run it until the callable itself is given again.
        """
        return {
            spec.name: augmentation_label(self.augmentation)
            if spec.name == "augmentation"
            else copy.deepcopy(getattr(self, spec.name))
            for spec in fields(self)
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown names raise a ValueError that suggests the closest setting."""
        check_setting_names(values)
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """The settings of a run: ``path`` is a run folder or its ``config.json`` (other keys are ignored)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path.absolute()} does not exist; expected the config.json of a training run"
            )
        values = json.loads(path.read_text())
        return cls(**{name: values[name] for name in setting_names() if name in values})

    @property
    def explicit_settings(self) -> frozenset[str]:
        """The settings given explicitly, not left to the protocol (``replace`` keeps them)."""
        return self._explicit

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``. Settings that were left to the protocol are derived again, so
        ``replace(backbone="resnet12")`` gets the ResNet-12 way and ``replace(epochs=50)`` under "quick" a cosine
        period of 50; settings given explicitly are kept, even when they equal the protocol's value
        (``TrainConfig(way=30).replace(backbone="resnet12").way == 30``)."""
        check_setting_names(changes)
        values = self.to_dict()
        values["augmentation"] = self.augmentation  # a callable stays a callable
        for name in [*PROTOCOL_SETTINGS, "run_dir"]:
            if name not in self._explicit:
                values[name] = None
        values.update(changes)
        return TrainConfig(**values)


def _settings_listing() -> str:
    """Every setting as ``help(TrainConfig)`` lists it: name, declared default, help (the command line's)."""
    lines = [
        "",
        "",
        "Settings (name = default: meaning; None: the protocol's value; ``fsl-train --help`` lists them as flags):",
        "",
    ]
    for spec in fields(TrainConfig):
        if spec.name.startswith("_"):
            continue
        default = spec.default if spec.default is not MISSING else spec.default_factory()  # type: ignore[misc]
        lines.append(f"    {spec.name} = {default!r}: {spec.metadata.get('help', '')}")
    return "\n".join(lines)


TrainConfig.__doc__ = (TrainConfig.__doc__ or "") + _settings_listing()


def setting_names() -> list[str]:
    """Names of every TrainConfig setting, in declaration order."""
    return [f.name for f in fields(TrainConfig)]


def setting_help(name: str) -> str:
    """The help text of setting ``name``."""
    return next(f.metadata.get("help", "") for f in fields(TrainConfig) if f.name == name)


def setting_default(name: str) -> Any:
    """The declared default of setting ``name`` (None for protocol-filled settings)."""
    spec = next(f for f in fields(TrainConfig) if f.name == name)
    if spec.default is not MISSING:
        return spec.default
    return spec.default_factory()  # type: ignore[misc]


def check_setting_names(values: dict[str, Any]) -> None:
    """Raise a ValueError naming every unknown setting in ``values`` with the closest known name."""
    known = setting_names()
    unknown = [name for name in values if name not in known]
    if unknown:
        hints = ", ".join(f"{name!r}{did_you_mean(name, known)}" for name in unknown)
        raise ValueError(f"unknown training setting {hints}; known settings: {', '.join(known)}")


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], where: str = "the checkpoint"
) -> list[str]:
    """Human-readable differences between two ``to_dict`` outputs, ignoring ``RUNTIME_SETTINGS``.

    ``data_root`` is compared as a resolved path; a setting that ``saved`` lacks takes its value of
    ``EARLIER_RUNS_VALUES`` (runs written before it existed); ``where`` names what holds ``saved`` in the
    messages. A callable ``augmentation`` is compared by its record (qualified name and repr).
    """
    differences = []
    for name in sorted(set(saved) | set(current)):
        if name in RUNTIME_SETTINGS:
            continue
        old = saved.get(name, EARLIER_RUNS_VALUES.get(name, "<absent>"))
        new = current.get(name, "<absent>")
        if name == "data_root" and isinstance(old, str) and isinstance(new, str):
            same = same_path(old, new)
        else:
            same = old == new
        if not same:
            differences.append(f"{name}: {old!r} in {where}, {new!r} now")
    return differences


def continued_settings(run_dir: str | Path | None, given: dict[str, Any]) -> dict[str, Any]:
    """The settings of a command that names ``run_dir`` and ``given`` settings: when ``run_dir`` holds a training
    run, every setting it recorded (but ``CALL_SETTINGS``) that ``given`` leaves out is the run's, with ``epochs``
    as its last call asked for them (they may have grown). Left to the protocol instead: a ``scheduler_period``
    the protocol derives from the epochs (so growing them keeps the first period, and says so, as the same
    command would) and an augmentation that was a callable (a record cannot rebuild it). ``given`` as it is when
    ``run_dir`` holds no training run, or ``given["overwrite"]`` asks for a new one.

    Raises:
        ValueError: ``given`` names another protocol, model or backbone than the run's (that would be another
            run), leaves out ``data_root`` where the run recorded a relative one (older runs: relative to a folder
            it does not say), or the run's record is damaged. The message gives the way out.
    """
    if given.get("overwrite") or run_dir is None or not Path(run_dir).is_dir():
        return dict(given)
    manifest = read_manifest(run_dir)
    if manifest is None or manifest["kind"] != "train":
        return dict(given)
    started = manifest["identity"]
    if not isinstance(started, dict):
        raise ValueError(f"{Path(run_dir) / 'run.json'} holds no settings (its identity is {started!r})")
    other = [
        f"--{name} {given[name]}"
        for name in ("protocol", "model", "backbone")
        if name in given and name in started and given[name] != started[name]
    ]
    if other:
        raise ValueError(
            f"run folder {run_dir} holds a {started.get('model', '?')} {started.get('backbone', '?')} run of the "
            f"{started.get('protocol', '?')} protocol, and {' '.join(other)} would make another run. Nothing was "
            "changed. Choose another --run-dir, or pass --overwrite to move its files aside (nothing is deleted)"
        )
    kept = set(setting_names()) - CALL_SETTINGS
    recorded = {name: value for name, value in started.items() if name in kept}
    recorded["epochs"] = epochs_last_asked(run_dir) or recorded.get("epochs")
    protocol = recorded.get("protocol")
    derived = (
        protocol in PROTOCOLS
        and protocol_value(protocol, str(recorded.get("backbone")), "scheduler_period") is None
    )
    if derived and started.get("scheduler_period") == started.get("epochs"):
        recorded.pop("scheduler_period", None)
    if not isinstance(recorded.get("augmentation"), str) or recorded["augmentation"] not in AUGMENTATIONS:
        recorded.pop("augmentation", None)
    data_root = recorded.get("data_root")
    if "data_root" not in given and isinstance(data_root, str) and not Path(data_root).is_absolute():
        raise ValueError(
            f"the run in {run_dir} recorded its data set as the relative path {data_root!r}, relative to the folder "
            "it was started in, which it does not record; give the data set with --data"
        )
    return {**{name: value for name, value in recorded.items() if value is not None}, **given}


def epochs_last_asked(run_dir: str | Path) -> int:
    """The epochs that the last call to train in ``run_dir`` asked for (its config.json; 0 when unreadable)."""
    try:
        return int(json.loads((Path(run_dir) / "config.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
