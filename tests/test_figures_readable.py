"""Every figure of fsl_core.viz is readable at the size JupyterLab shows it: no text under MIN_FONT_SIZE, no
figure wider than MAX_FIGURE_WIDTH, legends outside the data, no two texts on top of each other, units on the
axes, marks as well as colours for right and wrong, a sentence instead of a plot of one repeated value, and no
panel for learned scalars that never changed."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from unittest import mock

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image

from fsl_core.data import AUGMENTATIONS, PART_NAMES, Episode
from fsl_core.data.birds.taxonomy import GROUP_NAMES
from fsl_core.viz import (
    plot_accuracy_bars,
    plot_accuracy_histogram,
    plot_cams,
    plot_confusion,
    plot_episode,
    plot_error_maps,
    plot_level_scores,
    plot_parts,
    plot_query_masks,
    plot_training_curves,
    set_theme,
)
from fsl_core.viz.augmentation import plot_augmentations
from fsl_core.viz.dataset import plot_appearance, plot_split_counts
from fsl_core.viz.gsfl import plot_ari_per_k, plot_feature_pca, plot_probes
from fsl_core.viz.mask_statistics import plot_mask_statistics
from fsl_core.viz.parts import plot_part_areas
from fsl_core.viz.plots import (
    FIGURE_DPI,
    MAX_FIGURE_WIDTH,
    MIN_FONT_SIZE,
    RIGHT_COLOUR,
    RIGHT_MARK,
    WRONG_COLOUR,
    WRONG_MARK,
    figure_png,
    plot_scalars,
)
from fsl_core.viz.pointing import plot_pointing_game
from fsl_core.viz.predictions import plot_explanation, plot_predictions

# class names as the generated birds set makes them: long, with marks joined by '-' and '+'
NAMES = [
    "g00_finch_s01_eyering-yellow+wingbar-blue",
    "g01_warbler_s00_crown-yellow",
    "g02_tanager_s00_crown-black",
    "g03_thrush_s02_breast-spots-white+tailtip-red",
    "g04_sparrow_s03_beak-long",
    "g05_jay_s01_wingbar-white",
    "g06_wren_s02_crown-red+eyering-white",
    "g07_oriole_s00_tailtip-black",
    "g08_bunting_s01_beak-red",
    "g09_flycatcher_s02_spots-black+crown-blue",
]
MANY_NAMES = [  # 25 classes, the most the embedded birds set's test split holds
    f"g{group:02d}_{GROUP_NAMES[group]}_s{species:02d}_crown-yellow+wingbar-blue"
    for group in range(5)
    for species in range(5)
]
GROUPS = list(GROUP_NAMES[:10])
rng = np.random.default_rng(0)


def episode(way: int = 5, shot: int = 1, query: int = 3, size: int = 32) -> Episode:
    return Episode(
        torch.randn(way * shot, 3, size, size),
        torch.arange(way).repeat_interleave(shot),
        torch.randn(way * query, 3, size, size),
        torch.arange(way).repeat_interleave(query),
        torch.arange(way),
    )


def metrics(scalars: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4, 5],
            "loss": [1.6, 1.3, 1.1, 1.0, 0.95],
            "train_acc": [30.0, 42.0, 50.0, 55.0, 57.0],
            "val_acc": [None, 45.0, None, 52.0, 54.0],
            "val_ci95": [None, 2.0, None, 1.9, 1.8],
            "lr": [0.1, 0.09, 0.065, 0.035, 0.01],
            **scalars,
            "episodes": [20] * 5,
            "seconds": [12.0, 11.5, 11.8, 12.1, 11.9],
        }
    )


HMDRN_SCALARS = {
    "w_last": [0.5, 0.7, 0.8, 0.85, 0.9],
    "w_mid": [0.5, 0.4, 0.3, 0.3, 0.25],
    "gamma": [1, 2, 3, 4, 5],
}
ABLATION = pd.DataFrame(
    [
        {"model": model, "shot": shot, "mean": 40 + 3 * i + 12 * (shot == 5), "ci95": 1.1}
        for i, model in enumerate(
            ["single level, no mask", "+ second level", "+ mask", "HMDRN (full)", "FRN", "BiFRN", "ProtoNet"]
        )
        for shot in (1, 5)
    ]
)


def per_class(counts: list[int]) -> pd.DataFrame:
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    return pd.DataFrame(
        {
            "split": [splits[i % 10] for i in range(len(counts))],
            "class": [f"{NAMES[i % 10]}_{i}" for i in range(len(counts))],
            "group": [GROUPS[i % 10] for i in range(len(counts))],
            "images": counts,
        }
    )


def appearance(sizes: list[tuple[int, int]]) -> pd.DataFrame:
    n = len(sizes)
    colours = rng.random((n, 3))
    return pd.DataFrame(
        {
            "split": [["train", "val", "test"][i % 3] for i in range(n)],
            "class": [NAMES[i % 10] for i in range(n)],
            "group": [GROUPS[i % 10] for i in range(n)],
            "width": [w for w, _ in sizes],
            "height": [h for _, h in sizes],
            "red": colours[:, 0],
            "green": colours[:, 1],
            "blue": colours[:, 2],
            "brightness": colours.mean(1),
        }
    )


def mask_summary() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "level": level,
                "layer": layer,
                "object_share": 60 + 5 * layer,
                "random_object_share": 45.0,
                "part_iou": 20 + 2 * layer,
                "random_part_iou": 10.0,
            }
            for level in ("last", "mid")
            for layer in (1, 2, 3)
        ]
    )


def feature_pca() -> Figure:
    labels = np.repeat(np.arange(12), 6)
    group_of = np.arange(12) % 4
    features = {"s": rng.normal(size=(72, 16)), "d": rng.normal(size=(72, 16))}
    return plot_feature_pca(features, labels, group_of, dict(enumerate(GROUPS[:4])), [*NAMES, "x_1", "x_2"])


def parts() -> Figure:
    images = [rng.random((32, 32, 3)) for _ in range(4)]
    maps = [rng.integers(0, len(PART_NAMES), (32, 32)) for _ in range(4)]
    marks = [m == 8 for m in maps]
    titles = [f"{name}\n(crown, wing_bar)" for name in NAMES[:4]]
    return plot_parts(images, maps, marks, titles)


def explanation() -> Figure:
    """HMDRN's explanation of a query among six birds classes with long names and logit shares of every size."""
    probabilities = dict(zip(NAMES[:6], [0.4, 0.3, 0.15, 0.1, 0.03, 0.02]))
    generator = torch.Generator().manual_seed(0)
    return plot_explanation(
        torch.randn(3, 84, 84, generator=generator),
        rng.random((84, 84)),
        probabilities,
        NAMES[0],
        kept_tokens={
            "last": torch.rand(25, generator=generator),
            "mid": torch.rand(100, generator=generator),
        },
        token_errors={
            "last": 20 * torch.rand(6, 25, generator=generator),
            "mid": torch.rand(6, 100, generator=generator),
        },
        level_scores={
            "last": torch.randn(6, generator=generator) / 100,
            "mid": 30 * torch.randn(6, generator=generator),
        },
        title=f"query.png: {NAMES[0]} (40%)",
    )


