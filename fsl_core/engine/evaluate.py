"""Few-shot evaluation: mean accuracy and 95% confidence interval over N episodes.

The protocol of FRN, BiFRN and HMDRN: 10,000 5-way episodes, 1-shot and 5-shot, 16 queries per class,
reported as mean ± 1.96·std/√n where std is the population standard deviation (``np.std``, ddof=0,
as in the FRN and BiFRN evaluation code) of the per-episode accuracies.

Two paths give the same episodes (``EpisodeSampler`` with the same seed) and the same accuracies:

- ``cached=True``: every image the episodes use is embedded once (``model.embed``, in batches, in both the
  support and the query role when the model says they differ), then each episode only runs
  ``model.head`` on rows of the cached tensors — one pass over the images instead of
  episodes × way × (shot + query) image forwards.
- ``cached=False``: each episode's images are loaded and go through ``model(support, labels, query)``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from fsl_core.data import EpisodeCollate, EpisodeSampler, FewShotFolder
from fsl_core.data.sampler import episode_misfits
from fsl_core.models import EpisodicModel
from fsl_core.models.checkpoints import (
    is_fsl_core_checkpoint,
    load_checkpoint,
    load_trained_model,
    trained_image_size,
    training_setting,
)
from fsl_core.models.gsfl import FEATURE_NAMES
from fsl_core.progress import note, tqdm
from fsl_core.run_folder import move_aside
from fsl_core.runtime import (
    atomic_write_json,
    checked_checkpoint_file,
    evaluation_mode,
    file_sha256,
    load_torch_file,
    resolve_device,
    same_path,
    way_out,
)
from fsl_core.statistics import confidence_interval


@dataclass
class EvalResult:
    """Accuracy over ``episodes`` way-way shot-shot episodes (``query`` queries per class), in percent.

    ``accuracies``: (episodes,) per-episode accuracy in percent; ``mean``; ``ci95`` = 1.96·std/√n with
    the population standard deviation (ddof=0).

    Times, in seconds of wall clock: ``seconds`` the whole call (drawing the episodes, embedding, episodes);
    ``embed_seconds`` loading and embedding every image the episodes use, once (cached path; 0.0 on the plain
    path, where each episode embeds its own images); ``episode_seconds`` running the episodes (cached path:
    the episode heads on cached embeddings; plain path: loading and the full model per episode);
    ``episodes_per_second`` = episodes / episode_seconds (None when no time was measured). ``image_size``: the
    side S of the (3, S, S) images the model was fed (None for images of another shape).
    """

    mean: float
    ci95: float
    accuracies: np.ndarray = field(repr=False)
    way: int
    shot: int
    query: int
    episodes: int
    seed: int
    seconds: float = 0.0
    embed_seconds: float = 0.0
    episode_seconds: float = 0.0
    image_size: int | None = None

    @property
    def episodes_per_second(self) -> float | None:
        """Episodes per second of ``episode_seconds`` (None when it is 0: not measured)."""
        return self.episodes / self.episode_seconds if self.episode_seconds > 0 else None

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.ci95:.2f}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-episode accuracies)."""
        return {
            "mean": self.mean,
            "ci95": self.ci95,
            "way": self.way,
            "shot": self.shot,
            "query": self.query,
            "episodes": self.episodes,
            "seed": self.seed,
            "seconds": self.seconds,
            "embed_seconds": self.embed_seconds,
            "episode_seconds": self.episode_seconds,
            "episodes_per_second": self.episodes_per_second,
            "image_size": self.image_size,
        }


