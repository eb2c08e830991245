"""Cross attention of many query tokens against each class's support tokens, with dropout on the probabilities.

``cross_attention(queries, keys, values, dropout, training)`` computes, for every batch entry b,
softmax(Q K_bᵀ/√C) V_b, with the probabilities dropped out (p = ``dropout``) while training.

Two paths give the same function:
- PyTorch's fused ``scaled_dot_product_attention`` whenever dropout is off (evaluation, ``dropout=0``) and on
  CUDA, where its kernels also fuse the dropout;
- on CPU while training with dropout, where PyTorch falls back to materialising the whole (B, L, S) tensor
  several times over (2.7 GB each for HMDRN's 30-way penultimate level), ``ChunkedDropoutAttention`` walks
  the query tokens of one entry at a time in blocks that stay in cache. Of size B·L·S it keeps only the
  keep mask, packed to one bit per probability (84 MB at 30-way): the backward pass recomputes each block's
  probabilities and unpacks its mask, which takes a tenth of the time that drawing it did (``KeepMasks``).
  Blocks of about a million probabilities keep the seven matrix products per block near the CPU's peak, the
  four with a small output through oneDNN (``product``) (``bench/attention_speed.py`` times the paths).
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


def block_rows(tokens: int) -> int:
    """Query rows per block of the chunked path for S = ``tokens`` support tokens: BLOCK_ELEMENTS / S."""
    return max(1, BLOCK_ELEMENTS // tokens)


def _onednn_linear_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_LINEAR = _onednn_linear_available()


def product(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for a contiguous (m, k) and b (k, n) of any strides; float32 products as ``torch.mm`` computes them.

    Through oneDNN's inner product where PyTorch has it: MKL's sgemm, behind ``torch.mm``, ran at half the speed
    on an AMD EPYC with AVX-512 (213 against 475 GFLOP/s for 2048² matrices, the same float32 arithmetic;
    ``bench/attention_speed.py``). It returns a new tensor, so it serves the products whose output is small.
    """
    if _ONEDNN_LINEAR and a.dtype == torch.float32:
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
    return a @ b


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
    height ``rows`` (it never builds it: this is for tests and inspection). Blocks are drawn entry by entry,
    each entry's query rows in order."""
    masks = KeepMasks(seed, p)
    entries, length, tokens = shape
    starts = range(0, length, rows)
    return torch.stack(
        [
            torch.cat([masks.next((min(rows, length - start), tokens)) for start in starts])
            for _ in range(entries)
        ]
    ).bool()


