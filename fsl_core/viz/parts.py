"""Ground-truth part maps of the embedded birds set, aligned with what a model sees.

The generator stores one part id per pixel (``fsl_core.data.PART_NAMES``) and, per class, the parts that
tell the species from its group siblings. Models see images through the evaluation transform (resize to
round(s·92/84), centre crop s), so the maps go through the same geometry (``masks.align_to_eval``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from fsl_core.data import FewShotFolder, load_metadata, part_map
from fsl_core.data.birds import BIRD_PART_IDS, PART_NAMES

from .masks import align_to_eval
from .plots import IMAGE_TEXT_SIZE, image_array, legend_outside, readable, wrap_label


def has_parts(root: str | Path) -> bool:
    """Whether ``root`` holds part maps and metadata (a generated birds set)."""
    return (Path(root) / "parts").is_dir() and (Path(root) / "metadata.json").is_file()


class GroundTruth:
    """Part-level ground truth of one split of a generated set, aligned to ``image_size`` eval inputs.

    ``regions(i)`` → (bird (s, s) bool, discriminative (s, s) bool, part ids (s, s) uint8) for image ``i`` of
    ``dataset`` (a ``FewShotFolder`` of that split).
    """

    def __init__(self, dataset: FewShotFolder, image_size: int | None = None) -> None:
        if not has_parts(dataset.root):
            raise ValueError(
                f"{dataset.root} has no part maps (parts/ and metadata.json): ground truth exists only for the "
                "embedded birds set (fsl_core.data.ensure_birds)"
            )
        self.dataset = dataset
        self.image_size = image_size or dataset.image_size
        self.metadata: dict[str, Any] = load_metadata(dataset.root)

    def part_ids(self, index: int, aligned: bool = True) -> np.ndarray:
        """(H, W) uint8 part ids of image ``index`` (in eval geometry when ``aligned``)."""
        path = self.dataset.image_path(index)
        ids = part_map(self.dataset.root, self.dataset.split, path.parent.name, path.name)
        return align_to_eval(ids, self.image_size) if aligned else ids

    def discriminative_ids(self, index: int) -> list[int]:
        """Part ids that distinguish the class of image ``index`` from its group siblings."""
        name = self.dataset.classes[self.dataset.targets[index]]
        return list(self.metadata["classes"][name]["discriminative_parts"])

    def regions(self, index: int, aligned: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bird mask, discriminative-part mask, part ids) of image ``index``."""
        ids = self.part_ids(index, aligned)
        return np.isin(ids, BIRD_PART_IDS), np.isin(ids, self.discriminative_ids(index)), ids


def part_colours() -> ListedColormap:
    """A fixed colour per part id (background grey, occluders brown)."""
    import seaborn as sns

    colours = [(0.85, 0.85, 0.85)] + sns.color_palette("tab20", len(PART_NAMES) - 2) + [(0.45, 0.3, 0.15)]
    return ListedColormap(colours, name="parts")


def plot_parts(
    images: Sequence[np.ndarray],
    part_maps: Sequence[np.ndarray],
    discriminative: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
) -> Figure:
    """A row per image: the image | its part map | its discriminative-part mask over the image.

    ``titles`` (one per image, lines separated by newlines) are wrapped to the image's width.
    """
    cmap = part_colours()
    height = max(1.9 * len(images) + 0.6, 0.24 * len(PART_NAMES) + 0.8)  # room for every part's name
    fig = Figure(figsize=(7.0, height), layout="constrained")
    axes = fig.subplots(len(images), 3, squeeze=False)
    handle = None
    for i, (image, ids, mask) in enumerate(zip(images, part_maps, discriminative)):
        picture = image_array(image)
        axes[i, 0].imshow(picture)
        handle = axes[i, 1].imshow(
            ids, cmap=cmap, vmin=-0.5, vmax=len(PART_NAMES) - 0.5, interpolation="nearest"
        )
        shade = picture * (0.25 + 0.75 * np.asarray(mask, dtype=float)[..., None])
        axes[i, 2].imshow(shade)
        axes[i, 2].contour(np.asarray(mask, dtype=float), levels=[0.5], colors="yellow", linewidths=0.8)
        if titles is not None:
            axes[i, 0].set_title(
                "\n".join(wrap_label(line, 24) for line in titles[i].split("\n")), fontsize=IMAGE_TEXT_SIZE
            )
        if i == 0:
            axes[i, 1].set_title("part map", fontsize=IMAGE_TEXT_SIZE)
            axes[i, 2].set_title("discriminative parts", fontsize=IMAGE_TEXT_SIZE)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if handle is not None:
        bar = fig.colorbar(handle, ax=axes.ravel().tolist(), ticks=range(len(PART_NAMES)), shrink=0.95)
        bar.ax.set_yticklabels([name.replace("_", " ") for name in PART_NAMES])
    return readable(fig)


def plot_part_examples(truth: GroundTruth, count: int) -> Figure:
    """``plot_parts`` of ``count`` images of ``truth``'s split, the first image of classes spread evenly over the
    split, each titled with its class and the names of its discriminative parts (in the image's own geometry)."""
    data = truth.dataset
    by_class = data.indices_by_class()
    step = max(1, len(by_class) // count)
    chosen = [by_class[c][0] for c in range(0, len(by_class), step)][:count]
    pictures, maps, marks, titles = [], [], [], []
    for index in chosen:
        _, mark, ids = truth.regions(index, aligned=False)
        pictures.append(np.asarray(data.load_image(index)))
        maps.append(ids)
        marks.append(mark)
        name = data.classes[data.targets[index]]
        titles.append(f"{name}\n({', '.join(truth.metadata['classes'][name]['discriminative_part_names'])})")
    return plot_parts(pictures, maps, marks, titles)


def part_area_shares(truth: GroundTruth, per_class: int) -> pd.DataFrame:
    """The share of the image covered by the bird and by its discriminative parts, in the image's own geometry,
    for about ``per_class`` images per class of ``truth``'s split (every k-th image, k = images // (per_class ·
    classes), at least 1): one row per image, columns "bird" and "discriminative parts", in percent."""
    data = truth.dataset
    step = max(1, len(data) // (per_class * len(data.classes)))
    shares = []
    for index in range(0, len(data), step):
        bird, mark, _ = truth.regions(index, aligned=False)
        shares.append(
            {"bird": 100.0 * float(bird.mean()), "discriminative parts": 100.0 * float(mark.mean())}
        )
    return pd.DataFrame(shares)


def plot_part_areas(shares: pd.DataFrame, split: str) -> Figure:
    """Step histograms of ``part_area_shares``' two columns on one axis, the legend beside it, for the images of
    ``split``."""
    import seaborn as sns

    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    sns.histplot(
        data=shares.melt(var_name="region", value_name="share of the image (%)"),
        x="share of the image (%)",
        hue="region",
        bins=30,
        ax=ax,
        element="step",
    )
    ax.set_title(f"area of the bird and of its marks ({split})")
    legend_outside(ax)
    return readable(fig)


__all__ = [
    "has_parts",
    "GroundTruth",
    "part_area_shares",
    "part_colours",
    "plot_part_areas",
    "plot_part_examples",
    "plot_parts",
]
