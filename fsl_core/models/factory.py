"""``build_model``: every model of the toolkit by name, with its paper's settings as defaults."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

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
    """Whether ``value`` is of the declared type ``kind`` (bool is no int here, an int is a float)."""
    arms = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_is_a(value, arm) for arm in arms)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    origin = typing.get_origin(kind)
    if origin is collections.abc.Sequence:
        return isinstance(value, (list, tuple)) and all(_is_a(item, arms[0]) for item in value)
    if origin is dict or kind is dict:
        return isinstance(value, dict)
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


def check_model_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless every entry of ``options`` is an option of model ``name`` holding a value of
    its declared type: a misspelt name gets the closest accepted one, and a value of another type (the string
    "false" for ``mask``, which would read as true) what was expected. Ranges and choices are checked by the
    model as it is built."""
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
    wrong = [
        f"{option}={value!r} ({type(value).__name__}), expected {_describe(accepted[option])}"
        for option, value in options.items()
        if not _is_a(value, accepted[option])
    ]
    if wrong:
        raise ValueError(
            f"model {name!r}: option {'; '.join(wrong)}. Write booleans as True or False and numbers unquoted "
            "(on the command line e.g. --option mask=False --option transformer_layers=1)"
        )


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
        The model; ``model.config`` holds everything needed to rebuild it: ``build_model(**model.config)``.
    """
    check_model_options(name, options)
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
