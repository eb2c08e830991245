"""The training augmentation on the device (``augment_on_device``): the same draws as the loader's PIL path,
Pillow's resampling and colour jitter reproduced on tensors bit for bit, the same training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, assert_same_run
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from fsl_core.data import device_augmentation
from fsl_core.data.decoded import DecodedImages
from fsl_core.data.device_augmentation import (
    PLAN_FIELDS,
    AugmentationPlanner,
    DeviceAugmentation,
    pillow_bilinear_weights,
    pillow_resized_levels,
)
from fsl_core.data.images import FewShotDataError
from fsl_core.data.transforms import train_transform
from fsl_core.engine import TrainConfig, train
from fsl_core.engine.episodes import seeded_transform
from fsl_core.runtime import seed_everything


def resized(pixels: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, height, width) levels, through the two exact passes in Pillow's order."""
    sides = [torch.tensor([float(side)]) for side in (pixels.shape[0], height, pixels.shape[1], width)]
    taps = (device_augmentation._most_taps(*sides[:2]), device_augmentation._most_taps(*sides[2:]))
    start = torch.tensor([0.0])
    down = pillow_bilinear_weights(sides[0], sides[1], start, height, pixels.shape[0], taps[0])
    across = pillow_bilinear_weights(sides[2], sides[3], start, width, pixels.shape[1], taps[1])
    first = bool(device_augmentation.vertical_pass_first(*sides))
    crops = torch.from_numpy(pixels.copy())[None]
    return pillow_resized_levels(crops, down, across.transpose(1, 2), taps, first)[0]


def pillow_resized(pixels: np.ndarray, height: int, width: int) -> torch.Tensor:
    image = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()


@pytest.mark.parametrize("axis", ["height", "width"])
def test_resampling_along_one_axis_is_pillows_exactly(axis: str) -> None:
    rng = np.random.default_rng(0)
    # upscaling, mild and strong reductions: 3 to 121 taps, so two and three parts of the split weights
    sizes = [(40, 130), (37, 84), (300, 84), (500, 84), (1210, 20), (84, 84), (9, 200), (700, 7)]
    for source, target in sizes:
        side = int(rng.integers(5, 60))
        shape = (source, side) if axis == "height" else (side, source)
        pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        size = (target, side) if axis == "height" else (side, target)
        ours, pillows = resized(pixels, *size), pillow_resized(pixels, *size)
        assert torch.equal(ours, pillows), (source, target)


def test_resampling_both_axes_is_pillows_in_its_order_of_passes() -> None:
    """Pillow resamples horizontally then vertically, rounding to 8 bits in between, and, from release 13,
    vertically first when the height shrinks by more than twice as many pixels as the width: sizes on both
    sides of that line, enlarging and shrinking, come out as Pillow's."""
    rng = np.random.default_rng(1)
    orders = []
    for number in range(80):
        height, width = (int(side) for side in rng.integers(20, 400, 2))
        new_height, new_width = (int(side) for side in rng.integers(8, 120, 2))
        if number % 4 == 0:  # on the line H − h = 2·(W − w), and one pixel either side of it
            new_height = max(1, height - 2 * (width - new_width) + number % 3 - 1)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        size = (new_height, new_width)
        first = device_augmentation.vertical_pass_first(
            *(torch.tensor([side]) for side in (height, new_height, width, new_width))
        )
        orders.append(bool(first))
        assert torch.equal(resized(pixels, *size), pillow_resized(pixels, *size)), (height, width, *size)
    if device_augmentation.PILLOW_VERTICAL_FIRST:
        assert 10 <= sum(orders) <= 70  # both orders were tried


def test_weights_are_pillows_integers() -> None:
    """Reducing 10 pixels to 4 (scale 2.5): output 0 is centred at 1.25 with a support of ±2.5, so pixels 0-3
    at distances 0.3, 0.1, 0.5, 0.9 (over 2.5) weigh 0.7, 0.9, 0.5, 0.1, normalised by 2.2 and rounded to
    multiples of 2⁻²²."""
    weights = pillow_bilinear_weights(*(torch.tensor([value]) for value in (10, 4, 0)), 4, 10, taps=7)[0]
    assert weights[0].tolist() == [1334551, 1715852, 953251, 190650, 0, 0, 0, 0, 0, 0]
    assert torch.equal(weights[3], weights[0].flip(0))  # symmetric
    assert ((weights.sum(1) - 2**22).abs() <= 2).all()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("on", DEVICES)
