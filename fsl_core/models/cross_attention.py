"""Cross attention of many query tokens against each class's support tokens, with dropout on the probabilities.

``cross_attention(queries, keys, values, dropout, training)`` computes, for every batch entry b,
softmax(Q K_bᵀ/√C) V_b, with the probabilities dropped out (p = ``dropout``) while training.

Two paths give the same function:
- PyTorch's fused ``scaled_dot_product_attention`` in evaluation and on CUDA, where its kernels also fuse the
  dropout;
- on CPU while training, where with dropout PyTorch falls back to materialising the whole (B, L, S) tensor
  several times over (2.7 GB each for HMDRN's 30-way penultimate level), ``ChunkedDropoutAttention`` walks
  the query tokens of one entry at a time in blocks that stay in cache. Of size B·L·S it always keeps the
  keep mask, packed to one bit per probability (84 MB at 30-way), which the backward pass unpacks in a tenth
  of the time that drawing it took (``KeepMasks``); the output and the probabilities it keeps within
  ``SAVED_ELEMENTS`` and otherwise recomputes block by block in the backward pass. Blocks of about a
  million probabilities keep the matrix products (``product``, ``add_product``) near the CPU's peak
  (``bench/attention_speed.py`` times the paths). Without dropout it draws no mask and runs about as fast
  as PyTorch's fused kernel (squared errors forward and backward: 106 against 96 ms at HMDRN's 5-way, 3.5
  against 3.9 s at 30-way, on two Xeon cores of family 6, model 207), so it serves all training on CPU;
  with dropout 0.1 it took 163 ms and 5.3 s there.

With a ``target``, ``cross_attention`` returns the squared error of every output token against it instead of
the output: the reconstruction heads need nothing else while training, and where the (B, L, C) output would
not fit in ``SAVED_ELEMENTS`` the chunked path never holds it (one more matrix product per block recomputes it
in the backward pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .products import add_product, product

BLOCK_ELEMENTS = 1 << 20
"""Probabilities per block of the chunked path (4 MiB in float32): enough rows per block for the matrix
products to reach the CPU's peak, few enough for a block's tensors to stay in cache."""


SAVED_ELEMENTS = 1 << 27
"""The most float32 elements (512 MiB) the chunked path keeps for its backward pass beyond the inputs and masks:
the output (B, L, C) where it fits, which spares one of the backward pass's six matrix products per block, and
the probabilities (B, L, S) too where both fit, which spare one more and a softmax. HMDRN's 5-way penultimate
level keeps both (2.4 M + 18.75 M); its 30-way one keeps the output (86 M) and recomputes the probabilities
(675 M) block by block."""


def bfloat16_product(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """a @ b for 2-D a (m, k) and b (k, n) from bfloat16 operands: sums in float32, each rounded to bfloat16 as
    ``torch.mm`` gives it, returned as float32 (m, n), written into ``out`` when given. The chunked path's
    products under bfloat16 autocast (``amp``), which AMX runs 4–7× faster than float32 products (1,300–2,600
    against 290–380 GFLOP/s on two Xeon cores)."""
    rounded = _bfloat16_mm(a, b)
    return rounded.float() if out is None else out.copy_(rounded)


def add_bfloat16_product(total: Tensor, a: Tensor, b: Tensor) -> None:
    """total += ``bfloat16_product(a, b)``, in place: float32 total (m, n), a (m, k) and b (k, n) of any
    strides."""
    total.add_(_bfloat16_mm(a, b))


def _bfloat16_mm(a: Tensor, b: Tensor) -> Tensor:
    """torch.mm of a (m, k) and b (k, n) cast to bfloat16: a bfloat16 (m, n) of float32 sums, each rounded."""
    return torch.mm(a.to(torch.bfloat16), b.to(torch.bfloat16))


def block_rows(tokens: int) -> int:
    """Query rows per block of the chunked path for S = ``tokens`` support tokens: BLOCK_ELEMENTS / S."""
    return max(1, BLOCK_ELEMENTS // tokens)


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
    """out[b] = (softmax(Q K_bᵀ/√C) ⊙ keep[b] / (1 − p)) V_b, by blocks of ``rows`` query tokens of one entry b;
    with a target T, the squared error ‖out[b]_i − T_i‖² of each output token instead.

    Inputs: queries (L, C) shared by every entry, keys and values (B, S, C), target (L, C) or None, p, the
    masks' seed, block rows, and whether the forward pass keeps the output (B, L, C) and the probabilities
    (B, L, S) for the backward pass. Output (B, L, C), or (B, L) with a target. Saved for backward: the inputs,
    each block's keep mask packed to one bit per entry, and what the backward pass would otherwise recompute
    block by block: with ``save_output`` (always without a target) the output, which spares one matrix product
    per block, and with ``save_probabilities`` the probabilities, which spare the scores' product and softmax.
    With D_i = dout_i · out_i (which equals Σ_j dP_ij P_ij), the softmax backward of a block needs no other
    block. Each of a block's matrix products is a single 2-D ``product``, or ``add_product`` where the backward
    pass sums it over blocks.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(
        ctx,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        target: Tensor | None,  # noqa: D102
        p: float,
        seed: int,
        rows: int,
        save_output: bool,
        save_probabilities: bool,
        low_precision: bool,
    ) -> Tensor:
        masks, packed = (KeepMasks(seed, p) if p > 0 else None), []

        def draw(shape: tuple[int, int]) -> Tensor:
            mask = masks.next(shape)
            packed.append(np.packbits(mask.numpy()))
            return mask

        (entries, tokens, channels), length = keys.shape, queries.shape[0]
        probabilities = queries.new_empty((entries, length, tokens)) if save_probabilities else None
        out = queries.new_empty((entries, length, channels)) if save_output or target is None else None
        errors = queries.new_empty((entries, length)) if target is not None else None
        blocks = _Blocks(
            queries, keys, rows, draw if masks is not None else None, probabilities, low_precision
        )
        values_operand = blocks.operand(values)
        for block in blocks:
            kept = block.kept
            rebuilt = blocks.product(kept, values_operand[block.entry]).mul_(1 / (1 - p))
            if out is not None:
                out[block.entry, block.rows] = rebuilt
            if target is not None:
                difference = rebuilt.sub_(target[block.rows])
                errors[block.entry, block.rows] = torch.linalg.vecdot(difference, difference)
        ctx.save_for_backward(queries, keys, values, target, out, probabilities)
        ctx.p, ctx.rows, ctx.packed_masks, ctx.low_precision = p, rows, packed, low_precision
        return out if target is None else errors

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: D102
        queries, keys, values, target, out, probabilities = ctx.saved_tensors
        grad_queries = torch.zeros(queries.shape, dtype=queries.dtype)
        grad_keys_t = torch.zeros(keys.shape[0], keys.shape[2], keys.shape[1], dtype=keys.dtype)  # (B, C, S)
        grad_values_t = torch.zeros(values.shape[0], values.shape[2], values.shape[1], dtype=values.dtype)
        grad_target = torch.zeros_like(target) if ctx.needs_input_grad[3] else None
        packed = iter(ctx.packed_masks)

        def unpack(shape: tuple[int, int]) -> Tensor:
            return torch.from_numpy(np.unpackbits(next(packed), count=math.prod(shape))).view(shape)

        masks = unpack if ctx.p > 0 else None
        blocks = _Blocks(queries, keys, ctx.rows, masks, probabilities, ctx.low_precision, backward=True)
        mm, add_mm = blocks.product, blocks.add_product
        values_operand, keys_operand = blocks.operand(values), blocks.keys
        for block in blocks:
            b, rows = block.entry, block.rows
            kept = block.kept  # P ⊙ keep
            if out is not None:
                block_out = out[b, rows]
            else:
                block_out = mm(kept, values_operand[b]).mul_(1 / (1 - ctx.p))
            if target is None:
                block_grad = grad[b, rows]
            else:  # d‖out − T‖²/d out = 2 (out − T)
                block_grad = (block_out - target[rows]).mul_(2 * grad[b, rows].unsqueeze(-1))
                if grad_target is not None:
                    grad_target[rows] -= block_grad
            row_dot = torch.linalg.vecdot(block_grad, block_out).unsqueeze(-1)  # D (l, 1)
            block_grad = block_grad * (1 / (1 - ctx.p))
            # softmax backward: dS = P ⊙ (dP − D) with dP = keep ⊙ (dout Vᵀ)/(1 − p),
            # computed as (P ⊙ keep) ⊙ (dout Vᵀ)/(1 − p) − P ⊙ D: P ⊙ keep also serves dV
            grad_scores = mm(
                block_grad, values_operand[b].t(), out=blocks.block_memory("score gradients", kept.shape)
            )
            grad_scores.mul_(kept).addcmul_(block.probs, row_dot, value=-1)
            add_mm(grad_values_t[b], block_grad.t(), kept)
            grad_scores = blocks.operand(grad_scores)  # one cast for its two products
            add_mm(grad_queries[rows], grad_scores, keys_operand[b])
            add_mm(grad_keys_t[b], block.scaled_queries.t(), grad_scores)
        grad_queries.mul_(blocks.scale)
        grads = grad_queries, grad_keys_t.transpose(1, 2), grad_values_t.transpose(1, 2), grad_target
        return (*grads, None, None, None, None, None, None)


