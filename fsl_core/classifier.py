"""Classify your own images with a trained few-shot model, in scikit-learn's idiom.

    clf = FewShotClassifier.from_checkpoint("outputs/02_train/<run>/train/best.pt")
    clf.fit("my_support/")                  # <class name>/<image files>, or {"name": [paths or PIL images]}
    clf.predict(["a.jpg", "b.jpg"])         # ['crow', 'raven']
    clf.predict_proba("my_queries/")        # pandas.DataFrame: a row per image, a column per class
    clf.explain("a.jpg")                    # a figure: Grad-CAM, and for HMDRN kept tokens and errors per class

``fit`` embeds every support image once (``model.embed``, the per-image part that evaluation caches) and
``predict`` embeds the queries in batches and runs the episode head (``model.head``) on each batch against
the stored support embeddings: classifying 10,000 images costs one backbone pass each. The probabilities
are the softmax of the model's logits, which already hold the model's own scale (ProtoNet's temperature,
the reconstruction networks' γ).

**Classes with different numbers of support images.** The models were trained on episodes in which every
class has the same number of support images, and their episode heads require it. ``fit`` takes any counts
(``strategy_`` says which case applies, ``episodes_`` lists the head calls):

- ``"episode"``, equal counts: one episode holding every support image, exactly what the evaluation engine
  computes for that support set.
- ``"per_class"``, unequal counts, for the models that score a class from its own support images alone with
  a score that does not add up over them (``scores_each_class_alone``): ProtoNet and GSFL-Net (a class's
  prototype is the mean of all its images, Snell et al., NeurIPS 2017, Eq. 1, defined for any number), FRN
  (the ridge reconstruction from the class's own pool, its λ = (kN/C)·e^α taken with the class's own count)
  and HMDRN (attention over the class's own pooled tokens). Each class is scored on all its images, the
  classes of equal count in one head call, and the softmax is taken over all classes: nothing is dropped or
  repeated, and it is exact, the same scores as any equal-count episode holding that class's images.
- ``"draws"``, unequal counts, for the others (BiFRN, whose support-to-query error sums over every support
  token of a class, so a class's score falls as its count grows): the probabilities are averaged over D
  episodes of m images per class, m the smallest count, D = max(``draws``, ⌈largest count / m⌉). Each
  class's images are put in one order drawn from ``seed`` and episode d takes the m images from position
  d·m on (wrapping around): every image takes part, a class's images about equally often, and the result is
  the same at every call.

Bad input raises a named error (all are ``ValueError`` subclasses) listing the offending files and the way
out: ``EmptySupportError`` (no class folder), ``UnreadableSupportError`` (support images that cannot be read,
a class with no readable image), ``SingleClassError`` (one class), ``NotAnImageError`` (a query that is not
an image), ``NotAModelError`` (a checkpoint that holds no model) and ``NotFittedError`` (``predict`` before
``fit``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from torch import Tensor
from torch.utils.data import Dataset

from fsl_core.data.folder import split_folders
from fsl_core.data.images import (
    IMAGE_EXTENSIONS,
    FewShotDataError,
    _to_rgb,
    image_file_problem,
    is_image_file,
    load_rgb,
)
from fsl_core.data.sampler import images_misfit, way_misfit
from fsl_core.data.transforms import eval_transform
from fsl_core.engine.evaluate import embed_roles
from fsl_core.models import (
    EpisodicModel,
    GSFLClassifier,
    ProtoNet,
    ReconstructionNetwork,
)
from fsl_core.models.base import Embedding, index_embedding
from fsl_core.models.checkpoints import input_size, load_trained_model
from fsl_core.progress import report, tqdm
from fsl_core.runtime import (
    checked_checkpoint_file,
    resolve_device,
    seeded_generator,
    use_cpu_threads,
    way_out,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ImageSource = str | Path | Image.Image
"""One image: a file path or a PIL image (any size and mode)."""
Images = ImageSource | Sequence[ImageSource] | Mapping[str, ImageSource]
"""Images to classify: a path, a folder (its image files), a PIL image, a sequence of these, or a mapping
{name: path or PIL image}."""
Support = str | Path | Mapping[str, ImageSource | Sequence[ImageSource]]
"""A support set: a folder ``<class name>/<image files>``, or a mapping {class name: images (paths, PIL
images, or a folder)}."""

SHOWN_FILES = 20
"""How many offending files an error lists by name (the rest are counted)."""
EXTENSIONS_TEXT = ", ".join(sorted(IMAGE_EXTENSIONS))


# -- errors -------------------------------------------------------------------------------------------------
class ClassifierInputError(FewShotDataError):
    """A support set, image or checkpoint that ``FewShotClassifier`` cannot use; the message names it."""


class EmptySupportError(ClassifierInputError):
    """The support set holds no class (an empty folder, image files without class folders, an empty dict)."""


class UnreadableSupportError(ClassifierInputError):
    """Support images that cannot be read, or a class with no readable image; every one is listed."""


class SingleClassError(ClassifierInputError):
    """The support set has a single class: there is nothing to choose between."""


class NotAnImageError(ClassifierInputError):
    """Images to classify that are missing, not images or unreadable; every one is listed."""


class NotAModelError(ClassifierInputError):
    """A checkpoint (or object) that holds no fsl_core model."""


class NotFittedError(ClassifierInputError, _SklearnNotFittedError):
    """``predict``, ``predict_proba`` or ``explain`` was called before ``fit`` (also scikit-learn's
    ``NotFittedError``)."""


# -- images -------------------------------------------------------------------------------------------------
def _visible_files(folder: str | Path) -> list[Path]:
    """The regular files directly in ``folder`` whose names do not start with ".", sorted by name."""
    return sorted(
        (p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def list_images(folder: str | Path) -> list[Path]:
    """The image files (``IMAGE_EXTENSIONS``, not hidden) directly in ``folder``, sorted by name."""
    return [p for p in _visible_files(folder) if is_image_file(p)]


def unread_files(images: Images | Support, support: bool = False) -> list[Path]:
    """The files skipped when ``images`` to classify, or with ``support`` a support set, are read: visible regular
    files that are not image files (``IMAGE_EXTENSIONS``), directly in each folder given (in a support folder:
    in each class folder, and every file beside the class folders, which belongs to no class), sorted. A path
    given on its own is never skipped: one that is not an image is refused."""
    if support and isinstance(images, (str, Path)):
        root = Path(images).expanduser()
        classes = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(_visible_files(root) + unread_files(classes))
    if isinstance(images, Mapping):
        items = [item for value in images.values() for item in _as_list(value)]
    else:
        items = _as_list(images)
    folders = [Path(item) for item in items if isinstance(item, (str, Path)) and Path(item).is_dir()]
    return sorted(p for folder in folders for p in _visible_files(folder) if not is_image_file(p))


def unread_note(files: Sequence[Path], support: bool = False) -> str:
    """``unread_files``'s list in words ("" when empty), e.g. "1 file not read (only .bmp, ... files are read):
    a/x.gif"; with ``support``, "... files in a class folder are read"."""
    if not files:
        return ""
    names = _listed([f"{p.parent.name}/{p.name}" for p in files])
    where = " in a class folder" if support else ""
    return f"{len(files)} file{'s' * (len(files) > 1)} not read (only {EXTENSIONS_TEXT} files{where} are read): {names}"


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, (str, Path, Image.Image)) else list(value)


