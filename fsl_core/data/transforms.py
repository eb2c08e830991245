"""Image transforms of the training protocol shared by FRN, BiFRN and HMDRN.

Training: RandomResizedCrop → ColorJitter(0.4, 0.4, 0.4) → RandomHorizontalFlip → ToTensor → ImageNet
Normalize. Evaluation: Resize([92, 92]) → CenterCrop(84) (for 84-pixel inputs; other sizes scale alike).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

ImageTransform = Callable[[Image.Image], Tensor]


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r}: expected an integer of at least 8 pixels")
    return image_size


def eval_resize(image_size: int = 84) -> int:
    """Side of the square resize before the centre crop: round(image_size · 92 / 84) (92 for 84)."""
    return round(_check_size(image_size) * 92 / 84)


def train_transform(image_size: int = 84) -> ImageTransform:
    """PIL RGB image → augmented, normalised tensor (3, image_size, image_size)."""
    image_size = _check_size(image_size)
    return T.Compose(
        [
            T.RandomResizedCrop(image_size),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


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
