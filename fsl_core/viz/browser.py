"""Episodes as pictures, and an ipywidgets explorer to page through them.

An episode is drawn exactly as training and evaluation draw it (``EpisodeSampler``: a pure function of the
seed and the episode index), so what the explorer shows for (split, way, shot, seed) is what a model sees.
The explorer (``EpisodeBrowser.widget()``, an ``EpisodeExplorer``) redraws in place on a worker thread that
draws only the latest settings, and its slider ranges follow the split (``EpisodeLimits``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.display import Image
from matplotlib.figure import Figure

from fsl_core.data import Episode, EpisodeCollate, EpisodeSampler, FewShotFolder
from fsl_core.progress import headless_kernel, report, runner_lines
from fsl_core.runtime import atomic_write_bytes

from .plots import (
    IMAGE_TEXT_SIZE,
    RIGHT_COLOUR,
    RIGHT_MARK,
    WRONG_COLOUR,
    WRONG_MARK,
    figure_png,
    image_array,
    label_width,
    readable,
    wrap_label,
)


def load_episode(
    dataset: FewShotFolder, way: int, shot: int, query: int, seed: int = 0, index: int = 0
) -> Episode:
    """Episode ``index`` of ``EpisodeSampler(dataset, way, shot, query, seed=seed)`` as tensors."""
    sampler = EpisodeSampler(dataset, way, shot, query, episodes=index + 1, seed=seed)
    items = [dataset[i] for i in sampler.episode(index)]
    return EpisodeCollate(way, shot, query)(items)


def plot_episode(
    episode: Episode,
    class_names: Sequence[str] | None = None,
    predictions: Sequence[int] | None = None,
    max_query: int = 4,
    title: str | None = None,
) -> Figure:
    """A row per class: its support images, then (after a gap) up to ``max_query`` of its queries, under the
    headers "support" and "query".

    ``class_names``: names of the data set's classes (indexed by ``episode.class_ids``); ``predictions``:
    predicted episode class per query (``(way*query,)``, in ``episode.query_labels`` order): each shown query
    gets the predicted class's name under it, after a mark, in a frame of the mark's colour (``RIGHT_MARK`` in
    ``RIGHT_COLOUR`` when right, ``WRONG_MARK`` in ``WRONG_COLOUR`` when wrong).
    """
    way = len(episode.class_ids)
    shot = len(episode.support_labels) // way
    query = len(episode.query_labels) // way
    shown = min(query, max_query)
    columns = shot + 1 + shown
    cell = 1.3  # inches per image: a name of label_width(cell) characters fits under it
    names_width = 0.0 if class_names is None else 1.4
    fig = Figure(
        figsize=(
            cell * (columns - 0.8) + names_width,
            (cell + (0.45 if predictions is not None else 0.1)) * way + 0.5,
        ),
        layout="constrained",
    )
    axes = fig.subplots(way, columns, squeeze=False, width_ratios=[1.0] * shot + [0.2] + [1.0] * shown)
    characters = label_width(cell - 0.1)

    def name_of(c: int) -> str:
        return class_names[int(episode.class_ids[c])] if class_names is not None else f"class {c}"

    for c in range(way):
        for s in range(shot):
            ax = axes[c, s]
            ax.imshow(image_array(episode.support_images[c * shot + s]))
            if s == 0:
                ax.set_ylabel(
                    wrap_label(name_of(c), label_width(names_width or cell)),
                    rotation=0,
                    ha="right",
                    va="center",
                    fontsize=IMAGE_TEXT_SIZE,
                )
        for q in range(shown):
            ax = axes[c, shot + 1 + q]
            i = c * query + q
            ax.imshow(image_array(episode.query_images[i]))
            if predictions is not None:
                guess = int(predictions[i])
                right = guess == int(episode.query_labels[i])
                colour = RIGHT_COLOUR if right else WRONG_COLOUR
                mark = RIGHT_MARK if right else WRONG_MARK
                ax.set_xlabel(
                    f"{mark} {wrap_label(name_of(guess), characters - 2)}",
                    color=colour,
                    fontsize=IMAGE_TEXT_SIZE,
                )
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(3)
    axes[0, 0].set_title("support", loc="left", fontsize=IMAGE_TEXT_SIZE)
    if shown:
        axes[0, shot + 1].set_title("query", loc="left", fontsize=IMAGE_TEXT_SIZE)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(bool(ax.images))
    for c in range(way):
        axes[c, shot].set_axis_off()
    if title:  # at the left, where the explorer's scrolling frame opens on a wide picture
        fig.suptitle(title, x=0.01, ha="left")
    if predictions is not None and shown:
        fig.supxlabel(f"under each query: the predicted class ({RIGHT_MARK} right, {WRONG_MARK} wrong)")
    return readable(fig)


MIN_WAY = 2
"""The fewest classes an episode of the explorer has."""
MAX_WAY, MAX_SHOT, MAX_QUERY = 20, 10, 8
"""The most classes, support images and queries per class the explorer draws (a larger picture is unreadable)."""


@dataclass(frozen=True)
class EpisodeLimits:
    """What a split allows an episode to be: ``way`` ≤ its classes, ``shot + query`` ≤ its smallest class
    (within ``MAX_WAY``, ``MAX_SHOT``, ``MAX_QUERY``, beyond which a picture is unreadable).

    Args:
        classes: number of classes of the split.
        smallest_class: number of images of its smallest class.
    """

    classes: int
    smallest_class: int

    @property
    def possible(self) -> bool:
        """Whether the split can make any episode (``MIN_WAY`` classes, one support and one query each)."""
        return self.classes >= MIN_WAY and self.smallest_class >= 2

    @property
    def max_way(self) -> int:
        return max(MIN_WAY, min(self.classes, MAX_WAY))

    def max_shot(self, query: int = 1) -> int:
        """The most support images per class beside ``query`` queries per class."""
        return max(1, min(MAX_SHOT, self.smallest_class - query))

    def max_query(self, shot: int = 1) -> int:
        """The most queries per class beside ``shot`` support images per class."""
        return max(1, min(MAX_QUERY, self.smallest_class - shot))

    def fit(self, way: int, shot: int, query: int) -> tuple[int, int, int]:
        """``(way, shot, query)`` brought within the limits: way clipped to the classes, then shot (keeping
        room for one query), then query clipped to what the shot leaves."""
        way = min(max(int(way), MIN_WAY), self.max_way)
        shot = min(max(int(shot), 1), self.max_shot(1))
        query = min(max(int(query), 1), self.max_query(shot))
        return way, shot, query


def episode_title(split: str, way: int, shot: int, query: int, seed: int, episode: int) -> str:
    """The title of an episode's picture, e.g. ``"val: 5-way 1-shot, 2 queries per class, seed 0, episode 0"``."""
    queries = "1 query" if query == 1 else f"{query} queries"
    return f"{split}: {way}-way {shot}-shot, {queries} per class, seed {seed}, episode {episode}"