class SquaredError(torch.autograd.Function):
    """error = ((rebuilt − target)²).sum(-1) for rebuilt (A, …, C) and a target broadcastable to it → (A, …).

    The difference is made once and saved; the squares are summed by ``torch.linalg.vecdot`` without another
    tensor of rebuilt's size, and the backward pass makes only the gradient it returns: forward and backward take
    1.3× less time than the written-out formula at HMDRN's 5-way shapes and 1.5× less at 30-way
    (``bench/attention_speed.py``).
    """

    @staticmethod
    def forward(ctx, rebuilt: Tensor, target: Tensor) -> Tensor:  # noqa: D102
        difference = rebuilt - target
        ctx.save_for_backward(difference)
        ctx.target_shape = target.shape
        return torch.linalg.vecdot(difference, difference)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None]:  # noqa: D102
        (difference,) = ctx.saved_tensors
        grad_rebuilt = difference * (2 * grad).unsqueeze(-1)
        grad_target = grad_rebuilt.sum_to_size(ctx.target_shape).neg() if ctx.needs_input_grad[1] else None
        return grad_rebuilt, grad_target


def squared_error(rebuilt: Tensor, target: Tensor) -> Tensor:
    """Squared error per token: rebuilt (A, …, C) against target broadcastable to it → (A, …)."""
    return SquaredError.apply(rebuilt, target)


