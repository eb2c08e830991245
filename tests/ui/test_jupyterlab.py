"""The notebooks in a real browser: JupyterLab of the project's environment in headless Chromium.

1. Notebook 01 (with tiny parameters injected by papermill) runs to the end with Run All: no error output, no
   "Error displaying widget", and its episode explorer is the only picture of its cell.
2. The explorer answers: changing the split and moving the way slider change the episode drawn (its title and
   its pixels), the way slider's maximum follows the split, and the picture is never blank in between.
3. A quickstart executed headless by the runner (tiny parameters) reads well when opened: no frozen ``0%``
   progress text, every figure loads.

Run with ``make test-ui`` (``pytest -m ui tests/ui``); the default ``make test`` leaves these tests out. It
needs Debian's ``chromium`` and the ``playwright`` package (the ``dev`` extra); no browser is downloaded. A
failing test leaves a screenshot of its page in ``outputs/ui/``. Every wait is for a state of the page (the
kernel's idle status, the cell prompts, the explorer's status line), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from lab_server import LabServer, chromium_path, stop_process_tree
from PIL import Image

from fsl_core.notebooks import absolute_path_parameters, check_parameters, repo_root, resolve_notebook

pytestmark = pytest.mark.ui

BIRDS = dict(seed=0, image_size=32, images_per_class=12, groups=5, species_per_group=4)
"""The tiny birds set of the page: 10 train, 5 val and 5 test classes of 12 images (32 px)."""
EXPLORER = dict(image_size=32, max_images_per_class=3, part_examples=2, augmentation_images=2, split="test")
QUICKSTART = dict(
    image_size=32, epochs=1, episodes_per_epoch=2, query=4, val_episodes=2, eval_episodes=4, eval_query=4
)
SCREENSHOTS = repo_root() / "outputs" / "ui"
RUN_TIMEOUT_MS = 150_000
"""How long Run All of notebook 01 may take (it takes about 20 s on a busy 2-core machine)."""
DRAW_TIMEOUT_MS = 30_000


# -- the folder JupyterLab serves, and the quickstart run -------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """root/: birds/ (the data set), 01_data_explorer.ipynb (parameters injected), outputs/ (run folders);
    the quickstart runs meanwhile, in the background."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from fsl_core.data.birds import generate_birds

    root = tmp_path_factory.mktemp("lab-root")
    data = generate_birds(root / "birds", **BIRDS, progress=False, workers=1)
    quickstart = {"data_root": str(data), **QUICKSTART}
    check_parameters("00_quickstart", quickstart)
    log = root / "quickstart.log"
    command = [
        sys.executable,
        "-m",
        "fsl_core.notebooks",
        "00_quickstart",
        "--no-progress",
        "--run-name",
        "ui",
    ]
    command += ["--output-root", str(root / "outputs")]
    for name, value in quickstart.items():
        command += ["-p", name, str(value)]
    with open(log, "wb") as out:
        runner = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=_environment(),
        )
    try:
        explorer = {
            **EXPLORER,
            "data_root": str(data),
            "generate_if_missing": False,
            "run_dir": str(root / "outputs" / "01_data_explorer" / "ui"),
        }
        check_parameters("01_data_explorer", explorer)
        notebook = load_notebook_node(str(resolve_notebook("01_data_explorer")))
        notebook = parameterize_notebook(notebook, absolute_path_parameters("01_data_explorer", explorer))
        nbformat.write(notebook, root / "01_data_explorer.ipynb")
        yield {"root": root, "runner": runner, "runner_log": log, "explorer": explorer}
    finally:
        if runner.poll() is None:
            stop_process_tree(runner)


KERNELS = {"OMP_NUM_THREADS": "1", "FSL_CORE_PROGRESS": None}
"""Environment of every kernel: one intra-op thread (they share two cores), progress shown automatically."""


def _environment() -> dict[str, str]:
    return {k: v for k, v in {**os.environ, **KERNELS}.items() if v is not None}


