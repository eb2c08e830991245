"""The notebooks: committed clean, and each one executed headless through the runner with tiny parameters.

The executions share one tiny generated birds set (32 px) and run two kernels at a time in the background
(``executions`` fixture); each test waits for the runs it checks and asserts on the files and numbers they
wrote.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import pytest
from conftest import snapshot

import fsl_core.notebooks as notebooks_module
from fsl_core import progress, runtime
from fsl_core.data import FewShotFolder, load_card, load_metadata
from fsl_core.engine import evaluate
from fsl_core.models import MODEL_NAMES, load_model
from fsl_core.models.checkpoints import load_checkpoint
from fsl_core.notebook_parameters import NOTEBOOKS, check_values, declared, parameters_cell
from fsl_core.notebooks import (
    REPO_ROOT,
    NotebookRunError,
    _kernel_manager_class,
    absolute_path_parameters,
    expand_grid,
    list_notebooks,
    main,
    notebooks_dir,
    output_root_of,
    outputs_root,
    read_results,
    resolve_notebook,
    run,
    sweep,
    sweep_run_name,
)
from fsl_core.progress import ENVIRONMENT
from fsl_core.run_folder import RunFolderConflict
from fsl_core.viz import GroundTruth
from fsl_core.viz.confusion import episode_confusion, within_group_error_share
from fsl_core.viz.mask_statistics import reconstruction_statistics
from fsl_core.viz.parts import part_area_shares
from fsl_core.viz.pointing import pointing_game_records, pointing_game_summary, pointing_game_table

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
    # a cell ending in a call that saves a file shows no stray Out[] of the path it returns
    for cell in notebook.cells:
        body = ast.parse(cell.source).body if cell.cell_type == "code" else []
        last = body[-1] if body else None
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
            called = getattr(last.value.func, "id", getattr(last.value.func, "attr", ""))
            if called in ("show_figure", "atomic_write_json"):
                assert cell.source.rstrip().endswith(";"), f"{path.name}: end the cell {cell.id} with ';'"
    # no cell but the parameters cell assigns a parameter: re-running a cell in JupyterLab finds them unchanged
    parameters = set(declared(path.stem))
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            for node in ast.walk(ast.parse(cell.source)):
                targets = node.targets if isinstance(node, ast.Assign) else []
                targets += [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For)) else []
                names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                assert not names & parameters, f"{path.name}: cell {cell.id} assigns {names & parameters}"


@pytest.mark.parametrize("name", [*OURS, "07_gsfl"])
@pytest.mark.usefixtures("paths_not_checked")
def test_parameters_cell_is_generated_from_the_declarations(name: str) -> None:
    source = next(
        c.source
        for c in nbformat.read(resolve_notebook(name), 4).cells
        if "parameters" in c.metadata.get("tags", [])
    )
    assert source == parameters_cell(name), "run: python -m fsl_core.notebooks --write-parameter-cells"
    inspected = papermill.inspect_notebook(str(resolve_notebook(name)))
    spec = declared(name)
    assert list(inspected) == list(spec) and all(inspected[k]["help"] == spec[k].help for k in spec)
    assert {"run_dir", "run_name", "device" if name != "01_data_explorer" else "seed"} <= set(spec)
    if name != "03_evaluate":  # its checkpoint has no default
        check_values(name, {})  # the defaults pass their own checks


def test_the_output_root_of_a_run_folder_is_found_only_in_the_runner_s_layout(tmp_path: Path) -> None:
    assert output_root_of(tmp_path / "02_train" / "20261207-120000") == tmp_path
    assert (
        output_root_of(REPO_ROOT / "outputs" / "05_masks_and_reconstructions" / "interactive")
        == REPO_ROOT / "outputs"
    )
    assert output_root_of(tmp_path / "x") is None  # papermill -p run_dir anywhere: no output root to look in


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


# -- what the runner gives a kernel, and what it prints ----------------------------------------------------------
def test_paths_typed_by_the_user_are_taken_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    given = {"data_root": "glyphs", "train_dir": "../runs/a", "model": "frn", "image_size": None}
    assert absolute_path_parameters("02_train", given) == {
        "data_root": str(tmp_path / "glyphs"),
        "train_dir": str(tmp_path.parent / "runs" / "a"),
        "model": "frn",  # not a path
        "image_size": None,
    }
    assert absolute_path_parameters("05", {"checkpoint": "~/best.pt"})["checkpoint"] == str(
        Path.home() / "best.pt"
    )
    assert absolute_path_parameters("04_ablation", {"runs_root": "/abs", "data_root": ""}) == {
        "runs_root": "/abs",
        "data_root": "",  # "" and None keep their meaning
    }


class FakePapermill:
    """Stands in for ``papermill.execute_notebook``: records what the runner passes, and prints through the
    runner's stdout hook what a kernel would, in pieces cut anywhere."""

    PRINTED = (
        "[fsl_core] epoch 1/2: loss 1.5",
        "000\nnot a progress line\n[fsl_core] evalu",
        "ation 5-way\n",
    )

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, source: str, output: str, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        for piece in self.PRINTED if kwargs["stdout_file"] is not None else ():  # None: progress lines off
            kwargs["stdout_file"].write(piece)
        Path(output).write_text("{}")
        if self.writes_results:
            (Path(output).parent / "results.json").write_text('{"summary": {"accuracy": "50.00 %"}}')
            (Path(output).parent / "curves.png").write_bytes(b"")

    writes_results = False


