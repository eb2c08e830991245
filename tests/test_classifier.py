"""FewShotClassifier: the engine's predictions under class names, unequal support counts, bad input, the
command line, explanations, the upload form, and a trained model beating chance on held-out images."""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_image
from PIL import Image
from scipy.stats import binom
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

import fsl_core.data.birds
from fsl_core import FewShotClassifier
from fsl_core.classifier import (
    EmptySupportError,
    NotAModelError,
    NotAnImageError,
    NotFittedError,
    SingleClassError,
    UnreadableSupportError,
    count_episodes,
    example_answers,
    example_folders,
    list_images,
    scores_each_class_alone,
    support_episodes,
    unread_files,
)
from fsl_core.cli.predict import main
from fsl_core.data import EpisodeSampler, FewShotFolder
from fsl_core.data.birds import generate_birds
from fsl_core.engine import train
from fsl_core.models import build_model, load_model, save_model
from fsl_core.viz.gradcam import cam_overlay, episode_cams
from fsl_core.viz.plots import image_array, title_number
from fsl_core.viz.predictions import short_label
from fsl_core.viz.uploads import UploadForm, uploaded_images

SIX_GROUPS = dict(seed=1, image_size=32, images_per_class=20, groups=6, species_per_group=3)
"""18 classes (6 train, 6 val, 6 test, one species of each group per split) of 20 images at 32 px."""


@pytest.fixture(scope="module")
def six_groups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_birds(tmp_path_factory.mktemp("six") / "birds", **SIX_GROUPS, progress=False, workers=1)


