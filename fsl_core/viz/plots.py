"""Seaborn figures of runs and evaluations: training curves, accuracy bars with 95% confidence intervals,
per-episode accuracy histograms; showing and saving figures as PNG; and what keeps every figure of
``fsl_core.viz`` readable.

Every plotting function returns a ``matplotlib.figure.Figure`` (not registered with pyplot, so loops do not
leak figures); ``show_figure(fig, path)`` displays it in a notebook and writes the PNG,
``save_figure(fig, path)`` only writes it.

Readable at the size JupyterLab shows them: figures are at most ``MAX_FIGURE_WIDTH`` inches wide (at
``FIGURE_DPI`` JupyterLab shows them at full size in an ordinary window), no text is smaller than
``MIN_FONT_SIZE`` points (``readable``), legends stand outside the data (``legend_outside``), axes name their
units, tick labels are horizontal (long names wrap, ``wrap_label``), right and wrong carry a mark as well as a
colour-blind-safe colour (``RIGHT_COLOUR``, ``WRONG_COLOUR``), and a quantity that takes a single value is said
in a sentence rather than plotted (``say_instead``).
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from fsl_core.runtime import atomic_write_bytes

FUSION_PREFIXES = ("w_", "gamma", "scale")
MIN_FONT_SIZE = 9.0
"""The smallest text of any figure, in points (tick labels, legends, titles, labels, annotations)."""
IMAGE_TEXT_SIZE = 10.0
"""Points of the names over, under and beside images in grids of images (wrapped to the image's width)."""
FIGURE_DPI = 110
"""Pixels per inch of the PNGs that ``show_figure`` and ``save_figure`` write."""
MAX_FIGURE_WIDTH = 9.0
"""The widest figure, in inches, legends included (990 pixels at ``FIGURE_DPI``): JupyterLab shows it unscaled in
an ordinary window, so its text keeps its size."""
RIGHT_COLOUR = "#0072B2"
"""Right predictions: the blue of the Okabe–Ito palette (told apart from ``WRONG_COLOUR`` by colour-blind eyes)."""
WRONG_COLOUR = "#D55E00"
"""Wrong predictions: the vermillion of the Okabe–Ito palette."""
RIGHT_MARK, WRONG_MARK = "✓", "✗"
"""The marks that say right and wrong as well as the colours."""


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


def title_number(value: float, signed: bool = False) -> str:
    """``value`` for a panel title: whole numbers with thousands separators from 100 on (no powers of ten),
    else 3 significant digits."""
    sign = "+" if signed else ""
    return f"{value:{sign},.0f}" if abs(value) >= 100 else f"{value:{sign}.3g}"


def display_name(name: str) -> str:
    """A class name as the figures show it: underscores read as spaces (``g00_finch_s01`` → ``g00 finch s01``)."""
    return name.replace("_", " ")


def wrap_label(name: str, width: int = 16) -> str:
    """A class name split over lines of about ``width`` characters: at spaces (underscores read as spaces) and
    after ``+`` or ``-`` inside a word (``crown-red+wingbar-white``); a longer piece keeps its own line."""
    lines: list[str] = []
    line = ""
    for word in display_name(name).split():
        for i, piece in enumerate(re.findall(r".+?(?:[+\-]|$)", word)):
            joined = line + ("" if i or not line else " ") + piece
            if line and len(joined) > width:
                lines.append(line)
                line = piece
            else:
                line = joined
    return "\n".join([*lines, line]) if line else "\n".join(lines)


def label_width(inches: float, size: float = IMAGE_TEXT_SIZE) -> int:
    """About how many characters of text of ``size`` points fit in ``inches`` (at least 6)."""
    return max(6, int(inches * 72 / (0.58 * size)))


def readable(fig: Figure) -> Figure:
    """Raise every text of ``fig`` smaller than ``MIN_FONT_SIZE`` to it (tick labels through the axes' tick
    settings, so that ticks made later follow) and return ``fig``."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            if ticks and min(t.label1.get_fontsize() for t in ticks) < MIN_FONT_SIZE:
                axis.set_tick_params(which="both", labelsize=MIN_FONT_SIZE)
    for text in fig.findobj(Text):
        if text.get_fontsize() < MIN_FONT_SIZE:
            text.set_fontsize(MIN_FONT_SIZE)
    return fig


def legend_outside(ax: Axes, title: str | None = None, **options: object) -> Legend | None:
    """Put the legend of ``ax`` (seaborn's or matplotlib's) right of its data area, unframed; None when the axes
    has nothing to name."""
    placement = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    if ax.get_legend() is not None:
        sns.move_legend(ax, **placement, **({"title": title} if title is not None else {}), **options)
        return ax.get_legend()
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return ax.legend(handles, labels, title=title, **placement, **options)


def say_instead(ax: Axes, sentence: str, title: str | None = None) -> None:
    """Fill ``ax`` with ``sentence`` instead of a plot (for a quantity with a single value, say)."""
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        textwrap.fill(sentence, label_width(ax.get_position().width * ax.figure.get_figwidth() * 0.9)),
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=MIN_FONT_SIZE + 1,
    )
    if title:
        ax.set_title(title)


def figure_png(fig: Figure, dpi: int = FIGURE_DPI) -> bytes:
    """The PNG bytes of ``fig``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = FIGURE_DPI) -> Path:
    """Write ``fig`` as a PNG (atomically) and return the path."""
    return atomic_write_bytes(figure_png(fig, dpi), path)