def test_the_runner_injects_absolute_paths_and_prints_the_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    monkeypatch.chdir(tmp_path)
    for data in (
        "glyphs",
        "a",
        "b",
    ):  # data folders must exist (their contents are the fake kernel's business)
        (tmp_path / data).mkdir()
    folder = run("02_train", {"data_root": "glyphs"}, run_name="here", output_root=tmp_path / "out")
    (call,) = fake.calls
    assert call["parameters"]["data_root"] == str(tmp_path / "glyphs")
    assert call["parameters"]["run_dir"] == str(folder) == str(tmp_path / "out" / "02_train" / "here")
    assert "cwd" not in call  # the runner's own working folder never changes
    assert call["kernel_manager_class"] is _kernel_manager_class()
    config = json.loads((folder / "config.json").read_text())
    assert config["parameters"] == {"data_root": str(tmp_path / "glyphs")}
    # every value the run used: the given ones over the declared defaults, and the run folder the runner chose
    assert config["values"] == {
        **{key: parameter.default for key, parameter in declared("02_train").items()},
        "data_root": str(tmp_path / "glyphs"),
        "run_dir": str(folder),
        "run_name": "here",
    }
    assert config["values"]["epochs"] is None and config["values"]["test_shots"] == [1, 5]
    quiet = run("01", {}, run_name="x", output_root=tmp_path / "out", progress_lines=False)
    defaults = json.loads((quiet / "config.json").read_text())
    fake.calls.pop()
    assert defaults["values"]["data_root"] == str(REPO_ROOT / "data" / "birds")  # as the kernel reads it
    assert capsys.readouterr().out == "02_train: epoch 1/2: loss 1.5000\n02_train: evaluation 5-way\n"
    # fsl-notebook with its output in a file: the progress lines, no papermill cell bar
    monkeypatch.setattr(progress, "redirected_output", lambda: True)
    fake.writes_results = True
    assert (
        main(["02_train", "-p", "data_root", "glyphs", "--run-name", "logged", "--output-root", "out"]) == 0
    )
    fake.writes_results = False
    assert fake.calls[-1]["progress_bar"] is False
    out = capsys.readouterr().out
    assert out.startswith("02_train: epoch 1/2: loss 1.5000\n02_train: evaluation 5-way\n")
    assert out.endswith(  # where the outputs are, and what they are
        f"; outputs in {tmp_path / 'out' / '02_train' / 'logged'}: the executed notebook 02_train.ipynb (open it "
        "in JupyterLab to read it with its figures), results.json and 1 figure (.png)\n  accuracy: 50.00 %\n"
    )
    fake.calls.pop()

    rows = sweep(
        "02_train",
        [{"data_root": "a"}, {"data_root": str(tmp_path / "b")}],
        output_root=tmp_path / "out",
        max_workers=1,
        progress=True,
    )
    assert [c["parameters"]["data_root"] for c in fake.calls[1:]] == [
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]
    assert rows["status"].tolist() == ["done", "done"]
    out = capsys.readouterr().out
    for name in rows["run"]:
        assert f"02_train {name}: epoch 1/2: loss 1.5000\n02_train {name}: evaluation 5-way\n" in out
    # a relative output root is taken from the current folder, as the path parameters are
    assert (
        run("02_train", {"data_root": "a"}, run_name="rel", output_root="runs")
        == tmp_path / "runs/02_train/rel"
    )
    assert outputs_root() == REPO_ROOT / "outputs"  # the default, wherever the runner starts


def test_a_sweep_reuses_a_finished_run_only_while_it_would_run_with_the_same_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()

    def statuses() -> list[str]:
        table = sweep(
            "02_train", [{"data_root": "d"}], output_root=tmp_path / "out", max_workers=1, progress=False
        )
        return table["status"].tolist()

    assert statuses() == ["done"] and statuses() == ["reused"] and len(fake.calls) == 1
    # a default changed since the run finished: the sweep would now run something else, so it runs again
    test_query = NOTEBOOKS["02_train"]["test_query"]
    monkeypatch.setitem(NOTEBOOKS["02_train"], "test_query", dataclasses.replace(test_query, default=8))
    assert statuses() == ["done"] and len(fake.calls) == 2
    (folder,) = (tmp_path / "out" / "02_train").iterdir()
    assert json.loads((folder / "config.json").read_text())["values"]["test_query"] == 8
    (aside,) = folder.glob("replaced-*")  # the earlier run's files, kept
    assert json.loads((aside / "config.json").read_text())["values"]["test_query"] == 16
    # a run recorded before config.json held every value is compared on the parameters given
    config = json.loads((folder / "config.json").read_text())
    del config["values"]
    (folder / "config.json").write_text(json.dumps(config))
    assert statuses() == ["reused"]


