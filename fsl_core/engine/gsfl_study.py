"""What notebook 07 measures of GSFL-Net beyond its training: its features as arrays for the probes, its few-shot
accuracy with each feature, and HMDRN trained with and without the GSFL plug-in on one budget.

GSFL-Net: Xuelu Li, Vishal Monga, "Group based Deep Shared Feature Learning for Fine-grained Image
Classification", BMVC 2019, arXiv:2004.01817. HMDRN: Ning Luo, Meiyin Hu, Huan Wan, Yanyan Yang, Zhuohang Jiang,
Xin Wei, "Hierarchical Mask-Enhanced Dual Reconstruction Network for Few-Shot Fine-Grained Image Classification",
2025, arXiv:2506.20263.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..models.grouping import dataset_features
from ..models.gsfl import FEATURES, GSFLClassifier
from .evaluate import EvalResult, evaluate_shots
from .train import train

EPISODES_PER_EPOCH = 20
"""The epoch size that ``plugin_budget`` counts a training budget in."""


def gsfl_features(
    model: GSFLClassifier, data: Dataset, device: str | torch.device = "auto"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``model.decompose`` of every image of ``data``, in order: ({"raw": (N, C_high), "s", "d", "sd": (N, dim),
    "rec": (N, C_high)} as float32 arrays, labels (N,)). The model must be in eval mode."""
    values, labels = dataset_features(model.decompose, data, device=device)
    return {key: value.numpy() for key, value in values.items()}, labels.numpy()


def few_shot_by_feature(
    model: GSFLClassifier,
    data: Dataset,
    shots: Sequence[int],
    features: Sequence[str] = FEATURES,
    **settings: Any,
) -> dict[str, dict[int, EvalResult]]:
    """``evaluate_shots`` of ``model`` on ``data`` with each few-shot embedding of ``features`` ("d": the
    discriminative part, as the paper classifies; "sd": shared + discriminative; "raw": the backbone's pooled
    feature) → {feature: {shot: EvalResult}}. Every feature sees the same episodes (``settings``: way, query,
    episodes, seed, device, progress, as ``evaluate`` takes them); the model's own feature is put back after."""
    chosen = model.feature
    try:
        results = {}
        for feature in features:
            model.set_feature(feature)
            results[feature] = evaluate_shots(model, data, shots, **settings)
        return results
    finally:
        model.set_feature(chosen)


def plugin_budget(episodes: int) -> tuple[int, int]:
    """(epochs, episodes per epoch) of a training budget of ``episodes`` (at least 1): as many epochs as whole
    blocks of ``EPISODES_PER_EPOCH`` episodes fit (at least 1), the budget split evenly over them and the remainder
    dropped (200 → (10, 20); 50 → (2, 25); 59 → (2, 29); 7 → (1, 7))."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: a training budget needs at least 1 episode")
    epochs = max(1, episodes // EPISODES_PER_EPOCH)
    return epochs, episodes // epochs


def hmdrn_with_and_without_gsfl(
    data_root: str | Path,
    class_groups: Sequence[int],
    groups: int,
    test_set: Dataset,
    shots: Sequence[int],
    run_root: str | Path,
    *,
    episodes: int,
    backbone: str = "conv4",
    image_size: int = 84,
    way: int = 5,
    shot: int = 5,
    query: int = 10,
    lr: float = 0.1,
    test_way: int = 5,
    test_query: int = 15,
    test_episodes: int = 600,
    seed: int = 0,
    device: str | torch.device = "auto",
    threads: int = 0,
    progress: bool = True,
) -> dict[str, dict[int, EvalResult]]:
    """Train HMDRN twice on ``data_root``'s train split with the same budget and seed, plain ("hmdrn") and with the
    GSFL decomposition plug-in at each level ("hmdrn_gsfl": ``groups`` groups, ``class_groups`` the group of each
    train class), and test each on ``test_set`` → {variant: {shot: EvalResult}}.

    Each run trains ``plugin_budget(episodes)`` of way-way shot-shot episodes with query queries per class (the
    quick protocol, its fixed sampler, no validation) in ``run_root/<variant>``, a run of its own (an earlier one
    there is moved aside). Both are tested on the same ``test_episodes`` test_way-way episodes per shot.
    """
    epochs, per_epoch = plugin_budget(episodes)
    plugin = {"num_classes": len(class_groups), "groups": groups, "class_groups": list(class_groups)}
    results = {}
    for variant, options in (("hmdrn", {}), ("hmdrn_gsfl", {"gsfl": plugin})):
        trained = train(
            protocol="quick",
            model="hmdrn",
            backbone=backbone,
            options=options,
            data_root=str(data_root),
            image_size=image_size,
            way=way,
            shot=shot,
            query=query,
            sampler="fixed",
            episodes_per_epoch=per_epoch,
            epochs=epochs,
            lr=lr,
            val_every=0,
            seed=seed,
            run_dir=str(Path(run_root) / variant),
            resume=False,
            overwrite=True,
            device=str(device),
            progress=progress,
            threads=threads,
        )
        results[variant] = evaluate_shots(
            trained.model,
            test_set,
            shots,
            way=test_way,
            query=test_query,
            episodes=test_episodes,
            seed=seed,
            device=device,
            progress=progress,
        )
    return results
