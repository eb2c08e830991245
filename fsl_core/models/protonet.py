"""Prototypical Networks.

Jake Snell, Kevin Swersky, Richard Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017,
arXiv:1703.05175.

The prototype of class k is the mean embedded support image, c_k = (1/|S_k|) Σ_{x_i ∈ S_k} f(x_i) (Eq. 1),
and a query is classified by a softmax over negative squared Euclidean distances to the prototypes (Eq. 2).
Here the embedding f is the flattened last backbone map (D = C_high·h·w) and the logits are
−scale · d(f(q), c_k) / D (a learned temperature on distances divided by D; the paper's logits are −d).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Embedding, EpisodicModel, prototype_distances


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
        """maps (mid (B, C_mid, 2h, 2w), high (B, C_high, h, w)) → {"last": (B, C_high·h·w)}."""
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
        # d(f(q), c_k) with c_k the class means (Eq. 1); the logits of the softmax of Eq. 2
        distances = prototype_distances(support["last"], support_labels, query["last"], way)
        if details is not None:
            details["distances"] = distances
            details["fusion_weights"] = self.fusion_weights()
        return -self.scale * distances / self.feature_dim

    def fusion_weights(self) -> dict[str, float]:
        return {"scale": self.scale.item()}
