"""Masked transformer self-reconstruction of HMDRN; with one layer, one head and no mask it is the
self-reconstruction module of BiFRN.

- HMDRN: Ning Luo, Meiyin Hu, Huan Wan, Yanyan Yang, Zhuohang Jiang, Xin Wei, "Hierarchical Mask-Enhanced
  Dual Reconstruction Network for Few-Shot Fine-Grained Image Classification", 2025, arXiv:2506.20263.
- BiFRN: Jijie Wu, Dongliang Chang, Aneeshan Sain, Xiaoxu Li, Zhanyu Ma, Jie Cao, Jun Guo, Yi-Zhe Song,
  "Bi-Directional Feature Reconstruction Network for Fine-Grained Few-Shot Image Classification", AAAI 2023,
  arXiv:2211.17161.

A layer: X ← X + MSA(LN_pre(X)); X ← LN_1(X); X ← X + W2·GELU(W1·X); a final LayerNorm after the last layer.
The binary mask keeps, per query image and head, the tokens whose query vector has a squared norm
strictly above that image's mean; masked query vectors are zeroed (keys and values untouched).

Shapes: tokens (B, N, C) → (B, N, C), and for masked query images masks (B, layers, heads, N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .products import Linear, role_projections


def sinusoidal_positions(tokens: int, channels: int) -> Tensor:
    """Fixed positional embedding (1, N, C): P[p, i] = sin(p / 10000^(2⌊i/2⌋/C)) for even i, cos for odd i."""
    position = torch.arange(tokens, dtype=torch.float64)[:, None]
    pair = torch.div(torch.arange(channels), 2, rounding_mode="floor").to(torch.float64)
    angle = position / torch.pow(10000.0, 2.0 * pair / channels)[None, :]
    table = torch.where(torch.arange(channels) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)[None]


def norm_threshold_mask(queries: Tensor) -> Tensor:
    """Binary token mask from per-head query vectors.

    queries: (B, heads, N, d) → bool (B, heads, N), True where ‖q_i‖² > mean_j ‖q_j‖² (per image and head).
    """
    energy = queries.pow(2).sum(-1)
    return energy > energy.mean(dim=-1, keepdim=True)


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention, qkv C→3C without bias, output projection C→C with bias, dropout 0."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"transformer_heads={heads} must divide the channel count {channels}")
        self.heads = heads
        self.qkv = Linear(channels, 3 * channels, bias=False)
        self.proj = Linear(channels, channels)

    def forward(self, x: Tensor, masked: bool) -> tuple[Tensor, Tensor | None]:
        """x: (B, N, C) → (out (B, N, C), mask (B, heads, N) bool or None when not ``masked``)."""
        b, n, c = x.shape
        q, k, v = (
            part.view(b, n, self.heads, c // self.heads).transpose(1, 2)
            for part in role_projections(self.qkv, x)
        )
        mask = None
        if masked:
            mask = norm_threshold_mask(q.detach())
            q = q * mask.unsqueeze(-1).to(q.dtype)
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # under bfloat16 autocast (amp), PyTorch's CPU flash kernel is faster in float32: its bfloat16
            # backward pass took 107 against 29 ms a step at HMDRN's 5-way shapes on two Xeon cores
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # scale (C/heads)^-1/2
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), mask


class TransformerLayer(nn.Module):
    """Pre-norm attention, a LayerNorm, then a C→C→C GELU feed-forward with a residual (no expansion)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm_pre = nn.LayerNorm(channels)
        self.attn = MaskedSelfAttention(channels, heads)
        self.norm_post = nn.LayerNorm(channels)
        self.ffn_in = Linear(channels, channels)
        self.ffn_out = Linear(channels, channels)

    def forward(self, x: Tensor, masked: bool) -> tuple[Tensor, Tensor | None]:
        """x: (B, N, C) → (B, N, C) and the layer's mask (B, heads, N) or None."""
        attended, mask = self.attn(self.norm_pre(x), masked)
        x = self.norm_post(x + attended)
        return x + self.ffn_out(F.gelu(self.ffn_in(x))), mask


class MaskedTransformer(nn.Module):
    """Self-reconstruction of a feature map's tokens, shared by support and query images.

    Args:
        channels: C of the feature map.
        tokens: N = H·W expected (sets the positional table; other sizes are computed on the fly).
        layers, heads: depth and heads (HMDRN 3 and 2; BiFRN 1 and 1).
        mask: apply the binary mask to query images (HMDRN); support images are never masked.
    """

    def __init__(
        self, channels: int, tokens: int, layers: int = 3, heads: int = 2, mask: bool = True
    ) -> None:
        super().__init__()
        self.mask = mask
        self.layers = nn.ModuleList(TransformerLayer(channels, heads) for _ in range(layers))
        self.norm_final = nn.LayerNorm(channels)
        self.register_buffer("positions", sinusoidal_positions(tokens, channels), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor, query: bool) -> tuple[Tensor, Tensor | None]:
        """tokens: (B, N, C) → (B, N, C) and, for masked query images, masks (B, layers, heads, N) bool."""
        n, c = tokens.shape[1:]
        positions = self.positions
        if positions.shape[1] != n:
            positions = sinusoidal_positions(n, c).to(tokens.device)
        x = tokens + positions.to(tokens.dtype)
        masks = []
        for layer in self.layers:
            x, mask = layer(x, masked=self.mask and query)
            if mask is not None:
                masks.append(mask)
        return self.norm_final(x), (torch.stack(masks, dim=1) if masks else None)


__all__ = [
    "MaskedTransformer",
    "TransformerLayer",
    "MaskedSelfAttention",
    "sinusoidal_positions",
    "norm_threshold_mask",
]
