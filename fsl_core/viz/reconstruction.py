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
from .plots import (
    IMAGE_TEXT_SIZE,
    MAX_FIGURE_WIDTH,
    MIN_FONT_SIZE,
    RIGHT_COLOUR,
    image_array,
    label_width,
    legend_outside,
    readable,
    title_number,
    wrap_label,
)

MIN_MAP_CELL = 1.3
"""The narrowest error map, in inches: more classes than fit in a row at that width wrap to further rows."""


def error_maps(token_error: Tensor, feature_size: Sequence[int] | None = None) -> Tensor:
    """token_error (n_query, way, N) → maps (n_query, way, h, w)."""
    h, w = token_grid(token_error.shape[-1], feature_size)
    return token_error.reshape(*token_error.shape[:-1], h, w)


def best_reconstructing_class(token_error: Tensor) -> Tensor:
    """token_error (n_query, way, N) → (n_query,) the class with the lowest total error."""
    return token_error.sum(-1).argmin(-1)


def true_class_best_rate(token_error: Tensor, query_labels: Tensor) -> float:
    """Share of queries whose own class reconstructs them best (lowest summed token error), a fraction in [0, 1]
    (``reconstruction_statistics`` reports it in percent); token_error: (n_query, way, N), query_labels:
    (n_query,)."""
    return float((best_reconstructing_class(token_error).cpu() == query_labels.cpu()).float().mean())


def fused_scores(level_scores: Mapping[str, Tensor]) -> Tensor:
    """{level: (..., way) weighted score} → (..., way) their sum, the score the classes are ranked by (before the
    model's scale): HMDRN's w_last·s_last + w_mid·s_mid."""
    return sum(torch.as_tensor(scores).float() for scores in level_scores.values())


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
        true_class: index of the query's class: "(true class)" under its name, framed in ``RIGHT_COLOUR``.
        feature_size: (h, w) of the level.

    Low error (dark) = the class's support features explain that part of the query; the class of the lowest
    total error, the prediction, says "(lowest)" under its error.
    """
    picture = image_array(image)
    errors = token_error.detach().float().cpu()
    way = errors.shape[0]
    totals = errors.sum(-1)
    best = int(totals.argmin())
    pixels = upsample_tokens(errors, picture.shape[:2], feature_size).numpy()
    vmin, vmax = float(pixels.min()), float(pixels.max())
    columns = min(
        way + 1, int((MAX_FIGURE_WIDTH - 1.0) / MIN_MAP_CELL)
    )  # the query, then the classes in rows
    rows = -(-(way + 1) // columns)
    cell = min(1.55, (MAX_FIGURE_WIDTH - 1.0) / columns)
    characters = label_width(cell - 0.1)
    titles = []
    for c in range(way):
        lines = [wrap_label(class_names[c], characters)]
        if true_class is not None and c == true_class:
            lines.append("(true class)")
        lines.append(f"error {title_number(float(totals[c]))}")
        if c == best:
            lines.append("(lowest)")  # a line of its own: beside the number it overruns the panel
        titles.append("\n".join(lines))
    title_lines = max(t.count("\n") + 1 for t in titles)
    fig = Figure(
        figsize=(cell * columns + 0.9, rows * (cell + 0.22 * title_lines) + (0.5 if title else 0.2)),
        layout="constrained",
    )
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    axes[0].imshow(picture)
    axes[0].set_title("query", fontsize=IMAGE_TEXT_SIZE)
    image_handle = None
    for c in range(way):
        ax = axes[c + 1]
        ax.imshow(picture)
        image_handle = ax.imshow(pixels[c], cmap="magma", alpha=0.65, vmin=vmin, vmax=vmax)
        ax.set_title(titles[c], fontsize=IMAGE_TEXT_SIZE)
        if true_class is not None and c == true_class:
            for spine in ax.spines.values():
                spine.set_edgecolor(RIGHT_COLOUR)
                spine.set_linewidth(3)
    for ax in axes[way + 1 :]:
        ax.set_axis_off()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if image_handle is not None:
        fig.colorbar(
            image_handle, ax=list(axes[1 : way + 1]), shrink=0.8 if rows == 1 else 0.5, label="squared error"
        )
    if title:
        fig.suptitle(title)
    return readable(fig)


def plot_level_scores(
    level_scores: Mapping[str, Tensor], class_names: Sequence[str], true_class: int | None = None
) -> Figure:
    """Horizontal bars of each level's (weighted) score per class for one query, {level: (way,)}, one row per
    class (readable at any way), and with several levels their sum as a black diamond. The class of the highest
    sum, the prediction, says "(predicted)"; the true class is named in bold with "(true)"."""
    if not level_scores:
        raise ValueError(
            "level_scores is empty: expected {level: (way,) scores}, as details['level_scores'] holds"
        )
    rows = []
    for level, scores in level_scores.items():
        for c, value in enumerate(torch.as_tensor(scores).float().tolist()):
            rows.append({"class": c, "level": level, "score": value})
    way = len(class_names)
    predicted = int(fused_scores(level_scores).argmax())
    names = [wrap_label(name, label_width(3.0, MIN_FONT_SIZE)) for name in class_names]
    marks = {predicted: ["predicted"]}
    if true_class is not None:
        marks.setdefault(true_class, []).insert(0, "true")
    for c, words in marks.items():
        names[c] += f"\n({', '.join(words)})"
    lines = max(name.count("\n") + 1 for name in names)
    per_class = max(0.13 * len(level_scores) + 0.08, 0.2 * lines)  # two-line names one above the other
    fig = Figure(figsize=(MAX_FIGURE_WIDTH - 1.0, 0.7 + per_class * way), layout="constrained")
    ax = fig.subplots()
    sns.barplot(data=pd.DataFrame(rows), y="class", x="score", hue="level", orient="h", ax=ax)
    if len(level_scores) > 1:  # what decides: the sum of the levels
        ax.get_legend().remove()  # seaborn's names the levels only: the legend below names the sum too
        sums = fused_scores(level_scores).tolist()
        ax.scatter(sums, range(way), marker="D", color="black", s=18, zorder=3, label="sum of the levels")
    ax.set_yticks(range(way), names)
    if true_class is not None:
        ax.get_yticklabels()[true_class].set_fontweight("bold")
    ax.set_ylabel("")
    ax.set_xlabel("weighted score")
    legend_outside(ax)
    return readable(fig)


__all__ = [
    "error_maps",
    "fused_scores",
    "best_reconstructing_class",
    "true_class_best_rate",
    "plot_error_maps",
    "plot_level_scores",
]