def test_a_run_says_where_the_same_parameters_finished_before_and_still_runs_them_in_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    out = tmp_path / "out"
    first = run("02_train", {"data_root": "d", "epochs": 2}, run_name="first", output_root=out)
    assert "finished earlier" not in capsys.readouterr().err
    run("02_train", {"data_root": "d", "epochs": 3}, run_name="other", output_root=out)  # other parameters
    assert "finished earlier" not in capsys.readouterr().err
    second = run(
        "02_train", {"data_root": str(tmp_path / "d"), "epochs": 2}, run_name="second", output_root=out
    )
    assert capsys.readouterr().err.splitlines()[0] == (
        f"02_train: a run with the same parameters finished earlier in {first} (its results are there); "
        f"this one runs them again in {second}"
    )
    assert len(fake.calls) == 3 and (second / "DONE").is_file() and (first / "DONE").is_file()
    run("02_train", {"data_root": "d", "epochs": 2}, run_name="quiet", output_root=out, progress_lines=False)
    assert "finished earlier" not in capsys.readouterr().err  # no progress lines: no note either
    damaged = out / "02_train" / "damaged"
    damaged.mkdir()
    (damaged / "DONE").write_text("{}")
    (damaged / "config.json").write_text("[not a mapping")  # passed over: the note only informs
    run("02_train", {"data_root": "d", "epochs": 2}, run_name="fourth", output_root=out)
    assert "finished earlier in" in capsys.readouterr().err
    (damaged / "config.json").write_text("[1, 2]")
    run("02_train", {"data_root": "d", "epochs": 2}, run_name="fifth", output_root=out)
    assert "finished earlier in" in capsys.readouterr().err
    for name in ("first", "second", "quiet", "fourth", "fifth"):
        (out / "02_train" / name / "DONE").unlink()
    run("02_train", {"data_root": "d", "epochs": 2}, run_name="third", output_root=out)
    assert "finished earlier" not in capsys.readouterr().err


