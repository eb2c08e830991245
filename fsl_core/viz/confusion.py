"""Which classes a few-shot model mixes up: a confusion matrix over the data set's classes, accumulated over
episodes (each episode's predictions mapped back from episode positions 0..way-1 to data set labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn

from fsl_core.data import EpisodeSampler, FewShotFolder, load_metadata
from fsl_core.progress import tqdm
from fsl_core.runtime import evaluation_mode, resolve_device

from .plots import MIN_FONT_SIZE, readable, wrap_label


@torch.inference_mode()
def episode_confusion(
    model: nn.Module,
    dataset: FewShotFolder,
    way: int = 5,
    shot: int = 1,
    query: int = 16,
    episodes: int = 1000,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> np.ndarray:
    """Confusion counts (classes, classes) over ``episodes`` episodes (rows: true class, columns: predicted).

    The episodes are those of ``EpisodeSampler(dataset, way, shot, query, episodes, seed)`` — the same as
    ``fsl_core.engine.evaluate`` with that seed; images are embedded once and each episode runs ``model.head``.
    """
    from fsl_core.engine.evaluate import check_episodes_fit, embed_images

    check_episodes_fit(dataset, way, shot, query, what="confusion")
    device = resolve_device(device)
    sampler = EpisodeSampler(dataset, way, shot, query, episodes, seed=seed)
    indices = torch.tensor([list(i) for i in sampler], dtype=torch.long)
    used = torch.unique(indices)
    rows = torch.full((len(dataset),), -1, dtype=torch.long)
    rows[used] = torch.arange(len(used))
    targets = torch.tensor(dataset.targets, dtype=torch.long)
    n_support = way * shot
    support_labels = torch.arange(way, device=device).repeat_interleave(shot)
    matrix = np.zeros((len(dataset.classes), len(dataset.classes)), dtype=np.int64)
    with evaluation_mode(model, device):
        support_cache = embed_images(model, dataset, used.tolist(), False, device, progress=progress)
        query_cache = (
            embed_images(model, dataset, used.tolist(), True, device, progress=progress)
            if getattr(model, "query_embedding_differs", True)
            else support_cache
        )
        for episode in tqdm(indices, desc="confusion", leave=False, disable=not progress):
            local = rows[episode].to(device)
            support = {k: v.index_select(0, local[:n_support]) for k, v in support_cache.items()}
            queries = {k: v.index_select(0, local[n_support:]) for k, v in query_cache.items()}
            predicted = model.head(support, support_labels, queries, way).argmax(-1).cpu()
            class_ids = targets[episode[:n_support:shot]]
            true = targets[episode[n_support:]]
            np.add.at(matrix, (true.numpy(), class_ids[predicted].numpy()), 1)
    return matrix


def _confusions(matrix: np.ndarray) -> list[tuple[int, int, float]]:
    """(true, predicted, error rate) of every confused pair, highest rate first: the rate is the share of the true
    class's queries predicted as the other class (a fraction; its counts divided by its row's)."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    np.fill_diagonal(rates, 0)
    order = np.argsort(rates, axis=None, kind="stable")[::-1]
    pairs = (np.unravel_index(flat, rates.shape) for flat in order)
    return [(int(i), int(j), float(rates[i, j])) for i, j in pairs if rates[i, j] > 0]


def most_confused(matrix: np.ndarray, k: int = 8) -> list[int]:
    """Indices of up to ``k`` classes, sorted: those of the pairs ``confused_pairs`` lists, in its order (the
    highest error rate first), so the figure shows the pairs the table names; the first ``k`` classes when
    nothing is confused."""
    chosen: list[int] = []
    for true, predicted, _ in _confusions(matrix):
        for c in (true, predicted):
            if c not in chosen and len(chosen) < k:
                chosen.append(c)
        if len(chosen) >= k:
            break
    return sorted(chosen) if chosen else list(range(min(k, len(np.asarray(matrix)))))


