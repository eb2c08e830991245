"""Training augmentation presets: their pixels, their seeding, the figure of notebook 01, and the
``augmentation`` training setting (recorded in config.json and checkpoints, checked on resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from fsl_core.data import (
    AUGMENTATIONS,
    FewShotFolder,
    augmentation_transform,
    eval_transform,
    train_transform,
)
from fsl_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, augmentation_label, denormalize
from fsl_core.engine import TrainConfig, train
from fsl_core.engine.config import config_differences
from fsl_core.engine.episodes import SeededImages, seeded_transform
from fsl_core.models.checkpoints import load_checkpoint
from fsl_core.viz import save_figure
from fsl_core.viz.augmentation import augmentation_examples, example_indices, plot_augmentations

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 32
SEEDS = range(50)


def textured_image() -> Image.Image:
    """A fixed 60×48 RGB image with colour, texture and no symmetry."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (48, 60, 3), dtype=np.uint8)
    pixels[:, :20, 0] = 250
    return Image.fromarray(pixels)


def gradient_image() -> Image.Image:
    """A grey 96×80 image whose brightness grows from 20 (left) to 150 (right): every crop, resize and colour
    jitter of the presets keeps its left half darker than its right half unless the image is mirrored."""
    row = np.linspace(20, 150, 96).round().astype(np.uint8)
    return Image.fromarray(np.repeat(np.tile(row, (80, 1))[..., None], 3, axis=2))


def by_hand(preset: str) -> T.Compose:
    """The presets written out with torchvision, as the module docstring of transforms.py describes them."""
    side = round(SIZE * 92 / 84)
    jitter = T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
    steps = {
        "papers": [T.RandomResizedCrop(SIZE), jitter, T.RandomHorizontalFlip()],
        "no_flip": [T.RandomResizedCrop(SIZE), jitter],
        "light": [T.Resize([side, side]), T.RandomCrop(SIZE)],
        "none": [T.Resize([side, side]), T.CenterCrop(SIZE)],
    }[preset]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def left_darker(x: torch.Tensor) -> bool:
    half = x.shape[-1] // 2
    return bool(x[..., :half].mean() < x[..., half:].mean())


# -- the presets ---------------------------------------------------------------------------------------------
def test_the_presets_are_the_documented_pipelines() -> None:
    image = textured_image()
    assert list(AUGMENTATIONS) == ["papers", "no_flip", "light", "none"]
    for preset in AUGMENTATIONS:
        ours, hand = train_transform(SIZE, preset), by_hand(preset)
        for seed in (0, 1, 2024):
            got, expected = seeded_transform(ours, image, seed), seeded_transform(hand, image, seed)
            assert got.shape == (3, SIZE, SIZE) and torch.equal(got, expected), (preset, seed)
    # the default is the papers' preset, and "none" is the evaluation transform, pixel for pixel
    assert torch.equal(
        seeded_transform(train_transform(SIZE), image, 5), seeded_transform(by_hand("papers"), image, 5)
    )
    assert torch.equal(seeded_transform(train_transform(SIZE, "none"), image, 3), eval_transform(SIZE)(image))


