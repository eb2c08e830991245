"""Class groups for GSFL-Net (Li & Monga, BMVC 2019, arXiv 2004.01817).

Before training, GSFL divides the base classes into K groups by K-means over their class-mean features from a
pretrained (or briefly trained) backbone. This module computes per-image features of a data set, the class
means, the K-means assignment (scikit-learn, fixed seed and ``n_init`` restarts, group ids canonically
ordered) and the adjusted Rand index against known groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..runtime import resolve_device
from ..statistics import wilson_interval
from .gsfl import FEATURE_NAMES


@torch.no_grad()
def dataset_features(
    fn: Callable[[Tensor], Tensor | dict[str, Tensor]],
    dataset: Dataset,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    num_workers: int = 0,
) -> tuple[dict[str, Tensor], Tensor]:
    """Apply ``fn`` to every image of ``dataset`` (items (image (3, H, W), label)) in order.

    ``fn`` maps images (B, 3, H, W) to a tensor (B, D) or a dict of them. Returns ({name: (N, D)} on the CPU,
    labels (N,)); a plain tensor comes back under the name "feature". Modules found in ``fn`` are not switched
    to eval mode: do it before calling.
    """
    device = resolve_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    parts: dict[str, list[Tensor]] = {}
    labels: list[Tensor] = []
    for images, targets in loader:
        out = fn(images.to(device))
        out = out if isinstance(out, dict) else {"feature": out}
        for key, value in out.items():
            parts.setdefault(key, []).append(value.detach().float().cpu())
        labels.append(torch.as_tensor(targets).long())
    if not labels:
        raise ValueError("dataset_features: the data set is empty")
    return {key: torch.cat(value) for key, value in parts.items()}, torch.cat(labels)


def pooled_backbone_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """Global average pool of the backbone's last map for every image: ((N, C_high), labels (N,)).

    The backbone is put in eval mode and moved to ``device``.
    """
    device = resolve_device(device)
    backbone = backbone.to(device).eval()
    feats, labels = dataset_features(
        lambda x: backbone(x)[1].mean(dim=(2, 3)), dataset, batch_size, device, num_workers
    )
    return feats["feature"], labels


def class_means(
    features: Tensor | np.ndarray, labels: Tensor | np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Mean feature of each class: features (N, D), labels (N,) in 0..C-1 → (C, D). Every class needs an image."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    c = int(num_classes if num_classes is not None else y.max() + 1)
    counts = np.bincount(y, minlength=c)
    if (counts == 0).any():
        raise ValueError(f"class_means: classes {np.flatnonzero(counts == 0).tolist()} have no image")
    sums = np.zeros((c, x.shape[1]))
    np.add.at(sums, y, x)
    return sums / counts[:, None]


def canonical_labels(assignment: Sequence[int] | np.ndarray) -> np.ndarray:
    """Renumber cluster ids in order of first appearance (so equal partitions give equal ids)."""
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(a), len(order)) for a in assignment], dtype=np.int64)


def kmeans_groups(
    means: Tensor | np.ndarray, k: int, seed: int = 0, n_init: int = 10, normalise: bool = True
) -> np.ndarray:
    """Group the classes by K-means over their mean features.

    means: (C, D) class-mean features; k: number of groups (1 <= k <= C); normalise: L2-normalise each mean
    first (compares directions, as the pooled features of a ReLU backbone differ mostly in scale otherwise).
    Returns group ids (C,) in 0..k-1, numbered in order of first appearance; deterministic for a seed.
    """
    x = np.asarray(means, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"kmeans_groups expects class means (C, D); got shape {x.shape}")
    if not 1 <= int(k) <= x.shape[0]:
        raise ValueError(f"k={k} groups for {x.shape[0]} classes; expected 1 <= k <= number of classes")
    if normalise:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if int(k) == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    km = KMeans(n_clusters=int(k), n_init=int(n_init), random_state=int(seed))
    return canonical_labels(km.fit_predict(x))


def adjusted_rand(groups: Sequence[int] | np.ndarray, true_groups: Sequence[int] | np.ndarray) -> float:
    """Adjusted Rand index between a grouping and the true groups (1 = identical partitions, ~0 = chance)."""
    a, b = np.asarray(groups), np.asarray(true_groups)
    if a.shape != b.shape:
        raise ValueError(f"adjusted_rand: {a.shape[0]} group ids vs {b.shape[0]} true group ids")
    return float(adjusted_rand_score(b, a))


def group_sweep(
    means: Tensor | np.ndarray,
    ks: Sequence[int],
    true_groups: Sequence[int] | None = None,
    seed: int = 0,
    n_init: int = 10,
    normalise: bool = True,
) -> dict[int, dict[str, object]]:
    """K-means for every K of ``ks``: {K: {"groups": list[int], "sizes": list[int], "ari": float | None}}."""
    out: dict[int, dict[str, object]] = {}
    for k in ks:
        groups = kmeans_groups(means, k, seed=seed, n_init=n_init, normalise=normalise)
        out[int(k)] = {
            "groups": groups.tolist(),
            "sizes": np.bincount(groups, minlength=int(k)).tolist(),
            "ari": None if true_groups is None else adjusted_rand(groups, true_groups),
        }
    return out


def sweep_group_counts(counts: Sequence[int], chosen: int, classes: int) -> tuple[list[int], list[int]]:
    """The K values of a K-means sweep over ``classes`` classes: ``counts`` that fit, plus ``chosen`` (sorted),
    and the ``counts`` left out as larger than ``classes``. ``chosen > classes`` raises a ValueError."""
    if chosen > classes:
        raise ValueError(f"groups={chosen} exceeds the {classes} classes to group; choose at most {classes}")
    swept = sorted({int(k) for k in counts if k <= classes} | {int(chosen)})
    return swept, sorted({int(k) for k in counts} - set(swept))


def linear_probe_accuracy(
    fit_x: np.ndarray, fit_y: np.ndarray, held_x: np.ndarray, held_y: np.ndarray, max_iter: int = 1000
) -> float:
    """Held-out accuracy (%) of a standardised logistic regression from features to labels.

    fit_x: (N, D) and fit_y: (N,) train it; held_x: (M, D), held_y: (M,) score it. With a single label in
    ``fit_y`` the probe can only predict that label.
    """
    fit_y, held_y = np.asarray(fit_y), np.asarray(held_y)
    if len(np.unique(fit_y)) < 2:
        return 100.0 * float(np.mean(held_y == fit_y[0]))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(fit_x, fit_y)
    return 100.0 * float(probe.score(held_x, held_y))


def feature_probes(
    fit: dict[str, np.ndarray],
    held: dict[str, np.ndarray],
    fit_labels: np.ndarray,
    held_labels: np.ndarray,
    class_group: np.ndarray,
    pairs: Sequence[tuple[str, str]],
    max_iter: int = 1000,
) -> dict[str, float]:
    """Linear probes ``{"<feature>_to_<target>": held-out accuracy %}`` for each (feature, target) of ``pairs``.

    fit/held: {feature name: (N, D) array}; fit_labels/held_labels: class ids; class_group: (classes,) the
    group of each class; target "class" predicts the class id, "group" the class's group — a feature that
    carries the group (GSFL's shared part s) probes well for "group" and badly for "class".
    """
    targets = {
        "class": (np.asarray(fit_labels), np.asarray(held_labels)),
        "group": (np.asarray(class_group)[fit_labels], np.asarray(class_group)[held_labels]),
    }
    return {
        f"{feature}_to_{target}": linear_probe_accuracy(
            fit[feature], targets[target][0], held[feature], targets[target][1], max_iter
        )
        for feature, target in pairs
    }


__all__ = [
    "adjusted_rand",
    "canonical_labels",
    "class_means",
    "dataset_features",
    "feature_probes",
    "group_sweep",
    "kmeans_groups",
    "linear_probe_accuracy",
    "pooled_backbone_features",
    "sweep_group_counts",
]


def _apart(low_a: float, high_a: float, low_b: float, high_b: float) -> int:
    """+1 when the interval [low_a, high_a] lies above [low_b, high_b], -1 when below, 0 when they overlap."""
    return 1 if low_a > high_b else -1 if high_a < low_b else 0


_RELATION = {1: "above", -1: "below", 0: "not apart from"}


def _compare_probes(probes: dict[str, float], a: str, b: str, n: int) -> tuple[int, str]:
    """Probe accuracy ``a`` against ``b`` (keys of ``feature_probes``) on ``n`` held-out images: +1/-1 when their
    Wilson 95 % intervals are apart (a above / below b), 0 when they overlap; with the evidence in words."""
    (low_a, high_a), (low_b, high_b) = wilson_interval(probes[a], n), wilson_interval(probes[b], n)
    sign = _apart(low_a, high_a, low_b, high_b)
    label = {key: key.replace("_to_", "→") for key in (a, b)}
    return sign, (
        f"{label[a]} {probes[a]:.1f} [{low_a:.1f}, {high_a:.1f}] {_RELATION[sign]} "
        f"{label[b]} {probes[b]:.1f} [{low_b:.1f}, {high_b:.1f}]"
    )


def _compare_episodes(name_a: str, a: Any, name_b: str, b: Any) -> tuple[int, str]:
    """Two ``EvalResult`` of one shot: on the same episodes (same seed, count, way and query) the paired
    difference of their per-episode accuracies, mean ± 1.96·std/√n, decides; otherwise whether their own
    95 % intervals are apart. → (+1 / -1 / 0, the evidence in words)."""
    same = (a.seed, a.episodes, a.way, a.query) == (b.seed, b.episodes, b.way, b.query)
    shown = f"{name_a} {a.mean:.1f} ± {a.ci95:.1f} %, {name_b} {b.mean:.1f} ± {b.ci95:.1f} %"
    if same and len(a.accuracies) == len(b.accuracies) == a.episodes:
        difference = np.asarray(a.accuracies, dtype=np.float64) - np.asarray(b.accuracies, dtype=np.float64)
        mean, half = float(difference.mean()), 1.96 * float(difference.std()) / np.sqrt(len(difference))
        sign = _apart(mean - half, mean + half, 0.0, 0.0)
        digits = 1 if half >= 0.05 else 2  # an interval under 0.05 points still shows as a number, not 0.0
        mean = 0.0 if round(mean, digits) == 0 else mean  # no "-0.0"
        return (
            sign,
            f"{shown}: difference {mean:+.{digits}f} ± {half:.{digits}f} points over the same {a.episodes} episodes",
        )
    sign = _apart(a.mean - a.ci95, a.mean + a.ci95, b.mean - b.ci95, b.mean + b.ci95)
    return sign, f"{shown}: intervals {'apart' if sign else 'overlapping'}"


def gsfl_answers(
    ari: dict[int, float],
    true_groups: int,
    probes: dict[str, float],
    held_images: int,
    few_shot: dict[str, dict[int, Any]],
    plugin: dict[str, dict[int, Any]],
    shared: np.ndarray | None = None,
) -> list[dict[str, str]]:
    """What a GSFL run's numbers say about the claims of GSFL-Net (Li & Monga, "Group based Shared Feature
    Learning for Fine-grained Image Classification", BMVC 2019), one row per question: ``question``,
    ``answer`` and ``evidence`` (the numbers).

    Answers: "yes"; "no" (the opposite holds, significantly); "not shown" (the difference is within the
    noise, or question 1's true K was not tried); for question 1 also "partly" (ARI from 0.3 to 0.8); for
    questions 2 and 3a "not answerable" when ``shared`` is 0 everywhere (3a: and s+d scored as d on every test
    episode): a shared encoder whose ReLU gives no output carries nothing, and s+d is d, so nothing can be read
    about s.
    Probes (held-out accuracy on ``held_images`` images) compare by their Wilson 95 % intervals; few-shot
    results on the same episodes by the 95 % interval of their paired per-episode difference.

    Args:
        ari: {K: adjusted Rand index of K-means groups against the true ones}; ``true_groups``: the true K.
        probes: ``feature_probes`` accuracies (%) with keys s_to_group, d_to_group, s_to_class, d_to_class.
        few_shot: {"d" | "sd" | "raw": {shot: EvalResult}} on novel classes.
        plugin: {"hmdrn" | "hmdrn_gsfl": {shot: EvalResult}}.
        shared: (N, dim) the shared part s of the held-out images (``model.decompose``), to tell a dead encoder.
    """

    def verdict(signs: set[int]) -> str:  # one sign per shot (or per probe pair)
        if {1, -1} <= signs:
            return "mixed"  # shown one way somewhere and the other way elsewhere: the evidence says where
        return "yes" if signs == {1} else "no" if -1 in signs else "not shown"

    rows = []
    if true_groups in ari:
        score = ari[true_groups]
        answer = "yes" if score >= 0.8 else "partly" if score >= 0.3 else "no"
        evidence = f"ARI {score:.2f} at the true K={true_groups} (1: the true groups, 0: chance; yes from 0.8, partly from 0.3)"
    else:
        answer, evidence = (
            "not shown",
            f"the true K, {true_groups}, was not among those tried ({sorted(ari)})",
        )
    rows.append({"question": "1. K-means recovers the true groups", "answer": answer, "evidence": evidence})

    dead = shared is not None and not np.any(shared)
    dead_words = (
        f"s is 0 for every one of the {len(shared) if shared is not None else 0} held-out images (the shared "
        "encoder's ReLU gives no output, as when the group patterns it is pulled to are still near 0): s carries "
        "nothing and s+d is d; train GSFL longer (stage1_epochs, stage2_epochs)"
    )
    group_sign, group_words = _compare_probes(probes, "s_to_group", "d_to_group", held_images)
    class_sign, class_words = _compare_probes(probes, "d_to_class", "s_to_class", held_images)
    rows.append(
        {
            "question": "2. s carries the group and d the class",
            "answer": "not answerable" if dead else verdict({group_sign, class_sign}),
            "evidence": dead_words
            if dead
            else f"{group_words}; {class_words} (held-out accuracy %, {held_images} images, Wilson 95 % intervals)",
        }
    )

    names = {**FEATURE_NAMES, "hmdrn": "HMDRN", "hmdrn_gsfl": "HMDRN + GSFL"}
    for question, results, a, b in (
        ("3a. dropping s raises few-shot accuracy (d against s+d)", few_shot, "d", "sd"),
        ("3b. d beats the raw backbone feature in few-shot episodes", few_shot, "d", "raw"),
        ("4. the plug-in helps HMDRN", plugin, "hmdrn_gsfl", "hmdrn"),
    ):
        same = b == "sd" and all(  # s+d gave d's answers on every test episode: s is 0 there too
            np.array_equal(results["d"][shot].accuracies, results["sd"][shot].accuracies)
            for shot in results["d"]
        )
        if dead and same:
            rows.append({"question": question, "answer": "not answerable", "evidence": dead_words})
            continue
        signs, words = set(), []
        for shot in results[a]:
            sign, text = _compare_episodes(names[a], results[a][shot], names[b], results[b][shot])
            signs.add(sign)
            words.append(f"{shot}-shot: {text}")
        rows.append({"question": question, "answer": verdict(signs), "evidence": "; ".join(words)})
    return rows
