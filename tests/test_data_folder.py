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
from fsl_core.data.folder import SHOWN_BAD_FILES, split_folders
from fsl_core.data.images import image_file_problem
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
    with pytest.raises(
        FewShotDataError, match=r"test_pre does not exist \(use_pre=True needs"
    ):  # no "did you mean"
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
    with pytest.raises(
        FewShotDataError, match=r"split folder .*/tst does not exist \(did you mean 'test'\?\); "
    ):
        FewShotFolder(tiny_folder, "tst")
    (tmp_path / "sets" / "birds").mkdir(parents=True)
    misspelt = tmp_path / "sets" / "bird"
    with pytest.raises(
        FewShotDataError, match=rf"data root {misspelt} does not exist \(did you mean 'birds'\?\); "
    ):
        FewShotFolder(misspelt, "train")
    (tiny_folder / "empty_split").mkdir()
    with pytest.raises(FewShotDataError, match="empty_split is empty"):
        FewShotFolder(tiny_folder, "empty_split")
    (tiny_folder / "val" / "class_9").mkdir()
    with pytest.raises(FewShotDataError, match="hold no image files.*: class_9; put images in them, or move"):
        FewShotFolder(tiny_folder, "val")
    (tiny_folder / "README.md").write_text("a file, not a data set\n")
    with pytest.raises(FewShotDataError, match=r"data root .*README.md is a file, not a folder; expected"):
        FewShotFolder(tiny_folder / "README.md", "train")
    split_hint = rf"looks like a split folder itself: give the data set's root, {tiny_folder}$"
    with pytest.raises(
        FewShotDataError, match=rf"folders present in {tiny_folder / 'train'}: class_0, class_1.*{split_hint}"
    ):
        FewShotFolder(tiny_folder / "train", "train")
    with pytest.raises(FewShotDataError, match=split_hint):
        split_folders(tiny_folder / "train")
    with pytest.raises(FewShotDataError, match=r"min_images=7.*class_0 \(5 images\), class_1 \(6 images\)"):
        FewShotFolder(tiny_folder, "train", min_images=7)
    with pytest.raises(ValueError, match="transform"):
        FewShotFolder(tiny_folder, "train", transform="augment")


def test_folder_names_a_corrupt_image_when_loading(tiny_folder: Path) -> None:
    bad = tiny_folder / "train" / "class_2" / "img_3.png"
    bad.write_bytes(b"\x89PNG broken")
    data = FewShotFolder(tiny_folder, "train", verify=False)  # listing without the check does not decode
    index = [i for i, (p, _) in enumerate(data.samples) if p == bad][0]
    with pytest.raises(ImageLoadError, match=r"class_2/img_3.png"):
        data[index]


def test_folder_reads_the_generated_birds(tiny_birds: Path) -> None:
    data = FewShotFolder(tiny_birds, "train", image_size=32)
    assert len(data.classes) == 3 and len(data) == 18
    assert data[0][0].shape == (3, 32, 32)


def test_folder_reports_every_unreadable_file_at_once(tiny_folder: Path) -> None:
    empty = tiny_folder / "train" / "class_1" / "empty.jpg"
    empty.write_bytes(b"")
    text = tiny_folder / "train" / "class_3" / "notes.png"
    text.write_text("label: sparrow\n")
    with pytest.raises(FewShotDataError) as raised:
        FewShotFolder(tiny_folder, "train")
    message = str(raised.value)
    assert message.startswith(
        f"2 of {5 + 6 + 7 + 8 + 2} image files in {tiny_folder / 'train'} cannot be read"
    )
    assert "class_1/empty.jpg: empty (0 bytes)" in message
    assert "class_3/notes.png: not an image but text beginning 'label: sparrow" in message
    assert "verify=False" in message and "Remove or replace" in message
    data = FewShotFolder(tiny_folder, "train", verify=False)
    assert len(data) == 5 + 6 + 7 + 8 + 2 and empty in [path for path, _ in data.samples]
    assert len(FewShotFolder(tiny_folder, "val")) == 5 + 6 + 7 + 8  # other splits are not affected


def test_folder_error_lists_a_limited_number_of_files(tiny_folder: Path) -> None:
    count = SHOWN_BAD_FILES + 5
    for i in range(count):
        (tiny_folder / "test" / "class_0" / f"bad_{i:02d}.png").write_bytes(b"")
    with pytest.raises(FewShotDataError, match=f"^{count} of .*; and 5 more. Remove") as raised:
        FewShotFolder(tiny_folder, "test")
    assert str(raised.value).count("empty (0 bytes)") == SHOWN_BAD_FILES


def test_image_check_finds_truncated_images_and_keeps_whole_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    for suffix in (".png", ".jpg", ".bmp", ".webp"):
        whole = tmp_path / f"whole{suffix}"
        noise.save(whole)
        assert image_file_problem(whole) is None
        data = whole.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) - 200])
        assert image_file_problem(cut).startswith("damaged or truncated"), suffix
    # a JPEG with data after its end marker (as phones append) is whole
    appended = tmp_path / "appended.jpg"
    appended.write_bytes((tmp_path / "whole.jpg").read_bytes() + b"\x00" * 5000)
    assert image_file_problem(appended) is None
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(bytes(range(256)))
    assert image_file_problem(garbage) == "not an image (first bytes: 00 01 02 03 04 05 06 07)"
    assert image_file_problem(tmp_path / "missing.png") == "cannot be opened: No such file or directory"
