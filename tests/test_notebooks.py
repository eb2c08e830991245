"""The notebooks: committed clean, and each one executed headless through the runner with tiny parameters.

The executions share one tiny generated birds set (32 px) and run two kernels at a time in the background
(``executions`` fixture); each test waits for the runs it checks and asserts on the files and numbers they
wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import pytest
from conftest import snapshot

from fsl_core.models import MODEL_NAMES
from fsl_core.notebooks import (
    NotebookRunError,
    expand_grid,
    list_notebooks,
    main,
    notebooks_dir,
    resolve_notebook,
    run,
    sweep_run_name,
)
from fsl_core.run_folder import RunFolderConflict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OURS = [
    "00_quickstart",
    "01_data_explorer",
    "02_train",
    "03_evaluate",
    "04_ablation",
    "05_masks_and_reconstructions",
    "06_gradcam",
]
BIRDS = dict(seed=0, image_size=32, images_per_class=12, groups=5, species_per_group=4)
"""20 classes in 5 groups (10 train, 5 val, 5 test) of 12 images at 32 px: room for 5-way episodes."""
TRAIN = dict(image_size=32, epochs=1, episodes_per_epoch=2, query=4)


# -- committed notebooks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(Path(notebooks_dir()).glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebook_is_parameterised_and_stripped(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs: strip them"
    assert notebook.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", OURS)
def test_every_parameter_is_documented(name: str) -> None:
    declared = papermill.inspect_notebook(str(resolve_notebook(name)))
    assert {"run_dir", "run_name", "device" if name != "01_data_explorer" else "seed"} <= set(declared)
    undocumented = [k for k, spec in declared.items() if not spec["help"]]
    assert not undocumented, f"{name}: comment the parameters {undocumented}"
    source = next(
        c.source
        for c in nbformat.read(resolve_notebook(name), 4).cells
        if "parameters" in c.metadata.get("tags", [])
    )
    assert "%cd" not in source and "os.chdir" not in source
    assert len(declared) == len([line for line in source.splitlines() if line.strip()]), (
        "one parameter per line"
    )


def test_notebook_names_resolve() -> None:
    assert set(OURS) <= set(list_notebooks())
    assert resolve_notebook("02").name == "02_train.ipynb"
    assert resolve_notebook("quickstart").name == "00_quickstart.ipynb"
    assert resolve_notebook("03_evaluate.ipynb") == resolve_notebook("03_evaluate")
    with pytest.raises(ValueError, match="is not a notebook"):
        resolve_notebook("99_missing")


def test_runner_refuses_unknown_parameters_before_starting_a_kernel(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no parameter 'shots' \(did you mean 'shot'\?\)"):
        run("00_quickstart", {"shots": 5}, output_root=tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="run_name"):
        run("00_quickstart", run_name="a b/c", output_root=tmp_path)


def test_runner_refuses_a_folder_that_exists_before_starting_a_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "00_quickstart" / "mine"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text('{"accuracy": 71.5}\n')
    before = snapshot(folder)
    with pytest.raises(RunFolderConflict, match=r"holds files that no notebook run of fsl_core wrote"):
        run("00_quickstart", run_name="mine", output_root=tmp_path)
    code = main(["00_quickstart", "--run-name", "mine", "--output-root", str(tmp_path), "--no-progress"])
    assert code == 1 and "--overwrite" in capsys.readouterr().err
    assert snapshot(folder) == before


def test_grids_and_run_names() -> None:
    assert expand_grid({"model": ["a", "b"], "shot": [1, 5]}) == [
        {"model": "a", "shot": 1},
        {"model": "a", "shot": 5},
        {"model": "b", "shot": 1},
        {"model": "b", "shot": 5},
    ]
    assert expand_grid([{"x": 1}]) == [{"x": 1}]
    with pytest.raises(ValueError, match="list of values"):
        expand_grid({"model": "hmdrn"})
    one = sweep_run_name(
        {"model": "hmdrn", "model_options": {"mask": False}}, {"model": "hmdrn", "epochs": 2}
    )
    assert one == sweep_run_name(
        {"model": "hmdrn", "model_options": {"mask": False}}, {"epochs": 2, "model": "hmdrn"}
    )
    assert one.startswith("model=hmdrn,model_options=mask-false-")
    assert one != sweep_run_name({"model": "hmdrn"}, {"model": "hmdrn", "epochs": 3})
    assert sweep_run_name({"label": "full HMDRN"}, {}).startswith("full-HMDRN-")


# -- executions -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def notebook_birds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fsl_core.data.synthetic import generate_birds

    return generate_birds(tmp_path_factory.mktemp("nb-birds") / "birds", **BIRDS, progress=False, workers=1)


def _runs(data: str, root: Path) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    """key → (notebook, tiny parameters, key of a run it needs first), in the order they are started."""
    checkpoint = str(root / "02_train" / "train" / "train" / "best.pt")
    ablation = dict(data_root=data, **TRAIN, val_every=1, val_episodes=2, test_episodes=3, test_query=4)
    return {
        "train": (
            "02_train",
            dict(
                data_root=data,
                **TRAIN,
                val_every=1,
                val_episodes=3,
                val_query=4,
                test_episodes=4,
                test_shots=[1, 5],
                test_query=4,
            ),
            None,
        ),
        "quickstart": (
            "00_quickstart",
            dict(data_root=data, **TRAIN, val_episodes=3, eval_episodes=6, eval_query=4),
            None,
        ),
        "ablation": ("04_ablation", dict(ablation, rows=["last", "hmdrn", "protonet"]), None),
        "explorer": (
            "01_data_explorer",
            dict(data_root=data, image_size=32, max_images_per_class=3, part_examples=2),
            None,
        ),
        "gradcam": (
            "06_gradcam",
            dict(
                data_root=data,
                image_size=32,
                train_epochs=1,
                train_episodes=1,
                train_query=4,
                n_show=2,
                pointing_episodes=2,
                pointing_query=2,
            ),
            None,
        ),
        "bad-model": ("02_train", dict(data_root=data, model="hmdrm"), None),
        "bad-shot": ("00_quickstart", dict(data_root=data, shot=-1), None),
        "no-checkpoint": ("03_evaluate", dict(data_root=data), None),
        "evaluate": (
            "03_evaluate",
            dict(
                checkpoint=checkpoint,
                data_root=data,
                shots=[1, 2],
                query=4,
                episodes=8,
                confusion_episodes=6,
                top_classes=4,
            ),
            "train",
        ),
        "masks": (
            "05_masks_and_reconstructions",
            dict(checkpoint=checkpoint, data_root=data, query=2, n_show=2, stats_episodes=2, random_draws=10),
            "train",
        ),
        "ablation-again": ("04_ablation", dict(ablation, rows=["last", "hmdrn"]), "ablation"),
    }


NEEDS = {
    "test_quickstart": ["quickstart"],
    "test_data_explorer": ["explorer"],
    "test_train": ["train"],
    "test_evaluate": ["evaluate"],
    "test_ablation_runs_rows_through_the_sweep_and_reuses_them": ["ablation-again"],
    "test_masks_and_reconstructions": ["masks"],
    "test_gradcam": ["gradcam"],
    "test_wrong_parameters_fail_with_a_readable_message": ["bad-model", "bad-shot", "no-checkpoint"],
    "test_a_notebook_run_is_never_rewritten": ["explorer", "bad-shot"],
}
"""The runs each test checks (a run's prerequisite is started too)."""


class Executions:
    """Notebook runs started in the background, two kernels at a time; ``get(key)`` waits for one.

    A job waits for its prerequisite's future; prerequisites are submitted first, so a waiting job always
    has its prerequisite running on the other worker.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures: dict[str, Future] = {}

    def submit(self, key: str, notebook: str, parameters: dict[str, Any], after: str | None = None) -> None:
        def job() -> Path:
            if after is not None:
                self.get(after)
            return run(notebook, parameters, run_name=key, output_root=self.root)

        self.futures[key] = self.pool.submit(job)

    def get(self, key: str) -> Path:
        return self.futures[key].result()

    def failure(self, key: str) -> NotebookRunError:
        error = self.futures[key].exception()
        assert isinstance(error, NotebookRunError), f"{key} should fail with NotebookRunError, got {error!r}"
        return error


@pytest.fixture(scope="session")
def executions(
    request: pytest.FixtureRequest, notebook_birds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Executions]:
    """The runs the selected tests check, with tiny parameters; kernels use one CPU thread each (they
    inherit the environment)."""
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs = Executions(tmp_path_factory.mktemp("notebook-runs"))
    plan = _runs(str(notebook_birds), runs.root)
    wanted = {
        key for item in request.session.items for key in NEEDS.get(getattr(item, "originalname", ""), [])
    }
    wanted |= {plan[key][2] for key in wanted if plan[key][2] is not None}
    for key, (notebook, parameters, after) in plan.items():
        if key in wanted:
            runs.submit(key, notebook, parameters, after)
    yield runs
    runs.pool.shutdown(wait=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def results(folder: Path) -> dict[str, Any]:
    assert (folder / "DONE").is_file() and not (folder / "FAILED").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["parameters"] and config["fsl_core_version"]
    executed = nbformat.read(folder / f"{config['notebook']}.ipynb", as_version=4)
    errors = [
        o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    return json.loads((folder / "results.json").read_text())


def assert_pngs(folder: Path, *names: str) -> None:
    for name in names:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, f"{name} is not a real PNG figure"


def in_range(low: float, high: float) -> Callable[[float], bool]:
    return lambda value: value is not None and low <= value <= high


slow = pytest.mark.slow


@slow
def test_quickstart(executions: Executions) -> None:
    folder = executions.get("quickstart")
    out = results(folder)
    assert set(out["accuracy"]) == {"hmdrn", "protonet"}
    for model in ("hmdrn", "protonet"):
        for shot in ("1", "5"):
            assert in_range(0, 100)(out["accuracy"][model][shot]["mean"])
            assert in_range(0, 100)(out["accuracy"][model][shot]["ci95"])
        assert (folder / "train" / model / "best.pt").is_file()
        assert (folder / "train" / model / "metrics.csv").is_file()
    assert len(out["summary"]) == 4 and out["seconds"] > 0
    table = pd.read_csv(folder / "accuracy.csv")
    assert sorted(table["shot"].unique()) == [1, 5] and len(table) == 4
    assert_pngs(
        folder,
        "episode.png",
        "accuracy.png",
        "masks.png",
        "gradcam.png",
        "curves_hmdrn.png",
        "curves_protonet.png",
        "episode_predictions.png",
    )


@slow
def test_data_explorer(executions: Executions) -> None:
    folder = executions.get("explorer")
    out = results(folder)
    assert out["splits"] == {
        "train": {"classes": 10, "images": 120, "groups": 5},
        "val": {"classes": 5, "images": 60, "groups": 5},
        "test": {"classes": 5, "images": 60, "groups": 5},
    }
    assert out["groups"] == 5 and out["image_size"] == {"width": [32, 32], "height": [32, 32]}
    assert 0 < out["part_share"]["discriminative parts"] < out["part_share"]["bird"] < 1
    assert in_range(0, 1)(out["nn_pixel_5w1s"]["accuracy"])
    assert_pngs(folder, "counts.png", "appearance.png", "episode.png", "parts.png", "part_areas.png")
    executed = nbformat.read(folder / "01_data_explorer.ipynb", as_version=4)
    widgets = [
        o
        for c in executed.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the episode browser is a widget"


@slow
def test_train(executions: Executions) -> None:
    folder = executions.get("train")
    out = results(folder)
    assert out["model"] == "hmdrn" and out["epochs_done"] == 1
    assert in_range(0, 100)(out["best_val_acc"]) and set(out["test"]) == {"1", "5"}
    assert all(in_range(0, 100)(v["mean"]) and v["episodes"] == 4 for v in out["test"].values())
    assert set(out["fusion_weights"]) == {"w_last", "w_mid", "gamma"}
    metrics = pd.read_csv(folder / "train" / "metrics.csv")
    assert len(metrics) == 1 and {"loss", "train_acc", "val_acc", "val_ci95"} <= set(metrics.columns)
    assert Path(out["checkpoint"]).is_file()
    assert_pngs(folder, "curves.png")


@slow
def test_evaluate(executions: Executions) -> None:
    folder = executions.get("evaluate")
    out = results(folder)
    assert set(out["accuracy"]) == {"1", "2"} and out["image_size"] == 32
    for value in out["accuracy"].values():
        assert in_range(0, 100)(value["mean"]) and value["episodes"] == 8 and value["ci95"] >= 0
    episodes = pd.read_csv(folder / "episodes.csv")
    assert len(episodes) == 16 and episodes["accuracy"].between(0, 100).all()
    assert out["confusion"]["queries"] == 6 * 5 * 4
    assert in_range(0, 1)(out["confusion"]["within_group_error_share"])
    assert_pngs(folder, "episodes.png", "confusion.png")


@slow
def test_ablation_runs_rows_through_the_sweep_and_reuses_them(executions: Executions) -> None:
    folder = executions.get("ablation")
    out = results(folder)
    assert {r["row"] for r in out["rows"]} == {"last", "hmdrn", "protonet"}
    assert all(in_range(0, 100)(r["mean"]) and r["shot"] in (1, 5) for r in out["rows"])
    assert out["failed"] == [] and len(out["runs"]) == 3
    for run_info in out["runs"].values():
        assert (Path(run_info["run_dir"]) / "DONE").is_file()
        assert Path(run_info["run_dir"]).parent == folder.parent.parent / "02_train"
    assert_pngs(folder, "ablation.png")
    again = pd.read_csv(executions.get("ablation-again") / "runs.csv")
    assert again["status"].tolist() == ["reused", "reused"]


@slow
def test_masks_and_reconstructions(executions: Executions) -> None:
    folder = executions.get("masks")
    out = results(folder)
    assert set(out["true_class_best"]) == {"last", "mid"}
    assert all(in_range(0, 1)(v) for v in out["true_class_best"].values()) and in_range(0, 1)(out["accuracy"])
    for level in ("last", "mid"):
        stats = out["mask_statistics"][level]
        for key in ("kept_share", "object_share", "random_object_share", "part_iou", "random_part_iou"):
            assert in_range(0, 1)(stats[key]), (level, key)
    assert_pngs(
        folder,
        "masks_query0.png",
        "errors_query0_last.png",
        "errors_query0_mid.png",
        "fusion_weights.png",
        "mask_statistics.png",
        "level_scores.png",
    )


@slow
def test_gradcam(executions: Executions) -> None:
    folder = executions.get("gradcam")
    out = results(folder)
    assert list(out["pointing_game"]) == ["protonet", "frn", "bifrn", "hmdrn"]
    for scores in out["pointing_game"].values():
        for key in ("parts", "parts_random", "bird", "bird_random", "no_peak", "correct"):
            assert in_range(0, 1)(scores[key]), key
        assert scores["parts_random"] < scores["bird_random"]
    assert out["queries"] == 2 * 5 * 2
    assert_pngs(folder, "gradcam.png", "pointing_game.png")


@slow
@pytest.mark.parametrize(
    "key, message",
    [
        ("bad-model", f"model='hmdrm' is not known; expected one of {list(MODEL_NAMES)}"),
        ("bad-shot", "shot=-1: expected a positive integer"),
        ("no-checkpoint", "checkpoint is required"),
    ],
)
def test_wrong_parameters_fail_with_a_readable_message(
    executions: Executions, key: str, message: str
) -> None:
    error = executions.failure(key)
    assert message in str(error) and key in str(error) and error.ename == "ValueError"
    folder = error.run_dir
    assert (folder / "FAILED").is_file() and not (folder / "DONE").exists()
    executed = nbformat.read(next(folder.glob("*.ipynb")), as_version=4)
    shown = [
        o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert shown and message in shown[0]["evalue"]


@slow
def test_a_notebook_run_is_never_rewritten(executions: Executions, notebook_birds: Path) -> None:
    plan = _runs(str(notebook_birds), executions.root)
    finished = executions.get("explorer")
    before = snapshot(finished)
    notebook, parameters, _ = plan["explorer"]
    with pytest.raises(RunFolderConflict, match="holds a notebook run .* a run is never rewritten"):
        run(notebook, parameters, run_name="explorer", output_root=executions.root)
    assert snapshot(finished) == before

    failed = executions.failure("bad-shot").run_dir
    assert failed is not None
    before = snapshot(failed)
    notebook, parameters, _ = plan["bad-shot"]
    with pytest.raises(NotebookRunError, match="shot=-1"):  # the re-run fails the same way
        run(notebook, parameters, run_name="bad-shot", output_root=executions.root, overwrite=True)
    (moved,) = failed.glob("replaced-*")
    assert snapshot(moved) == before  # the first attempt, byte for byte
    assert (failed / "FAILED").is_file() and (failed / "run.json").is_file()
