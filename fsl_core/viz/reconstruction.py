"""Reconstruction error maps: how well each class's support tokens rebuild each query token.

FRN, BiFRN and HMDRN score a class by how well its support features reconstruct the query's features
(Wertheimer et al., CVPR 2021; Wu et al., AAAI 2023; Luo et al., 2025). ``details["token_error"][level]``
(n_query, way, N) holds the squared error per query token and class; a low error where the bird's
distinguishing parts are means the right class explains them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .masks import token_grid, upsample_tokens
from .plots import image_array, wrap_label


def error_maps(token_error: Tensor, feature_size: Sequence[int] | None = None) -> Tensor:
    """token_error (n_query, way, N) → maps (n_query, way, h, w)."""
    h, w = token_grid(token_error.shape[-1], feature_size)
    return token_error.reshape(*token_error.shape[:-1], h, w)


def best_reconstructing_class(token_error: Tensor) -> Tensor:
    """token_error (n_query, way, N) → (n_query,) the class with the lowest total error."""
    return token_error.sum(-1).argmin(-1)


def true_class_best_rate(token_error: Tensor, query_labels: Tensor) -> float:
    """Share of queries whose own class reconstructs them best (lowest summed token error)."""
    return float((best_reconstructing_class(token_error).cpu() == query_labels.cpu()).float().mean())


def plot_error_maps(
    image: Tensor | np.ndarray,
    token_error: Tensor,
    class_names: Sequence[str],
    true_class: int | None = None,
    feature_size: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """One query and its reconstruction error map for every candidate class (shared colour scale).

    Args:
        image: the query, (3, H, W) normalised tensor or (H, W, 3) array.
        token_error: (way, N) squared error per token for each class.
        class_names: name of each of the ``way`` classes.
        true_class: index of the query's class, outlined in green.
        feature_size: (h, w) of the level.

    Low error (dark) = the class's support features explain that part of the query.
    """
    picture = image_array(image)
    errors = token_error.detach().float().cpu()
    way = errors.shape[0]
    totals = errors.sum(-1)
    best = int(totals.argmin())
    pixels = upsample_tokens(errors, picture.shape[:2], feature_size).numpy()
    vmin, vmax = float(pixels.min()), float(pixels.max())
    fig = Figure(figsize=(1.7 * (way + 1) + 0.6, 2.6), layout="constrained")
    axes = fig.subplots(1, way + 1)
    axes[0].imshow(picture)
    axes[0].set_title("query", fontsize=8)
    image_handle = None
    for c in range(way):
        ax = axes[c + 1]
        ax.imshow(picture)
        image_handle = ax.imshow(pixels[c], cmap="magma", alpha=0.65, vmin=vmin, vmax=vmax)
        mark = " (best)" if c == best else ""
        ax.set_title(f"{wrap_label(class_names[c])}{mark}\nerror {float(totals[c]):.3g}", fontsize=6)
        if true_class is not None and c == true_class:
            for spine in ax.spines.values():
                spine.set_edgecolor("limegreen")
                spine.set_linewidth(3)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if image_handle is not None:
        fig.colorbar(image_handle, ax=list(axes[1:]), shrink=0.8, label="squared error")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_level_scores(
    level_scores: Mapping[str, Tensor], class_names: Sequence[str], true_class: int | None = None
) -> Figure:
    """Bar chart of each level's (weighted) score per class for one query: {level: (way,)}."""
    rows = []
    for level, scores in level_scores.items():
        for c, value in enumerate(torch.as_tensor(scores).float().tolist()):
            rows.append({"class": class_names[c], "level": level, "score": value})
    fig = Figure(figsize=(1.0 * len(class_names) + 2, 2.8), layout="constrained")
    ax = fig.subplots()
    sns.barplot(data=pd.DataFrame(rows), x="class", y="score", hue="level", ax=ax)
    if true_class is not None:
        ax.get_xticklabels()[true_class].set_fontweight("bold")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelsize=7)
    return fig


__all__ = [
    "error_maps",
    "best_reconstructing_class",
    "true_class_best_rate",
    "plot_error_maps",
    "plot_level_scores",
]
