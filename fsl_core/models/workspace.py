"""Large buffers kept from one training step to the next, handed out only when nothing else holds them.

PyTorch returns a large CPU tensor's memory to the system when the tensor is freed, and the next step's tensor of
the same size is fresh memory that the kernel must map and zero page by page on first touch. For the tensors the
chunked cross attention saves for its backward pass (75 MB at HMDRN's 5-way penultimate level) the first writes
took longer than the matrix products that filled them (on a 2-core AMD EPYC, 5 ms instead of 1 ms for a block's
scores), so those tensors come from a ``Workspace`` instead.

A buffer is handed out as a view, and handed out again only when no tensor other than the workspace's own uses
its storage (PyTorch's count of the storage's users is back to what it was when the buffer was made): a tensor an
autograd graph still saves, or a caller still holds, is never overwritten.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor


def _storage_users(tensor: Tensor) -> int | None:
    """How many tensors use ``tensor``'s storage, or None where this PyTorch cannot say."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return None if count is None else int(count(tensor.untyped_storage()._cdata))


class Workspace:
    """Up to ``capacity`` buffers, the oldest dropped first.

    ``empty(shape, like)`` → an uninitialised tensor of ``shape`` with ``like``'s dtype and device, from a kept
    buffer of that shape that nothing else uses, else from a new buffer that is then kept. ``clear()`` drops every
    buffer (memory in use elsewhere stays with its users).
    """

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._held: list[
            tuple[Tensor, int]
        ] = []  # (buffer, its storage's users when only the workspace held it)
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        with self._lock:
            for buffer, alone in self._held:
                if (
                    buffer.shape == shape
                    and buffer.dtype == like.dtype
                    and buffer.device == like.device
                    and _storage_users(buffer) == alone
                ):
                    return buffer.view(shape)
            buffer = like.new_empty(shape)
            alone = _storage_users(buffer)
            if alone is not None and self.capacity > 0:
                self._held = [*self._held, (buffer, alone)][-self.capacity :]
            return buffer.view(shape)

    def clear(self) -> None:
        with self._lock:
            self._held = []

    @property
    def bytes_held(self) -> int:
        """Bytes of the buffers kept."""
        return sum(buffer.numel() * buffer.element_size() for buffer, _ in self._held)


WORKSPACE = Workspace()
"""The workspace of the chunked cross attention's saved tensors (``cross_attention.py``)."""

__all__ = ["WORKSPACE", "Workspace"]