def open_image(source: ImageSource) -> Image.Image:
    """A path (read with ``load_rgb``) or a PIL image of any mode → a PIL RGB image."""
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    return load_rgb(source)


def _listed(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:SHOWN_FILES])
    return shown + (f"; and {len(problems) - SHOWN_FILES} more" if len(problems) > SHOWN_FILES else "")


def _name_of(source: ImageSource, position: int) -> str:
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return Path(filename).name if filename else f"image {position}"
    return Path(source).name


def image_inputs(images: Images) -> tuple[list[str], list[ImageSource]]:
    """``images`` (see ``Images``) → (names, sources), one per image, folders expanded to their image files.

    Names are the file names (``image <i>`` for a PIL image without one, the keys of a mapping); when two
    files share a name, the paths as given are used instead.

    Raises:
        NotAnImageError: listing every path that does not exist, is not an image file or cannot be read, and
            every folder without image files.
    """
    if isinstance(images, Mapping):
        names, sources = [str(k) for k in images], list(images.values())
        explicit = True
    else:
        items = _as_list(images)
        names, sources, explicit = [], [], False
        for item in items:
            if isinstance(item, (str, Path)) and Path(item).is_dir():
                files = list_images(item)
                sources += files if files else [Path(item)]
            else:
                sources.append(item)
    problems = []
    for source in sources:
        if isinstance(source, Image.Image):
            continue
        if not isinstance(source, (str, Path)):
            problems.append(f"{source!r}: a {type(source).__name__}, expected a path or a PIL image")
            continue
        path = Path(source)
        if path.is_dir():
            problems.append(f"{path}: a folder without image files ({EXTENSIONS_TEXT})")
        elif not path.exists():
            problems.append(f"{path.absolute()}: does not exist")
        elif not is_image_file(path):
            problems.append(f"{path}: not an image file (expected {EXTENSIONS_TEXT})")
        elif problem := image_file_problem(path):
            problems.append(f"{path}: {problem}")
    if problems:
        raise NotAnImageError(
            f"{len(problems)} of the images to classify cannot be read: {_listed(problems)}. Give image files "
            f"(JPEG, PNG, BMP or WebP) or folders of them{way_out(' (from Python, PIL images too)', '')}"
        )
    if not sources:
        raise NotAnImageError(
            "no images to classify were given; give image files or a folder of them"
            + way_out(" (from Python, PIL images too)", "")
        )
    if not explicit:
        names = [_name_of(source, i) for i, source in enumerate(sources)]
        if len(set(names)) < len(names):
            names = [str(s) if not isinstance(s, Image.Image) else n for s, n in zip(sources, names)]
    return names, sources


