"""Image transforms of the training protocol shared by FRN, BiFRN and HMDRN, and the training augmentations.

Evaluation: Resize([92, 92]) → CenterCrop(84) → ToTensor → ImageNet Normalize (for 84-pixel inputs; other
sizes scale alike, see ``eval_resize``). Training applies one of the augmentation presets of
``AUGMENTATIONS`` (the papers' RandomResizedCrop → ColorJitter → RandomHorizontalFlip by default), each
followed by ToTensor and Normalize; ``train_transform(image_size, preset)`` builds them, and
``augmentation_transform`` also accepts any callable (PIL RGB image → (3, S, S) tensor).

Every random step draws from torch's global generator (a callable may also use Python's ``random`` or
NumPy's global generator): training seeds all three per image (``fsl_core.engine.episodes.SeededImages``),
so an image's augmentation is a pure function of its seed.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

from fsl_core.runtime import did_you_mean

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

ImageTransform = Callable[[Image.Image], Tensor]

AUGMENTATIONS: dict[str, str] = {
    "papers": "RandomResizedCrop(S) (scale 0.08-1, aspect 3/4-4/3) → ColorJitter(brightness 0.4, "
    "contrast 0.4, saturation 0.4) → RandomHorizontalFlip(0.5): the FRN/BiFRN/HMDRN training protocol",
    "no_flip": "the papers' preset without the flip: RandomResizedCrop(S) → ColorJitter(0.4, 0.4, 0.4)",
    "light": "the evaluation geometry with a random crop position: Resize([R, R]) → RandomCrop(S) "
    "(shifts of up to R − S = 8 pixels at S = 84); no colour jitter, no flip",
    "none": "the evaluation transform: Resize([R, R]) → CenterCrop(S); nothing random",
}
"""The training augmentation presets: name → what it does to a PIL image before ToTensor and Normalize
(S = image_size, R = ``eval_resize(S)``, 92 for 84). ``train_transform`` builds them."""

CALLABLE_RECORD = "callable "
"""Start of the text that stands for a callable augmentation in a run's records (``augmentation_label``)."""


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r}: expected an integer of at least 8 pixels")
    return image_size


def eval_resize(image_size: int = 84) -> int:
    """Side of the square resize before the centre crop: round(image_size · 92 / 84) (92 for 84)."""
    return round(_check_size(image_size) * 92 / 84)


def train_transform(image_size: int = 84, preset: str = "papers") -> ImageTransform:
    """PIL RGB image → augmented, normalised tensor (3, image_size, image_size), for a preset of
    ``AUGMENTATIONS`` ("papers", "no_flip", "light" or "none")."""
    image_size = _check_size(image_size)
    if preset not in AUGMENTATIONS:
        raise ValueError(
            f"augmentation preset {preset!r} is not known{did_you_mean(preset, AUGMENTATIONS)}; expected one "
            f"of {list(AUGMENTATIONS)}"
        )
    if preset == "none":
        return eval_transform(image_size)
    side = eval_resize(image_size)
    steps: list[Callable] = {
        "papers": lambda: [
            T.RandomResizedCrop(image_size),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            T.RandomHorizontalFlip(),
        ],
        "no_flip": lambda: [
            T.RandomResizedCrop(image_size),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
        ],
        "light": lambda: [T.Resize([side, side]), T.RandomCrop(image_size)],
    }[preset]()
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def augmentation_transform(augmentation: str | ImageTransform, image_size: int = 84) -> ImageTransform:
    """The training transform of ``augmentation``: a preset name of ``AUGMENTATIONS`` (built by
    ``train_transform``) or a callable (PIL RGB image → (3, image_size, image_size) tensor), returned as
    it is.

    Raises:
        ValueError: an unknown preset name, or the record of a callable (``augmentation_label``), from which
            the callable cannot be rebuilt.
    """
    if callable(augmentation):
        return augmentation
    if isinstance(augmentation, str) and augmentation.startswith(CALLABLE_RECORD):
        raise ValueError(
            f"augmentation={augmentation!r} is the record of a Python callable, which cannot be rebuilt from "
            "it; pass the callable itself as augmentation=..., or a preset name "
            f"({', '.join(AUGMENTATIONS)})"
        )
    if not isinstance(augmentation, str):
        raise ValueError(
            f"augmentation={augmentation!r}: expected a preset name ({', '.join(AUGMENTATIONS)}) or a "
            "callable on PIL images"
        )
    return train_transform(image_size, augmentation)


def augmentation_label(augmentation: str | ImageTransform) -> str:
    """The text that records ``augmentation`` in config.json and checkpoints.

    A preset name is returned as it is. A callable becomes ``"callable <module.qualified name>"`` for a
    function or class, and ``"callable <module.qualified type name>: <repr>"`` for any other object (e.g. a
    torchvision v2 ``Compose``, whose repr lists its steps and their settings), with white space collapsed
    and memory addresses (`` at 0x...``) removed, so that the same callable gives the same text in another
    process.
    """
    if not callable(augmentation):
        return augmentation
    named = (inspect.isfunction, inspect.isbuiltin, inspect.ismethod, inspect.isclass)
    if any(test(augmentation) for test in named):
        return f"{CALLABLE_RECORD}{augmentation.__module__}.{augmentation.__qualname__}"
    kind = type(augmentation)
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(augmentation))
    text = " ".join(text.split())
    return f"{CALLABLE_RECORD}{kind.__module__}.{kind.__qualname__}: {text}"


def eval_transform(image_size: int = 84, pre_resized: bool = False) -> ImageTransform:
    """PIL RGB image → normalised tensor (3, image_size, image_size).

    Args:
        image_size: output side.
        pre_resized: the images were already resized and centre-cropped (the ``val_pre``/``test_pre``
            folders), so only ToTensor and Normalize are applied.
    """
    image_size = _check_size(image_size)
    steps: list[Callable] = []
    if not pre_resized:
        side = eval_resize(image_size)
        steps += [T.Resize([side, side]), T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def denormalize(images: Tensor) -> Tensor:
    """Undo the ImageNet normalisation: (..., 3, H, W) → the same shape with values clamped to [0, 1]."""
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"expected images of shape (..., 3, H, W); got {tuple(images.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)
