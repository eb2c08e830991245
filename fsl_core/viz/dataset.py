"""What a few-shot data set holds, before any model: images per class and split, and how the images look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from PIL import Image

from fsl_core.data import FewShotFolder


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


def plot_split_counts(per_class: pd.DataFrame, by_group: bool) -> Figure:
    """Images per class in each split, and classes per group and split (``by_group``) or per split."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    sns.boxplot(data=per_class, x="split", y="images", ax=ax1, hue="split", legend=False)
    sns.stripplot(data=per_class, x="split", y="images", ax=ax1, color="black", size=2, jitter=0.25)
    ax1.set_title("images per class")
    if by_group:
        sns.countplot(data=per_class, x="group", hue="split", ax=ax2)
        ax2.set_title("classes per group and split")
        ax2.tick_params(axis="x", rotation=45, labelsize=7)
    else:
        sns.countplot(data=per_class, x="split", ax=ax2)
        ax2.set_title("classes per split")
    return fig


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
    """Image sizes, the mean colour per ``key`` ("group" or "split") and the brightness per ``key``."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3, width_ratios=[1, 1, 1.6])
    sns.scatterplot(data=sample, x="width", y="height", hue="split", ax=ax1, s=12, alpha=0.6)
    ax1.set_title("image size (pixels)")
    means = sample.groupby(key, sort=True)[["red", "green", "blue"]].mean()
    ax2.imshow(means.to_numpy()[:, None, :], aspect="auto")
    ax2.set_yticks(range(len(means)), means.index, fontsize=7)
    ax2.set_xticks([])
    ax2.grid(False)
    ax2.set_title(f"mean colour per {key}")
    sns.stripplot(
        data=sample, x=key, y="brightness", hue="split", ax=ax3, size=2.5, dodge=True, order=list(means.index)
    )
    ax3.tick_params(axis="x", rotation=45, labelsize=7)
    ax3.set_title(f"image brightness per {key}")
    return fig
