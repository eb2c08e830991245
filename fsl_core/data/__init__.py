"""Data: the few-shot folder data set, episode samplers, transforms (and the training augmentation made on
the training device, ``device_augmentation``) and the embedded birds generator.

The generator's names (``generate_birds``, ``ensure_birds``, ``load_metadata``, ...) come from
``fsl_core.data.birds``, which is imported on first use of one of them.
"""

from typing import Any

from .device_augmentation import AugmentationPlanner, DeviceAugmentation, PlannedImages
from .folder import FewShotFolder
from .images import IMAGE_EXTENSIONS, FewShotDataError, ImageLoadError, load_rgb
from .sampler import Episode, EpisodeCollate, EpisodeSampler, EpochEpisodeSampler, episode_loader
from .transforms import (
    AUGMENTATIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    augmentation_transform,
    denormalize,
    eval_transform,
    train_transform,
)

_BIRDS_NAMES = (
    "PART_IDS",
    "PART_NAMES",
    "BirdSettings",
    "bird_mask",
    "discriminative_mask",
    "ensure_birds",
    "generate_birds",
    "load_card",
    "load_metadata",
    "part_map",
)


def __getattr__(name: str) -> Any:
    if name in _BIRDS_NAMES:
        from . import birds

        return getattr(birds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AugmentationPlanner",
    "DeviceAugmentation",
    "PlannedImages",
    "FewShotFolder",
    "IMAGE_EXTENSIONS",
    "FewShotDataError",
    "ImageLoadError",
    "load_rgb",
    "Episode",
    "EpisodeCollate",
    "EpisodeSampler",
    "EpochEpisodeSampler",
    "episode_loader",
    "AUGMENTATIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "augmentation_transform",
    "denormalize",
    "eval_transform",
    "train_transform",
    *_BIRDS_NAMES,
]