def test_a_sweep_shares_the_cores_between_the_kernels_it_runs_at_once_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def kernel(source: str, output: str, **kwargs: Any) -> None:
        seen.append(runtime.choose_cpu_threads(0))  # what the kernel's training would use and print
        Path(output).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", kernel)
    monkeypatch.setattr(notebooks_module, "usable_cpu_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    grid = [{"data_root": "d", "seed": seed} for seed in range(3)]
    sweep("02_train", grid[:1], output_root=tmp_path / "out", max_workers=2, progress=False)
    assert seen == [(4, "the sweep's share of 4 cores, 1 kernel at a time")]  # one run: every core
    sweep(
        "02_train", grid, output_root=tmp_path / "out", max_workers=2, progress=False
    )  # the first is reused
    assert seen[1:] == [(2, "the sweep's share of 4 cores, 2 kernels at a time")] * 2
    assert "OMP_NUM_THREADS" not in os.environ and runtime.THREADS_REASON not in os.environ  # put back
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting is kept, and named as theirs
    sweep(
        "02_train",
        [{"data_root": "d", "seed": 7}],
        output_root=tmp_path / "out",
        max_workers=2,
        progress=False,
    )
    assert seen[-1] == (3, "OMP_NUM_THREADS of the environment")


def test_a_run_of_the_runner_in_plain_lines_mode_keeps_the_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A notebook that runs notebooks (04_ablation): its runs' lines reach the top runner's terminal."""
    monkeypatch.setattr(papermill, "execute_notebook", FakePapermill())
    monkeypatch.setenv(ENVIRONMENT, "lines")
    (tmp_path / "birds").mkdir()
    run(
        "02_train",
        {"data_root": str(tmp_path / "birds")},
        run_name="inner",
        output_root=tmp_path,
        label="02_train inner",
    )
    assert capsys.readouterr().out.splitlines() == [
        "[fsl_core] 02_train inner: epoch 1/2: loss 1.5000",
        "[fsl_core] 02_train inner: evaluation 5-way",
    ]


def test_the_runner_kernels_talk_privately_and_are_not_interrupted_at_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    import zmq
    from jupyter_client.manager import AsyncKernelManager

    manager = _kernel_manager_class()(kernel_name="python3")
    if manager.has_trait("transport_encryption") and zmq.has("curve"):
        assert manager.transport_encryption == "auto"
    else:
        assert manager.transport == "ipc" or os.name != "posix"
    started: list[dict[str, Any]] = []

    async def start(self: AsyncKernelManager, **kwargs: Any) -> None:
        started.append(kwargs)

    monkeypatch.setattr(AsyncKernelManager, "start_kernel", start)
    asyncio.run(manager.start_kernel())
    assert started[0]["env"][ENVIRONMENT] == "lines" and started[0]["cwd"] == str(notebooks_dir().parent)
    assert started[0]["env"]["PATH"] == os.environ["PATH"]
    # an interrupt is sent on request, never as the first step of a shutdown
    manager.shutting_down = True
    asyncio.run(manager._async_interrupt_kernel())  # no kernel here, and nothing is sent
    manager.shutting_down = False
    with pytest.raises(RuntimeError, match="No kernel is running"):
        asyncio.run(manager._async_interrupt_kernel())


# -- executions -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def notebook_birds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fsl_core.data.birds import generate_birds

    return generate_birds(tmp_path_factory.mktemp("nb-birds") / "birds", **BIRDS, progress=False, workers=1)


def without_groups(data: Path) -> Path:
    """A folder data set without groups: a copy of the test split of ``data`` alone, with no metadata.json."""
    copy = data.parent / "birds-without-groups"
    if not copy.exists():
        shutil.copytree(data / "test", copy / "test")
    return copy


def printed(folder: Path, notebook: str) -> str:
    """Everything the executed notebook in ``folder`` printed."""
    executed = nbformat.read(folder / f"{notebook}.ipynb", as_version=4)
    return "".join(
        o.get("text", "")
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )


def text_file(path: Path) -> Path:
    """``path`` holding a line of text: a file that exists and is no checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a checkpoint\n")
    return path


def _runs(data: str, root: Path) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    """key → (notebook, tiny parameters, key of a run it needs first), in the order they are started."""
    checkpoint = str(root / "02_train" / "train" / "train" / "best.pt")
    untested = dict(data_root=data, **{**TRAIN, "episodes_per_epoch": 1}, val_every=0, test_episodes=0)
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
        "train-untested": ("02_train", dict(untested, model="protonet", augmentation="no_flip"), None),
        "quickstart": (
            "00_quickstart",
            dict(
                data_root=data,
                **{**TRAIN, "epochs": 2, "episodes_per_epoch": 10},
                val_episodes=3,
                eval_episodes=40,
                eval_query=4,
            ),
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
        "unreadable-checkpoint": (
            "03_evaluate",
            dict(data_root=data, checkpoint=str(text_file(root / "notes.pt")), query=4),  # 5 + 4 ≤ 12 images
            None,
        ),
        "evaluate": (
            "03_evaluate",
            dict(
                checkpoint=checkpoint,  # no data_root: the one its run trained on
                shots=[1, 2],
                query=4,
                episodes=8,
                confusion_episodes=6,
                top_classes=4,
            ),
            "train",
        ),
        "evaluate-lean": (
            "03_evaluate",
            dict(
                checkpoint=str(root / "02_train" / "train-untested" / "train" / "last.pt"),
                data_root=str(without_groups(Path(data))),
                shots=[1],
                query=2,
                episodes=2,
                confusion_episodes=0,
            ),
            "train-untested",
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
    "test_train_without_a_test": ["train-untested"],
    "test_evaluate": ["evaluate"],
    "test_evaluate_without_groups_or_confusion": ["evaluate-lean"],
    "test_ablation_runs_rows_through_the_sweep_and_reuses_them": ["ablation-again"],
    "test_masks_and_reconstructions": ["masks"],
    "test_gradcam": ["gradcam"],
    "test_a_failing_cell_leaves_a_readable_message": ["unreadable-checkpoint"],
    "test_a_notebook_run_is_never_rewritten": ["explorer", "unreadable-checkpoint"],
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
            return run(notebook, parameters, run_name=key, output_root=self.root, progress_lines=False)

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


slow = pytest.mark.slow


@slow
def test_quickstart(executions: Executions) -> None:
    folder = executions.get("quickstart")
    out = results(folder)
    assert set(out["accuracy"]) == {"hmdrn", "protonet"}
    for model in ("hmdrn", "protonet"):
        five_shot = out["accuracy"][model]["5"]
        # 20 training episodes already beat chance (20 %) by 5 points at the lower end of the 95% interval
        assert five_shot["mean"] - five_shot["ci95"] > 25.0, (model, five_shot)
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
def test_data_explorer(executions: Executions, notebook_birds: Path) -> None:
    folder = executions.get("explorer")
    out = results(folder)
    assert out["splits"] == {
        "train": {"classes": 10, "images": 120, "groups": 5},
        "val": {"classes": 5, "images": 60, "groups": 5},
        "test": {"classes": 5, "images": 60, "groups": 5},
    }
    assert out["groups"] == 5 and out["image_size"] == {"width": [32, 32], "height": [32, 32]}
    truth = GroundTruth(FewShotFolder(notebook_birds, "test", transform=None))  # split's default: test
    assert out["part_share"] == part_area_shares(truth, per_class=3).mean().to_dict()
    assert 0 < out["part_share"]["discriminative parts"] < out["part_share"]["bird"] < 100
    assert out["part_share"]["bird"] > 5  # percent: a bird covers more than a twentieth of its image
    nn = load_card(notebook_birds)["nn_pixel_5w1s"]  # the card records fractions; results, percentages
    assert out["nn_pixel_5w1s"] == {
        **nn,
        "accuracy": 100 * nn["accuracy"],
        "ci95": 100 * nn["ci95"],
        "chance": 100 * nn["chance"],
    }
    assert out["summary"]["test"] == "5 classes, 60 images (12-12 per class)"
    assert out["summary"]["raw-pixel nearest neighbour"].startswith(f"{100 * nn['accuracy']:.1f} ± ")
    assert_pngs(
        folder,
        "counts.png",
        "appearance.png",
        "episode.png",
        "parts.png",
        "part_areas.png",
        "augmentations.png",
    )
    assert "augmentations.png" in out["figures"]
    assert "no_flip: the papers' preset without the flip" in printed(folder, "01_data_explorer")
    executed = nbformat.read(folder / "01_data_explorer.ipynb", as_version=4)
    widgets = [
        o
        for c in executed.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the episode browser is a widget"


@slow
def test_train(executions: Executions, notebook_birds: Path, one_thread: None) -> None:
    folder = executions.get("train")
    out = results(folder)
    assert out["model"] == "hmdrn" and out["epochs_done"] == 1 and set(out["test"]) == {"1", "5"}
    metrics = pd.read_csv(folder / "train" / "metrics.csv")
    assert out["best_val_acc"] == metrics["val_acc"].max()
    # the test accuracies are those the library gives for the saved checkpoint, episode for episode
    model = load_model(out["checkpoint"]).eval()
    test_set = FewShotFolder(notebook_birds, "test", transform="eval", image_size=32)
    for shot, value in out["test"].items():
        again = evaluate(model, test_set, way=5, shot=int(shot), query=4, episodes=4, seed=0, device="cpu")
        assert (value["mean"], value["ci95"], value["episodes"]) == (again.mean, again.ci95, 4)
        assert out["summary"][f"test 5-way {shot}-shot"] == f"{again} %"
    assert out["summary"]["validation"] == (
        f"{out['best_val_acc']:.2f} ± {out['best_val_ci95']:.2f} % (epoch {out['best_epoch']})"
    )
    assert out["summary"]["checkpoint"] == out["checkpoint"]
    assert set(out["fusion_weights"]) == {"w_last", "w_mid", "gamma"}
    metrics = pd.read_csv(folder / "train" / "metrics.csv")
    assert len(metrics) == 1 and {"loss", "train_acc", "val_acc", "val_ci95"} <= set(metrics.columns)
    assert Path(out["checkpoint"]).is_file()
    assert_pngs(folder, "curves.png")


@slow
def test_train_without_a_test(executions: Executions) -> None:
    folder = executions.get("train-untested")
    out = results(folder)
    assert out["tested"] is False and out["test"] == "not run (test_episodes=0)"
    assert out["summary"] == {
        "validation": "none (val_every=0)",
        "test": "no test evaluation was run (test_episodes=0)",
        "checkpoint": str(folder / "train" / "last.pt"),
    }
    assert "no test evaluation: test_episodes=0" in printed(folder, "02_train")
    # no validation either: the checkpoint is last.pt, trained with the augmentation asked for
    assert out["best_val_acc"] is None and out["checkpoint"] == str(folder / "train" / "last.pt")
    assert out["augmentation"] == "no_flip"
    assert json.loads((folder / "train" / "config.json").read_text())["augmentation"] == "no_flip"
    assert load_checkpoint(out["checkpoint"])["train_config"]["augmentation"] == "no_flip"


@slow
def test_evaluate(executions: Executions, notebook_birds: Path, one_thread: None) -> None:
    folder = executions.get("evaluate")
    out = results(folder)
    assert set(out["accuracy"]) == {"1", "2"} and out["image_size"] == 32
    assert out["data_root"] == str(notebook_birds)  # the data set the checkpoint's run trained on
    model = load_model(out["checkpoint"]).eval()
    test_set = FewShotFolder(notebook_birds, "test", transform="eval", image_size=32)
    episodes = pd.read_csv(folder / "episodes.csv")
    for shot, value in out["accuracy"].items():
        again = evaluate(model, test_set, way=5, shot=int(shot), query=4, episodes=8, seed=0, device="cpu")
        assert (value["mean"], value["ci95"], value["episodes"]) == (again.mean, again.ci95, 8)
        assert episodes[episodes["shot"] == int(shot)]["accuracy"].tolist() == again.accuracies.tolist()
    matrix = episode_confusion(model, test_set, way=5, shot=1, query=4, episodes=6, seed=0, device="cpu")
    assert out["confusion"]["queries"] == 6 * 5 * 4 == int(matrix.sum())
    groups = {name: info["group_name"] for name, info in load_metadata(notebook_birds)["classes"].items()}
    share = out["confusion"]["within_group_error_share"]
    assert share == within_group_error_share(matrix, test_set.classes, groups)
    assert_pngs(folder, "episodes.png", "confusion.png")
    # embedding and episodes are timed apart, in results.json and accuracy.csv
    table = pd.read_csv(folder / "accuracy.csv")
    assert {"embed_seconds", "episode_seconds", "episodes_per_second"} <= set(table.columns)
    for value in out["accuracy"].values():
        assert value["embed_seconds"] > 0 and value["episode_seconds"] > 0
        assert value["episodes_per_second"] == 8 / value["episode_seconds"]


@slow
def test_evaluate_without_groups_or_confusion(executions: Executions, one_thread: None) -> None:
    folder = executions.get("evaluate-lean")
    out = results(folder)
    assert out["confusion"] == "not run (confusion_episodes=0)"
    assert "null" not in (folder / "results.json").read_text()  # nothing is reported as missing
    assert not (folder / "confusion.png").exists() and not (folder / "confused_pairs.csv").exists()
    text = printed(folder, "03_evaluate")
    assert "names no class groups" in text and "no confusion matrix: confusion_episodes=0" in text
    model = load_model(out["checkpoint"]).eval()
    data = FewShotFolder(out["data_root"], "test", transform="eval", image_size=32)
    again = evaluate(model, data, way=5, shot=1, query=2, episodes=2, seed=0, device="cpu")
    assert (out["accuracy"]["1"]["mean"], out["accuracy"]["1"]["ci95"]) == (again.mean, again.ci95)


@slow
def test_ablation_runs_rows_through_the_sweep_and_reuses_them(executions: Executions) -> None:
    folder = executions.get("ablation")
    out = results(folder)
    assert {r["row"] for r in out["rows"]} == {"last", "hmdrn", "protonet"}
    assert out["failed"] == [] and len(out["runs"]) == 3
    # one seed per row: each row is its training run's own test result
    by_row = {
        Path(d["run_dir"]).name.split("-seed")[0]: read_results(d["run_dir"]) for d in out["runs"].values()
    }
    for row in out["rows"]:
        tested = by_row[row["row"]]["test"][str(row["shot"])]
        assert (row["mean"], row["ci95"], row["seeds"]) == (tested["mean"], tested["ci95"], 1)
    for run_info in out["runs"].values():
        assert (Path(run_info["run_dir"]) / "DONE").is_file()
        assert Path(run_info["run_dir"]).parent == folder.parent.parent / "02_train"
    assert_pngs(folder, "ablation.png")
    trainings = folder.parent.parent / "02_train"
    assert out["summary"]["training runs"] == f"3 runs (3 trained now) in {trainings}"
    assert read_results(executions.get("ablation-again"))["summary"]["training runs"] == (
        f"2 runs (2 reused) in {trainings}"
    )
    again = pd.read_csv(executions.get("ablation-again") / "runs.csv")
    assert again["status"].tolist() == ["reused", "reused"]
    said = printed(executions.get("ablation-again"), "04_ablation")  # the runner's terminal shows these lines
    assert (
        f"02_train: 2 of 2 runs finished earlier with the same parameters and are reused ({', '.join(again['run'])})"
        in said
    )


@slow
def test_masks_and_reconstructions(executions: Executions, notebook_birds: Path, one_thread: None) -> None:
    folder = executions.get("masks")
    out = results(folder)
    assert set(out["true_class_best"]) == {"last", "mid"}
    # the numbers are the library's for the checkpoint the notebook looked at (one thread, as in the kernel)
    model = load_model(out["checkpoint"]).eval()
    data = FewShotFolder(notebook_birds, "test", transform="eval", image_size=32)
    truth = GroundTruth(data, image_size=32)
    accuracy, true_best, records = reconstruction_statistics(
        model, data, truth, 5, 1, 2, episodes=2, seed=0, random_draws=10, device="cpu"
    )
    assert out["accuracy"] == accuracy and out["true_class_best"] == true_best
    assert out["accuracy"] == 5 * round(out["accuracy"] / 5)  # percent of 20 queries, exactly: steps of 5
    assert out["summary"]["accuracy (5-way 1-shot, 2 episodes)"] == f"{accuracy:.1f} %"
    assert len(records) == 2 * 5 * 2 * 2 * 3  # episodes x queries x levels x transformer layers
    for level in ("last", "mid"):
        stats = out["mask_statistics"][level]
        mean = 100 * records[records["level"] == level].drop(columns=["level", "layer"]).mean()  # percent
        assert stats == pytest.approx({key: float(value) for key, value in mean.items()}, rel=1e-12)
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
def test_gradcam(executions: Executions, notebook_birds: Path, one_thread: None) -> None:
    folder = executions.get("gradcam")
    out = results(folder)
    assert list(out["pointing_game"]) == ["protonet", "frn", "bifrn", "hmdrn"]
    assert out["queries"] == 2 * 5 * 2 and out["tolerance_pixels"] == round(2 * 32 / 84)
    assert out["cam_target"] == "log_probability"  # the default: the records below are the library's for it
    # every query's record is what the library gives for the models the notebook trained
    models = {name: load_model(folder / "train" / name / "best.pt").eval() for name in out["pointing_game"]}
    data = FewShotFolder(notebook_birds, "test", transform="eval", image_size=32)
    again = pointing_game_records(
        models, data, GroundTruth(data, image_size=32), 5, 1, 2, 2, seed=1, tolerance=1, device="cpu"
    )
    pd.testing.assert_frame_equal(pd.read_csv(folder / "pointing_game.csv"), again, check_dtype=False)
    table = pointing_game_table(again, list(models))
    assert all(type(scores["queries"]) is int for scores in out["pointing_game"].values())
    assert out["pointing_game"] == {  # in percent, the queries a count
        name: {**{k: float(v) for k, v in row.items()}, "queries": 2 * 5 * 2}
        for name, row in table.iterrows()
    }
    for scores in out["pointing_game"].values():
        assert scores["parts_random"] < scores["bird_random"]  # the marks are a part of the bird
    for name, row in pointing_game_summary(table).iterrows():  # the terminal's lines say the flat maps too
        flat = f"{out['pointing_game'][name]['flat_map']:.1f}"
        assert out["summary"][f"{name} peak on parts (%, [Wilson 95 % interval])"] == (
            f"{row['peak on parts (%)']} (random point {row['random point on parts (%)']}; flat maps {flat})"
        )
    assert_pngs(folder, "gradcam.png", "pointing_game.png")


@pytest.mark.parametrize(
    "notebook, parameters, message",
    [
        ("02_train", {"model": "hmdrm"}, f"model='hmdrm' is not known; expected one of {list(MODEL_NAMES)}"),
        ("00_quickstart", {"shot": -1}, "shot=-1: expected a positive integer"),
        ("03_evaluate", {}, "checkpoint is required"),
        (
            "02_train",
            {"train_settings": {"epoch": 3}},
            "unknown training setting 'epoch' (did you mean 'epochs'?)",
        ),
        (
            "02_train",
            {"train_settings": {"epochs": "1e1"}},
            "train_settings: epochs must be a positive integer, got '1e1' (YAML reads '1e1' as text: write 10)",
        ),
        (
            "02_train",
            {"train_settings": {"lr": "1e-3"}},
            "train_settings: lr must be a finite number, got '1e-3' (YAML reads '1e-3' as text: write 0.001)",
        ),
        (
            "02_train",
            {"train_settings": {"model": "frn"}},
            "train_settings sets ['model'], which are parameters of this notebook: set them there",
        ),
        (
            "02_train",
            {"data_root": "/nowhere/birds"},
            "data_root='/nowhere/birds': does not exist; fsl-birds FOLDER generates the embedded birds set there",
        ),
        ("05_masks_and_reconstructions", {"model_options": {"mask": "no"}}, "option mask='no' (str)"),
        (
            "03_evaluate",
            {"checkpoint": "/nowhere/best.pt"},
            "checkpoint='/nowhere/best.pt': does not exist; give a checkpoint file: best.pt or last.pt of a training "
            "run (e.g. outputs/02_train/<run>/train/best.pt, where <run> is interactive for a notebook run in "
            "JupyterLab), or a save_model file",
        ),
        (
            "03_evaluate",
            {"checkpoint": "authors.pth", "reference": True},
            "data_root: give the data set to evaluate on; the HMDRN authors' released weights (reference=True) "
            "record none",
        ),
    ],
)
def test_wrong_parameters_are_refused_before_a_kernel_starts(
    tmp_path: Path, notebook: str, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as error:
        run(notebook, parameters, run_name="wrong", output_root=tmp_path)
    assert message in str(error.value)
    assert not any(tmp_path.iterdir())  # no run folder, no kernel


def test_a_run_folder_given_as_a_checkpoint_is_refused_before_a_kernel_starts(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "best.pt").write_bytes(b"")  # only its name is looked at
    for notebook in ("03_evaluate", "05_masks_and_reconstructions", "08_your_images"):
        with pytest.raises(ValueError) as error:
            run(notebook, {"checkpoint": str(folder)}, run_name="wrong", output_root=tmp_path / "out")
        assert str(error.value).startswith(  # a clone without data/birds: a data_root problem follows
            f"checkpoint={str(folder)!r}: checkpoint {folder} is a folder; give a checkpoint file: "
            f"{folder / 'best.pt'} is one"
        )
    # 06's {model: checkpoint}: each path checked, and a relative one taken from where the run starts
    with pytest.raises(ValueError) as error:
        run(
            "06_gradcam",
            {"models": ["frn", "hmdrn"], "checkpoints": {"hmdrn": str(folder), "frn": "/nowhere/best.pt"}},
            run_name="wrong",
            output_root=tmp_path / "out",
        )
    assert str(error.value).startswith(
        f"checkpoints['hmdrn']={str(folder)!r}: checkpoint {folder} is a folder; give a checkpoint file: "
        f"{folder / 'best.pt'} is one; checkpoints['frn']='/nowhere/best.pt': does not exist; give a checkpoint file"
    )
    assert not (tmp_path / "out").exists()  # no run folder, no kernel
    assert absolute_path_parameters("06_gradcam", {"checkpoints": {"hmdrn": "train/best.pt"}}, tmp_path) == {
        "checkpoints": {"hmdrn": str(tmp_path / "train" / "best.pt")}
    }


def test_a_parameter_is_given_once_and_one_value_stands_for_a_list_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["02_train", "-p", "epochs", "1", "-p", "epochs", "2"])
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err
        == "fsl-notebook: error: -p epochs is given twice ('1', then '2'); give it once\n"
    )
    asked: dict[str, Any] = {}

    def record(notebook: str, parameters: dict[str, Any], **options: Any) -> Path:
        asked.update(parameters)
        raise ValueError("stop here")

    monkeypatch.setattr(notebooks_module, "run", record)
    assert main(["03_evaluate", "-p", "shots", "1", "-p", "way", "3"]) == 1
    assert asked == {"shots": [1], "way": 3}
    assert main(["06", "-p", "models", "hmdrn"]) == 1  # by number too
    assert asked["models"] == ["hmdrn"]


def test_the_run_folder_is_not_a_parameter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["02_train", "-p", "run_dir", str(tmp_path / "xx"), "--output-root", str(tmp_path / "out")]) == 1
    )
    assert capsys.readouterr().err == (
        "error: run_dir is set by the runner: the run folder is <output root>/02_train/<run name>; choose it with "
        "--output-root and --run-name\n"
    )
    with pytest.raises(
        ValueError, match="run_dir and run_name are set by the runner: .* output_root= and run_name="
    ):
        run("02_train", {"run_dir": "x", "run_name": "y"}, output_root=tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "xx").exists()


def test_a_relative_path_missing_here_but_present_in_the_repository_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ValueError) as error:  # data/splits: a folder every checkout holds
        run("02_train", {"data_root": "data/splits"}, run_name="wrong", output_root=tmp_path / "out")
    assert str(error.value) == (
        f"data_root='{elsewhere / 'data' / 'splits'}': does not exist; a relative path is taken from the folder the "
        f"run is started in ({elsewhere}); for the repository's folder give {REPO_ROOT / 'data' / 'splits'}"
    )
    assert not (tmp_path / "out").exists()