@pytest.fixture(scope="module")
def protonet_checkpoint(six_groups: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """ProtoNet (fixed scale) trained at 16 px for 10 epochs of 5 episodes (5-way 2-shot): about 1 s."""
    run_dir = tmp_path_factory.mktemp("protonet") / "run"
    train(
        data_root=str(six_groups),
        run_dir=str(run_dir),
        protocol="quick",
        model="protonet",
        options={"learn_scale": False},
        image_size=16,
        way=5,
        shot=2,
        query=3,
        sampler="fixed",
        episodes_per_epoch=5,
        epochs=10,
        val_every=0,
        lr=0.1,
        progress=False,
        threads=1,
    )
    return run_dir / "last.pt"


def episode_files(data: FewShotFolder, way: int, shot: int, query: int, seed: int = 0):
    """Episode 0 of the engine's sampler: (support paths class-major, support labels, query paths, query
    labels, class names in episode order)."""
    indices = EpisodeSampler(data, way, shot, query, episodes=1, seed=seed).episode(0)
    paths = [data.image_path(i) for i in indices]
    names = [data.classes[data.targets[indices[c * shot]]] for c in range(way)]
    labels = torch.arange(way)
    return paths[: way * shot], labels.repeat_interleave(shot), paths[way * shot :], names


@torch.no_grad()
def engine_logits(model, data: FewShotFolder, support: list[Path], labels: torch.Tensor, queries: list[Path]):
    """The engine's own episode forward: model(support images, labels, query images) → (n_query, way)."""
    load = lambda paths: torch.stack([data.transform(Image.open(p).convert("RGB")) for p in paths])
    return model.eval()(load(support), labels, load(queries))


MODELS = {
    "hmdrn (trained)": None,
    "protonet (trained)": None,
    "frn": dict(name="frn"),
    "bifrn": dict(name="bifrn"),
    "gsfl": dict(name="gsfl", num_classes=6, groups=2),
}


def model_for(key: str, reference_run: Path, protonet_checkpoint: Path):
    if key == "hmdrn (trained)":
        return load_model(reference_run / "best.pt"), 16
    if key == "protonet (trained)":
        return load_model(protonet_checkpoint), 16
    torch.manual_seed(0)
    options = dict(MODELS[key])
    name = options.pop("name")
    if name != "gsfl":
        options["image_size"] = 16
    return build_model(name, "conv4", **options), 16


# -- the engine's predictions, under the class names -----------------------------------------------------------
@pytest.mark.parametrize("key", list(MODELS))
def test_predictions_are_the_engine_logits_argmax_under_class_names(
    key: str, six_groups: Path, reference_run: Path, protonet_checkpoint: Path, one_thread: None
) -> None:
    model, size = model_for(key, reference_run, protonet_checkpoint)
    data = FewShotFolder(six_groups, "test", image_size=size)
    support, labels, queries, names = episode_files(data, way=4, shot=2, query=3, seed=3)
    assert names != sorted(names)  # the episode's label order is not the folder order
    logits = engine_logits(model, data, support, labels, queries)

    mapping = {}  # inserted in label order: the classifier sorts the names
    for c, name in enumerate(names):
        mapping[name] = support[2 * c : 2 * c + 2]
    clf = FewShotClassifier(model, image_size=size, device="cpu").fit(mapping)
    assert clf.classes_ == sorted(names) and clf.strategy_ == "episode" and len(clf.episodes_) == 1
    table = clf.predict_proba(queries)
    assert list(table.columns) == clf.classes_
    names_repeat = len({p.name for p in queries}) < len(queries)  # then the index holds the paths as given
    assert list(table.index) == [str(p) if names_repeat else p.name for p in queries]
    expected = torch.softmax(logits.float(), -1).numpy()
    np.testing.assert_allclose(table[names].to_numpy(), expected, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(table.sum(axis=1).to_numpy(), 1.0, atol=1e-6)
    assert clf.predict(queries) == [names[i] for i in logits.argmax(1).tolist()]


def test_class_names_come_from_the_folders_whatever_the_labels(
    six_groups: Path, protonet_checkpoint: Path, tmp_path: Path, one_thread: None
) -> None:
    """Folders named in an order unrelated to the data set's labels: each support image, classified 1-shot, is
    its own folder's class (its distance to its own prototype is 0)."""
    data = FewShotFolder(six_groups, "test", image_size=16)
    names = ["zulu", "alpha", "mike", "echo", "bravo", "kilo"]
    by_class = data.indices_by_class()
    for name, members in zip(names, by_class):
        write = tmp_path / "support" / name
        write.mkdir(parents=True)
        shutil.copyfile(data.image_path(members[0]), write / "only.png")
    clf = FewShotClassifier.from_checkpoint(protonet_checkpoint, device="cpu").fit(tmp_path / "support")
    assert clf.classes_ == sorted(names) and clf.image_size == 16
    firsts = [data.image_path(members[0]) for members in by_class]
    assert clf.predict(firsts) == names
    # held-out images: the label the engine predicts, translated through the folder names
    model = load_model(protonet_checkpoint)
    support = [data.image_path(m[0]) for m in by_class]
    queries = [data.image_path(m[i]) for m in by_class for i in (5, 6)]
    logits = engine_logits(model, data, support, torch.arange(6), queries)
    assert clf.predict(queries) == [names[i] for i in logits.argmax(1).tolist()]


# -- unequal numbers of support images ----------------------------------------------------------------------
def test_support_episodes_use_every_image_evenly_and_are_deterministic() -> None:
    groups = [list(range(0, 5)), list(range(5, 7)), list(range(7, 10))]  # counts 5, 2, 3
    drawn = support_episodes(groups, draws=4, seed=7)
    assert all(list(e.classes) == [0, 1, 2] for e in drawn)
    episodes = [e.rows for e in drawn]
    assert len(episodes) == max(4, math.ceil(5 / 2)) == 4
    for episode in episodes:
        per_class = episode.reshape(3, 2)  # class-major, m = 2 per class
        for c, row in enumerate(per_class):
            assert set(row) <= set(groups[c]) and len(set(row)) == 2
    uses = np.bincount(np.concatenate(episodes), minlength=10)
    assert (uses >= 1).all()
    for group in groups:  # each class's images in turn: use counts differ by at most one
        assert uses[group].max() - uses[group].min() <= 1
    same, other = support_episodes(groups, draws=4, seed=7), support_episodes(groups, draws=4, seed=8)
    assert all(np.array_equal(a, b.rows) for a, b in zip(episodes, same))
    assert not all(np.array_equal(a, b.rows) for a, b in zip(episodes, other))
    # every image once, the classes of equal count in one head call
    blocks = count_episodes([[0, 1], [2], [3, 4], [5]])
    assert [(list(b.classes), list(b.rows)) for b in blocks] == [([1, 3], [2, 5]), ([0, 2], [0, 1, 3, 4])]
    assert len(support_episodes([[0, 1], [2, 3]])) == 1  # equal counts: one episode of everything
    assert len(support_episodes([list(range(9)), [9]], draws=3)) == 9  # ⌈9/1⌉ > draws


def test_unequal_counts_with_bifrn_average_the_engine_over_drawn_episodes(
    birds: Path, one_thread: None
) -> None:
    """BiFRN's support-direction error sums over a class's support tokens: its episodes are drawn."""
    torch.manual_seed(0)
    model = build_model("bifrn", "conv4", image_size=16)
    assert not scores_each_class_alone(model)
    data = FewShotFolder(birds, "test", image_size=16)
    by_class = data.indices_by_class()
    counts = [4, 1, 2]
    support = {data.classes[c]: [data.image_path(i) for i in by_class[c][:n]] for c, n in enumerate(counts)}
    queries = [data.image_path(by_class[c][k]) for c in range(3) for k in (8, 9)]
    clf = FewShotClassifier(model, device="cpu", draws=5, seed=2).fit(support)
    assert clf.strategy_ == "draws" and len(clf.episodes_) == 5 and "5 episodes of 1 per class" in repr(clf)
    table = clf.predict_proba(queries)

    files = [p for name in clf.classes_ for p in support[name]]
    expected = np.zeros((len(queries), 3))
    for episode in clf.episodes_:
        chosen = [files[i] for i in episode.rows]
        logits = engine_logits(model, data, chosen, torch.arange(3), queries)
        expected += torch.softmax(logits.float(), -1).numpy() / len(clf.episodes_)
    np.testing.assert_allclose(table.to_numpy(), expected, atol=1e-5, rtol=1e-4)
    again = FewShotClassifier(model, device="cpu", draws=5, seed=2).fit(support).predict_proba(queries)
    pd.testing.assert_frame_equal(table, again)


def test_unequal_counts_with_hmdrn_score_each_class_on_all_its_images(
    birds: Path, reference_run: Path, one_thread: None
) -> None:
    """Each class's column is the engine's logit for that class in an equal-count episode holding all its
    images (the other classes of that episode filled with images of other classes: they do not matter)."""
    model = load_model(reference_run / "best.pt")
    assert scores_each_class_alone(model)
    data = FewShotFolder(birds, "test", image_size=16)
    by_class = data.indices_by_class()
    counts = [4, 1, 2]
    support = {data.classes[c]: [data.image_path(i) for i in by_class[c][:n]] for c, n in enumerate(counts)}
    queries = [data.image_path(by_class[c][k]) for c in range(3) for k in (8, 9)]
    clf = FewShotClassifier(model, device="cpu").fit(support)
    assert (
        clf.strategy_ == "per_class"
        and len(clf.episodes_) == 3
        and "each class on all its images" in repr(clf)
    )
    logits = torch.empty(len(queries), 3)
    for c, count in enumerate(counts):
        fillers = [
            [data.image_path(i) for i in by_class[f][-count:]] for f in (5, 6)
        ]  # classes not in the set
        episode = [*support[data.classes[c]], *fillers[0], *fillers[1]]
        engine = engine_logits(model, data, episode, torch.arange(3).repeat_interleave(count), queries)
        logits[:, clf.classes_.index(data.classes[c])] = engine[:, 0]
    expected = torch.softmax(logits, -1).numpy()
    np.testing.assert_allclose(clf.predict_proba(queries).to_numpy(), expected, atol=1e-5, rtol=1e-4)


def test_unequal_counts_prototype_model_is_exact(
    six_groups: Path, protonet_checkpoint: Path, one_thread: None
) -> None:
    model = load_model(protonet_checkpoint).eval()
    data = FewShotFolder(six_groups, "test", image_size=16)
    by_class = data.indices_by_class()
    counts = [5, 1, 3, 2]
    support = {data.classes[c]: [data.image_path(i) for i in by_class[c][:n]] for c, n in enumerate(counts)}
    queries = [data.image_path(by_class[c][k]) for c in range(4) for k in (10, 11)]
    clf = FewShotClassifier(model, device="cpu").fit(support)
    assert clf.strategy_ == "per_class"
    with torch.no_grad():
        pixels = lambda paths: torch.stack([data.transform(Image.open(p).convert("RGB")) for p in paths])
        embed = lambda paths: model.embed(pixels(paths), False)["last"]
        prototypes = torch.stack([embed(support[name]).mean(0) for name in clf.classes_])
        distances = (embed(queries)[:, None] - prototypes[None]).pow(2).sum(-1)
        expected = torch.softmax(-model.scale * distances / model.feature_dim, -1).numpy()
    np.testing.assert_allclose(clf.predict_proba(queries).to_numpy(), expected, atol=1e-5, rtol=1e-4)


# -- images of any size and mode -------------------------------------------------------------------------------
def test_pil_images_of_any_mode_and_size_equal_their_files(
    birds: Path, reference_run: Path, tmp_path: Path, one_thread: None
) -> None:
    clf = FewShotClassifier.from_checkpoint(reference_run / "best.pt", device="cpu")
    assert clf.image_size == 16  # the size recorded with the training run
    data = FewShotFolder(birds, "test", image_size=16)
    by_class = data.indices_by_class()
    clf.fit({data.classes[c]: [data.image_path(i) for i in by_class[c][:2]] for c in range(3)})
    rgb = Image.open(data.image_path(by_class[0][5])).convert("RGB").resize((57, 23))
    grey = rgb.convert("L")
    deep = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # 16-bit greyscale
    assert deep.mode == "I;16"
    rgba = rgb.convert("RGBA")
    grey.save(tmp_path / "grey.png")
    table = clf.predict_proba({"grey": grey, "deep": deep, "rgba": rgba, "rgb": rgb})
    from_file = clf.predict_proba(tmp_path / "grey.png")
    np.testing.assert_allclose(table.loc["grey"].to_numpy(), from_file.iloc[0].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(table.loc["deep"].to_numpy(), table.loc["grey"].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(table.loc["rgba"].to_numpy(), table.loc["rgb"].to_numpy(), atol=1e-6)


# -- bad input ---------------------------------------------------------------------------------------------------
def broken_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.txt"
    text.write_text("not a picture\n")
    fake = folder / "fake.png"
    fake.write_text("hello, I am text\n")
    cut = folder / "cut.png"
    write_image(folder / "whole.png")
    whole = (folder / "whole.png").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    (folder / "whole.png").unlink()
    return {"text": text, "fake": fake, "cut": cut}


def test_bad_support_sets_are_named(tmp_path: Path, reference_run: Path) -> None:
    clf = FewShotClassifier.from_checkpoint(reference_run / "best.pt", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        EmptySupportError, match=r"has no class folders: it is empty; put each class's images"
    ):
        clf.fit(empty)
    loose = tmp_path / "loose"
    write_image(loose / "a.png")
    with pytest.raises(EmptySupportError, match=r"it holds only files \(a.png\)"):
        clf.fit(loose)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clf.fit(tmp_path / "nowhere")
    with pytest.raises(EmptySupportError, match=r"^the support set is empty; give \{class name"):
        clf.fit({})

    bad = tmp_path / "bad"
    write_image(bad / "crow" / "ok.png")
    files = broken_files(bad / "raven")
    broken_files(bad / "rook")
    write_image(bad / "rook" / "fine.jpg")
    with pytest.raises(UnreadableSupportError) as error:
        clf.fit(bad)
    text = str(error.value)
    assert "class 'raven' has no readable image: " in text and "class 'rook': " in text
    assert f"{files['fake']} (not an image but text beginning 'hello, I am text" in text
    assert f"{files['cut']} (damaged or truncated" in text
    assert "'crow'" not in text and "remove or replace the files named" in text
    only_text = tmp_path / "only_text"
    write_image(only_text / "crow" / "ok.png")
    (only_text / "raven").mkdir()
    (only_text / "raven" / "notes.txt").write_text("x")
    with pytest.raises(
        UnreadableSupportError, match=r"class 'raven': no image file .* \(it holds notes.txt\)"
    ):
        clf.fit(only_text)

    single = tmp_path / "single"
    write_image(single / "crow" / "a.png")
    with pytest.raises(SingleClassError, match=r"single class \('crow'\).*at least two classes"):
        clf.fit(single)
    with pytest.raises(SingleClassError, match=r"^the support set has a single class \('crow'\): a few-shot"):
        clf.fit({"crow": [Image.new("RGB", (9, 9))]})


def test_files_a_folder_skips_are_named_and_those_given_alone_are_refused(
    tmp_path: Path, reference_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    support = tmp_path / "support"
    write_image(support / "crow" / "a.png")
    write_image(support / "crow" / "b.png")
    write_image(support / "raven" / "a.png", colour=(0, 0, 200))
    Image.new("RGB", (9, 9)).save(support / "raven" / "b.gif")  # a real image, in a format not read
    (support / "raven" / "notes.txt").write_text("x")
    (support / "raven" / ".DS_Store").write_text("x")  # hidden: not named
    write_image(support / "rook.png")  # an image beside the class folders belongs to no class
    clf = FewShotClassifier.from_checkpoint(reference_run / "best.pt", device="cpu").fit(support)
    assert clf.counts_ == {"crow": 2, "raven": 1}
    assert clf.unread_ == [support / "raven" / "b.gif", support / "raven" / "notes.txt", support / "rook.png"]
    assert repr(clf).endswith(
        "; 3 files not read (only .bmp, .jpeg, .jpg, .png, .webp files in a class folder are read): raven/b.gif; "
        "raven/notes.txt; support/rook.png)"
    )
    assert (
        unread_files({"crow": support / "raven", "rook": [support / "crow" / "a.png"]}, support=True)
        == (clf.unread_[:2])
    )
    assert (
        FewShotClassifier.from_checkpoint(reference_run / "best.pt", device="cpu")
        .fit({"crow": [support / "crow" / "a.png"], "raven": [support / "raven" / "a.png"]})
        .unread_
        == []
    )

    # the command line names what a query folder skips, and refuses a .gif named on its own
    queries = support / "raven"
    assert main([str(reference_run / "best.pt"), str(support), str(queries), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{queries / 'a.png'}\t") and len(out.splitlines()) == 1
    assert (
        "note: of the folders to classify, 2 files not read (only .bmp, .jpeg, .jpg, .png, .webp files are read): "
        in err
    )
    assert "raven/b.gif; raven/notes.txt" in err
    assert main([str(reference_run / "best.pt"), str(support), str(queries / "b.gif")]) == 1
    assert "b.gif: not an image file" in capsys.readouterr().err
    # an image given by name and through its folder is classified once, where it was first given
    twice = [str(queries / "a.png"), str(queries)]
    assert main([str(reference_run / "best.pt"), str(support), *twice, "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(queries / "a.png")]
    assert f"note: given more than once, classified once: {queries / 'a.png'}\n" in err


def test_the_example_queries_are_scored_by_the_class_in_their_names() -> None:
    classes = ["crow", "crow_hooded", "raven"]  # one name the start of another: the longest owns the file
    table = pd.DataFrame(
        {
            "file": ["crow_1.png", "crow_hooded_2.png", "raven_3.png", "photo.png"],
            "predicted": ["crow", "crow", "raven", "raven"],
        }
    )
    assert example_answers(table, classes) == (2, 4)


def test_bad_queries_and_predicting_before_fit_are_named(tmp_path: Path, reference_run: Path) -> None:
    clf = FewShotClassifier.from_checkpoint(reference_run / "best.pt", device="cpu")
    with pytest.raises(NotFittedError, match=r"not fitted yet: call fit\(support\) first") as error:
        clf.predict([tmp_path / "a.png"])
    assert isinstance(error.value, SklearnNotFittedError) and isinstance(error.value, ValueError)
    with pytest.raises(NotFittedError):
        clf.explain(Image.new("RGB", (9, 9)))
    clf.fit({"a": [Image.new("RGB", (20, 20), (200, 0, 0))], "b": [Image.new("RGB", (20, 20), (0, 0, 200))]})
    files = broken_files(tmp_path / "queries")
    write_image(tmp_path / "good.png")
    (tmp_path / "empty").mkdir()
    asked = [
        tmp_path / "good.png",
        files["text"],
        files["fake"],
        files["cut"],
        tmp_path / "gone.jpg",
        tmp_path / "empty",
    ]
    with pytest.raises(NotAnImageError) as error:
        clf.predict(asked)
    text = str(error.value)
    assert text.startswith("5 of the images to classify cannot be read")
    assert f"{files['text']}: not an image file" in text and f"{files['fake']}: not an image but text" in text
    assert (
        f"{files['cut']}: damaged or truncated" in text and f"{tmp_path / 'gone.jpg'}: does not exist" in text
    )
    assert f"{tmp_path / 'empty'}: a folder without image files" in text and "good.png" not in text
    assert text.endswith(
        "Give image files (JPEG, PNG, BMP or WebP) or folders of them (from Python, PIL images too)"
    )
    with pytest.raises(
        NotAnImageError, match=r"^no images to classify were given; give image files or a folder"
    ):
        clf.predict([])


def test_checkpoints_that_hold_no_model_are_named(tmp_path: Path, reference_run: Path) -> None:
    text = tmp_path / "model.pt"
    text.write_text("weights go here\n")
    with pytest.raises(NotAModelError, match=r"model.pt holds no usable model: .*give best.pt or last.pt"):
        FewShotClassifier.from_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(NotAModelError, match=r"not an fsl_core checkpoint.*weights pass reference=True$"):
        FewShotClassifier.from_checkpoint(other)
    with pytest.raises(
        NotAModelError, match=r"reference checkpoint .*other.pt does not fit hmdrn/conv4: missing tensors"
    ):
        FewShotClassifier.from_checkpoint(other, reference=True)
    with pytest.raises(
        NotAModelError,
        match=rf"{reference_run} is a folder; give a checkpoint file: {reference_run / 'best.pt'} is one$",
    ):
        FewShotClassifier.from_checkpoint(reference_run)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FewShotClassifier.from_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(NotAModelError, match="needs an fsl_core episodic model, got a Linear"):
        FewShotClassifier(torch.nn.Linear(2, 2))
    # a model saved outside training, and the authors' format (our checkpoint loads through it too)
    saved = save_model(load_model(reference_run / "best.pt"), tmp_path / "saved.pt")
    assert FewShotClassifier.from_checkpoint(saved).image_size == 16  # from the model's config
    assert FewShotClassifier.from_checkpoint(reference_run / "best.pt", reference=True).image_size == 16


# -- the command line --------------------------------------------------------------------------------------------
def test_command_line_prints_a_line_per_image_and_writes_the_table(
    birds: Path, reference_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    data = FewShotFolder(birds, "test", image_size=16)
    by_class = data.indices_by_class()
    support = tmp_path / "support"
    for c in range(3):
        (support / data.classes[c]).mkdir(parents=True)
        for i in by_class[c][:2]:
            shutil.copyfile(data.image_path(i), support / data.classes[c] / data.image_path(i).name)
    photos = tmp_path / "photos"
    photos.mkdir()
    for c in range(3):
        shutil.copyfile(data.image_path(by_class[c][7]), photos / f"p{c}.png")
    single = data.image_path(by_class[1][9])
    checkpoint = reference_run / "best.pt"
    csv = tmp_path / "out" / "predictions.csv"
    code = main(
        [str(checkpoint), str(support), str(photos), str(single), "--csv", str(csv), "--device", "cpu"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    files = [str(photos / f"p{c}.png") for c in range(3)] + [str(single)]
    expected = FewShotClassifier.from_checkpoint(checkpoint, device="cpu").fit(support).predict_proba(files)
    lines = out.splitlines()
    assert len(lines) == 4
    for line, file, (_, row) in zip(lines, files, expected.iterrows()):
        assert line == f"{file}\t{row.idxmax()}\t{row.max():.4f}"
    table = pd.read_csv(csv)
    assert table["file"].tolist() == files and table["predicted"].tolist() == expected.idxmax(1).tolist()
    np.testing.assert_allclose(table[expected.columns].to_numpy(), expected.to_numpy(), atol=1e-12)
    assert f"written: {csv} (the folder {csv.parent} was made)\n" in err and "3 classes" in err

    # an existing table is kept unless --overwrite, which moves it aside
    before = csv.read_bytes()
    assert main([str(checkpoint), str(support), str(single), "--csv", str(csv)]) == 1
    assert "already exists and is kept" in capsys.readouterr().err and csv.read_bytes() == before
    assert main([str(checkpoint), str(support), str(single), "--csv", str(csv), "--overwrite"]) == 0
    assert len(pd.read_csv(csv)) == 1 and [p.read_bytes() for p in csv.parent.glob("*.replaced-*")] == [
        before
    ]
    capsys.readouterr()
    text_table = tmp_path / "out" / "predictions.txt"  # the table is CSV: another name is refused first
    assert main([str(checkpoint), str(support), str(single), "--csv", str(text_table)]) == 1
    assert capsys.readouterr().err == (
        f"error: result path {text_table}: the result is written as CSV, so its name must end in .csv; choose "
        f"another --csv, e.g. {text_table.with_suffix('.csv')}\n"
    )
    assert not text_table.exists()
    assert main([str(checkpoint), str(support), str(tmp_path / "nothing.jpg")]) == 1
    assert "nothing.jpg: does not exist" in capsys.readouterr().err

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsl_core.predict",
            str(checkpoint),
            str(support),
            str(photos),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == lines[:3]


# -- a trained model on held-out images --------------------------------------------------------------------------
def test_a_trained_tiny_model_beats_chance_on_held_out_test_images(
    six_groups: Path, protonet_checkpoint: Path, one_thread: None
) -> None:
    """6 test classes never seen in training, 5 support images each, 15 held-out images each (90 queries).

    Guessing (or a class-name mix-up) is right with probability 1/6 per image; with 90 independent images the
    chance of more than ``bound`` right answers is below 1e-6 (binomial tail), so an accuracy above it is not
    luck."""
    classes = sorted(p for p in (six_groups / "test").iterdir())
    clf = FewShotClassifier.from_checkpoint(protonet_checkpoint, device="cpu")
    clf.fit({c.name: list_images(c)[:5] for c in classes})
    queries = {f"{c.name}/{f.name}": f for c in classes for f in list_images(c)[5:]}
    predicted = clf.predict(queries)
    truth = [name.split("/")[0] for name in queries]
    right = sum(p == t for p, t in zip(predicted, truth))
    bound = binom.isf(1e-6, len(queries), 1 / 6)
    print(
        f"accuracy {right}/{len(queries)} = {right / len(queries):.1%}; chance 16.7 %, 1e-6 bound {bound:.0f}"
    )
    assert len(queries) == 90 and right > bound, (right, bound)
    assert right / len(queries) > 0.5  # measured: 68 of 90 (75.6 %)


# -- explanations ------------------------------------------------------------------------------------------------
def test_explain_shows_the_engines_grad_cam_kept_tokens_and_errors(
    birds: Path, reference_run: Path, one_thread: None
) -> None:
    model = load_model(reference_run / "best.pt")
    data = FewShotFolder(birds, "test", image_size=16)
    by_class = data.indices_by_class()
    support = {data.classes[c]: [data.image_path(i) for i in by_class[c][:2]] for c in range(3)}
    clf = FewShotClassifier(model, device="cpu").fit(support)
    query = data.image_path(by_class[2][6])
    figure = clf.explain(query)
    titles = [ax.get_title() for ax in figure.axes]
    predicted = clf.predict(query)[0]
    assert figure._suptitle.get_text().startswith(f"{query.name}: {predicted} (")
    assert any(t.startswith("Grad-CAM:\n") for t in titles)
    assert {
        "kept tokens, level mid\n(brighter: kept by more heads)",
        "kept tokens, level last\n(brighter: kept by more heads)",
    } <= set(titles)
    bars = next(ax for ax in figure.axes if ax.get_xlabel() == "probability")
    probabilities = clf.predict_proba(query).iloc[0]
    assert sorted(text.get_text() for text in bars.texts) == sorted(
        f"{name}: {p:.0%}" for name, p in probabilities.items()
    )  # every class named in full (the birds' names fit), with its probability
    error_titles = [t for t in titles if "\nerror " in t]
    assert len(error_titles) == 2 * 3  # two levels, three classes
    # the Grad-CAM panel is the library's map of the predicted class for this support set
    images = torch.stack(
        [data.transform(Image.open(p).convert("RGB")) for name in clf.classes_ for p in support[name]]
    )
    pixels = data.transform(Image.open(query).convert("RGB"))[None]
    target = clf.classes_.index(predicted)
    cam = episode_cams(model, images, torch.arange(3).repeat_interleave(2), pixels, classes=[target])[0]
    cam_axes = next(ax for ax in figure.axes if ax.get_title().startswith("Grad-CAM"))
    np.testing.assert_array_equal(cam_axes.images[0].get_array(), cam_overlay(image_array(pixels[0]), cam))
    # the errors per class are the head's token errors for this episode
    details: dict = {}
    with torch.no_grad():
        emb_s, emb_q = model.embed(images, False), model.embed(pixels, True)
        model.head(emb_s, torch.arange(3).repeat_interleave(2), emb_q, 3, details)
    for level, errors in details["token_error"].items():
        share = details["level_scores"][level][0]
        for c, name in enumerate(clf.classes_):
            shown = f"\nerror {title_number(float(errors[0, c].sum()))}\nlogit {title_number(float(share[c]), True)}"
            assert any(t.startswith(short_label(name, 14)) and t.endswith(shown) for t in error_titles), (
                level,
                name,
            )
    # the shares of the logit sum, over the levels, to the logits that chose the class
    total = sum(details["level_scores"].values())[0]
    assert int(total.argmax()) == target and figure.subfigs[3]._suptitle.get_text().endswith(
        "a class's logit sums its levels' shares; the class explained (←) has the highest sum"
    )
    other = next(name for name in clf.classes_ if name != predicted)  # explained on request: no such claim
    assert (
        clf.explain(query, class_name=other)
        .subfigs[3]
        ._suptitle.get_text()
        .endswith("sums its levels' shares")
    )
    assert (
        title_number(1234.5) == "1,234"
        and title_number(-0.012345, True) == "-0.0123"
        and title_number(5, True) == "+5"
    )

    # unequal counts, one class per count: the map of a class comes from the head call that scores it
    support[clf.classes_[1]] = support[clf.classes_[1]][:1]
    clf.fit(support)
    assert clf.strategy_ == "per_class"
    figure = clf.explain(query, class_name=clf.classes_[1])
    alone = torch.stack([data.transform(Image.open(support[clf.classes_[1]][0]).convert("RGB"))])
    cam = episode_cams(model, alone, torch.zeros(1, dtype=torch.long), pixels, [0], target="logit")[
        0
    ]  # alone
    cam_axes = next(ax for ax in figure.axes if ax.get_title().startswith("Grad-CAM"))
    np.testing.assert_array_equal(cam_axes.images[0].get_array(), cam_overlay(image_array(pixels[0]), cam))

    protonet = FewShotClassifier(build_model("protonet", "conv4", image_size=16), device="cpu").fit(support)
    titles = [ax.get_title() for ax in protonet.explain(query).axes]
    assert not any("kept tokens" in t or "\nerror " in t for t in titles)


# -- the upload form ---------------------------------------------------------------------------------------------
def png_upload(name: str, image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    return {
        "name": name,
        "type": "image/png",
        "size": len(data),
        "content": memoryview(data),
        "last_modified": datetime.now(),
    }


def test_uploads_become_images_and_the_form_classifies_them(
    birds: Path, reference_run: Path, one_thread: None
) -> None:
    data = FewShotFolder(birds, "test", image_size=16)
    by_class = data.indices_by_class()
    pictures = [[Image.open(data.image_path(i)).convert("RGB") for i in by_class[c][:4]] for c in range(2)]
    clf = FewShotClassifier.from_checkpoint(reference_run / "best.pt", device="cpu")
    blank = UploadForm(clf, classes=3)  # rows to fill in: none is used until it holds something
    assert [text.value for text, _ in blank.rows] == ["", "", ""]
    assert [text.placeholder for text, _ in blank.rows] == [
        "name of class 1",
        "name of class 2",
        "name of class 3",
    ]
    blank.classify()
    assert blank.output.outputs[0]["data"]["text/plain"] == (
        "no class yet: give two rows or more a class name and a few photos each"
    )
    form = UploadForm(clf, classes=["crow", "raven"])
    form.classify()  # the form from top to bottom: the support set first
    assert form.output.outputs[0]["data"]["text/plain"] == (
        "'crow', 'raven' have no photos yet: upload some under 'support images'. '✕' empties a row to leave it out"
    )
    assert "white-space: normal" in form.output.outputs[0]["data"]["text/html"]  # wrapped as prose
    assert [upload.tooltip for _, upload in form.rows] == ["choose a few photos of this class"] * 2
    for (text, upload), images in zip(form.rows, pictures):
        upload.value = tuple(
            png_upload(f"{text.value}{k}.png", im.convert("P")) for k, im in enumerate(images[:3])
        )
    assert form.output.outputs == ()  # the message about missing photos went with them
    form.classify()
    assert "no images to classify yet" in form.output.outputs[0]["data"]["text/plain"]
    form.queries_upload.value = (png_upload("q.png", pictures[0][3]), png_upload("q.png", pictures[1][3]))
    assert list(uploaded_images(form.queries_upload)) == ["q.png", "q.png (2)"]
    table = form.classify()
    uploaded = {text.value: list(uploaded_images(upload).values()) for text, upload in form.rows}
    assert [len(v) for v in uploaded.values()] == [3, 3]
    assert all(im.mode == "RGB" and im.size == (32, 32) for v in uploaded.values() for im in v)
    expected = clf.fit(uploaded).predict_proba({"q.png": pictures[0][3], "q.png (2)": pictures[1][3]})
    pd.testing.assert_frame_equal(table, expected, atol=1e-6)
    assert [o["output_type"] for o in form.output.outputs] == ["display_data", "display_data"]
    assert form.chosen.options == ("q.png", "q.png (2)") and not form.explain_button.disabled
    form.explain()
    assert form.explanation.outputs[0]["data"]["image/png"]
    form.add_class("rook")
    assert len(form.rows) == 3 and len(form.class_box.children) == 3
    form.rows[2][1].value = (
        png_upload("rook.heic", Image.new("RGB", (3, 3))) | {"content": memoryview(b"ftypheic")},
    )
    form.classify()
    assert form.chosen.options == () and form.explain_button.disabled  # nothing left of the previous results
    assert form.output.outputs[0]["data"]["text/plain"] == (
        "1 uploaded file is not a readable image for class 'rook': rook.heic (not an image file PIL can read). "
        "Choose the photos of that upload again, leaving these out or converted to JPEG, PNG, BMP or WebP (HEIC "
        "photos need converting)"
    )
    assert not form.classify_button.disabled and form.classify_button.description == "Classify"
    form.rows[2][1].value = ()
    form.classify()
    assert form.output.outputs[0]["data"]["text/plain"] == (
        "'rook' has no photos yet: upload some under 'support images'. '✕' empties a row to leave it out"
    )
    form.rows[2][0].value = ""  # photos without a name are not a class
    form.rows[2][1].value = (png_upload("rook.png", pictures[0][0]),)
    form.classify()
    assert form.output.outputs[0]["data"]["text/plain"] == (
        "row 3 (1 photo) has photos but no class name: type one. '✕' empties a row to leave it out"
    )
    row = form.class_box.children[2]
    assert [type(w).__name__ for w in row.children] == ["Text", "FileUpload", "Button"]
    row.children[2].click()  # ✕: the row emptied, so left out: the two classes are classified again
    assert (form.rows[2][0].value, form.rows[2][1].value) == ("", ())
    pd.testing.assert_frame_equal(form.classify(), expected, atol=1e-6)
    form.classifier = None  # an unexpected error shows under the button, which works again after it
    assert form.classify() is None and not form.classify_button.disabled
    assert form.output.outputs[0]["data"]["text/plain"].startswith("classifying failed: AttributeError: ")


def test_an_example_from_a_missing_data_root_says_it_generates_the_birds_there(
    birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    made = []

    def generate_copy(root: Path, **settings: object) -> Path:  # the session's small set, in a second
        made.append(Path(root))
        return Path(shutil.copytree(birds, root))

    monkeypatch.setattr(fsl_core.data.birds, "ensure_birds", generate_copy)
    typo = tmp_path / "birdz"
    support, queries = example_folders(typo, tmp_path / "example", way=3, shots=2, queries=1)
    assert made == [typo]
    assert (
        f"data_root {typo} does not exist: generating the embedded birds set there" in capsys.readouterr().out
    )
    assert len(list(support.iterdir())) == 3 and len(list(queries.iterdir())) == 3
    example_folders(typo, tmp_path / "again", way=3, shots=2, queries=1)  # now it exists: used as it is
    assert made == [typo] and "generating" not in capsys.readouterr().out
