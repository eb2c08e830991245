"""Grad-CAM (Selvaraju et al., ICCV 2017) on episodic few-shot models with ``pytorch_grad_cam``.

``pytorch_grad_cam`` needs a model that takes ONE tensor and returns ONE tensor of logits. An episodic model
takes a support set, its labels and the queries, so ``EpisodeCAM`` fixes the support set: its embeddings are
computed once, and the wrapper maps query images (B, 3, H, W) to logits (B, way) through ``model.embed`` and
``model.head`` — the same path as ``model(support, labels, query)`` in eval mode. The CAM of class k is made
of the gradient, at the last backbone block, of one of ``CAM_TARGETS``:

- ``"log_probability"`` (the default): the class's log-probability among the episode's classes,
  logit_k − logsumexp(logits). It is what the softmax classifier decides on: evidence for class k *against* the
  other classes.
- ``"logit"``: the class's raw score. For a metric model the score is a negative distance, and every distance
  grows with the features' magnitude, so its gradient is negative almost everywhere and the map is flat (no
  positive evidence): FRN after a brief training on the embedded birds set had 100 % flat maps in the pointing
  game, against 16 % with the log-probability. The shared part cancels in the log-probability.

The pointing game (Zhang et al., ECCV 2016) asks whether a map's maximum falls inside a ground-truth region;
a uniformly random point hits with probability equal to the region's share of the image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from fsl_core.data import EpisodeSampler, FewShotFolder
from fsl_core.models import EpisodicModel
from fsl_core.runtime import did_you_mean, evaluation_mode

from .browser import load_episode
from .parts import GroundTruth
from .plots import (
    IMAGE_TEXT_SIZE,
    MAX_FIGURE_WIDTH,
    MIN_FONT_SIZE,
    RIGHT_COLOUR,
    RIGHT_MARK,
    WRONG_COLOUR,
    WRONG_MARK,
    image_array,
    label_width,
    readable,
    wrap_label,
)


class LogProbabilityTarget:
    """The Grad-CAM target "log-probability of class ``k``": logits (way,) of one query → log_softmax(logits)[k]
    (a scalar; ``pytorch_grad_cam`` calls a target on each query's output)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, logits: Tensor) -> Tensor:
        return torch.log_softmax(logits, dim=-1)[..., self.k]


class CamTarget(NamedTuple):
    """A Grad-CAM target: ``make(k)`` is the ``pytorch_grad_cam`` target of class k; ``words``, what a map of a
    class explains, for figures ("its log-probability")."""

    make: Callable[[int], Any]
    words: str


CAM_TARGETS = {
    "log_probability": CamTarget(LogProbabilityTarget, "its log-probability"),
    "logit": CamTarget(ClassifierOutputTarget, "its logit"),
}
"""What the CAM of class k is the gradient of (see the module's docstring), by name."""


def check_cam_target(target: str, way: int | None = None) -> None:
    """Raise a ValueError naming the way out when ``target`` is no name of ``CAM_TARGETS``, or is the
    log-probability in a one-class episode (``way`` 1: always 0, so its gradient is 0 and every map flat)."""
    if target not in CAM_TARGETS:
        raise ValueError(
            f"target={target!r}{did_you_mean(target, CAM_TARGETS)}: expected one of {list(CAM_TARGETS)}"
        )
    if target == "log_probability" and way is not None and way < 2:
        raise ValueError(
            "target='log_probability' in a one-class episode: the log-probability of the only class is always 0, "
            "so every map would be flat; use target='logit'"
        )


class EpisodeCAM(nn.Module):
    """Support set fixed, query images in, logits out.

    Args:
        model: an episodic model (switched to eval mode: BatchNorm uses running statistics, so a query's
            logits do not depend on the other images in the batch).
        support_images: (way*shot, 3, H, W), class-major.
        support_labels: (way*shot,) in 0..way-1.

    ``forward(query_images (B, 3, H, W)) -> logits (B, way)``.
    """

    def __init__(self, model: EpisodicModel, support_images: Tensor, support_labels: Tensor) -> None:
        super().__init__()
        self.model = model.eval()
        device = next(model.parameters()).device
        self.support_labels = support_labels.to(device)
        self.way = int(self.support_labels.max()) + 1
        with torch.no_grad():
            support = model.embed(support_images.to(device), query=False)
        self.support = {key: value.detach() for key, value in support.items()}

    def forward(self, query_images: Tensor) -> Tensor:
        """query_images: (B, 3, H, W) → logits (B, way)."""
        query = self.model.embed(query_images, query=True)
        return self.model.head(self.support, self.support_labels, query, self.way)


def target_layer(model: EpisodicModel) -> nn.Module:
    """The last backbone block (Conv-4: ``backbone.blocks[-1]``, ResNet-12: ``backbone.stages[-1]``)."""
    backbone = model.backbone
    for name in ("blocks", "stages"):
        if hasattr(backbone, name):
            return getattr(backbone, name)[-1]
    raise ValueError(
        f"cannot find the last block of backbone {type(backbone).__name__}: expected a 'blocks' or 'stages' list"
    )


def episode_cams(
    model: EpisodicModel,
    support_images: Tensor,
    support_labels: Tensor,
    query_images: Tensor,
    classes: Sequence[int] | Tensor | None = None,
    layer: nn.Module | None = None,
    target: str = "log_probability",
) -> np.ndarray:
    """Grad-CAM of each query for one class each.

    Args:
        model, support_images, support_labels: the episode's fixed support set (see ``EpisodeCAM``).
        query_images: (B, 3, H, W).
        classes: (B,) episode class index explained for each query (default: the predicted class).
        layer: target layer (default: ``target_layer(model)``): a module called once per query pass that returns
            one tensor; the map is made of that output even where an in-place activation overwrites it later.
        target: what the map of class k is the gradient of, a name of ``CAM_TARGETS``: "log_probability" (of
            class k among the episode's classes; needs two classes or more) or "logit".

    Returns:
        cams: (B, H, W) float32 in [0, 1] (resized to the input).

    Raises:
        RuntimeError: when no CAM was produced (``GradCAM.__exit__`` swallows IndexError, e.g. a class index
            outside 0..way-1, so the result is checked explicitly).
    """
    check_cam_target(target)  # the name before any work
    was_training = model.training
    wrapper = EpisodeCAM(model, support_images, support_labels)
    check_cam_target(target, wrapper.way)
    device = next(model.parameters()).device
    queries = query_images.to(device)
    if classes is None:
        with torch.no_grad():
            classes = wrapper(queries).argmax(-1)
    classes = [int(k) for k in torch.as_tensor(classes).flatten().tolist()]
    if len(classes) != len(queries):
        raise ValueError(f"{len(classes)} target classes given for {len(queries)} query images")
    bad = [k for k in classes if not 0 <= k < wrapper.way]
    if bad:
        raise ValueError(f"target classes {bad} are outside the episode's classes 0..{wrapper.way - 1}")
    cams: np.ndarray | None = None
    layer = layer if layer is not None else target_layer(model)
    with GradCAM(model=wrapper, target_layers=[layer]) as cam:
        # after Grad-CAM's own hooks, which keep the layer's output: the network goes on with a copy, so an
        # in-place operation further on (the activation after a BatchNorm) cannot change what the map is made of
        handle = layer.register_forward_hook(
            lambda _, __, out: out.clone() if isinstance(out, Tensor) else None
        )
        try:
            cams = cam(input_tensor=queries, targets=[CAM_TARGETS[target].make(k) for k in classes])
        finally:
            handle.remove()
    model.train(was_training)
    expected = (len(queries), *queries.shape[-2:])
    if cams is None or tuple(cams.shape) != expected:
        raise RuntimeError(
            f"Grad-CAM produced no map of shape {expected} (got {None if cams is None else cams.shape}); "
            "check the target layer and classes"
        )
    return cams.astype(np.float32)


def cam_overlay(image: Tensor | np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """A CAM (H, W) in [0, 1] blended over the image as a jet heat map → uint8 (H, W, 3) RGB."""
    return show_cam_on_image(
        image_array(image), cam.astype(np.float32), use_rgb=True, image_weight=image_weight
    )


def dilate(mask: np.ndarray | Tensor, pixels: int) -> np.ndarray:
    """Grow a boolean mask (..., H, W) by ``pixels`` in every direction (square structuring element)."""
    tensor = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    if pixels <= 0:
        return tensor.bool().numpy()
    shape = tensor.shape
    grown = F.max_pool2d(tensor.reshape(-1, 1, *shape[-2:]), 2 * pixels + 1, stride=1, padding=pixels)
    return grown.reshape(shape).bool().numpy()


def flat_maps(cams: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(B, H, W) → (B,) True where a map is constant (Grad-CAM found no positive evidence: no peak)."""
    values = np.asarray(cams).reshape(len(cams), -1)
    return (values.max(-1) - values.min(-1)) <= eps


def peak_points(cams: np.ndarray) -> np.ndarray:
    """(B, H, W) maps → (B, 2) (row, column) of each map's maximum, (-1, -1) for a constant map.

    Among tied maxima the one nearest their centroid is taken, so a plateau does not default to its top-left
    corner.
    """
    cams = np.asarray(cams)
    points = np.full((len(cams), 2), -1, dtype=np.int64)
    for i, (cam, flat) in enumerate(zip(cams, flat_maps(cams))):
        if flat:
            continue
        rows, cols = np.nonzero(cam >= cam.max() - 1e-6)
        nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        points[i] = rows[nearest], cols[nearest]
    return points


def pointing_game(cams: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Whether each map's peak lies in its region (a constant map has no peak and misses).

    cams: (B, H, W); masks: (B, H, W) bool; tolerance: pixels the region is dilated by → hits (B,) bool.
    """
    cams, masks = np.asarray(cams), np.asarray(masks, dtype=bool)
    if cams.shape != masks.shape:
        raise ValueError(f"cams {cams.shape} and masks {masks.shape} must have the same shape (B, H, W)")
    regions = dilate(masks, tolerance)
    points = peak_points(cams)
    found = points[:, 0] >= 0
    hits = np.zeros(len(points), dtype=bool)
    index = np.nonzero(found)[0]
    hits[index] = regions[index, points[index, 0], points[index, 1]]
    return hits


def random_point_rate(masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Chance that a uniformly random point lies in each (dilated) region of ``masks`` (B, H, W): its area share,
    (B,) fractions in [0, 1]."""
    return dilate(np.asarray(masks, dtype=bool), tolerance).reshape(len(masks), -1).mean(-1)


def plot_cams(
    images: Sequence[Tensor | np.ndarray],
    cams: Mapping[str, np.ndarray],
    titles: Sequence[str] | None = None,
    regions: Sequence[np.ndarray] | None = None,
    correct: Mapping[str, Sequence[bool]] | None = None,
    caption: str | None = None,
) -> Figure:
    """A row per query: the image, then one Grad-CAM overlay per model (``cams``: {model: (B, H, W)}).

    The white cross marks each map's peak ("flat map: no evidence" when Grad-CAM found no positive contribution);
    ``regions`` (B of (H, W) bool) are outlined in yellow on the image. ``correct`` ({model: B bools}) writes
    under each map whether that model classified the query right (a mark and a colour); ``caption`` goes under
    the figure.
    """
    names = list(cams)
    cell = min(1.8, MAX_FIGURE_WIDTH / (len(names) + 1))
    fig = Figure(figsize=(cell * (len(names) + 1), (cell + 0.45) * len(images) + 0.2), layout="constrained")
    axes = fig.subplots(len(images), len(names) + 1, squeeze=False)
    for i, image in enumerate(images):
        picture = image_array(image)
        axes[i, 0].imshow(picture)
        if titles is not None:
            axes[i, 0].set_title(wrap_label(titles[i], label_width(cell - 0.1)), fontsize=IMAGE_TEXT_SIZE)
        if regions is not None:
            axes[i, 0].contour(
                np.asarray(regions[i], dtype=float), levels=[0.5], colors="yellow", linewidths=0.8
            )
        for j, name in enumerate(names):
            cam = cams[name][i]
            axes[i, j + 1].imshow(cam_overlay(picture, cam))
            row, col = peak_points(cam[None])[0]
            if row >= 0:
                axes[i, j + 1].plot([col], [row], marker="x", color="white", markersize=7, mew=2)
            else:
                axes[i, j + 1].text(
                    0.5,
                    0.5,
                    "flat map:\nno evidence",
                    transform=axes[i, j + 1].transAxes,
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=MIN_FONT_SIZE,
                )
            if i == 0:
                axes[i, j + 1].set_title(name, fontsize=IMAGE_TEXT_SIZE)
            if correct is not None:
                right = bool(correct[name][i])
                axes[i, j + 1].set_xlabel(
                    f"{RIGHT_MARK} classified right" if right else f"{WRONG_MARK} classified wrong",
                    color=RIGHT_COLOUR if right else WRONG_COLOUR,
                    fontsize=MIN_FONT_SIZE,
                )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if caption:
        fig.supxlabel(caption, fontsize=MIN_FONT_SIZE)
    return readable(fig)


def plot_episode_cams(
    models: Mapping[str, EpisodicModel],
    data: FewShotFolder,
    way: int,
    shot: int,
    query: int,
    count: int,
    seed: int = 0,
    truth: GroundTruth | None = None,
    target: str = "log_probability",
) -> Figure:
    """Grad-CAM figure of one episode: a row per shown query, its image (titled with its class, its discriminative
    parts outlined in yellow when ``truth``, the ground truth of ``data``'s split, is given), then the map of every
    model of ``models`` ({name: model}, each on its own device) for the query's true class given the episode's
    support set (``plot_cams``), made of the gradient of ``target`` (a name of ``CAM_TARGETS``).

    The episode is ``load_episode(data, way, shot, query, seed)``: way classes of shot support and ``query`` query
    images each; the queries shown are the first of each of its first ``count`` classes.
    """
    episode = load_episode(data, way, shot, query, seed=seed)
    queries = EpisodeSampler(data, way, shot, query, episodes=1, seed=seed).episode(0)[way * shot :]
    shown = [c * query for c in range(min(count, way))]  # queries are class-major: the first of each class
    cams = {
        name: episode_cams(
            model,
            episode.support_images,
            episode.support_labels,
            episode.query_images[shown],
            classes=episode.query_labels[shown],
            target=target,
        )
        for name, model in models.items()
    }
    titles = [data.classes[int(episode.class_ids[episode.query_labels[i]])] for i in shown]
    regions = [truth.regions(queries[i])[1] for i in shown] if truth is not None else None
    correct = {}
    for name, model in models.items():  # each model's own answer for the queries shown
        device = next(model.parameters()).device
        with torch.no_grad(), evaluation_mode(model, device):
            shown_episode = episode.to(device)
            logits = model(
                shown_episode.support_images, shown_episode.support_labels, shown_episode.query_images
            )
        correct[name] = (logits[shown].argmax(-1).cpu() == episode.query_labels[shown]).tolist()
    return plot_cams(
        [episode.query_images[i] for i in shown],
        cams,
        titles=titles,
        regions=regions,
        correct=correct,
        caption=f"each map explains the query's true class ({CAM_TARGETS[target].words}); a white cross marks its peak",
    )


__all__ = [
    "EpisodeCAM",
    "CAM_TARGETS",
    "CamTarget",
    "LogProbabilityTarget",
    "check_cam_target",
    "target_layer",
    "episode_cams",
    "cam_overlay",
    "dilate",
    "flat_maps",
    "peak_points",
    "pointing_game",
    "random_point_rate",
    "plot_cams",
    "plot_episode_cams",
    "ClassifierOutputTarget",
]
