"""The episode explorer of notebook 01 (``fsl_core.viz.browser``), driven as a front end would drive it: the
slider ranges follow the split, only the latest settings are drawn, and the picture is never empty."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fsl_core.progress import ENVIRONMENT, HEADLESS_KERNEL_ARGUMENT
from fsl_core.viz.browser import (
    MAX_QUERY,
    MAX_SHOT,
    MAX_WAY,
    EpisodeBrowser,
    EpisodeExplorer,
    EpisodeLimits,
    episode_title,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPLITS = {"train": [6] * 7, "val": [4, 5, 6, 9], "test": [3, 8, 8]}
"""Images per class of each split of the ``uneven`` folder: 7, 4 and 3 classes, smallest 6, 4 and 3."""


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder data set whose splits differ in classes and class sizes (16×16 noise images)."""
    root = tmp_path_factory.mktemp("uneven")
    rng = np.random.default_rng(0)
    for split, sizes in SPLITS.items():
        for c, size in enumerate(sizes):
            for i in range(size):
                folder = root / split / f"{split}_class_{c}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def explorer(uneven: Path) -> Any:
    made = EpisodeBrowser(uneven, image_size=16).widget(split="train", way=5, shot=2, query=3)
    yield made
    made.close()


def ranges(explorer: EpisodeExplorer) -> dict[str, tuple[int, int, int]]:
    """{slider: (min, value, max)}."""
    return {
        n: (explorer.controls[n].min, explorer.controls[n].value, explorer.controls[n].max)
        for n in ("way", "shot", "query")
    }


# -- ranges -----------------------------------------------------------------------------------------------------
def test_limits_follow_the_split_and_the_picture_size() -> None:
    val = EpisodeLimits(classes=15, smallest_class=40)  # the embedded set's validation split
    assert (
        val.possible and val.max_way == 15 and val.max_shot(1) == MAX_SHOT and val.max_query(1) == MAX_QUERY
    )
    assert EpisodeLimits(classes=60, smallest_class=40).max_way == MAX_WAY == 20
    small = EpisodeLimits(classes=4, smallest_class=6)
    assert (small.max_shot(2), small.max_query(5), small.max_query(1)) == (4, 1, 5)
    assert small.fit(way=12, shot=9, query=4) == (4, 5, 1)  # way to the classes; shot leaves room for a query
    assert small.fit(way=3, shot=2, query=3) == (3, 2, 3)  # what fits stays
    assert small.fit(way=0, shot=0, query=0) == (2, 1, 1)
    assert not EpisodeLimits(classes=1, smallest_class=10).possible
    assert not EpisodeLimits(classes=5, smallest_class=1).possible


def test_sliders_follow_the_split_and_update_on_release(explorer: EpisodeExplorer, uneven: Path) -> None:
    assert explorer.browser.limits("val") == EpisodeLimits(classes=4, smallest_class=4)
    assert ranges(explorer) == {"way": (2, 5, 7), "shot": (1, 2, 3), "query": (1, 3, 4)}
    assert all(
        not explorer.controls[n].continuous_update for n in ("way", "shot", "query", "seed", "episode")
    )
    explorer.controls["split"].value = "val"  # 4 classes, smallest 4: way 5 → 4, shot 2 + query 3 → 2 + 2
    assert ranges(explorer) == {"way": (2, 4, 4), "shot": (1, 2, 2), "query": (1, 2, 2)}
    explorer.controls["shot"].value = 1  # frees room for a query
    assert ranges(explorer)["query"] == (1, 2, 3)
    explorer.controls["split"].value = "test"  # 3 classes, smallest 3
    assert ranges(explorer) == {"way": (2, 3, 3), "shot": (1, 1, 1), "query": (1, 2, 2)}
    explorer.controls["split"].value = "train"  # wider again: the values stay, the maxima grow
    assert ranges(explorer) == {"way": (2, 3, 7), "shot": (1, 1, 4), "query": (1, 2, 5)}
    assert explorer.wait(30)
    assert explorer.drawn[-1] == {"split": "train", "way": 3, "shot": 1, "query": 2, "seed": 0, "episode": 0}
    assert explorer.status.value.startswith(episode_title("train", 3, 1, 2, 0, 0) + " (drawn in")


