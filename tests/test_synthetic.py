"""The embedded birds generator: taxonomy, determinism, part maps, safe writing, card and command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BIRDS
from PIL import Image

from fsl_core.data import FewShotDataError, FewShotFolder, birds
from fsl_core.data.birds import generate
from fsl_core.data.birds.__main__ import main


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_taxonomy_splits() -> None:
    groups, species = birds.make_taxonomy(birds.BirdSettings())
    assert len(groups) == 10 and len(species) == 100
    counts = {split: sum(sp.split == split for sp in species) for split in birds.SPLITS}
    assert counts == {"train": 60, "val": 15, "test": 25}
    for split in birds.SPLITS:
        assert {sp.group for sp in species if sp.split == split} == set(
            range(10)
        )  # every group in every split
    assert len({sp.name for sp in species}) == 100
    for g in range(10):
        siblings = [sp for sp in species if sp.group == g]
        assert len({frozenset(sp.marks) for sp in siblings}) == 10  # species differ in their marks
        assert all(1 <= len(sp.marks) <= 2 for sp in siblings)  # ... and only in one or two parts
    assert species[0].name.startswith("g00_") and "_s00_" in species[0].name
    for n_groups in (1, 2, 3, 7):
        for per_group in (3, 4, 5, 8, 13):
            settings = birds.BirdSettings(groups=n_groups, species_per_group=per_group)
            if n_groups == 1 and per_group < 10:  # a single validation class: no episode can be drawn
                with pytest.raises(FewShotDataError, match=r"give 1 validation and \d test class\(es\)"):
                    birds.make_taxonomy(settings)
                continue
            _, small = birds.make_taxonomy(settings)
            for split in birds.SPLITS:
                assert {sp.group for sp in small if sp.split == split} == set(range(n_groups))
                assert sum(sp.split == split for sp in small) >= max(2, n_groups)
    with pytest.raises(FewShotDataError, match="species_per_group=1000 is too many"):
        birds.make_taxonomy(birds.BirdSettings(groups=2, species_per_group=1000))
    colours = [np.array(g.body, dtype=float) for g in groups]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(colours) for b in colours[i + 1 :]) > 20


def test_generated_set_layout_metadata_and_card(tiny_birds: Path) -> None:
    meta = birds.load_metadata(tiny_birds)
    assert meta["generator"] == birds.GENERATOR and meta["settings"] == TINY_BIRDS
    assert [meta["parts"][str(i)] for i in range(len(birds.PART_NAMES))] == list(birds.PART_NAMES)
    by_split = {split: set(FewShotFolder(tiny_birds, split).classes) for split in birds.SPLITS}
    assert all(len(v) == 3 for v in by_split.values())
    assert not (
        by_split["train"] & by_split["val"]
        or by_split["train"] & by_split["test"]
        or by_split["val"] & by_split["test"]
    )  # class-disjoint splits
    for split, names in by_split.items():
        assert {meta["classes"][n]["split"] for n in names} == {split}
        assert {meta["classes"][n]["group"] for n in names} == {0, 1, 2}
    for name, info in meta["classes"].items():
        assert info["discriminative_parts"] and set(info["discriminative_parts"]) <= set(birds.BIRD_PART_IDS)
        images = sorted((tiny_birds / info["split"] / name).glob("*.png"))
        assert [p.name for p in images] == [f"{i:03d}.png" for i in range(6)]
        for image in images:
            assert (tiny_birds / "parts" / info["split"] / name / image.name).is_file()
    card = birds.load_card(tiny_birds)
    assert (
        card["settings"] == TINY_BIRDS and card["images"] == 54 and card["version"] == birds.GENERATOR_VERSION
    )
    assert card["splits"]["test"] == {"classes": 3, "images": 18, "groups": 3}
    nn = card["nn_pixel_5w1s"]
    assert nn["episodes"] == 1000 and nn["way"] == 3 and nn["shot"] == 1 and nn["query"] == 5
    # the species of a group differ in small marks only: raw pixels barely beat chance (measured 0.368 with
    # chance 0.333 here; 0.32-0.41 for seeds 0-3)
    assert nn["chance"] == pytest.approx(1 / 3) and abs(nn["accuracy"] - nn["chance"]) < 0.1
    assert nn == birds.nn_pixel_accuracy(tiny_birds, "test", way=3, shot=1, query=16, episodes=1000, seed=0)
    assert "nearest neighbour on raw pixels" in (tiny_birds / "README.md").read_text()
    # reported in percent, as every accuracy: the card's fractions times 100, the settings as they are
    reported = birds.nn_baseline(card)
    assert reported == {
        **nn,
        "accuracy": 100 * nn["accuracy"],
        "ci95": 100 * nn["ci95"],
        "chance": pytest.approx(100 / 3),
    }
    assert card["nn_pixel_5w1s"] == nn  # the card itself is left as it is
    assert (
        f"nearest neighbour on raw pixels, 3-way 1-shot, 1000 test episodes (5 queries per class): "
        f"{reported['accuracy']:.2f} ± {reported['ci95']:.2f} % (chance 33 %)"
    ) in birds.format_card(card)
    assert birds.is_complete(tiny_birds, birds.BirdSettings(**TINY_BIRDS))


def test_nn_pixel_accuracy_on_hand_made_sets(tmp_path: Path) -> None:
    """Classes of distinct flat colours (with a little jitter) are told apart in every episode."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(3, 3))
    for c in range(3):
        for i in range(4):
            flat = np.clip(base[c] + rng.integers(-8, 9, size=3), 0, 255).astype(np.uint8)
            picture = np.broadcast_to(flat, (8, 8, 3)).copy()
            write_png(tmp_path / "test" / f"class_{c}" / f"{i:03d}.png", picture)
    result = birds.nn_pixel_accuracy(tmp_path, way=3, shot=1, query=3, episodes=50)
    assert result["accuracy"] == 1.0 and result["ci95"] == 0.0 and result["query"] == 3


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_part_maps_match_the_pixels(tiny_birds: Path) -> None:
    meta = birds.load_metadata(tiny_birds)
    groups, species = birds.make_taxonomy(birds.BirdSettings(**TINY_BIRDS))
    seen_parts: set[int] = set()
    for sp in species[:4]:
        for index in range(3):
            rgb, parts = birds.render_image(sp, groups, 0, index, image_size=32)
            # the written files are exactly the rendering
            file = f"{index:03d}.png"
            assert np.array_equal(birds.part_map(tiny_birds, sp.split, sp.name, file), parts)
            seen_parts.update(np.unique(parts).tolist())
            # the same bird over another background: bird pixels (off the outline) stay, background changes
            other, other_parts = birds.render_image(sp, groups, 0, index, image_size=32, background_seed=1234)
            assert np.array_equal(parts, other_parts)
            bird = np.isin(parts, birds.BIRD_PART_IDS)
            background = parts == 0
            inner_bird, inner_background = erode(bird, 2), erode(background, 2)
            diff = np.abs(rgb.astype(int) - other.astype(int)).mean(-1)
            if inner_bird.sum() >= 5:
                assert diff[inner_bird].mean() < 2.0
            assert diff[inner_background].mean() > 8.0
            mask = birds.discriminative_mask(tiny_birds, sp.split, sp.name, file, meta)
            assert mask.dtype == bool and mask.shape == (32, 32)
            assert np.array_equal(mask, np.isin(parts, meta["classes"][sp.name]["discriminative_parts"]))
            assert not (mask & ~bird).any()
            assert np.array_equal(birds.bird_mask(tiny_birds, sp.split, sp.name, file), bird)
    assert {0, 1, 2, 3, 4, 7} <= seen_parts and max(seen_parts) < len(birds.PART_NAMES)


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion with a 3x3 square, ``steps`` times (pixels at the border count as outside)."""
    out = mask.copy()
    for _ in range(steps):
        padded = np.pad(out, 1, constant_values=False)
        out = np.logical_and.reduce(
            [
                padded[1 + dy : 1 + dy + out.shape[0], 1 + dx : 1 + dx + out.shape[1]]
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            ]
        )
    return out


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path: Path, tiny_birds: Path) -> None:
    again = birds.generate_birds(tmp_path / "again", **TINY_BIRDS, progress=False, workers=2)
    first, second = all_files(tiny_birds), all_files(again)
    assert first.keys() == second.keys() and first == second
    other = birds.generate_birds(tmp_path / "other", **{**TINY_BIRDS, "seed": 1}, progress=False, workers=1)
    third = all_files(other)
    images = [k for k in first if k.startswith("train/") and k in third]
    changed = sum(first[k] != third[k] for k in images)
    assert changed == len(images) and birds.load_card(other)["seed"] == 1


def test_a_complete_set_is_reused_and_replaced_only_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dict(TINY_BIRDS, images_per_class=3, image_size=16)
    out = birds.ensure_birds(tmp_path / "birds", **settings, progress=False, workers=1)
    marker = out / birds.COMPLETE_MARKER
    stamp = marker.stat().st_mtime_ns
    assert birds.ensure_birds(out, **settings, progress=False) == out and marker.stat().st_mtime_ns == stamp
    # settings not named may have any value: the set is reused as it is
    assert birds.ensure_birds(out, progress=False) == out and marker.stat().st_mtime_ns == stamp
    assert birds.ensure_birds(out, seed=0, progress=False) == out and marker.stat().st_mtime_ns == stamp
    before = all_files(out)
    refusal = (
        r"holds a complete birds set that these settings would replace \(seed 0 → 5\).*"
        r"fsl-birds .*birds --seed 5 --image-size 16 --images-per-class 3 --groups 3 --species-per-group 3 --overwrite"
    )
    with pytest.raises(FewShotDataError, match=refusal):
        birds.ensure_birds(out, **{**settings, "seed": 5}, progress=False, workers=1)
    with pytest.raises(FewShotDataError, match=refusal):
        birds.generate_birds(out, **{**settings, "seed": 5}, progress=False, workers=1)
    cli = [
        str(out),
        *(f"--{k.replace('_', '-')}={v}" for k, v in {**settings, "seed": 5}.items()),
        "--workers=1",
    ]
    assert main(cli) == 1 and "seed 0 → 5" in capsys.readouterr().err
    monkeypatch.setattr(generate, "GENERATOR_VERSION", "next")
    with pytest.raises(
        FewShotDataError, match=rf"drawn by generator version '{birds.GENERATOR_VERSION}', this one"
    ):
        birds.ensure_birds(out, **settings, progress=False, workers=1)
    monkeypatch.undo()
    assert all_files(out) == before  # every refusal left the set as it was
    assert main([*cli, "--overwrite"]) == 0
    assert json.loads(marker.read_text())["settings"]["seed"] == 5
    capsys.readouterr()
    redrawn, stamp = all_files(out), marker.stat().st_mtime_ns
    assert main(cli) == 0  # the same settings again: the complete set is kept, nothing is drawn
    assert (
        f"{out} already holds this set, complete (same settings, generator version {birds.GENERATOR_VERSION}): "
        "nothing drawn; --overwrite draws it again"
    ) in capsys.readouterr().out
    assert all_files(out) == redrawn and marker.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"]  # no temporary or old folders left


def test_a_path_under_a_file_or_too_big_a_set_is_refused_before_any_drawing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    assert main([str(tmp_path / "afile" / "birds")]) == 1
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert main([str(tmp_path / "huge"), "--images-per-class", "100000000"]) == 1
    assert "the set would take about 2.12e+05 GB" in capsys.readouterr().err
    assert main([str(tmp_path / "w"), "--workers", "0"]) == 1
    assert "workers=0: expected a positive number" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(
        FewShotDataError, match=r"refusing to write into .*mine.*not an output of the birds generator"
    ):
        birds.generate_birds(foreign, **TINY_BIRDS, progress=False, workers=1)
    with pytest.raises(FewShotDataError, match="refusing"):
        birds.ensure_birds(foreign, **TINY_BIRDS, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    empty = tmp_path / "empty"
    empty.mkdir()
    birds.generate_birds(empty, **dict(TINY_BIRDS, images_per_class=2), progress=False, workers=1)
    assert birds.is_complete(empty)


def test_interrupted_generation_leaves_nothing_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dict(TINY_BIRDS, images_per_class=3, image_size=16)
    out = tmp_path / "birds"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    # a killed process leaves its temporary folder behind; it must not look complete and is cleaned up later
    stale = tmp_path / ".birds.tmp-999999999-deadbeef"
    (stale / "train").mkdir(parents=True)
    monkeypatch.setattr(generate, "nn_pixel_accuracy", killed)  # the run dies after every image is written
    with pytest.raises(KeyboardInterrupt):
        birds.generate_birds(out, **settings, progress=False, workers=1)
    assert not out.exists() and not birds.is_complete(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # own temporary removed, stale one too
    monkeypatch.undo()
    birds.generate_birds(out, **settings, progress=False, workers=1)
    before = all_files(out)
    monkeypatch.setattr(generate, "nn_pixel_accuracy", killed)
    with pytest.raises(KeyboardInterrupt):
        birds.generate_birds(out, **{**settings, "seed": 3}, progress=False, workers=1, overwrite=True)
    assert all_files(out) == before and birds.is_complete(
        out, birds.BirdSettings(**settings)
    )  # old set intact


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("groups", 0, "groups=0"),
        ("species_per_group", 2, "species_per_group=2.*train, val and test"),
        ("image_size", 8, "image_size=8"),
        ("images_per_class", 1, "images_per_class=1"),
        ("seed", -1, "seed=-1"),
    ],
)
def test_bad_settings(tmp_path: Path, name: str, value: int, message: str) -> None:
    with pytest.raises(FewShotDataError, match=message):
        birds.generate_birds(tmp_path / "x", **{**TINY_BIRDS, name: value}, progress=False)
    assert not (tmp_path / "x").exists()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            str(tmp_path / "cli"),
            "--seed",
            "2",
            "--image-size",
            "16",
            "--images-per-class",
            "3",
            "--groups",
            "3",
            "--species-per-group",
            "3",
            "--workers",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "9 classes in 3 groups, 27 images of 16x16 pixels" in out and "nearest neighbour on raw pixels" in out
    )
    assert birds.load_card(tmp_path / "cli")["seed"] == 2
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "a.txt").write_text("x")
    assert main([str(tmp_path / "foreign"), "--groups", "3", "--species-per-group", "3"]) == 1
    assert "refusing" in capsys.readouterr().err


def test_metadata_helpers_errors(tiny_birds: Path, tmp_path: Path) -> None:
    with pytest.raises(FewShotDataError, match="not a generated birds set"):
        birds.load_metadata(tmp_path)
    with pytest.raises(FewShotDataError, match="part map .* does not exist"):
        birds.part_map(tiny_birds, "train", "no_such_class", "000.png")
    with pytest.raises(FewShotDataError, match="'nope' is not in"):
        birds.discriminative_mask(tiny_birds, "train", "nope", "000.png")