def test_light_is_a_shifted_evaluation_crop() -> None:
    image = textured_image()
    side = round(SIZE * 92 / 84)  # 35: crop positions 0..3 each way
    resized = T.Compose([T.Resize([side, side]), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(
        image
    )
    light = train_transform(SIZE, "light")
    offsets = set()
    for seed in range(20):
        x = seeded_transform(light, image, seed)
        found = [
            (i, j)
            for i in range(side - SIZE + 1)
            for j in range(side - SIZE + 1)
            if torch.equal(x, resized[:, i : i + SIZE, j : j + SIZE])
        ]
        assert len(found) == 1, seed
        offsets.add(found[0])
    assert len(offsets) > 4  # the position is random, the scale and colours are not


def test_flip_free_presets_never_mirror() -> None:
    image = gradient_image()
    papers = train_transform(SIZE, "papers")
    flips = 0
    for preset in ("no_flip", "light", "none"):
        transform = train_transform(SIZE, preset)
        assert all(left_darker(seeded_transform(transform, image, seed)) for seed in SEEDS), preset
    no_flip = train_transform(SIZE, "no_flip")
    for seed in SEEDS:
        a, b = seeded_transform(papers, image, seed), seeded_transform(no_flip, image, seed)
        # the same crop and colour jitter; the papers' preset mirrors some of them
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
        flips += not left_darker(a)
    assert 10 < flips < 40  # RandomHorizontalFlip(0.5) over 50 seeds


def test_training_and_the_figure_seed_an_image_alike(tiny_birds: Path) -> None:
    light = train_transform(SIZE, "light")
    data = FewShotFolder(tiny_birds, "train", transform=light, image_size=SIZE)
    seeded = SeededImages(data)
    for seed, index in [(11, 0), (12, 0), (11, 5)]:
        image, _ = seeded[(seed, index)]
        assert torch.equal(image, seeded_transform(light, data.load_image(index), seed))
    assert not torch.equal(seeded[(11, 0)][0], seeded[(12, 0)][0])


def test_seeding_an_image_leaves_the_gpus_generators_alone(tiny_birds: Path, monkeypatch) -> None:
    """Images loaded in the training process (``num_workers=0``) must not move the stream a GPU's dropout
    draws from: the images seed only the host's generators, which are put back afterwards."""
    seeded_gpus = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded_gpus.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", seeded_gpus.append)
    data = FewShotFolder(tiny_birds, "train", transform=train_transform(SIZE, "light"), image_size=32)
    state = torch.get_rng_state()
    images = SeededImages(data).__getitems__([(11, 0), (12, 1)])
    assert seeded_gpus == [] and torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(0)  # what a run's own seeding does: every device
    assert seeded_gpus == [0]
    assert torch.equal(images[1][0], seeded_transform(data.transform, data.load_image(1), 12))


def test_a_callable_is_used_as_it_is_and_recorded_by_name_and_repr() -> None:
    pipeline = v2.Compose([v2.RandomCrop(SIZE), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    assert augmentation_transform(pipeline, SIZE) is pipeline
    label = augmentation_label(pipeline)
    assert label.startswith(
        "callable torchvision.transforms.v2._container.Compose: Compose( RandomCrop(size=(32, 32)"
    )
    assert "\n" not in label and label.endswith("ToImage() ToDtype(scale=True) )")
    assert augmentation_label(by_hand) == "callable test_augmentation.by_hand"
    name = "test_a_callable_is_used_as_it_is_and_recorded_by_name_and_repr"
    assert augmentation_label(lambda image: image) == f"callable test_augmentation.{name}.<locals>.<lambda>"
    with pytest.raises(ValueError, match=r"'no-flip' is not known \(did you mean 'no_flip'\?\)"):
        train_transform(SIZE, "no-flip")
    with pytest.raises(ValueError, match="is the record of a Python callable.*pass the callable itself"):
        augmentation_transform(augmentation_label(pipeline), SIZE)


# -- the figure of notebook 01 -------------------------------------------------------------------------------
def test_augmentation_examples_and_figure(tiny_birds: Path, tmp_path: Path) -> None:
    images = [textured_image(), gradient_image(), gradient_image()]
    examples = augmentation_examples(images, SIZE, tuple(AUGMENTATIONS), seed=3)
    assert examples.shape == (4, 3, 3, SIZE, SIZE)
    rows = dict(zip(AUGMENTATIONS, examples))
    for column, image in enumerate(images):
        assert torch.equal(rows["none"][column], eval_transform(SIZE)(image))
    assert (
        left_darker(rows["no_flip"][1]) and left_darker(rows["no_flip"][2]) and left_darker(rows["light"][1])
    )
    # one seed per column and the same for every row: "papers" is "no_flip" or its mirror
    for column in range(3):
        assert torch.equal(rows["papers"][column], rows["no_flip"][column]) or torch.equal(
            rows["papers"][column], rows["no_flip"][column].flip(-1)
        )
    assert not torch.equal(rows["no_flip"][1], rows["no_flip"][2])  # columns are drawn with their own seeds
    assert torch.equal(examples, augmentation_examples(images, SIZE, tuple(AUGMENTATIONS), seed=3))

    data = FewShotFolder(tiny_birds, "train", transform=None)
    chosen = example_indices(data, 2)
    assert [data.targets[i] for i in chosen] == [0, 1] and chosen == [0, data.indices_by_class()[1][0]]
    assert len(example_indices(data, 10)) == len(data.classes)
    fig = plot_augmentations(examples, tuple(AUGMENTATIONS), ["a", "b", "c"])
    axes = fig.get_axes()  # row by row
    assert len(axes) == 12 and [axes[3 * r].get_ylabel() for r in range(4)] == list(AUGMENTATIONS)
    assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
    # "mirrored" under the papers' cells that its flip mirrored, and nowhere else
    papers = list(AUGMENTATIONS).index("papers")
    flipped = [not torch.equal(rows["papers"][c], rows["no_flip"][c]) for c in range(3)]
    assert sorted(set(flipped)) == [False, True]  # this seed draws both
    expected = [["mirrored" if r == papers and flipped[c] else "" for c in range(3)] for r in range(4)]
    assert [ax.get_xlabel() for ax in axes] == sum(expected, [])
    shown = np.asarray(axes[9].get_images()[0].get_array())  # row "none", first column
    evaluated = denormalize(eval_transform(SIZE)(images[0])).permute(1, 2, 0).numpy()
    assert shown.shape == (SIZE, SIZE, 3) and np.allclose(shown, evaluated, atol=1e-6)
    assert save_figure(fig, tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match=r"shapes \[\(3, 48, 60\), \(3, 80, 96\)\]; expected \(3, 32, 32\)"):
        augmentation_examples(images, SIZE, [v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32)])])


# -- the training setting ------------------------------------------------------------------------------------
def test_the_setting_round_trips_and_is_checked() -> None:
    for preset in AUGMENTATIONS:
        config = TrainConfig(augmentation=preset)
        assert (
            TrainConfig.from_dict(config.to_dict()).augmentation == preset == config.to_dict()["augmentation"]
        )
    assert TrainConfig().augmentation == "papers"
    pipeline = v2.Compose([v2.RandomCrop(SIZE)])
    config = TrainConfig(augmentation=pipeline)
    record = config.to_dict()["augmentation"]
    assert (
        record == augmentation_label(pipeline)
        and json.loads(json.dumps(config.to_dict())) == config.to_dict()
    )
    assert config.replace(seed=1).augmentation is pipeline  # replace keeps the callable itself
    assert TrainConfig.from_dict(config.to_dict()).augmentation == record
    with pytest.raises(ValueError, match=r"augmentation='nofip' is not known \(did you mean 'no_flip'\?\)"):
        TrainConfig(augmentation="nofip")
    # runs written before the setting existed used the papers' augmentation
    earlier = {k: v for k, v in TrainConfig().to_dict().items() if k != "augmentation"}
    assert config_differences(earlier, TrainConfig().to_dict()) == []
    assert config_differences(earlier, TrainConfig(augmentation="none").to_dict()) == [
        "augmentation: 'papers' in the checkpoint, 'none' now"
    ]


def test_training_records_the_augmentation_and_resume_checks_it(
    birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {**TINY, "epochs": 2, "val_every": 0, "data_root": str(birds)}
    run_dir = tmp_path / "preset"
    train(settings, run_dir=str(run_dir), augmentation="no_flip", stop_after_epochs=1)
    assert json.loads((run_dir / "config.json").read_text())["augmentation"] == "no_flip"
    assert json.loads((run_dir / "run.json").read_text())["identity"]["augmentation"] == "no_flip"
    assert load_checkpoint(run_dir / "last.pt")["train_config"]["augmentation"] == "no_flip"
    with pytest.raises(ValueError, match="augmentation: 'no_flip' in the run, 'papers' now"):
        train(settings, run_dir=str(run_dir))

    def pipeline(crop: int) -> v2.Compose:
        steps = [v2.Resize([crop + 2, crop + 2]), v2.RandomCrop(crop), v2.ToImage()]
        return v2.Compose(
            [*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    run_dir = tmp_path / "callable"
    train(settings, run_dir=str(run_dir), augmentation=pipeline(16), stop_after_epochs=1)
    record = json.loads((run_dir / "config.json").read_text())["augmentation"]
    assert record == augmentation_label(pipeline(16)) and "RandomCrop(size=(16, 16)" in record
    assert load_checkpoint(run_dir / "last.pt")["train_config"]["augmentation"] == record
    with pytest.raises(
        ValueError, match=r"augmentation: .*RandomCrop\(size=\(16, 16\).* in the run, .*\(17, 17\)"
    ):
        train(settings, run_dir=str(run_dir), augmentation=pipeline(17))
    with pytest.raises(ValueError, match="is the record of a Python callable"):
        train(TrainConfig.load(run_dir))
    capsys.readouterr()
    result = train(settings, run_dir=str(run_dir), augmentation=pipeline(16))  # an equal callable continues
    assert result.epochs_done == 2
    assert f"continuing with the augmentation {record!r}" in capsys.readouterr().err
