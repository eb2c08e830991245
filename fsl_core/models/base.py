"""The episodic model interface: a per-image part (``embed``) and a per-episode part (``head``).

Splitting the two lets evaluation embed every test image once and replay thousands of episodes on the cached
embeddings, and lets Grad-CAM wrap "support fixed, query images in, logits out" as a single-tensor model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Embedding = dict[str, Tensor]
"""Per-image embedding: every tensor is indexed by image along dim 0."""


def index_embedding(embedding: Embedding, index: Tensor | slice) -> Embedding:
    """The embeddings of a subset of images."""
    return {key: value[index] for key, value in embedding.items()}


def concat_embeddings(parts: list[Embedding]) -> Embedding:
    """Concatenate per-image embeddings along the image dimension."""
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


class EpisodicModel(nn.Module):
    """Base of every few-shot model.

    Subclasses implement ``extract`` (the backbone, run on support and query as ONE batch during training so
    that BatchNorm statistics see the whole episode), ``encode`` (per-image post-processing that may differ for
    query images) and ``head`` (the episode-level classifier).
    """

    query_embedding_differs: bool = False
    """True when ``embed(x, query=True)`` differs from ``embed(x, query=False)`` (e.g. HMDRN's query mask)."""

    def __init__(self, backbone: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    # -- per image ------------------------------------------------------------------------------------------
    def extract(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images: (B, 3, H, W) → backbone maps (mid (B, C_mid, h, w), high (B, C_high, h', w'))."""
        return self.backbone(images)

    def encode(self, maps: tuple[Tensor, Tensor], query: bool) -> Embedding:
        """Backbone maps of B images → their embedding."""
        raise NotImplementedError

    def embed(self, images: Tensor, query: bool) -> Embedding:
        """images: (B, 3, H, W) → embedding of each image in the role of a query (or a support) image."""
        return self.encode(self.extract(images), query)

    def embed_episode(self, support_images: Tensor, query_images: Tensor) -> tuple[Embedding, Embedding]:
        """One backbone pass over support (way*shot, 3, H, W) and query (n_query, 3, H, W) images together."""
        n_support = support_images.shape[0]
        mid, high = self.extract(torch.cat([support_images, query_images]))
        support = self.encode((mid[:n_support], high[:n_support]), query=False)
        query = self.encode((mid[n_support:], high[n_support:]), query=True)
        return support, query

    # -- per episode ----------------------------------------------------------------------------------------
    def head(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        way: int,
        details: dict[str, Any] | None = None,
    ) -> Tensor:
        """Episode classifier: support labels (way*shot,) in 0..way-1 → logits (n_query, way).

        When ``details`` is a dict, intermediate results for visualisation are stored in it.
        """
        raise NotImplementedError

    def auxiliary_loss(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        query_labels: Tensor,
        way: int,
        class_ids: Tensor | None,
    ) -> Tensor | None:
        """Extra training terms beyond cross-entropy (None when the model has none)."""
        return None

    def forward(
        self,
        support_images: Tensor,
        support_labels: Tensor,
        query_images: Tensor,
        return_details: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """support_images: (way*shot, 3, H, W) class-major, support_labels: (way*shot,), query_images:
        (n_query, 3, H, W) → logits (n_query, way) [, details]."""
        way = int(support_labels.max()) + 1
        support, query = self.embed_episode(support_images, query_images)
        details: dict[str, Any] | None = {} if return_details else None
        logits = self.head(support, support_labels, query, way, details)
        return (logits, details) if return_details else logits

    def episode_loss(
        self,
        support_images: Tensor,
        support_labels: Tensor,
        query_images: Tensor,
        query_labels: Tensor,
        class_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Training objective of one episode: (cross-entropy + auxiliary terms, logits (n_query, way))."""
        way = int(support_labels.max()) + 1
        support, query = self.embed_episode(support_images, query_images)
        logits = self.head(support, support_labels, query, way)
        loss = F.cross_entropy(logits, query_labels)
        extra = self.auxiliary_loss(support, support_labels, query, query_labels, way, class_ids)
        return (loss if extra is None else loss + extra), logits

    def fusion_weights(self) -> dict[str, float]:
        """Learned scalars worth plotting during training (e.g. level weights, temperature)."""
        return {}


def group_by_class(tokens: Tensor, labels: Tensor, way: int) -> Tensor:
    """Pool the support tokens of each class.

    tokens: (way*shot, N, C) or (way*shot, D), labels: (way*shot,) in 0..way-1 →
    (way, shot*N, C) or (way, shot, D), classes in label order.
    """
    counts = torch.bincount(labels, minlength=way)
    if labels.numel() % way or bool((counts != counts[0]).any()):
        raise ValueError(f"every class needs the same number of support images; got counts {counts.tolist()}")
    ordered = tokens[torch.argsort(labels, stable=True)]
    return ordered.reshape(way, -1, tokens.shape[-1])


def prototype_distances(support: Tensor, support_labels: Tensor, query: Tensor, way: int) -> Tensor:
    """Squared Euclidean distance of every query to every class prototype (Snell et al., NeurIPS 2017).

    The prototype of class k is the mean of its support embeddings, c_k = (1/|S_k|) Σ_{i ∈ S_k} f(x_i)
    (ProtoNet Eq. 1); the distance is d(q, c_k) = ‖f(q) − c_k‖² (the d of ProtoNet Eq. 2).

    support: (way*shot, D), support_labels: (way*shot,) in 0..way-1, query: (n_query, D) → (n_query, way).
    """
    prototypes = group_by_class(support, support_labels, way).mean(dim=1)
    return (query[:, None] - prototypes[None]).pow(2).sum(-1)
