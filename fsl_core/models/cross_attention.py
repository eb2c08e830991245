"""Cross attention of many query tokens against each class's support tokens, with dropout on the probabilities.

``cross_attention(queries, keys, values, dropout, training)`` computes, for every batch entry b,
softmax(Q K_bᵀ/√C) V_b, with the probabilities dropped out (p = ``dropout``) while training.

Two paths give the same function:
- PyTorch's fused ``scaled_dot_product_attention`` whenever dropout is off (evaluation, ``dropout=0``) and on
  CUDA, where its kernels also fuse the dropout;
- on CPU while training with dropout, where PyTorch falls back to materialising the whole (B, L, S) tensor
  several times over (2.7 GB each for HMDRN's 30-way penultimate level), ``ChunkedDropoutAttention`` walks
  the query tokens in blocks that stay in cache and recomputes the probabilities in the backward pass; only
  the keep mask (bool, B·L·S) is stored. Forward and backward take 1.6-2.1× less time than the fallback at
  5-way and 2.5-3.2× less at 30-way on a 2-core CPU (``bench/attention_speed.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_ELEMENTS = 1 << 19
"""Probabilities per block of the chunked path (2 MiB in float32), so that a block's tensors stay in cache."""


class ChunkedDropoutAttention(torch.autograd.Function):
    """out[b] = (softmax(Q K_bᵀ/√C) ⊙ keep[b] / (1 − p)) V_b, by blocks of query tokens.

    Inputs: queries (L, C) shared by every entry, keys and values (B, S, C), keep (B, L, S) bool, p, block
    rows. Output (B, L, C). The backward pass recomputes each block's probabilities from Q and K.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(
        ctx,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        keep: Tensor,
        p: float,  # noqa: D102
        rows: int,
    ) -> Tensor:
        out = queries.new_empty(keys.shape[0], queries.shape[0], keys.shape[-1])
        for start in range(0, queries.shape[0], rows):
            block = slice(start, start + rows)
            probs, _ = _probabilities(queries[block], keys)
            out[:, block] = torch.bmm(probs.mul_(keep[:, block].to(probs.dtype)), values).mul_(1 / (1 - p))
        ctx.save_for_backward(queries, keys, values, keep)
        ctx.p, ctx.rows = p, rows
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None, None]:  # noqa: D102
        queries, keys, values, keep = ctx.saved_tensors
        scale = keys.shape[-1] ** -0.5
        grad_queries = torch.empty(queries.shape, dtype=queries.dtype)
        grad_keys = torch.zeros_like(keys)
        grad_values = torch.zeros_like(values)
        for start in range(0, queries.shape[0], ctx.rows):
            block = slice(start, start + ctx.rows)
            probs, scaled_queries = _probabilities(queries[block], keys)  # (B, l, S), (B, l, C)
            block_keep, block_grad = keep[:, block].to(probs.dtype), grad[:, block] / (1 - ctx.p)
            grad_values.baddbmm_((probs * block_keep).transpose(1, 2), block_grad)
            grad_probs = torch.bmm(block_grad, values.transpose(1, 2)).mul_(block_keep)
            # softmax backward: dS = P ⊙ (dP − Σ_j dP_j P_j)
            grad_scores = grad_probs.sub_((grad_probs * probs).sum(-1, keepdim=True)).mul_(probs)
            grad_queries[block] = torch.bmm(grad_scores, keys).sum(0).mul_(scale)
            grad_keys.baddbmm_(grad_scores.transpose(1, 2), scaled_queries)
        return grad_queries, grad_keys, grad_values, None, None, None


def _probabilities(queries: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """queries (l, C), keys (B, S, C) → softmax(Q K_bᵀ/√C) (B, l, S) and the scaled queries (B, l, C)."""
    scaled = (queries * keys.shape[-1] ** -0.5).expand(keys.shape[0], -1, -1)
    return torch.bmm(scaled, keys.transpose(1, 2)).softmax(-1), scaled


def keep_mask(shape: tuple[int, ...], p: float) -> Tensor:
    """A CPU bool tensor of ``shape``, each entry True (kept) with probability 1 − p, independently.

    Drawn from a PCG64 stream seeded from torch's generator: twice as fast as ``bernoulli_`` on CPU, and just as
    reproducible under ``torch.manual_seed`` (and restored with torch's RNG state).
    """
    seed = int(torch.randint(0, 2**62, ()).item())
    uniform = np.random.Generator(np.random.PCG64(seed)).random(math.prod(shape), dtype=np.float32)
    return torch.from_numpy(uniform).view(shape) >= p


def cross_attention(
    queries: Tensor, keys: Tensor, values: Tensor, dropout: float = 0.0, training: bool = False
) -> Tensor:
    """queries: (L, C) shared by every batch entry; keys, values: (B, S, C) → (B, L, C).

    softmax(Q K_bᵀ/√C) V_b with dropout ``dropout`` on the probabilities while ``training``.
    """
    b, s, _ = keys.shape
    if not (training and dropout > 0 and queries.device.type == "cpu"):
        return F.scaled_dot_product_attention(
            queries.expand(b, -1, -1), keys, values, dropout_p=dropout if training else 0.0
        )
    if dropout >= 1:
        raise ValueError(f"attention dropout={dropout}; expected a probability below 1")
    keep = keep_mask((b, queries.shape[0], s), dropout)
    rows = max(1, BLOCK_ELEMENTS // (b * s))
    return ChunkedDropoutAttention.apply(queries, keys, values, keep, dropout, rows)


__all__ = ["cross_attention", "ChunkedDropoutAttention", "keep_mask"]
