"""Episode samplers, the episode collate function and the loader."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fsl_core.data import (
    Episode,
    EpisodeCollate,
    EpisodeSampler,
    EpochEpisodeSampler,
    FewShotDataError,
    FewShotFolder,
    episode_loader,
)

# 12 classes with 20..31 images each, interleaved so that indices and labels are not aligned
COUNTS = [20 + c for c in range(12)]
LABELS = [c for c, n in enumerate(COUNTS) for _ in range(n)]
random.Random(0).shuffle(LABELS)


class LabelImages(Dataset):
    """Item i: a (3, 2, 2) tensor filled with i, and its label."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((3, 2, 2), float(i)), self.labels[i]


def check_episode(indices: list[int], way: int, shot: int, query: int, labels: list[int]) -> list[int]:
    """Assert the sampler contract for one episode; returns the episode's classes in order."""
    assert len(indices) == way * (shot + query)
    assert len(set(indices)) == len(indices)  # no image twice
    support, queries = indices[: way * shot], indices[way * shot :]
    classes = [labels[support[c * shot]] for c in range(way)]
    assert len(set(classes)) == way
    assert [labels[i] for i in support] == [c for c in classes for _ in range(shot)]  # class-major
    assert [labels[i] for i in queries] == [c for c in classes for _ in range(query)]  # same class order
    return classes


def test_episode_sampler_properties() -> None:
    sampler = EpisodeSampler(LABELS, way=5, shot=2, query=3, episodes=50, seed=7)
    episodes = list(sampler)
    assert len(sampler) == len(episodes) == 50
    seen_classes = set()
    for indices in episodes:
        seen_classes.update(check_episode(indices, 5, 2, 3, LABELS))
    assert seen_classes == set(range(12))
    assert len({tuple(e) for e in episodes}) == 50


def test_episodes_are_a_pure_function_of_seed_and_index() -> None:
    a = EpisodeSampler(LABELS, 5, 1, 4, episodes=20, seed=3)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    first = list(a)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    assert list(a) == first  # the global RNGs do not matter, iterating twice gives the same episodes
    assert list(EpisodeSampler(LABELS, 5, 1, 4, episodes=20, seed=3)) == first
    assert a.episode(11) == first[11]
    resumed = EpisodeSampler(LABELS, 5, 1, 4, episodes=5, seed=3, start=11)
    assert list(resumed) == first[11:16]
    other = list(EpisodeSampler(LABELS, 5, 1, 4, episodes=20, seed=4))
    assert sum(x != y for x, y in zip(first, other)) >= 19


