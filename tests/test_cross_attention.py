"""Cross attention with dropout: the chunked CPU path equals the formula, in value and in gradient."""

from __future__ import annotations

import pytest
import torch

from fsl_core.models.cross_attention import ChunkedDropoutAttention, cross_attention, keep_mask


def reference(queries, keys, values, keep, p):
    """(softmax(Q K_bᵀ/√C) ⊙ keep[b] / (1 − p)) V_b, written out directly."""
    probs = torch.softmax(queries @ keys.transpose(1, 2) / keys.shape[-1] ** 0.5, dim=-1)
    return torch.bmm(probs * keep / (1 - p), values)


def inputs(dtype=torch.float64, length=23, entries=3, tokens=7, channels=4):
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(length, channels, dtype=dtype, generator=generator, requires_grad=True)
    keys = torch.randn(entries, tokens, channels, dtype=dtype, generator=generator, requires_grad=True)
    values = torch.randn(entries, tokens, channels, dtype=dtype, generator=generator, requires_grad=True)
    keep = torch.rand(entries, length, tokens, generator=generator) >= 0.3
    return queries, keys, values, keep


@pytest.mark.parametrize("rows", [1, 5, 23, 64])
def test_chunked_attention_equals_formula_and_gradients(rows):
    """Blocks that divide L, that do not, of one row and larger than L all give the formula; gradcheck
    compares the hand-written backward pass with finite differences."""
    queries, keys, values, keep = inputs()
    out = ChunkedDropoutAttention.apply(queries, keys, values, keep, 0.3, rows)
    assert out.shape == (3, 23, 4)
    torch.testing.assert_close(out, reference(queries, keys, values, keep, 0.3))
    assert torch.autograd.gradcheck(
        lambda q, k, v: ChunkedDropoutAttention.apply(q, k, v, keep, 0.3, rows), (queries, keys, values)
    )


def test_chunked_gradients_equal_autograd_of_formula():
    queries, keys, values, keep = inputs(torch.float32, length=300, entries=5, tokens=40, channels=16)
    weights = torch.randn(5, 300, 16)
    grads = torch.autograd.grad(
        (ChunkedDropoutAttention.apply(queries, keys, values, keep, 0.1, 37) * weights).sum(),
        (queries, keys, values),
    )
    expected = torch.autograd.grad(
        (reference(queries, keys, values, keep, 0.1) * weights).sum(), (queries, keys, values)
    )
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_keep_mask_rate_and_reproducibility():
    torch.manual_seed(3)
    first = keep_mask((4, 500, 500), 0.1)
    torch.manual_seed(3)
    again = keep_mask((4, 500, 500), 0.1)
    later = keep_mask((4, 500, 500), 0.1)
    assert first.dtype == torch.bool and first.shape == (4, 500, 500)
    assert torch.equal(first, again) and not torch.equal(first, later)
    # 1M Bernoulli(0.9) draws: the standard error of the rate is 3e-4
    assert abs(first.float().mean().item() - 0.9) < 2e-3


def test_cross_attention_training_on_cpu_is_the_formula_with_its_mask():
    queries, keys, values, _ = inputs(torch.float32, length=50, entries=3, tokens=9, channels=8)
    torch.manual_seed(11)
    out = cross_attention(queries, keys, values, dropout=0.25, training=True)
    torch.manual_seed(11)
    keep = keep_mask((3, 50, 9), 0.25)
    torch.testing.assert_close(out, reference(queries, keys, values, keep, 0.25))
    assert 0 < (~keep).sum() < keep.numel()


@pytest.mark.parametrize("dropout, training", [(0.1, False), (0.0, True)])
def test_cross_attention_without_active_dropout_is_plain_attention(dropout, training):
    queries, keys, values, _ = inputs(torch.float32)
    out = cross_attention(queries, keys, values, dropout=dropout, training=training)
    torch.testing.assert_close(out, reference(queries, keys, values, torch.ones(1), 0.0))


def test_cross_attention_rejects_dropout_of_one():
    queries, keys, values, _ = inputs(torch.float32)
    with pytest.raises(ValueError, match="dropout=1"):
        cross_attention(queries, keys, values, dropout=1.0, training=True)
