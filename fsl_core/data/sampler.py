"""Episode samplers and the collate function that turns one episode's images into tensors.

Both samplers are ``Iterable[list[int]]`` usable as ``DataLoader(batch_sampler=...)``. They carry their own
NumPy generators (never the global RNG) and hold only plain data, so they pickle into worker processes.
Every episode lists ``way*shot`` support indices (class-major) followed by ``way*query`` query indices
(class-major, same class order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..runtime import seeded_generator
from .images import FewShotDataError

_EPOCH_STREAM = 0x45504F4348  # separates the epoch sampler's streams from EpisodeSampler's


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FewShotDataError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _classes(count: int) -> str:
    return "1 class" if count == 1 else f"{count} classes"


def way_misfit(way: tuple[str, int], classes: int, where: str, settable: bool = True) -> str | None:
    """Why ``way`` = (what sets it, its value) classes cannot be drawn from the ``classes`` classes of ``where``,
    naming the way out (``settable``: the user sets it), or None when they can."""
    name, value = way
    if value <= classes:
        return None
    if classes == 0:
        return f"{name}={value}: {where} has no classes (no class folders with images)"
    way_out = (
        f"use {name} <= {classes}" if settable else f"it needs a data set with at least {value} classes there"
    )
    return f"{name}={value}: {where} has only {_classes(classes)}; {way_out}"


def images_misfit(
    images: Sequence[tuple[str, int]],
    class_sizes: Sequence[tuple[str, int]],
    where: str,
    settable: Sequence[str] | None = None,
    *,
    classes: str | None = None,
    or_else: str = "",
) -> str | None:
    """Why episodes of ``images`` = ((what sets it, its value), ...) images per class, summed, cannot be drawn
    from every class of ``class_sizes`` = ((class name, its image count), ...) of ``where``, or None when they can.

    The message lists the short classes, smallest first (five at most), and names what to lower and to how much:
    the entries of ``settable`` (default: every entry of ``images``), the others being fixed; when they cannot
    make room (each is at least 1), it says the data set needs more images. ``or_else``: another way out.
    ``classes``: the words for the classes of ``class_sizes`` (default: "the N classes of WHERE")."""
    need = sum(value for _, value in images)
    short = sorted((count, name) for name, count in class_sizes if count < need)
    if not short:
        return None
    parts = " + ".join(f"{label} {value}" for label, value in images)
    smallest = short[0][0]
    lower = [label for label, _ in images] if settable is None else list(settable)
    room = smallest - sum(value for label, value in images if label not in lower)  # for the numbers to lower
    if not lower or room < len(lower):  # each is at least 1
        way_out = "it needs a data set with more images per class there"
    elif len(lower) == 1:
        way_out = f"lower {lower[0]} to at most {room}"
    else:
        way_out = f"lower {' or '.join(lower)} so that {' + '.join(lower)} <= {room}"
    way_out += f", or {or_else}" if or_else else ""
    named = classes or f"the {_classes(len(class_sizes))} of {where}"
    every = f"all {classes or f'{_classes(len(class_sizes))} of {where}'}"
    if len(class_sizes) == 1:
        which = f"{named} has {smallest}"
    elif len(short) == len(class_sizes) and short[-1][0] == smallest:  # every class, all of one size
        which = f"{every} have fewer ({smallest} each)"
    else:
        listed = ", ".join(f"{name} ({count})" for count, name in short[:5]) + (
            " ..." if len(short) > 5 else ""
        )
        many = every if len(short) == len(class_sizes) else f"{len(short)} of {named}"
        which = f"{many} {'has' if len(short) == 1 else 'have'} fewer: {listed}"
    return f"{parts} = {need} images per class, but {which}; {way_out}"


def episode_misfits(
    way: tuple[str, int],
    images: Sequence[tuple[str, int]],
    class_sizes: Sequence[tuple[str, int]],
    where: str,
    settable: Callable[[str], bool] = lambda name: True,
) -> list[str]:
    """Why way-way episodes of ``images`` images per class cannot be drawn from the classes of ``class_sizes``
    (``way_misfit``, ``images_misfit``): none, one or two messages. ``settable(name)``: whether the user sets
    the number ``name`` stands for (the messages name only those as the way out)."""
    misfits = [
        way_misfit(way, len(class_sizes), where, settable(way[0])),
        images_misfit(images, class_sizes, where, [label for label, _ in images if settable(label)]),
    ]
    return [m for m in misfits if m]


class _ClassPools:
    """Labels → per-class index arrays, with class names for error messages."""

    def __init__(self, labels: Sequence[int] | Any) -> None:
        names: Sequence[str] | None = None
        if hasattr(labels, "targets"):
            names = getattr(labels, "classes", None)
            labels = labels.targets
        if isinstance(labels, Tensor):
            labels = labels.tolist()
        array = np.asarray(labels)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise FewShotDataError(
                f"labels: expected a 1-D sequence of integer class labels; got {array.dtype} "
                f"array of shape {array.shape}"
            )
        if array.size == 0:
            raise FewShotDataError("labels: the data set is empty; an episode sampler needs labelled images")
        self.labels = np.unique(array)
        self.pools = [np.flatnonzero(array == label) for label in self.labels]
        self.names = names

    def name(self, position: int) -> str:
        label = int(self.labels[position])
        if self.names is not None and 0 <= label < len(self.names):
            return f"{self.names[label]!r}"
        return f"label {label}"

    def validate(self, way: int, shot: int, query: int) -> None:
        sizes = [(self.name(i), len(pool)) for i, pool in enumerate(self.pools)]
        if misfits := episode_misfits(
            ("way", way), (("shot", shot), ("query", query)), sizes, "the data set"
        ):
            raise FewShotDataError("; ".join(misfits))


class _EpisodeSettings:
    """The checks and attributes both samplers share: episode shape, seed, this process's rank, class pools."""

    def __init__(
        self,
        labels: Sequence[int] | Any,
        way: int,
        shot: int,
        query: int,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.way = _check_int("way", way, 1)
        self.shot = _check_int("shot", shot, 1)
        self.query = _check_int("query", query, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise FewShotDataError(f"rank={rank} must be smaller than world_size={world_size}")
        self.seed = _check_int("seed", seed, -(1 << 63))
        self._classes = _ClassPools(labels)
        self._classes.validate(self.way, self.shot, self.query)

    def _episode(self, picks: Sequence[Sequence[int]]) -> list[int]:
        """Each chosen class's shot+query picks → support (class-major), then query (class-major)."""
        support = [int(i) for pick in picks for i in pick[: self.shot]]
        query = [int(i) for pick in picks for i in pick[self.shot :]]
        return support + query


class EpisodeSampler(_EpisodeSettings):
    """Random N-way K-shot episodes; episode ``g`` is a pure function of ``(seed, g)``.

    Args:
        labels: per-image class labels, or a data set with ``.targets`` (and ``.classes`` for error messages).
        way, shot, query: classes per episode, support and query images per class.
        episodes: episodes this sampler yields (``len(sampler)``).
        seed: episode seed.
        rank, world_size: this process yields global episodes ``start + i*world_size + rank``.
        start: first global episode index (to resume).

    Yields:
        list of ``way*(shot+query)`` data set indices: support (way*shot, class-major), then query
        (way*query, class-major), classes in a random order shared by both parts.
    """

    def __init__(
        self,
        labels: Sequence[int] | Any,
        way: int,
        shot: int,
        query: int,
        episodes: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        super().__init__(labels, way, shot, query, seed, rank, world_size)
        self.episodes = _check_int("episodes", episodes, 1)
        self.start = _check_int("start", start, 0)

    def global_index(self, i: int) -> int:
        """Global index of this sampler's ``i``-th episode."""
        return self.start + i * self.world_size + self.rank

    def episode(self, g: int) -> list[int]:
        """Indices of global episode ``g`` (support class-major, then query class-major)."""
        rng = seeded_generator(self.seed, _check_int("episode index", g, 0))
        pools = self._classes.pools
        chosen = rng.choice(len(pools), size=self.way, replace=False)
        need = self.shot + self.query
        return self._episode([pools[c][rng.choice(len(pools[c]), size=need, replace=False)] for c in chosen])

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.episodes):
            yield self.episode(self.global_index(i))

    def __len__(self) -> int:
        return self.episodes

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler(way={self.way}, shot={self.shot}, query={self.query}, episodes={self.episodes}, "
            f"seed={self.seed}, rank={self.rank}, world_size={self.world_size}, start={self.start})"
        )


class EpochEpisodeSampler(_EpisodeSettings):
    """One FRN-style epoch of episodes (Wertheimer et al., CVPR 2021), a pure function of ``(seed, epoch)``.

    Each class's images are shuffled; every episode draws ``way`` classes without replacement with probability
    proportional to the images each class has left and takes ``shot+query`` unused images from each; a class
    leaves once fewer than ``shot+query`` images remain, and the epoch ends when fewer than ``way`` classes
    remain. With ``world_size`` W, rank r yields the epoch's episodes r, r+W, r+2W, ..., and every rank yields
    the same number (up to W-1 trailing episodes are dropped).

    Yields:
        list of data set indices: support (way*shot, class-major), then query (way*query, class-major).
    """

    def __init__(
        self,
        labels: Sequence[int] | Any,
        way: int,
        shot: int,
        query: int,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(labels, way, shot, query, seed, rank, world_size)
        self.epoch = _check_int("epoch", epoch, 0)
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Switch to epoch ``epoch`` (a different, deterministic episode list)."""
        self.epoch = _check_int("epoch", epoch, 0)

    def epoch_episodes(self) -> list[list[int]]:
        """All episodes of the current epoch, before rank slicing."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = seeded_generator(self.seed, _EPOCH_STREAM, self.epoch)
        need = self.shot + self.query
        left = [list(rng.permutation(pool)) for pool in self._classes.pools]
        active = list(range(len(left)))
        episodes: list[list[int]] = []
        while len(active) >= self.way:
            counts = np.array([len(left[c]) for c in active], dtype=np.float64)
            chosen = [
                active[k]
                for k in rng.choice(len(active), size=self.way, replace=False, p=counts / counts.sum())
            ]
            picks = []
            for c in chosen:
                picks.append(left[c][-need:])
                del left[c][-need:]
            episodes.append(self._episode(picks))
            active = [c for c in active if len(left[c]) >= need]
        self._cache = (self.epoch, episodes)
        return episodes

    def _mine(self) -> list[list[int]]:
        episodes = self.epoch_episodes()
        usable = len(episodes) // self.world_size * self.world_size
        return episodes[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._mine()

    def __len__(self) -> int:
        return len(self._mine())

    def __repr__(self) -> str:
        return (
            f"EpochEpisodeSampler(way={self.way}, shot={self.shot}, query={self.query}, seed={self.seed}, "
            f"epoch={self.epoch}, rank={self.rank}, world_size={self.world_size})"
        )


class Episode(NamedTuple):
    """One episode as tensors.

    support_images: (way*shot, 3, H, W); support_labels: (way*shot,) long in 0..way-1, class-major;
    query_images: (way*query, 3, H, W); query_labels: (way*query,) long;
    class_ids: (way,) long, the data set labels of the episode's classes in episode order.
    """

    support_images: Tensor
    support_labels: Tensor
    query_images: Tensor
    query_labels: Tensor
    class_ids: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """The same episode with every tensor on ``device``."""
        return Episode(*(t.to(device, non_blocking=non_blocking) for t in self))


class EpisodeCollate:
    """``collate_fn`` for one episode: list of ``way*(shot+query)`` (image (3,H,W), label) → ``Episode``.

    The items must come in the samplers' order (support class-major, then query class-major).
    """

    def __init__(self, way: int, shot: int, query: int) -> None:
        self.way = _check_int("way", way, 1)
        self.shot = _check_int("shot", shot, 1)
        self.query = _check_int("query", query, 1)

    def __call__(self, batch: Sequence[tuple[Tensor, int]]) -> Episode:
        n_support = self.way * self.shot
        expected = n_support + self.way * self.query
        if len(batch) != expected:
            raise FewShotDataError(
                f"an episode of way={self.way}, shot={self.shot}, query={self.query} has {expected} images; "
                f"the collate function got {len(batch)}"
            )
        if not isinstance(batch[0][0], Tensor):
            raise FewShotDataError(
                f"episode items must be image tensors (3, H, W); got {type(batch[0][0]).__name__} — give the "
                f"data set a transform such as 'train' or 'eval'"
            )
        images = torch.stack([item[0] for item in batch])
        labels = torch.tensor([int(item[1]) for item in batch], dtype=torch.long)
        class_ids = labels[: n_support : self.shot].clone()
        support_labels = torch.arange(self.way).repeat_interleave(self.shot)
        query_labels = torch.arange(self.way).repeat_interleave(self.query)
        if not (
            torch.equal(labels[:n_support], class_ids[support_labels])
            and torch.equal(labels[n_support:], class_ids[query_labels])
        ):
            raise FewShotDataError(
                "episode items are not ordered support class-major then query class-major with the same class "
                f"order (data set labels: {labels.tolist()})"
            )
        return Episode(images[:n_support], support_labels, images[n_support:], query_labels, class_ids)


def episode_loader(
    dataset: Dataset,
    sampler: EpisodeSampler | EpochEpisodeSampler,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader yielding one ``Episode`` per sampler episode (workers persist across epochs)."""
    num_workers = _check_int("num_workers", num_workers, 0)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=EpisodeCollate(sampler.way, sampler.shot, sampler.query),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
