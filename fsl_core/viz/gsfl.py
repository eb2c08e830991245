"""Figures of the GSFL analysis (Li & Monga, "Group based Deep Shared Feature Learning for Fine-grained Image
Classification", BMVC 2019, arXiv:2004.01817): recovered groups, linear probes, and the shared (s) and
discriminative (d) features in two dimensions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from ..models.gsfl import FEATURE_NAMES
from .plots import MAX_FIGURE_WIDTH, legend_outside, readable, say_instead, wrap_label


def plot_ari_per_k(table: pd.DataFrame, true_groups: int) -> Figure:
    """Adjusted Rand index of the K-means groups against the ``true_groups`` true ones, one bar per K.

    ``table``: columns "K" and "ARI".
    """
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.subplots()
    sns.barplot(data=table, x="K", y="ARI", color=sns.color_palette()[0], ax=ax)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylim(min(-0.1, float(table["ARI"].min()) - 0.05), 1.0)
    ax.set_xlabel("K (groups K-means forms)")
    ax.set_ylabel("adjusted Rand index\n(1: the true groups)")
    ax.set_title(f"K-means groups vs the {true_groups} true groups")
    return readable(fig)


def plot_probes(probes: Mapping[str, float], classes: int, groups: int) -> Figure:
    """Held-out accuracy (%) of each linear probe ``{"<feature>_to_<target>": accuracy}``, with chance levels."""
    table = pd.DataFrame(
        [
            {
                "feature": FEATURE_NAMES[key.split("_to_")[0]],
                "target": key.split("_to_")[1],
                "accuracy": value,
            }
            for key, value in probes.items()
        ]
    )
    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.subplots()
    sns.barplot(data=table, x="feature", y="accuracy", hue="target", ax=ax)
    ax.axhline(100.0 / classes, color="grey", linestyle="--", linewidth=1, label="class chance")
    ax.axhline(100.0 / groups, color="grey", linestyle=":", linewidth=1, label="group chance")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, title="probe predicts")
    legend_outside(ax)
    ax.set_xlabel("feature")
    ax.set_ylabel("held-out probe accuracy (%)")
    ax.set_title("linear probes")
    return readable(fig)


def plot_feature_pca(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    group_of: np.ndarray,
    group_names: Mapping[int, str],
    class_names: Sequence[str],
    shown_classes: int = 10,
    seed: int = 0,
) -> Figure:
    """The s and d features of images (N, D each) on their first two principal components.

    Top row coloured by true group (``group_of``: the group of each class), bottom row by class (the first
    ``shown_classes`` classes): s should cluster by group, d by class. The classes take colours of their own
    (evenly spaced hues), none of the groups', so a class is not read as the group of the same colour. The
    legends stand right of the panels. A feature with the same value for every image (a shared encoder that
    gives no output: s = 0), or nearly so, gets a sentence instead of its panels.
    """
    shown = np.isin(labels, np.unique(labels)[:shown_classes])
    class_colours = sns.husl_palette(len(np.unique(labels[shown])), l=0.55)
    fig = Figure(figsize=(MAX_FIGURE_WIDTH, 8.0), layout="constrained")
    axes = fig.subplots(2, 2)

    def varies(values: np.ndarray) -> bool:  # beyond float rounding: a spread above 1e-4 of its size
        return float(values.std(0).sum()) > 1e-4 * float(np.abs(values).mean(0).sum())

    plotted = [feature for feature in ("s", "d") if varies(features[feature])]
    for column, feature in enumerate(("s", "d")):
        values = features[feature]
        if feature not in plotted:  # one point: say so instead of plotting it
            same = (
                "0"
                if not np.any(values)
                else "one value"
                if not values.std(0).any()
                else "almost one value (its spread is under 0.01 % of its size)"
            )
            for row, title in ((0, f"{feature}: coloured by true group"), (1, f"{feature}: by class")):
                say_instead(
                    axes[row, column], f"{feature} is {same} for every image: nothing to project", title
                )
            continue
        points = PCA(n_components=2, random_state=seed).fit_transform(values)
        frame = pd.DataFrame(
            {
                "PC1": points[:, 0],
                "PC2": points[:, 1],
                "group": [f"{g} {group_names[g]}" for g in group_of[labels]],
                "class": [wrap_label(class_names[c], 28) for c in labels],
            }
        )
        sns.scatterplot(
            data=frame, x="PC1", y="PC2", hue="group", s=14, ax=axes[0, column], legend=feature == plotted[-1]
        )
        axes[0, column].set_title(f"{feature}: coloured by true group")
        sns.scatterplot(
            data=frame[shown],
            x="PC1",
            y="PC2",
            hue="class",
            palette=class_colours,
            marker="D",
            s=14,
            ax=axes[1, column],
            legend=feature == plotted[-1],
        )
        axes[1, column].set_title(f"{feature}: by class (first {shown_classes})")
    for ax in axes[:, 1 if plotted[-1:] == ["d"] else 0]:  # the legends beside the last panel plotted
        legend_outside(ax)
    return readable(fig)