def test_colour_jitter_is_pillows_exactly(on: str) -> None:
    """Random images, orders and factors; among them greys, and images whose mean grey level lies exactly
    half-way between two levels (Pillow rounds it up; a division done as a product could round it down)."""
    rng = np.random.default_rng(2)
    images, plans, references = [], [], []
    for number in range(48):
        pixels = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        if number % 4 == 0:
            pixels[..., 1] = pixels[..., 0]  # greys and saturated colours
        if number % 4 == 1:  # grey levels k and k + 1 on half the pixels each: a mean of k + 0.5
            level = int(rng.integers(0, 255))
            pixels[:] = level + (np.arange(14 * 14) % 2).reshape(14, 14, 1).astype(np.uint8)
        order = rng.permutation(3).tolist()[: 1 + number % 3]
        if number % 4 == 1:
            order = [1] + [kind for kind in order if kind != 1]
        factors = rng.uniform(0.6, 1.4, 3).astype(np.float32).tolist()
        image = Image.fromarray(pixels)
        adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
        for kind in order:
            image = adjust[kind](image, factors[kind])
        plan = torch.zeros(len(PLAN_FIELDS), dtype=torch.float64)
        plan[PLAN_FIELDS.index("jitter_1") : PLAN_FIELDS.index("jitter_3") + 1] = torch.tensor(
            order + [-1] * (3 - len(order))
        )
        plan[PLAN_FIELDS.index("brightness") :] = torch.tensor(factors)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float())
        plans.append(plan)
        references.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float())
    jittered = device_augmentation._jittered(torch.stack(images).to(on), torch.stack(plans).to(on))
    assert torch.equal(jittered.cpu(), torch.stack(references))


