"""``build_model``: every model of the toolkit by name, with its paper's settings as defaults."""

from __future__ import annotations

import inspect
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


def _check_options(cls: type, options: dict[str, Any], name: str, skip: tuple[str, ...]) -> None:
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *skip)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hints = ", ".join(f"{n!r}{hint}" for n in unknown if (hint := did_you_mean(n, accepted)))
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}{': ' + hints if hints else ''}; "
            f"accepted options: {accepted}"
        )


def build_model(name: str, backbone: str = "conv4", **options: Any) -> EpisodicModel:
    """Build a few-shot model.

    Args:
        name: "protonet", "frn", "bifrn", "hmdrn" (the reconstruction family shares every option of
            ``ReconstructionNetwork``, so e.g. ``build_model("hmdrn", mask=False, levels="last")`` is an ablation
            row) or "gsfl" (``fsl_core.models.gsfl.GSFLClassifier``).
        backbone: "conv4" or "resnet12".
        options: model options; unknown names raise a ``ValueError`` listing the accepted ones.

    Returns:
        The model; ``model.config`` holds everything needed to rebuild it: ``build_model(**model.config)``.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODEL_NAMES)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(BACKBONES)}")
    if name == "gsfl":
        from .gsfl import GSFLClassifier

        _check_options(GSFLClassifier, options, name, skip=("backbone", "config"))
        config = {"name": name, "backbone": backbone, **options}
        return GSFLClassifier(build_backbone(backbone), config, **options)
    if name == "protonet":
        image_size = int(options.pop("image_size", 84))
        _check_options(ProtoNet, options, name, skip=("backbone", "config", "feature_dim"))
        net = build_backbone(backbone)
        feature_dim = net.channels[1] * (image_size // 16) ** 2
        config = {"name": name, "backbone": backbone, "image_size": image_size, **options}
        return ProtoNet(net, config, feature_dim=feature_dim, **options)
    settings = dict(RECONSTRUCTION_PRESETS[name])
    if name == "frn":
        settings["sqrt_scaling"] = backbone == "resnet12"
    _check_options(ReconstructionNetwork, options, name, skip=("backbone", "config"))
    settings.update(options)
    config = {"name": name, "backbone": backbone, **settings}
    return ReconstructionNetwork(build_backbone(backbone), config, **settings)
