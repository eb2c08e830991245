"""Seaborn figures of runs and evaluations: training curves, accuracy bars with 95% confidence intervals,
per-episode accuracy histograms; and showing and saving figures as PNG.

Every plotting function returns a ``matplotlib.figure.Figure`` (not registered with pyplot, so loops do not
leak figures); ``show_figure(fig, path)`` displays it in a notebook and writes the PNG,
``save_figure(fig, path)`` only writes it.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from fsl_core.runtime import atomic_write_bytes

FUSION_PREFIXES = ("w_", "gamma", "scale")


def image_array(image: Tensor | np.ndarray) -> np.ndarray:
    """An image as an (H, W, 3) float array in [0, 1].

    Accepts a normalised (3, H, W) tensor (ImageNet statistics are undone), an (H, W, 3) array in [0, 1] or
    uint8 [0, 255].
    """
    if isinstance(image, Tensor):
        if image.dim() == 3 and image.shape[0] == 3:
            from fsl_core.data.transforms import denormalize

            return denormalize(image.detach().float().cpu()).permute(1, 2, 0).numpy()
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an image (3, H, W) tensor or (H, W, 3) array; got shape {array.shape}")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def wrap_label(name: str, width: int = 16) -> str:
    """A class name split over lines of about ``width`` characters (underscores read as spaces)."""
    return textwrap.fill(name.replace("_", " "), width=width, break_on_hyphens=False, break_long_words=False)


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The PNG bytes of ``fig``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (atomically) and return the path."""
    return atomic_write_bytes(figure_png(fig, dpi), path)


def show_figure(fig: Figure, path: str | Path | None = None, dpi: int = 110) -> Path | None:
    """Display ``fig`` in the notebook as a PNG and, when ``path`` is given, write that PNG there.

    The PNG is rendered once and shown with ``IPython.display.Image``, so it appears whatever matplotlib
    backend the kernel uses (and headless papermill runs keep it in the executed notebook).
    """
    from IPython.display import Image, display

    png = figure_png(fig, dpi)
    saved = atomic_write_bytes(png, path) if path is not None else None
    display(Image(data=png))
    return saved