class EpisodeBrowser:
    """Draws episodes of a few-shot folder data set; ``widget()`` is the interactive explorer of them.

    Args:
        root: data set root (``ROOT/{train,val,test}/<class>/<image>``).
        image_size: evaluation transform size.
        splits: splits offered by the widget (those present on disk).
    """

    def __init__(
        self, root: str | Path, image_size: int = 84, splits: Sequence[str] = ("train", "val", "test")
    ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.splits = [s for s in splits if (self.root / s).is_dir()]
        if not self.splits:
            raise ValueError(f"none of the splits {list(splits)} exists under {self.root}")
        self._datasets: dict[str, FewShotFolder] = {}
        self._lock = threading.Lock()

    def dataset(self, split: str) -> FewShotFolder:
        """The split's data set with the evaluation transform (loaded once)."""
        with self._lock:
            if split not in self._datasets:
                self._datasets[split] = FewShotFolder(
                    self.root, split, transform="eval", image_size=self.image_size
                )
            return self._datasets[split]

    def limits(self, split: str) -> EpisodeLimits:
        """What episodes of ``split`` can be: its number of classes and the size of its smallest class."""
        sizes = [len(indices) for indices in self.dataset(split).indices_by_class()]
        return EpisodeLimits(classes=len(sizes), smallest_class=min(sizes))

    def figure(
        self, split: str = "test", way: int = 5, shot: int = 1, query: int = 2, seed: int = 0, index: int = 0
    ) -> Figure:
        """The picture of one episode (raises ValueError for an impossible episode, naming the reason)."""
        dataset = self.dataset(split)
        episode = load_episode(dataset, way, shot, query, seed=seed, index=index)
        return plot_episode(
            episode,
            dataset.classes,
            max_query=query,
            title=episode_title(split, way, shot, query, seed, index),
        )

    def widget(
        self, split: str | None = None, way: int = 5, shot: int = 1, query: int = 2, seed: int = 0
    ) -> EpisodeExplorer:
        """The interactive explorer (``EpisodeExplorer``), showing episode 0 of these settings first (brought
        within the split's limits)."""
        return EpisodeExplorer(self, split=split, way=way, shot=shot, query=query, seed=seed)


class EpisodeExplorer:
    """An ipywidgets explorer of episodes: split, way, shot, query, seed and episode controls above the picture.

    - The picture is an ``ipywidgets.Image`` whose PNG is replaced when the next one is ready: the old one stays
      on screen meanwhile, and a status line says "drawing…".
    - Drawing happens on a worker thread that takes only the latest request: settings passed over while a
      picture was being drawn are never drawn, and a picture whose settings changed while it was drawn is not
      shown (the newer one follows).
    - Sliders send their value on release (``continuous_update=False``); the ranges follow the split (way ≤
      its classes, shot + query ≤ its smallest class: ``EpisodeLimits``).

    The first picture is drawn at construction, so the explorer is never empty. Display it with
    ``display(explorer)`` or ``explorer.show(static_copy=path)``.

    Attributes:
        controls: {"split", "way", "shot", "query", "seed", "episode"} → the control widget.
        status: the status line (``ipywidgets.Label``); image: the picture (``ipywidgets.Image``).
        box: the whole widget (``ipywidgets.VBox``).
        drawn: the settings of every picture shown, in order (dicts as ``settings()``).
    """

    def __init__(
        self,
        browser: EpisodeBrowser,
        split: str | None = None,
        way: int = 5,
        shot: int = 1,
        query: int = 2,
        seed: int = 0,
        episode: int = 0,
    ) -> None:
        import ipywidgets as widgets

        split = split or browser.splits[-1]
        if split not in browser.splits:
            raise ValueError(f"split={split!r} is not among the data set's splits {browser.splits}")
        self.browser = browser
        self.drawn: list[dict[str, Any]] = []
        self._quiet = 0  # > 0 while the controls are adjusted together: their changes make no request
        self._condition = threading.Condition()
        self._pending: dict[str, Any] | None = None
        self._busy = False
        self._closed = False
        self._worker: threading.Thread | None = None
        self._shown: dict[str, Any] | None = None

        limits = browser.limits(split)
        asked = (int(way), int(shot), int(query))
        way, shot, query = limits.fit(*asked)
        if (way, shot, query) != asked:  # said, not done silently
            report(
                f"the episode browser starts at way={way}, shot={shot}, query={query} instead of way={asked[0]}, "
                f"shot={asked[1]}, query={asked[2]}: {split} has {limits.classes} classes and "
                f"{limits.smallest_class} images in its smallest class, and the browser shows at most {MAX_WAY} "
                f"classes, {MAX_SHOT} shots and {MAX_QUERY} queries (beyond, a picture is unreadable)"
            )
        release = dict(continuous_update=False, style={"description_width": "4.5em"})  # "episode" whole
        self.controls = dict(
            split=widgets.Dropdown(
                options=browser.splits, value=split, description="split", style=release["style"]
            ),
            way=widgets.IntSlider(value=way, min=MIN_WAY, max=limits.max_way, description="way", **release),
            shot=widgets.IntSlider(
                value=shot, min=1, max=limits.max_shot(query), description="shot", **release
            ),
            query=widgets.IntSlider(
                value=query, min=1, max=limits.max_query(shot), description="query", **release
            ),
            seed=widgets.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", **release),
            episode=widgets.BoundedIntText(
                value=episode, min=0, max=2**31 - 1, description="episode", **release
            ),
        )
        for name, control in self.controls.items():
            control.add_class(f"fsl-explorer-{name}")
            control.observe(self._changed, names="value")
        self.status = widgets.Label(value="drawing…").add_class("fsl-explorer-status")
        # at its own size, so that its text stays readable however large the episode (the column would stretch
        # it, blurred; fitting a wide one to the panel would shrink its names to a few pixels), in a frame that
        # scrolls beyond the panel's width or most of the window's height: the controls stay in view
        picture_layout = widgets.Layout(width="auto", max_width="none", align_self="flex-start")
        self.image = widgets.Image(format="png", layout=picture_layout).add_class("fsl-explorer-image")
        frame = widgets.Layout(overflow="auto", max_width="100%", max_height="75vh", align_items="flex-start")
        c = self.controls
        self.box = widgets.VBox(
            [
                widgets.HBox([c["split"], c["seed"], c["episode"]]),
                widgets.HBox([c["way"], c["shot"], c["query"]]),
                self.status,
                widgets.Box([self.image], layout=frame).add_class("fsl-explorer-frame"),
            ]
        ).add_class("fsl-explorer")
        self._draw(self.settings())  # the first picture, before anything is displayed

    # -- state ----------------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The controls' values: {"split", "way", "shot", "query", "seed", "episode"}."""
        return {name: control.value for name, control in self.controls.items()}

    @property
    def png(self) -> bytes:
        """The PNG bytes of the picture shown (b"" only when not even the first episode could be drawn)."""
        return bytes(self.image.value)

    def _changed(self, change: dict[str, Any]) -> None:
        """A control's value changed: adjust the ranges the others allow, then ask for a picture."""
        if self._quiet:
            return
        c = self.controls
        self._quiet += 1
        try:
            limits = self.browser.limits(c["split"].value)
            if change["owner"] is c["split"]:
                # fit() never raises a value, so a max at the fitted value lowers exactly the values above it
                way, shot, query = limits.fit(c["way"].value, c["shot"].value, c["query"].value)
                c["way"].max, c["shot"].max, c["query"].max = limits.max_way, shot, query
                c["way"].value, c["shot"].value, c["query"].value = way, shot, query
            c["shot"].max = limits.max_shot(c["query"].value)
            c["query"].max = limits.max_query(c["shot"].value)
        except ValueError as error:  # a split that cannot be read: say why, keep the last picture
            self.status.value = f"cannot read split {c['split'].value!r}: {error}"
            return
        finally:
            self._quiet -= 1
        self.request()

    # -- drawing --------------------------------------------------------------------------------------------
    def request(self) -> None:
        """Ask for the picture of the current settings; it replaces any request not yet being drawn."""
        settings = self.settings()
        with self._condition:
            if self._closed:
                return
            self._pending = settings
            self.status.value = "drawing…"
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="episode-explorer", daemon=True)
                self._worker.start()
            self._condition.notify_all()

    def _work(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                settings, self._pending = self._pending, None
                self._busy = True
            try:
                if settings != self._shown:
                    self._draw(settings)
                else:  # back to the settings on screen while a picture of other ones was drawn
                    with self._condition:
                        if self._pending is None:
                            self.status.value = episode_title(**settings)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _draw(self, settings: dict[str, Any]) -> None:
        """Draw ``settings`` and show the picture, unless newer settings were requested meanwhile."""
        start = time.perf_counter()
        title = episode_title(**settings)
        try:
            png = figure_png(self.browser.figure(index=settings["episode"], **_without(settings, "episode")))
        except ValueError as error:  # an episode this split cannot make: say why, keep the last picture
            message = f"cannot draw this episode: {error}"
            png = None
        except Exception as error:  # the worker must survive to draw the next request
            message = f"drawing failed: {type(error).__name__}: {error}"
            png = None
        with self._condition:
            if self._pending is not None:  # stale: newer settings wait to be drawn
                return
            if png is None:
                self.status.value = message
                return
            self.image.value = png  # (no tooltip: ipywidgets' ImageView fails to render one)
            self.status.value = f"{title} (drawn in {time.perf_counter() - start:.1f} s)"
            self._shown = settings
            self.drawn.append(settings)

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until every request is drawn (or dropped); False when ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(left)
        return True

    def close(self) -> None:
        """Stop the worker thread and close the widgets."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)
        for widget in (*self.controls.values(), self.status, self.image, *self.box.children, self.box):
            widget.close()

    # -- display --------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)

    def show(self, static_copy: str | Path | None = None) -> Path | None:
        """Display the explorer. In a headless run (the notebook runner, papermill, ``jupyter nbconvert
        --execute``: ``fsl_core.progress.headless_kernel``), where nobody moves the controls and the saved
        notebook keeps no widget state, also show its first picture as a plain image and write it to
        ``static_copy``; returns that path (None in a live session, where the explorer is the only picture)."""
        from IPython.display import display

        display(self)
        if static_copy is None or not (runner_lines() or headless_kernel()) or not self.drawn:
            return None
        display(Image(data=self.png))
        return atomic_write_bytes(self.png, static_copy)


def _without(settings: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != key}


__all__ = [
    "load_episode",
    "plot_episode",
    "EpisodeBrowser",
    "EpisodeExplorer",
    "EpisodeLimits",
    "episode_title",
]
