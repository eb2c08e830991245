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
from fsl_core.statistics import wilson_interval

from .browser import load_episode
from .gradcam import episode_cams, flat_maps, pointing_game, random_point_rate
from .parts import GroundTruth
from .plots import MAX_FIGURE_WIDTH, legend_outside, readable

MEASURES = ["parts", "parts_random", "bird", "bird_random", "flat_map", "correct"]


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
    target: str = "log_probability",
) -> pd.DataFrame:
    """One row per model and query: model, episode, correct, parts, bird, flat_map (bools), parts_random and
    bird_random (the chance that a uniformly random point hits the query's parts or bird, in percent). The maps
    are made of the gradient of ``target`` (a name of ``fsl_core.viz.gradcam.CAM_TARGETS``) for the query's true
    class."""
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
                    target=target,
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
                            "flat_map": bool(empty[q]),
                            "parts_random": 100.0 * float(part_chance[q]),
                            "bird_random": 100.0 * float(bird_chance[q]),
                        }
                    )
    return pd.DataFrame(records)


MEASURE_NAMES = {
    "parts": "peak on parts",
    "parts_random": "random point on parts",
    "bird": "peak on bird",
    "bird_random": "random point on bird",
    "flat_map": "flat map",
    "correct": "classified right",
}
"""The measures in words, for tables and figures."""
_COUNTED = ("parts", "bird", "flat_map", "correct")
"""The measures counted over queries (a hit or not), which get a Wilson interval; the random rates are
expectations, exact for the regions drawn."""


def pointing_game_table(records: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The mean of each measure per model (rows in ``order``) in percent, and ``queries``: the number of queries
    behind them (``records``: ``pointing_game_records``, one 0/1 hit or random rate per query and measure)."""
    grouped = records.groupby("model", sort=False)
    queries = grouped.size()
    # 100·hits first, then divided by the queries: exact (11 of 20 is 55.0, not 55.00000000000001)
    hits = (100.0 * grouped[list(_COUNTED)].sum()).div(queries, axis=0)
    chances = grouped[[m for m in MEASURES if m not in _COUNTED]].mean()  # means of percentages already
    table = pd.concat([hits, chances], axis=1)[MEASURES]
    table["queries"] = queries
    return table.reindex(order)


def pointing_game_summary(table: pd.DataFrame) -> pd.DataFrame:
    """``pointing_game_table`` to read: a column per measure, named in words with its unit, each counted rate
    with its Wilson 95 % interval over the model's queries ("41.3 [36.5, 46.2]", in %), the random rates
    alone."""
    columns = {}
    for measure, name in MEASURE_NAMES.items():
        cells = []
        for rate, queries in zip(table[measure], table["queries"]):
            if pd.isna(rate):  # a model in the order without records
                cells.append("–")
            elif measure in _COUNTED:
                low, high = wilson_interval(rate, int(queries))
                cells.append(f"{rate:.1f} [{low:.1f}, {high:.1f}]")
            else:
                cells.append(f"{rate:.1f}")
        columns[f"{name} (%)"] = cells
    return pd.DataFrame(columns, index=table.index)


def plot_pointing_game(table: pd.DataFrame) -> Figure:
    """Hit rates (%) of the CAM peak, with their Wilson 95 % intervals when ``table`` says how many queries
    (``pointing_game_table``), and of a random point, on the discriminative parts and on the bird. A model whose
    maps were flat for some queries (no peak: counted as misses) says how many under its name, so that a low bar
    is not read as a map looking away when Grad-CAM found no evidence at all."""
    fig = Figure(figsize=(MAX_FIGURE_WIDTH, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colours = sns.color_palette(n_colors=2)
    x = np.arange(len(table))
    for ax, (region, peak, random) in zip(
        axes, (("discriminative parts", "parts", "parts_random"), ("bird", "bird", "bird_random"))
    ):
        rates = table[peak].to_numpy(dtype=float)
        errors = None
        if "queries" in table and table["queries"].notna().all():
            bounds = np.array([wilson_interval(r, int(n)) for r, n in zip(rates, table["queries"])])
            errors = np.stack([rates - bounds[:, 0], bounds[:, 1] - rates])
        ax.bar(x - 0.2, rates, 0.4, yerr=errors, capsize=3, color=colours[0], label="CAM peak")
        ax.bar(x + 0.2, table[random].to_numpy(dtype=float), 0.4, color=colours[1], label="random")
        flat = table["flat_map"] if "flat_map" in table else pd.Series(0.0, index=table.index)
        ax.set_xticks(
            x, [f"{name}\n{share:.0f} % flat" if share > 0 else str(name) for name, share in flat.items()]
        )
        ax.set_title(f"pointing game: {region}")
    axes[0].set_ylabel("hit rate (%)")
    legend_outside(axes[1], title="the point")
    return readable(fig)