def test_parameters_come_from_a_yaml_file_and_inline_yaml_names_the_file_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "p.yaml"
    settings.write_text("model: hmdrm\nseed: 3\n")
    assert main(["02_train", "-f", str(settings), "--output-root", str(tmp_path / "out")]) == 1
    assert (
        "model='hmdrm' is not known" in capsys.readouterr().err
    )  # read from the file, refused before a kernel
    with pytest.raises(SystemExit) as stop:
        main(["02_train", "-y", str(settings)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"-y expects a YAML mapping written inline, e.g. '{{epochs: 2}}', got '{settings}'; {settings} is a file: "
        f"read it with -f {settings}\n"
    )
    settings.write_bytes(b"\xff\xfe model: x")
    with pytest.raises(SystemExit):
        main(["02_train", "-f", str(settings)])
    assert f"-f {settings}: cannot read it as YAML (" in capsys.readouterr().err
    settings.write_text("- a list\n")
    with pytest.raises(SystemExit):
        main(["02_train", "-f", str(settings)])
    assert "expected a YAML mapping (name: value lines), got ['a list']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@slow
def test_a_failing_cell_leaves_a_readable_message(executions: Executions) -> None:
    error = executions.failure("unreadable-checkpoint")
    assert "notes.pt is a text file, not a checkpoint" in str(error) and error.ename == "ValueError"
    folder = error.run_dir
    assert folder is not None and (folder / "FAILED").is_file() and not (folder / "DONE").exists()
    executed = nbformat.read(next(folder.glob("*.ipynb")), as_version=4)
    shown = [
        o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert shown and "notes.pt is a text file, not a checkpoint" in shown[0]["evalue"]


@slow
def test_a_notebook_run_is_never_rewritten(executions: Executions, notebook_birds: Path) -> None:
    plan = _runs(str(notebook_birds), executions.root)
    finished = executions.get("explorer")
    before = snapshot(finished)
    notebook, parameters, _ = plan["explorer"]
    with pytest.raises(RunFolderConflict, match="holds a notebook run .* a run is never rewritten"):
        run(notebook, parameters, run_name="explorer", output_root=executions.root)
    assert snapshot(finished) == before

    failed = executions.failure("unreadable-checkpoint").run_dir
    assert failed is not None
    before = snapshot(failed)
    notebook, parameters, _ = plan["unreadable-checkpoint"]
    with pytest.raises(RunFolderConflict) as refused:  # the name of a failed run: refused, saying it failed
        run(notebook, parameters, run_name="unreadable-checkpoint", output_root=executions.root)
    reason = (failed / "FAILED").read_text().splitlines()[0]
    assert str(refused.value).startswith(
        f"the run named 'unreadable-checkpoint' failed ({failed / 'FAILED'}: {reason}); "
    )
    assert snapshot(failed) == before
    with pytest.raises(NotebookRunError, match="notes.pt"):  # the re-run fails the same way
        run(
            notebook,
            parameters,
            run_name="unreadable-checkpoint",
            output_root=executions.root,
            overwrite=True,
        )
    (moved,) = failed.glob("replaced-*")
    assert snapshot(moved) == before  # the first attempt, byte for byte
    assert (failed / "FAILED").is_file() and (failed / "run.json").is_file()


@slow
def test_a_run_started_in_another_folder_shows_its_progress_and_nothing_alarming(
    notebook_birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """``fsl-notebook 02_train -p data_root birds`` typed in the folder holding ``birds``: the data root and
    the output root are taken from there; the terminal shows the plan, one line per epoch (the loss of
    metrics.csv) and one per evaluation, and no warning or error of the kernel."""
    monkeypatch.chdir(notebook_birds.parent)
    values = dict(image_size=32, epochs=2, episodes_per_epoch=2, query=4, val_every=1, val_episodes=3)
    values |= dict(val_query=4, test_episodes=4, test_query=4, threads=1)
    arguments = [a for name, value in values.items() for a in ("-p", name, str(value))]
    output_root = os.path.relpath(tmp_path, notebook_birds.parent)
    code = main(
        ["02_train", "-p", "data_root", notebook_birds.name, *arguments, "--output-root", output_root]
        + ["--run-name", "here"]
    )
    out, err = capfd.readouterr()
    assert code == 0, err
    folder = tmp_path / "02_train" / "here"
    assert json.loads((folder / "config.json").read_text())["parameters"]["data_root"] == str(notebook_birds)
    out_json = results(folder)

    assert "02_train: plan: hmdrn on conv4, protocol 'quick' (a short CPU demonstration)" in out
    assert f"02_train:   data: {notebook_birds}, 32 px" in out.splitlines()
    assert "02_train:   device: cpu, 1 CPU thread (as asked)" in out.splitlines()
    metrics = pd.read_csv(folder / "train" / "metrics.csv")
    epochs = [line for line in out.splitlines() if line.startswith("02_train: epoch ")]
    assert len(epochs) == len(metrics) == 2
    for line, row in zip(epochs, metrics.itertuples()):
        assert line.startswith(
            f"02_train: epoch {row.epoch}/2: loss {row.loss:.4f}, train {row.train_acc:.2f} %, "
            f"val {row.val_acc:.2f} ± {row.val_ci95:.2f} %, "
        )
    assert epochs[0].endswith(" left") and not epochs[1].endswith(" left")
    for shot, value in out_json["test"].items():
        assert (
            f"02_train: evaluation of {out_json['model']} 5-way {shot}-shot 4-query, 4 episodes: "
            f"{value['mean']:.2f} ± "
            f"{value['ci95']:.2f} %"
        ) in out
    assert out_json["cpu_threads"] == 1
    assert json.loads((folder / "train" / "config.json").read_text())["cpu_threads"] == 1
    for word in ("IPKernelApp", "WARNING", "ERROR", "Traceback"):
        assert word not in out + err

    # the executed notebook keeps the lines as plain text, without widget bars
    assert f"[fsl_core] epoch 2/2: loss {metrics['loss'].iloc[1]:.4f}" in printed(folder, "02_train")
    executed = nbformat.read(folder / "02_train.ipynb", as_version=4)
    kinds = {key for c in executed.cells for o in c.get("outputs", []) for key in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" not in kinds


@pytest.mark.parametrize(
    ("last_cell", "said"),
    [
        (
            "os.kill(os.getpid(), signal.SIGKILL)",
            "the kernel was killed (SIGKILL), on Linux most often by the system when memory runs out",
        ),
        ("os._exit(3)", "the kernel exited with status 3 (the notebook or a library called exit)"),
    ],
)
def test_a_kernel_that_dies_is_said_how(tmp_path: Path, last_cell: str, said: str) -> None:
    """A real kernel ends mid-run: FAILED says how (a SIGKILL is what the system's out-of-memory killer sends), not
    only papermill's "Kernel died"."""
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(f"import os, signal\n{last_cell}"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(notebook, tmp_path / "dies.ipynb")
    with pytest.raises(NotebookRunError) as error:
        run(tmp_path / "dies.ipynb", {}, run_name="dies", output_root=tmp_path / "out", progress_lines=False)
    folder = tmp_path / "out" / "dies" / "dies"
    assert error.value.ename == "DeadKernelError" and said in error.value.evalue
    assert (
        (folder / "FAILED")
        .read_text()
        .startswith(f"notebook dies could not run to the end in run 'dies': DeadKernelError: {said}")
    )
    assert not (folder / "DONE").exists()
