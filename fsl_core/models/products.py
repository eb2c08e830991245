"""Float32 matrix products and linear layers through oneDNN on CPU, where PyTorch ships it.

PyTorch sends ``torch.mm`` and ``nn.Linear`` on CPU to MKL's sgemm, which ran at half the speed of oneDNN's
inner product on a 2-core AMD EPYC with AVX-512 (213 against 475 GFLOP/s for 2048² matrices). Both compute in
float32 throughout; their results differ only in the order of the float32 sums (relative differences near
1e-6). ``product`` and ``Linear`` take oneDNN's path for float32 CPU tensors outside autocast, PyTorch's own
everywhere else, and PyTorch's own everywhere if oneDNN's inner product is missing or disagrees with
``torch.mm`` on a small exact case when ``fsl_core`` is imported.

oneDNN's inner product always makes a new output and needs a contiguous left factor. Where a caller gives the
output's memory (``product``'s ``out``) or adds the product into a tensor (``add_product``), PyTorch's own
path runs (MKL on x86): the chunked cross attention does both for every product of a block but P V. On a
2-core Xeon (family 6, model 207) the two paths ran at the same speed; on a CPU where MKL runs at half
oneDNN's speed, as on that EPYC, those products may be slower (not measured).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_inner_product_works() -> bool:
    """Whether oneDNN's inner product runs here and gives torch.mm's (exact, small-integer) product."""
    try:
        x = torch.arange(12, dtype=torch.float32).view(3, 4)
        weight = torch.arange(8, dtype=torch.float32).view(2, 4)
        return torch.equal(_inner_product(x, weight), x @ weight.t())
    except (AttributeError, RuntimeError, TypeError):
        return False


def _onednn_applies(x: Tensor) -> bool:
    return (
        ONEDNN
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
    )


def _inner_product(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (m, k) contiguous, weight (n, k) of any strides → x weightᵀ + bias (m, n) through oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


ONEDNN = _onednn_inner_product_works()
"""Whether float32 CPU products go through oneDNN (x86 builds of PyTorch have it)."""


def product(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """a @ b for a contiguous (m, k) and b (k, n) of any strides (no autograd) → (m, n); with ``out`` written
    there by ``torch.mm``."""
    if out is not None:
        return torch.mm(a, b, out=out)
    return _inner_product(a, b.t()) if _onednn_applies(a) else a @ b


def add_product(total: Tensor, a: Tensor, b: Tensor) -> None:
    """total += a @ b, in place, for total (m, n), a (m, k) and b (k, n) of any strides (no autograd), through
    ``Tensor.addmm_``, which reads transposed factors as they lie and makes no temporary product."""
    total.addmm_(a, b)


class _OneDNNLinear(torch.autograd.Function):
    """y = x Wᵀ + b for x (m, k): forward and input gradient through oneDNN; the weight gradient gᵀx, an
    (n, k) output summed over m, through torch.mm, which reads g transposed without a copy."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _inner_product(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # noqa: D102
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _inner_product(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_weight = grad.t() @ x if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``: x (…, k), weight (n, k), bias (n,) → (…, n); through oneDNN for float32 CPU tensors."""
    if not _onednn_applies(x):
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    return _OneDNNLinear.apply(flat, weight, bias).view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same names) computed by ``linear``."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return linear(x, self.weight, self.bias)


def role_projections(projection: nn.Linear, tokens: Tensor, roles: str = "qkv") -> tuple[Tensor, ...]:
    """The query, key and value projections of ``tokens`` (…, C) by a bias-free C→3C ``projection`` (…, C)
    each, only those named in ``roles`` ("qkv", "kv", …), in that order.

    One product per role: slicing a (…, 3C) output instead would make the backward pass concatenate the three
    gradients and copy the non-contiguous slices (a fifth of HMDRN's transformer time on CPU).
    """
    weights = dict(zip("qkv", projection.weight.chunk(3)))
    return tuple(linear(tokens, weights[role]) for role in roles)


__all__ = ["ONEDNN", "Linear", "add_product", "linear", "product", "role_projections"]