def _read_metrics(metrics: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(metrics, pd.DataFrame):
        return metrics
    path = Path(metrics)
    if not path.is_file():
        raise FileNotFoundError(
            f"metrics file {path.absolute()} does not exist; expected a training run's metrics.csv"
        )
    return pd.read_csv(path)


def plot_training_curves(metrics: pd.DataFrame | str | Path, title: str | None = None) -> Figure:
    """Loss, accuracy (train and validation ± 95% CI) and fusion weights against the epoch.

    ``metrics``: a run's ``metrics.csv`` (or its DataFrame) with an ``epoch`` column, loss columns
    (``*loss*``), accuracy columns (``train_acc``, ``val_acc`` with ``val_ci95``) and learned scalars
    (``w_*``, ``gamma``, ``scale``); absent groups are skipped. Accuracies may be fractions or percentages.
    """
    frame = _read_metrics(metrics)
    if frame.empty:
        raise ValueError("the metrics table is empty: the run has not finished an epoch")
    x = "epoch" if "epoch" in frame else frame.columns[0]
    losses = [c for c in frame.columns if "loss" in c]
    accuracies = [c for c in frame.columns if c.endswith("acc") or c.endswith("accuracy")]
    weights = [c for c in frame.columns if c.startswith(FUSION_PREFIXES)]
    panels = [p for p in (("loss", losses), ("accuracy", accuracies), ("learned scalars", weights)) if p[1]]
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.2), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    palette = sns.color_palette("deep")
    for ax, (name, columns) in zip(axes, panels):
        for i, column in enumerate(columns):
            data = frame[[x, column]].dropna()
            if data.empty:
                continue
            sns.lineplot(
                data=data,
                x=x,
                y=column,
                ax=ax,
                label=column,
                color=palette[i % len(palette)],
                marker="o" if len(data) < 30 else None,
                errorbar=None,
            )
            ci_column = column.replace("acc", "ci95") if name == "accuracy" else None
            if ci_column and ci_column in frame and ci_column != column:
                rows = frame[[x, column, ci_column]].dropna()
                colour = palette[i % len(palette)]
                ax.errorbar(rows[x], rows[column], yerr=rows[ci_column], fmt="none", ecolor=colour, capsize=3)
                if len(rows) > 1:
                    ax.fill_between(
                        rows[x],
                        rows[column] - rows[ci_column],
                        rows[column] + rows[ci_column],
                        color=colour,
                        alpha=0.2,
                        linewidth=0,
                    )
        ax.set_title(name)
        ax.set_ylabel("")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_accuracy_bars(
    table: pd.DataFrame,
    x: str = "model",
    mean: str = "mean",
    ci: str = "ci95",
    hue: str | None = None,
    title: str | None = None,
    chance: float | None = None,
    ylabel: str = "accuracy (%)",
) -> Figure:
    """Bars of mean accuracy with ±95% CI whiskers, one per row of ``table`` (grouped by ``hue``).

    ``table`` holds one row per bar with columns ``x``, ``mean``, ``ci`` (same unit, e.g. percent) and
    optionally ``hue`` (e.g. "shot"). ``chance`` draws a dashed line at chance level.
    """
    missing = [c for c in (x, mean, ci, *([hue] if hue else [])) if c not in table]
    if missing:
        raise ValueError(f"accuracy table lacks column(s) {missing}; it has {list(table.columns)}")
    categories = list(dict.fromkeys(table[x].astype(str)))
    groups = list(dict.fromkeys(table[hue])) if hue else [None]
    palette = sns.color_palette("deep", len(groups))
    width = 0.8 / len(groups)
    fig = Figure(
        figsize=(max(4.0, 0.9 * len(categories) * max(1, len(groups)) ** 0.5 + 1.5), 3.6),
        layout="constrained",
    )
    ax = fig.subplots()
    top = float((table[mean] + table[ci]).max())
    for g, group in enumerate(groups):
        rows = table if group is None else table[table[hue] == group]
        position = {name: i for i, name in enumerate(categories)}
        xs = np.array([position[str(v)] for v in rows[x]]) + (g - (len(groups) - 1) / 2) * width
        label = None if group is None else f"{group}-{hue}" if hue == "shot" else f"{hue} {group}"
        ax.bar(xs, rows[mean], width=width * 0.92, color=palette[g], label=label)
        ax.errorbar(xs, rows[mean], yerr=rows[ci], fmt="none", ecolor="black", capsize=3, linewidth=1)
        for xi, value, err in zip(xs, rows[mean], rows[ci]):
            ax.text(xi, value + err + 0.01 * top, f"{value:.1f}", ha="center", va="bottom", fontsize=7)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(
        categories,
        rotation=20 if len(categories) > 4 else 0,
        ha="right" if len(categories) > 4 else "center",
        fontsize=8,
    )
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    if hue or chance is not None:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_ylim(0, top * 1.08)
    sns.despine(ax=ax)
    if title:
        ax.set_title(title)
    return fig


def plot_accuracy_histogram(
    accuracies: Mapping[str, Sequence[float] | np.ndarray], title: str | None = None, bins: int = 20
) -> Figure:
    """Distribution of per-episode accuracy, one colour per entry of ``accuracies`` (e.g. "1-shot")."""
    frame = pd.concat(
        [pd.DataFrame({"accuracy": np.asarray(v, dtype=float), "setting": k}) for k, v in accuracies.items()],
        ignore_index=True,
    )
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.subplots()
    sns.histplot(
        data=frame,
        x="accuracy",
        hue="setting",
        bins=bins,
        stat="percent",
        common_norm=False,
        element="step",
        ax=ax,
    )
    for i, (_, values) in enumerate(accuracies.items()):
        ax.axvline(float(np.mean(values)), color=sns.color_palette("deep")[i], linestyle="--", linewidth=1)
    ax.set_ylabel("episodes (%)")
    if title:
        ax.set_title(title)
    return fig


def set_theme() -> None:
    """The notebooks' seaborn theme."""
    sns.set_theme(context="notebook", style="whitegrid", palette="deep", font_scale=0.85)


__all__ = [
    "image_array",
    "wrap_label",
    "figure_png",
    "save_figure",
    "show_figure",
    "plot_training_curves",
    "plot_accuracy_bars",
    "plot_accuracy_histogram",
    "plot_scalars",
    "set_theme",
]


def plot_scalars(values: Mapping[str, float], title: str, ylabel: str = "value") -> Figure:
    """Bars of a few named scalars (e.g. HMDRN's learned fusion weights)."""
    fig = Figure(figsize=(3.5, 2.6), layout="constrained")
    ax = fig.subplots()
    sns.barplot(x=list(values), y=list(values.values()), ax=ax, hue=list(values), legend=False)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return fig
