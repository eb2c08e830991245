"""The training augmentations on a user's own images: one row per preset, one column per image.

Each cell is the preset's transform applied with the per-image seeding of training
(``fsl_core.engine.episodes.seeded_transform``); a column uses one seed for every row, so the rows differ
only by what the presets do (the "papers" and "no_flip" rows draw the same crop and colour jitter, and
differ exactly where the papers' preset flips).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from fsl_core.data import AUGMENTATIONS, FewShotFolder, augmentation_transform
from fsl_core.data.transforms import ImageTransform, augmentation_label
from fsl_core.engine.episodes import seeded_transform
from fsl_core.runtime import derive_seed

from .plots import IMAGE_TEXT_SIZE, MAX_FIGURE_WIDTH, image_array, label_width, readable, wrap_label


def example_indices(dataset: FewShotFolder, count: int) -> list[int]:
    """Indices of ``count`` images of ``dataset``: the first image of classes spread evenly over its classes
    (all classes when there are fewer than ``count``)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r}: expected a positive number of images")
    by_class = dataset.indices_by_class()
    step = max(1, len(by_class) // count)
    return [by_class[c][0] for c in range(0, len(by_class), step)][:count]


def augmentation_examples(
    images: Sequence[Image.Image],
    image_size: int = 84,
    augmentations: Sequence[str | ImageTransform] = tuple(AUGMENTATIONS),
    seed: int = 0,
) -> Tensor:
    """Each augmentation applied to each image: (len(augmentations), len(images), 3, image_size, image_size),
    normalised like the training inputs.

    Args:
        images: PIL RGB images (e.g. ``FewShotFolder.load_image``).
        image_size: output side in pixels.
        augmentations: preset names of ``fsl_core.data.AUGMENTATIONS`` or callables (PIL image → (3, S, S)).
        seed: column ``i`` is drawn with the seed ``derive_seed(seed, i)``, the same for every row.
    """
    if not images or not augmentations:
        raise ValueError(
            f"got {len(images)} images and {len(augmentations)} augmentations; expected at least one of each"
        )
    transforms = [augmentation_transform(augmentation, image_size) for augmentation in augmentations]
    rows = []
    for transform in transforms:
        cells = [seeded_transform(transform, image, derive_seed(seed, i)) for i, image in enumerate(images)]
        shapes = {tuple(cell.shape) for cell in cells}
        if shapes != {(3, image_size, image_size)}:
            raise ValueError(
                f"an augmentation gave tensors of shapes {sorted(shapes)}; expected (3, {image_size}, "
                f"{image_size}): a callable must return a normalised image tensor of the input size"
            )
        rows.append(torch.stack(cells))
    return torch.stack(rows)


def plot_augmentations(
    examples: Tensor,
    augmentations: Sequence[str | ImageTransform] = tuple(AUGMENTATIONS),
    titles: Sequence[str] | None = None,
) -> Figure:
    """The grid of ``augmentation_examples``: a row per augmentation (labelled with its name), a column per
    image (titled with ``titles``, e.g. the class names). With both the "papers" and the "no_flip" rows, the
    papers' cells that differ from no_flip's, the images its flip mirrored, say "mirrored" under them."""
    if examples.dim() != 5 or examples.shape[0] != len(augmentations):
        raise ValueError(
            f"examples of shape {tuple(examples.shape)}: expected (augmentations={len(augmentations)}, "
            "images, 3, H, W) as augmentation_examples returns"
        )
    n_rows, n_columns = examples.shape[:2]
    mirrored = [False] * n_columns
    if "papers" in augmentations and "no_flip" in augmentations:
        papers, no_flip = (
            examples[list(augmentations).index("papers")],
            examples[list(augmentations).index("no_flip")],
        )
        mirrored = [not torch.equal(papers[c], no_flip[c]) for c in range(n_columns)]
    cell = min(1.4, (MAX_FIGURE_WIDTH - 1.0) / n_columns)
    fig = Figure(figsize=(cell * n_columns + 1.0, cell * n_rows + 0.8), layout="constrained")
    axes = fig.subplots(n_rows, n_columns, squeeze=False)
    for r, augmentation in enumerate(augmentations):
        # a preset is named as the user types it; a callable by the start of its record, wrapped
        name = (
            augmentation
            if isinstance(augmentation, str)
            else wrap_label(augmentation_label(augmentation)[:60])
        )
        for c in range(n_columns):
            ax = axes[r, c]
            ax.imshow(image_array(examples[r, c]))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=IMAGE_TEXT_SIZE)
            if augmentation == "papers" and mirrored[c]:
                ax.set_xlabel("mirrored", fontsize=IMAGE_TEXT_SIZE)
            if r == 0 and titles is not None:
                ax.set_title(wrap_label(titles[c], label_width(cell - 0.1)), fontsize=IMAGE_TEXT_SIZE)
    return readable(fig)


__all__ = ["augmentation_examples", "example_indices", "plot_augmentations"]
