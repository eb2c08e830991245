"""Cross attention of many query tokens against each class's support tokens, with dropout on the probabilities.

``cross_attention(queries, keys, values, dropout, training)`` computes, for every batch entry b,
softmax(Q K_bᵀ/√C) V_b, with the probabilities dropped out (p = ``dropout``) while training.

Two paths give the same function:
- PyTorch's fused ``scaled_dot_product_attention`` whenever dropout is off (evaluation, ``dropout=0``) and on
  CUDA, where its kernels also fuse the dropout;
- on CPU while training with dropout, where PyTorch falls back to materialising the whole (B, L, S) tensor
  several times over (2.7 GB each for HMDRN's 30-way penultimate level), ``ChunkedDropoutAttention`` walks
  the query tokens in blocks that stay in cache. Of size B·L·S it keeps only the keep mask, packed to one
  bit per probability (84 MB at 30-way): the backward pass recomputes each block's probabilities and
  unpacks its mask, which takes a tenth of the time that drawing it did (``KeepMasks``). Blocks of about a
  million probabilities keep the seven matrix products per block near the CPU's peak
  (``bench/attention_speed.py`` times the paths).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_ELEMENTS = 1 << 20
"""Probabilities per block of the chunked path (4 MiB in float32): enough rows per block for the matrix
products to reach the CPU's peak, few enough for a block's tensors to stay in cache."""


def block_rows(entries: int, tokens: int) -> int:
    """Query rows per block of the chunked path for B = ``entries`` and S = ``tokens``: BLOCK_ELEMENTS / (B·S)."""
    return max(1, BLOCK_ELEMENTS // (entries * tokens))


class KeepMasks:
    """Keep masks for consecutive blocks, each entry kept with probability 1 − p, independently.

    Exactly P(drop) = round(p·2³²)/2³², from 8 random bits per entry: an entry is dropped when its byte is
    below the threshold's top byte, kept when above, and on a tie (one entry in 256) decided by 24 more bits
    from a second stream. Both streams are PCG64 generators seeded by ``seed``, so the same seed and the same
    block shapes give the same masks.
    """

    def __init__(self, seed: int, p: float) -> None:
        self._bytes = np.random.PCG64(seed)
        self._ties = self._bytes.jumped()
        threshold = min(round(p * 2**32), 2**32 - 1)
        self._high, self._low = divmod(threshold, 1 << 24)

    def next(self, shape: tuple[int, ...]) -> Tensor:
        """The next block's mask: a uint8 tensor of ``shape`` holding 1 (kept) or 0 (dropped)."""
        count = math.prod(shape)
        draws = self._bytes.random_raw(-(-count // 8)).view(np.uint8)[:count]
        keep = draws > self._high
        ties = np.flatnonzero(draws == self._high)
        if ties.size:
            keep[ties] = (self._ties.random_raw(ties.size) & 0xFFFFFF) >= self._low
        return torch.from_numpy(keep.view(np.uint8)).view(shape)


def keep_mask(shape: tuple[int, int, int], p: float, seed: int, rows: int) -> Tensor:
    """The whole (B, L, S) bool keep mask that ``ChunkedDropoutAttention`` applies with this seed and block
    height ``rows`` (it never builds it: this is for tests and inspection)."""
    masks = KeepMasks(seed, p)
    entries, length, tokens = shape
    blocks = [masks.next((entries, min(rows, length - start), tokens)) for start in range(0, length, rows)]
    return torch.cat(blocks, dim=1).bool()


class ChunkedDropoutAttention(torch.autograd.Function):
    """out[b] = (softmax(Q K_bᵀ/√C) ⊙ keep[b] / (1 − p)) V_b, by blocks of ``rows`` query tokens.

    Inputs: queries (L, C) shared by every entry, keys and values (B, S, C), p, the masks' seed, block rows.
    Output (B, L, C). Saved for backward: the inputs, the output and each block's keep mask packed to one bit
    per entry. With D_i = dout_i · out_i (which equals Σ_j dP_ij P_ij), the softmax backward of a block needs
    no other block.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(
        ctx,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        p: float,  # noqa: D102
        seed: int,
        rows: int,
    ) -> Tensor:
        masks, packed = KeepMasks(seed, p), []

        def draw(shape: tuple[int, int, int]) -> Tensor:
            mask = masks.next(shape)
            packed.append(np.packbits(mask.numpy()))
            return mask

        out = queries.new_empty(keys.shape[0], queries.shape[0], values.shape[-1])
        for block in _Blocks(queries, keys, rows, draw):
            out[:, block.rows] = torch.bmm(block.probs.mul_(block.keep), values)
        out.mul_(1 / (1 - p))
        ctx.save_for_backward(queries, keys, values, out)
        ctx.p, ctx.rows, ctx.packed_masks = p, rows, packed
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None, None]:  # noqa: D102
        queries, keys, values, out = ctx.saved_tensors
        values_t = values.transpose(1, 2)
        grad_queries = torch.empty(queries.shape, dtype=queries.dtype)
        grad_keys = torch.zeros_like(keys)
        grad_values = torch.zeros_like(values)
        packed = iter(ctx.packed_masks)

        def unpack(shape: tuple[int, int, int]) -> Tensor:
            return torch.from_numpy(np.unpackbits(next(packed), count=math.prod(shape))).view(shape)

        blocks = _Blocks(queries, keys, ctx.rows, unpack)
        for block in blocks:
            block_grad = grad[:, block.rows]
            row_dot = torch.linalg.vecdot(block_grad, out[:, block.rows]).unsqueeze(-1)  # D (B, l, 1)
            block_grad = block_grad * (1 / (1 - ctx.p))
            # softmax backward: dS = P ⊙ (dP − D) with dP = keep ⊙ (dout Vᵀ)/(1 − p),
            # computed as (P ⊙ keep) ⊙ (dout Vᵀ)/(1 − p) − P ⊙ D: P ⊙ keep also serves dV
            kept = block.keep.mul_(block.probs)
            grad_scores = torch.bmm(block_grad, values_t, out=block.scratch)
            grad_scores.mul_(kept).addcmul_(block.probs, row_dot, value=-1)
            grad_values.baddbmm_(kept.transpose(1, 2), block_grad)
            grad_queries[block.rows] = torch.bmm(grad_scores, keys).sum(0).mul_(blocks.scale)
            grad_keys.baddbmm_(grad_scores.transpose(1, 2), block.scaled_queries)
        return grad_queries, grad_keys, grad_values, None, None, None


class _Block(NamedTuple):
    rows: slice
    scaled_queries: Tensor  # (B, l, C): the block's queries times 1/√C, for every entry
    probs: Tensor  # (B, l, S): softmax(Q K_bᵀ/√C)
    keep: Tensor  # (B, l, S): the keep mask, 1.0 or 0.0
    scratch: Tensor  # (B, l, S): free to overwrite (it held the scores the probabilities were made from)


class _Blocks:
    """The blocks of one pass, computed into buffers made once per pass.

    PyTorch's CPU allocator does not cache: a fresh 4 MiB tensor is mapped and zeroed by the kernel on first
    touch, which took 2.7 ms on a 2-core AMD EPYC where the softmax that fills a reused one took 0.2 ms.
    ``masks(shape)`` gives the next block's keep mask (uint8, 1 kept, 0 dropped), blocks in order.
    """

    def __init__(
        self, queries: Tensor, keys: Tensor, rows: int, masks: Callable[[tuple[int, int, int]], Tensor]
    ) -> None:
        self.queries, self.keys, self.rows, self.masks = queries, keys, rows, masks
        self.scale = keys.shape[-1] ** -0.5
        size = keys.shape[0] * min(rows, queries.shape[0]) * keys.shape[1]
        self._buffers = [queries.new_empty(size) for _ in range(3)]

    def __iter__(self) -> Iterator[_Block]:
        entries, tokens = self.keys.shape[:2]
        keys_t = self.keys.transpose(1, 2)
        scaled = self.queries * self.scale
        for start in range(0, self.queries.shape[0], self.rows):
            rows = slice(start, start + self.rows)
            scaled_queries = scaled[rows].expand(entries, -1, -1).contiguous()
            shape = (entries, scaled_queries.shape[1], tokens)
            scores, probs, keep = (buffer[: math.prod(shape)].view(shape) for buffer in self._buffers)
            torch.bmm(scaled_queries, keys_t, out=scores)
            torch.ops.aten._softmax.out(scores, -1, False, out=probs)
            keep.copy_(self.masks(shape))
            yield _Block(rows, scaled_queries, probs, keep, scratch=scores)


def role_projections(projection: nn.Linear, tokens: Tensor, roles: str = "qkv") -> tuple[Tensor, ...]:
    """The query, key and value projections of ``tokens`` (…, C) by a bias-free C→3C ``projection`` (…, C)
    each, only those named in ``roles`` ("qkv", "kv", …), in that order.

    One product per role: slicing a (…, 3C) output instead would make the backward pass concatenate the three
    gradients and copy the non-contiguous slices (a fifth of HMDRN's transformer time on CPU).
    """
    weights = dict(zip("qkv", projection.weight.chunk(3)))
    return tuple(F.linear(tokens, weights[role]) for role in roles)


def cross_attention(
    queries: Tensor, keys: Tensor, values: Tensor, dropout: float = 0.0, training: bool = False
) -> Tensor:
    """queries: (L, C) shared by every batch entry; keys, values: (B, S, C) → (B, L, C).

    softmax(Q K_bᵀ/√C) V_b with dropout ``dropout`` on the probabilities while ``training``. The chunked path
    draws its masks' seed from torch's generator (one draw per call), so ``torch.manual_seed`` reproduces it.
    """
    b, s, _ = keys.shape
    if not (training and dropout > 0 and queries.device.type == "cpu"):
        return F.scaled_dot_product_attention(
            queries.expand(b, -1, -1), keys, values, dropout_p=dropout if training else 0.0
        )
    if dropout >= 1:
        raise ValueError(f"attention dropout={dropout}; expected a probability below 1")
    seed = int(torch.randint(0, 2**62, ()).item())
    return ChunkedDropoutAttention.apply(queries, keys, values, dropout, seed, block_rows(b, s))


__all__ = [
    "cross_attention",
    "role_projections",
    "ChunkedDropoutAttention",
    "KeepMasks",
    "block_rows",
    "keep_mask",
]
