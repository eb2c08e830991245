"""Episodes as pictures, and an ipywidgets browser to page through them.

An episode is drawn exactly as training and evaluation draw it (``EpisodeSampler``: a pure function of the
seed and the episode index), so what the browser shows for (split, way, shot, seed) is what a model sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from IPython.display import Image
from matplotlib.figure import Figure

from fsl_core.data import Episode, EpisodeCollate, EpisodeSampler, FewShotFolder

from .plots import figure_png, image_array, wrap_label


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
    """A row per class: its support images, then (after a gap) up to ``max_query`` of its queries.

    ``class_names``: names of the data set's classes (indexed by ``episode.class_ids``); ``predictions``:
    predicted episode class per query (titles turn green when right, red when wrong).
    """
    way = len(episode.class_ids)
    shot = len(episode.support_labels) // way
    query = len(episode.query_labels) // way
    shown = min(query, max_query)
    columns = shot + 1 + shown
    label_width = 0.0 if class_names is None else 1.2
    fig = Figure(
        figsize=(1.2 * (columns - 0.8) + label_width, 1.2 * way + (0.4 if title else 0.1)),
        layout="constrained",
    )
    axes = fig.subplots(way, columns, squeeze=False, width_ratios=[1.0] * shot + [0.2] + [1.0] * shown)
    for c in range(way):
        name = wrap_label(class_names[int(episode.class_ids[c])]) if class_names is not None else f"class {c}"
        for s in range(shot):
            ax = axes[c, s]
            ax.imshow(image_array(episode.support_images[c * shot + s]))
            if s == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
        for q in range(shown):
            ax = axes[c, shot + 1 + q]
            i = c * query + q
            ax.imshow(image_array(episode.query_images[i]))
            if predictions is not None:
                right = int(predictions[i]) == c
                guess = int(predictions[i])
                label = (
                    wrap_label(class_names[int(episode.class_ids[guess])])
                    if class_names is not None
                    else f"class {guess}"
                )
                ax.set_title(label, fontsize=6, color="green" if right else "red")
    axes[0, 0].set_title("support", fontsize=8, loc="left")
    if shown and predictions is None:
        axes[0, shot + 1].set_title("query", fontsize=8, loc="left")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(bool(ax.images))
    for c in range(way):
        axes[c, shot].set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


class EpisodeBrowser:
    """Draws episodes of a few-shot folder data set; ``widget()`` wraps it in ``ipywidgets.interactive``.

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

    def dataset(self, split: str) -> FewShotFolder:
        """The split's data set with the evaluation transform (loaded once)."""
        if split not in self._datasets:
            self._datasets[split] = FewShotFolder(
                self.root, split, transform="eval", image_size=self.image_size
            )
        return self._datasets[split]

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
            title=f"{split}: {way}-way {shot}-shot, seed {seed}, episode {index}",
        )

    def widget(self, split: str | None = None, way: int = 5, shot: int = 1, query: int = 2, seed: int = 0):
        """An ``ipywidgets.interactive`` with split, way, shot, query, seed and episode controls.

        The picture goes into an ``Output`` widget appended to the controls, written through its ``outputs``
        state (not by capturing display calls), so kernels without a front end (papermill) never wait on it.
        """
        import ipywidgets as widgets

        picture = widgets.Output()

        def show(split: str, way: int, shot: int, query: int, seed: int, episode: int) -> None:
            picture.outputs = ()
            try:
                png = figure_png(self.figure(split, way, shot, query, seed, episode))
            except ValueError as error:  # an impossible episode for this split: say why
                picture.append_stdout(f"cannot draw this episode: {error}\n")
                return
            picture.append_display_data(Image(data=png))

        max_way = max(len(self.dataset(s).classes) for s in self.splits)
        controls = dict(
            split=widgets.Dropdown(options=self.splits, value=split or self.splits[-1], description="split"),
            way=widgets.IntSlider(value=way, min=2, max=max(2, min(max_way, 20)), description="way"),
            shot=widgets.IntSlider(value=shot, min=1, max=10, description="shot"),
            query=widgets.IntSlider(value=query, min=1, max=8, description="query"),
            seed=widgets.IntText(value=seed, description="seed"),
            episode=widgets.IntText(value=0, description="episode"),
        )
        browser = widgets.interactive(show, **controls)
        browser.children = (*browser.children, picture)
        return browser


__all__ = ["load_episode", "plot_episode", "EpisodeBrowser"]