@pytest.fixture(scope="module")
def lab(served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = LabServer(served["root"], tmp_path_factory.mktemp("lab-home"), KERNELS)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium, headless, with a home folder of its own (its crash reports database goes there)."""
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--disable-gpu", "--disable-dev-shm-usage"],
            env={**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")},
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _new_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    context.set_default_timeout(DRAW_TIMEOUT_MS)
    return context.new_page()


@pytest.fixture(scope="module")
def notebook01(browser: Any, lab: LabServer) -> Iterator[Any]:
    """The page of notebook 01 after Run All, waited for until the kernel is idle and no cell is queued."""
    page = _new_page(browser)
    try:
        with screenshots_of([page], "notebook01"):
            open_notebook(page, lab.url("01_data_explorer.ipynb"))
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            wait_for_run(page)
        yield page
    finally:
        page.context.close()


@contextlib.contextmanager
def screenshots_of(pages: list[Any], name: str) -> Iterator[None]:
    """On an exception, save a screenshot of each page as ``outputs/ui/<name>-<n>.png``, then re-raise."""
    try:
        yield
    except BaseException:
        save_screenshots(pages, name)
        raise


def save_screenshots(pages: list[Any], name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for n, page in enumerate(pages):
        if not page.is_closed():
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{n}.png"))


# -- page helpers -----------------------------------------------------------------------------------------------
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
IDLE = f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']"


def open_notebook(page: Any, url: str) -> None:
    """Open a notebook and wait until its cells are in the page and its kernel is connected and idle (the
    toolbar's indicator shows "idle" before a kernel exists too)."""
    page.goto(url)
    page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(
        """(idle) => {
            const widget = window.jupyterapp.shell.currentWidget;
            const kernel = widget && widget.sessionContext && widget.sessionContext.session
                && widget.sessionContext.session.kernel;
            return document.querySelector('.jp-Dialog') !== null
                || (kernel && kernel.connectionStatus === 'connected' && document.querySelector(idle) !== null);
        }""",
        arg=IDLE,
        timeout=RUN_TIMEOUT_MS,
    )
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, f"JupyterLab asks: {dialogs.first.inner_text()}"


def prompts(page: Any) -> list[str]:
    """The input prompts of the code cells: ``[3]:``, ``[*]:`` (queued or running), ``[ ]:``."""
    return page.eval_on_selector_all(
        f"{PANEL} .jp-CodeCell .jp-InputPrompt", "nodes => nodes.map(n => n.textContent.trim())"
    )


def wait_for_run(page: Any) -> None:
    """Wait until Run All has ended: a cell was queued, then the kernel is idle and no cell is queued."""
    queued_or_done = """(panel) => {
        const p = [...document.querySelectorAll(panel + ' .jp-CodeCell .jp-InputPrompt')].map(n => n.textContent);
        return p.some(t => t.includes('*')) || p.every(t => /\\[\\d+\\]/.test(t));
    }"""
    finished = """([panel, idle]) => {
        const p = [...document.querySelectorAll(panel + ' .jp-CodeCell .jp-InputPrompt')].map(n => n.textContent);
        return document.querySelector(idle) !== null && !p.some(t => t.includes('*'));
    }"""
    page.wait_for_function(queued_or_done, arg=PANEL, timeout=30000)
    page.wait_for_function(finished, arg=[PANEL, IDLE], timeout=RUN_TIMEOUT_MS, polling=250)


def model_outputs(page: Any) -> list[dict[str, Any]]:
    """Every output of the open notebook as its model holds it: {cell, output_type, name, text}."""
    return page.evaluate(
        """() => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        const found = [];
        notebook.widgets.forEach((cell, i) => {
            if (cell.model.type !== 'code') return;
            const outputs = cell.model.outputs;
            for (let k = 0; k < outputs.length; k++) {
                const o = outputs.get(k).toJSON();
                const text = o.text || (o.data && o.data['text/plain']) || o.evalue || '';
                found.push({cell: i, output_type: o.output_type, name: o.name || o.ename || '',
                            text: Array.isArray(text) ? text.join('') : String(text)});
            }
        });
        return found;
    }"""
    )


def output_text(page: Any) -> str:
    """The text of every output area of the open notebook, as the page shows it."""
    texts = page.eval_on_selector_all(
        f"{PANEL} .jp-OutputArea-output", "nodes => nodes.map(n => n.innerText)"
    )
    return "\n".join(texts)


# -- the explorer ---------------------------------------------------------------------------------------------
EXPLORER_CSS = f"{PANEL} .fsl-explorer"


def explorer_state(page: Any) -> dict[str, Any]:
    """The explorer as the page shows it: status line, picture (title, size, SHA-256 of its bytes), way slider."""
    return page.evaluate(
        """async (css) => {
        const box = document.querySelector(css);
        const img = box.querySelector('img.fsl-explorer-image');
        const handle = box.querySelector('.fsl-explorer-way .noUi-handle');
        const bytes = await (await fetch(img.src)).arrayBuffer();
        const digest = await crypto.subtle.digest('SHA-256', bytes);
        const status = box.querySelector('.fsl-explorer-status').textContent;
        return {
            status: status,
            title: status.split(' (drawn in')[0],
            width: img.naturalWidth,
            height: img.naturalHeight,
            shown_width: img.clientWidth,
            frame_height: box.querySelector('.fsl-explorer-frame').clientHeight,
            frame_content_height: box.querySelector('.fsl-explorer-frame').scrollHeight,
            window_height: window.innerHeight,
            label_clipped: [...box.querySelectorAll('.widget-label')].some(l => l.scrollWidth > l.clientWidth),
            sha: [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join(''),
            way: Number(handle.getAttribute('aria-valuenow')),
            way_max: Number(handle.getAttribute('aria-valuemax')),
        };
    }""",
        EXPLORER_CSS,
    )


def watch_picture(page: Any) -> None:
    """Sample the explorer's picture at every animation frame from now on (``picture_samples``): its size, whether
    it is loaded, its source (a new blob URL per picture) and the status line."""
    page.evaluate(
        """(css) => {
        window.fslSamples = [];
        window.fslWatching = true;
        const sample = () => {
            const img = document.querySelector(css + ' img.fsl-explorer-image');
            window.fslSamples.push(img === null ? {missing: true} :
                {width: img.naturalWidth, complete: img.complete, visible: img.offsetHeight > 0,
                 src: img.src, status: document.querySelector(css + ' .fsl-explorer-status').textContent});
            if (window.fslWatching) requestAnimationFrame(sample);
        };
        requestAnimationFrame(sample);
    }""",
        EXPLORER_CSS,
    )


def picture_samples(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => { window.fslWatching = false; return window.fslSamples; }")


def wait_for_title(page: Any, start: str) -> None:
    """Wait until the explorer's status line names a picture drawn whose title starts with ``start``."""
    page.wait_for_function(
        """([css, start]) => {
            const status = document.querySelector(css + ' .fsl-explorer-status');
            return status !== null && status.textContent.startsWith(start)
                && status.textContent.includes('(drawn in');
        }""",
        arg=[EXPLORER_CSS, start],
        timeout=DRAW_TIMEOUT_MS,
    )


def pixels(page: Any) -> np.ndarray:
    """A screenshot of the explorer's picture as an (H, W, 3) array."""
    png = page.locator(f"{EXPLORER_CSS} img.fsl-explorer-image").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or float(np.abs(a - b).mean()) > 1.0


# -- tests ------------------------------------------------------------------------------------------------------
def test_notebook_01_runs_to_the_end(notebook01: Any, served: dict[str, Any]) -> None:
    page = notebook01
    with screenshots_of([page], "test_notebook_01_runs_to_the_end"):
        assert prompts(page) and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts(page)), prompts(page)
        outputs = model_outputs(page)
        errors = [o for o in outputs if o["output_type"] == "error" or o["name"] == "stderr"]
        assert not errors, errors
        assert "Error displaying widget" not in output_text(page)
        run_dir = Path(served["explorer"]["run_dir"])
        assert (run_dir / "results.json").is_file() and (run_dir / "counts.png").is_file()
        assert not (run_dir / "episode.png").exists(), "a live session writes no static copy of the explorer"
        # the explorer's cell shows the explorer and nothing else: one picture, drawn
        cell = page.locator(f"{PANEL} .jp-CodeCell").filter(has=page.locator(".fsl-explorer"))
        assert cell.count() == 1
        assert cell.locator(".jp-OutputArea-output img").count() == 1
        state = explorer_state(page)
        assert state["width"] > 0 and state["title"].startswith("test: 5-way 1-shot"), state
        assert 0 < state["shown_width"] <= state["width"], state  # never stretched past its pixels
        assert not state["label_clipped"], state  # every control's name shows whole ("episode")
        assert state["way_max"] == 5  # the test split has 5 classes


def test_explorer_redraws_in_place_and_follows_the_split(notebook01: Any) -> None:
    page = notebook01
    with screenshots_of([page], "test_explorer_redraws_in_place_and_follows_the_split"):
        page.locator(EXPLORER_CSS).scroll_into_view_if_needed()
        first, first_pixels = explorer_state(page), pixels(page)
        watch_picture(page)

        # the split: the train split has 10 classes, so the way slider reaches 10
        page.locator(f"{EXPLORER_CSS} .fsl-explorer-split select").select_option("train")
        wait_for_title(page, "train: 5-way 1-shot")
        train, train_pixels = explorer_state(page), pixels(page)
        assert train["way_max"] == 10 and train["way"] == 5
        assert train["sha"] != first["sha"] and differ(train_pixels, first_pixels)

        # 20 quick moves of the way slider (a key press is a release): 6, 7, 8, 9, 8, 9, ..., 8, 7
        page.locator(f"{EXPLORER_CSS} .fsl-explorer-way .noUi-handle").focus()
        for key in ["ArrowRight"] * 4 + ["ArrowLeft", "ArrowRight"] * 7 + ["ArrowLeft"] * 2:
            page.keyboard.press(key)
        wait_for_title(page, "train: 7-way 1-shot")
        seven, seven_pixels = explorer_state(page), pixels(page)
        assert seven["way"] == 7 and seven["height"] > train["height"]  # a row per class
        # at its own size, never shrunk (its names stay readable), in a frame that scrolls within 75 % of the
        # window's height, so the controls above it stay in view
        assert seven["shown_width"] == seven["width"] and first["shown_width"] == first["width"]
        assert seven["frame_height"] <= 0.75 * seven["window_height"] + 1 < seven["frame_content_height"]
        assert differ(seven_pixels, train_pixels)

        # back to a split of 5 classes: the slider's maximum and value follow
        page.locator(f"{EXPLORER_CSS} .fsl-explorer-split select").select_option("val")
        wait_for_title(page, "val: 5-way 1-shot")
        val = explorer_state(page)
        assert val["way_max"] == 5 and val["way"] == 5 and val["sha"] not in {first["sha"], seven["sha"]}

        samples = picture_samples(page)
        assert len(samples) > 10, "the picture was sampled while it changed"
        # blank: no picture element, no room for it (the page would jump), or a picture with no pixels. While a
        # new PNG loads (complete false, naturalWidth 0), Chromium still paints the old one in the same room.
        blank = [
            s for s in samples if s.get("missing") or not s["visible"] or (s["complete"] and not s["width"])
        ]
        assert not blank, f"{len(blank)} of {len(samples)} frames without a picture: {blank[:3]}"
        assert samples[0]["status"].startswith("test:") and samples[-1]["status"].startswith("val:")
        assert any(s["status"] == "drawing…" for s in samples), "the status line said it was drawing"
        sources = [s["src"] for s in samples]
        shown = sum(a != b for a, b in zip(sources, sources[1:]))
        assert 3 <= shown <= 10, (
            f"{shown} pictures shown for a split change, 20 slider moves and a split change"
        )


def test_executed_quickstart_reads_well(browser: Any, lab: LabServer, served: dict[str, Any]) -> None:
    runner = served["runner"]
    try:
        runner.wait(timeout=RUN_TIMEOUT_MS / 1000)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the quickstart run did not end in time:\n{served['runner_log'].read_text()[-3000:]}")
    assert runner.returncode == 0, served["runner_log"].read_text()[-3000:]
    executed = served["root"] / "outputs" / "00_quickstart" / "ui" / "00_quickstart.ipynb"
    saved = nbformat.read(executed, as_version=4)
    images = sum("image/png" in o.get("data", {}) for c in saved.cells for o in c.get("outputs", []))
    assert images >= 5

    page = _new_page(browser)
    try:
        with screenshots_of([page], "test_executed_quickstart_reads_well"):
            open_notebook(page, lab.url("outputs/00_quickstart/ui/00_quickstart.ipynb"))
            page.wait_for_function(
                """([css, n]) => {
                    const imgs = [...document.querySelectorAll(css + ' .jp-OutputArea-output img')];
                    return imgs.length >= n && imgs.every(img => img.complete);
                }""",
                arg=[PANEL, images],
            )
            widths = page.eval_on_selector_all(
                f"{PANEL} .jp-OutputArea-output img", "imgs => imgs.map(img => img.naturalWidth)"
            )
            assert len(widths) == images and all(w > 0 for w in widths), widths
            text = output_text(page)
            frozen = re.findall(r"(?<![\d.])0%\|[^\n]*", text)
            assert not frozen, f"frozen progress bars in the executed quickstart: {frozen[:3]}"
            assert "Error displaying widget" not in text
            assert "[fsl_core] epoch 1/1" in text  # progress lines are plain text in the saved notebook
    finally:
        page.context.close()