class _Block(NamedTuple):
    entry: int
    rows: slice
    scaled_queries: Tensor  # (l, C): the block's queries times 1/√C
    probs: Tensor  # (l, S): softmax(Q K_bᵀ/√C)
    kept: Tensor  # (l, S): P ⊙ keep, the probabilities with the dropped ones zeroed; P itself without dropout


class _Blocks:
    """The blocks of one pass, entry by entry. A block's probabilities are computed (the scores' product, then
    the softmax in place) into ``probabilities`` (B, L, S) when it is given, or in the ``backward`` pass read
    from it, and otherwise into per-pass memory (``block_memory``). ``masks(shape)`` gives the next block's
    keep mask (uint8, 1 kept, 0 dropped), blocks in order: the mask is copied as floats into per-pass memory
    and multiplied there by the probabilities: a float × uint8 product runs about 8× slower than the copy and a
    float product together; without ``masks`` (no dropout) a block's kept probabilities are its probabilities.

    Per-pass memory is made at a block's first use and serves every block of the pass: a fresh 4 MiB tensor
    per block would come from the system in huge pages, each faulted in again. On two Xeon cores (family 6,
    model 207) the scores' product of a 30-way block took 0.96 ms into a fresh tensor and 0.43 ms into reused
    memory.
    """

    def __init__(
        self,
        queries: Tensor,
        keys: Tensor,
        rows: int,
        masks: Callable[[tuple[int, int]], Tensor] | None,
        probabilities: Tensor | None = None,
        low_precision: bool = False,
        backward: bool = False,
    ) -> None:
        self.low_precision = low_precision
        self.product = bfloat16_product if low_precision else product
        self.add_product = add_bfloat16_product if low_precision else add_product
        self.queries, self.keys, self.rows, self.masks = queries, self.operand(keys), rows, masks
        self.probabilities = probabilities
        self.reads_probabilities = backward and probabilities is not None
        self.scale = keys.shape[-1] ** -0.5
        self._memory: dict[str, Tensor] = {}

    def block_memory(self, purpose: str, shape: tuple[int, int], dtype: torch.dtype | None = None) -> Tensor:
        """Uninitialised (l, S) memory for one ``purpose`` ("scores", "kept", "score gradients", …), the same for
        every block of the pass: made at its first use, of the largest block's size."""
        if purpose not in self._memory:
            size = min(self.rows, self.queries.shape[0]) * self.keys.shape[1]
            self._memory[purpose] = self.queries.new_empty(size, dtype=dtype or self.queries.dtype)
        return self._memory[purpose][: math.prod(shape)].view(shape)

    def operand(self, tensor: Tensor) -> Tensor:
        """``tensor`` as the products take it: bfloat16 in low precision (one cast for all its blocks)."""
        return tensor.to(torch.bfloat16) if self.low_precision else tensor

    def __iter__(self) -> Iterator[_Block]:
        entries, tokens = self.keys.shape[:2]
        scaled = self.operand(self.queries * self.scale)
        kept_type = torch.bfloat16 if self.low_precision else None  # P ⊙ keep only feeds products
        for entry in range(entries):
            keys_t = self.keys[entry].t()
            for start in range(0, self.queries.shape[0], self.rows):
                rows = slice(start, start + self.rows)
                scaled_queries = scaled[rows]
                shape = (scaled_queries.shape[0], tokens)
                mask = None if self.masks is None else self.masks(shape)
                if self.probabilities is not None:
                    probs = self.probabilities[entry, rows]
                else:
                    probs = self.block_memory("scores", shape)
                if not self.reads_probabilities:
                    self.product(scaled_queries, keys_t, out=probs)
                    torch.ops.aten._softmax.out(probs, -1, False, out=probs)
                kept = probs
                if mask is not None:
                    kept = self.block_memory("kept", shape, kept_type).copy_(mask).mul_(probs)
                yield _Block(entry, rows, scaled_queries, probs, kept)


