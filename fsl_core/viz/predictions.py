"""Figures of ``fsl_core.classifier.FewShotClassifier``: the support set, the predictions with their
probabilities, and the explanation of one prediction (Grad-CAM, HMDRN's kept tokens, reconstruction errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from fsl_core.classifier import Images, ImageSource, image_inputs, open_image

from .gradcam import cam_overlay
from .masks import upsample_tokens
from .plots import MAX_FIGURE_WIDTH, MIN_FONT_SIZE, image_array, title_number, wrap_label
from .reconstruction import fused_scores

THUMBNAIL = 256
"""Longest side, in pixels, of the images drawn in these figures."""
HIGHLIGHT = "#d95f02"
OTHER = "#7f7f7f"
TEXT = MIN_FONT_SIZE
WIDTH = MAX_FIGURE_WIDTH
CELL = 1.2
"""Side of one support image, in inches."""


def thumbnail(source: ImageSource, side: int = THUMBNAIL) -> np.ndarray:
    """An image (path or PIL image) as an (h, w, 3) uint8 array no larger than ``side`` on either side."""
    image = open_image(source).copy()
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image)


def short_label(name: str, width: int = 24) -> str:
    """``name`` on one line of at most ``width`` characters: a longer one keeps its start and its end around
    "…" (names of one family often differ only at the end)."""
    name = str(name)
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]


def bar_label(name: str, width: int = 12) -> str:
    """A class name beside its probability bar: at most two lines of ``width`` characters (``wrap_label``), the
    rest elided by ``short_label``: "finch red eye" → "finch red\neye", not "finch…ed eye"."""
    lines = wrap_label(name, width).split("\n")
    if len(lines) > 2:  # wrap_label breaks after "+" and "-" inside a word, else at spaces
        rest = "".join(line if line.endswith(("+", "-")) else line + " " for line in lines[1:])
        lines = [lines[0], rest.strip()]
    return "\n".join(short_label(line, width) for line in lines)


def _clean(ax) -> None:  # noqa: ANN001 -- a matplotlib Axes
    ax.set_xticks([])
    ax.set_yticks([])


def plot_support_set(support: Mapping[str, Sequence[ImageSource]], max_per_class: int = 6) -> Figure:
    """A row per class: its name, its number of images and up to ``max_per_class`` of them ("+k" beyond).

    support: {class name: images}, e.g. ``FewShotClassifier.support_``.
    """
    names = list(support)
    columns = max(1, min(max_per_class, max(len(v) for v in support.values())))
    fig = Figure(figsize=(CELL * columns + 1.8, CELL * len(names) + 0.4), layout="constrained")
    axes = fig.subplots(len(names), columns, squeeze=False)
    for row, name in enumerate(names):
        images = list(support[name])
        for column in range(columns):
            ax = axes[row, column]
            _clean(ax)
            if column < len(images):
                ax.imshow(thumbnail(images[column]))
            else:
                ax.set_axis_off()
        axes[row, 0].set_ylabel(
            f"{wrap_label(name, 14)}\n({len(images)})", fontsize=TEXT, rotation=0, ha="right", va="center"
        )
        if len(images) > columns:
            axes[row, -1].set_title(f"+{len(images) - columns} more", fontsize=TEXT, loc="right")
    fig.suptitle("support set (number of images per class in brackets)", fontsize=TEXT + 1)
    return fig


def plot_predictions(
    images: Images, probabilities: pd.DataFrame, columns: int = 4, top: int = 3, max_images: int = 24
) -> Figure:
    """Each image with its predicted class and a bar chart of its ``top`` most probable classes (the
    predicted one highlighted); the first ``max_images`` images.

    images: as given to ``predict_proba``; probabilities: its table (rows in the same order).
    """
    _, sources = image_inputs(images)
    if len(sources) != len(probabilities):
        raise ValueError(f"{len(sources)} images but {len(probabilities)} rows of probabilities")
    shown = min(len(sources), max_images)
    columns = max(1, min(columns, shown))
    rows = -(-shown // columns)
    top = min(top, probabilities.shape[1])
    width = min(2.25, WIDTH / columns)
    picture = 0.62 * width  # the bar labels take the rest of the column's width
    rows_shown = [probabilities.iloc[i].sort_values(ascending=False)[:top] for i in range(shown)]
    labels = [[bar_label(c) for c in row.index] for row in rows_shown]
    lines = max(label.count("\n") + 1 for shown_labels in labels for label in shown_labels)
    bars = (0.28 if lines == 1 else 0.4) * top + 0.3
    fig = Figure(figsize=(width * columns, rows * (picture + 0.6 + bars)), layout="constrained")
    axes = fig.subplots(2 * rows, columns, squeeze=False, height_ratios=[picture, bars] * rows)
    for i in range(rows * columns):
        image_ax, bar_ax = axes[2 * (i // columns), i % columns], axes[2 * (i // columns) + 1, i % columns]
        if i >= shown:
            image_ax.set_axis_off()
            bar_ax.set_axis_off()
            continue
        row = rows_shown[i]
        image_ax.imshow(thumbnail(sources[i]))
        _clean(image_ax)
        name = short_label(str(probabilities.index[i]), 26)
        image_ax.set_title(f"{name}\n→ {short_label(row.index[0], 24)}", fontsize=TEXT)
        values = row.to_numpy()[::-1]
        colours = [OTHER] * (len(row) - 1) + [HIGHLIGHT]
        bar_ax.barh(np.arange(len(row)), values, color=colours)
        bar_ax.set_yticks(np.arange(len(row)), labels[i][::-1])
        bar_ax.set_xlim(0, 1)
        bar_ax.set_xticks([])
        bar_ax.tick_params(labelsize=TEXT)
        # beside the bar, or inside its end where there is no room beside it
        for y, value in enumerate(values):
            inside = value > 0.7
            bar_ax.text(
                value - 0.02 if inside else value + 0.03,
                y,
                f"{value:.0%}",
                va="center",
                ha="right" if inside else "left",
                color="white" if inside else "black",
                fontsize=TEXT,
            )
    if shown < len(sources):
        fig.suptitle(f"the first {shown} of {len(sources)} images", fontsize=TEXT + 1)
    return fig


def plot_explanation(
    image: Tensor,
    cam: np.ndarray,
    probabilities: Mapping[str, float],
    target: str,
    kept_tokens: Mapping[str, Tensor] | None = None,
    token_errors: Mapping[str, Tensor] | None = None,
    level_scores: Mapping[str, Tensor] | None = None,
    max_classes: int = 6,
    title: str | None = None,
) -> Figure:
    """Why a query gets class ``target``: what ``FewShotClassifier.explain`` draws.

    Args:
        image: the query as the model sees it, (3, S, S) normalised.
        cam: (S, S) Grad-CAM of ``target`` in [0, 1].
        probabilities: {class: probability}.
        target: the class explained.
        kept_tokens: {level: (N,)} share of transformer layers and heads that keep each token (HMDRN's mask).
        token_errors: {level: (way, N)} squared reconstruction error of each query token per class, classes in
            the order of ``probabilities``.
        level_scores: {level: (way,)} each level's weighted share of each class's logit (HMDRN's
            ``details["level_scores"]``), shown under each class's error: the class of the highest sum wins, so it
            need not have the lowest error at every level.
        max_classes: classes shown in the probability bars and the error maps (those of highest probability;
            ``target`` always).
        title: figure title.
    """
    picture = image_array(image)
    size = picture.shape[:2]
    classes = list(probabilities)
    order = sorted(range(len(classes)), key=lambda c: -probabilities[classes[c]])[:max_classes]
    if classes.index(target) not in order:
        order[-1] = classes.index(target)
    kept_tokens, token_errors = dict(kept_tokens or {}), dict(token_errors or {})
    rows = 1 + bool(kept_tokens) + len(token_errors)
    cell = WIDTH / max(4, len(order) + 0.6)
    heights = [2.6] + [2.4] * bool(kept_tokens) + [cell + 0.9 + 0.15 * bool(level_scores)] * len(token_errors)
    fig = Figure(figsize=(WIDTH, sum(heights) + 0.4), layout="constrained")
    parts = fig.subfigures(rows, 1, squeeze=False, height_ratios=heights)[:, 0]

    top = parts[0].subplots(1, 3, width_ratios=[1, 1, 1.8])
    top[0].imshow(picture)
    top[0].set_title("query (model input)", fontsize=TEXT)
    top[1].imshow(cam_overlay(picture, cam))
    top[1].set_title(f"Grad-CAM:\n{short_label(target, 22)}", fontsize=TEXT)
    for ax in top[:2]:
        _clean(ax)
    names = [classes[c] for c in order][::-1]
    top[2].barh(
        np.arange(len(names)),
        [probabilities[n] for n in names],
        height=0.45,
        color=[HIGHLIGHT if n == target else OTHER for n in names],
    )
    for y, name in enumerate(
        names
    ):  # the whole name above its bar: what tells two classes apart is often last
        top[2].text(0, y + 0.27, f"{short_label(name, 52)}: {probabilities[name]:.0%}", fontsize=TEXT)
    top[2].set_yticks([])
    top[2].set_ylim(-0.5, len(names) - 0.1)
    top[2].set_xlim(0, 1)
    top[2].set_xlabel("probability", fontsize=TEXT)
    top[2].tick_params(labelsize=TEXT)
    part = 1
    if kept_tokens:
        axes = parts[part].subplots(1, max(3, len(kept_tokens)), squeeze=False)[0]
        for ax, (level, share) in zip(axes, kept_tokens.items()):
            shade = upsample_tokens(torch.as_tensor(share), size).numpy()[..., None]
            ax.imshow((picture * (0.35 + 0.65 * shade)).clip(0, 1))
            ax.set_title(f"kept tokens, level {level}\n(brighter: kept by more heads)", fontsize=TEXT)
        for ax in axes:
            _clean(ax)
            if not ax.images:
                ax.set_axis_off()
        part += 1
    for level, errors in token_errors.items():
        errors = torch.as_tensor(errors).float()
        pixels = upsample_tokens(errors[order], size).numpy()
        low, high = float(pixels.min()), float(pixels.max())
        axes = parts[part].subplots(1, len(order), squeeze=False)[0]
        handle = None
        for ax, c, values in zip(axes, order, pixels):
            ax.imshow(picture)
            handle = ax.imshow(values, cmap="magma", alpha=0.65, vmin=low, vmax=high)
            mark = " ←" if classes[c] == target else ""
            share = (
                f"\nlogit {title_number(float(level_scores[level][c]), signed=True)}" if level_scores else ""
            )
            ax.set_title(
                f"{short_label(classes[c], 14)}{mark}\nerror {title_number(float(errors[c].sum()))}{share}",
                fontsize=TEXT,
            )
            _clean(ax)
        if handle is not None:
            bar = parts[part].colorbar(handle, ax=list(axes), shrink=0.8)
            bar.ax.tick_params(labelsize=TEXT)
        if level_scores and len(token_errors) > 1 and level == list(token_errors)[-1]:
            highest = int(fused_scores(level_scores).argmax()) == classes.index(target)
            chosen = "; the class explained (←) has the highest sum" if highest else ""
            text = f"level {level}: the same; a class's logit sums its levels' shares{chosen}"
        else:
            text = f"level {level}: squared reconstruction error per token and class (dark: well rebuilt)"
        parts[part].suptitle(text, fontsize=TEXT)
        part += 1
    if title:
        fig.suptitle(title, fontsize=TEXT + 1)
    return fig


__all__ = ["short_label", "thumbnail", "plot_support_set", "plot_predictions", "plot_explanation"]
