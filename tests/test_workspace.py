"""The workspace hands a buffer out again only once nothing else uses it, and the attention computes the same
bits with it as with fresh memory."""

from __future__ import annotations

import torch

from fsl_core.models import cross_attention as cross_attention_module
from fsl_core.models import workspace as workspace_module
from fsl_core.models.cross_attention import cross_attention
from fsl_core.models.workspace import Workspace


def test_a_buffer_is_handed_out_again_only_when_nothing_holds_it():
    workspace, like = Workspace(capacity=2), torch.empty(0)
    first = workspace.empty((3, 4), like)
    first.fill_(1.0)
    second = workspace.empty((3, 4), like)  # the first is still held: a new buffer
    assert second.data_ptr() != first.data_ptr()
    pointer = first.data_ptr()
    del first
    third = workspace.empty((3, 4), like)
    assert third.data_ptr() == pointer and third.shape == (3, 4)
    assert workspace.empty((4, 3), like).data_ptr() not in (pointer, second.data_ptr())  # other shape: new
    assert workspace.bytes_held == 2 * 12 * 4  # capacity 2: the oldest was dropped
    workspace.clear()
    assert workspace.bytes_held == 0


def test_a_buffer_saved_by_an_autograd_graph_is_not_reused_until_the_graph_is_freed():
    """The chunked attention saves its probabilities (from the workspace) for the backward pass: a second
    forward pass before the first one's backward must get other memory, and the first backward its own values."""
    workspace_module.WORKSPACE.clear()
    generator = torch.Generator().manual_seed(0)
    queries, keys, values = (
        torch.randn(*shape, generator=generator) for shape in ((50, 8), (2, 20, 8), (2, 20, 8))
    )
    leaves = [tensor.clone().requires_grad_() for tensor in (queries, keys, values)]
    torch.manual_seed(1)
    first = cross_attention(*leaves, 0.1, training=True)
    held = workspace_module.WORKSPACE.bytes_held
    assert held == (2 * 50 * 20 + 2 * 50 * 8) * 4  # the probabilities and the output
    other = [tensor.clone().mul_(2).requires_grad_() for tensor in (queries, keys, values)]
    torch.manual_seed(2)
    second = cross_attention(*other, 0.1, training=True)
    assert second.data_ptr() != first.data_ptr()
    first.sum().backward()
    gradients_with_interleaving = [leaf.grad.clone() for leaf in leaves]

    workspace_module.WORKSPACE.clear()
    fresh = [tensor.clone().requires_grad_() for tensor in (queries, keys, values)]
    torch.manual_seed(1)
    reference = cross_attention(*fresh, 0.1, training=True)
    reference.sum().backward()
    assert torch.equal(first.detach(), reference.detach())
    for got, expected in zip(gradients_with_interleaving, (leaf.grad for leaf in fresh)):
        assert torch.equal(got, expected)


def test_without_a_storage_count_nothing_is_kept(monkeypatch):
    """Where PyTorch cannot count a storage's users the workspace keeps nothing: every buffer is new memory."""
    monkeypatch.setattr(workspace_module, "_storage_users", lambda tensor: None)
    workspace = Workspace()
    buffer = workspace.empty((5,), torch.empty(0))
    assert buffer.shape == (5,) and workspace.bytes_held == 0
    assert cross_attention_module.WORKSPACE is workspace_module.WORKSPACE
