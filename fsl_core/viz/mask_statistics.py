"""Numbers behind HMDRN's masks and reconstructions over many episodes, and their figure.

Over ``episodes`` episodes of a split: the model's accuracy, the share of queries whose own class reconstructs
them best (per level), and — on the generated birds set, whose part maps are known — how well each masked
transformer layer's kept tokens agree with the bird and its discriminative marks, against random masks that
keep as many tokens (``mask_agreement``). Masks as in Luo et al., "Hierarchical Mask-Enhanced Dual
Reconstruction Network for Few-Shot Fine-Grained Image Classification", 2025, arXiv:2506.20263.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from fsl_core.data import EpisodeSampler, FewShotFolder
from fsl_core.models import EpisodicModel
from fsl_core.runtime import evaluation_mode, resolve_device

from .browser import load_episode
from .masks import mask_agreement, token_fractions, token_grid
from .parts import GroundTruth
from .plots import MAX_FIGURE_WIDTH, legend_outside, readable
from .reconstruction import true_class_best_rate


@torch.no_grad()
def reconstruction_statistics(
    model: EpisodicModel,
    data: FewShotFolder,
    truth: GroundTruth | None,
    way: int,
    shot: int,
    query: int,
    episodes: int,
    seed: int = 0,
    random_draws: int = 100,
    device: str | torch.device = "auto",
) -> tuple[float, dict[str, float], pd.DataFrame]:
    """``(accuracy, {level: true-class-best rate}, mask agreement records)`` over ``episodes`` episodes.

    Accuracy and rates are in percent, as every reported accuracy and rate. The records (one per query, level and
    transformer layer: "level", "layer", and the ``mask_agreement`` scores as fractions in [0, 1]) are empty
    without ``truth`` or without masks; ``mask_statistics_summary`` averages them into percentages.
    """
    device = resolve_device(device)
    sampler = EpisodeSampler(data, way, shot, query, episodes=episodes, seed=seed)
    correct, best, records = [], {level: [] for level in model.levels}, []
    with evaluation_mode(model, device):
        for g in range(episodes):
            indices = sampler.episode(g)
            episode = load_episode(data, way, shot, query, seed=seed, index=g).to(device)
            logits, details = model(
                episode.support_images, episode.support_labels, episode.query_images, return_details=True
            )
            correct.append((logits.argmax(-1) == episode.query_labels).cpu())
            for level in details["levels"]:
                best[level].append(true_class_best_rate(details["token_error"][level], episode.query_labels))
            if truth is None or "masks" not in details:
                continue
            for q, index in enumerate(indices[way * shot :]):
                bird, mark, _ = truth.regions(index)
                for level, masks in details["masks"].items():
                    grid = token_grid(masks.shape[-1])
                    bird_share, mark_share = token_fractions(bird, grid), token_fractions(mark, grid)
                    for layer in range(masks.shape[1]):
                        scores = mask_agreement(
                            masks[q, layer].cpu(),
                            bird_share,
                            mark_share,
                            random_draws=random_draws,
                            seed=g * 1000 + q,
                        )
                        records.append({"level": level, "layer": layer + 1, **scores})
    right = torch.cat(correct)
    accuracy = 100.0 * int(right.sum()) / len(right)  # exact: no float32 rounding in the reported number
    return accuracy, {level: 100.0 * sum(v) / len(v) for level, v in best.items()}, pd.DataFrame(records)


def mask_statistics_summary(records: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """The means of ``reconstruction_statistics``' records, in percent: (one row per level and layer, "level",
    "layer" and the mean of every score, as ``plot_mask_statistics`` takes it; {level: {score: mean over its
    layers and queries}}). Both are empty for empty records (no ground truth, or a model without masks)."""
    if records.empty:
        return pd.DataFrame(), {}
    scores = [column for column in records.columns if column not in ("level", "layer")]
    percent = records.assign(**{column: 100.0 * records[column] for column in scores})
    by_layer = percent.groupby(["level", "layer"]).mean().reset_index()
    by_level = percent.drop(columns=["layer"]).groupby("level").mean()
    return by_layer, {level: {k: float(v) for k, v in row.items()} for level, row in by_level.iterrows()}


def plot_mask_statistics(summary: pd.DataFrame) -> Figure:
    """Object share and part IoU (in %) of the kept tokens per level and layer, HMDRN's masks beside random
    ones.

    ``summary``: one row per (level, layer) with "object_share", "random_object_share", "part_iou" and
    "random_part_iou" in percent (``mask_statistics_summary``).
    """
    long = pd.concat(
        [
            summary.assign(measure=measure, mask=mask, value=summary[column])
            for measure, mask, column in (
                ("object share", "HMDRN", "object_share"),
                ("object share", "random", "random_object_share"),
                ("part IoU", "HMDRN", "part_iou"),
                ("part IoU", "random", "random_part_iou"),
            )
        ]
    )
    long["where"] = long["level"] + "\nlayer " + long["layer"].astype(str)
    fig = Figure(figsize=(MAX_FIGURE_WIDTH, 3.4), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)  # the right panel's axis label apart from the left panel
    axes = fig.subplots(1, 2)
    labels = {
        "object share": "kept area on the bird (%)",
        "part IoU": "IoU of kept tokens and parts (%)",
    }
    for ax, measure in zip(axes, labels):
        sns.barplot(data=long[long["measure"] == measure], x="where", y="value", hue="mask", ax=ax)
        ax.set_title(measure)
        ax.set_xlabel("level and layer")
        ax.set_ylabel(labels[measure])
    axes[0].get_legend().remove()  # one legend, right of the second panel
    legend_outside(axes[1], title="mask")
    return readable(fig)
