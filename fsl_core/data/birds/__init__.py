"""The embedded data set: procedurally drawn fine-grained "birds" with part-level ground truth.

Modules: ``taxonomy`` (settings, part names, groups and species), ``render`` (one image and its part map),
``ground_truth`` (metadata, part maps and masks of a written set), ``nearest_neighbour`` (the raw-pixel
baseline), ``card`` (the data set card), ``generate`` (writing a complete set, reusing an existing one).

Command line: ``python -m fsl_core.data.birds OUT_DIR [--seed N] [--image-size N] ...``
"""

from .card import format_card, load_card, nn_baseline
from .generate import COMPLETE_MARKER, ensure_birds, generate_birds, is_complete
from .ground_truth import bird_mask, discriminative_mask, load_metadata, part_map, true_groups
from .nearest_neighbour import nn_pixel_accuracy
from .render import render_image
from .taxonomy import (
    BIRD_PART_IDS,
    GENERATOR,
    GENERATOR_VERSION,
    PART_IDS,
    PART_NAMES,
    SPLITS,
    BirdSettings,
    make_taxonomy,
)

__all__ = [
    "BIRD_PART_IDS",
    "COMPLETE_MARKER",
    "GENERATOR",
    "GENERATOR_VERSION",
    "PART_IDS",
    "PART_NAMES",
    "SPLITS",
    "BirdSettings",
    "bird_mask",
    "discriminative_mask",
    "ensure_birds",
    "format_card",
    "generate_birds",
    "is_complete",
    "load_card",
    "nn_baseline",
    "load_metadata",
    "make_taxonomy",
    "nn_pixel_accuracy",
    "part_map",
    "true_groups",
    "render_image",
]
