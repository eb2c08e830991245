"""Cross attention with dropout: the chunked CPU path equals the formula, in value and in gradient, also inside
a whole HMDRN training step."""

from __future__ import annotations

import platform

import pytest
import torch

from fsl_core.models import build_model, products
from fsl_core.models import cross_attention as cross_attention_module
from fsl_core.models import reconstruction as reconstruction_module
from fsl_core.models.cross_attention import (
    ChunkedDropoutAttention,
    KeepMasks,
    add_bfloat16_product,
    bfloat16_product,
    block_rows,
    cross_attention,
    keep_mask,
    squared_error,
)
from fsl_core.models.products import Linear, add_product, product, role_projections


def reference(queries, keys, values, keep, p):
    """(softmax(Q K_bᵀ/√C) ⊙ keep[b] / (1 − p)) V_b, written out directly."""
    probs = torch.softmax(queries @ keys.transpose(1, 2) / keys.shape[-1] ** 0.5, dim=-1)
    return torch.bmm(probs * keep / (1 - p), values)


def inputs(dtype=torch.float64, length=23, entries=3, tokens=7, channels=4):
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(length, channels, dtype=dtype, generator=generator, requires_grad=True)
    keys = torch.randn(entries, tokens, channels, dtype=dtype, generator=generator, requires_grad=True)
    values = torch.randn(entries, tokens, channels, dtype=dtype, generator=generator, requires_grad=True)
    return queries, keys, values


SAVED = {"none": (False, False), "output": (True, False), "both": (True, True)}
"""What the forward pass keeps for the backward pass: (the output, the probabilities)."""


def blocks_and_saving(*cases: tuple[int, str]) -> pytest.MarkDecorator:
    """Parametrise over (block rows, what is saved) pairs: every saving with several blocks of 5 rows, the other
    block sizes once (one-row blocks make gradcheck slow)."""
    return pytest.mark.parametrize(
        "rows, saved", [pytest.param(rows, SAVED[name], id=f"{rows}-{name}") for rows, name in cases]
    )


@blocks_and_saving((1, "none"), (5, "none"), (5, "output"), (5, "both"), (23, "both"), (64, "output"))
def test_chunked_attention_equals_formula_and_gradients(rows, saved):
    """Blocks that divide L, that do not, of one row and larger than L all give the formula with the mask
    ``keep_mask`` describes; gradcheck compares the hand-written backward pass with finite differences, with
    nothing, the output, or the output and the probabilities kept for it."""
    queries, keys, values = inputs()
    keep = keep_mask((3, 23, 7), 0.3, seed=5, rows=rows)
    assert 0 < (~keep).sum() < keep.numel()
    out = ChunkedDropoutAttention.apply(queries, keys, values, None, 0.3, 5, rows, *saved, False)
    assert out.shape == (3, 23, 4)
    torch.testing.assert_close(out, reference(queries, keys, values, keep, 0.3))
    assert torch.autograd.gradcheck(
        lambda q, k, v: ChunkedDropoutAttention.apply(q, k, v, None, 0.3, 5, rows, *saved, False),
        (queries, keys, values),
    )