def test_the_first_settings_are_brought_within_the_split(
    uneven: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    explorer = EpisodeBrowser(uneven, image_size=16).widget(split="test", way=20, shot=5, query=5)
    limits = explorer.browser.limits("test")
    assert capsys.readouterr().out == (  # said, not done silently
        "the episode browser starts at way=3, shot=2, query=1 instead of way=20, shot=5, query=5: test has 3 "
        f"classes and {limits.smallest_class} images in its smallest class, and the browser shows at most 20 "
        "classes, 10 shots and 8 queries (beyond, a picture is unreadable)\n"
    )
    try:
        assert explorer.settings() == {
            "split": "test",
            "way": 3,
            "shot": 2,
            "query": 1,
            "seed": 0,
            "episode": 0,
        }
        assert explorer.png.startswith(PNG_MAGIC) and explorer.drawn == [explorer.settings()]
        assert explorer.image.tooltip is None  # ipywidgets' ImageView fails to render an Image with a tooltip
        assert explorer.status.value.startswith(episode_title("test", 3, 2, 1, 0, 0) + " (drawn in")
    finally:
        explorer.close()
    with pytest.raises(
        ValueError, match=r"split='extra' is not among the data set's splits \['train', 'val'"
    ):
        EpisodeBrowser(uneven, image_size=16).widget(split="extra")


# -- drawing ----------------------------------------------------------------------------------------------------
def test_only_the_latest_settings_are_drawn_and_the_picture_is_never_empty(
    explorer: EpisodeExplorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = explorer.png
    assert first.startswith(PNG_MAGIC) and explorer.status.value.startswith("train: 5-way 2-shot")
    drawing = threading.Event()
    go_on = threading.Event()
    figure = explorer.browser.figure
    drawn_figures: list[dict[str, Any]] = []

    def slow_figure(**settings: Any) -> Any:  # the first request blocks until every move has been made
        drawn_figures.append(settings)
        drawing.set()
        assert go_on.wait(30)
        return figure(**settings)

    monkeypatch.setattr(explorer.browser, "figure", slow_figure)
    shown: list[int] = []
    explorer.image.observe(lambda change: shown.append(len(change["new"])), names="value")
    statuses: list[str] = []
    explorer.status.observe(lambda change: statuses.append(change["new"]), names="value")

    moves = [2, 3, 4, 5, 6, 7, 6, 5, 4, 3] * 2  # 20 quick moves of the way slider, ending at 3
    explorer.controls["way"].value = moves[0]
    assert drawing.wait(30)  # the worker draws way=2 ...
    for way in moves[1:]:  # ... while 19 more moves arrive
        explorer.controls["way"].value = way
    assert explorer.status.value == "drawing…" and explorer.png == first  # busy, the old picture stays
    go_on.set()
    assert explorer.wait(30)

    assert [s["way"] for s in drawn_figures] == [2, 3]  # the first move, then only the last one
    assert [s["way"] for s in explorer.drawn] == [5, 3]  # way=2 was stale when ready: never shown
    assert shown and all(size > 0 for size in shown) and len(shown) == 1
    assert explorer.png != first and explorer.png.startswith(PNG_MAGIC)
    assert statuses[-1].startswith(episode_title("train", 3, 2, 3, 0, 0) + " (drawn in")


def test_back_to_the_settings_shown_draws_nothing(
    explorer: EpisodeExplorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = explorer.png
    drawing, go_on = threading.Event(), threading.Event()
    calls: list[dict[str, Any]] = []
    figure = explorer.browser.figure

    def gated(**settings: Any) -> Any:
        calls.append(settings)
        drawing.set()
        assert go_on.wait(30)
        return figure(**settings)

    monkeypatch.setattr(explorer.browser, "figure", gated)
    explorer.controls["seed"].value = 1
    assert drawing.wait(30)
    explorer.controls["seed"].value = 0  # back while seed 1 is drawn
    go_on.set()
    assert explorer.wait(30)
    assert [c["seed"] for c in calls] == [1]  # seed 1 was drawn but not shown, seed 0 is on screen already
    assert explorer.png == before and [d["seed"] for d in explorer.drawn] == [0]
    assert explorer.status.value == episode_title("train", 5, 2, 3, 0, 0)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_picture_changes_with_the_split_and_the_way(explorer: EpisodeExplorer) -> None:
    pictures = {"train 5-way": explorer.png}
    explorer.controls["way"].value = 3
    assert explorer.wait(30)
    pictures["train 3-way"] = explorer.png
    explorer.controls["split"].value = "val"
    assert explorer.wait(30)
    pictures["val 3-way"] = explorer.png
    arrays = {name: pixels(png) for name, png in pictures.items()}
    assert arrays["train 5-way"].shape[0] > arrays["train 3-way"].shape[0]  # a row per class
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert arrays[a].shape != arrays[b].shape or np.abs(arrays[a].astype(int) - arrays[b]).mean() > 1
    assert [d["split"] for d in explorer.drawn] == ["train", "train", "val"]
    assert explorer.status.value.startswith(episode_title("val", 3, 2, 2, 0, 0) + " (drawn in")


def test_an_impossible_episode_is_explained_and_the_picture_stays(tmp_path: Path) -> None:
    for split, sizes in {"train": [3, 3], "val": [1, 3]}.items():  # val: a class with a single image
        for c, size in enumerate(sizes):
            for i in range(size):
                (tmp_path / split / f"c{c}").mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (40 * c, 10 * i, 90)).save(tmp_path / split / f"c{c}" / f"{i}.png")
    explorer = EpisodeBrowser(tmp_path, image_size=8).widget(split="train", way=2)
    try:
        before = explorer.png
        explorer.controls["split"].value = "val"
        assert explorer.wait(30)
        assert explorer.status.value.startswith("cannot draw this episode: ") and explorer.png == before
        assert not EpisodeLimits(2, 1).possible and explorer.browser.limits("val") == EpisodeLimits(2, 1)
    finally:
        explorer.close()


# -- headless or live -------------------------------------------------------------------------------------------
def test_static_copy_only_in_headless_runs(
    explorer: EpisodeExplorer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ipykernel  # noqa: F401 -- as in a kernel
    import IPython.display

    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **_: shown.extend(objects))
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])  # started by JupyterLab
    assert explorer.show(static_copy=tmp_path / "live.png") is None
    assert shown == [explorer] and not (tmp_path / "live.png").exists()

    for argv, environment in (
        (["ipykernel_launcher.py", "-f", "kernel.json", HEADLESS_KERNEL_ARGUMENT], None),  # papermill
        (["ipykernel_launcher.py", "-f", "kernel.json"], "lines"),  # the runner
    ):
        monkeypatch.setattr(sys, "argv", argv)
        if environment:
            monkeypatch.setenv(ENVIRONMENT, environment)
        shown.clear()
        path = explorer.show(static_copy=tmp_path / "episode.png")
        assert path == tmp_path / "episode.png" and path.read_bytes() == explorer.png
        assert shown[0] is explorer and shown[1].data == explorer.png
        path.unlink()