def test_plans_draw_what_the_transforms_draw() -> None:
    """The same parameters from the same draws: the generator ends in the same state."""
    transform = train_transform(84, "papers")
    planner = AugmentationPlanner(transform)
    image = Image.new("RGB", (300, 200))
    for seed in range(20):
        seed_everything(seed)
        crop = T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
        jitter = transform.transforms[1]
        order, *factors = T.ColorJitter.get_params(
            jitter.brightness, jitter.contrast, jitter.saturation, None
        )
        flip = bool(torch.rand(1) < 0.5)
        after_transforms = torch.get_rng_state()
        seed_everything(seed)
        plan = dict(zip(PLAN_FIELDS, planner.draw(7, 200, 300).tolist()))
        assert torch.equal(torch.get_rng_state(), after_transforms)
        assert (plan["top"], plan["left"], plan["height"], plan["width"]) == crop
        assert [plan[f"jitter_{i}"] for i in (1, 2, 3)] == [k for k in order.tolist() if k < 3]
        assert [plan["brightness"], plan["contrast"], plan["saturation"]] == factors[:3]
        assert (plan["index"], plan["flip"], plan["resized_height"], plan["resized_width"]) == (
            7,
            flip,
            84,
            84,
        )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> DecodedImages:
    """Smooth noisy colour images from 30 to 420 pixels a side (the papers' crops then both shrink and
    enlarge), a 60×400 strip and a 90×90 square among them."""
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("photos")
    sizes = [(60, 400), (90, 90)] + [tuple(int(side) for side in rng.integers(30, 420, 2)) for _ in range(22)]
    paths = []
    for number, (height, width) in enumerate(sizes):
        coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(smooth + rng.integers(-30, 31, smooth.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{number}.png")
        Image.fromarray(pixels).save(paths[-1])
    return DecodedImages(paths)


def loader_and_device_images(
    photos: DecodedImages, preset: str, count: int = 96, on: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the loader's PIL images, those made on device ``on`` (brought back to the CPU), their plans) of
    ``count`` images at seeds 100, 101, ..."""
    transform = train_transform(84, preset)
    planner = AugmentationPlanner(transform)
    plans, references = [], []
    for number in range(count):
        index, seed = number % len(photos), 100 + number
        with torch.random.fork_rng():
            seed_everything(seed)
            plans.append(planner.draw(index, *photos.shapes[index][:2]))
        references.append(seeded_transform(transform, photos.image(index), seed))
    plans_tensor = torch.stack(plans)
    ours = DeviceAugmentation(photos, planner, on).images(plans_tensor).cpu()
    return torch.stack(references), ours, plans_tensor


@pytest.mark.parametrize("preset", ["papers", "no_flip", "light", "none"])
def test_the_device_gives_the_loaders_images_bit_for_bit(photos: DecodedImages, preset: str) -> None:
    loader, ours, plans = loader_and_device_images(photos, preset)
    assert torch.equal(ours, loader)
    if preset == "papers":  # crops, factors and flips vary: each was drawn
        flips = plans[:, PLAN_FIELDS.index("flip")]
        assert 0.3 < flips.mean() < 0.7
        assert len(set(plans[:, PLAN_FIELDS.index("brightness")].tolist())) == len(plans)
        assert len(set(plans[:, PLAN_FIELDS.index("height")].tolist())) > len(plans) / 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("preset", ["papers", "light"])
def test_a_gpu_gives_the_loaders_images_bit_for_bit(photos: DecodedImages, preset: str) -> None:
    loader, ours, _ = loader_and_device_images(photos, preset, on="cuda")
    assert torch.equal(ours, loader)


def test_chunks_give_the_same_images(photos: DecodedImages, monkeypatch: pytest.MonkeyPatch) -> None:
    _, whole, plans = loader_and_device_images(photos, "papers", count=30)
    monkeypatch.setattr(device_augmentation, "CHUNK_PIXELS", 200 * 200)
    chunks = device_augmentation._chunks(plans)
    assert len(chunks) > 5 and sorted(torch.cat([chunk for chunk, _ in chunks]).tolist()) == list(range(30))
    planner = AugmentationPlanner(train_transform(84, "papers"))
    assert torch.equal(DeviceAugmentation(photos, planner, "cpu").images(plans), whole)


def test_training_on_the_device_is_the_loaders_run(reference_run: Path, birds: Path, tmp_path: Path) -> None:
    """A run on the device path equals the loader's, whole or resumed, and a run may switch path when it
    is resumed."""
    whole, switched = tmp_path / "whole", tmp_path / "switched"
    train(data_root=str(birds), run_dir=str(whole), **dict(TINY, augment_on_device=True))
    assert_same_run(reference_run, whole)
    train(data_root=str(birds), run_dir=str(switched), stop_after_epochs=1, **TINY)
    train(data_root=str(birds), run_dir=str(switched), **dict(TINY, augment_on_device=True, num_workers=1))
    assert_same_run(reference_run, switched)


def test_what_the_device_does_not_apply_is_refused() -> None:
    with pytest.raises(ValueError, match=r"callable augmentation .*leave augment_on_device off"):
        TrainConfig(augmentation=lambda image: image, augment_on_device=True)
    rotating = T.Compose([T.RandomRotation(10), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    with pytest.raises(ValueError, match=r"cannot apply RandomRotation.*leave augment_on_device off"):
        AugmentationPlanner(rotating)
    hue = T.Compose([T.ColorJitter(hue=0.1), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    with pytest.raises(ValueError, match="a hue jitter"):
        AugmentationPlanner(hue)
    with pytest.raises(ValueError, match="ends with ToTensor and Normalize"):
        AugmentationPlanner(T.Compose([T.RandomResizedCrop(84), T.ToTensor()]))
    normalise = [T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]
    twice = T.Compose([T.RandomResizedCrop(84), T.ColorJitter(0.4), T.ColorJitter(0.4), *normalise])
    with pytest.raises(ValueError, match="a second colour jitter"):
        AugmentationPlanner(twice)
    with pytest.raises(ValueError, match="must share one size"):
        AugmentationPlanner(T.Compose([T.ColorJitter(0.4), *normalise]))


def test_a_pillow_that_computes_otherwise_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device checks a few images against the installed Pillow before training starts: here it is made
    to take the other order of resampling passes, which sizes in the check are on both sides of."""
    planner = AugmentationPlanner(train_transform(84, "papers"))
    device_augmentation.check_against_pillow(planner, "cpu")  # agrees with the installed Pillow
    monkeypatch.setattr(
        device_augmentation, "PILLOW_VERTICAL_FIRST", not device_augmentation.PILLOW_VERTICAL_FIRST
    )
    with pytest.raises(FewShotDataError, match=r"Pillow .* makes other ones; leave augment_on_device off"):
        device_augmentation.check_against_pillow(planner, "cpu")
