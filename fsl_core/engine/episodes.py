"""Training episodes as a pure function of (seed, epoch): which images, and the seed of each image's
augmentation.

Every episode has a global identity (``fixed`` sampler: its global index; ``epoch`` sampler: epoch and
position in the epoch), so the images *and* their random crops, flips and colour jitter do not depend on
how many DataLoader workers or processes run, nor on whether the run was interrupted and resumed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fsl_core.data import EpisodeSampler, EpochEpisodeSampler
from fsl_core.runtime import TORCH_SEED_MASK, derive_seed, seed_host_generators

_MODE_TAG = {"fixed": 0, "epoch": 1}


class TrainingEpisodes:
    """Batch sampler of this process's training episodes for the current epoch.

    Yields, per episode, ``[(augmentation seed, dataset index), ...]`` of length way*(shot+query) in the
    order of ``fsl_core.data`` samplers (support class-major, then query class-major). Use with
    ``SeededImages`` and ``EpisodeCollate``. ``set_epoch(e)`` (0-based) selects the epoch.

    - ``mode="fixed"``: ``episodes_per_epoch // world_size`` episodes per process; epoch ``e`` holds the
      global episodes ``e*P .. (e+1)*P - 1`` with ``P = episodes_per_epoch // world_size * world_size``,
      process ``r`` taking ``start + i*world_size + r`` (``EpisodeSampler``).
    - ``mode="epoch"``: the FRN epoch of ``EpochEpisodeSampler`` (seed, e); process ``r`` takes the episodes
      ``r, r+W, ...`` and every process runs ``len(epoch) // W`` of them (the remainder is dropped so that
      the processes step together).
    """

    def __init__(
        self,
        labels: Sequence[int],
        way: int,
        shot: int,
        query: int,
        mode: str,
        episodes_per_epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if mode not in _MODE_TAG:
            raise ValueError(f"mode={mode!r} is not known; expected one of {list(_MODE_TAG)}")
        if mode == "fixed" and episodes_per_epoch < world_size:
            raise ValueError(
                f"episodes_per_epoch={episodes_per_epoch} is smaller than the {world_size} processes; "
                "every process needs at least one episode per epoch"
            )
        self.labels = list(labels)
        self.way, self.shot, self.query = way, shot, query
        self.mode, self.episodes_per_epoch, self.seed = mode, episodes_per_epoch, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._episodes: list[tuple[int, list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch`` (0-based)."""
        if epoch != self.epoch:
            self.epoch, self._episodes = epoch, None

    def episodes(self) -> list[tuple[int, list[int]]]:
        """``[(augmentation seed of the episode, dataset indices), ...]`` of this process in this epoch."""
        if self._episodes is None:
            self._episodes = self._draw()
        return self._episodes

    def next_episode(self) -> int:
        """The first global episode index after this epoch (``fixed`` mode; for the epoch mode, 0)."""
        if self.mode != "fixed":
            return 0
        return (self.epoch + 1) * (self.episodes_per_epoch // self.world_size) * self.world_size

    def _draw(self) -> list[tuple[int, list[int]]]:
        tag = _MODE_TAG[self.mode]
        if self.mode == "fixed":
            per_process = self.episodes_per_epoch // self.world_size
            start = self.epoch * per_process * self.world_size
            sampler = EpisodeSampler(
                self.labels,
                self.way,
                self.shot,
                self.query,
                per_process,
                seed=self.seed,
                rank=self.rank,
                world_size=self.world_size,
                start=start,
            )
            out = []
            for i, indices in enumerate(sampler):
                g = start + i * self.world_size + self.rank
                out.append((derive_seed(self.seed, tag, g), list(indices)))
            return out
        sampler = EpochEpisodeSampler(
            self.labels,
            self.way,
            self.shot,
            self.query,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )
        return [
            (derive_seed(self.seed, tag, self.epoch, self.rank + i * self.world_size), list(indices))
            for i, indices in enumerate(sampler)
        ]

    def __len__(self) -> int:
        return len(self.episodes())

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for seed, indices in self.episodes():
            yield [((seed + position) & TORCH_SEED_MASK, index) for position, index in enumerate(indices)]


class SeededImages(Dataset):
    """Wraps a data set so that item ``(seed, index)`` is ``dataset[index]`` with Python's, NumPy's and torch's
    CPU generators seeded from ``seed`` while it loads: the random augmentation of each image is a pure function
    of its seed. The caller's generator states are restored afterwards and a GPU's are never touched, so
    dropout draws the same numbers whether images load in this process or in the loader's workers.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        """Load one episode's images (the DataLoader fetches a whole batch through this method)."""
        with _generators_kept():
            items = []
            for seed, index in keys:
                seed_host_generators(seed)
                items.append(self.dataset[index])
            return items


@contextlib.contextmanager
def _generators_kept() -> Iterator[None]:
    """Restore the states of Python's, NumPy's and torch's (CPU) global generators on exit."""
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


def seeded_transform(transform: Callable[[Any], Any], image: Any, seed: int) -> Any:
    """``transform(image)`` with the generators seeded from ``seed`` as ``SeededImages`` seeds them for a
    training image (the caller's generator states are restored): the same seed gives the same augmentation."""
    with _generators_kept():
        seed_host_generators(seed)
        return transform(image)
