"""The pointing game over many episodes: does a model's Grad-CAM peak fall on the bird, and on its marks?

Per query of ``episodes`` episodes and per model: whether the Grad-CAM peak (``episode_cams``) lies within
``tolerance`` pixels of the discriminative marks and of the bird (``pointing_game``), the chance of a random
point doing so (``random_point_rate``), whether the map has no peak, and whether the query was classified
right. Needs the part maps of the generated birds set (``GroundTruth``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from fsl_core.data import EpisodeSampler, FewShotFolder
from fsl_core.models import EpisodicModel
from fsl_core.runtime import evaluation_mode, resolve_device

from .browser import load_episode
from .gradcam import episode_cams, flat_maps, pointing_game, random_point_rate
from .parts import GroundTruth
from .plots import MAX_FIGURE_WIDTH, legend_outside, readable

MEASURES = ["parts", "parts_random", "bird", "bird_random", "no_peak", "correct"]


def pointing_game_records(
    models: Mapping[str, EpisodicModel],
    data: FewShotFolder,
    truth: GroundTruth,
    way: int,
    shot: int,
    query: int,
    episodes: int,
    seed: int = 0,
    tolerance: int = 0,
    device: str | torch.device = "auto",
) -> pd.DataFrame:
    """One row per model and query: model, episode, correct, parts, bird, no_peak (bools), parts_random and
    bird_random (the probability that a random point hits, 0..1)."""
    device = resolve_device(device)
    sampler = EpisodeSampler(data, way, shot, query, episodes=episodes, seed=seed)
    records = []
    with contextlib.ExitStack() as modes:
        for model in models.values():
            modes.enter_context(evaluation_mode(model, device))
        for g in range(episodes):
            query_indices = sampler.episode(g)[way * shot :]
            episode = load_episode(data, way, shot, query, seed=seed, index=g).to(device)
            regions = [truth.regions(i) for i in query_indices]
            birds, marks = np.stack([r[0] for r in regions]), np.stack([r[1] for r in regions])
            part_chance, bird_chance = (
                random_point_rate(marks, tolerance),
                random_point_rate(birds, tolerance),
            )
            for name, model in models.items():
                maps = episode_cams(
                    model,
                    episode.support_images,
                    episode.support_labels,
                    episode.query_images,
                    classes=episode.query_labels,
                )
                with torch.no_grad():
                    logits = model(episode.support_images, episode.support_labels, episode.query_images)
                right = (logits.argmax(-1) == episode.query_labels).cpu().numpy()
                empty, part_hit, bird_hit = (
                    flat_maps(maps),
                    pointing_game(maps, marks, tolerance),
                    pointing_game(maps, birds, tolerance),
                )
                for q in range(len(query_indices)):
                    records.append(
                        {
                            "model": name,
                            "episode": g,
                            "correct": bool(right[q]),
                            "parts": bool(part_hit[q]),
                            "bird": bool(bird_hit[q]),
                            "no_peak": bool(empty[q]),
                            "parts_random": float(part_chance[q]),
                            "bird_random": float(bird_chance[q]),
                        }
                    )
    return pd.DataFrame(records)


def pointing_game_table(records: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The mean of each measure per model (rows in ``order``), as fractions 0..1."""
    return records.groupby("model", sort=False)[MEASURES].mean().reindex(order)


def plot_pointing_game(table: pd.DataFrame) -> Figure:
    """Hit rates (%) of the CAM peak and of a random point, on the discriminative parts and on the bird."""
    long = pd.concat(
        [
            pd.DataFrame(
                {"model": table.index, "region": region, "point": point, "hit rate (%)": 100 * table[column]}
            )
            for region, point, column in (
                ("discriminative parts", "CAM peak", "parts"),
                ("discriminative parts", "random", "parts_random"),
                ("bird", "CAM peak", "bird"),
                ("bird", "random", "bird_random"),
            )
        ]
    )
    fig = Figure(figsize=(MAX_FIGURE_WIDTH, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, region in zip(axes, ["discriminative parts", "bird"]):
        sns.barplot(data=long[long["region"] == region], x="model", y="hit rate (%)", hue="point", ax=ax)
        ax.set_title(f"pointing game: {region}")
        ax.set_xlabel("")
    axes[0].get_legend().remove()  # one legend, right of the second panel
    legend_outside(axes[1], title="the point")
    return readable(fig)