def cross_attention(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    dropout: float = 0.0,
    training: bool = False,
    target: Tensor | None = None,
) -> Tensor:
    """queries: (L, C) shared by every batch entry; keys, values: (B, S, C) → (B, L, C), or with ``target``
    (L, C) the squared error of every output token against its target, (B, L).

    softmax(Q K_bᵀ/√C) V_b with dropout ``dropout`` on the probabilities while ``training``. Training on CPU
    takes the chunked path, with or without dropout: it draws its masks' seed from torch's generator (one draw
    per call with dropout, none without), so ``torch.manual_seed`` reproduces it; it keeps for the backward
    pass what fits in ``SAVED_ELEMENTS``.
    """
    b, s, _ = keys.shape
    if not (training and queries.device.type == "cpu"):
        # (B, 1 head, L, C): the fused kernels take 4-D inputs; recent PyTorch releases give 3-D ones the
        # missing dimension themselves, earlier ones materialise the (B, L, S) probabilities instead
        out = F.scaled_dot_product_attention(
            queries.expand(b, 1, -1, -1),
            keys[:, None],
            values[:, None],
            dropout_p=dropout if training else 0.0,
        ).squeeze(1)
        return out if target is None else squared_error(out, target)
    if dropout >= 1:
        raise ValueError(f"attention dropout={dropout}; expected a probability below 1")
    seed = int(torch.randint(0, 2**62, ()).item()) if dropout > 0 else 0
    output, probabilities = b * queries.shape[0] * values.shape[-1], b * queries.shape[0] * s
    save_output, save_probabilities = output <= SAVED_ELEMENTS, output + probabilities <= SAVED_ELEMENTS
    low_precision = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return ChunkedDropoutAttention.apply(
        queries,
        keys,
        values,
        target,
        dropout,
        seed,
        block_rows(s),
        save_output,
        save_probabilities,
        low_precision,
    )


__all__ = [
    "cross_attention",
    "squared_error",
    "ChunkedDropoutAttention",
    "KeepMasks",
    "add_bfloat16_product",
    "bfloat16_product",
    "block_rows",
    "keep_mask",
]
