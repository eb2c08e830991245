"""The raw-pixel baseline of the data set card: nearest class mean on RGB pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...statistics import confidence_interval
from ..sampler import EpisodeSampler


def nn_pixel_accuracy(
    root: str | Path,
    split: str = "test",
    way: int = 5,
    shot: int = 1,
    query: int = 16,
    episodes: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean accuracy and 95% CI of nearest-neighbour (Euclidean, raw pixels) few-shot classification.

    Support prototypes are the mean pixel vectors of each class's ``shot`` images. Accuracy, ci95 and chance are
    fractions in [0, 1], as the data set card records them (``nn_baseline`` gives them in percent).
    """
    folder = Path(root) / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    vectors, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).glob("*.png")):
            with Image.open(file) as image:
                vectors.append(np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1) / 255.0)
            labels.append(label)
    data = torch.from_numpy(np.stack(vectors))
    gram = (data @ data.T).double().numpy()  # one product; every episode then only indexes it
    query = min(query, int(min(np.bincount(labels))) - shot)
    sampler = EpisodeSampler(labels, way, shot, query, episodes, seed=seed)
    truth = np.repeat(np.arange(way), query)
    accuracies = np.empty(episodes)
    for e, indices in enumerate(sampler):
        support = np.asarray(indices[: way * shot]).reshape(way, shot)
        queries = np.asarray(indices[way * shot :])
        # ||q - m_c||^2 = G[q,q] - 2 mean_k G[q,s_ck] + mean_kl G[s_ck,s_cl]
        cross = gram[queries[:, None, None], support[None]].mean(-1)
        within = gram[support[:, :, None], support[:, None, :]].mean((1, 2))
        d = gram[queries, queries][:, None] - 2 * cross + within[None]
        accuracies[e] = float((d.argmin(1) == truth).mean())
    accuracy, ci95 = confidence_interval(accuracies)
    return {
        "accuracy": accuracy,
        "ci95": ci95,
        "method": "nearest class mean, Euclidean distance on raw RGB pixels in [0, 1]",
        "split": split,
        "way": way,
        "shot": shot,
        "query": query,
        "episodes": episodes,
        "chance": 1.0 / way,
    }
