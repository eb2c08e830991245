"""fsl_core.viz: token masks over images, ground truth on the token grid, the Grad-CAM wrapper, the pointing
game, reconstruction errors, confusions, figures and the episode browser."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgba

from fsl_core.data import EpisodeSampler, FewShotFolder, eval_transform, load_metadata
from fsl_core.data.transforms import denormalize
from fsl_core.models import build_model
from fsl_core.models.backbones import in_papers_form
from fsl_core.runtime import evaluation_mode
from fsl_core.viz import (
    EpisodeCAM,
    GroundTruth,
    confused_pairs,
    episode_cams,
    load_episode,
    plot_accuracy_bars,
    plot_cams,
    plot_episode,
    plot_error_maps,
    plot_level_scores,
    plot_query_masks,
    plot_training_curves,
    pointing_game,
    random_point_rate,
    save_figure,
)
from fsl_core.viz.confusion import class_groups, most_confused, within_group_error_share
from fsl_core.viz.gradcam import cam_overlay, flat_maps, peak_points, plot_episode_cams, target_layer
from fsl_core.viz.masks import align_to_eval, mask_agreement, token_fractions, token_grid, upsample_tokens
from fsl_core.viz.parts import part_area_shares, plot_part_areas, plot_part_examples
from fsl_core.viz.plots import RIGHT_COLOUR, WRONG_COLOUR, image_array
from fsl_core.viz.reconstruction import error_maps, true_class_best_rate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- masks ---------------------------------------------------------------------------------------------------
def test_upsample_tokens_puts_each_token_on_its_cell() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 5.0]])  # two 2x2 grids, row-major
    pixels = upsample_tokens(values, 8)
    assert pixels.shape == (2, 8, 8)
    assert torch.equal(pixels[0, :4, :4], torch.full((4, 4), 1.0))
    assert torch.equal(pixels[0, :4, 4:], torch.full((4, 4), 2.0))
    assert torch.equal(pixels[0, 4:, :4], torch.full((4, 4), 3.0))
    assert torch.equal(pixels[1, 4:, 4:], torch.full((4, 4), 5.0))
    assert float(pixels[1].sum()) == 5.0 * 16


def test_upsample_tokens_of_layered_boolean_masks_and_non_square_grids() -> None:
    masks = torch.zeros(3, 2, 2, 25, dtype=torch.bool)  # (query, layers, heads, N)
    masks[..., 0] = True
    pixels = upsample_tokens(masks, (84, 84))
    assert pixels.shape == (3, 2, 2, 84, 84) and pixels.dtype == torch.float32
    assert set(pixels.unique().tolist()) == {0.0, 1.0}
    assert float(pixels[0, 0, 0, :16, :16].min()) == 1.0 and float(pixels[0, 0, 0, 20:, 20:].max()) == 0.0
    wide = upsample_tokens(torch.arange(6.0), (4, 6), feature_size=(2, 3))
    assert wide[0, 5] == 2.0 and wide[3, 0] == 3.0
    with pytest.raises(ValueError, match="square"):
        token_grid(6)
    with pytest.raises(ValueError, match="holds 6 tokens"):
        token_grid(25, (2, 3))


def test_token_fractions_average_a_pixel_mask_down_to_the_grid() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, :4] = True
    mask[4:, 4:6] = True
    assert token_fractions(mask, (2, 2)).tolist() == [1.0, 0.0, 0.0, 0.5]
    binary = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    assert torch.equal(token_fractions(upsample_tokens(binary, 12), (3, 3)), binary)


def test_align_to_eval_follows_the_evaluation_geometry() -> None:
    mask = np.zeros((84, 84), dtype=bool)
    mask[10:30, 50:80] = True
    aligned = align_to_eval(mask, 84)
    assert aligned.shape == (84, 84) and aligned.dtype == bool
    from PIL import Image

    picture = Image.fromarray((np.stack([mask] * 3, axis=-1) * 255).astype(np.uint8))
    seen = denormalize(eval_transform(84)(picture))[0].numpy() > 0.5
    assert (aligned & seen).sum() / (aligned | seen).sum() > 0.95
    ids = align_to_eval(np.arange(84 * 84, dtype=np.int64).reshape(84, 84) % 7, 42)
    assert ids.shape == (42, 42) and ids.dtype == np.int64 and set(np.unique(ids)) <= set(range(7))


def test_mask_agreement_scores_a_mask_on_the_parts_above_random() -> None:
    part = torch.zeros(25)
    part[[6, 7, 8]] = 1.0
    obj = torch.zeros(25)
    obj[5:15] = 1.0
    kept = torch.zeros(2, 25, dtype=torch.bool)
    kept[:, [6, 7, 8]] = True
    scores = mask_agreement(kept, obj, part, random_draws=200)
    assert scores["part_iou"] == pytest.approx(1.0) and scores["object_share"] == pytest.approx(1.0)
    assert scores["kept_share"] == pytest.approx(3 / 25)
    assert scores["random_part_iou"] < 0.3 and scores["random_object_share"] == pytest.approx(
        10 / 25, abs=0.06
    )
    with pytest.raises(ValueError, match="tokens"):
        mask_agreement(kept, obj[:9], part)


# -- Grad-CAM ------------------------------------------------------------------------------------------------
def _episode(way: int = 3, shot: int = 2, query: int = 2, size: int = 32) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    support = torch.randn(way * shot, 3, size, size, generator=generator)
    labels = torch.arange(way).repeat_interleave(shot)
    queries = torch.randn(way * query, 3, size, size, generator=generator)
    return support, labels, queries


@pytest.mark.parametrize("name", ["protonet", "frn", "bifrn", "hmdrn"])
def test_episode_cam_gives_the_logits_of_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, "conv4", image_size=32).eval()
    support, labels, queries = _episode()
    wrapper = EpisodeCAM(model, support, labels)
    with torch.no_grad():
        wrapped = wrapper(queries)
        direct = model.head(model.embed(support, False), labels, model.embed(queries, True), 3)
        full = model(support, labels, queries)
    assert wrapped.shape == (6, 3)
    torch.testing.assert_close(wrapped, direct)
    torch.testing.assert_close(wrapped, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["protonet", "hmdrn"])
def test_episode_cams_are_real_maps_in_the_unit_range(name: str) -> None:
    torch.manual_seed(1)
    model = build_model(name, "conv4", image_size=32)
    model.train()
    support, labels, queries = _episode()
    cams = episode_cams(model, support, labels, queries, classes=torch.arange(3).repeat_interleave(2))
    assert cams.shape == (6, 32, 32) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6
    varied = cams[~flat_maps(cams)]
    assert len(varied) > 0  # each map with evidence spans [0, 1]
    assert np.allclose(varied.min(axis=(1, 2)), 0.0, atol=1e-6)
    assert np.allclose(varied.max(axis=(1, 2)), 1.0, atol=1e-5)
    assert model.training, "the model's train/eval mode is restored"
    assert target_layer(model) is model.backbone.blocks[-1]
    with pytest.raises(ValueError, match="outside the episode's classes"):
        episode_cams(model, support, labels, queries[:1], classes=[3])


@pytest.mark.parametrize(
    "backbone,inner",
    [("conv4", lambda b: b.blocks[1][1]), ("resnet12", lambda b: b.stages[1].conv1)],
    ids=["conv4-batchnorm", "resnet12-conv1"],
)
def test_episode_cams_of_an_inner_layer_use_its_own_output(backbone: str, inner) -> None:
    """A layer whose output an in-place activation overwrites further on (the ReLU after Conv-4's BatchNorm in
    the papers' form, the LeakyReLU after a ResNet-12 convolution in ours) must give the Grad-CAM of its own
    output: the same maps with the backbone in ours and in the papers' form, whichever of them works in place."""
    torch.manual_seed(0)
    model = build_model("protonet", backbone, image_size=32)
    support, labels, queries = _episode()
    ours = episode_cams(model, support, labels, queries, layer=inner(model.backbone))
    model.backbone = in_papers_form(model.backbone)
    papers = episode_cams(model, support, labels, queries, layer=inner(model.backbone))
    assert not flat_maps(ours).all()
    np.testing.assert_array_equal(ours, papers)


def test_episode_cams_fail_loudly_when_grad_cam_produces_nothing() -> None:
    model = build_model("protonet", "conv4", image_size=32)
    support, labels, queries = _episode()
    unused = torch.nn.Conv2d(3, 3, 1)  # not on the forward path: pytorch_grad_cam finds no activations
    with pytest.raises((RuntimeError, IndexError, AttributeError, TypeError)):
        episode_cams(model, support, labels, queries, layer=unused)


def test_pointing_game_on_a_hand_made_example() -> None:
    cams = np.zeros((4, 6, 6), dtype=np.float32)
    cams[0, 1, 4] = 1.0  # peak inside the region
    cams[1, 5, 0] = 1.0  # peak far from it
    cams[2, 3, 4] = 1.0  # peak one pixel below the region
    masks = np.zeros((4, 6, 6), dtype=bool)
    masks[:, 1:3, 3:5] = True  # 4 of 36 pixels
    hits = pointing_game(cams, masks)
    assert hits.tolist() == [True, False, False, False]  # the last map is flat: no peak, a miss
    assert pointing_game(cams, masks, tolerance=1).tolist() == [True, False, True, False]
    assert random_point_rate(masks).tolist() == pytest.approx([4 / 36] * 4)
    assert random_point_rate(masks, tolerance=1)[0] == pytest.approx(16 / 36)
    assert peak_points(cams)[3].tolist() == [-1, -1] and flat_maps(cams).tolist() == [
        False,
        False,
        False,
        True,
    ]
    plateau = np.zeros((1, 5, 5))
    plateau[0, 1:4, 1:4] = 1.0
    assert peak_points(plateau)[0].tolist() == [2, 2]
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(cams, masks[:2])


def test_pointing_game_summary_names_each_measure_and_intervals_the_counted_ones() -> None:
    from fsl_core.viz.pointing import plot_pointing_game, pointing_game_summary, pointing_game_table

    hits = [True] * 10 + [False] * 10  # 20 queries of one model: half hit the parts, none is flat
    records = pd.DataFrame(
        {
            "model": ["frn"] * 20 + ["hmdrn"] * 20,
            "episode": [0] * 40,
            "correct": hits + [True] * 20,
            "parts": hits + [True] * 20,
            "bird": [True] * 40,
            "flat_map": [False] * 40,
            "parts_random": [25.0] * 40,  # percent, as pointing_game_records gives them
            "bird_random": [50.0] * 40,
        }
    )
    table = pointing_game_table(records, ["hmdrn", "frn"])
    assert list(table.index) == ["hmdrn", "frn"] and table["queries"].tolist() == [20, 20]
    assert table.loc["frn", ["parts", "parts_random", "bird", "flat_map"]].tolist() == [
        50.0,
        25.0,
        100.0,
        0.0,
    ]  # %
    summary = pointing_game_summary(table)
    assert list(summary.columns) == [
        "peak on parts (%)",
        "random point on parts (%)",
        "peak on bird (%)",
        "random point on bird (%)",
        "flat map (%)",
        "classified right (%)",
    ]
    # Wilson 95 % intervals of 10/20 and 20/20 and 0/20: (29.9, 70.1), (83.9, 100.0), (0.0, 16.1)
    assert summary.loc["frn"].tolist() == [
        "50.0 [29.9, 70.1]",
        "25.0",
        "100.0 [83.9, 100.0]",
        "50.0",
        "0.0 [0.0, 16.1]",
        "50.0 [29.9, 70.1]",
    ]
    assert summary.loc["hmdrn", "peak on parts (%)"] == "100.0 [83.9, 100.0]"
    assert pointing_game_summary(pointing_game_table(records, ["bifrn"])).iloc[0].tolist() == ["–"] * 6
    # 11 hits of 20 is 55 % exactly (the mean times 100 gave 55.00000000000001)
    eleven = records.assign(parts=[True] * 11 + [False] * 29)
    assert pointing_game_table(eleven, ["frn"]).loc["frn", "parts"] == 55.0
    # 60 queries all on the bird: the interval of 100 % reaches it (rounding once put it a hair below)
    sixty = pd.concat([records, records]).head(60).assign(model="x", bird=True)
    assert len(sixty) == 60
    plot_pointing_game(pointing_game_table(sixty, ["x"]))
    # a model whose maps are all flat scores 0 %: its name says why, so the bar is not read as looking away
    flat = records.assign(flat_map=[True] * 20 + [False] * 20, parts=[False] * 20 + [True] * 20)
    figure = plot_pointing_game(pointing_game_table(flat, ["frn", "hmdrn"]))
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["frn\n100 % flat", "hmdrn"]


# -- reconstruction errors, confusion ------------------------------------------------------------------------
def test_reconstruction_error_helpers() -> None:
    errors = torch.ones(3, 2, 4)
    errors[0, 0] = 0.1  # query 0 (class 0) best rebuilt by class 0
    errors[1, 0] = 0.1  # query 1 (class 1) best rebuilt by class 0: wrong
    errors[2, 1] = 0.2  # query 2 (class 1) best rebuilt by class 1
    assert true_class_best_rate(errors, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert error_maps(errors).shape == (3, 2, 2, 2)
    fig = plot_error_maps(torch.rand(3, 32, 32), errors[0], ["a_b_c", "d"], true_class=0)
    panels, colourbars = fig.axes[:3], fig.axes[3:]
    assert [len(ax.images) for ax in panels] == [1, 2, 2]  # the query, then query + error overlay per class
    assert [ax.get_title() for ax in panels] == [
        "query",
        "a b c\n(true class)\nerror 0.4\n(lowest)",
        "d\nerror 4",
    ]
    assert [ax.get_ylabel() for ax in colourbars] == ["squared error"]
    overlays = [ax.images[1] for ax in panels[1:]]
    assert [im.get_clim() for im in overlays] == [(pytest.approx(0.1), pytest.approx(1.0))] * 2  # one scale
    outlined = [ax.spines["left"].get_edgecolor() == to_rgba(RIGHT_COLOUR) for ax in panels]
    assert outlined == [False, True, False]  # the true class
    # 13 classes wrap: six maps per row (the query first), the four cells left over blank
    fig = plot_error_maps(torch.rand(3, 32, 32), torch.rand(13, 4), [f"c{i}" for i in range(13)])
    cells = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in fig.axes[:-1]]
    assert cells == [(row, column) for row in range(3) for column in range(6)]
    assert [len(ax.images) for ax in fig.axes[:-1]] == [1] + [2] * 13 + [0] * 4
    assert [ax.axison for ax in fig.axes[14:-1]] == [False] * 4


def test_level_scores_name_the_prediction_and_the_true_class_one_row_each() -> None:
    scores = {"last": torch.tensor([0.1, 0.5, 0.2]), "mid": torch.tensor([0.3, 0.0, 0.1])}  # sums .4 .5 .3
    ax = plot_level_scores(scores, ["a_x", "b", "c"], true_class=0).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a x\n(true)", "b\n(predicted)", "c"]
    assert ax.get_yticklabels()[0].get_fontweight() == "bold"
    widths = sorted(
        (round(bar.get_y(), 2), round(bar.get_width(), 3)) for bar in ax.patches if bar.get_height()
    )
    assert [width for _, width in widths] == [0.1, 0.3, 0.5, 0.0, 0.2, 0.1]  # per class: last, then mid
    (diamonds,) = [c for c in ax.collections if c.get_label() == "sum of the levels"]  # what decides
    np.testing.assert_allclose(diamonds.get_offsets(), [[0.4, 0], [0.5, 1], [0.3, 2]], rtol=1e-6)
    ax = plot_level_scores(scores, ["a", "b", "c"], true_class=1).axes[0]
    assert ax.get_yticklabels()[1].get_text() == "b\n(true, predicted)"
    with pytest.raises(ValueError, match="level_scores is empty: expected"):
        plot_level_scores({}, ["a"])


def test_the_most_confused_classes_are_those_of_the_pairs_the_table_names() -> None:
    """Counts and rates disagree when classes were drawn unequally often: a with 100 queries confused 20 times
    with b (20 %), c with 10 queries confused 5 times with d (50 %). The table's first pair, c→d, is in the
    figure even when it shows two classes."""
    matrix = np.array([[80, 20, 0, 0], [0, 100, 0, 0], [0, 0, 5, 5], [0, 0, 0, 10]])
    pairs = confused_pairs(matrix, ["a", "b", "c", "d"])
    assert [(p["true"], p["predicted"], p["rate"]) for p in pairs] == [("c", "d", 50.0), ("a", "b", 20.0)]
    assert most_confused(matrix, k=2) == [2, 3]
    assert most_confused(matrix, k=4) == [0, 1, 2, 3]
    assert most_confused(np.eye(3, dtype=int) * 4, k=2) == [0, 1]  # nothing confused: the first classes


def test_most_confused_and_confused_pairs() -> None:
    matrix = np.array([[10, 0, 0, 0], [0, 8, 5, 0], [0, 4, 9, 1], [0, 0, 0, 12]])
    assert most_confused(matrix, k=2) == [1, 2]
    assert most_confused(matrix, k=3) == [1, 2, 3]
    pairs = confused_pairs(matrix, ["a", "b", "c", "d"], top=2)
    assert [(p["true"], p["predicted"]) for p in pairs] == [("b", "c"), ("c", "b")]
    assert pairs[0]["rate"] == pytest.approx(500 / 13) and pairs[0]["count"] == 5  # in percent
    groups = {"a": "x", "b": "x", "c": "y"}  # d has no group: it shares one with none
    grouped = confused_pairs(matrix, ["a", "b", "c", "d"], top=3, group_of=groups)
    assert [p["same group"] for p in grouped] == [False, False, False]  # b→c, c→b, c→d
    assert [p["same group"] for p in confused_pairs(matrix, ["a", "b", "x", "y"], group_of={})] == [False] * 3
    within = np.diag([4, 13, 14, 12])
    within[0, 1] = 6  # a taken for b, its group's other class
    assert confused_pairs(within, ["a", "b", "c", "d"], group_of=groups) == [
        {"true": "a", "predicted": "b", "rate": 60.0, "count": 6, "same group": True}
    ]
    # errors: b→c 5 (across), c→b 4 (across), c→d 1 (across): none within a group; then a→b 2 within
    assert within_group_error_share(matrix, ["a", "b", "c", "d"], groups) == 0.0
    matrix[0, 1] = 2
    assert within_group_error_share(matrix, ["a", "b", "c", "d"], groups) == pytest.approx(100 * 2 / 12)
    # a class without a group, named as another class's group, is still in none: the pairs and the share agree
    named = np.array([[3, 1], [0, 4]])
    assert within_group_error_share(named, ["a", "x"], {"a": "x"}) == 0.0
    assert confused_pairs(named, ["a", "x"], group_of={"a": "x"})[0]["same group"] is False


def test_class_groups_come_from_the_metadata_or_are_none(tiny_birds: Path, tmp_path: Path) -> None:
    groups = class_groups(tiny_birds)
    metadata = load_metadata(tiny_birds)["classes"]
    assert groups == {name: info["group_name"] for name, info in metadata.items()}
    assert len(groups) == 9 and len(set(groups.values())) == 3  # TINY_BIRDS: 3 groups of 3 species
    (tmp_path / "test" / "a").mkdir(parents=True)
    assert class_groups(tmp_path) is None  # a folder data set names no groups
    (tmp_path / "metadata.json").write_text('{"classes": {"a": {"split": "test"}}}')
    assert class_groups(tmp_path) is None


# -- figures -------------------------------------------------------------------------------------------------
def test_figures_are_saved_as_png(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "model": ["hmdrn", "hmdrn", "protonet", "protonet"],
            "shot": [1, 5, 1, 5],
            "mean": [60.0, 75.0, 40.0, 55.0],
            "ci95": [1.0, 0.8, 1.1, 0.9],
        }
    )
    bars = plot_accuracy_bars(table, hue="shot", chance=20.0, title="few-shot")
    ax = bars.axes[0]
    assert [p.get_height() for p in ax.patches] == [60.0, 40.0, 75.0, 55.0]  # 1-shot bars, then 5-shot
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hmdrn", "protonet"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["1-shot", "5-shot", "chance (20 %)"]
    assert ax.get_ylabel() == "accuracy (%)" and ax.get_title() == "few-shot"
    assert [list(line.get_ydata()) for line in ax.lines if line.get_linestyle() == "--"] == [[20.0, 20.0]]
    assert sorted(t.get_text() for t in ax.texts) == ["40.0", "55.0", "60.0", "75.0"]
    path = save_figure(bars, tmp_path / "sub" / "bars.png")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000
    metrics = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.6, 1.2, 1.0],
            "train_acc": [30.0, 45.0, 55.0],
            "val_acc": [None, 50.0, 58.0],
            "val_ci95": [None, 2.0, 1.8],
            "w_last": [0.5, 0.9, 1.2],
            "gamma": [1.0, 1.5, 2.0],
        }
    )
    fig = plot_training_curves(metrics)  # one panel above the other, sharing the epoch axis
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy (%)", "learned scalar"]
    legends = [
        [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [] for ax in fig.axes
    ]
    assert legends == [[], ["training episodes", "validation ± 95% CI"], ["w_last", "gamma"]]
    assert [ax.get_xlabel() for ax in fig.axes] == ["", "", "epoch"]
    val_line = fig.axes[1].lines[1]
    assert list(val_line.get_xdata()) == [2, 3] and list(val_line.get_ydata()) == [50.0, 58.0]  # NaN dropped
    with pytest.raises(ValueError, match="lacks column"):
        plot_accuracy_bars(table.drop(columns="ci95"))
    masks = {"last": torch.zeros(3, 2, 25, dtype=torch.bool), "mid": torch.zeros(3, 2, 100, dtype=torch.bool)}
    masks["last"][1, 0, :5] = True  # layer 2, head 1 keeps 5 of 25 tokens
    masks["mid"][0, 1, :] = True  # layer 1, head 2 keeps them all
    fig = plot_query_masks(torch.rand(3, 84, 84), masks, title="masks")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2 * (1 + 3 * 2)
    assert [ax.get_ylabel() for ax in shown if ax.get_ylabel()] == ["level last", "level mid"]
    titles = [ax.get_title() for ax in shown]
    assert titles[0] == "query" and titles[1:7] == [
        f"layer {layer} head {head}\nkept {'20%' if (layer, head) == (2, 1) else '0%'}"
        for layer in (1, 2, 3)
        for head in (1, 2)
    ]
    assert titles[7:10] == ["", "layer 1 head 1\nkept 0%", "layer 1 head 2\nkept 100%"]
    assert fig.get_suptitle() == "masks"
    rng = np.random.default_rng(0)
    cams = {"a": rng.random((2, 16, 16), dtype=np.float32), "b": np.zeros((2, 16, 16), np.float32)}
    fig = plot_cams([torch.rand(3, 16, 16)] * 2, cams, titles=["x", "y"])
    grid = np.array(fig.axes).reshape(2, 3)  # a row per image: the image, then one overlay per model
    assert [[ax.get_title() for ax in row] for row in grid] == [["x", "a", "b"], ["y", "", ""]]
    assert all(len(ax.images) == 1 for ax in grid.flat)
    peak = cams["a"][0].argmax()
    marker = grid[0, 1].lines[0]
    assert (marker.get_ydata()[0], marker.get_xdata()[0]) == divmod(int(peak), 16)  # the cross on the peak
    assert [t.get_text() for t in grid[0, 2].texts] == ["flat map:\nno evidence"] and not grid[0, 2].lines


# -- data-backed: episodes, browser, ground truth ------------------------------------------------------------
def test_episode_browser_and_plot(tiny_birds: Path) -> None:
    data = FewShotFolder(tiny_birds, "test", image_size=32)
    episode = load_episode(data, way=3, shot=1, query=2, seed=0)
    assert episode.support_images.shape == (3, 3, 32, 32) and episode.query_images.shape == (6, 3, 32, 32)
    again = load_episode(data, way=3, shot=1, query=2, seed=0)
    assert torch.equal(episode.query_images, again.query_images)
    fig = plot_episode(episode, data.classes, predictions=[0, 1, 1, 1, 2, 0])
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3 + 6
    names = [data.classes[int(c)].replace("_", "") for c in episode.class_ids]  # as wrapped, without blanks

    def unwrapped(text: str) -> str:
        return text.replace("\n", "").replace(" ", "")

    assert [unwrapped(ax.get_ylabel()) for ax in shown if ax.get_ylabel()] == names  # a row per class
    query_axes = [ax for ax in shown if ax.get_ylabel() == ""]
    guesses = [0, 1, 1, 1, 2, 0]  # query i belongs to class i // 2: right, wrong, right, right, right, wrong
    marks = [ax.get_xlabel() for ax in query_axes]  # the predicted class under each query, after a mark
    assert [unwrapped(mark[1:]) for mark in marks] == [names[g] for g in guesses]
    assert [mark[0] for mark in marks] == ["✓", "✗", "✓", "✓", "✓", "✗"]
    right, wrong = to_rgba(RIGHT_COLOUR), to_rgba(WRONG_COLOUR)
    assert [to_rgba(ax.xaxis.label.get_color()) for ax in query_axes] == [
        right,
        wrong,
        right,
        right,
        right,
        wrong,
    ]
    # the title starts at the left edge, where the explorer's scrolling frame opens on a wide picture
    titled = plot_episode(episode, data.classes, title="test: 3-way 1-shot")
    assert titled._suptitle.get_text() == "test: 3-way 1-shot" and titled._suptitle.get_ha() == "left"
    assert titled._suptitle.get_position()[0] == pytest.approx(0.01)
    # the interactive explorer (EpisodeBrowser.widget) is tested in test_explorer.py


def test_ground_truth_regions_are_aligned_to_the_input(tiny_birds: Path) -> None:
    data = FewShotFolder(tiny_birds, "test", image_size=32)
    truth = GroundTruth(data)
    bird, mark, ids = truth.regions(0)
    assert bird.shape == mark.shape == ids.shape == (32, 32)
    assert bird.dtype == bool and 0 < bird.mean() < 1 and mark.sum() <= bird.sum()
    assert not (mark & ~bird).any(), "discriminative parts lie on the bird"
    raw_bird, _, _ = truth.regions(0, aligned=False)
    assert raw_bird.shape == (32, 32)


def test_the_episode_cams_figure_explains_the_first_query_of_each_class(tiny_birds: Path) -> None:
    data = FewShotFolder(tiny_birds, "test", transform="eval", image_size=32)
    torch.manual_seed(0)
    models = {name: build_model(name, image_size=32).eval() for name in ("protonet", "hmdrn")}
    fig = plot_episode_cams(models, data, way=3, shot=1, query=2, count=2, seed=5, truth=GroundTruth(data))
    grid = np.array(fig.axes).reshape(2, 3)  # a row per shown query: the image, then one map per model
    episode = load_episode(data, 3, 1, 2, seed=5)
    queries = EpisodeSampler(data, 3, 1, 2, episodes=1, seed=5).episode(0)[3:]
    for row, query in zip(grid, (0, 2)):  # the first query of classes 0 and 1
        label = int(episode.query_labels[query])
        name = data.classes[int(episode.class_ids[label])]
        assert re.sub(r"\s", "", row[0].get_title()) == re.sub(r"[\s_]", "", name.replace("_", ""))
        picture = image_array(episode.query_images[query])
        np.testing.assert_array_equal(row[0].images[0].get_array(), picture)
        _, parts, _ = GroundTruth(data).regions(queries[query])
        (outline,) = row[0].collections  # the query's discriminative parts, outlined: the outline's extent
        corners = np.concatenate([path.vertices for path in outline.get_paths()])
        rows, cols = np.nonzero(parts)  # is the parts' own, to the half pixel where the level 0.5 is crossed
        assert np.allclose(corners.min(0), [cols.min() - 0.5, rows.min() - 0.5], atol=0.5)
        assert np.allclose(corners.max(0), [cols.max() + 0.5, rows.max() + 0.5], atol=0.5)
        for ax, model in zip(row[1:], models.values()):
            cam = episode_cams(
                model, episode.support_images, episode.support_labels, episode.query_images[[query]], [label]
            )[0]
            np.testing.assert_allclose(ax.images[0].get_array(), cam_overlay(picture, cam), atol=1e-6)
            with torch.no_grad():  # under the map: whether the model classified this query right
                logits = model(episode.support_images, episode.support_labels, episode.query_images)
            right = int(logits[query].argmax()) == label
            assert ax.get_xlabel() == ("✓ classified right" if right else "✗ classified wrong")
    assert [ax.get_title() for ax in grid[0, 1:]] == ["protonet", "hmdrn"]
    assert fig.get_supxlabel() == (
        "each map explains the query's true class (its log-probability); a white cross marks its peak"
    )
    wrong = [ax.get_xlabel().startswith("✗") for ax in grid[:, 1:].flat]
    assert sorted(set(wrong)) == [False, True]  # untrained models: both marks are tested
    training = build_model("frn", image_size=32).train()  # a model in training mode is left in it
    plot_episode_cams({"frn": training}, data, way=3, shot=1, query=2, count=1, seed=5)
    assert all(module.training for module in training.modules())
    plain = plot_episode_cams(models, data, way=3, shot=1, query=2, count=5, seed=5)
    assert len(plain.axes) == 3 * 3 and not any(ax.collections for ax in plain.axes)  # count ≤ way; no truth


def test_the_mask_statistics_summary_averages_per_layer_and_per_level() -> None:
    from fsl_core.viz.mask_statistics import mask_statistics_summary

    records = pd.DataFrame(
        {
            "level": ["last", "last", "last", "mid"],
            "layer": [1, 1, 2, 1],
            "object_share": [0.2, 0.4, 0.9, 0.5],
            "part_iou": [0.0, 0.1, 0.3, 0.25],
        }
    )
    by_layer, by_level = mask_statistics_summary(records)  # in percent, as every reported share
    assert by_layer.to_dict("records") == [
        {"level": "last", "layer": 1, "object_share": pytest.approx(30.0), "part_iou": pytest.approx(5.0)},
        {"level": "last", "layer": 2, "object_share": 90.0, "part_iou": 30.0},
        {"level": "mid", "layer": 1, "object_share": 50.0, "part_iou": 25.0},
    ]
    assert by_level == {  # every query and layer of a level weighs the same
        "last": {"object_share": pytest.approx(50.0), "part_iou": pytest.approx(40.0 / 3)},
        "mid": {"object_share": 50.0, "part_iou": 25.0},
    }
    empty, none = mask_statistics_summary(pd.DataFrame())
    assert empty.empty and none == {}


def test_part_areas_are_the_mask_shares_of_every_kth_image_and_the_examples_spread_over_the_classes(
    tiny_birds: Path,
) -> None:
    data = FewShotFolder(tiny_birds, "test", transform=None)  # 3 classes of 6 images
    truth = GroundTruth(data)
    shares = part_area_shares(truth, per_class=2)  # every 18 // (2 * 3) = 3rd image
    assert len(shares) == 6 and list(shares.columns) == ["bird", "discriminative parts"]
    for row, index in zip(shares.itertuples(index=False), range(0, 18, 3)):
        bird, mark, _ = truth.regions(index, aligned=False)
        assert (row[0], row[1]) == (100 * bird.mean(), 100 * mark.mean())  # in percent
    assert len(part_area_shares(truth, per_class=100)) == 18  # never a step of 0
    figure = plot_part_examples(truth, 2)
    titles = [ax.get_title() for ax in figure.axes[0:6:3]]  # the image column of each row, wrapped
    by_class = data.indices_by_class()
    for title, index in zip(titles, (by_class[0][0], by_class[1][0])):  # the first image of classes 0 and 1
        name = data.classes[data.targets[index]]
        parts = ", ".join(truth.metadata["classes"][name]["discriminative_part_names"])
        assert re.sub(r"[\s_]", "", title) == re.sub(r"[\s_]", "", f"{name}({parts})")
    assert plot_part_areas(shares, "test").axes[0].get_title() == "area of the bird and of its marks (test)"


def test_the_statistics_run_the_models_in_eval_mode_and_put_them_back(tiny_birds: Path) -> None:
    """``reconstruction_statistics`` and ``pointing_game_records`` move each model to their device and run it in
    eval mode (no attention dropout: the same numbers twice), whatever mode it came in; it leaves in that mode."""
    from fsl_core.viz.mask_statistics import reconstruction_statistics
    from fsl_core.viz.pointing import pointing_game_records

    data = FewShotFolder(tiny_birds, "test", transform="eval", image_size=32)
    truth = GroundTruth(data, image_size=32)
    torch.manual_seed(0)
    hmdrn, protonet = (
        build_model("hmdrn", image_size=32).train(),
        build_model("protonet", image_size=32).train(),
    )
    modes = []
    for model in (hmdrn, protonet):
        model.register_forward_pre_hook(lambda module, _: modes.append(module.training))
    first, again = (reconstruction_statistics(hmdrn, data, truth, 3, 1, 2, 2, device="cpu") for _ in range(2))
    assert first[0] == again[0] and first[1] == again[1] and first[2].equals(again[2]) and len(first[2]) > 0
    records = pointing_game_records(
        {"hmdrn": hmdrn, "protonet": protonet}, data, truth, 3, 1, 2, 1, device="cpu"
    )
    assert len(records) == 2 * 3 * 2 and modes and not any(modes)
    assert hmdrn.training and protonet.training
    # reported in percent: the accuracy and true-class-best rates over the 2 episodes' 6 queries each, and the
    # chance of a random point on the parts
    right, best = [], {}
    with torch.no_grad(), evaluation_mode(hmdrn, "cpu"):
        for g in range(2):
            episode = load_episode(data, 3, 1, 2, seed=0, index=g)
            logits, details = hmdrn(
                episode.support_images, episode.support_labels, episode.query_images, return_details=True
            )
            right.append((logits.argmax(-1) == episode.query_labels).float())
            for level in details["levels"]:
                rate = true_class_best_rate(details["token_error"][level], episode.query_labels)
                best.setdefault(level, []).append(rate)
    assert first[0] == pytest.approx(100 * float(torch.cat(right).mean()))
    assert first[1] == pytest.approx({level: 100 * sum(rates) / 2 for level, rates in best.items()})
    queries = EpisodeSampler(data, 3, 1, 2, episodes=1, seed=0).episode(0)[3:]
    marks = np.stack([truth.regions(index)[1] for index in queries])
    chances = records[records["model"] == "hmdrn"]["parts_random"].tolist()
    assert chances == pytest.approx((100 * random_point_rate(marks)).tolist()) and max(chances) > 1


def test_the_data_set_summary_says_each_split_the_areas_and_the_baseline() -> None:
    from fsl_core.viz.dataset import data_set_summary

    summary = pd.DataFrame(
        {"classes": [60, 15], "images": [2400, 598], "min_per_class": [40, 38], "max_per_class": [40, 40]},
        index=pd.Index(["train", "val"], name="split"),
    )
    baseline = {
        "accuracy": 35.04,
        "ci95": 0.91,
        "chance": 20.0,
        "way": 5,
        "shot": 1,
        "query": 16,
        "episodes": 1000,
    }
    assert data_set_summary(summary, {"bird": 31.25, "discriminative parts": 3.04}, "test", baseline) == {
        "train": "60 classes, 2400 images (40-40 per class)",
        "val": "15 classes, 598 images (38-40 per class)",
        "image area (test images)": "bird 31.2 %, its discriminative parts 3.0 %",
        "raw-pixel nearest neighbour": "35.0 ± 0.9 % (5-way 1-shot, chance 20 %)",
    }
    assert list(data_set_summary(summary, {}, "test", None)) == [
        "train",
        "val",
    ]  # a folder data set: no parts, no card


def test_the_log_probability_target_finds_evidence_where_the_raw_logit_of_a_metric_model_has_none() -> None:
    """FRN's logit is a negative reconstruction distance: at a seeded initialisation its gradient at the last block
    is negative wherever the features are, and every logit map is flat. The log-probability (the class against the
    episode's others) cancels that shared part."""
    from fsl_core.viz.gradcam import LogProbabilityTarget

    logits = torch.tensor([1.0, 3.0, -2.0])
    assert LogProbabilityTarget(1)(logits) == pytest.approx(float(torch.log_softmax(logits, 0)[1]))
    torch.manual_seed(0)
    model = build_model("frn", "conv4", image_size=32)
    support, queries = torch.rand(5, 3, 32, 32), torch.rand(10, 3, 32, 32)
    classes = torch.arange(5).repeat(2)
    flat = {
        target: flat_maps(episode_cams(model, support, torch.arange(5), queries, classes, target=target))
        for target in ("logit", "log_probability")
    }
    assert flat["logit"].tolist() == [True] * 10
    assert flat["log_probability"].sum() <= 2  # 0 or 1 at the seeds 0 to 4
    with pytest.raises(ValueError, match="target='logt' \\(did you mean 'logit'\\?\\): expected one of"):
        episode_cams(model, support, torch.arange(5), queries, classes, target="logt")
    with pytest.raises(ValueError, match="one-class episode: .* use target='logit'"):
        episode_cams(model, support[:1], torch.zeros(1, dtype=torch.long), queries[:1], [0])


def test_class_names_read_as_words_in_figures() -> None:
    from fsl_core.viz.plots import display_name, wrap_label

    assert (
        display_name("g00_finch_s01_eyering-yellow+wingbar-blue")
        == "g00 finch s01 eyering-yellow+wingbar-blue"
    )
    assert wrap_label("g00_finch_s01_eyering-yellow+wingbar-blue", 16).split("\n") == [
        "g00 finch s01",
        "eyering-yellow+",
        "wingbar-blue",
    ]


def test_a_class_name_beside_its_bar_takes_two_lines_before_it_is_elided() -> None:
    from fsl_core.viz.predictions import bar_label

    assert bar_label("finch") == "finch"
    assert bar_label("finch red eye") == "finch red\neye"
    assert bar_label("g03_tit_crown-white") == "g03 tit\ncrown-white"
    assert bar_label("g03_tit_crown-white+wingbar-red+tail-blue") == "g03 tit\ncrown…l-blue"


def test_a_probability_is_written_beside_its_bar_or_inside_its_end() -> None:
    """Never over the bar's end: 78 % inside the bar, in white; 12 % beside it."""
    from PIL import Image

    from fsl_core.viz.predictions import plot_predictions

    table = pd.DataFrame([[0.78, 0.12, 0.10]], index=["a.jpg"], columns=["finch", "warbler", "tanager"])
    fig = plot_predictions({"a.jpg": Image.new("RGB", (8, 8))}, table)
    bars = next(ax for ax in fig.axes if ax.patches)
    texts = {t.get_text(): t for t in bars.texts}
    assert texts["78%"].get_position()[0] < 0.78 and texts["78%"].get_ha() == "right"
    assert texts["78%"].get_color() == "white"
    assert texts["12%"].get_position()[0] > 0.12 and texts["12%"].get_ha() == "left"
