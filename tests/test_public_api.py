"""The package namespaces export what a user calls, and every exported name is documented."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

import fsl_core

EXPORTS = {
    "fsl_core.models": {
        "Conv4",
        "ResNet12",
        "build_backbone",
        "count_trainable",
        "EpisodicModel",
        "load_checkpoint",
        "load_model",
        "load_reference_checkpoint",
        "save_checkpoint",
        "save_model",
        "MODEL_NAMES",
        "build_model",
        "check_model_options",
        "rebuild_model",
        "GSFLClassifier",
        "ReconstructionNetwork",
        "ProtoNet",
    },
    "fsl_core.engine": {
        "PROTOCOLS",
        "TrainConfig",
        "TrainResult",
        "TrainingDiverged",
        "TrainingInterrupted",
        "EvalResult",
        "build_training_model",
        "confidence_interval",
        "evaluate",
        "evaluate_checkpoint",
        "evaluate_shots",
        "results_to_dict",
        "train",
        "GSFLTrainConfig",
        "train_gsfl",
    },
    "fsl_core.viz": {
        "EpisodeBrowser",
        "load_episode",
        "plot_episode",
        "confused_pairs",
        "episode_confusion",
        "plot_confusion",
        "EpisodeCAM",
        "episode_cams",
        "plot_cams",
        "plot_episode_cams",
        "pointing_game",
        "random_point_rate",
        "plot_query_masks",
        "GroundTruth",
        "has_parts",
        "plot_parts",
        "plot_accuracy_bars",
        "plot_accuracy_histogram",
        "plot_training_curves",
        "save_figure",
        "set_theme",
        "show_figure",
        "plot_error_maps",
        "plot_level_scores",
    },
}

# Helpers kept out of ``fsl_core.viz`` (importable from their modules).
VIZ_HELPERS = {
    "fsl_core.viz.confusion": ["most_confused"],
    "fsl_core.viz.gradcam": ["cam_overlay", "dilate", "flat_maps", "peak_points", "target_layer"],
    "fsl_core.viz.masks": [
        "align_to_eval",
        "mask_agreement",
        "token_fractions",
        "token_grid",
        "upsample_tokens",
    ],
    "fsl_core.viz.plots": ["image_array"],
    "fsl_core.viz.reconstruction": ["best_reconstructing_class", "error_maps", "true_class_best_rate"],
}


def attribute_docstring(module_name: str, name: str) -> str | None:
    """The string literal right after ``name = ...`` at the top level of ``module_name``, if any."""
    tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    for statement, following in zip(tree.body, tree.body[1:]):
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                return following.value.value if isinstance(following.value.value, str) else None
    return None


def own_docstring(package: str, name: str) -> str | None:
    """The docstring of an exported class or function, or the attribute docstring of an exported constant."""
    obj = getattr(importlib.import_module(package), name)
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__")
    if callable(obj):
        return obj.__doc__
    defining = [
        module
        for module_name, module in list(sys.modules.items())
        if module_name.startswith(package) and getattr(module, name, None) is obj
    ]
    for module in defining:
        doc = attribute_docstring(module.__name__, name)
        if doc:
            return doc
    return None


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_exported_names(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPORTS[package]
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice in __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ lists {name}, which the package does not define"


@pytest.mark.parametrize(
    ("package", "name"), [(package, name) for package in sorted(EXPORTS) for name in sorted(EXPORTS[package])]
)
def test_every_exported_name_is_documented(package: str, name: str) -> None:
    doc = own_docstring(package, name)
    assert doc and doc.strip(), f"{package}.{name} has no docstring"


def test_package_modules_are_documented() -> None:
    for package in EXPORTS:
        assert (importlib.import_module(package).__doc__ or "").strip(), f"{package} has no module docstring"


def test_viz_helpers_stay_in_their_modules() -> None:
    import fsl_core.viz as viz

    for module_name, names in VIZ_HELPERS.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert callable(getattr(module, name)), f"{module_name}.{name} is gone"
            assert name not in viz.__all__


def test_training_checkpoint_functions_have_one_home() -> None:
    from fsl_core.models import checkpoints

    assert checkpoints.FORMAT == "fsl_core.train/1"
    assert importlib.util.find_spec("fsl_core.engine.checkpoint") is None
    modules = {p.stem for p in Path(fsl_core.__file__).parent.rglob("*.py")}
    assert not {"checkpoint", "synthetic"} & modules
