"""The parameters of every notebook, declared once: name, type, range, default and help.

Everything else follows from these declarations:

- each notebook's ``parameters`` cell is generated from them (``parameters_cell``; a test keeps the committed
  cells equal to it, and ``python -m fsl_core.notebooks --write-parameter-cells`` rewrites them);
- ``check(NOTEBOOK, globals())``, the one call a notebook makes after its parameters cell, checks every value
  and raises one ``ValueError`` naming each wrong parameter, what was expected and, for a misspelt choice,
  the closest one;
- the notebook runner checks the values it is given with ``check_values`` before a kernel starts, and
  ``--help-notebook`` lists the declarations;
- the episodes a notebook will draw (``episodes_drawn``) are checked against its data set as it is on disk, so a
  way above a split's classes is refused at once, not after a model was trained.

Settings that are also training settings take their help text from ``fsl_core.engine.TrainConfig``.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fsl_core.data.transforms import AUGMENTATIONS
from fsl_core.engine.ablation import ABLATION_ROWS
from fsl_core.engine.config import PROTOCOLS, TrainConfig, check_setting_names, setting_help
from fsl_core.models import MODEL_NAMES, check_model_options
from fsl_core.runtime import checked_checkpoint_file, did_you_mean

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("conv4", "resnet12")
SPLITS = ("train", "val", "test")
TRAINED_HERE = ("protonet", "frn", "bifrn", "hmdrn")  # the models a notebook trains with the episodic engine


@dataclass(frozen=True)
class Parameter:
    """One notebook parameter.

    ``kind``: "int", "float", "str", "bool", "ints" (list of int), "names" (list of str), "dict", "paths" (a dict
    {name: path}, each path as a "path") or "path"
    (a file or folder: the runner makes a relative one given to it absolute from the folder it is started in;
    a default, or a value typed into the notebook, is relative to the repository root); ``low``/``high``:
    inclusive bounds of numbers (and of list entries); ``above``: an exclusive lower bound; ``choices``: the
    allowed strings (and list entries); ``optional``: None is allowed, meaning ``none``; ``required``: how to
    give a value that must be given; ``missing``: for a path that must exist when the run starts, the way out
    when it does not (the runner checks it before a kernel starts); ``checkpoint``: the path names a checkpoint
    file, so a folder is refused too, naming the checkpoints in it.
    """

    default: Any
    help: str
    kind: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    none: str = ""
    required: str = ""
    missing: str = ""
    checkpoint: bool = False

    def expected(self) -> str:
        """What a valid value looks like, in words."""
        if self.kind == "int":
            text = {1: "a positive integer", 0: "a non-negative integer"}.get(
                self.low, f"an integer of at least {self.low}"
            )
        elif self.kind == "float":
            bounds = []
            if self.above is not None:
                bounds.append(f"> {self.above}")
            if self.low is not None:
                bounds.append(f">= {self.low}")
            if self.below is not None:
                bounds.append(f"< {self.below}")
            text = "a number" + (f" {' and '.join(bounds)}" if bounds else "")
        elif self.kind == "ints":
            text = "a non-empty list of " + ("positive" if self.low == 1 else "non-negative") + " integers"
        elif self.kind == "names":
            text = f"a non-empty list drawn from {list(self.choices or ())}"
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "dict":
            text = "a dict"
        elif self.kind == "paths":
            text = "a dict {name: path}"
        elif self.choices:
            text = f"one of {list(self.choices)}"
        elif self.kind == "path":
            text = "a path (absolute, or relative to the folder fsl-notebook is started in)"
        else:
            text = "a string"
        empty = '""' if self.default == "" else "None"  # an optional path whose default is empty takes "" too
        return text + (f", or {empty} ({self.none})" if self.optional and self.none else "")

    def problem(self, name: str, value: Any) -> str | None:
        """Why ``value`` is not valid for parameter ``name`` (None when it is)."""
        if value is None or value == "" and self.kind == "path":
            if self.required:
                return f"{name} is required: {self.required}"
            return None if self.optional else f"{name}={value!r}: expected {self.expected()}"
        if self.choices and self.kind in ("str", "names"):
            entries = value if self.kind == "names" and isinstance(value, list) else [value]
            unknown = [v for v in entries if v not in self.choices]
            if self.kind == "names" and (not isinstance(value, list) or not value):
                return f"{name}={value!r}: expected {self.expected()}"
            if unknown:
                hint = did_you_mean(unknown[0], self.choices)
                return f"{name}={unknown[0]!r} is not known; expected one of {list(self.choices)}{hint}"
            return None
        if self.kind in ("int", "ints"):
            entries = value if self.kind == "ints" and isinstance(value, list) else [value]
            if self.kind == "ints" and (not isinstance(value, list) or not value):
                return f"{name}={value!r}: expected {self.expected()}"
            for entry in entries:
                if isinstance(entry, bool) or not isinstance(entry, int) or not self._in_range(entry):
                    return f"{name}={value!r}: expected {self.expected()}"
            return None
        if self.kind == "float":
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            return (
                None if number and self._in_range(value) else f"{name}={value!r}: expected {self.expected()}"
            )
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"{name}={value!r}: expected {self.expected()}"
        if self.kind == "dict":
            return None if isinstance(value, dict) else f"{name}={value!r}: expected {self.expected()}"
        if self.kind == "paths":
            paths = isinstance(value, dict) and all(isinstance(path, str) for path in value.values())
            return None if paths else f"{name}={value!r}: expected {self.expected()}"
        return None if isinstance(value, str) else f"{name}={value!r}: expected {self.expected()}"

    def _in_range(self, value: float) -> bool:
        return (
            (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
            and (self.above is None or value > self.above)
            and (self.below is None or value < self.below)
        )


def integer(default: int | None, help: str, low: int = 1, **more: Any) -> Parameter:
    return Parameter(default, help, "int", low=low, **more)


def number(default: float, help: str, **bounds: Any) -> Parameter:
    return Parameter(default, help, "float", **bounds)


def choice(default: str | None, help: str, choices: tuple[str, ...], **more: Any) -> Parameter:
    return Parameter(default, help, "str", choices=choices, **more)


def setting(name: str, default: Any, kind: str = "int", **more: Any) -> Parameter:
    """A parameter that is also a training setting: its help comes from ``TrainConfig``."""
    help = setting_help(name) + (" (None: the protocol's value)" if more.get("optional") else "")
    if more.get("optional"):
        more.setdefault("none", "the protocol's value")
    if kind == "int":
        return Parameter(default, help, "int", low=more.pop("low", 1), **more)
    return Parameter(default, help, kind, **more)


def _run_parameters(notebook: str) -> dict[str, Parameter]:
    return {
        "run_dir": Parameter(
            None,
            f"run folder; None: outputs/{notebook}/interactive (the runner sets it)",
            "path",
            optional=True,
        ),
        "run_name": Parameter(None, "name of this run (set by the runner)", "str", optional=True),
    }


DATA_ROOT = Parameter(
    "data/birds",
    "data set folder (few-shot layout)",
    "path",
    missing="fsl-birds FOLDER generates the embedded birds set there (`make data`: into data/birds); "
    "fsl-prepare writes CUB, Stanford Cars or Stanford Dogs in the few-shot layout",
)
CHECKPOINT_MISSING = (
    "give a checkpoint file: best.pt or last.pt of a training run (e.g. outputs/02_train/<run>/train/best.pt, where "
    "<run> is interactive for a notebook run in JupyterLab), or a save_model file"
)
DEVICE = Parameter("auto", '"auto" (CUDA when present), "cpu", "cuda" or "cuda:N"', "str")
THREADS = integer(
    0, "CPU threads (0: every core this process may use, or OMP_NUM_THREADS when it is set)", low=0
)
BACKBONE = choice("conv4", "backbone: conv4 or resnet12", BACKBONES)
SEED = integer(0, "seed of initialisation, episodes, augmentation and dropout", low=0)
IMAGE_SIZE = integer(84, "input side in pixels (84 in the papers)", low=16)
WAY = integer(5, "classes per episode", low=2)
LR = number(0.1, "SGD learning rate", above=0)
AUGMENTATION = setting("augmentation", "papers", "str", choices=tuple(AUGMENTATIONS))


def _train_here(what: str) -> dict[str, Parameter]:
    """The brief training of the notebooks that train a model when no checkpoint is given."""
    return {
        "backbone": choice("conv4", f"backbone of {what} trained here: conv4 or resnet12", BACKBONES),
        "data_root": DATA_ROOT,
        "image_size": integer(84, f"input side of {what} trained here (a checkpoint brings its own)", low=16),
        "train_epochs": integer(5, f"epochs of {what} trained here"),
        "train_episodes": integer(20, f"episodes per epoch of {what} trained here (5-way 5-shot)"),
        "train_query": integer(
            8, f"query images per class in the training and validation episodes of {what}"
        ),
        "lr": number(0.1, f"SGD learning rate of {what} trained here", above=0),
    }


NOTEBOOKS: dict[str, dict[str, Parameter]] = {
    "00_quickstart": {
        "data_root": Parameter(
            "data/birds",
            "data set folder; the birds set is generated there when missing",
            "path",
        ),
        "data_seed": integer(0, "seed of the generated birds set (used only when it is generated)", low=0),
        "models": Parameter(
            ["hmdrn", "protonet"],
            "models to train and compare: protonet, frn, bifrn, hmdrn (the first is visualised)",
            "names",
            choices=TRAINED_HERE,
        ),
        "model_options": Parameter(
            {"protonet": {"learn_scale": False}},
            "options per model; ProtoNet keeps its distance scale 1/D fixed (stable with lr 0.1)",
            "dict",
        ),
        "backbone": BACKBONE,
        "image_size": IMAGE_SIZE,
        "augmentation": AUGMENTATION,
        "way": integer(5, "classes per training episode", low=2),
        "shot": integer(5, "support images per class in a training episode"),
        "query": integer(8, "query images per class in a training episode"),
        "epochs": integer(5, "training epochs per model"),
        "episodes_per_epoch": integer(20, "training episodes per epoch"),
        "lr": number(0.1, "SGD learning rate, cosine-annealed over the run", above=0),
        "val_episodes": integer(100, "validation episodes (5-way 5-shot) after training"),
        "eval_episodes": integer(
            500, "test episodes per setting (5-way 1-shot and 5-way 5-shot; the papers use 10,000)", low=2
        ),
        "eval_query": integer(
            16, "query images per class in validation and test episodes (16 in the papers)"
        ),
        "seed": SEED,
        "device": DEVICE,
        "threads": THREADS,
    },
    "01_data_explorer": {
        "data_root": replace(DATA_ROOT, missing=""),  # generate_if_missing decides
        "generate_if_missing": Parameter(
            True, "generate the embedded birds set into data_root when the folder does not exist", "bool"
        ),
        "image_size": integer(
            84, "side of the episodes drawn (evaluation transform) and of the augmentation figure", low=16
        ),
        "max_images_per_class": integer(
            10, "images read per class for the size/colour/part statistics (bounds the time)"
        ),
        "split": choice("test", "split shown first in the episode browser: train, val or test", SPLITS),
        "way": integer(5, "classes per browsed episode", low=2),
        "shot": integer(1, "support images per class in the browsed episode"),
        "query": integer(2, "query images per class in the browsed episode"),
        "seed": integer(0, "episode seed (an episode is a pure function of the seed and its index)", low=0),
        "part_examples": integer(4, "images shown with their part map and discriminative-part mask"),
        "augmentation_images": integer(
            4, "training images shown under each augmentation preset (0: no augmentation figure)", low=0
        ),
    },
    "02_train": {
        "model": choice("hmdrn", "model name: protonet, frn, bifrn, hmdrn, gsfl", tuple(MODEL_NAMES)),
        "backbone": BACKBONE,
        "model_options": Parameter(
            {}, 'model options (ablation switches), e.g. {"levels": "last", "mask": False}', "dict"
        ),
        "data_root": DATA_ROOT,
        "protocol": choice(
            "quick", '"quick" (CPU demonstration) or "authors" (the HMDRN paper protocol)', PROTOCOLS
        ),
        "image_size": setting("image_size", None, low=16, optional=True),
        "augmentation": AUGMENTATION,
        "way": setting("way", None, low=2, optional=True),
        "shot": setting("shot", None, optional=True),
        "query": setting("query", None, optional=True),
        "epochs": setting("epochs", None, optional=True),
        "episodes_per_epoch": setting("episodes_per_epoch", None, optional=True),
        "lr": setting("lr", None, "float", above=0, optional=True),
        "val_every": setting("val_every", None, low=0, optional=True),
        "val_episodes": setting("val_episodes", None, optional=True),
        "val_query": setting("val_query", None, optional=True),
        "train_settings": Parameter(
            {}, 'any other training setting, e.g. {"weight_decay": 0.0, "scheduler": "step"}', "dict"
        ),
        "test_episodes": integer(
            0, "test episodes per shot after training (0: no test evaluation; else at least 2)", low=0
        ),
        "test_shots": Parameter([1, 5], "shots of the test evaluation (5-way)", "ints", low=1),
        "test_query": integer(16, "query images per class in test episodes"),
        "seed": SEED,
        "device": DEVICE,
        "threads": THREADS,
        "num_workers": setting("num_workers", 0, low=0),
        "train_dir": Parameter(
            None,
            "training run folder (None: <run folder>/train); an existing one is continued",
            "path",
            optional=True,
        ),
    },
    "03_evaluate": {
        "checkpoint": Parameter(
            None,
            "the checkpoint to evaluate (required): a training run's best.pt or last.pt, a save_model file",
            "path",
            required="pass the path of a training run's best.pt, e.g. -p checkpoint "
            "outputs/02_train/<run>/train/best.pt",
            missing=CHECKPOINT_MISSING,
            checkpoint=True,
        ),
        "reference": Parameter(
            False,
            "the checkpoint is the file released by the HMDRN authors (loaded into reference_model on conv4)",
            "bool",
        ),
        "reference_model": choice(
            "hmdrn", "model the released HMDRN weights are loaded into (with reference True)", ("hmdrn",)
        ),
        "data_root": replace(
            DATA_ROOT,
            default=None,
            help="data set folder (few-shot layout; None: the one the checkpoint's run trained on)",
            optional=True,
            none="the data set the checkpoint's run trained on",
        ),
        "split": choice("test", "split to evaluate on", SPLITS),
        "image_size": integer(
            None,
            "input side (None: the size the checkpoint was trained with, else the model's own, else 84)",
            low=16,
            optional=True,
            none="the size the checkpoint was trained with",
        ),
        "way": WAY,
        "shots": Parameter([1, 5], "support images per class, one evaluation each", "ints", low=1),
        "query": integer(16, "query images per class"),
        "episodes": integer(1000, "episodes per shot (the papers use 10,000)", low=2),
        "seed": integer(
            0, "episode seed (the same seed gives the same episodes, so models compare fairly)", low=0
        ),
        "confusion_shot": integer(1, "shot of the episodes behind the confusion matrix"),
        "confusion_episodes": integer(
            500, "episodes behind the confusion matrix (0: no confusion pass)", low=0
        ),
        "top_classes": integer(8, "classes shown in the confusion matrix (the most confused ones)"),
        "device": DEVICE,
    },
    "04_ablation": {
        "rows": Parameter(
            list(ABLATION_ROWS),
            "ablation rows, in the table's order (fsl_core.engine.ablation.ABLATION_ROWS)",
            "names",
            choices=tuple(ABLATION_ROWS),
        ),
        "backbone": BACKBONE,
        "data_root": DATA_ROOT,
        "image_size": IMAGE_SIZE,
        "way": integer(5, "classes per training episode", low=2),
        "shot": integer(5, "support images per class in a training episode"),
        "query": integer(10, "query images per class in a training episode"),
        "epochs": integer(8, "training epochs per row"),
        "episodes_per_epoch": integer(30, "training episodes per epoch"),
        "lr": LR,
        "val_every": integer(
            4, "validate every N epochs (and after the last); the best model is tested", low=0
        ),
        "val_episodes": integer(200, "validation episodes (5-way 5-shot)"),
        "test_episodes": integer(1000, "test episodes per shot", low=2),
        "test_shots": Parameter([1, 5], "shots of the test evaluation (5-way)", "ints", low=1),
        "test_query": integer(16, "query images per class in validation and test episodes"),
        "seeds": Parameter(
            [0], "training seeds; with several, each row reports the mean over seeds", "ints", low=0
        ),
        "max_workers": integer(2, "training runs at once (each in its own kernel process)"),
        "skip_finished": Parameter(True, "reuse finished runs with the same parameters", "bool"),
        "runs_root": Parameter(
            None,
            "output root of the 02_train runs (None: the output root of this run, e.g. outputs/)",
            "path",
            optional=True,
        ),
        "device": DEVICE,
    },
    "05_masks_and_reconstructions": {
        "checkpoint": Parameter(
            None,
            "an HMDRN checkpoint (e.g. outputs/00_quickstart/interactive/train/hmdrn/best.pt after 00 in JupyterLab, "
            "outputs/00_quickstart/<run>/train/hmdrn/best.pt after fsl-notebook); None: train one briefly here",
            "path",
            optional=True,
            missing=CHECKPOINT_MISSING,
            checkpoint=True,
        ),
        "model_options": Parameter(
            {},
            'options of the HMDRN trained here when no checkpoint is given, e.g. {"levels": "last"}',
            "dict",
        ),
        **_train_here("the HMDRN"),
        "split": choice("test", "split the episodes come from", SPLITS),
        "way": WAY,
        "shot": integer(1, "support images per class"),
        "query": integer(3, "query images per class"),
        "n_show": integer(3, "queries shown in figures (one per class)"),
        "stats_episodes": integer(50, "episodes behind the numbers (reconstruction and mask statistics)"),
        "random_draws": integer(100, "random masks per real mask for the baseline"),
        "seed": integer(0, "seed of episodes and training", low=0),
        "device": DEVICE,
        "threads": THREADS,
    },
    "06_gradcam": {
        "models": Parameter(
            ["protonet", "frn", "bifrn", "hmdrn"],
            "models compared: protonet, frn, bifrn, hmdrn",
            "names",
            choices=TRAINED_HERE,
        ),
        "checkpoints": Parameter(
            {},
            "{model: checkpoint path}; models without one are trained briefly here",
            "paths",
            missing=CHECKPOINT_MISSING,
            checkpoint=True,
        ),
        **_train_here("each model"),
        "split": choice("test", "split the episodes come from", SPLITS),
        "way": WAY,
        "shot": integer(1, "support images per class"),
        "n_show": integer(5, "queries shown side by side (one per class)"),
        "pointing_episodes": integer(20, "episodes of the pointing game"),
        "pointing_query": integer(4, "queries per class in the pointing-game episodes"),
        "tolerance": integer(
            2, "pixels the ground-truth regions are dilated by (at 84 px; scaled with image_size)", low=0
        ),
        "cam_target": choice(  # the names of fsl_core.viz.gradcam.CAM_TARGETS (not imported: it loads matplotlib)
            "log_probability",
            "what a class's map is the gradient of: 'log_probability' (the class against the episode's others) or "
            "'logit' (its raw score, for a metric model a negative distance: often flat)",
            ("log_probability", "logit"),
        ),
        "seed": integer(0, "seed of episodes and training", low=0),
        "device": DEVICE,
        "threads": THREADS,
    },
    "07_gsfl": {
        "data_root": Parameter(
            None,
            "None: the embedded birds set in data/birds (generated if missing); or a generated birds folder",
            "path",
            optional=True,
            none="the embedded birds set",
        ),
        "birds_settings": Parameter(
            {},
            'generator settings for the embedded set, e.g. {"image_size": 84, "images_per_class": 40}',
            "dict",
        ),
        "image_size": IMAGE_SIZE,
        "backbone": BACKBONE,
        "group_counts": Parameter(
            [1, 3, 5, 10], "the K values of the K-means sweep (question 1)", "ints", low=1
        ),
        "groups": integer(
            10, "K used to train GSFL and the HMDRN plug-in (at most the number of train classes)"
        ),
        "kmeans_n_init": integer(10, "K-means restarts (scikit-learn n_init)"),
        "held_out_fraction": number(
            0.25,
            "share of each train class's images held out for classifier accuracy and probes",
            above=0,
            below=1,
        ),
        "warmup_epochs": integer(
            10,
            "brief supervised training of the backbone before grouping (0: group with a random backbone)",
            low=0,
        ),
        "stage1_epochs": integer(10, "GSFL stage 1: backbone frozen, Adam lr 1e-3, weight decay 1e-5", low=0),
        "stage2_epochs": integer(10, "GSFL stage 2: everything trained, Adam lr 1e-4", low=0),
        "batch_size": integer(32, "images per GSFL training batch"),
        "hidden": integer(512, "hidden width of the GSFL encoders and decoder"),
        "dropout": number(
            0.5,
            "dropout before each Linear of the GSFL encoders (0.5 in the authors' release)",
            low=0,
            below=1,
        ),
        "feature_normalise": choice(
            "none",
            'normalisation of the pooled feature: "none", "l2" or "sqrt_l2" (the authors\' release)',
            ("none", "l2", "sqrt_l2"),
        ),
        "shared_from": choice(
            "d", 'group patterns from the centres of d ("d", the release) or of s + d ("sd")', ("d", "sd")
        ),
        "rec_weight": number(0.01, "weight of the reconstruction loss", low=0),
        "d_weight": number(0.1, "weight of the d-to-class-centre loss", low=0),
        "s_weight": number(0.1, "weight of the s-to-group-pattern loss", low=0),
        "alpha": number(0.01, "centre update rate", low=0),
        "mean_reduction": Parameter(
            True, "average the centre losses over the batch (False: sum, as the release)", "bool"
        ),
        "way": integer(5, "classes per few-shot test episode", low=2),
        "shots": Parameter([1, 5], "support images per class in the few-shot tests", "ints", low=1),
        "query": integer(15, "query images per class in the few-shot tests"),
        "few_shot_episodes": integer(
            600, "test episodes per setting (95% confidence intervals over them)", low=2
        ),
        "probe_max_iter": integer(1000, "iterations of the logistic-regression probes"),
        "hmdrn_train_episodes": integer(200, "training budget of each HMDRN run (question 4), in episodes"),
        "hmdrn_way": integer(5, "classes per HMDRN training episode", low=2),
        "hmdrn_shot": integer(5, "support images per class in HMDRN training episodes"),
        "hmdrn_query": integer(10, "query images per class in HMDRN training episodes"),
        "hmdrn_lr": number(
            0.1, 'SGD learning rate of the HMDRN runs (the "quick" protocol\'s value)', above=0
        ),
        "seed": integer(0, "one seed for initialisation, K-means, splits and episodes", low=0),
        "device": DEVICE,
        "threads": THREADS,
        "progress": Parameter(True, "tqdm progress bars", "bool"),
    },
    "08_your_images": {
        "checkpoint": Parameter(
            None,
            "the model: best.pt of a training run, a save_model file, or the HMDRN authors' weights with "
            "reference True; None: a model is trained briefly here on data_root",
            "path",
            optional=True,
            none="a model is trained briefly here",
            missing=CHECKPOINT_MISSING,
            checkpoint=True,
        ),
        "reference": Parameter(
            False, "the checkpoint holds the HMDRN authors' released Conv-4 weights", "bool"
        ),
        "support_dir": Parameter(
            "",
            "support folder, one sub-folder of images per class (<class name>/<image files>); empty: shots "
            "images of way test classes of data_root, copied into the run folder",
            "path",
            optional=True,
            none="an example from data_root",
        ),
        "query_dir": Parameter(
            "",
            "folder of the images to classify; empty: queries further images of each example class",
            "path",
            optional=True,
            none="an example from data_root",
        ),
        "way": integer(5, "classes of the example support set (support_dir empty)", low=2),
        "shots": integer(5, "support images per class of the example support set"),
        "queries": integer(2, "images to classify per example class (query_dir empty)"),
        "explain_query": integer(0, "position of the image explained among the images to classify", low=0),
        "model": choice(
            "hmdrn",
            "model trained here when no checkpoint is given: protonet, frn, bifrn, hmdrn",
            TRAINED_HERE,
        ),
        **_train_here("the model"),
        "data_root": Parameter(
            "data/birds",
            "data set of the model trained here and of the example (the embedded birds set is generated there "
            "when the folder does not exist)",
            "path",
        ),
        "seed": integer(0, "seed of the example classes and of the training", low=0),
        "device": DEVICE,
        "threads": THREADS,
    },
}


def _number_in_text(text: str) -> str:
    """The number ``text`` spells in a way YAML leaves as a string (``1e1``: YAML 1.1 wants ``1.0e+1``),
    written as YAML reads it ("10", "0.001"); "" when it spells none."""
    try:
        number = float(text)
    except ValueError:
        return ""
    if not math.isfinite(number):  # nan, inf, 1e400: no setting takes them
        return ""
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass(frozen=True)
class EpisodesDrawn:
    """Episodes a notebook draws from one split: ``way`` classes of ``images`` images each; ``way`` and each part
    of ``images`` are (what sets it: a parameter's name, or words naming a fixed number, its value).
    ``with_parts``: drawn only on a data set with part maps (the pointing game)."""

    split: str
    way: tuple[str, int]
    images: tuple[tuple[str, int], ...]
    with_parts: bool = False


def _brief_training_episodes(values: Mapping[str, Any]) -> list[EpisodesDrawn]:
    """The episodes of ``fsl_core.engine.brief_training``: 5-way 5-shot, ``train_query`` queries, train and val."""
    fixed = (("the brief training's shot", 5), ("train_query", values["train_query"]))
    return [EpisodesDrawn(split, ("the brief training's way", 5), fixed) for split in ("train", "val")]


def _test_episodes(values: Mapping[str, Any]) -> list[EpisodesDrawn]:
    """The 5-way test episodes of a training notebook (02, 04): ``test_shots`` shots, ``test_query`` queries."""
    images = (("test_shots", max(values["test_shots"])), ("test_query", values["test_query"]))
    return [EpisodesDrawn("test", ("the test's way", 5), images)]


def _training_episodes(values: Mapping[str, Any]) -> list[EpisodesDrawn]:
    """02's training and validation episodes, as its ``TrainConfig`` resolves them (the protocol's numbers where
    none is given): each number named by the parameter that sets it, or its ``train_settings`` entry."""
    settings = dict(values["train_settings"])
    given = {
        name: values[name]
        for name in ("way", "shot", "query", "val_query", "val_every")
        if values[name] is not None
    }
    config = TrainConfig(
        protocol=values["protocol"], model=values["model"], backbone=values["backbone"], **given, **settings
    )

    def named(name: str) -> tuple[str, int]:  # the notebook's parameter, else the train_settings entry
        return (name if name in NOTEBOOKS["02_train"] else f"train_settings {name}"), getattr(config, name)

    drawn = [EpisodesDrawn("train", named("way"), (named("shot"), named("query")))]
    if config.val_every:
        drawn.append(EpisodesDrawn("val", named("val_way"), (named("val_shot"), named("val_query"))))
    return drawn


def episodes_drawn(notebook: str, values: Mapping[str, Any]) -> tuple[str | None, list[EpisodesDrawn]]:
    """The data set folder (as given) notebook ``notebook`` draws episodes from with parameter ``values``, and the
    episodes it draws there whose way, shot or query a parameter sets; (None, []) when it draws from a folder
    named elsewhere (03 without data_root: the checkpoint's) or sizes its episodes itself (01's browser). 08's
    example classes are left to ``fsl_core.classifier.example_classes`` (``_episode_problems`` asks it)."""
    v = values
    if notebook == "00_quickstart":
        test = (("the evaluation's shot", 5), ("eval_query", v["eval_query"]))
        return v["data_root"], [
            EpisodesDrawn("train", ("way", v["way"]), (("shot", v["shot"]), ("query", v["query"]))),
            *(EpisodesDrawn(split, ("the evaluation's way", 5), test) for split in ("val", "test")),
        ]
    if notebook == "02_train":
        return v["data_root"], [
            *_training_episodes(v),
            *(_test_episodes(v) if v["test_episodes"] else []),
        ]
    if notebook == "03_evaluate" and v["data_root"]:
        confusion = v["confusion_shot"] if v["confusion_episodes"] else 0
        shot = ("shots", max(v["shots"])) if max(v["shots"]) >= confusion else ("confusion_shot", confusion)
        return v["data_root"], [EpisodesDrawn(v["split"], ("way", v["way"]), (shot, ("query", v["query"])))]
    if notebook == "04_ablation":
        validation = EpisodesDrawn(
            "val",
            ("the validation's way", 5),
            (("the validation's shot", 5), ("test_query", v["test_query"])),
        )
        return v["data_root"], [
            EpisodesDrawn("train", ("way", v["way"]), (("shot", v["shot"]), ("query", v["query"]))),
            *([validation] if v["val_every"] else []),
            *_test_episodes(v),
        ]
    if notebook == "05_masks_and_reconstructions":
        shown = EpisodesDrawn(v["split"], ("way", v["way"]), (("shot", v["shot"]), ("query", v["query"])))
        return v["data_root"], [shown, *(_brief_training_episodes(v) if not v["checkpoint"] else [])]
    if notebook == "06_gradcam":
        way, shot = ("way", v["way"]), ("shot", v["shot"])
        figure = EpisodesDrawn(v["split"], way, (shot, ("the Grad-CAM figure's query", 2)))
        pointing = EpisodesDrawn(
            v["split"], way, (shot, ("pointing_query", v["pointing_query"])), with_parts=True
        )
        brief = _brief_training_episodes(v) if set(v["models"]) - set(v["checkpoints"]) else []
        return v["data_root"], [figure, pointing, *brief]
    if notebook == "07_gsfl" and not v["birds_settings"]:
        test = (("shots", max(v["shots"])), ("query", v["query"]))
        hmdrn = (("hmdrn_shot", v["hmdrn_shot"]), ("hmdrn_query", v["hmdrn_query"]))
        return v["data_root"] or "data/birds", [
            EpisodesDrawn("test", ("way", v["way"]), test),
            EpisodesDrawn("train", ("hmdrn_way", v["hmdrn_way"]), hmdrn),
        ]
    if notebook == "08_your_images":
        return v["data_root"], _brief_training_episodes(v) if not v["checkpoint"] else []
    return None, []


def _settable(notebook: str, label: str) -> bool:
    """Whether ``label`` of an ``EpisodesDrawn`` names something the user sets: a parameter, or an entry of 02's
    ``train_settings``."""
    return label in NOTEBOOKS[notebook] or label.startswith("train_settings ")


def _episode_problems(notebook: str, values: Mapping[str, Any]) -> list[str]:
    """Why the episodes of ``episodes_drawn`` cannot be drawn from the data set as it is on disk (a way above a
    split's classes, images per class above its smallest class), and for 08 why its example classes cannot be
    made; none for a folder that does not exist yet (the notebook generates the birds set) or a split that is
    not there (the kernel says why). A relative data set path is taken from the repository root, as in the kernel
    (the runner passes absolute ones). Reads the folder listings only: about 0.1 s for CUB's 11,788 images."""
    from fsl_core.classifier import example_classes
    from fsl_core.data.folder import FewShotDataError, FewShotFolder
    from fsl_core.data.sampler import episode_misfits
    from fsl_core.viz.parts import has_parts

    folder, drawn = episodes_drawn(notebook, values)
    if folder is None:
        return []
    root = repo_path(folder)
    if not root.is_dir():
        return []
    problems, sizes = [], {}
    if notebook == "08_your_images" and not (values["support_dir"] and values["query_dir"]):
        try:
            example_classes(root, values["way"], values["shots"], values["queries"], values["seed"])
        except (ValueError, OSError) as error:
            problems.append(f"the example set: {error}")
    for episodes in drawn:
        if episodes.with_parts and not has_parts(root):
            continue
        if episodes.split not in sizes:
            try:
                data = FewShotFolder(root, episodes.split, transform=None, verify=False)
            except (FewShotDataError, OSError):
                sizes[episodes.split] = None
            else:
                members = data.indices_by_class()
                sizes[episodes.split] = [(data.classes[c], len(m)) for c, m in enumerate(members)]
        counts = sizes[episodes.split]
        if counts is None:
            continue
        where = str(root / episodes.split)
        problems += episode_misfits(
            episodes.way, episodes.images, counts, where, lambda label: _settable(notebook, label)
        )
    return list(dict.fromkeys(problems))


def _relations(notebook: str, values: Mapping[str, Any]) -> list[str]:
    """Problems that involve several parameters of ``notebook``."""
    problems = []
    if notebook == "02_train":
        settings = values["train_settings"]
        given = {"model", "backbone", "options", "data_root", "run_dir"}
        given |= {name for name in NOTEBOOKS[notebook] if values.get(name) is not None}
        clash = sorted(set(settings) & given)
        if clash:
            problems.append(
                f"train_settings sets {clash}, which are parameters of this notebook: set them there"
            )
        try:
            check_setting_names(settings)
            if not clash:  # the values too, as the notebook's TrainConfig will check them
                TrainConfig(
                    protocol=values["protocol"],
                    model=values["model"],
                    backbone=values["backbone"],
                    **settings,
                )
        except (ValueError, TypeError) as error:
            texts = [
                value for value in settings.values() if isinstance(value, str) and _number_in_text(value)
            ]
            hint = "".join(f" (YAML reads {text!r} as text: write {_number_in_text(text)})" for text in texts)
            problems.append(f"train_settings: {error}{hint}")
    if notebook == "02_train" and values["test_episodes"] == 1:
        problems.append(
            "test_episodes=1: one episode gives no confidence interval; use 0 (no test evaluation) or 2 or more"
        )
    if notebook == "03_evaluate" and values["reference"] and values["data_root"] is None:
        problems.append(
            "data_root: give the data set to evaluate on; the HMDRN authors' released weights (reference=True) "
            "record none"
        )
    if notebook in ("00_quickstart",):
        bad = [k for k, v in values["model_options"].items() if not isinstance(v, dict)]
        if bad:
            problems.append(
                f"model_options: expected a dict {{model: {{option: value}}}}; {bad} are not dicts"
            )
        options_of = {
            model: options for model, options in values["model_options"].items() if model not in bad
        }
    else:  # 02_train names its model; 05_masks_and_reconstructions trains HMDRN when given no checkpoint
        options_of = {values.get("model", "hmdrn"): values.get("model_options", {})}
    if "model_options" in NOTEBOOKS[notebook]:
        for model, options in options_of.items():
            try:
                check_model_options(model, options)
            except ValueError as error:
                problems.append(f"model_options: {error}")
    if notebook == "06_gradcam":
        extra = sorted(set(values["checkpoints"]) - set(values["models"]))
        if extra:
            problems.append(f"checkpoints names {extra}, which are not in models={values['models']}")
    return problems


def declared(notebook: str) -> dict[str, Parameter]:
    """Every parameter of ``notebook`` (a notebook name such as ``02_train``), run_dir and run_name last."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"notebook {notebook!r} declares no parameters here; known: {list(NOTEBOOKS)}")
    return {**NOTEBOOKS[notebook], **_run_parameters(notebook)}


class ParameterError(ValueError):
    """Wrong notebook parameters: ``problems`` lists each (its name, what was expected, the closest name or
    choice). In a notebook it shows as one line per problem, without a traceback."""

    def __init__(self, notebook: str, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.notebook = notebook
        self.problems = problems

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of the traceback: the problems, one per line."""
        return [f"{type(self).__name__}: {self.notebook}'s parameters:", *(f"  - {p}" for p in self.problems)]


def repo_path(path: str | Path) -> Path:
    """``path`` made absolute as a notebook's kernel reads it: absolute paths stay, relative ones are taken from
    the repository root (the runner passes absolute ones)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _path_problems(notebook: str, values: Mapping[str, Any], given: Mapping[str, Any] | None) -> list[str]:
    """Every path parameter of ``notebook`` that must exist (``missing``: the way out) and does not, or that names
    a folder where a checkpoint file is expected; a "paths" parameter ({name: path}) has each path checked.
    ``given``: the parameters as typed to the runner, which takes a relative one from the folder it starts in:
    when such a path is missing there but exists in the repository, the way out says so."""
    problems = []
    for key, parameter in declared(notebook).items():
        value = values.get(key, parameter.default)
        typed = (given or {}).get(key)
        if parameter.kind == "paths" and isinstance(value, Mapping):
            typed = typed if isinstance(typed, Mapping) else {}
            entries = [(f"{key}[{entry!r}]", path, typed.get(entry)) for entry, path in value.items()]
        else:
            entries = [(key, value, typed)]
        for label, path, as_typed in entries:
            if not isinstance(path, str) or not path:
                continue
            where = repo_path(path)
            if parameter.checkpoint and where.is_dir():
                try:
                    checked_checkpoint_file(where)
                except IsADirectoryError as error:  # names the checkpoints in the folder
                    problems.append(f"{label}={path!r}: {error}")
                    continue
            if parameter.missing and not where.exists():
                how = parameter.missing
                if (
                    isinstance(as_typed, str)
                    and not Path(as_typed).expanduser().is_absolute()
                    and repo_path(as_typed).exists()
                ):
                    how = (
                        f"a relative path is taken from the folder the run is started in ({Path.cwd()}); for the "
                        f"repository's folder give {repo_path(as_typed)}"
                    )
                shown = "" if Path(path).expanduser().is_absolute() else f" ({where})"
                problems.append(f"{label}={path!r}: does not exist{shown}; {how}")
    return problems


def check_values(
    notebook: str, values: Mapping[str, Any], unknown_hint: str = "", given: Mapping[str, Any] | None = None
) -> SimpleNamespace:
    """Check ``values`` (missing names take their defaults) and return them as attributes.

    Raises one ``ParameterError`` (a ValueError) naming every unknown or wrong parameter (with the closest name
    or choice) and, once the values are right, every path that must exist and does not (``_path_problems``;
    ``given``: the runner's parameters as typed), then every episode the data set on disk cannot give
    (``_episode_problems``). A relative path is taken from the repository root, as the kernel does; the runner
    passes absolute ones. ``unknown_hint``: what an unknown name means where it was given.
    """
    spec = declared(notebook)
    unknown = [name for name in values if name not in spec]
    problems = [
        f"{notebook} has no parameter {name!r}{unknown_hint}{did_you_mean(name, spec)}; its parameters: "
        f"{', '.join(spec)}"
        for name in unknown
    ]
    merged = {name: values.get(name, parameter.default) for name, parameter in spec.items()}
    problems += [p for name, parameter in spec.items() if (p := parameter.problem(name, merged[name]))]
    if not problems:
        problems = _relations(notebook, merged)
    if not problems:
        problems = _path_problems(notebook, merged, given)
    if not problems:  # the values are right: can the data set give the episodes they ask for?
        problems = _episode_problems(notebook, merged)
    if problems:
        raise ParameterError(notebook, problems)
    return SimpleNamespace(**merged)


def check(notebook: str, namespace: Mapping[str, Any]) -> SimpleNamespace:
    """The one check a notebook makes after its parameters cell: ``check("02_train", globals())``.

    A name the parameters cell assigns that is no parameter (``epoch = 2`` for ``epochs``) is refused too: it
    would have no effect. The cell is found in the kernel's input history (``In``).
    """
    spec = declared(notebook)
    values = {name: namespace[name] for name in spec if name in namespace}
    values |= {
        name: namespace[name]
        for name in sorted(_parameters_cell_strays(namespace.get("In"), spec))
        if name in namespace
    }
    return check_values(
        notebook, values, unknown_hint=": set in the parameters cell as last run, it would have no effect"
    )


def _parameters_cell_strays(inputs: Any, spec: Mapping[str, Parameter]) -> set[str]:
    """The names that the last parameters cell run (the latest input that assigns at least three parameters, and
    more parameters than other names; plain, annotated and tuple assignments) assigns besides the parameters and
    never reads (a helper such as
    ``run = ...; checkpoint = f"{run}/best.pt"`` has its effect); empty without such an input."""
    if not isinstance(inputs, list):
        return set()
    for source in reversed(inputs):
        try:
            tree = ast.parse(source) if isinstance(source, str) else ast.Module([], [])
        except SyntaxError:
            continue
        assigned = {
            name.id
            for statement in tree.body
            if isinstance(statement, ast.Assign | ast.AnnAssign)
            for target in (statement.targets if isinstance(statement, ast.Assign) else [statement.target])
            for name in ast.walk(target)  # `a, b = 1, 2` assigns both names
            if isinstance(name, ast.Name)
        }
        ours = assigned & set(spec)
        if len(ours) >= 3 and len(ours) > len(assigned - ours):
            names = [node for node in ast.walk(tree) if isinstance(node, ast.Name)]
            used = {node.id for node in names if isinstance(node.ctx, ast.Load)}
            return {name for name in assigned - ours - used if not name.startswith("_")}
    return set()


def _literal(value: Any) -> str:
    """Python source for a parameter value, strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def parameters_cell(notebook: str) -> str:
    """The source of ``notebook``'s ``parameters`` cell: one ``name = default  # help`` line each.

    A help text may not hold "=": papermill would not read the line as a parameter.
    """
    unreadable = [name for name, p in declared(notebook).items() if "=" in p.help]
    if unreadable:
        raise ValueError(
            f"the help of {notebook}'s parameters {unreadable} holds '=': papermill cannot read it"
        )
    return "\n".join(f"{name} = {_literal(p.default)}  # {p.help}" for name, p in declared(notebook).items())