def show_figure(fig: Figure, path: str | Path | None = None, dpi: int = FIGURE_DPI) -> Path | None:
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


CURVE_LABELS = {
    "loss": "training episodes",
    "train_acc": "training episodes",
    "val_acc": "validation ± 95% CI",
}
"""Legend names of the usual ``metrics.csv`` columns (others keep their column name)."""


def learned_scalars(frame: pd.DataFrame) -> list[str]:
    """The learned-scalar columns (``w_*``, ``gamma``, ``scale``) of a metrics table whose value changed during
    training: a scalar that kept one value (a fixed ProtoNet scale, fixed fusion weights, or a single epoch)
    has nothing to show."""
    return [c for c in frame.columns if c.startswith(FUSION_PREFIXES) and frame[c].dropna().nunique() > 1]


def plot_training_curves(metrics: pd.DataFrame | str | Path, title: str | None = None) -> Figure:
    """Loss, accuracy (%: training, and validation ± 95% CI) and the learned scalars against the epoch, one
    panel above the other.

    ``metrics``: a run's ``metrics.csv`` (or its DataFrame) with an ``epoch`` column, loss columns
    (``*loss*``), accuracy columns (``train_acc``, ``val_acc`` with ``val_ci95``) and learned scalars
    (``w_*``, ``gamma``, ``scale``). Absent groups have no panel, nor have learned scalars that never changed
    (``learned_scalars``). Accuracies given as fractions (every value at most 1) are shown in %.
    """
    frame = _read_metrics(metrics).copy()
    if frame.empty:
        raise ValueError("the metrics table is empty: the run has not finished an epoch")
    x = "epoch" if "epoch" in frame else frame.columns[0]
    losses = [c for c in frame.columns if "loss" in c]
    accuracies = [c for c in frame.columns if c.endswith("acc") or c.endswith("accuracy")]
    intervals = {c: c.replace("acc", "ci95") for c in accuracies if c.replace("acc", "ci95") in frame}
    values = frame[accuracies].to_numpy(dtype=float)
    if accuracies and np.nanmax(np.abs(values), initial=0.0) <= 1.0:  # fractions: show them in %
        for column in [*accuracies, *intervals.values()]:
            frame[column] = frame[column] * 100.0
    panels = [
        (label, columns)
        for label, columns in (
            ("loss", losses),
            ("accuracy (%)", accuracies),
            ("learned scalar", learned_scalars(frame)),
        )
        if columns
    ]
    rows = max(len(panels), 1)
    fig = Figure(figsize=(7.0, 2.0 * rows + (0.4 if title else 0.0)), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False, sharex=True)[:, 0]
    palette = sns.color_palette("deep")
    for ax, (name, columns) in zip(axes, panels):
        for i, column in enumerate(columns):
            data = frame[[x, column]].dropna()
            if data.empty:
                continue
            colour = palette[i % len(palette)]
            ax.plot(
                data[x],
                data[column],
                color=colour,
                marker="o" if len(data) < 30 else None,
                label=CURVE_LABELS.get(column, column),
            )
            if column in intervals:
                band = frame[[x, column, intervals[column]]].dropna()
                ax.errorbar(
                    band[x], band[column], yerr=band[intervals[column]], fmt="none", ecolor=colour, capsize=3
                )
                if len(band) > 1:
                    ax.fill_between(
                        band[x],
                        band[column] - band[intervals[column]],
                        band[column] + band[intervals[column]],
                        color=colour,
                        alpha=0.2,
                        linewidth=0,
                    )
        ax.set_ylabel(name)
        if len(ax.lines) > 1 or name != "loss":
            legend_outside(ax)
    epochs = sorted(frame[x].dropna().unique())
    if len(epochs) <= 12:  # every epoch a tick (one epoch too: no fractional ticks around it)
        axes[-1].set_xticks(epochs)
        axes[-1].set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    else:
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    return readable(fig)


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
    optionally ``hue`` (e.g. "shot"). ``chance`` draws a dashed line at chance level. Each bar is labelled
    with its value; the names under the bars wrap, the legend stands right of the bars.
    """
    missing = [c for c in (x, mean, ci, *([hue] if hue else [])) if c not in table]
    if missing:
        raise ValueError(f"accuracy table lacks column(s) {missing}; it has {list(table.columns)}")
    categories = list(dict.fromkeys(table[x].astype(str)))
    groups = list(dict.fromkeys(table[hue])) if hue else [None]
    palette = sns.color_palette("deep", len(groups))
    width = 0.8 / len(groups)
    has_legend = bool(hue) or chance is not None
    plot_width = min(
        MAX_FIGURE_WIDTH - (1.6 if has_legend else 0.0), 1.2 + 0.75 * len(categories) * len(groups) ** 0.5
    )
    fig = Figure(figsize=(max(3.5, plot_width) + (1.6 if has_legend else 0.0), 3.6), layout="constrained")
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
            ax.text(
                xi, value + err + 0.01 * top, f"{value:.1f}", ha="center", va="bottom", fontsize=MIN_FONT_SIZE
            )
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:g} %)")
    characters = label_width((plot_width - 1.0) / max(len(categories), 1))
    ax.set_xticks(range(len(categories)), [wrap_label(c, characters) for c in categories])
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    if has_legend:
        legend_outside(ax)
    ax.set_ylim(0, top * 1.14)
    sns.despine(ax=ax)
    if title:
        ax.set_title(title)
    return readable(fig)


def plot_accuracy_histogram(
    accuracies: Mapping[str, Sequence[float] | np.ndarray], title: str | None = None, bins: int = 20
) -> Figure:
    """Distribution of per-episode accuracy (%), one colour per entry of ``accuracies`` (e.g. "1-shot"), with
    each entry's mean as a dashed line."""
    frame = pd.concat(
        [pd.DataFrame({"accuracy": np.asarray(v, dtype=float), "setting": k}) for k, v in accuracies.items()],
        ignore_index=True,
    )
    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
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
    ax.set_xlabel("accuracy of an episode (%); dashed: the mean")
    ax.set_ylabel("episodes (%)")
    legend_outside(ax, title="")
    if title:
        ax.set_title(title)
    return readable(fig)