class ChunkedDropoutAttention(torch.autograd.Function):
    """out[b] = (softmax(Q K_bᵀ/√C) ⊙ keep[b] / (1 − p)) V_b, by blocks of ``rows`` query tokens of one entry b.

    Inputs: queries (L, C) shared by every entry, keys and values (B, S, C), p, the masks' seed, block rows.
    Output (B, L, C). Saved for backward: the inputs, the output and each block's keep mask packed to one bit
    per entry. With D_i = dout_i · out_i (which equals Σ_j dP_ij P_ij), the softmax backward of a block needs
    no other block. Every matrix product of a block is one (l, ·) × (·, ·) product: the three with an (l, S)
    output write into the block's buffers (``torch.mm``), the four with a small output go through ``product``.
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

        def draw(shape: tuple[int, int]) -> Tensor:
            mask = masks.next(shape)
            packed.append(np.packbits(mask.numpy()))
            return mask

        out = queries.new_empty(keys.shape[0], queries.shape[0], values.shape[-1])
        for block in _Blocks(queries, keys, rows, draw):
            out[block.entry, block.rows] = product(block.probs.mul_(block.keep), values[block.entry])
        out.mul_(1 / (1 - p))
        ctx.save_for_backward(queries, keys, values, out)
        ctx.p, ctx.rows, ctx.packed_masks = p, rows, packed
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None, None]:  # noqa: D102
        queries, keys, values, out = ctx.saved_tensors
        grad_queries = torch.zeros(queries.shape, dtype=queries.dtype)
        grad_keys_t = torch.zeros(keys.shape[0], keys.shape[2], keys.shape[1], dtype=keys.dtype)  # (B, C, S)
        grad_values_t = torch.zeros(values.shape[0], values.shape[2], values.shape[1], dtype=values.dtype)
        packed = iter(ctx.packed_masks)

        def unpack(shape: tuple[int, int]) -> Tensor:
            return torch.from_numpy(np.unpackbits(next(packed), count=math.prod(shape))).view(shape)

        blocks = _Blocks(queries, keys, ctx.rows, unpack)
        for block in blocks:
            b, rows = block.entry, block.rows
            block_grad = grad[b, rows]
            row_dot = torch.linalg.vecdot(block_grad, out[b, rows]).unsqueeze(-1)  # D (l, 1)
            block_grad = block_grad * (1 / (1 - ctx.p))
            # softmax backward: dS = P ⊙ (dP − D) with dP = keep ⊙ (dout Vᵀ)/(1 − p),
            # computed as (P ⊙ keep) ⊙ (dout Vᵀ)/(1 − p) − P ⊙ D: P ⊙ keep also serves dV
            kept = block.keep.mul_(block.probs)
            grad_scores = torch.mm(block_grad, values[b].t(), out=block.scratch)
            grad_scores.mul_(kept).addcmul_(block.probs, row_dot, value=-1)
            grad_values_t[b] += product(block_grad.t().contiguous(), kept)
            grad_queries[rows] += product(grad_scores, keys[b])
            grad_keys_t[b] += product(block.scaled_queries.t().contiguous(), grad_scores)
        grad_queries.mul_(blocks.scale)
        return grad_queries, grad_keys_t.transpose(1, 2), grad_values_t.transpose(1, 2), None, None, None


class _Block(NamedTuple):
    entry: int
    rows: slice
    scaled_queries: Tensor  # (l, C): the block's queries times 1/√C
    probs: Tensor  # (l, S): softmax(Q K_bᵀ/√C)
    keep: Tensor  # (l, S): the keep mask, 1.0 or 0.0
    scratch: Tensor  # (l, S): free to overwrite (it held the scores the probabilities were made from)


class _Blocks:
    """The blocks of one pass, entry by entry, computed into buffers made once per pass.

    PyTorch's CPU allocator does not cache: a fresh 4 MiB tensor is mapped and zeroed by the kernel on first
    touch, which took 2.7 ms on a 2-core AMD EPYC where the softmax that fills a reused one took 0.2 ms.
    ``masks(shape)`` gives the next block's keep mask (uint8, 1 kept, 0 dropped), blocks in order.
    """

    def __init__(
        self, queries: Tensor, keys: Tensor, rows: int, masks: Callable[[tuple[int, int]], Tensor]
    ) -> None:
        self.queries, self.keys, self.rows, self.masks = queries, keys, rows, masks
        self.scale = keys.shape[-1] ** -0.5
        size = min(rows, queries.shape[0]) * keys.shape[1]
        self._buffers = [queries.new_empty(size) for _ in range(3)]

    def __iter__(self) -> Iterator[_Block]:
        entries, tokens = self.keys.shape[:2]
        scaled = self.queries * self.scale
        for entry in range(entries):
            keys_t = self.keys[entry].t()
            for start in range(0, self.queries.shape[0], self.rows):
                rows = slice(start, start + self.rows)
                scaled_queries = scaled[rows]
                shape = (scaled_queries.shape[0], tokens)
                scores, probs, keep = (buffer[: math.prod(shape)].view(shape) for buffer in self._buffers)
                torch.mm(scaled_queries, keys_t, out=scores)
                torch.ops.aten._softmax.out(scores, -1, False, out=probs)
                keep.copy_(self.masks(shape))
                yield _Block(entry, rows, scaled_queries, probs, keep, scratch=scores)


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
    return ChunkedDropoutAttention.apply(queries, keys, values, dropout, seed, block_rows(s))


__all__ = [
    "cross_attention",
    "role_projections",
    "ChunkedDropoutAttention",
    "KeepMasks",
    "block_rows",
    "keep_mask",
]
