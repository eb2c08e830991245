"""Image reading, transforms and the few-shot folder data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image
from PIL import Image

from fsl_core.data import (
    FewShotDataError,
    FewShotFolder,
    ImageLoadError,
    denormalize,
    eval_transform,
    load_rgb,
    train_transform,
)
from fsl_core.data.transforms import IMAGENET_MEAN, eval_resize


# -- load_rgb ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("L", ".jpg"),
        ("L", ".png"),
        ("P", ".png"),
        ("RGB", ".bmp"),
        ("RGB", ".webp"),
        ("CMYK", ".jpg"),
        ("RGBA", ".png"),
        ("LA", ".png"),
        ("1", ".png"),
    ],
)
def test_load_rgb_converts_every_mode_to_rgb(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"image{suffix}"
    Image.new("RGB", (20, 10), (0, 128, 255)).convert(mode).save(path)
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (20, 10)


def test_load_rgb_values(tmp_path: Path) -> None:
    transparent = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    transparent.putpixel((0, 0), (10, 20, 30, 255))
    transparent.save(tmp_path / "alpha.png")
    image = np.asarray(load_rgb(tmp_path / "alpha.png"))
    assert image[0, 0].tolist() == [10, 20, 30]  # opaque pixel kept
    assert image[3, 3].tolist() == [255, 255, 255]  # transparent pixel over white

    Image.new("L", (3, 3), 77).save(tmp_path / "grey.png")
    assert np.asarray(load_rgb(tmp_path / "grey.png"))[1, 1].tolist() == [77, 77, 77]

    Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert np.asarray(load_rgb(tmp_path / "deep.png"))[0, 0].tolist() == [
        255,
        255,
        255,
    ]  # rescaled, not clipped

    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert np.asarray(load_rgb(tmp_path / "palette.png"))[0, 0].tolist() == [200, 100, 50]


def test_load_rgb_names_corrupt_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "not_an_image.jpg"
    garbage.write_bytes(b"this is not a JPEG")
    with pytest.raises(ImageLoadError, match="not_an_image.jpg"):
        load_rgb(garbage)
    good = write_image(tmp_path / "whole.png", size=(64, 64))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageLoadError, match="truncated.png"):
        load_rgb(truncated)
    with pytest.raises(ImageLoadError, match="missing.png"):
        load_rgb(tmp_path / "missing.png")
    assert issubclass(ImageLoadError, ValueError)


# -- transforms -------------------------------------------------------------------------------------------
def test_transforms_shapes_and_denormalize() -> None:
    image = Image.new("RGB", (120, 70), (255, 0, 0))
    assert eval_resize(84) == 92
    x = eval_transform(84)(image)
    assert x.shape == (3, 84, 84)
    assert torch.allclose(denormalize(x)[:, 40, 40], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(x[1, 0, 0], torch.tensor((0.0 - IMAGENET_MEAN[1]) / 0.224), atol=1e-5)
    assert train_transform(84)(image).shape == (3, 84, 84)
    assert eval_transform(32)(image).shape == (3, 32, 32)
    assert eval_transform(84, pre_resized=True)(Image.new("RGB", (84, 84))).shape == (3, 84, 84)
    batch = denormalize(torch.randn(2, 3, 5, 5) * 10)
    assert batch.shape == (2, 3, 5, 5) and batch.min() >= 0 and batch.max() <= 1
    with pytest.raises(ValueError, match="image_size"):
        eval_transform(0)


# -- FewShotFolder ----------------------------------------------------------------------------------------
def test_folder_lists_classes_and_images(tiny_folder: Path) -> None:
    (tiny_folder / "train" / "class_0" / "notes.txt").write_text("not an image")
    (tiny_folder / "train" / "class_0" / ".hidden.png").write_bytes(b"")
    (tiny_folder / "train" / ".cache").mkdir()
    data = FewShotFolder(tiny_folder, "train")
    assert data.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert data.class_to_idx == {"class_0": 0, "class_1": 1, "class_2": 2, "class_3": 3}
    assert len(data) == 5 + 6 + 7 + 8
    assert [len(v) for v in data.indices_by_class()] == [5, 6, 7, 8]
    assert data.targets == [label for _, label in data.samples]
    assert {p.suffix for p, _ in data.samples} == {".png", ".jpg", ".bmp", ".webp", ".JPEG"}
    image, label = data[7]
    assert image.shape == (3, 84, 84) and image.dtype == torch.float32 and label == 1
    assert data.image_path(7).parent.name == "class_1"
    assert data.load_image(7).mode == "RGB"
    assert FewShotFolder(tiny_folder, "val", transform="train", image_size=48)[0][0].shape == (3, 48, 48)
    assert isinstance(FewShotFolder(tiny_folder, "test", transform=None)[0][0], Image.Image)
    assert FewShotFolder(tiny_folder, "test", transform=lambda im: im.size)[0][0] == (40, 30)


def test_folder_use_pre(tiny_folder: Path) -> None:
    with pytest.raises(FewShotDataError, match="test_pre"):
        FewShotFolder(tiny_folder, "test", use_pre=True)
    write_image(tiny_folder / "test_pre" / "class_0" / "a.png", size=(84, 84))
    data = FewShotFolder(tiny_folder, "test", use_pre=True)
    assert data.folder.name == "test_pre" and len(data) == 1 and data[0][0].shape == (3, 84, 84)
    assert FewShotFolder(tiny_folder, "train", use_pre=True).folder.name == "train"


def test_folder_errors_name_what_is_wrong(tmp_path: Path, tiny_folder: Path) -> None:
    with pytest.raises(FewShotDataError, match=r"does not exist.*ROOT/\{train,val,test\}/<class>/<image>"):
        FewShotFolder(tmp_path / "nowhere", "train")
    with pytest.raises(FewShotDataError, match=r"split folder .*validation.*folders present.*test.*train"):
        FewShotFolder(tiny_folder, "validation")
    (tiny_folder / "empty_split").mkdir()
    with pytest.raises(FewShotDataError, match="empty_split is empty"):
        FewShotFolder(tiny_folder, "empty_split")
    (tiny_folder / "val" / "class_9").mkdir()
    with pytest.raises(FewShotDataError, match="hold no image files.*class_9"):
        FewShotFolder(tiny_folder, "val")
    with pytest.raises(FewShotDataError, match=r"min_images=7.*class_0 \(5 images\), class_1 \(6 images\)"):
        FewShotFolder(tiny_folder, "train", min_images=7)
    with pytest.raises(ValueError, match="transform"):
        FewShotFolder(tiny_folder, "train", transform="augment")


def test_folder_names_a_corrupt_image_when_loading(tiny_folder: Path) -> None:
    bad = tiny_folder / "train" / "class_2" / "img_3.png"
    bad.write_bytes(b"\x89PNG broken")
    data = FewShotFolder(tiny_folder, "train")  # listing does not decode
    index = [i for i, (p, _) in enumerate(data.samples) if p == bad][0]
    with pytest.raises(ImageLoadError, match=r"class_2/img_3.png"):
        data[index]


def test_folder_reads_the_generated_birds(tiny_birds: Path) -> None:
    data = FewShotFolder(tiny_birds, "train", image_size=32)
    assert len(data.classes) == 3 and len(data) == 18
    assert data[0][0].shape == (3, 32, 32)