@blocks_and_saving((1, "both"), (5, "none"), (5, "output"), (5, "both"), (64, "none"))
def test_chunked_attention_error_equals_formula_and_gradients(rows, saved):
    """With a target the chunked path returns ‖out[b]_i − T_i‖² (B, L) without making out; gradcheck covers
    the queries, keys, values and target, whose gradient sums over the entries."""
    queries, keys, values = inputs()
    target = torch.randn(23, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target.requires_grad_()
    keep = keep_mask((3, 23, 7), 0.3, seed=5, rows=rows)
    error = ChunkedDropoutAttention.apply(queries, keys, values, target, 0.3, 5, rows, *saved, False)
    assert error.shape == (3, 23)
    torch.testing.assert_close(error, (reference(queries, keys, values, keep, 0.3) - target).pow(2).sum(-1))
    assert torch.autograd.gradcheck(
        lambda q, k, v, t: ChunkedDropoutAttention.apply(q, k, v, t, 0.3, 5, rows, *saved, False),
        (queries, keys, values, target),
    )


@pytest.mark.parametrize("saved", SAVED.values(), ids=SAVED.keys())
def test_bfloat16_autocast_makes_the_products_from_bfloat16_operands(saved):
    """Under bfloat16 autocast (``amp``) the chunked path makes its products from bfloat16 operands with the same
    keep masks: output and gradients are float32, within bfloat16's precision (8 significant bits, a relative
    error of 2⁻⁹ per rounding) of the float32 formula's, and not equal to them."""
    queries, keys, values = inputs(torch.float32, length=300, entries=5, tokens=40, channels=16)
    keep = keep_mask((5, 300, 40), 0.1, seed=9, rows=37)
    weights = torch.randn(5, 300, 16, generator=torch.Generator().manual_seed(2))
    out = ChunkedDropoutAttention.apply(queries, keys, values, None, 0.1, 9, 37, *saved, True)
    grads = torch.autograd.grad((out * weights).sum(), (queries, keys, values))
    formula = reference(queries, keys, values, keep, 0.1)
    expected = torch.autograd.grad((formula * weights).sum(), (queries, keys, values))
    for got, want in zip((out, *grads), (formula, *expected)):
        assert got.dtype == torch.float32
        assert 1e-4 < ((got - want).abs().max() / want.abs().max()).item() < 2e-2
    # cross_attention asks for bfloat16 products under autocast, and draws the same masks' seed
    torch.manual_seed(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = cross_attention(queries, keys, values, dropout=0.1, training=True)
    torch.manual_seed(4)
    full = cross_attention(queries, keys, values, dropout=0.1, training=True)
    assert low.dtype == torch.float32 and not torch.equal(low, full)
    torch.testing.assert_close(low, full, rtol=0.0, atol=2e-2 * full.abs().max().item())


def test_bfloat16_product_accumulates_in_float32():
    """``bfloat16_product`` rounds its operands to bfloat16, sums in float32 and rounds each sum to bfloat16: every
    result is a bfloat16 value within one rounding (2⁻⁸ relative) of the exact product of the rounded operands;
    with ``out`` the same values land there."""
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(70, 300, generator=generator), torch.randn(300, 50, generator=generator)
    rounded = a.bfloat16().double() @ b.bfloat16().double()
    got = bfloat16_product(a, b)
    assert got.dtype == torch.float32 and torch.equal(got.bfloat16().float(), got)
    assert ((got.double() - rounded).abs() <= rounded.abs() * 2**-8 + 1e-6).all()
    assert not torch.allclose(got.double(), a.double() @ b.double(), rtol=1e-5, atol=1e-4)
    memory = torch.empty(70, 50)
    assert bfloat16_product(a, b, out=memory).data_ptr() == memory.data_ptr() and torch.equal(memory, got)


@pytest.mark.parametrize("saved", SAVED.values(), ids=SAVED.keys())
def test_chunked_gradients_equal_autograd_of_formula(saved):
    queries, keys, values = inputs(torch.float32, length=300, entries=5, tokens=40, channels=16)
    keep = keep_mask((5, 300, 40), 0.1, seed=9, rows=37)
    weights = torch.randn(5, 300, 16)
    grads = torch.autograd.grad(
        (
            ChunkedDropoutAttention.apply(queries, keys, values, None, 0.1, 9, 37, *saved, False) * weights
        ).sum(),
        (queries, keys, values),
    )
    expected = torch.autograd.grad(
        (reference(queries, keys, values, keep, 0.1) * weights).sum(), (queries, keys, values)
    )
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 25.5 / 256, 0.5])
def test_keep_mask_rate_is_exact_and_reproducible(p):
    """4 M entries: the standard error of the drop rate is at most 2.5e-4. p = 0.1 and 25.5/256 fall between
    two multiples of 1/256, so a mask that ignored the tie bits would be off by 1.6e-3 or more."""
    first = keep_mask((4, 1000, 1000), p, seed=3, rows=100)
    assert first.dtype == torch.bool and first.shape == (4, 1000, 1000)
    assert torch.equal(first, keep_mask((4, 1000, 1000), p, seed=3, rows=100))
    assert not torch.equal(first, keep_mask((4, 1000, 1000), p, seed=4, rows=100))
    assert abs((~first).float().mean().item() - p) < 1e-3


