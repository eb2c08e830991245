"""The feature-map reconstruction family — FRN, BiFRN and HMDRN as settings of one network.

A query image is classified by how well each class's support features rebuild its feature map: the
reconstruction error of class c, summed (or averaged) over the query's tokens, is the negative class score.

- HMDRN: Ning Luo, Meiyin Hu, Huan Wan, Yanyan Yang, Zhuohang Jiang, Xin Wei, "Hierarchical Mask-Enhanced
  Dual Reconstruction Network for Few-Shot Fine-Grained Image Classification", 2025, arXiv:2506.20263.
  At the last and the penultimate backbone level a masked transformer refines each image's tokens (self-
  reconstruction, ``transformer.py``), then every query is rebuilt from each class's pooled support tokens by
  cross attention (``AttentionReconstruction``); the two levels' scores are fused by learned weights:
  s(q, c) = w_last·s_last(q, c) + w_mid·s_mid(q, c), logits = γ·s / (C_last·25).
- BiFRN: Jijie Wu, Dongliang Chang, Aneeshan Sain, Xiaoxu Li, Zhanyu Ma, Jie Cao, Jun Guo, Yi-Zhe Song,
  "Bi-Directional Feature Reconstruction Network for Fine-Grained Few-Shot Image Classification", AAAI 2023,
  arXiv:2211.17161. Last level only, a 1-layer 1-head unmasked transformer, and reconstruction in both
  directions (query from support and support from query), each direction's score with its own weight.
- FRN: Davis Wertheimer, Luming Tang, Bharath Hariharan, "Few-Shot Classification with Feature Map
  Reconstruction Networks", CVPR 2021, arXiv:2012.01506. Last level only, no transformer, closed-form ridge
  regression (``RidgeReconstruction``), logits = −γ · mean squared token error, plus the auxiliary
  orthogonality term weighted 0.03.

Shapes: images (B, 3, H, W) → per level tokens (B, N, C) (N = h·w); an episode's logits are (n_query, way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import Embedding, EpisodicModel, group_by_class
from .reconstruction import AttentionReconstruction, RidgeReconstruction, orthogonality_loss
from .transformer import MaskedTransformer

LEVELS = ("last", "mid")
RECONSTRUCTIONS = ("attention", "bidirectional", "ridge")
LAST_TOKENS = 25
"""The normaliser C_last·25 of BiFRN/HMDRN counts the 5×5 last-level tokens of an 84×84 image."""


def parse_levels(levels: str | Sequence[str]) -> tuple[str, ...]:
    """ "last" | "last+mid" | ["last", "mid"] → ("last",) | ("last", "mid")."""
    names = tuple(levels.replace(",", "+").split("+")) if isinstance(levels, str) else tuple(levels)
    names = tuple(name.strip() for name in names)
    if not names or any(name not in LEVELS for name in names) or len(set(names)) != len(names):
        raise ValueError(f"levels={levels!r}; expected 'last', 'last+mid' or a list of {list(LEVELS)}")
    if "last" not in names:
        raise ValueError(f"levels={levels!r}: the last level is always used; expected 'last' or 'last+mid'")
    return tuple(level for level in LEVELS if level in names)


class FusionWeights(nn.Module):
    """Named scalar weights of the score terms, learned (with weight decay) or fixed."""

    def __init__(self, names: Sequence[str], init: float, learned: bool) -> None:
        super().__init__()
        self.names = list(names)
        for name in self.names:
            value = torch.full((1,), float(init))
            if learned:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def __getitem__(self, name: str) -> Tensor:
        return getattr(self, name)


class ReconstructionNetwork(EpisodicModel):
    """FRN / BiFRN / HMDRN with every ablation a parameter (papers in the module docstring).

    ``embed(images (B, 3, H, W))`` → {level: tokens (B, N, C)} (N = 25 last-level, 100 penultimate tokens at
    84×84), plus masks (B, layers, heads, N) for masked queries; ``head`` → logits (n_query, way).

    Args:
        backbone: returns (mid, high) maps; ``backbone.channels`` = (C_mid, C_high).
        levels: "last" or "last+mid".
        transformer_layers: depth of the self-reconstruction transformer (0: none).
        transformer_heads: heads of each attention layer.
        mask: HMDRN's binary query mask in every layer and head.
        reconstruction: "attention" (query from support), "bidirectional" (both ways) or "ridge" (FRN).
        fusion: "learned" or "fixed" weights of the score terms (initial value ``fusion_init``).
        normaliser: "channels" (logits = s·γ/(C_last·25)) or "tokens" (each level's error averaged over its
            N tokens, logits = s·γ; FRN).
        sqrt_scaling: divide backbone features by sqrt(C) (FRN on ResNet-12).
        orthogonality_weight: weight of FRN's auxiliary loss (0.03 in FRN, 0 otherwise).
        attention_dropout: dropout on reconstruction attention probabilities.
        image_size: input side, which fixes the token counts of the positional tables.
        gsfl: options of the group-shared decomposition plug-in (``fsl_core.models.gsfl.MapDecomposition``)
            applied to each level's map before everything else, or None.
    """

    def __init__(
        self,
        backbone: nn.Module,
        config: dict[str, Any],
        levels: str | Sequence[str] = "last+mid",
        transformer_layers: int = 3,
        transformer_heads: int = 2,
        mask: bool = True,
        reconstruction: str = "attention",
        fusion: str = "learned",
        fusion_init: float = 0.5,
        normaliser: str = "channels",
        sqrt_scaling: bool = False,
        orthogonality_weight: float = 0.0,
        attention_dropout: float = 0.1,
        image_size: int = 84,
        gsfl: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(backbone, config)
        self.levels = parse_levels(levels)
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction={reconstruction!r}; expected one of {list(RECONSTRUCTIONS)}")
        if fusion not in ("learned", "fixed"):
            raise ValueError(f"fusion={fusion!r}; expected 'learned' or 'fixed'")
        if normaliser not in ("channels", "tokens"):
            raise ValueError(f"normaliser={normaliser!r}; expected 'channels' or 'tokens'")
        if int(transformer_layers) < 0 or int(transformer_heads) < 1:
            raise ValueError(
                f"transformer_layers={transformer_layers} must be >= 0 and transformer_heads={transformer_heads}"
                " >= 1"
            )
        if not 0 <= attention_dropout < 1:
            raise ValueError(f"attention_dropout={attention_dropout}; expected a probability in [0, 1)")
        if mask and transformer_layers == 0:
            raise ValueError("mask=True needs a transformer: set transformer_layers >= 1 or mask=False")
        if image_size < 16:
            raise ValueError(f"image_size={image_size}; expected at least 16 pixels (4 poolings)")
        channels = dict(zip(("mid", "last"), backbone.channels))
        tokens = {"mid": (image_size // 8) ** 2, "last": (image_size // 16) ** 2}
        self.channels = {level: channels[level] for level in self.levels}
        self.mask = bool(mask) and transformer_layers > 0
        self.query_embedding_differs = self.mask
        self.normaliser = normaliser
        self.sqrt_scaling = sqrt_scaling
        self.orthogonality_weight = float(orthogonality_weight)
        self.transformers = nn.ModuleDict(
            {
                level: MaskedTransformer(
                    self.channels[level], tokens[level], transformer_layers, transformer_heads, mask
                )
                for level in self.levels
            }
            if transformer_layers > 0
            else {}
        )
        self.reconstructions = nn.ModuleDict(
            {
                level: RidgeReconstruction()
                if reconstruction == "ridge"
                else AttentionReconstruction(
                    self.channels[level], reconstruction == "bidirectional", attention_dropout
                )
                for level in self.levels
            }
        )
        directions = ["support", "query"] if reconstruction == "bidirectional" else ["query"]
        self.terms = [(level, direction) for level in self.levels for direction in directions]
        self.fusion = FusionWeights(
            [self.term_name(*t) for t in self.terms], fusion_init, fusion == "learned"
        )
        self.gamma = nn.Parameter(torch.ones(1))
        self.decompositions = nn.ModuleDict()
        if gsfl is not None:
            from .gsfl import MapDecomposition

            self.decompositions = nn.ModuleDict(
                {level: MapDecomposition(self.channels[level], **gsfl) for level in self.levels}
            )

    @staticmethod
    def term_name(level: str, direction: str) -> str:
        """Weight name of a score term: "last", "mid" (query direction) or "last_support"."""
        return level if direction == "query" else f"{level}_{direction}"

    # -- per image ------------------------------------------------------------------------------------------
    def encode(self, maps: tuple[Tensor, Tensor], query: bool) -> Embedding:
        """maps → {level: tokens (B, N, C)}, plus {"mask_<level>": (B, layers, heads, N)} for masked queries
        and the decomposition's tensors ("gsfl_<level>_*") while training with the GSFL plug-in."""
        out: Embedding = {}
        for level, fmap in zip(("mid", "last"), maps):
            if level not in self.levels:
                continue
            if self.sqrt_scaling:
                fmap = fmap / math.sqrt(fmap.shape[1])
            if level in self.decompositions:
                fmap, extras = self.decompositions[level](fmap)
                if self.training:
                    out.update({f"gsfl_{level}_{key}": value for key, value in extras.items()})
            tokens = fmap.flatten(2).transpose(1, 2)
            if level in self.transformers:
                tokens, masks = self.transformers[level](tokens, query)
                if masks is not None:
                    out[f"mask_{level}"] = masks
            out[level] = tokens
        return out

    # -- per episode ----------------------------------------------------------------------------------------
    def level_errors(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        way: int,
        level: str,
        reconstruction: bool = True,
    ) -> dict[str, dict[str, Tensor]]:
        """Reconstruction errors of one level: {direction: {"error": (n_query, way, tokens), ...}}, with the
        rebuilt query tokens under "reconstruction" when ``reconstruction``.

        Support tokens (way*shot, N, C) are pooled per class into (way, shot*N, C) first.
        """
        pooled = group_by_class(support[level], support_labels, way)
        return self.reconstructions[level](pooled, query[level], reconstruction)

    def head(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        way: int,
        details: dict[str, Any] | None = None,
    ) -> Tensor:
        """Fused reconstruction score → logits (n_query, way); see the module docstring for the formula.

        support: {level: (way*shot, N, C)}, query: {level: (n_query, N, C)}.
        """
        score = 0.0
        level_scores = {}
        for level in self.levels:
            errors = self.level_errors(support, support_labels, query, way, level, details is not None)
            level_scores[level] = 0.0
            for direction, result in errors.items():
                term = -result["error"].sum(-1)  # s_level(q, c): minus the summed squared token error
                if self.normaliser == "tokens":
                    term = term / result["error"].shape[-1]  # FRN: the error averaged over the tokens
                weighted = self.fusion[self.term_name(level, direction)] * term
                level_scores[level] = level_scores[level] + weighted
                score = score + weighted
            if details is not None:
                details.setdefault("reconstruction", {})[level] = errors["query"]["reconstruction"].detach()
                details.setdefault("token_error", {})[level] = errors["query"]["error"].detach()
                if f"mask_{level}" in query:
                    details.setdefault("masks", {})[level] = query[f"mask_{level}"]
        scale = self.channels["last"] * LAST_TOKENS if self.normaliser == "channels" else 1.0
        logits = score * self.gamma / scale  # HMDRN/BiFRN: γ·s/(C_last·25); FRN: γ·s
        if details is not None:
            details["levels"] = list(self.levels)
            details["level_scores"] = {k: (v * self.gamma / scale).detach() for k, v in level_scores.items()}
            details["fusion_weights"] = self.fusion_weights()
        return logits

    def auxiliary_loss(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        query_labels: Tensor,
        way: int,
        class_ids: Tensor | None,
    ) -> Tensor | None:
        """FRN's orthogonality term and the GSFL plug-in's decomposition losses."""
        total = None
        if self.orthogonality_weight:
            pooled = group_by_class(support["last"], support_labels, way)
            total = self.orthogonality_weight * orthogonality_loss(pooled)
        if len(self.decompositions):
            if class_ids is None:
                raise ValueError("the gsfl option needs the episode's class_ids (global train-class ids)")
            labels = class_ids.to(support_labels.device)[torch.cat([support_labels, query_labels])]
            for level, decomposition in self.decompositions.items():
                prefix = f"gsfl_{level}_"
                extras = {
                    key[len(prefix) :]: torch.cat([support[key], query[key]])
                    for key in support
                    if key.startswith(prefix)
                }
                term = decomposition.loss(extras, labels)
                total = term if total is None else total + term
        return total

    def fusion_weights(self) -> dict[str, float]:
        weights = {f"w_{name}": self.fusion[name].item() for name in self.fusion.names}
        weights["gamma"] = self.gamma.item()
        return weights
