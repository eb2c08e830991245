"""HMDRN's binary token masks (Luo et al., 2025) over the image, and how well they agree with ground truth.

A level's feature map of h×w positions is flattened row-major into N = h·w tokens (``fmap.flatten(2)``), so a
token vector (..., N) reshapes to (..., h, w). Token values are shown over the image by nearest upsampling;
ground-truth pixel masks are compared with tokens after area-averaging them down to the token grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from .plots import IMAGE_TEXT_SIZE, MAX_FIGURE_WIDTH, image_array, readable

ArrayLike = Tensor | np.ndarray


def token_grid(n_tokens: int, feature_size: Sequence[int] | None = None) -> tuple[int, int]:
    """The (h, w) grid of ``n_tokens`` tokens: ``feature_size`` when given, else the square root."""
    if feature_size is not None:
        h, w = int(feature_size[0]), int(feature_size[1])
        if h * w != n_tokens:
            raise ValueError(f"feature_size={tuple(feature_size)} holds {h * w} tokens, not {n_tokens}")
        return h, w
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"{n_tokens} tokens do not form a square grid; pass feature_size=(h, w)")
    return side, side


def upsample_tokens(
    values: ArrayLike, size: int | Sequence[int], feature_size: Sequence[int] | None = None
) -> Tensor:
    """Token values (..., N) → per-pixel values (..., H, W) by nearest upsampling of the (h, w) grid.

    Boolean masks come back as float 0/1; ``size`` is H (square) or (H, W).
    """
    values = torch.as_tensor(values)
    h, w = token_grid(values.shape[-1], feature_size)
    out_size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    lead = values.shape[:-1]
    grid = values.reshape(-1, 1, h, w).float()
    pixels = F.interpolate(grid, size=out_size, mode="nearest")
    return pixels.reshape(*lead, *out_size)


def token_fractions(mask: ArrayLike, grid: Sequence[int]) -> Tensor:
    """Pixel mask (H, W) (bool or [0, 1]) → (h·w,) share of each token cell covered by the mask.

    Uses adaptive average pooling, the inverse of ``upsample_tokens`` on the same grid.
    """
    pixels = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    if pixels.dim() != 2:
        raise ValueError(f"expected a pixel mask of shape (H, W); got {tuple(pixels.shape)}")
    pooled = F.adaptive_avg_pool2d(pixels[None, None], (int(grid[0]), int(grid[1])))
    return pooled.flatten()


def align_to_eval(mask: np.ndarray, image_size: int) -> np.ndarray:
    """Apply the evaluation transform's geometry to a label map or mask of the original image.

    ``eval_transform(image_size)`` resizes to round(image_size·92/84) square and centre-crops image_size; the
    same is done here with nearest interpolation (pixel centres, as PIL), so part maps line up with the
    network's input. mask: (H, W) integer or bool array → (image_size, image_size) array of the same dtype.
    """
    from fsl_core.data.transforms import eval_resize

    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"expected a mask or label map of shape (H, W); got {array.shape}")
    side = eval_resize(image_size)
    values = torch.from_numpy(array.astype(np.float64))[None, None]
    resized = F.interpolate(values, size=(side, side), mode="nearest-exact")[0, 0]
    top = int(round((side - image_size) / 2.0))
    cropped = resized[top : top + image_size, top : top + image_size].numpy()
    return cropped.astype(array.dtype)


def mask_agreement(
    kept: ArrayLike,
    object_fraction: ArrayLike,
    part_fraction: ArrayLike,
    random_draws: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """How a binary token mask lines up with ground truth, against random masks of the same size.

    Args:
        kept: (M, N) bool, M masks over the same image's N tokens (e.g. every layer and head).
        object_fraction: (N,) share of each token covered by the object (the bird).
        part_fraction: (N,) share of each token covered by the discriminative parts.
        random_draws: random masks per real mask (same number of kept tokens, uniformly placed).
        seed: seed of the random masks.

    Returns:
        ``kept_share`` (mean share of tokens kept), ``object_share`` (share of the kept area on the object),
        ``part_share`` (on the parts), ``part_iou`` (IoU between kept tokens and the tokens touching a part),
        ``object_iou`` (IoU with the tokens at least half covered by the object), each also with a
        ``random_`` prefix for the random masks.
    """
    kept_t = torch.as_tensor(kept).detach().cpu().bool()
    if kept_t.dim() == 1:
        kept_t = kept_t[None]
    obj = torch.as_tensor(object_fraction, dtype=torch.float32).flatten()
    part = torch.as_tensor(part_fraction, dtype=torch.float32).flatten()
    n = kept_t.shape[-1]
    if obj.numel() != n or part.numel() != n:
        raise ValueError(f"masks have {n} tokens but the fractions have {obj.numel()} and {part.numel()}")
    generator = torch.Generator().manual_seed(seed)
    counts = kept_t.sum(-1)
    ranks = torch.rand(kept_t.shape[0], random_draws, n, generator=generator).argsort(-1).argsort(-1)
    random_kept = ranks < counts[:, None, None]

    def scores(masks: Tensor) -> dict[str, float]:
        m = masks.float()
        size = m.sum(-1).clamp_min(1.0)
        part_tokens = (part > 0).float()
        object_tokens = (obj >= 0.5).float()

        def iou(target: Tensor) -> Tensor:
            inter = (m * target).sum(-1)
            union = ((m + target) > 0).float().sum(-1).clamp_min(1.0)
            return inter / union

        return {
            "kept_share": float(m.mean()),
            "object_share": float(((m * obj).sum(-1) / size).mean()),
            "part_share": float(((m * part).sum(-1) / size).mean()),
            "object_iou": float(iou(object_tokens).mean()),
            "part_iou": float(iou(part_tokens).mean()),
        }

    real = scores(kept_t)
    rand = scores(random_kept)
    return real | {f"random_{key}": value for key, value in rand.items() if key != "kept_share"}


def plot_query_masks(
    image: ArrayLike,
    masks: Mapping[str, ArrayLike],
    feature_sizes: Mapping[str, Sequence[int]] | None = None,
    title: str | None = None,
    alpha: float = 0.55,
) -> Figure:
    """One query image and its binary masks: a row per level, a column per layer (heads side by side).

    Args:
        image: (3, H, W) normalised tensor or (H, W, 3) array in [0, 1].
        masks: {level: bool (layers, heads, N)} for this query (``details["masks"][level][i]``).
        feature_sizes: {level: (h, w)} (default: square grids).
        title: figure title.
        alpha: darkening of the dropped tokens.

    Dropped tokens are darkened; kept ones show the image.
    """
    picture = image_array(image)
    size = picture.shape[:2]
    levels = list(masks)
    layers = max(torch.as_tensor(masks[level]).shape[0] for level in levels)
    heads = max(torch.as_tensor(masks[level]).shape[1] for level in levels)
    columns = 1 + layers * heads
    cell = min(1.6, MAX_FIGURE_WIDTH / columns)
    fig = Figure(figsize=(cell * columns, (cell + 0.5) * len(levels) + 0.4), layout="constrained")
    axes = fig.subplots(len(levels), columns, squeeze=False)
    for row, level in enumerate(levels):
        level_masks = torch.as_tensor(masks[level]).detach().cpu().bool()
        grid = None if feature_sizes is None else feature_sizes.get(level)
        axes[row, 0].imshow(picture)
        axes[row, 0].set_title("query" if row == 0 else "", fontsize=IMAGE_TEXT_SIZE)
        axes[row, 0].set_ylabel(f"level {level}", fontsize=IMAGE_TEXT_SIZE)
        for layer in range(level_masks.shape[0]):
            for head in range(level_masks.shape[1]):
                ax = axes[row, 1 + layer * heads + head]
                pixels = upsample_tokens(level_masks[layer, head], size, grid).numpy()
                shade = picture * (1 - alpha * (1 - pixels[..., None]))
                ax.imshow(shade.clip(0, 1))
                kept = float(level_masks[layer, head].float().mean())
                ax.set_title(f"layer {layer + 1} head {head + 1}\nkept {kept:.0%}", fontsize=IMAGE_TEXT_SIZE)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return readable(fig)


__all__ = [
    "token_grid",
    "upsample_tokens",
    "token_fractions",
    "align_to_eval",
    "mask_agreement",
    "plot_query_masks",
]