def plot_scalars(values: Mapping[str, float], title: str, ylabel: str = "value") -> Figure:
    """Bars of a few named scalars (e.g. HMDRN's learned fusion weights), each labelled with its value."""
    fig = Figure(figsize=(max(3.5, 1.0 + 0.9 * len(values)), 2.8), layout="constrained")
    ax = fig.subplots()
    sns.barplot(x=list(values), y=list(values.values()), ax=ax, hue=list(values), legend=False)
    for i, value in enumerate(values.values()):
        ax.text(
            i,
            value,
            f"{value:.3g}",
            ha="center",
            va="bottom" if value >= 0 else "top",
            fontsize=MIN_FONT_SIZE,
        )
    ax.margins(y=0.15)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return readable(fig)


def set_theme() -> None:
    """The notebooks' seaborn theme (its smallest text, the tick labels, is above ``MIN_FONT_SIZE``)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="deep", font_scale=0.85)


__all__ = [
    "MIN_FONT_SIZE",
    "IMAGE_TEXT_SIZE",
    "FIGURE_DPI",
    "MAX_FIGURE_WIDTH",
    "RIGHT_COLOUR",
    "WRONG_COLOUR",
    "RIGHT_MARK",
    "WRONG_MARK",
    "image_array",
    "wrap_label",
    "label_width",
    "readable",
    "legend_outside",
    "say_instead",
    "figure_png",
    "save_figure",
    "show_figure",
    "learned_scalars",
    "plot_training_curves",
    "plot_accuracy_bars",
    "plot_accuracy_histogram",
    "plot_scalars",
    "set_theme",
]
