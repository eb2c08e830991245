"""Visualisation: HMDRN's masks, reconstruction error maps, Grad-CAM on episodic models, seaborn plots of runs
and evaluations, ground-truth parts of the embedded set, and an ipywidgets episode browser.

Figure functions return ``matplotlib.figure.Figure`` objects; ``save_figure(fig, path)`` writes a PNG and
``show_figure`` shows one (and writes it when given a path). This namespace holds what a user calls: the
figures, the episode browser, and what they are made from (an episode's images, Grad-CAM maps, confusion
counts, the ground-truth parts) with the pointing-game measures. The helpers behind them (token grids, mask
alignment, peak finding, ...) are imported from their modules (``fsl_core.viz.masks``, ``.gradcam``, ...).
"""

from .browser import EpisodeBrowser, load_episode, plot_episode
from .confusion import confused_pairs, episode_confusion, plot_confusion
from .gradcam import EpisodeCAM, episode_cams, plot_cams, plot_episode_cams, pointing_game, random_point_rate
from .masks import plot_query_masks
from .parts import GroundTruth, has_parts, plot_parts
from .plots import (
    plot_accuracy_bars,
    plot_accuracy_histogram,
    plot_training_curves,
    save_figure,
    set_theme,
    show_figure,
)
from .reconstruction import plot_error_maps, plot_level_scores

__all__ = [
    "EpisodeBrowser",
    "load_episode",
    "plot_episode",
    "confused_pairs",
    "episode_confusion",
    "plot_confusion",
    "EpisodeCAM",
    "episode_cams",
    "plot_cams",
    "plot_episode_cams",
    "pointing_game",
    "random_point_rate",
    "plot_query_masks",
    "GroundTruth",
    "has_parts",
    "plot_parts",
    "plot_accuracy_bars",
    "plot_accuracy_histogram",
    "plot_training_curves",
    "save_figure",
    "set_theme",
    "show_figure",
    "plot_error_maps",
    "plot_level_scores",
]