FIGURES: dict[str, Callable[[], Figure]] = {
    "explanation": explanation,
    "training curves": lambda: plot_training_curves(metrics(HMDRN_SCALARS), title="hmdrn / conv4"),
    "accuracy bars": lambda: plot_accuracy_bars(
        ABLATION, hue="shot", chance=20.0, title="ablation: test accuracy (%) ± 95% CI"
    ),
    "accuracy histogram": lambda: plot_accuracy_histogram(
        {"5-way 1-shot": rng.uniform(20, 90, 200), "5-way 5-shot": rng.uniform(40, 100, 200)},
        title="per-episode accuracy (%)",
    ),
    "scalars": lambda: plot_scalars({"w_last": 0.9, "w_mid": 0.25, "gamma": 5.2}, "learned fusion scalars"),
    "episode": lambda: plot_episode(episode(), NAMES, title="a 5-way 1-shot test episode"),
    "predictions": lambda: plot_episode(
        episode(), NAMES, predictions=[0, 1, 0, 1, 1, 1, 2, 3, 2, 3, 3, 3, 4, 4, 0], title="hmdrn predictions"
    ),
    "confusion": lambda: plot_confusion(
        rng.integers(0, 30, (10, 10)) + 60 * np.eye(10, dtype=int),
        NAMES,
        classes=list(range(8)),
        title="most confused classes (5-way 1-shot)",
    ),
    "grad-cam": lambda: plot_cams(
        [torch.randn(3, 32, 32) for _ in range(5)],
        {m: rng.random((5, 32, 32)) for m in ("hmdrn", "frn", "bifrn", "protonet")},
        titles=NAMES[:5],
        correct={m: [True, False, True, True, False] for m in ("hmdrn", "frn", "bifrn", "protonet")},
        caption="each map explains the query's true class (its log-probability); a white cross marks its peak",
    ),
    "masks": lambda: plot_query_masks(
        torch.randn(3, 84, 84),
        {"last": torch.rand(3, 2, 25) > 0.5, "mid": torch.rand(3, 2, 100) > 0.5},
        title="query of class g00 finch s01",
    ),
    "parts": parts,
    "part areas": lambda: plot_part_areas(
        pd.DataFrame(
            {"bird": rng.uniform(20, 50, 60), "discriminative parts": rng.uniform(1, 5, 60)}  # percent
        ),
        "test",
    ),
    "error maps": lambda: plot_error_maps(
        torch.randn(3, 84, 84),
        torch.rand(5, 25),
        NAMES[:5],
        true_class=1,
        title="level last: reconstruction error",
    ),
    "level scores": lambda: plot_level_scores(
        {"last": torch.rand(5), "mid": torch.rand(5)}, NAMES[:5], true_class=2
    ),
    "error maps, 25-way": lambda: plot_error_maps(  # errors in the thousands, as a trained model's mid level
        torch.randn(3, 84, 84), 30 * torch.rand(25, 100) + 10, MANY_NAMES, true_class=13, title="level mid"
    ),
    "level scores, 25-way": lambda: (
        plot_level_scores(  # the prediction beside the true class: two 2-line names
            {
                "last": torch.linspace(0.0, 0.5, 25),
                "mid": torch.linspace(0.0, 0.5, 25).flip(0) + 2.0 * (torch.arange(25) == 23),
            },
            MANY_NAMES,
            true_class=24,
        )
    ),
    "your predictions": lambda: plot_predictions(  # 78 % beside a bar that ends at 78 %: inside its end
        {
            f"photo{i}.jpg": Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            for i in range(3)
        },
        pd.DataFrame(
            [[0.78, 0.12, 0.10], [0.34, 0.33, 0.33], [0.05, 0.05, 0.90]],
            index=[f"photo{i}.jpg" for i in range(3)],
            columns=["finch", "warbler", "tanager"],
        ),
    ),
    "your predictions, long names": lambda: plot_predictions(  # two lines beside each bar, the rest elided
        {
            f"photo{i}.jpg": Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            for i in range(5)
        },
        pd.DataFrame(
            np.tile([[0.62, 0.30, 0.08]], (5, 1)),
            index=[f"photo{i}.jpg" for i in range(5)],
            columns=["finch red eye", "finch white crown", "g03_tit_crown-white+wingbar-red+tail-blue"],
        ),
    ),
    "ARI per K": lambda: plot_ari_per_k(pd.DataFrame({"K": [1, 3, 5, 10], "ARI": [0.0, 0.4, 0.7, 0.95]}), 10),
    "probes": lambda: plot_probes(
        {
            "s_to_group": 80.0,
            "s_to_class": 20.0,
            "d_to_class": 70.0,
            "d_to_group": 75.0,
            "raw_to_class": 60.0,
        },
        60,
        10,
    ),
    "feature PCA": feature_pca,
    "pointing game": lambda: plot_pointing_game(
        pd.DataFrame(
            {"parts": [40.0, 30.0, 35.0, 10.0], "parts_random": [10.0] * 4, "bird": [80.0, 70.0, 75.0, 50.0]}
            | {
                "bird_random": [30.0] * 4,
                "queries": [40] * 4,
            },  # in percent, as pointing_game_table gives them
            index=["hmdrn", "frn", "bifrn", "protonet"],
        )
    ),
    "mask statistics": lambda: plot_mask_statistics(mask_summary()),
    "split counts": lambda: plot_split_counts(per_class(list(rng.integers(30, 41, 100))), by_group=True),
    "appearance": lambda: plot_appearance(appearance([(84, 84), (84, 84), (120, 90)] * 20), "group"),
    "augmentations": lambda: plot_augmentations(
        torch.randn(len(AUGMENTATIONS), 5, 3, 32, 32), tuple(AUGMENTATIONS), NAMES[:5]
    ),
}
ACCURACY_AXES = {  # figure → the axes label that shows an accuracy (in %)
    "training curves": "accuracy (%)",
    "accuracy bars": "accuracy (%)",
    "accuracy histogram": "accuracy of an episode (%); dashed: the mean",
    "probes": "held-out probe accuracy (%)",
    "pointing game": "hit rate (%)",
}


