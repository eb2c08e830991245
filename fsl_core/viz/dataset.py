"""What a few-shot data set holds, before any model: images per class and split, and how the images look."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from PIL import Image

from fsl_core.data import FewShotFolder

from .plots import MAX_FIGURE_WIDTH, legend_outside, readable, say_instead


def image_table(root: str | Path, splits: list[str], metadata: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per image of ``splits``: split, class, group (from a generated set's metadata, else "-"), path."""
    rows = []
    classes = (metadata or {}).get("classes", {})
    for split in splits:
        data = FewShotFolder(root, split, transform=None, verify=False)
        for path, label in data.samples:
            name = data.classes[label]
            rows.append(
                {
                    "split": split,
                    "class": name,
                    "group": classes.get(name, {}).get("group_name", "-"),
                    "path": path,
                }
            )
    return pd.DataFrame(rows)


def split_summary(images: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(images per class, one row per split: classes, images, min/max per class, groups)`` of ``image_table``."""
    per_class = images.groupby(["split", "class", "group"], sort=False).size().rename("images").reset_index()
    summary = per_class.groupby("split", sort=False).agg(
        classes=("class", "size"),
        images=("images", "sum"),
        min_per_class=("images", "min"),
        max_per_class=("images", "max"),
        groups=("group", "nunique"),
    )
    return per_class, summary


def data_set_summary(
    summary: pd.DataFrame,
    part_shares: Mapping[str, float],
    part_split: str,
    baseline: Mapping[str, Any] | None,
) -> dict[str, str]:
    """The lines notebook 01 ends with: each split's classes and images (``split_summary``'s table), the share of the
    image the bird and its discriminative parts cover in the images of ``part_split`` (``part_area_shares``' means,
    in %; {} without part maps), and the raw-pixel nearest-neighbour baseline (``nn_baseline``, in %; None for a set
    without a card)."""
    lines = {
        split: f"{int(row['classes'])} classes, {int(row['images'])} images "
        f"({int(row['min_per_class'])}-{int(row['max_per_class'])} per class)"
        for split, row in summary.iterrows()
    }
    if part_shares:
        lines[f"image area ({part_split} images)"] = (
            f"bird {part_shares['bird']:.1f} %, its discriminative parts {part_shares['discriminative parts']:.1f} %"
        )
    if baseline is not None:
        lines["raw-pixel nearest neighbour"] = (
            f"{baseline['accuracy']:.1f} ± {baseline['ci95']:.1f} % ({baseline['way']}-way {baseline['shot']}-shot, "
            f"chance {baseline['chance']:.0f} %)"
        )
    return lines


def single_value_sentence(values: pd.Series, subject: str, unit: str) -> str | None:
    """ "every <subject> has <value> <unit>" when ``values`` hold one value (nothing to plot), else None."""
    distinct = values.dropna().unique()
    if len(distinct) != 1:
        return None
    value = distinct[0]
    return f"every {subject} has {value:g} {unit}" if isinstance(value, (int, float, np.number)) else None


def plot_split_counts(per_class: pd.DataFrame, by_group: bool) -> Figure:
    """Images per class in each split, and classes per group and split (``by_group``) or per split.

    ``per_class``: one row per class with "split", "class", "group" and "images" (``split_summary``). When every
    class has the same number of images, the first panel says so in a sentence instead of a flat plot.
    """
    fig = Figure(
        figsize=(
            MAX_FIGURE_WIDTH,
            3.6 if not by_group else max(3.6, 0.32 * per_class["group"].nunique() + 1.2),
        ),
        layout="constrained",
    )
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.0, 1.4])
    sentence = single_value_sentence(per_class["images"], "class", "images")
    if sentence is not None:
        say_instead(ax1, sentence, title="images per class")
    else:
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11 a deprecated argument (vert)
            warnings.filterwarnings(
                "ignore", message="vert: bool was deprecated", category=DeprecationWarning
            )
            sns.boxplot(data=per_class, x="split", y="images", ax=ax1, hue="split", legend=False)
        sns.stripplot(data=per_class, x="split", y="images", ax=ax1, color="black", size=2, jitter=0.25)
        ax1.set_title("images per class")
        ax1.set_ylabel("images of a class")
        ax1.set_xlabel("")
    if by_group:
        sns.countplot(data=per_class, y="group", hue="split", ax=ax2)
        ax2.set_title("classes per group and split")
        ax2.set_xlabel("classes")
        ax2.set_ylabel("")
        legend_outside(ax2)
    else:
        sns.countplot(data=per_class, x="split", ax=ax2)
        ax2.set_title("classes per split")
        ax2.set_ylabel("classes")
        ax2.set_xlabel("")
    return readable(fig)


def image_appearance(images: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """The first ``per_class`` images of each class from ``image_table``, with their width and height (pixels)
    and mean red, green, blue and brightness (0..1)."""
    sample = images.groupby("class", sort=False).head(per_class).copy()
    sizes, colours = [], []
    for path in sample["path"]:
        with Image.open(path) as image:
            sizes.append(image.size)
            colours.append(np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0) / 255.0)
    sample[["width", "height"]] = np.asarray(sizes)
    sample[["red", "green", "blue"]] = np.asarray(colours)
    sample["brightness"] = sample[["red", "green", "blue"]].mean(axis=1)
    return sample


def plot_appearance(sample: pd.DataFrame, key: str) -> Figure:
    """Image sizes (pixels), the mean colour per ``key`` ("group" or "split") and the brightness per ``key``.

    ``sample``: ``image_appearance``'s table. When every image has the same size, the first panel says so in a
    sentence instead of a single dot.
    """
    keys = list(dict.fromkeys(sample[key]))  # in the data set's order, as plot_split_counts shows them
    fig = Figure(figsize=(MAX_FIGURE_WIDTH, max(3.6, 0.3 * len(keys) + 1.4)), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3, width_ratios=[1.2, 0.5, 1.3])
    sizes = sample[["width", "height"]].drop_duplicates()
    if len(sizes) == 1:
        width, height = (int(v) for v in sizes.iloc[0])
        say_instead(ax1, f"every image is {width} × {height} pixels", title="image size")
    else:
        sns.scatterplot(
            data=sample, x="width", y="height", hue="split", ax=ax1, s=12, alpha=0.6, legend=False
        )
        ax1.set_title("image size")
        ax1.set_xlabel("width (pixels)")
        ax1.set_ylabel("height (pixels)")
    means = sample.groupby(key, sort=False)[["red", "green", "blue"]].mean().reindex(keys)
    ax2.imshow(means.to_numpy()[:, None, :], aspect="auto")
    ax2.set_yticks(range(len(means)), means.index)
    ax2.set_xticks([])
    ax2.grid(False)
    ax2.set_title("mean colour")
    sns.stripplot(
        data=sample, x="brightness", y=key, hue="split", ax=ax3, size=3, dodge=True, order=list(means.index)
    )
    ax3.set_ylim(ax2.get_ylim())  # the rows of the colour panel
    ax3.tick_params(axis="y", labelleft=False)
    ax3.set_ylabel("")
    ax3.set_xlabel("mean brightness (0 black, 1 white)")
    ax3.set_title(f"image brightness per {key}")
    legend_outside(ax3)
    return readable(fig)
