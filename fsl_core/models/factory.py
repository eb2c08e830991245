"""``build_model``: every model of the toolkit by name, with its paper's settings as defaults."""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..runtime import did_you_mean
from .backbones import BACKBONES, build_backbone
from .base import EpisodicModel
from .hmdrn import ReconstructionNetwork
from .protonet import ProtoNet

RECONSTRUCTION_PRESETS: dict[str, dict[str, Any]] = {
    "hmdrn": dict(
        levels="last+mid",
        transformer_layers=3,
        transformer_heads=2,
        mask=True,
        reconstruction="attention",
        fusion="learned",
        normaliser="channels",
    ),
    "bifrn": dict(
        levels="last",
        transformer_layers=1,
        transformer_heads=1,
        mask=False,
        reconstruction="bidirectional",
        fusion="learned",
        normaliser="channels",
    ),
    "frn": dict(
        levels="last",
        transformer_layers=0,
        mask=False,
        reconstruction="ridge",
        fusion="fixed",
        fusion_init=1.0,
        normaliser="tokens",
        orthogonality_weight=0.03,
    ),
}
MODEL_NAMES = ("protonet", "frn", "bifrn", "hmdrn", "gsfl")
"""The names ``build_model`` accepts."""


def _option_types(name: str) -> dict[str, Any]:
    """The options model ``name`` accepts, each with its declared type (the annotation of its constructor)."""
    if name == "gsfl":
        from .gsfl import GSFLClassifier

        cls, skip = GSFLClassifier, ("backbone", "config")
    elif name == "protonet":
        cls, skip = ProtoNet, ("backbone", "config", "feature_dim")
    else:
        cls, skip = ReconstructionNetwork, ("backbone", "config")
    hints = typing.get_type_hints(cls.__init__)
    accepted = {
        option: hints.get(option, Any)
        for option in inspect.signature(cls.__init__).parameters
        if option not in ("self", *skip)
    }
    return {"image_size": int, **accepted} if name == "protonet" else accepted


def _is_a(value: Any, kind: Any) -> bool:
    """Whether ``value`` is of the declared type ``kind``: NumPy scalars count as numbers and booleans (but a
    boolean is no number here), NumPy arrays and tensors as lists."""
    arms = typing.get_args(kind)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, arm) for arm in arms)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, (bool, np.bool_))
    if kind in (int, float) and isinstance(value, (bool, np.bool_)):
        return False
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    if kind is str:
        return isinstance(value, str)
    if origin is collections.abc.Sequence:
        items = value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value
        return isinstance(items, (list, tuple, range)) and all(_is_a(item, arms[0]) for item in items)
    if origin is dict or kind is dict:
        return isinstance(value, Mapping)
    return True


def _describe(kind: Any) -> str:
    """A declared type in words: "True or False", "an integer", "a list of strings or None", ..."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(kind))
    words = {bool: "True or False", int: "an integer", float: "a number", str: "a string", type(None): "None"}
    if kind in words:
        return words[kind]
    if typing.get_origin(kind) is collections.abc.Sequence:
        item = {str: "strings", int: "integers"}.get(typing.get_args(kind)[0], "values")
        return f"a list of {item}"
    return "a dict" if typing.get_origin(kind) is dict else str(kind)


def _wrong_types(options: Mapping[str, Any], declared: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``option=value (type), expected ...`` for every option of ``options`` whose value is not of the type
    ``declared`` gives it (options not declared there are left to the name check)."""
    return [
        f"{prefix}{option}={value!r} ({type(value).__name__}), expected {_describe(declared[option])}"
        for option, value in options.items()
        if option in declared and not _is_a(value, declared[option])
    ]


def check_model_options(name: str, options: Mapping[str, Any], check_types: bool = True) -> None:
    """Raise ``ValueError`` unless every entry of ``options`` is an option of model ``name`` and, with
    ``check_types``, holds a value of its declared type (the reconstruction family's ``gsfl`` plug-in options
    included): a misspelt name gets the closest accepted one, and a value of another type (the string "false"
    for ``mask``, which would read as true) what was expected. Ranges and choices are checked by the model as
    it is built."""
    if name not in MODEL_NAMES:
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name, MODEL_NAMES)}; expected one of {list(MODEL_NAMES)}"
        )
    accepted = _option_types(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hints = ", ".join(f"{n!r}{hint}" for n in unknown if (hint := did_you_mean(n, accepted)))
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}{': ' + hints if hints else ''}; "
            f"accepted options: {list(accepted)}"
        )
    if not check_types:
        return
    wrong = _wrong_types(options, accepted)
    if isinstance(options.get("gsfl"), Mapping):
        from .gsfl import Decomposition

        wrong += _wrong_types(options["gsfl"], typing.get_type_hints(Decomposition.__init__), prefix="gsfl.")
    if wrong:
        raise ValueError(
            f"model {name!r}: option {'; '.join(wrong)}. Give booleans as True or False and numbers as numbers, "
            "not strings (fsl-train: --option mask=False; YAML reads 1e-3 as a string, 1.0e-3 as a number)"
        )


def rebuild_model(config: Mapping[str, Any]) -> EpisodicModel:
    """The model a recorded ``model.config`` describes (a checkpoint's): option names are checked, their types
    are not, so a run recorded before types were checked rebuilds as it trained."""
    config = dict(config)
    name, backbone = config.pop("name"), config.pop("backbone", "conv4")
    check_model_options(name, config, check_types=False)
    return _built(name, backbone, config)


def build_model(name: str, backbone: str = "conv4", **options: Any) -> EpisodicModel:
    """Build a few-shot model.

    Args:
        name: "protonet", "frn", "bifrn", "hmdrn" (the reconstruction family shares every option of
            ``ReconstructionNetwork``, so e.g. ``build_model("hmdrn", mask=False, levels="last")`` is an ablation
            row) or "gsfl" (``fsl_core.models.gsfl.GSFLClassifier``).
        backbone: "conv4" or "resnet12".
        options: model options; unknown names and values of another type raise a ``ValueError``
            (``check_model_options``).

    Returns:
        The model; ``model.config`` holds everything needed to rebuild it: ``rebuild_model(model.config)``.
    """
    check_model_options(name, options)
    return _built(name, backbone, options)


def _built(name: str, backbone: str, options: dict[str, Any]) -> EpisodicModel:
    """``build_model`` once its options are checked."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(BACKBONES)}")
    if name == "gsfl":
        from .gsfl import GSFLClassifier

        config = {"name": name, "backbone": backbone, **options}
        return GSFLClassifier(build_backbone(backbone), config, **options)
    if name == "protonet":
        image_size = int(options.pop("image_size", 84))
        net = build_backbone(backbone)
        feature_dim = net.channels[1] * (image_size // 16) ** 2
        config = {"name": name, "backbone": backbone, "image_size": image_size, **options}
        return ProtoNet(net, config, feature_dim=feature_dim, **options)
    settings = dict(RECONSTRUCTION_PRESETS[name])
    if name == "frn":
        settings["sqrt_scaling"] = backbone == "resnet12"
    settings.update(options)
    config = {"name": name, "backbone": backbone, **settings}
    return ReconstructionNetwork(build_backbone(backbone), config, **settings)