def read_support(support: Support) -> dict[str, list[ImageSource]]:
    """A support set (see ``Support``) → {class name: image sources}, classes sorted by name.

    A folder gives its sub-folders as classes (sorted by name, hidden ones skipped) and their image files
    (``IMAGE_EXTENSIONS``) as images; other files are skipped (``unread_files`` lists them). In a mapping, a folder stands for its image
    files and a single path or PIL image for itself.

    Raises:
        FileNotFoundError: the support folder does not exist.
        EmptySupportError: no class at all.
        UnreadableSupportError: every unreadable image and every class without a readable image.
        SingleClassError: a single class.
    """
    problems: list[str] = []
    if isinstance(support, Mapping):
        where = "the support set"
        if not support:
            raise EmptySupportError(
                "the support set is empty; give {class name: [image paths or PIL images], ...} with at "
                "least two classes"
            )
        classes: dict[str, list[ImageSource]] = {}
        for name in sorted(support, key=str):
            value = support[name]
            items = _as_list(value)
            sources: list[ImageSource] = []
            for item in items:
                if isinstance(item, (str, Path)) and Path(item).is_dir():
                    sources += list_images(item)
                else:
                    sources.append(item)
            classes[str(name)] = sources
    else:
        folder = Path(support).expanduser()
        where = f"support folder {folder}"
        if not folder.exists():
            raise FileNotFoundError(
                f"support folder {folder.absolute()} does not exist; expected <folder>/<class name>/<image files>"
            )
        if not folder.is_dir():
            raise EmptySupportError(
                f"{folder} is a file, not a support folder; expected <folder>/<class name>/<image files>"
            )
        children = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
        class_dirs = [p for p in children if p.is_dir()]
        if not class_dirs:
            loose = [p.name for p in children]
            holds = f"it holds only files ({_listed(loose)})" if loose else "it is empty"
            raise EmptySupportError(
                f"support folder {folder} has no class folders: {holds}; put each class's images in a "
                f"sub-folder named after the class: {folder}/<class name>/<image files>"
            )
        classes = {}
        for class_dir in class_dirs:
            files = [
                p for p in sorted(class_dir.iterdir(), key=lambda p: p.name) if not p.name.startswith(".")
            ]
            images = [p for p in files if p.is_file() and is_image_file(p)]
            if not images:
                others = f" (it holds {_listed([p.name for p in files])})" if files else " (it is empty)"
                problems.append(f"class {class_dir.name!r}: no image file ({EXTENSIONS_TEXT}){others}")
            classes[class_dir.name] = list(images)
    for name, sources in classes.items():
        bad = []
        for source in sources:
            if isinstance(source, Image.Image):
                continue
            if not isinstance(source, (str, Path)):
                bad.append(f"{source!r} (a {type(source).__name__}, expected a path or a PIL image)")
            elif not Path(source).is_file():
                bad.append(f"{Path(source).absolute()} (does not exist)")
            elif not is_image_file(source):
                bad.append(f"{source} (not an image file: expected {EXTENSIONS_TEXT})")
            elif problem := image_file_problem(source):
                bad.append(f"{source} ({problem})")
        if not sources and isinstance(support, Mapping):
            problems.append(f"class {name!r}: no images")
        elif bad:
            left = len(sources) - len(bad)
            problems.append(
                f"class {name!r}" + (" has no readable image" if not left else "") + ": " + ", ".join(bad)
            )
    if problems:
        raise UnreadableSupportError(
            f"{where}: {_listed(problems)}. Every class needs readable images (JPEG, PNG, BMP or WebP): remove "
            "or replace the files named, or convert them to one of these formats"
        )
    if len(classes) < 2:
        raise SingleClassError(
            f"{where} has a single class ({', '.join(map(repr, classes))}): a few-shot classifier chooses between "
            "classes; give at least two classes, each with its own images"
        )
    return classes


