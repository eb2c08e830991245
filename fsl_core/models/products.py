"""Float32 matrix products and linear layers through oneDNN on CPU, where PyTorch ships it.

PyTorch sends ``torch.mm`` and ``nn.Linear`` on CPU to MKL's sgemm, which ran at half the speed of oneDNN's
inner product on a 2-core AMD EPYC with AVX-512 (213 against 475 GFLOP/s for 2048² matrices), with the same
float32 arithmetic: both sum each dot product in float32 with fused multiply-adds. ``product`` and ``Linear``
take oneDNN's path for float32 CPU tensors (outside autocast) and PyTorch's own everywhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_inner_product_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_inner_product_available()
"""Whether this PyTorch build has oneDNN's inner product (x86 builds do)."""


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


def product(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for a contiguous (m, k) and b (k, n) of any strides (no autograd)."""
    return _inner_product(a, b.t()) if _onednn_applies(a) else a @ b


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


__all__ = ["ONEDNN", "Linear", "linear", "product"]