def check_episode_settings(
    way: int, shots: Sequence[int], query: int, episodes: int, seed: int = 0, *, reported: bool = False
) -> None:
    """Raise a ValueError unless way >= 2, every shot, query and episodes are positive integers and seed is a
    non-negative one; with ``reported`` (a result that states a 95 % interval), episodes >= 2 as well."""
    if not shots:
        raise ValueError("shots is empty; give at least one shot, e.g. (1, 5)")
    positive = [("way", way), *(("shot", shot) for shot in shots), ("query", query), ("episodes", episodes)]
    for name, value, least in [*((name, value, 1) for name, value in positive), ("seed", seed, 0)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            kind = "positive" if least else "non-negative"
            raise ValueError(f"{way_out(name, f'--{name}')} must be a {kind} integer, got {value!r}")
    if way < 2:
        name = way_out("way", "--way")
        raise ValueError(
            f"{name}={way}: a 1-way episode has one class, so every query is always classified correctly "
            f"(100 %); use {name} >= 2 (the usual protocol: 5)"
        )
    if reported and episodes < 2:
        name = way_out("episodes", "--episodes")
        raise ValueError(
            f"{name}={episodes}: one episode gives no confidence interval (its spread is 0 by definition, not "
            f"by measurement); use {name} >= 2 (the papers: 10000)"
        )


def check_episodes_fit(
    dataset: FewShotFolder,
    way: int,
    shot: int,
    query: int,
    what: str = "evaluation",
    names: tuple[str, ...] | None = None,
) -> None:
    """Raise a ValueError when ``dataset`` cannot give way-way episodes of shot+query images per class; the message
    starts with ``what`` and calls the three numbers by ``names``, the caller's words for them (default: way, shot
    and query, as flags on a command line)."""
    names = names or tuple(way_out(name, f"--{name}") for name in ("way", "shot", "query"))
    by_class = dataset.indices_by_class()
    where = f"{dataset.root}/{dataset.split}"
    sizes = [(dataset.classes[c], len(members)) for c, members in enumerate(by_class)]
    if misfits := episode_misfits((names[0], way), ((names[1], shot), (names[2], query)), sizes, where):
        raise ValueError(f"{what}: " + "; ".join(misfits))


def _shares_backbone(model: nn.Module) -> bool:
    """True when ``model.embed`` is ``EpisodicModel.embed`` = encode(extract(images), query): both roles can
    then be encoded from one backbone pass."""
    return isinstance(model, EpisodicModel) and type(model).embed is EpisodicModel.embed


@torch.inference_mode()
def embed_roles(
    model: nn.Module,
    dataset: Dataset,
    indices: Sequence[int],
    roles: Sequence[bool] = (False, True),
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[bool, dict[str, Tensor]]:
    """Embeddings of ``dataset[i]`` for i in ``indices`` in each role of ``roles`` (False: support, True:
    query): {role: {key: (len(indices), ...)}}.

    One pass over the images; for models built on ``EpisodicModel`` also one backbone pass per batch, the
    roles differing only in ``encode``.
    """
    device = resolve_device(device)
    loader = DataLoader(
        Subset(dataset, list(indices)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    shared = _shares_backbone(model)
    parts: dict[bool, dict[str, list[Tensor]]] = {role: {} for role in roles}
    for images, _ in tqdm(loader, desc="embed", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        maps = model.extract(images) if shared else None
        for role in roles:
            out = model.encode(maps, query=role) if shared else model.embed(images, query=role)
            for key, value in out.items():
                parts[role].setdefault(key, []).append(value)
    return {role: {key: torch.cat(values) for key, values in found.items()} for role, found in parts.items()}


def embed_images(
    model: nn.Module,
    dataset: Dataset,
    indices: Sequence[int],
    query: bool,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Tensor]:
    """``model.embed(images, query)`` of ``dataset[i]`` for i in ``indices``: {key: (len(indices), ...)}."""
    return embed_roles(model, dataset, indices, (query,), device, batch_size, num_workers, progress)[query]


def model_label(model: nn.Module) -> str:
    """A model in a few words for a progress line: its name, "+ gsfl" with the GSFL plug-in, and the features
    a GSFL-Net classifies with ("gsfl (d features)"); "" for a module that records no name."""
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping) or not config.get("name"):
        return ""
    label = str(config["name"]) + (" + gsfl" if config.get("gsfl") else "")
    feature = getattr(model, "feature", None)
    if isinstance(feature, str):
        label += f" ({FEATURE_NAMES[feature]} features)"
    return label


def evaluate(
    model: nn.Module,
    dataset: FewShotFolder,
    way: int = 5,
    shot: int = 1,
    query: int = 16,
    episodes: int = 10000,
    seed: int = 0,
    cached: bool = True,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int = 0,
) -> EvalResult:
    """Accuracy of ``model`` on ``episodes`` episodes of ``dataset`` (give it the evaluation transform).

    The episodes are those of ``EpisodeSampler(dataset, way, shot, query, episodes, seed)``; both paths
    (``cached`` or not) see the same episodes. The model is moved to ``device``, run in eval mode under
    ``torch.inference_mode`` and put back in its previous train/eval mode afterwards. ``way`` must be at
    least 2: with one class every query is right.
    """
    check_episode_settings(way, [shot], query, episodes, seed)
    check_episodes_fit(dataset, way, shot, query)
    device = resolve_device(device)
    sampler = EpisodeSampler(dataset, way, shot, query, episodes, seed=seed)
    with evaluation_mode(model, device):
        start = time.perf_counter()
        if cached:
            correct, embed_seconds, episode_seconds = _cached_correct(
                model, dataset, sampler, way, shot, query, device, batch_size, progress, num_workers
            )
        else:
            embed_seconds = 0.0
            correct, episode_seconds = _plain_correct(
                model, dataset, sampler, way, shot, query, device, progress, num_workers
            )
    accuracies = correct.double().cpu().numpy() * (100.0 / (way * query))
    mean, ci95 = confidence_interval(accuracies)
    if progress:  # the notebook runner's line for this evaluation
        name = model_label(model)
        note(
            f"evaluation{f' of {name}' if name else ''} {way}-way {shot}-shot {query}-query, {episodes:,} episodes: "
            f"{mean:.2f} ± {ci95:.2f} % ({time.perf_counter() - start:.1f} s)"
        )
    return EvalResult(
        mean=mean,
        ci95=ci95,
        accuracies=accuracies,
        way=way,
        shot=shot,
        query=query,
        episodes=episodes,
        seed=seed,
        seconds=time.perf_counter() - start,
        embed_seconds=embed_seconds,
        episode_seconds=episode_seconds,
        image_size=_input_side(dataset),
    )


def _input_side(dataset: Dataset) -> int | None:
    """The side S of the square (3, S, S) images ``dataset`` gives (its first image; None for another shape)."""
    image = dataset[0][0]
    square = isinstance(image, Tensor) and image.ndim == 3 and image.shape[-1] == image.shape[-2]
    return int(image.shape[-1]) if square else None


def evaluate_shots(
    model: nn.Module, dataset: Dataset, shots: Sequence[int] = (1, 5), **settings: Any
) -> dict[int, EvalResult]:
    """``evaluate(model, dataset, shot=s, **settings)`` for every shot s in ``shots`` → {shot: EvalResult}, in
    the order given (``settings``: way, query, episodes, seed, device, ... as ``evaluate`` takes them)."""
    return {shot: evaluate(model, dataset, shot=shot, **settings) for shot in shots}


def results_to_dict(results: Mapping[int, EvalResult]) -> dict[str, dict[str, Any]]:
    """{shot: EvalResult} → JSON-ready {"<shot>": ``EvalResult.to_dict()``}."""
    return {str(shot): result.to_dict() for shot, result in results.items()}


def _clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` has finished (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.inference_mode()
def _cached_correct(
    model: nn.Module,
    dataset: FewShotFolder,
    sampler: EpisodeSampler,
    way: int,
    shot: int,
    query: int,
    device: torch.device,
    batch_size: int,
    progress: bool,
    num_workers: int,
) -> tuple[Tensor, float, float]:
    """Correct query predictions per episode, (episodes,) long, from embeddings computed once; with the
    seconds spent embedding and the seconds spent on the episode heads."""
    episodes = torch.tensor([list(indices) for indices in sampler], dtype=torch.long)  # (E, way*(shot+query))
    used = torch.unique(episodes)
    rows = torch.full((len(dataset),), -1, dtype=torch.long)
    rows[used] = torch.arange(len(used))
    episodes = rows[episodes].to(device)
    roles = (False, True) if getattr(model, "query_embedding_differs", True) else (False,)
    start = _clock(device)
    cache = embed_roles(model, dataset, used.tolist(), roles, device, batch_size, num_workers, progress)
    embedded = _clock(device)
    support_cache, query_cache = cache[False], cache[roles[-1]]
    n_support = way * shot
    support_labels = torch.arange(way, device=device).repeat_interleave(shot)
    query_labels = torch.arange(way, device=device).repeat_interleave(query)
    correct = torch.empty(len(episodes), dtype=torch.long, device=device)
    for e in tqdm(range(len(episodes)), desc="episodes", leave=False, disable=not progress):
        support_rows, query_rows = episodes[e, :n_support], episodes[e, n_support:]
        support = {key: value.index_select(0, support_rows) for key, value in support_cache.items()}
        queries = {key: value.index_select(0, query_rows) for key, value in query_cache.items()}
        logits = model.head(support, support_labels, queries, way)
        correct[e] = (logits.argmax(dim=1) == query_labels).sum()
    return correct, embedded - start, _clock(device) - embedded


@torch.inference_mode()
def _plain_correct(
    model: nn.Module,
    dataset: FewShotFolder,
    sampler: EpisodeSampler,
    way: int,
    shot: int,
    query: int,
    device: torch.device,
    progress: bool,
    num_workers: int,
) -> tuple[Tensor, float]:
    """Correct query predictions per episode, (episodes,) long, each episode through ``model.forward``;
    with the seconds the episodes took (loading their images included)."""
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=EpisodeCollate(way, shot, query),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    correct = torch.empty(len(sampler), dtype=torch.long, device=device)
    start = _clock(device)
    for e, episode in enumerate(tqdm(loader, desc="episodes", leave=False, disable=not progress)):
        episode = episode.to(device)
        logits = model(episode.support_images, episode.support_labels, episode.query_images)
        correct[e] = (logits.argmax(dim=1) == episode.query_labels).sum()
    return correct, _clock(device) - start


def evaluation_data_root(
    checkpoint: str | Path, data_root: str | Path | None = None, reference: bool = False
) -> Path:
    """The data set to evaluate ``checkpoint`` on: ``data_root`` when given, else the one its run trained on
    (the ``data_root`` recorded in the checkpoint; a relative one is relative to the folder training started in).
    ``reference``: the file may hold the HMDRN authors' released weights, which record no data set.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist (the message lists what its folder holds).
        ValueError: no ``data_root`` was given and the checkpoint names none that exists here (the message says
            to give one).
    """
    if data_root is not None:
        return Path(data_root)
    path = checked_checkpoint_file(checkpoint)
    give_one = f"give the data set root holding the split folder ({way_out('data_root=ROOT', '--data ROOT')})"
    if reference and not is_fsl_core_checkpoint(load_torch_file(path)):
        raise ValueError(f"the HMDRN authors' released weights {path} record no data set; {give_one}")
    recorded = training_setting(load_checkpoint(path), "data_root")
    if recorded is None:
        raise ValueError(f"{path} records no data set (a model saved outside training); {give_one}")
    if not Path(recorded).is_dir():
        relative = (
            ""
            if Path(recorded).is_absolute()
            else (
                f" (a relative path is relative to the folder training started in, and this is {Path.cwd()})"
            )
        )
        raise ValueError(
            f"{path} was trained on {recorded}, which is not a folder here{relative}; {give_one}"
        )
    return Path(recorded)


def evaluate_checkpoint(
    path: str | Path,
    data_root: str | Path | None = None,
    split: str = "test",
    shots: Sequence[int] = (1, 5),
    way: int = 5,
    query: int = 16,
    episodes: int = 10000,
    seed: int = 0,
    image_size: int | None = None,
    reference: bool = False,
    model_name: str | None = None,
    backbone: str | None = None,
    cached: bool = True,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int = 0,
) -> dict[int, EvalResult]:
    """Load a checkpoint and evaluate it on ``split`` of ``data_root`` for every shot in ``shots``
    (``data_root`` defaults to the data set the checkpoint's run trained on: ``evaluation_data_root``).

    ``path``: an fsl_core checkpoint (``best.pt``/``last.pt``/``save_model``), which records its model, or
    with ``reference=True`` the HMDRN authors' released weights, built as ``model_name``/``backbone``
    (default and only choice: "hmdrn"/"conv4"; anything else is refused). ``image_size`` defaults to the
    training image size recorded in the checkpoint, else the model's own, else 84 (``input_size``).
    Returns {shot: EvalResult}.
    """
    path = checked_checkpoint_file(path)
    check_episode_settings(way, list(shots), query, episodes, seed, reported=True)
    data_root = evaluation_data_root(path, data_root, reference)
    if not reference and (model_name is not None or backbone is not None):
        raise ValueError(
            "model_name and backbone are only used with reference=True; an fsl_core checkpoint records "
            "its model"
        )
    model, size = load_trained_model(
        path, image_size, reference, name=model_name or "hmdrn", backbone=backbone or "conv4"
    )
    dataset = FewShotFolder(data_root, split, transform="eval", image_size=size)
    return evaluate_shots(
        model,
        dataset,
        shots,
        way=way,
        query=query,
        episodes=episodes,
        seed=seed,
        cached=cached,
        device=device,
        batch_size=batch_size,
        progress=progress,
        num_workers=num_workers,
    )


def result_file_name(
    checkpoint: str | Path,
    split: str,
    way: int,
    shots: Sequence[int],
    query: int,
    episodes: int,
    seed: int,
    plain: bool = False,
) -> str:
    """The JSON file name that says what was evaluated.

    E.g. ``best_test_5way_1+5shot_16query_10000ep_seed0.json``: checkpoint file stem, split, way, the
    shots (sorted, joined by "+"), queries per class, episodes, seed, and ``_plain`` when every episode
    went through the model (``cached=False``).
    """
    shot_part = "+".join(str(shot) for shot in sorted(set(shots)))
    name = f"{Path(checkpoint).stem}_{split}_{way}way_{shot_part}shot_{query}query_{episodes}ep_seed{seed}"
    return f"{name}_plain.json" if plain else f"{name}.json"


def checkpoint_record(path: str | Path) -> dict[str, Any]:
    """What identifies the checkpoint a result was measured on: ``checkpoint`` (its absolute path),
    ``checkpoint_sha256`` (of the file), ``fsl_core_checkpoint`` (whether it is one of ours, which records its
    model, rather than the HMDRN authors' released weights: ``is_fsl_core_checkpoint``), and where the file
    records them, ``checkpoint_epoch`` and ``trained_image_size``."""
    path = checked_checkpoint_file(path)
    content = load_torch_file(path)
    record: dict[str, Any] = {
        "checkpoint": str(path),
        "checkpoint_sha256": file_sha256(path),
        "fsl_core_checkpoint": is_fsl_core_checkpoint(content),
    }
    if isinstance(content, Mapping):
        if isinstance(content.get("epoch"), int):
            record["checkpoint_epoch"] = content["epoch"]
        if (size := trained_image_size(content)) is not None:
            record["trained_image_size"] = size
    return record


@dataclass(frozen=True)
class Measured:
    """What an evaluation measures, beside its checkpoint: the ``data`` set (absolute path) and the SHA-256 of its
    split's file list (``FewShotFolder.files_sha256``), the ``split``, the input ``image_size``, the episodes
    (``way``, ``shots``, ``query``, ``episodes``, ``seed``) and the path (``cached``). A result file records them
    (``record`` and its per-shot results); ``earlier_result`` compares a file with them."""

    data: str
    data_files_sha256: str
    split: str
    image_size: int
    way: int
    shots: tuple[int, ...]
    query: int
    episodes: int
    seed: int
    cached: bool

    def record(self) -> dict[str, Any]:
        """The entries of a result file that say what was measured (its per-shot results give the episodes)."""
        return {
            "data": self.data,
            "data_files_sha256": self.data_files_sha256,
            "split": self.split,
            "image_size": self.image_size,
            "cached": self.cached,
        }


_MEASURED_WORDS: dict[str, Callable[[Any], str]] = {
    "data": lambda value: f"on {value}",
    "split": lambda value: f"on the {value} split",
    "data_files_sha256": lambda value: (
        "on other image files" if value else "with no record of its image files"
    ),
    "image_size": lambda value: f"at {value} px",
    "cached": lambda value: "on the cached path" if value else "on the plain path (--plain)",
    "way": lambda value: f"with {value}-way episodes",
    "shots": lambda value: f"with shots {'+'.join(map(str, value))}",
    "query": lambda value: f"with {value} queries per class",
    "episodes": lambda value: f"with {value} episodes",
    "seed": lambda value: f"with seed {value}",
}
"""How a refusal says what an earlier result measured with, setting by setting (``EarlierResult.detail``)."""


@dataclass(frozen=True)
class EarlierResult:
    """A result file set against an evaluation about to run (``earlier_result``): its ``content``, ``checkpoint``
    ("" for this very checkpoint file, else what it measured, in words) and ``differences`` (the settings it
    measured with that differ, in words). ``same`` when it measured exactly this, on one of our checkpoints."""

    content: dict[str, Any]
    checkpoint: str
    differences: tuple[str, ...]

    @property
    def same(self) -> bool:
        return (
            not self.checkpoint and not self.differences and self.content.get("fsl_core_checkpoint") is True
        )

    def detail(self) -> str:
        """For a refusal: " (measured on this same checkpoint, but at 16 px and with seed 1)" and the like."""
        if self.checkpoint:
            return f" (measured on {self.checkpoint})"
        but = f", but {' and '.join(self.differences)}" if self.differences else ""
        return f" (measured on this same checkpoint{but})"


def earlier_result(
    path: str | Path, record: Mapping[str, Any], measured: Measured | None = None
) -> EarlierResult | None:
    """The result file at ``path`` set against the checkpoint ``record`` (``checkpoint_record``) and, when given,
    what this evaluation ``measured``; None when no readable result file is there. The authors' weights are
    never ``same``: the file does not record the model named for them."""
    try:
        earlier = json.loads(Path(path).read_text())
        digest = earlier["checkpoint_sha256"]
        results = {str(shot): dict(result) for shot, result in earlier["results"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    checkpoint = ""
    if digest != record["checkpoint_sha256"]:
        if earlier.get("checkpoint") != record["checkpoint"]:
            checkpoint = "another checkpoint" + (
                f", {earlier['checkpoint']}" if earlier.get("checkpoint") else ""
            )
        else:
            then, now = earlier.get("checkpoint_epoch"), record.get("checkpoint_epoch")
            when = f": epoch {then} then, epoch {now} now" if None not in (then, now) and then != now else ""
            checkpoint = f"another version of this checkpoint{when}"
    if measured is None:
        return EarlierResult(earlier, checkpoint, ())
    first = next(iter(results.values()), {})
    then = {
        **{name: earlier.get(name) for name in measured.record()},
        **{name: first.get(name) for name in ("way", "query", "episodes", "seed")},
        "shots": sorted(int(shot) for shot in results if shot.isdigit()),
    }
    now = {**asdict(measured), "shots": sorted(set(measured.shots))}
    differing = [
        name
        for name in _MEASURED_WORDS
        if not (
            same_path(then[name], now[name])
            if name == "data" and isinstance(then[name], str)
            else then[name] == now[name]
        )
    ]
    if {"data", "split"} & set(differing) and "data_files_sha256" in differing:
        differing.remove("data_files_sha256")  # other folders hold other files: no need to say so
    # a file of an older version lacks some records: it is not the same, but "at None px" says nothing
    said = [name for name in differing if then[name] is not None or name == "data_files_sha256"]
    differences = [_MEASURED_WORDS[name](then[name]) for name in said]
    if differing and not said:
        differences = ["with settings it does not record"]
    return EarlierResult(earlier, checkpoint, tuple(differences))


def check_result_path(
    path: str | Path,
    overwrite: bool = False,
    *,
    other_hint: str = "another path",
    overwrite_hint: str = "overwrite=True",
    example_name: str = "result.json",
    detail: str = "",
    suffix: str | None = None,
) -> Path:
    """Make sure a result can be written to ``path`` later, before any work is done; returns ``path``.

    Refused: a name that does not end in ``suffix`` (".json", ".csv": the format the result is written in),
    when given; a folder; a path under a file or in a folder that cannot be created or written (checked
    with ``os.access`` and by writing and removing a temporary file in the nearest existing folder); an
    existing file unless ``overwrite`` (``write_results`` then moves it aside, nothing is deleted).
    ``other_hint``/``overwrite_hint``: how the caller's user chooses another path or asks to overwrite;
    ``example_name``: the file name a folder error suggests; ``detail``: what an existing file holds, for its
    refusal (``EarlierResult.detail``).

    Raises:
        ValueError: ``path`` does not end in ``suffix``.
        IsADirectoryError: ``path`` is a folder.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: the folder cannot be created or written (the message names it).
    """
    given = os.fspath(path)
    path = Path(path)
    if path.is_dir() or given.endswith(("/", os.sep)):
        raise IsADirectoryError(
            f"result path {given} is a folder; give a file path, e.g. {path / example_name}"
        )
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(
            f"result path {given}: the result is written as {suffix[1:].upper()}, so its name must end in "
            f"{suffix}; choose {other_hint}, e.g. {path.with_name(path.stem + suffix)}"
        )
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise FileExistsError(f"result path {path} exists and is not a regular file; choose {other_hint}")
        if not overwrite:
            raise FileExistsError(
                f"result file {path} already exists{detail} and is kept as it is; choose {other_hint}, or pass "
                f"{overwrite_hint} to move it aside to {path.stem}.replaced-<time>{path.suffix} first"
            )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(
            f"cannot write {path}: {folder} is a file, so the folder {path.parent} cannot be created; "
            f"choose {other_hint}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: no permission to write in {folder}; choose {other_hint}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fsl_core-write-check-", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise OSError(
            error.errno,
            f"cannot write {path}: a test file in {folder} failed ({error.strerror}); choose {other_hint}",
        ) from error
    return path


def write_results(
    results: dict[int, EvalResult], path: str | Path, *, overwrite: bool = False, **context: Any
) -> Path | None:
    """Write ``{**context, "results": {shot: summary}}`` as JSON to ``path`` (a name ending in .json, else a
    ``ValueError``), atomically; returns where an earlier result at ``path`` was moved (None when there was none).

    An existing ``path`` is never overwritten: it raises ``FileExistsError`` naming the file, unless
    ``overwrite``, which first moves it to ``<stem>.replaced-<UTC time><suffix>`` (``move_aside``); if the
    write then fails, the old file is put back. Errors (disk full, no permission) name ``path``.
    """
    path = Path(path)
    check_result_path(path, overwrite, suffix=".json")
    content = {**context, "results": results_to_dict(results)}
    moved = move_aside(path) if path.exists() else None
    try:
        atomic_write_json(content, path)
    except BaseException:
        if moved is not None:
            os.replace(moved, path)
        raise
    return moved