class ImageList(Dataset):
    """Image sources (paths or PIL images) through a transform: items ``(image (3, S, S), 0)``, as the
    evaluation engine's embedding pass reads them."""

    def __init__(self, sources: Sequence[ImageSource], transform: Any) -> None:
        self.sources = list(sources)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(open_image(self.sources[index])), 0


# -- episodes over the support set ------------------------------------------------------------------------------
class SupportEpisode(NamedTuple):
    """One call of the episode head: ``classes`` (k,) class indices into ``classes_`` and ``rows`` (k·m,) the
    support images the head sees, class-major, m per class (labels 0..k-1 in the order of ``classes``)."""

    classes: np.ndarray
    rows: np.ndarray


def count_episodes(groups: Sequence[Sequence[int]]) -> list[SupportEpisode]:
    """Every support image, the classes of equal count together: one episode per distinct count (a single
    episode, the engine's, when all counts are equal). groups: for each class, the indices of its images."""
    counts = [len(g) for g in groups]
    episodes = []
    for count in sorted(set(counts)):
        classes = np.asarray([c for c, n in enumerate(counts) if n == count], dtype=np.int64)
        rows = np.concatenate([np.asarray(groups[c], dtype=np.int64) for c in classes])
        episodes.append(SupportEpisode(classes, rows))
    return episodes


def support_episodes(groups: Sequence[Sequence[int]], draws: int = 10, seed: int = 0) -> list[SupportEpisode]:
    """Episodes of every class with m = smallest count images each, averaged over (module docstring).

    D = max(draws, ⌈largest count / m⌉) episodes; each class's images are put in one order drawn from
    ``seed`` and episode d takes the m images from position d·m on, wrapping around. Equal counts give one
    episode holding every image. groups: for each class, the indices of its images.
    """
    counts = [len(g) for g in groups]
    every = np.arange(len(groups))
    if len(set(counts)) == 1:
        return [SupportEpisode(every, np.concatenate([np.asarray(g, dtype=np.int64) for g in groups]))]
    m = min(counts)
    total = max(int(draws), max(math.ceil(n / m) for n in counts))
    orders = [
        np.asarray(g, dtype=np.int64)[seeded_generator(seed, c).permutation(len(g))]
        for c, g in enumerate(groups)
    ]
    steps = np.arange(m)
    return [
        SupportEpisode(every, np.concatenate([order[(d * m + steps) % len(order)] for order in orders]))
        for d in range(total)
    ]


def scores_each_class_alone(model: EpisodicModel) -> bool:
    """Whether ``model`` scores a class from that class's support images alone, with a score that does not
    sum over them: ProtoNet and GSFL-Net (prototype = the mean), and the reconstruction networks whose every
    term rebuilds the query (FRN, HMDRN; not BiFRN, whose support-direction error sums over the class's
    support tokens)."""
    if isinstance(model, (ProtoNet, GSFLClassifier)):
        return True
    if isinstance(model, ReconstructionNetwork):
        return all(direction == "query" for _, direction in model.terms)
    return False


