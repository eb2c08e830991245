"""Preparation of CUB-200-2011, Stanford Dogs and Stanford Cars from miniature copies of their layouts."""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fsl_core.data import FewShotDataError, FewShotFolder
from fsl_core.data.prepare import (
    SPLITS_DIR,
    Box,
    PrepareError,
    check_prepared,
    class_folder_name,
    cub_box,
    draw_split,
    frn_cub_split,
    load_split,
    pre_resize,
    prepare_cars,
    prepare_cub,
    prepare_dogs,
)
from fsl_core.data.prepare.__main__ import main
from fsl_core.data.prepare.dogs import DOGS_LAYOUT

REPO = Path(__file__).resolve().parents[1]
# SHA-256 of the class lists (train, val, test) of the CUB 130/20/50 split published with BiFRN and HMDRN.
CUB_130_20_50_SHA256 = "8b9772403ce5dc2f0b4bad02440bde6033fab502878742e8ea4cc34c760d6196"


# ----------------------------------------------------------------------------- miniature layouts


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    """A random RGB image: every pixel differs, so a crop off by one pixel is caught."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def write_split(path: Path, train: list[str], val: list[str], test: list[str]) -> Path:
    path.write_text(json.dumps({"name": "mini", "train": train, "val": val, "test": test}))
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` with its size, mtime and content hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        state[path.relative_to(root).as_posix()] = (
            stat.st_size if path.is_file() else None,
            stat.st_mtime_ns,
            digest,
        )
    return state


CUB_CLASSES = ["001.Aa_Bird", "002.Bb_Bird", "003.Cc_Bird", "004.Dd_Bird"]


def make_cub(base: Path, per_class: int = 3) -> tuple[Path, dict[str, tuple[str, tuple[float, ...]]]]:
    """A miniature CUB_200_2011/ (PNG images, float boxes with halves); returns its root and
    {output stem: (class, (x, y, w, h))}."""
    root = base / "CUB_200_2011"
    images, labels, boxes, info = [], [], [], {}
    image_id = 0
    for class_id, name in enumerate(CUB_CLASSES, start=1):
        (root / "images" / name).mkdir(parents=True)
        for k in range(per_class):
            image_id += 1
            stem = f"{name.split('.')[1]}_{k:04d}"
            noise_image(30 + k, 24, seed=image_id).save(root / "images" / name / f"{stem}.png")
            box = (2.5 + k, 3.0, 11.0, 9.5 + k)  # edges 2.5 and 13.5 round half to even
            images.append(f"{image_id} {name}/{stem}.png")
            labels.append(f"{image_id} {class_id}")
            boxes.append(f"{image_id} " + " ".join(str(v) for v in box))
            info[stem] = (name, box)
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{i} {n}" for i, n in enumerate(CUB_CLASSES, 1)) + "\n")
    (root / "train_test_split.txt").write_text(
        "\n".join(f"{i} {i % 2}" for i in range(1, image_id + 1)) + "\n"
    )
    return root, info


@pytest.fixture
def cub(tmp_path: Path) -> tuple[Path, dict, Path]:
    root, info = make_cub(tmp_path / "src")
    split = write_split(tmp_path / "split.json", CUB_CLASSES[:2], [CUB_CLASSES[2]], [CUB_CLASSES[3]])
    return root, info, split


def quiet(**options) -> dict:
    return dict(progress=False, echo=False, workers=2, **options)


# ----------------------------------------------------------------------------- split files


def test_committed_split_files_have_the_published_sizes() -> None:
    sizes = {
        "cub_130_20_50": (130, 20, 50, 200),
        "cub_100_50_50": (100, 50, 50, 200),
        "dogs_70_20_30": (70, 20, 30, 120),
        "cars_130_17_49": (130, 17, 49, 196),
    }
    splits = {name: load_split(SPLITS_DIR / f"{name}.json") for name in sizes}
    for name, (train, val, test, total) in sizes.items():
        classes = splits[name].classes
        assert (len(classes["train"]), len(classes["val"]), len(classes["test"])) == (train, val, test), name
        assert len(set().union(*classes.values())) == total, name  # disjoint and complete
    cub, frn = splits["cub_130_20_50"].classes, splits["cub_100_50_50"].classes
    published = {part: cub[part] for part in ("train", "val", "test")}
    digest = hashlib.sha256(json.dumps(published, sort_keys=True).encode()).hexdigest()
    assert digest == CUB_130_20_50_SHA256
    everything = sorted(cub["train"] + cub["val"] + cub["test"], key=lambda n: int(n.split(".")[0]))
    assert [int(n.split(".")[0]) for n in everything] == list(range(1, 201))
    assert frn == frn_cub_split(everything)
    assert sorted(frn["test"]) == sorted(cub["test"])  # FRN's test classes are the 130/20/50 test classes
    assert set(cub["val"]) <= set(frn["val"])
    dogs = sorted(
        splits["dogs_70_20_30"].classes["train"]
        + splits["dogs_70_20_30"].classes["val"]
        + splits["dogs_70_20_30"].classes["test"]
    )
    assert all(len(n) > 10 and n[0] == "n" and n[1:9].isdigit() and n[9] == "-" for n in dogs)
    assert "n02085620-Chihuahua" in dogs and "n02116738-African_hunting_dog" in dogs
    cars = [n for part in splits["cars_130_17_49"].classes.values() for n in part]
    assert "AM General Hummer SUV 2000" in cars and "smart fortwo Convertible 2012" in cars
    folders = {class_folder_name(i, n) for i, n in enumerate(cars, 1)}
    assert len(folders) == 196 and not any("/" in f or " " in f for f in folders)


@pytest.mark.parametrize("name,counts", [("dogs_70_20_30", (70, 20, 30)), ("cars_130_17_49", (130, 17, 49))])
def test_seeded_split_files_follow_their_recorded_rule(name: str, counts: tuple[int, int, int]) -> None:
    data = json.loads((SPLITS_DIR / f"{name}.json").read_text())
    names = data["train"] + data["val"] + data["test"]
    drawn = draw_split(names, counts, data["seed"])
    assert {k: set(v) for k, v in drawn.items()} == {k: set(data[k]) for k in ("train", "val", "test")}


def test_draw_split_is_deterministic_and_order_free() -> None:
    names = [f"class_{i:03d}" for i in range(40)]
    first = draw_split(names, (20, 8, 12), seed=3)
    again = draw_split(list(reversed(names)), (20, 8, 12), seed=3)
    assert {k: set(v) for k, v in first.items()} == {k: set(v) for k, v in again.items()}
    assert [len(first[k]) for k in ("train", "val", "test")] == [20, 8, 12]
    assert set(first["test"]) != set(draw_split(names, (20, 8, 12), seed=4)["test"])
    with pytest.raises(PrepareError, match="summing"):
        draw_split(names, (20, 8, 11), seed=3)


def test_split_file_errors_name_the_problem(tmp_path: Path) -> None:
    overlap = write_split(tmp_path / "overlap.json", ["a", "b"], ["b"], ["c"])
    with pytest.raises(PrepareError, match=r"'b'.*both 'train' and 'val'"):
        load_split(overlap)
    (tmp_path / "bad.json").write_text('{"train": ["a"], "val": []}')
    with pytest.raises(PrepareError, match="'val' must be a non-empty list"):
        load_split(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- CUB


def test_cub_crops_to_boxes_splits_classes_and_never_touches_source(cub, tmp_path: Path) -> None:
    src, info, split = cub
    before = snapshot(src)
    dst = tmp_path / "CUB"
    summary = prepare_cub(src, dst, split_file=split, **quiet())

    assert snapshot(src) == before
    assert sorted(p.name for p in (dst / "train").iterdir()) == CUB_CLASSES[:2]
    assert [p.name for p in (dst / "val").iterdir()] == [CUB_CLASSES[2]]
    assert [p.name for p in (dst / "test").iterdir()] == [CUB_CLASSES[3]]
    assert summary["splits"] == {
        "train": {"classes": 2, "images": 6},
        "val": {"classes": 1, "images": 3},
        "test": {"classes": 1, "images": 3},
    }
    written = json.loads((dst / "prepare_summary.json").read_text())
    assert written["status"] == "complete" and written["splits"] == summary["splits"]
    assert written["settings"]["source"] == str(src.resolve()) and written["settings"]["split"] == "mini"
    assert written["skipped"] == [] and written["images"]["written"] == 12

    import torchvision.transforms as T

    reference_pre = T.Compose([T.Resize([92, 92]), T.CenterCrop(84)])
    for stem, (class_name, (x, y, w, h)) in info.items():
        part = {CUB_CLASSES[2]: "val", CUB_CLASSES[3]: "test"}.get(class_name, "train")
        source = Image.open(src / "images" / class_name / f"{stem}.png").convert("RGB")
        expected = source.crop((x, y, x + w, y + h))  # FRN's crop: PIL rounds each float edge
        out = Image.open(dst / part / class_name / f"{stem}.png")
        assert out.mode == "RGB" and out.size == expected.size
        assert np.array_equal(np.asarray(out), np.asarray(expected))
        if part != "train":
            pre = Image.open(dst / f"{part}_pre" / class_name / f"{stem}.png")
            assert pre.size == (84, 84)
            assert np.array_equal(np.asarray(pre), np.asarray(reference_pre(expected)))
    assert cub_box(2.5, 3.0, 11.0, 9.5) == Box(2, 3, 14, 12)  # round half to even: 2.5->2, 13.5->14, 12.5->12


def test_rerun_skips_finished_images_and_resumes_an_interrupted_run(cub, tmp_path: Path) -> None:
    src, _, split = cub
    dst = tmp_path / "CUB"
    prepare_cub(src, dst, split_file=split, **quiet())
    outputs = {p: p.stat().st_mtime_ns for p in dst.rglob("*.png")}
    assert len(outputs) == 12 + 6  # 12 images + val_pre/test_pre copies of 6

    again = prepare_cub(src, dst, split_file=split, **quiet())
    assert again["images"] == {"written": 0, "already_done": 12, "skipped": 0}
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.png")} == outputs

    victim = next((dst / "test" / CUB_CLASSES[3]).iterdir())
    victim.unlink()
    stale = victim.parent / f".{victim.name}.abc123.tmp"
    stale.write_bytes(b"half an image")
    resumed = prepare_cub(src, dst, split_file=split, **quiet())
    assert resumed["images"] == {"written": 1, "already_done": 11, "skipped": 0}
    assert victim.is_file() and not stale.exists()
    assert check_prepared(dst)["splits"]["test"] == {"classes": 1, "images": 3, "smallest_class": 3}


def test_corrupt_and_missing_images_are_skipped_and_listed(cub, tmp_path: Path) -> None:
    src, info, split = cub
    stems = sorted(info)
    broken = src / "images" / info[stems[0]][0] / f"{stems[0]}.png"
    broken.write_bytes(b"this is not an image")
    truncated = src / "images" / info[stems[4]][0] / f"{stems[4]}.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    missing = src / "images" / info[stems[7]][0] / f"{stems[7]}.png"
    missing.unlink()
    summary = prepare_cub(src, tmp_path / "CUB", split_file=split, **quiet())
    reasons = {entry["path"]: entry["reason"] for entry in summary["skipped"]}
    assert set(reasons) == {p.relative_to(src).as_posix() for p in (broken, truncated, missing)}
    assert "cannot read image file" in reasons[broken.relative_to(src).as_posix()]
    assert "cannot read image file" in reasons[truncated.relative_to(src).as_posix()]
    assert "missing" in reasons[missing.relative_to(src).as_posix()]
    assert sum(s["images"] for s in summary["splits"].values()) == 12 - 3
    on_disk = json.loads((tmp_path / "CUB" / "prepare_summary.json").read_text())
    assert on_disk["skipped"] == summary["skipped"]


def test_cub_without_crop_keeps_whole_images_as_jpeg(cub, tmp_path: Path) -> None:
    src, info, split = cub
    (src / "bounding_boxes.txt").unlink()  # not needed without cropping
    prepare_cub(src, tmp_path / "CUB", split_file=split, crop=False, image_format="jpeg", **quiet())
    stem = sorted(info)[0]
    out = Image.open(tmp_path / "CUB" / "train" / info[stem][0] / f"{stem}.jpg")
    assert (
        out.format == "JPEG" and out.size == Image.open(src / "images" / info[stem][0] / f"{stem}.png").size
    )


def test_wrong_layouts_say_what_is_missing_and_what_is_expected(cub, tmp_path: Path) -> None:
    src, _, split = cub
    (src / "image_class_labels.txt").unlink()
    with pytest.raises(
        PrepareError, match=r"missing file .*image_class_labels\.txt\. Expected layout: CUB_200_2011/"
    ):
        prepare_cub(src, tmp_path / "out", split_file=split, **quiet())
    with pytest.raises(PrepareError, match=r"Stanford Dogs: missing folder .*Images\. Expected layout"):
        prepare_dogs(tmp_path, tmp_path / "out", **quiet())
    (tmp_path / "cars" / "cars_train").mkdir(parents=True)
    (tmp_path / "cars" / "cars_test").mkdir()
    with pytest.raises(PrepareError, match=r"missing file .*devkit/cars_meta\.mat"):
        prepare_cars(tmp_path / "cars", tmp_path / "out", **quiet())
    assert not (tmp_path / "out").exists()


def test_split_that_does_not_match_the_source_is_refused(cub, tmp_path: Path) -> None:
    src, _, _ = cub
    with pytest.raises(
        PrepareError,
        match=r"split '130-20-50' .* does not match the source's 4 classes: 200 classes of the split are not",
    ):
        prepare_cub(src, tmp_path / "out", **quiet())


def test_destination_holding_something_else_is_refused(cub, tmp_path: Path) -> None:
    src, _, split = cub
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match=r"not empty and holds no prepare_summary\.json .*notes\.txt"):
        prepare_cub(src, foreign, split_file=split, **quiet())
    dst = tmp_path / "CUB"
    prepare_cub(src, dst, split_file=split, **quiet())
    other = write_split(tmp_path / "other.json", CUB_CLASSES[1:3], [CUB_CLASSES[0]], [CUB_CLASSES[3]])
    with pytest.raises(PrepareError, match=r"other settings: split_digest"):
        prepare_cub(src, dst, split_file=other, **quiet())
    with pytest.raises(PrepareError, match=r"other settings: crop True \(now False\)"):
        prepare_cub(src, dst, split_file=split, crop=False, **quiet())
    with pytest.raises(PrepareError, match="inside the source folder"):
        prepare_cub(src, src / "out", split_file=split, **quiet())


# ----------------------------------------------------------------------------- Stanford Dogs

DOG_CLASSES = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]


def voc_xml(width: int, height: int, boxes: list[tuple[int, int, int, int]]) -> str:
    objects = "".join(
        f"<object><name>dog</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for a, b, c, d in boxes
    )
    return (
        f"<annotation><folder>x</folder><size><width>{width}</width><height>{height}</height><depth>3</depth>"
        f"</size>{objects}</annotation>"
    )


def make_dogs(root: Path) -> dict[str, tuple[str, Image.Image, tuple[int, int, int, int] | None]]:
    """Images/ + Annotation/ with one image per colour mode and file format; returns
    {stem: (class, the image as RGB, its union box or None when it has no annotation)}."""
    made = {}
    base = noise_image(40, 32, seed=7)
    variants = [
        ("jpg", "CMYK", lambda: base.convert("CMYK"), [(3, 4, 20, 25)]),
        ("png", "L", lambda: base.convert("L"), [(1, 1, 10, 12), (25, 14, 38, 30)]),
        ("png", "P", lambda: _palette_with_transparency(base), [(0, 0, 40, 32)]),
        ("png", "RGBA", lambda: _half_transparent(base), [(5, 5, 50, 50)]),  # box past the border: clamped
        ("bmp", "RGB", lambda: base, [(2, 2, 30, 30)]),
        ("webp", "RGB", lambda: base, [(4, 6, 28, 20)]),
        ("jpg", "RGB", lambda: base, None),  # no annotation file
    ]
    for index, (suffix, mode, build, boxes) in enumerate(variants):
        class_name = DOG_CLASSES[index % 3]
        stem = f"{class_name.split('-')[0]}_{index}"
        folder = root / "Images" / class_name
        folder.mkdir(parents=True, exist_ok=True)
        image = build()
        assert image.mode == mode
        path = folder / f"{stem}.{suffix}"
        image.save(path, **({"lossless": True} if suffix == "webp" else {}))
        (root / "Annotation" / class_name).mkdir(parents=True, exist_ok=True)
        union = None
        if boxes is not None:
            (root / "Annotation" / class_name / stem).write_text(voc_xml(40, 32, boxes))
            union = (
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            )
        made[stem] = (class_name, expected_rgb(Image.open(path)), union)
    (root / "Images" / DOG_CLASSES[0] / "notes.txt").write_text("not an image")
    return made


def expected_rgb(image: Image.Image) -> Image.Image:
    """RGB as documented: transparent pixels over white, every other mode converted by PIL."""
    if image.mode in ("P", "RGBA"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _half_transparent(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(image.size))
    return rgba


def _palette_with_transparency(image: Image.Image) -> Image.Image:
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return palette


def test_dogs_converts_every_mode_to_rgb_and_crops_to_the_union_of_boxes(tmp_path: Path) -> None:
    src = tmp_path / "dogs_src"
    made = make_dogs(src)
    split = write_split(tmp_path / "split.json", [DOG_CLASSES[0]], [DOG_CLASSES[1]], [DOG_CLASSES[2]])
    before = snapshot(src)
    dst = tmp_path / "dogs"
    summary = prepare_dogs(src, dst, split_file=split, crop=True, **quiet())
    assert snapshot(src) == before
    part_of = dict(zip(DOG_CLASSES, ("train", "val", "test")))
    for stem, (class_name, rgb, union) in made.items():
        out_path = dst / part_of[class_name] / class_name / f"{stem}.png"
        if union is None:
            assert not out_path.exists()
            continue
        out = Image.open(out_path)
        assert out.mode == "RGB"
        left, top, right, bottom = union
        expected = rgb.crop((left, top, min(right, 40), min(bottom, 32)))
        assert np.array_equal(np.asarray(out), np.asarray(expected)), stem
    grey = next(s for s in made if s.endswith("_1"))
    pixels = np.asarray(Image.open(dst / "val" / DOG_CLASSES[1] / f"{grey}.png"))
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    reasons = {entry["path"]: entry["reason"] for entry in summary["skipped"]}
    assert reasons[f"Images/{DOG_CLASSES[0]}/notes.txt"].startswith("not an image file")
    no_box = next(s for s, v in made.items() if v[2] is None)
    assert reasons[f"Images/{made[no_box][0]}/{no_box}.jpg"].startswith("no annotation")


def test_dogs_without_crop_keeps_whole_images(tmp_path: Path) -> None:
    src = tmp_path / "dogs_src"
    made = make_dogs(src)
    split = write_split(tmp_path / "split.json", [DOG_CLASSES[0]], [DOG_CLASSES[1]], [DOG_CLASSES[2]])
    summary = prepare_dogs(src, tmp_path / "dogs", split_file=split, **quiet())
    assert sum(s["images"] for s in summary["splits"].values()) == len(made)
    for stem, (class_name, rgb, _) in made.items():
        part = dict(zip(DOG_CLASSES, ("train", "val", "test")))[class_name]
        out = Image.open(tmp_path / "dogs" / part / class_name / f"{stem}.png")
        assert np.array_equal(np.asarray(out), np.asarray(rgb))


# ----------------------------------------------------------------------------- Stanford Cars

CAR_NAMES = [
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Ram C/V Cargo Van Minivan 2012",
    "smart fortwo Convertible 2012",
]


def _annotations(rows: list[tuple[int, int, int, int, int, str]], labelled: bool = True) -> dict:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if labelled else []) + ["fname"]
    table = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, (x1, y1, x2, y2, cls, fname) in enumerate(rows):
        numbers = [
            np.array([[v]], dtype=np.uint16)
            for v in ((x1, y1, x2, y2, cls) if labelled else (x1, y1, x2, y2))
        ]
        table[0, i] = (*numbers, np.array([fname]))
    return {"annotations": table}


def make_cars(root: Path, test_annotations_in_devkit: bool = False) -> list[tuple[str, str, int, tuple]]:
    """cars_train/, cars_test/, devkit/*.mat; returns [(half, fname, class id, box)]."""
    (root / "devkit").mkdir(parents=True)
    names = np.empty((1, len(CAR_NAMES)), dtype=object)
    for i, name in enumerate(CAR_NAMES):
        names[0, i] = np.array([name])
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    made = []
    for half in ("train", "test"):
        (root / f"cars_{half}").mkdir()
        rows = []
        for k in range(len(CAR_NAMES) * 2):
            fname = f"{k + 1:05d}.jpg"
            noise_image(36, 28, seed=k + (0 if half == "train" else 100)).save(
                root / f"cars_{half}" / fname, quality=92
            )
            box = (2 + k % 3, 3, 30, 20 + k % 4)
            class_id = k % len(CAR_NAMES) + 1
            rows.append((*box, class_id, fname))
            made.append((half, fname, class_id, box))
        target = (
            root / "devkit" / "cars_train_annos.mat"
            if half == "train"
            else (root / ("devkit" if test_annotations_in_devkit else ".") / "cars_test_annos_withlabels.mat")
        )
        scipy.io.savemat(target, _annotations(rows))
    return made


@pytest.mark.parametrize("in_devkit", [False, True])
def test_cars_pools_both_halves_with_stable_folder_names(tmp_path: Path, in_devkit: bool) -> None:
    src = tmp_path / "cars_src"
    made = make_cars(src, test_annotations_in_devkit=in_devkit)
    folders = [class_folder_name(i, n) for i, n in enumerate(CAR_NAMES, 1)]
    assert (
        folders[2] == "003.Ram_C_V_Cargo_Van_Minivan_2012"
        and folders[3] == "004.smart_fortwo_Convertible_2012"
    )
    split = write_split(tmp_path / "split.json", CAR_NAMES[:2], [CAR_NAMES[2]], [CAR_NAMES[3]])
    before = snapshot(src)
    dst = tmp_path / "cars"
    summary = prepare_cars(src, dst, split_file=split, crop=True, **quiet())
    assert snapshot(src) == before
    assert summary["splits"] == {
        "train": {"classes": 2, "images": 8},
        "val": {"classes": 1, "images": 4},
        "test": {"classes": 1, "images": 4},
    }
    part_of = dict(zip(CAR_NAMES, ("train", "train", "val", "test")))
    for half, fname, class_id, box in made:
        folder = folders[class_id - 1]
        out = Image.open(dst / part_of[CAR_NAMES[class_id - 1]] / folder / f"{half}_{Path(fname).stem}.png")
        expected = Image.open(src / f"cars_{half}" / fname).convert("RGB").crop(box)
        assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_cars_with_only_the_unlabelled_test_file_explains_what_is_needed(tmp_path: Path) -> None:
    src = tmp_path / "cars_src"
    make_cars(src)
    (src / "cars_test_annos_withlabels.mat").unlink()
    scipy.io.savemat(
        src / "devkit" / "cars_test_annos.mat", _annotations([(1, 1, 5, 5, 1, "00001.jpg")], False)
    )
    with pytest.raises(PrepareError, match=r"cars_test_annos_withlabels\.mat .*has no class labels"):
        prepare_cars(src, tmp_path / "cars", **quiet())


# ----------------------------------------------------------------------------- check and command line


def test_check_accepts_prepared_and_frn_style_folders_and_rejects_broken_ones(cub, tmp_path: Path) -> None:
    src, _, split = cub
    dst = tmp_path / "CUB"
    prepare_cub(src, dst, split_file=split, **quiet())
    result = check_prepared(dst, verify_images=True)
    assert result["pre"] == ["val_pre", "test_pre"] and result["prepared_by"]["dataset"] == "cub"
    for split, use_pre in (("train", False), ("test", False), ("test", True)):
        folder = FewShotFolder(dst, split, use_pre=use_pre)  # the loader reads the output as it is
        assert len(folder) == result["splits"][split]["images"] and folder[0][0].shape == (3, 84, 84)

    frn = tmp_path / "CUB_fewshot_cropped"  # FRN's folders: the same layout, no summary
    for part, class_name in (("train", "a"), ("val", "b"), ("test", "c")):
        (frn / part / class_name).mkdir(parents=True)
        noise_image(10, 10, 0).save(frn / part / class_name / "x.png")
    assert check_prepared(frn)["splits"]["val"] == {"classes": 1, "images": 1, "smallest_class": 1}

    broken = frn / "val" / "b" / "broken.png"  # a text file and a truncated PNG, which loading refuses
    broken.write_text("not an image")
    (frn / "val" / "b" / "cut.png").write_bytes((frn / "val" / "b" / "x.png").read_bytes()[:40])
    with pytest.raises(PrepareError, match=r"val/b/broken.png: .*; val/b/cut.png: ") as refused:
        check_prepared(frn)
    with pytest.raises(FewShotDataError) as loading:
        FewShotFolder(frn, "val")
    for name in ("broken.png", "cut.png"):
        assert name in str(refused.value) and name in str(loading.value)
    broken.unlink()
    (frn / "val" / "b" / "cut.png").unlink()

    (frn / "test" / "a").mkdir()
    noise_image(10, 10, 0).save(frn / "test" / "a" / "y.png")
    with pytest.raises(PrepareError, match=r"classes \['a'\] are in both train/ and test/"):
        check_prepared(frn)
    with pytest.raises(PrepareError, match=r"nowhere does not exist; give the folder that holds train/"):
        check_prepared(tmp_path / "nowhere")


def test_command_line_prepares_checks_and_fails_with_one_line(cub, tmp_path: Path, capsys) -> None:
    src, _, split = cub
    dst = tmp_path / "CUB"
    assert main(["cub", str(src), str(dst), "--split-file", str(split), "--quiet"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    table = {row[0]: row[1:] for row in rows if row[:1] in (["train"], ["val"], ["test"])}
    assert table == {"train": ["2", "6"], "val": ["1", "3"], "test": ["1", "3"]}  # classes, images
    assert ["written", "12,", "already", "there", "0,", "skipped", "0"] in rows
    assert main(["check", str(dst)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{dst}: valid few-shot folder")
    assert [line.split()[:5] for line in out[1:4]] == [
        ["train", "2", "classes", "6", "images"],
        ["val", "1", "classes", "3", "images"],
        ["test", "1", "classes", "3", "images"],
    ]
    assert main(["cub", str(src), str(dst), "--split-file", str(split), "--no-crop", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsl_core.data.prepare",
            "dogs",
            str(tmp_path / "nowhere"),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: Stanford Dogs: source folder") and run.stderr.count("\n") == 1
    assert "give the folder the data set was extracted into. Expected layout: " in run.stderr
    assert DOGS_LAYOUT in run.stderr
    assert "Traceback" not in run.stderr


def test_pre_resize_matches_the_evaluation_transform() -> None:
    import torchvision.transforms as T

    image = noise_image(57, 43, seed=1)
    expected = T.Compose([T.Resize([92, 92]), T.CenterCrop(84)])(image)
    assert np.array_equal(np.asarray(pre_resize(image)), np.asarray(expected))


@pytest.mark.parametrize("workers", [1, 3])
def test_the_progress_bar_ends_full_when_the_jobs_run_out_first(
    workers: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``zip(jobs, _map(...))`` stops at the jobs' end and never resumes the generator: the bar must already
    stand at the last job (in a log file it stood at 35/36)."""
    from fsl_core.data.prepare.writer import _map
    from fsl_core.progress import ENVIRONMENT

    monkeypatch.setenv(ENVIRONMENT, "lines")
    jobs = list(range(36))
    pairs = list(zip(jobs, _map(lambda job: 2 * job, jobs, workers, True, "prepare x")))
    assert [result for _, result in pairs] == [2 * job for job in jobs]
    gc.collect()  # the abandoned generator closes its bar
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("prepare x: 100%") and "36/36" in lines[-1]