def test_keep_masks_continue_one_stream():
    """Consecutive blocks continue one stream (what lets ``keep_mask`` rebuild the masks the attention drew):
    three blocks of 400 entries are the 1,200 entries of one block drawn from the same seed."""
    masks = KeepMasks(7, 0.2)
    blocks = [masks.next((2, 4, 50)) for _ in range(3)]
    assert all(block.dtype == torch.uint8 and set(block.unique().tolist()) == {0, 1} for block in blocks)
    assert torch.equal(torch.cat([block.flatten() for block in blocks]), KeepMasks(7, 0.2).next((1200,)))
    assert not torch.equal(blocks[0], blocks[1])


def test_cross_attention_training_on_cpu_is_the_formula_with_its_mask():
    queries, keys, values = inputs(torch.float32, length=50, entries=3, tokens=9, channels=8)
    torch.manual_seed(11)
    out = cross_attention(queries, keys, values, dropout=0.25, training=True)
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**62, ()).item())
    keep = keep_mask((3, 50, 9), 0.25, seed, rows=block_rows(9))
    torch.testing.assert_close(out, reference(queries, keys, values, keep, 0.25))
    assert 0 < (~keep).sum() < keep.numel()


def test_hmdrn_training_step_equals_the_plain_formula(monkeypatch):
    """A whole HMDRN step (Conv-4, 3-way 2-shot 2-query, 84 px): the loss and every parameter's gradient equal
    those of the same model whose cross attention is the written-out formula with the same keep masks."""

    def plain_cross_attention(queries, keys, values, dropout=0.0, training=False, target=None):
        b, s, _ = keys.shape
        seed = int(torch.randint(0, 2**62, ()).item())
        keep = keep_mask((b, queries.shape[0], s), dropout, seed, rows=block_rows(s))
        out = reference(queries, keys, values, keep, dropout)
        return out if target is None else (out - target).pow(2).sum(-1)

    torch.manual_seed(0)
    model = build_model("hmdrn", "conv4", image_size=84).train()
    support, queries = torch.randn(6, 3, 84, 84), torch.randn(6, 3, 84, 84)
    labels = torch.arange(3).repeat_interleave(2)

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(1)
        loss, _ = model.episode_loss(support, labels, queries, labels)
        loss.backward()
        return loss.detach(), {
            name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None
        }

    loss, grads = loss_and_grads()
    monkeypatch.setattr(reconstruction_module, "cross_attention", plain_cross_attention)
    plain_loss, plain_grads = loss_and_grads()
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == plain_grads.keys() and len(grads) > 40
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("dropout, training", [(0.1, False), (0.0, True)])
def test_cross_attention_without_active_dropout_is_plain_attention(dropout, training):
    """Evaluation (PyTorch's fused kernel) and training without dropout (the chunked path, no mask) give the
    formula and its gradients, and draw nothing from torch's generator."""
    queries, keys, values = inputs(torch.float32)
    rng = torch.get_rng_state()
    out = cross_attention(queries, keys, values, dropout=dropout, training=training)
    assert torch.equal(torch.get_rng_state(), rng)
    expected = reference(queries, keys, values, torch.ones(1), 0.0)
    torch.testing.assert_close(out, expected)
    weights = torch.randn(out.shape)
    for got, want in zip(
        torch.autograd.grad((out * weights).sum(), (queries, keys, values)),
        torch.autograd.grad((expected * weights).sum(), (queries, keys, values)),
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_fused_path_hands_pytorch_one_head_in_four_dimensions(monkeypatch):
    """PyTorch's fused attention kernels (flash, memory-efficient, cuDNN) take 4-D inputs, and releases that do
    not add the missing dimension to 3-D ones fall back to materialising the (B, L, S) probabilities: evaluation
    (and training on CUDA) hands ``scaled_dot_product_attention`` (B, 1, L, C) queries and (B, 1, S, C) keys
    and values, and returns (B, L, C)."""
    fused, seen = torch.nn.functional.scaled_dot_product_attention, []

    def spy(queries, keys, values, **options):
        seen.append((tuple(queries.shape), tuple(keys.shape), tuple(values.shape)))
        return fused(queries, keys, values, **options)

    monkeypatch.setattr(cross_attention_module.F, "scaled_dot_product_attention", spy)
    queries, keys, values = inputs(torch.float32)
    out = cross_attention(queries, keys, values, dropout=0.1, training=False)
    assert seen == [((3, 1, 23, 4), (3, 1, 7, 4), (3, 1, 7, 4))]
    torch.testing.assert_close(out, reference(queries, keys, values, torch.ones(1), 0.0))


@pytest.mark.parametrize("with_target", [False, True], ids=["output", "error"])
def test_what_is_saved_for_backward_changes_no_bit(monkeypatch, with_target):
    """Within ``SAVED_ELEMENTS`` the backward pass reads the output and the probabilities the forward pass kept,
    beyond it recomputes them: all three ways give bit for bit the same values and gradients. The three blocks
    (one per entry) take 2 matrix products forward and 4 backward with both kept, 5 with only the output, 6
    with neither (without a target the output is kept in any case); the (l, S) scores and score gradients of
    every block of a pass share one memory each, unless the probabilities are kept."""
    queries, keys, values = (tensor.float() for tensor in inputs(length=300, tokens=40, channels=16))
    target = torch.randn(300, 16, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weights = torch.randn(3, 300, 16 if not with_target else 1).squeeze(-1)
    products_made = []  # per product, the address of the memory it was given, or None

    def counted_product(a, b, out=None):
        products_made.append(None if out is None else out.data_ptr())
        return product(a, b, out)

    def counted_sum(total, a, b):
        products_made.append(None)
        add_product(total, a, b)

    monkeypatch.setattr(cross_attention_module, "product", counted_product)
    monkeypatch.setattr(cross_attention_module, "add_product", counted_sum)

    def run(limit):
        """(values and gradients, (products made, distinct memories given to them forward, backward))."""
        monkeypatch.setattr(cross_attention_module, "SAVED_ELEMENTS", limit)
        products_made.clear()
        leaves = [tensor.detach().requires_grad_() for tensor in (queries, keys, values, target)]
        torch.manual_seed(6)
        out = cross_attention(*leaves[:3], 0.1, training=True, target=leaves[3] if with_target else None)
        forward = len(products_made)
        (out * weights).sum().backward()
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        given = [set(products_made[:forward]) - {None}, set(products_made[forward:]) - {None}]
        return [out.detach()] + grads, (len(products_made), *map(len, given))

    output, probabilities = 3 * 300 * 16, 3 * 300 * 40
    both, output_only, neither = run(output + probabilities), run(output), run(output - 1)
    # the scores go into the kept probabilities (one place per block) or into memory made once per pass, and so
    # do their gradients in the backward pass
    assert [made for _, made in (both, output_only, neither)] == [
        (18, 3, 1),
        (21, 1, 2),
        (24 if with_target else 21, 1, 2),
    ]
    assert len(both[0]) == (5 if with_target else 4)
    for first, second, third in zip(both[0], output_only[0], neither[0]):
        assert torch.equal(first, second) and torch.equal(first, third)


def test_cross_attention_rejects_dropout_of_one():
    queries, keys, values = inputs(torch.float32)
    with pytest.raises(ValueError, match="dropout=1"):
        cross_attention(queries, keys, values, dropout=1.0, training=True)


@pytest.mark.parametrize(
    "rebuilt_shape, target_shape",
    [((3, 4, 5, 6), (1, 4, 5, 6)), ((4, 3, 5, 6), (4, 1, 5, 6)), ((2, 3, 6), (3, 6)), ((2, 3, 6), (2, 3, 6))],
)
def test_squared_error_equals_the_formula_in_value_and_gradient(rebuilt_shape, target_shape):
    """The reconstruction heads' error: a class axis first (attention), second (ridge), a target with fewer
    dimensions and one of the same shape."""
    generator = torch.Generator().manual_seed(2)
    rebuilt = torch.randn(rebuilt_shape, dtype=torch.float64, generator=generator, requires_grad=True)
    target = torch.randn(target_shape, dtype=torch.float64, generator=generator, requires_grad=True)
    error = squared_error(rebuilt, target)
    torch.testing.assert_close(error, (rebuilt - target).pow(2).sum(-1))
    assert torch.autograd.gradcheck(squared_error, (rebuilt, target))
    weights = torch.randn(error.shape, dtype=torch.float64, generator=generator)
    got = torch.autograd.grad((error * weights).sum(), (rebuilt, target))
    want = torch.autograd.grad(((rebuilt - target).pow(2).sum(-1) * weights).sum(), (rebuilt, target))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_role_projections_equal_the_split_projection_in_value_and_gradient():
    """One product per role gives the slices of the C→3C projection, and the same gradients for the weight and
    the tokens; roles come back in the order asked."""
    torch.manual_seed(0)
    projection = torch.nn.Linear(8, 24, bias=False).double()
    tokens = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 3, 5, 8, dtype=torch.float64)

    def grads(parts):
        projection.zero_grad()
        tokens.grad = None
        sum((part * weight).sum() for part, weight in zip(parts, weights)).backward()
        return projection.weight.grad.clone(), tokens.grad.clone()

    split = projection(tokens).chunk(3, dim=-1)
    by_role = role_projections(projection, tokens)
    for ours, theirs in zip(by_role, split):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    for ours, theirs in zip(grads(by_role), grads(split)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    value, query = role_projections(projection, tokens, "vq")
    torch.testing.assert_close(value, by_role[2], rtol=0, atol=0)
    torch.testing.assert_close(query, by_role[0], rtol=0, atol=0)


@pytest.mark.parametrize("onednn", [True, False])
def test_product_is_the_float32_matrix_product_for_any_strides_of_its_right_factor(monkeypatch, onednn):
    """``product`` (oneDNN where PyTorch has it, else torch.mm) equals a @ b to float32 rounding, for a
    contiguous left factor and a right factor that is contiguous, transposed or a column slice; with ``out``
    it writes the product there and nowhere else."""
    monkeypatch.setattr(products, "ONEDNN", onednn and products.ONEDNN)
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(37, 29, generator=generator)
    for b in (
        torch.randn(29, 11, generator=generator),
        torch.randn(11, 29, generator=generator).t(),
        torch.randn(29, 30, generator=generator)[:, 5:16],
    ):
        expected = (a.double() @ b.double()).float()
        torch.testing.assert_close(product(a, b), expected, rtol=1e-5, atol=1e-5)
        memory = torch.full((50, 11), float("nan"))
        written = product(a, b, out=memory[:37])
        assert written.data_ptr() == memory.data_ptr() and memory[37:].isnan().all()
        torch.testing.assert_close(memory[:37], expected, rtol=1e-5, atol=1e-5)
    double = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    assert torch.equal(product(double, double.t()), double @ double.t())  # float64 always takes torch.mm


def test_add_product_adds_the_matrix_product_in_place_for_transposed_factors():
    """``add_product`` adds a @ b into ``total`` itself (a row slice of a larger tensor here, the rest untouched),
    reading either factor transposed, to float32 rounding of the float64 sum; ``add_bfloat16_product`` adds the
    product ``bfloat16_product`` gives."""
    generator = torch.Generator().manual_seed(4)
    memory = torch.randn(40, 11, generator=generator)
    start = memory.clone()
    a, b = torch.randn(29, 37, generator=generator).t(), torch.randn(11, 29, generator=generator).t()
    add_product(memory[:37], a, b)
    torch.testing.assert_close(memory[:37], (start[:37].double() + a.double() @ b.double()).float())
    assert torch.equal(memory[37:], start[37:])
    add_bfloat16_product(start[:37], a, b)
    torch.testing.assert_close(start[:37], memory[:37] - a @ b + bfloat16_product(a, b), rtol=0, atol=1e-5)


def test_chunked_attention_without_onednn_gives_the_same_result(monkeypatch):
    """The fallback products (torch.mm) give the oneDNN path's outputs and gradients to float32 rounding."""

    def run():
        queries, keys, values = (tensor.float().detach().requires_grad_() for tensor in inputs(length=300))
        torch.manual_seed(4)
        out = cross_attention(queries, keys, values, 0.2, training=True)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        return out.detach(), queries.grad, keys.grad, values.grad

    with_onednn = run()
    monkeypatch.setattr(products, "ONEDNN", False)
    for ours, theirs in zip(with_onednn, run()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_torch_linear_in_value_and_gradient(bias):
    """``Linear`` keeps nn.Linear's parameters and names and gives its outputs and gradients (oneDNN path on
    float32 CPU tensors, PyTorch's elsewhere: float64 here gives exactly F.linear)."""
    torch.manual_seed(0)
    layer = Linear(16, 24, bias=bias)
    assert [name for name, _ in layer.named_parameters()] == (["weight", "bias"] if bias else ["weight"])
    tokens = torch.randn(3, 50, 16).transpose(0, 1)  # a non-contiguous (50, 3, 16) input
    weights = torch.randn(50, 3, 24)

    def run(forward, x):
        layer.zero_grad()
        x = x.detach().requires_grad_()
        out = forward(x)
        (out * weights.to(out.dtype)).sum().backward()
        return [out, x.grad] + [p.grad.clone() for p in layer.parameters()]

    expected = run(lambda x: torch.nn.functional.linear(x, layer.weight, layer.bias), tokens)
    for ours, theirs in zip(run(layer, tokens), expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    layer.double()
    for ours, theirs in zip(
        run(layer, tokens.double()),
        run(lambda x: torch.nn.functional.linear(x, layer.weight, layer.bias), tokens.double()),
    ):
        assert torch.equal(ours, theirs)


def test_onednn_products_are_on_where_pytorch_ships_onednn():
    """x86 builds of PyTorch ship oneDNN: there the float32 products must take it (a failing self-check at
    import would silently fall back to MKL's slower sgemm)."""
    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available():
        assert products.ONEDNN
    a, b = torch.arange(6.0).view(2, 3), torch.arange(6.0).view(3, 2)
    assert products.product(a, b).tolist() == [[10.0, 13.0], [28.0, 40.0]]


@pytest.mark.parametrize("saved", SAVED.values(), ids=SAVED.keys())
def test_chunked_attention_without_dropout_passes_gradcheck(saved):
    """p = 0: no mask is drawn or stored; outputs and squared errors keep exact gradients."""
    queries, keys, values = inputs()
    target = torch.randn(23, 4, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(
        ChunkedDropoutAttention.apply(queries, keys, values, None, 0.0, 0, 5, *saved, False),
        reference(queries, keys, values, torch.ones(1, dtype=torch.float64), 0.0),
    )
    assert torch.autograd.gradcheck(
        lambda q, k, v, t: ChunkedDropoutAttention.apply(q, k, v, t, 0.0, 0, 5, *saved, False),
        (queries, keys, values, target),
    )
