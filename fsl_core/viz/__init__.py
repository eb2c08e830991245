"""Visualisation: HMDRN's masks, reconstruction error maps, Grad-CAM on episodic models, seaborn plots of runs
and evaluations, ground-truth parts of the embedded set, and an ipywidgets episode browser.

Figure functions return ``matplotlib.figure.Figure`` objects; ``save_figure(fig, path)`` writes a PNG.
"""

from .browser import EpisodeBrowser, load_episode, plot_episode
from .confusion import confused_pairs, episode_confusion, most_confused, plot_confusion
from .gradcam import (
    EpisodeCAM,
    cam_overlay,
    dilate,
    episode_cams,
    flat_maps,
    peak_points,
    plot_cams,
    pointing_game,
    random_point_rate,
    target_layer,
)
from .masks import (
    align_to_eval,
    mask_agreement,
    plot_query_masks,
    token_fractions,
    token_grid,
    upsample_tokens,
)
from .parts import GroundTruth, has_parts, plot_parts
from .plots import (
    image_array,
    plot_accuracy_bars,
    plot_accuracy_histogram,
    plot_training_curves,
    save_figure,
    set_theme,
    show_figure,
)
from .reconstruction import (
    best_reconstructing_class,
    error_maps,
    plot_error_maps,
    plot_level_scores,
    true_class_best_rate,
)

__all__ = [
    "EpisodeBrowser",
    "load_episode",
    "plot_episode",
    "confused_pairs",
    "episode_confusion",
    "most_confused",
    "plot_confusion",
    "EpisodeCAM",
    "cam_overlay",
    "dilate",
    "episode_cams",
    "flat_maps",
    "peak_points",
    "plot_cams",
    "pointing_game",
    "random_point_rate",
    "target_layer",
    "align_to_eval",
    "mask_agreement",
    "plot_query_masks",
    "token_fractions",
    "token_grid",
    "upsample_tokens",
    "GroundTruth",
    "has_parts",
    "plot_parts",
    "image_array",
    "plot_accuracy_bars",
    "plot_accuracy_histogram",
    "plot_training_curves",
    "save_figure",
    "set_theme",
    "show_figure",
    "best_reconstructing_class",
    "error_maps",
    "plot_error_maps",
    "plot_level_scores",
    "true_class_best_rate",
]