# -- the classifier -----------------------------------------------------------------------------------------------
class FewShotClassifier:
    """A trained few-shot model as a classifier of your own images: ``fit`` a support set, ``predict`` class
    names (see the module docstring for unequal support counts).

    Args:
        model: any fsl_core episodic model (ProtoNet, FRN, BiFRN, HMDRN, GSFL-Net), kept in eval mode.
        image_size: input side S of the evaluation transform (Resize to round(S·92/84), CenterCrop S); default
            the model's ``config["image_size"]``, else 84.
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
        batch_size: images per backbone pass.
        draws: least number of episodes averaged over when the classes have unequal counts and the model's
            scores add up over a class's images (BiFRN).
        seed: seed of those episodes.
        progress: a progress bar while embedding many images.

    Attributes after ``fit``: ``classes_`` (class names, sorted), ``support_`` ({class: image sources}),
    ``counts_`` ({class: number of support images}), ``strategy_`` ("episode", "per_class" or "draws", see
    the module docstring), ``episodes_`` (the head calls, ``SupportEpisode`` (classes, rows): rows index
    the support images taken class by class in the order of ``classes_``) and ``unread_`` (the files of the
    support folders skipped as not images, ``unread_files``; the printed classifier names them).
    """

    def __init__(
        self,
        model: EpisodicModel,
        image_size: int | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        draws: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not isinstance(model, EpisodicModel):
            raise NotAModelError(
                f"FewShotClassifier needs an fsl_core episodic model, got a {type(model).__name__}; load one "
                "with FewShotClassifier.from_checkpoint(path) or fsl_core.models.load_model(path)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws={draws!r}: expected a positive integer")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.image_size = input_size(model, image_size)
        self.transform = eval_transform(self.image_size)
        self.batch_size = batch_size
        self.draws = draws
        self.seed = seed
        self.progress = progress
        self.checkpoint: Path | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        reference: bool = False,
        image_size: int | None = None,
        **options: Any,
    ) -> FewShotClassifier:
        """A classifier holding the model of a checkpoint.

        Args:
            path: ``best.pt``/``last.pt`` of a training run or a ``save_model`` file (the model and its training
                image size are recorded in it), or with ``reference=True`` the HMDRN authors' released Conv-4
                weights (84 px).
            image_size: input side (default: the training size the checkpoint records, else the model's, else 84).
            options: ``batch_size``, ``draws``, ``seed``, ``progress`` (see the class).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            NotAModelError: the file holds no model we can build (the message says why and what to give).
        """
        try:
            path = checked_checkpoint_file(path)
        except IsADirectoryError as error:
            raise NotAModelError(str(error)) from None
        try:
            model, size = load_trained_model(path, image_size, reference)
        except (ValueError, TypeError, KeyError) as error:
            what_to_give = (
                "give the HMDRN authors' released Conv-4 weights, or an fsl_core checkpoint"
                if reference
                else "give best.pt or last.pt of a training run (e.g. outputs/02_train/<run>/train/best.pt) or a "
                f"save_model file; for the HMDRN authors' weights pass {way_out('reference=True', '--reference')}"
            )
            raise NotAModelError(
                f"checkpoint {path} holds no usable model: {error}. {what_to_give}"
            ) from error
        classifier = cls(model, image_size=size, device=device, **options)
        classifier.checkpoint = path
        return classifier

    # -- fitting ------------------------------------------------------------------------------------------------
    def fit(self, support: Support) -> FewShotClassifier:
        """Embed the support set once; returns ``self``.

        support: a folder ``<class name>/<image files>`` or a mapping {class name: [paths or PIL images]}
        (see ``read_support``; classes are sorted by name). Any class counts are accepted (module docstring).
        """
        classes = read_support(support)
        unread = unread_files(support, support=True)
        names = list(classes)
        sources = [source for name in names for source in classes[name]]
        labels = np.repeat(np.arange(len(names)), [len(classes[name]) for name in names])
        embedded = self._embed(sources, query=False)  # {key: (n_support, ...)}
        groups = [np.flatnonzero(labels == c) for c in range(len(names))]
        if len({len(g) for g in groups}) == 1:
            strategy, episodes = "episode", count_episodes(groups)
        elif scores_each_class_alone(self.model):
            strategy, episodes = "per_class", count_episodes(groups)
        else:
            strategy, episodes = "draws", support_episodes(groups, self.draws, self.seed)
        # set together, once everything worked: a failed fit leaves the previous one as it was
        self._support, self.strategy_, self.episodes_ = embedded, strategy, episodes
        self.support_, self.counts_ = classes, {name: len(classes[name]) for name in names}
        self.classes_, self.unread_ = names, unread
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                "this FewShotClassifier is not fitted yet: call fit(support) first, with a folder "
                "<class name>/<image files> or a mapping {class name: [images]}"
            )

    def _embed(self, sources: Sequence[ImageSource], query: bool) -> Embedding:
        """``model.embed`` of the images in the support or query role: {key: (len(sources), ...)}."""
        dataset = ImageList(sources, self.transform)
        return embed_roles(
            self.model, dataset, range(len(sources)), (query,), self.device, self.batch_size, progress=False
        )[query]

    def _head(
        self, episode: SupportEpisode, query: Embedding, details: dict[str, Any] | None = None
    ) -> Tensor:
        """The episode head on ``episode``'s support embeddings: logits (n, k) for its k classes."""
        rows = torch.as_tensor(episode.rows, device=self.device)
        way = len(episode.classes)
        labels = torch.arange(way, device=self.device).repeat_interleave(len(episode.rows) // way)
        return self.model.head(index_embedding(self._support, rows), labels, query, way, details)

    @torch.inference_mode()
    def _probabilities(self, query: Embedding) -> Tensor:
        """Query embeddings {key: (n, ...)} → class probabilities (n, way) (module docstring)."""
        if self.strategy_ == "draws":
            total = sum(self._head(episode, query).float().softmax(-1) for episode in self.episodes_)
            return total / len(self.episodes_)
        n = next(iter(query.values())).shape[0]
        logits = torch.empty(n, len(self.classes_), device=self.device)
        for episode in self.episodes_:
            logits[:, torch.as_tensor(episode.classes, device=self.device)] = self._head(
                episode, query
            ).float()
        return logits.softmax(-1)

    # -- predicting ------------------------------------------------------------------------------------------
    def predict_proba(self, images: Images) -> pd.DataFrame:
        """Class probabilities: a row per image (index: file name, see ``image_inputs``), a column per class
        in the order of ``classes_``; each row sums to 1.

        Raises:
            NotFittedError: before ``fit``.
            NotAnImageError: listing every input that is not a readable image.
        """
        self._check_fitted()
        names, sources = image_inputs(images)
        parts = []
        starts = range(0, len(sources), self.batch_size)
        for start in tqdm(starts, desc="classify", leave=False, disable=not self.progress or len(starts) < 2):
            query = self._embed(sources[start : start + self.batch_size], query=True)
            parts.append(self._probabilities(query).double().cpu().numpy())
        table = pd.DataFrame(np.concatenate(parts), index=pd.Index(names, name="file"), columns=self.classes_)
        table.columns.name = "class"
        return table

    def predict(self, images: Images) -> list[str]:
        """The most probable class name of each image (``predict_proba``'s arg-max), in input order."""
        table = self.predict_proba(images)
        return [self.classes_[i] for i in table.to_numpy().argmax(1)]

    # -- explaining --------------------------------------------------------------------------------------------
    def explain(
        self,
        image: ImageSource | Mapping[str, ImageSource],
        class_name: str | None = None,
        max_classes: int = 6,
    ) -> Figure:
        """A figure of why ``image`` (a path, a PIL image, or {name: either}) gets ``class_name`` (default: its
        predicted class).

        Panels: the query as the model sees it; its Grad-CAM for that class (``fsl_core.viz.gradcam``, target
        layer the last backbone block, the support set of the head call that scores the class; with drawn
        episodes, the mean map over them; the gradient of the class's log-probability among the head call's
        classes, or of its logit where the head call scores it alone, as the ``per_class`` strategy does); the class
        probabilities; for a masked model (HMDRN) the share of transformer layers and heads that keep each
        token, per level; for the reconstruction models the reconstruction error of each token per class
        (the ``max_classes`` classes of highest probability, shared colour scale; lower = better explained) with
        each level's weighted share of the class's logit, whose sum over the levels decides the class.
        """
        from fsl_core.viz.gradcam import episode_cams
        from fsl_core.viz.predictions import plot_explanation

        self._check_fitted()
        names, sources = image_inputs(image)
        if len(sources) != 1:
            raise ValueError(f"explain takes one image; got {len(sources)} ({', '.join(names[:5])}, ...)")
        pixels = self.transform(open_image(sources[0]))[None].to(self.device)  # (1, 3, S, S)
        with torch.inference_mode():
            query = self.model.embed(pixels, query=True)
            probabilities = self._probabilities(query)[0].cpu()
        if class_name is None:
            target = int(probabilities.argmax())
        elif class_name in self.classes_:
            target = self.classes_.index(class_name)
        else:
            raise ValueError(f"class_name={class_name!r} is not one of the fitted classes {self.classes_}")
        sources_by_row = [s for name in self.classes_ for s in self.support_[name]]
        cams: list[np.ndarray] = []
        errors: dict[str, Tensor] = {}  # {level: (classes, N)} squared error of each query token
        scores: dict[str, Tensor] = {}  # {level: (classes,)} the level's share of the logit
        for episode in self.episodes_:
            details: dict[str, Any] = {}
            with torch.inference_mode():
                self._head(episode, query, details)
            for gathered, values in (
                (errors, details.get("token_error", {})),  # {level: (1, k, N)}
                (scores, details.get("level_scores", {})),  # {level: (1, k)}
            ):
                for level, value in values.items():
                    value = value[0].float().cpu()
                    if self.strategy_ == "draws":
                        gathered[level] = gathered.get(level, 0) + value / len(self.episodes_)
                    else:
                        gathered.setdefault(level, torch.zeros(len(self.classes_), *value.shape[1:]))
                        gathered[level][torch.as_tensor(episode.classes)] = value
            if target not in episode.classes:
                continue
            support_images = torch.stack(
                [self.transform(open_image(sources_by_row[r])) for r in episode.rows]
            )
            way = len(episode.classes)
            labels = torch.arange(way).repeat_interleave(len(episode.rows) // way)
            local = int(np.flatnonzero(episode.classes == target)[0])
            scored = "log_probability" if way > 1 else "logit"  # a class scored alone has no competitor
            cams.append(episode_cams(self.model, support_images, labels, pixels, [local], target=scored)[0])
        kept = {
            key.removeprefix("mask_"): value[0].float().mean((0, 1)).cpu()
            for key, value in query.items()
            if key.startswith("mask_")
        }
        return plot_explanation(
            pixels[0].cpu(),
            np.mean(cams, axis=0),
            dict(zip(self.classes_, probabilities.tolist())),
            self.classes_[target],
            kept_tokens=kept,
            token_errors=errors,
            level_scores=scores if errors else None,
            max_classes=max_classes,
            title=f"{names[0]}: {self.classes_[target]} ({float(probabilities[target]):.0%})",
        )

    def __repr__(self) -> str:
        name = f"{self.model.config.get('name')}/{self.model.config.get('backbone')}"
        text = f"FewShotClassifier({name}, {self.image_size} px, {self.device}"
        if not hasattr(self, "classes_"):
            return text + ", not fitted)"
        counts = ", ".join(f"{c} ({n})" for c, n in self.counts_.items())
        how = {
            "episode": "one episode",
            "per_class": "unequal counts: each class on all its images",
            "draws": f"unequal counts: {len(self.episodes_)} episodes of {min(self.counts_.values())} per class",
        }[self.strategy_]
        unread = f"; {unread_note(self.unread_, support=True)}" if self.unread_ else ""
        return f"{text}; {len(self.classes_)} classes: {counts}; {how}{unread})"


# -- predictions as a table ----------------------------------------------------------------------------------
def prediction_table(probabilities: pd.DataFrame, files: Sequence[str] | None = None) -> pd.DataFrame:
    """``predict_proba``'s table → columns ``file``, ``predicted``, ``probability`` (of the predicted class),
    then one column per class; ``files`` replaces the index as the file column (e.g. the paths as given)."""
    values = probabilities.to_numpy()
    best = values.argmax(1)
    classes = [str(c) for c in probabilities.columns]
    head = pd.DataFrame(
        {
            "file": list(files) if files is not None else [str(i) for i in probabilities.index],
            "predicted": [classes[i] for i in best],
            "probability": values[np.arange(len(values)), best],
        }
    )
    renamed = [f"class {c}" if c in head.columns else c for c in classes]
    return pd.concat([head, pd.DataFrame(values, columns=renamed)], axis=1)


# -- notebook 08: an example, and a model at hand ------------------------------------------------------------
def _data_set(data_root: str | Path) -> Path:
    """``data_root``, with the embedded birds set generated there when the folder does not exist."""
    root = Path(data_root)
    if not root.exists():
        from fsl_core.data.birds import ensure_birds

        report(f"data_root {root} does not exist: generating the embedded birds set there")
        ensure_birds(root)
    return root


def example_classes(root: Path, way: int, shots: int, queries: int, seed: int = 0) -> dict[Path, list[Path]]:
    """The ``way`` test classes of data set ``root`` that ``example_folders`` copies (drawn with ``seed``; the last
    split when there is no test split): {class folder: its image files, in order}. Raises a ValueError naming the
    way out when the split has fewer than ``way`` classes or a chosen class fewer than shots + queries images."""
    splits = split_folders(root)
    split = root / ("test" if "test" in splits else splits[-1])
    classes = sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
    if too_many := way_misfit(("way", way), len(classes), str(split)):
        raise ValueError(too_many)
    chosen = [classes[i] for i in sorted(seeded_generator(seed).choice(len(classes), way, replace=False))]
    files = {folder: list_images(folder) for folder in chosen}
    sizes = [(folder.name, len(images)) for folder, images in files.items()]
    drawn = f"the {way} classes drawn from {split} with seed {seed}"
    if too_few := images_misfit(
        (("shots", shots), ("queries", queries)), sizes, str(split), classes=drawn, or_else="change seed"
    ):
        raise ValueError(too_few)
    return files


def example_folders(
    data_root: str | Path,
    destination: str | Path,
    way: int = 5,
    shots: int = 5,
    queries: int = 2,
    seed: int = 0,
) -> tuple[Path, Path]:
    """A support folder and a folder of images to classify, made from the test classes of a few-shot data set.

    ``way`` test classes (drawn with ``seed``) of ``data_root`` (the embedded birds set is generated there
    when the folder does not exist): the first ``shots`` images of each are copied into
    ``destination/support/<class>/``, the next ``queries`` into ``destination/queries/<class>_<file>`` (the
    true class in the name). Returns (support folder, query folder).
    """
    chosen = example_classes(_data_set(data_root), way, shots, queries, seed)
    support, query = Path(destination) / "support", Path(destination) / "queries"
    for folder, files in chosen.items():
        (support / folder.name).mkdir(parents=True, exist_ok=True)
        query.mkdir(parents=True, exist_ok=True)
        for file in files[:shots]:
            shutil.copyfile(file, support / folder.name / file.name)
        for file in files[shots : shots + queries]:
            shutil.copyfile(file, query / f"{folder.name}_{file.name}")
    return support, query


def example_answers(table: pd.DataFrame, classes: Sequence[str]) -> tuple[int, int]:
    """(right, total) of ``prediction_table``'s rows for the images ``example_folders`` made: the true class of
    each is the longest of ``classes`` its file name starts with, followed by "_" ("<class>_<file>")."""
    right = 0
    for file, predicted in zip(table["file"], table["predicted"]):
        name = Path(str(file)).name
        owners = [c for c in classes if name.startswith(f"{c}_")]
        right += bool(owners) and max(owners, key=len) == predicted
    return right, len(table)


def support_and_query_folders(
    support_dir: str | Path | None,
    query_dir: str | Path | None,
    *,
    data_root: str | Path,
    destination: str | Path,
    way: int = 5,
    shots: int = 5,
    queries: int = 2,
    seed: int = 0,
) -> tuple[Path, Path]:
    """The folders given, or for an empty one the ``example_folders`` of ``data_root`` made in
    ``destination``: (support folder, query folder)."""
    if support_dir and query_dir:
        return Path(support_dir), Path(query_dir)
    support, query = example_folders(data_root, destination, way, shots, queries, seed)
    return Path(support_dir) if support_dir else support, Path(query_dir) if query_dir else query


def classifier_for_notebook(
    checkpoint: str | Path | None,
    run_dir: str | Path,
    *,
    reference: bool = False,
    model: str = "hmdrn",
    data_root: str | Path = "data/birds",
    device: str | torch.device = "auto",
    threads: int = 0,
    **training: Any,
) -> FewShotClassifier:
    """The classifier of ``checkpoint``, or when it is empty of a ``model`` trained briefly into ``run_dir`` on
    ``data_root`` (generated there when it does not exist) by
    ``fsl_core.engine.brief_training.checkpoint_or_brief_training`` (``training``: its keywords, e.g.
    backbone, image_size, epochs). ``threads``: CPU threads of this process (``use_cpu_threads``)."""
    use_cpu_threads(threads)
    if checkpoint:
        return FewShotClassifier.from_checkpoint(checkpoint, device=device, reference=reference)
    from fsl_core.engine.brief_training import checkpoint_or_brief_training

    trained, path, size = checkpoint_or_brief_training(
        model, None, run_dir, data_root=_data_set(data_root), device=device, threads=threads, **training
    )
    classifier = FewShotClassifier(trained, image_size=size, device=device)
    classifier.checkpoint = path
    return classifier


__all__ = [
    "FewShotClassifier",
    "ClassifierInputError",
    "EmptySupportError",
    "UnreadableSupportError",
    "SingleClassError",
    "NotAnImageError",
    "NotAModelError",
    "NotFittedError",
    "ImageList",
    "classifier_for_notebook",
    "example_folders",
    "support_and_query_folders",
    "image_inputs",
    "list_images",
    "open_image",
    "prediction_table",
    "read_support",
    "support_episodes",
    "count_episodes",
    "scores_each_class_alone",
    "SupportEpisode",
]