@pytest.fixture(params=["notebook theme", "matplotlib defaults"])
def theme(request: pytest.FixtureRequest) -> Iterator[None]:
    """The notebooks' seaborn theme (``set_theme``), or matplotlib's own defaults; restored afterwards."""
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        if request.param == "notebook theme":
            set_theme()
        yield


def drawn(fig: Figure) -> list[Text]:
    """Draw ``fig`` (on an Agg canvas, layout included) and return the texts that were drawn: every visible,
    non-empty text (tick labels in view, titles, labels, legends, annotations)."""
    texts: list[Text] = []
    draw = Text.draw

    def record(self: Text, renderer: object) -> None:
        draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            texts.append(self)

    FigureCanvasAgg(fig)
    with mock.patch.object(Text, "draw", record):
        fig.canvas.draw()
    return texts


def extent(artist: Text | matplotlib.legend.Legend) -> Bbox:
    return artist.get_window_extent(artist.figure.canvas.get_renderer())


def overlap(a: Bbox, b: Bbox) -> float:
    """The area two boxes share, in square pixels."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_is_readable(name: str, theme: None) -> None:
    fig = FIGURES[name]()
    texts = drawn(fig)
    assert texts
    small = {t.get_text(): t.get_fontsize() for t in texts if t.get_fontsize() < MIN_FONT_SIZE}
    assert small == {}, f"text under {MIN_FONT_SIZE} pt"
    # legends beside the data, never over it
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            assert overlap(extent(legend), extent(ax)) == 0.0, (
                f"a legend covers the data of {ax.get_title()!r}"
            )
    # no two texts on top of each other
    boxes = [(t.get_text(), extent(t)) for t in texts]
    clashes = [
        (a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1 :] if overlap(box, other) > 1.0
    ]
    assert clashes == []
    # at most MAX_FIGURE_WIDTH wide as shown: the PNG of show_figure, cropped to what it holds plus a margin of
    # 0.1 inch (savefig's pad_inches) on each side
    width = struct.unpack(">I", figure_png(fig)[16:20])[0]
    assert width <= (MAX_FIGURE_WIDTH + 0.2) * FIGURE_DPI + 1, width


@pytest.mark.parametrize("name", ACCURACY_AXES)
def test_accuracy_axes_say_percent(name: str) -> None:
    fig = FIGURES[name]()
    labels = [label for ax in fig.axes for label in (ax.get_xlabel(), ax.get_ylabel())]
    assert ACCURACY_AXES[name] in labels and "%" in ACCURACY_AXES[name]


def test_the_predictions_figure_marks_every_query_and_names_both_column_groups() -> None:
    way, query = 5, 3
    predictions = [0, 1, 0, 1, 1, 1, 2, 3, 2, 3, 3, 3, 4, 4, 0]
    fig = plot_episode(episode(way, 1, query), NAMES, predictions=predictions)
    drawn(fig)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles.count("support") == 1 and titles.count("query") == 1
    marks = [ax.xaxis.label for ax in fig.axes if ax.get_xlabel()]
    assert len(marks) == way * query
    truth = np.repeat(np.arange(way), query)
    for label, guess, true in zip(marks, predictions, truth):
        right = guess == true
        assert label.get_text().startswith(RIGHT_MARK if right else WRONG_MARK)
        assert label.get_text()[2:].replace("\n", "").replace(" ", "") == NAMES[guess].replace("_", "")
        assert matplotlib.colors.same_color(label.get_color(), RIGHT_COLOUR if right else WRONG_COLOUR)
    assert sum(m.get_text().startswith(WRONG_MARK) for m in marks) == 3
    # without predictions: the same headers, no marks
    fig = plot_episode(episode(way, 1, query), NAMES)
    assert [ax.get_title(loc="left") for ax in fig.axes].count("query") == 1
    assert not [ax for ax in fig.axes if ax.get_xlabel()]


def test_a_single_repeated_value_is_said_not_plotted() -> None:
    fig = plot_split_counts(per_class([40] * 30), by_group=True)
    first = fig.axes[0]
    assert [t.get_text().replace("\n", " ") for t in first.texts] == ["every class has 40 images"]
    assert not first.axison and not first.patches and not first.collections
    varied = plot_split_counts(per_class([40] * 29 + [39]), by_group=False).axes[0]
    assert not varied.texts and varied.patches  # a box plot
    fig = plot_appearance(appearance([(84, 84)] * 12), "split")
    first = fig.axes[0]
    assert [t.get_text().replace("\n", " ") for t in first.texts] == ["every image is 84 × 84 pixels"]
    assert not first.axison and not first.collections
    colours = fig.axes[1]  # the splits in the data set's order, as the counts show them, not alphabetical
    assert [t.get_text() for t in colours.get_yticklabels()] == ["train", "val", "test"]


def test_learned_scalars_that_never_changed_get_no_panel() -> None:
    protonet = plot_training_curves(metrics({"scale": [1.0] * 5}))  # ProtoNet with a fixed scale
    assert [ax.get_ylabel() for ax in protonet.axes] == ["loss", "accuracy (%)"]
    hmdrn = plot_training_curves(
        metrics({**HMDRN_SCALARS, "w_mid": [0.5] * 5})
    )  # w_mid fixed, the rest learned
    assert [ax.get_ylabel() for ax in hmdrn.axes] == ["loss", "accuracy (%)", "learned scalar"]
    assert [t.get_text() for t in hmdrn.axes[2].get_legend().get_texts()] == ["w_last", "gamma"]
    fractions = metrics({}).assign(train_acc=lambda f: f.train_acc / 100, val_acc=lambda f: f.val_acc / 100)
    accuracy = plot_training_curves(fractions).axes[1]
    assert max(accuracy.lines[0].get_ydata()) == pytest.approx(57.0)  # fractions are shown in %


def test_class_colours_of_the_feature_pca_are_not_the_group_colours() -> None:
    figure = feature_pca()
    top, bottom = np.asarray(figure.axes[:4], dtype=object).reshape(2, 2)  # rows: by group, by class
    drawn = [
        {
            tuple(np.round(colour, 3))
            for ax in row
            for collection in ax.collections
            for colour in collection.get_facecolors()
        }
        for row in (top, bottom)
    ]
    assert len(drawn[0]) == 4 and len(drawn[1]) == 10  # 4 groups; the first 10 classes
    assert not drawn[0] & drawn[1]


def test_a_dead_shared_part_is_said_not_plotted_as_one_point() -> None:
    labels = np.repeat(np.arange(12), 6)
    features = {"s": np.zeros((72, 16)), "d": rng.normal(size=(72, 16))}
    figure = plot_feature_pca(
        features, labels, np.arange(12) % 4, dict(enumerate(GROUPS[:4])), [*NAMES, "x", "y"]
    )
    (s_group, d_group), (s_class, d_class) = np.asarray(figure.axes[:4], dtype=object).reshape(2, 2)
    for ax in (s_group, s_class):
        assert not ax.collections and not ax.axison
        assert (
            " ".join(t.get_text() for t in ax.texts).split()
            == "s is 0 for every image: nothing to project".split()
        )
    assert (
        s_group.get_title() == "s: coloured by true group" and len(d_group.collections[0].get_offsets()) == 72
    )
    # nearly constant (as s after a short training: a spread of 1e-9 around -1.8e-3): said too, no offset text
    nearly = {"s": -1.8e-3 + 1e-9 * rng.normal(size=(72, 16)), "d": features["d"]}
    s_group = plot_feature_pca(
        nearly, labels, np.arange(12) % 4, dict(enumerate(GROUPS[:4])), [*NAMES, "x", "y"]
    )
    s_group = s_group.axes[0]
    assert (
        not s_group.collections
        and "almost one value (its spread is under 0.01 % of its size)"
        in " ".join(" ".join(t.get_text() for t in s_group.texts).split())
    )
