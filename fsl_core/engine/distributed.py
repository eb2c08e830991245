"""Several processes, one model: process-group set-up from ``torchrun``'s environment and the module that
DistributedDataParallel wraps.

``torchrun --nproc_per_node=N -m fsl_core.cli.train ...`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the
rendezvous address; with ``WORLD_SIZE > 1`` the process group is created with NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fsl_core.runtime import resolve_device


@dataclass
class Processes:
    """Where this process stands: ``rank`` of ``world_size`` processes, computing on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    def sum(self, values: Tensor) -> Tensor:
        """Element-wise sum of ``values`` over every process (identity with one process)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def barrier(self) -> None:
        """Wait for every process."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def start_processes(device: str = "auto") -> Processes:
    """Join the process group described by the environment (``torchrun``), or run alone.

    With ``WORLD_SIZE > 1``: CUDA ranks use ``cuda:LOCAL_RANK`` and NCCL; CPU ranks use gloo.
    An already initialised default group (created by the caller) is used as it is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return Processes(device=resolve_device(device))
    base = resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        if torch.cuda.device_count() <= local_rank:
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "use --nproc_per_node <= the number of GPUs"
            )
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if base.type == "cuda" else "gloo")
        owns = True
    return Processes(rank=dist.get_rank(), world_size=dist.get_world_size(), device=base, owns_group=owns)


class EpisodeLoss(nn.Module):
    """Exposes ``model.episode_loss`` as ``forward`` so that DistributedDataParallel, which synchronises
    gradients of what its ``forward`` computes, can wrap an episodic model.

    forward(support_images (way*shot,3,H,W), support_labels (way*shot,), query_images (way*query,3,H,W),
    query_labels (way*query,), class_ids (way,)) -> (loss (), logits (way*query, way)).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        support_images: Tensor,
        support_labels: Tensor,
        query_images: Tensor,
        query_labels: Tensor,
        class_ids: Tensor | None = None,
    ) -> Any:
        return self.model.episode_loss(
            support_images, support_labels, query_images, query_labels, class_ids=class_ids
        )
