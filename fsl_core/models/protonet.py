"""Prototypical Networks (Snell et al., NeurIPS 2017): class prototype = mean support embedding,
logits = −scale · squared Euclidean distance / D."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Embedding, EpisodicModel, group_by_class


class ProtoNet(EpisodicModel):
    """ProtoNet on the flattened last feature map.

    Args:
        backbone: a backbone returning (mid, high) maps.
        learn_scale: learn the temperature (else it stays fixed).
        scale_init: initial temperature multiplier (default 1).
        feature_dim: D (C_high·h·w). Distances are divided by D, so the learned multiplier sees gradients of
            order one and stays stable under SGD at lr 0.1 (a raw temperature on D-dim distances diverges).
    """

    def __init__(
        self,
        backbone: nn.Module,
        config: dict[str, Any],
        feature_dim: int,
        learn_scale: bool = True,
        scale_init: float | None = None,
    ) -> None:
        super().__init__(backbone, config)
        init = torch.tensor([scale_init if scale_init is not None else 1.0])
        self.feature_dim = feature_dim
        if learn_scale:
            self.scale = nn.Parameter(init)
        else:
            self.register_buffer("scale", init)

    def encode(self, maps: tuple[Tensor, Tensor], query: bool) -> Embedding:
        """maps → {"last": (B, C_high·h·w)}."""
        return {"last": maps[1].flatten(1)}

    def head(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        way: int,
        details: dict[str, Any] | None = None,
    ) -> Tensor:
        """Prototypes (way, D) from support (way*shot, D); query (n_query, D) → logits (n_query, way)."""
        prototypes = group_by_class(support["last"], support_labels, way).mean(dim=1)
        distances = (query["last"][:, None] - prototypes[None]).pow(2).sum(-1)
        if details is not None:
            details["distances"] = distances
            details["fusion_weights"] = self.fusion_weights()
        return -self.scale * distances / self.feature_dim

    def fusion_weights(self) -> dict[str, float]:
        return {"scale": self.scale.item()}
