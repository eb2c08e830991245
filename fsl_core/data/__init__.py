"""Data: the few-shot folder data set, episode samplers, transforms and the embedded birds generator.

The generator's names (``generate_birds``, ``ensure_birds``, ``load_metadata``, ...) are loaded on first use,
so ``python -m fsl_core.data.synthetic`` runs the module once, as a script.
"""

from typing import Any

from .folder import FewShotFolder
from .images import IMAGE_EXTENSIONS, FewShotDataError, ImageLoadError, load_rgb
from .sampler import Episode, EpisodeCollate, EpisodeSampler, EpochEpisodeSampler, episode_loader
from .transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform, train_transform

_SYNTHETIC_NAMES = (
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
    if name in _SYNTHETIC_NAMES:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
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
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "denormalize",
    "eval_transform",
    "train_transform",
    *_SYNTHETIC_NAMES,
]