def test_rank_slicing_gives_disjoint_global_episodes() -> None:
    whole = EpisodeSampler(LABELS, 4, 1, 2, episodes=12, seed=1)
    ranks = [EpisodeSampler(LABELS, 4, 1, 2, episodes=4, seed=1, rank=r, world_size=3) for r in range(3)]
    assert [s.global_index(i) for s in ranks for i in range(4)] == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    per_rank = [list(s) for s in ranks]
    interleaved = [per_rank[g % 3][g // 3] for g in range(12)]
    assert interleaved == list(whole)
    with pytest.raises(FewShotDataError, match="rank=3 must be smaller than world_size=3"):
        EpisodeSampler(LABELS, 4, 1, 2, episodes=4, rank=3, world_size=3)


def test_sampler_accepts_a_folder_and_names_its_classes(tiny_folder: Path) -> None:
    data = FewShotFolder(tiny_folder, "train")
    sampler = EpisodeSampler(data, way=3, shot=1, query=4, episodes=3)
    for indices in sampler:
        check_episode(indices, 3, 1, 4, data.targets)
    with pytest.raises(
        FewShotDataError,
        match=r"shot 2 \+ query 5 = 7 images per class, but 2 of the 4 classes of the data set have fewer: "
        r"'class_0' \(5\), 'class_1' \(6\); lower shot or query so that shot \+ query <= 5$",
    ):
        EpisodeSampler(data, way=3, shot=2, query=5, episodes=1)
    with pytest.raises(FewShotDataError, match="^way=5: the data set has only 4 classes; use way <= 4$"):
        EpisodeSampler(data, way=5, shot=1, query=1, episodes=1)


@pytest.mark.parametrize("name", ["way", "shot", "query", "episodes"])
@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_sampler_rejects_non_positive_arguments(name: str, value: object) -> None:
    args = dict(way=3, shot=1, query=2, episodes=4)
    args[name] = value
    with pytest.raises(FewShotDataError, match=rf"{name}={value!r}: expected an integer >= 1"):
        EpisodeSampler(LABELS, **args)


def test_sampler_error_names_label_without_class_names() -> None:
    with pytest.raises(
        FewShotDataError, match=r"1 of the 3 classes of the data set has fewer: label 1 \(2\);"
    ):
        EpisodeSampler([0, 0, 0, 1, 1, 2, 2, 2], way=2, shot=1, query=2, episodes=1)
    with pytest.raises(FewShotDataError, match="empty"):
        EpisodeSampler([], way=2, shot=1, query=2, episodes=1)


def test_epoch_sampler_follows_the_frn_rule() -> None:
    way, shot, query = 5, 2, 3
    sampler = EpochEpisodeSampler(LABELS, way, shot, query, seed=2, epoch=0)
    episodes = list(sampler)
    assert len(episodes) == len(sampler) > 0
    used = [i for e in episodes for i in e]
    assert len(used) == len(set(used))  # an image appears at most once per epoch
    left = {c: n for c, n in enumerate(COUNTS)}
    for indices in episodes:
        for c in check_episode(indices, way, shot, query, LABELS):
            assert left[c] >= shot + query  # only classes with enough images left are drawn
            left[c] -= shot + query
    assert sum(n >= shot + query for n in left.values()) < way  # it stopped because fewer than way remain
    # a pure function of (seed, epoch), independent of the global RNG
    np.random.seed(99)
    assert list(EpochEpisodeSampler(LABELS, way, shot, query, seed=2, epoch=0)) == episodes
    sampler.set_epoch(1)
    assert list(sampler) != episodes
    sampler.set_epoch(0)
    assert list(sampler) == episodes


def test_epoch_sampler_rank_slicing() -> None:
    whole = EpochEpisodeSampler(LABELS, 3, 1, 2, seed=5).epoch_episodes()
    ranks = [list(EpochEpisodeSampler(LABELS, 3, 1, 2, seed=5, rank=r, world_size=4)) for r in range(4)]
    assert len({len(r) for r in ranks}) == 1  # every rank runs the same number of episodes
    flat = [tuple(e) for r in ranks for e in r]
    assert len(flat) == len(whole) // 4 * 4 and len(set(flat)) == len(flat)
    assert ranks[1] == whole[1 : len(whole) // 4 * 4 : 4]


def test_collate_builds_an_episode() -> None:
    sampler = EpisodeSampler(LABELS, way=4, shot=2, query=3, episodes=1, seed=0)
    indices = next(iter(sampler))
    dataset = LabelImages(LABELS)
    episode = EpisodeCollate(4, 2, 3)([dataset[i] for i in indices])
    assert isinstance(episode, Episode)
    assert episode.support_images.shape == (8, 3, 2, 2) and episode.query_images.shape == (12, 3, 2, 2)
    assert episode.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert episode.query_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert episode.support_labels.dtype == torch.long and episode.class_ids.dtype == torch.long
    assert episode.class_ids.tolist() == [LABELS[indices[2 * c]] for c in range(4)]
    assert episode.support_images[:, 0, 0, 0].tolist() == [float(i) for i in indices[:8]]
    assert episode.to("cpu").query_images.shape == (12, 3, 2, 2)
    with pytest.raises(FewShotDataError, match="has 20 images; the collate function got 19"):
        EpisodeCollate(4, 2, 3)([dataset[i] for i in indices[:-1]])
    with pytest.raises(FewShotDataError, match="not ordered"):
        EpisodeCollate(4, 2, 3)([dataset[i] for i in reversed(indices)])


def test_samplers_pickle_and_run_in_dataloader_workers() -> None:
    sampler = EpisodeSampler(LABELS, way=3, shot=1, query=2, episodes=6, seed=9)
    assert list(pickle.loads(pickle.dumps(sampler))) == list(sampler)
    epoch = EpochEpisodeSampler(LABELS, 3, 1, 2, seed=9)
    assert list(pickle.loads(pickle.dumps(epoch))) == list(epoch)
    dataset = LabelImages(LABELS)
    loader = episode_loader(dataset, sampler, num_workers=2)
    assert isinstance(loader, DataLoader) and len(loader) == 6
    got = [
        episode.support_images[:, 0, 0, 0].long().tolist() + episode.query_images[:, 0, 0, 0].long().tolist()
        for episode in loader
    ]
    assert got == list(sampler)
    epoch_loader = DataLoader(dataset, batch_sampler=epoch, collate_fn=EpisodeCollate(3, 1, 2), num_workers=2)
    assert sum(1 for _ in epoch_loader) == len(epoch)


def test_loader_on_generated_birds(tiny_birds: Path) -> None:
    data = FewShotFolder(tiny_birds, "test", transform="train", image_size=32)
    loader = episode_loader(
        data, EpisodeSampler(data, way=3, shot=1, query=2, episodes=2, seed=0), num_workers=2
    )
    episodes = list(loader)
    assert len(episodes) == 2
    assert episodes[0].support_images.shape == (3, 3, 32, 32) and episodes[0].query_images.shape == (
        6,
        3,
        32,
        32,
    )


def test_the_episode_misfits_read_right_at_the_edges() -> None:
    """No class, one class, one short class: the words follow the counts."""
    from fsl_core.data.sampler import episode_misfits, images_misfit, way_misfit

    assert (
        way_misfit(("way", 5), 0, "d/test") == "way=5: d/test has no classes (no class folders with images)"
    )
    assert way_misfit(("way", 5), 1, "d/test") == "way=5: d/test has only 1 class; use way <= 1"
    assert way_misfit(("way", 5), 5, "d/test") is None
    images = (("shot", 1), ("query", 4))
    assert images_misfit(images, [("a", 3)], "d/test") == (
        "shot 1 + query 4 = 5 images per class, but the 1 class of d/test has 3; lower shot or query so that shot "
        "+ query <= 3"
    )
    assert images_misfit(images, [("a", 3), ("b", 9)], "d/test", ["query"], or_else="change seed") == (
        "shot 1 + query 4 = 5 images per class, but 1 of the 2 classes of d/test has fewer: a (3); lower query to at "
        "most 2, or change seed"
    )
    six = [(f"c{i}", i + 1) for i in range(6)]  # five listed, smallest first, then "..."
    assert ": c0 (1), c1 (2), c2 (3), c3 (4), c4 (5) ...;" in images_misfit((("shot", 7),), six, "d")
    fixed = episode_misfits(
        ("the test's way", 9), (("the test's shot", 5), ("query", 4)), six, "d", "query".__eq__
    )
    assert fixed == [
        "the test's way=9: d has only 6 classes; it needs a data set with at least 9 classes there",
        "the test's shot 5 + query 4 = 9 images per class, but all 6 classes of d have fewer: c0 (1), c1 (2), "
        "c2 (3), c3 (4), c4 (5) ...; it needs a data set with more images per class there",  # 1 - 5: no room
    ]