def confused_pairs(
    matrix: np.ndarray, class_names: Sequence[str], top: int = 10, group_of: dict[str, str] | None = None
) -> list[dict]:
    """The ``top`` (true, predicted) pairs with the highest error rate: {"true", "predicted", "rate" (the share of
    the true class's queries predicted as that class, in percent), "count"}, pairs never confused left out. With
    ``group_of`` ({class name: group name}, ``class_groups``) each pair also says whether both classes belong to
    the same group ("same group"; a class without a group shares it with none)."""
    counts = np.asarray(matrix)
    pairs = [
        {
            "true": class_names[i],
            "predicted": class_names[j],
            "rate": 100.0 * rate,
            "count": int(counts[i, j]),
        }
        for i, j, rate in _confusions(matrix)[:top]
    ]
    if group_of is not None:
        for pair in pairs:
            pair["same group"] = same_group(group_of, pair["true"], pair["predicted"])
    return pairs


def class_groups(root: str | Path) -> dict[str, str] | None:
    """{class name: group name} from the ``metadata.json`` of data set ``root`` (the generated birds set
    has one), or None when the data set names no groups (no metadata.json, or no class with a group)."""
    if not (Path(root) / "metadata.json").is_file():
        return None
    classes = load_metadata(root).get("classes", {})
    groups = {
        name: info["group_name"]
        for name, info in classes.items()
        if isinstance(info, dict) and isinstance(info.get("group_name"), str)
    }
    return groups or None


def within_group_error_share(
    matrix: np.ndarray, class_names: Sequence[str], group_of: dict[str, str]
) -> float:
    """Share of the errors of a confusion matrix (C, C) made with a class of the true class's own group, in percent.

    ``group_of``: {class name: group name}; a class without a group shares it with none (``same_group``).
    """
    errors = matrix.astype(float).copy()
    np.fill_diagonal(errors, 0)
    same = np.array([[same_group(group_of, a, b) for b in class_names] for a in class_names], dtype=bool)
    return 100.0 * float(errors[same].sum() / max(errors.sum(), 1))


def same_group(group_of: dict[str, str], a: str, b: str) -> bool:
    """Whether classes ``a`` and ``b`` belong to one group of ``group_of`` ({class name: group name}); a class
    without a group shares it with none."""
    group = group_of.get(a)
    return group is not None and group == group_of.get(b)


def plot_confusion(
    matrix: np.ndarray,
    class_names: Sequence[str],
    classes: Sequence[int] | None = None,
    normalize: bool = True,
    title: str | None = None,
) -> Figure:
    """Heat map of a (classes, classes) confusion matrix (rows: true class, columns: predicted class).

    With ``normalize`` each row is divided by the true class's total number of queries (over all columns),
    so a cell is the percentage of that class's queries predicted as the column's class; otherwise cells are
    query counts. ``classes`` restricts the picture to those class indices (e.g. ``most_confused(matrix)``).
    Rows are numbered and named; columns carry the rows' numbers, so that no name has to be turned.
    """
    values = np.asarray(matrix, dtype=float)
    if normalize:
        values = 100.0 * values / np.clip(values.sum(axis=1, keepdims=True), 1e-12, None)
    if classes is not None:
        chosen = list(classes)
        values = values[np.ix_(chosen, chosen)]
        class_names = [class_names[c] for c in chosen]
    count = len(class_names)
    cell = 0.5 if count <= 10 else 0.3  # rows of two lines of names, or of one when there are many
    width = 26 if count <= 10 else 80
    names = [
        f"{i + 1}. {wrap_label(name, width)}".replace("\n", "\n    ") for i, name in enumerate(class_names)
    ]
    fig = Figure(figsize=(cell * count + 3.8, cell * count + 1.2), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        values,
        annot=count <= 12,
        fmt=".0f",
        cmap="rocket_r",
        xticklabels=[str(i + 1) for i in range(count)],
        yticklabels=names,
        ax=ax,
        annot_kws={"fontsize": MIN_FONT_SIZE},
        cbar_kws={"shrink": 0.8, "label": "% of the true class's queries" if normalize else "queries"},
        square=True,
    )
    ax.set_xlabel("predicted class (numbered as the rows)")
    ax.set_ylabel("true class")
    ax.tick_params(axis="x", labelrotation=0)
    ax.tick_params(axis="y", labelrotation=0)
    if title:
        ax.set_title(title)
    return readable(fig)


__all__ = [
    "episode_confusion",
    "most_confused",
    "confused_pairs",
    "class_groups",
    "within_group_error_share",
    "plot_confusion",
]
