"""The notebooks' parameters, declared once in ``fsl_core.notebook_parameters``: checks, messages, cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsl_core.engine.config import setting_help
from fsl_core.notebook_parameters import (
    NOTEBOOKS,
    REPO_ROOT,
    ParameterError,
    check,
    check_values,
    declared,
    parameters_cell,
)
from fsl_core.notebooks import list_notebooks, main, notebooks_dir

NOTEBOOK_FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
CODE_LINE_BUDGET = 700


def test_every_notebook_declares_its_parameters() -> None:
    assert sorted(NOTEBOOKS) == list_notebooks()


@pytest.mark.parametrize(
    "notebook, values, message",
    [
        ("00_quickstart", {"shot": 0}, "shot=0: expected a positive integer"),
        ("00_quickstart", {"shots": 5}, "00_quickstart has no parameter 'shots' (did you mean 'shot'?)"),
        (
            "00_quickstart",
            {"models": ["hmdrn", "protonett"]},
            "models='protonett' is not known; expected one of",
        ),
        ("00_quickstart", {"image_size": 8}, "image_size=8: expected an integer of at least 16"),
        ("00_quickstart", {"lr": 0}, "lr=0: expected a number > 0"),
        ("00_quickstart", {"model_options": {"hmdrn": 3}}, "['hmdrn'] are not dicts"),
        (
            "00_quickstart",
            {"model_options": {"protonet": {"learn_scale": "false"}}},
            "model_options: model 'protonet': option learn_scale='false' (str), expected True or False",
        ),
        (
            "02_train",
            {"model": "frn", "model_options": {"maks": False}},
            "model_options: unknown option(s) ['maks'] for model 'frn': 'maks' (did you mean 'mask'?)",
        ),
        (
            "05_masks_and_reconstructions",
            {"model_options": {"mask": "Flase"}},
            "model_options: model 'hmdrn': option mask='Flase' (str), expected True or False",
        ),
        (
            "01_data_explorer",
            {"split": "tset"},
            "split='tset' is not known; expected one of ['train', 'val', 'test'] (did you mean 'test'?)",
        ),
        ("02_train", {"way": 1}, "way=1: expected an integer of at least 2, or None"),
        (
            "02_train",
            {"train_settings": {"lr": 0.2}, "lr": 0.1},
            "train_settings sets ['lr'], which are parameters",
        ),
        ("03_evaluate", {}, "checkpoint is required: pass the path"),
        (
            "03_evaluate",
            {"checkpoint": "a.pt", "shots": []},
            "shots=[]: expected a non-empty list of positive integers",
        ),
        ("06_gradcam", {"models": ["hmdrn"], "checkpoints": {"frn": "x.pt"}}, "checkpoints names ['frn']"),
        ("07_gsfl", {"dropout": 1.0}, "dropout=1.0: expected a number >= 0 and < 1"),
        ("07_gsfl", {"mean_reduction": "yes"}, "mean_reduction='yes': expected True or False"),
    ],
)
def test_wrong_values_are_named_with_what_was_expected(notebook: str, values: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        check_values(notebook, values)
    assert message in str(error.value)


def test_every_wrong_parameter_is_named_at_once() -> None:
    with pytest.raises(ValueError) as error:
        check_values("04_ablation", {"epochs": -1, "seeds": [0, -2], "rows": ["hmdrn", "lats"]})
    text = str(error.value)
    assert "epochs=-1" in text and "seeds=[0, -2]" in text and "'lats' is not known" in text
    assert "(did you mean 'last'?)" in text


@pytest.mark.usefixtures("paths_not_checked")
def test_a_reported_interval_needs_two_episodes() -> None:
    for notebook, name in (
        ("00_quickstart", "eval_episodes"),
        ("03_evaluate", "episodes"),
        ("04_ablation", "test_episodes"),
        ("07_gsfl", "few_shot_episodes"),
    ):
        with pytest.raises(ValueError, match=f"{name}=1: expected an integer of at least 2"):
            check_values(
                notebook, {name: 1, "checkpoint": "best.pt"} if notebook == "03_evaluate" else {name: 1}
            )
    with pytest.raises(ValueError, match="test_episodes=1: one episode gives no confidence interval; use 0"):
        check_values("02_train", {"test_episodes": 1})
    assert check_values("02_train", {"test_episodes": 0}).test_episodes == 0
    assert check_values("02_train", {"test_episodes": 2}).test_episodes == 2


@pytest.mark.usefixtures("paths_not_checked")
def test_check_reads_a_notebook_namespace_and_returns_the_values() -> None:
    namespace = {name: spec.default for name, spec in declared("02_train").items()}
    namespace.update(way=7, unrelated_global=object())
    settings = check("02_train", namespace)
    assert settings.way == 7 and settings.model == "hmdrn" and settings.test_shots == [1, 5]


@pytest.mark.usefixtures("paths_not_checked")
def test_a_stray_name_in_the_parameters_cell_is_refused_and_shown_without_a_traceback() -> None:
    cell = parameters_cell("02_train").replace("epochs = None", "epoch = 2")  # a misspelt parameter
    namespace: dict = {"In": ["", cell, 'check("02_train", globals())']}
    exec(cell, namespace)
    with pytest.raises(ParameterError) as error:
        check("02_train", namespace)
    problem = (
        "02_train has no parameter 'epoch': set in the parameters cell as last run, it would have no effect (did "
        "you mean 'epochs'?); its parameters: "
    )
    assert str(error.value).startswith(problem) and len(error.value.problems) == 1
    assert error.value._render_traceback_() == [
        "ParameterError: 02_train's parameters:",
        f"  - {error.value.problems[0]}",
    ]
    namespace["In"].append("table = 3; plan = 4")  # a later cell's names are not the parameters cell's
    namespace |= {"table": 3, "plan": 4}
    with pytest.raises(ParameterError) as again:
        check("02_train", namespace)
    assert again.value.problems == error.value.problems
    namespace["In"] = ["", parameters_cell("02_train")]  # the cell as committed: no stray name
    assert check("02_train", namespace).model == "hmdrn"
    helper = 'run = "outputs/x"\ntrain_dir = f"{run}/train"\nseed = 1\nway = 5\n'  # a helper has its effect
    namespace["In"].append(helper)
    exec(helper, namespace)
    assert check("02_train", namespace).train_dir == "outputs/x/train"
    namespace["In"].append(
        "epoch = 3\nseed = 2\nway = 5\nshot = 1\n"
    )  # the latest parameters cell is the one
    exec(namespace["In"][-1], namespace)
    with pytest.raises(ParameterError, match="no parameter 'epoch'"):
        check("02_train", namespace)
    namespace["In"].append("seed = 2\nway, shott = 5, 1\nquery: int = 10\nlrr: float = 0.1\n")  # other forms
    exec(namespace["In"][-1], namespace)
    with pytest.raises(ParameterError) as forms:
        check("02_train", namespace)
    assert [p.split(":")[0] for p in forms.value.problems] == [
        "02_train has no parameter 'lrr'",
        "02_train has no parameter 'shott'",
    ]


def test_training_parameters_take_their_help_from_the_training_settings() -> None:
    spec = declared("02_train")
    for name in ("way", "shot", "query", "epochs", "episodes_per_epoch", "lr", "val_every", "val_episodes"):
        assert spec[name].help.startswith(setting_help(name)), name


def test_parameters_cell_is_python_that_gives_the_defaults() -> None:
    for name in NOTEBOOKS:
        namespace: dict = {}
        exec(parameters_cell(name), namespace)  # noqa: S102 -- our own generated source
        assert {k: namespace[k] for k in declared(name)} == {k: p.default for k, p in declared(name).items()}


def test_help_notebook_lists_types_and_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["02_train", "--help-notebook"]) == 0
    out = capsys.readouterr().out
    assert "way = None  (an integer of at least 2, or None" in out
    assert setting_help("way") in out
    assert main(["02_trian", "--help-notebook"]) == 1
    captured = capsys.readouterr()
    assert (
        captured.out == ""
        and "notebook '02_trian' is not a notebook (did you mean '02_train'?)" in captured.err
    )
    assert main(["nowhere/mine.ipynb", "--help-notebook"]) == 1
    assert (
        "notebook 'nowhere/mine.ipynb' does not exist; give the path of an .ipynb file"
        in capsys.readouterr().err
    )


def test_notebooks_hold_no_validation_and_little_code() -> None:
    lines = {}
    for path in sorted(notebooks_dir().glob("[0-9]*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = [
            line
            for cell in cells
            if cell["cell_type"] == "code" and "parameters" not in cell["metadata"].get("tags", [])
            for line in "".join(cell["source"]).splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        assert not [line for line in code if line.lstrip().startswith("raise ")], path.name
        lines[path.stem] = len(code)
    assert sum(lines.values()) <= CODE_LINE_BUDGET, lines


def test_a_missing_checkpoint_typed_in_the_notebook_is_one_line_naming_it(tmp_path: Path) -> None:
    """In JupyterLab, check() refuses it as the runner does, with no traceback, its path taken from the repository."""
    typed = {"checkpoint": "outputs/00_quickstart/train/hmdrn/best.pt", "data_root": str(tmp_path)}
    with pytest.raises(ParameterError) as error:
        check_values("05_masks_and_reconstructions", typed)
    assert error.value._render_traceback_() == [
        "ParameterError: 05_masks_and_reconstructions's parameters:",
        "  - checkpoint='outputs/00_quickstart/train/hmdrn/best.pt': does not exist "
        f"({REPO_ROOT / 'outputs/00_quickstart/train/hmdrn/best.pt'}); give a checkpoint file: best.pt or last.pt "
        "of a training run (e.g. outputs/02_train/<run>/train/best.pt, where <run> is interactive for a notebook "
        "run in JupyterLab), or a save_model file",
    ]


def test_an_optional_path_says_which_empty_value_it_takes() -> None:
    assert (
        declared("08_your_images")["support_dir"].expected().endswith(', or "" (an example from data_root)')
    )
    assert (
        declared("03_evaluate")["data_root"]
        .expected()
        .endswith(", or None (the data set the checkpoint's run trained on)")
    )
    assert (
        declared("08_your_images")["checkpoint"]
        .expected()
        .endswith(", or None (a model is trained briefly here)")
    )


def test_episodes_the_data_set_cannot_give_are_refused_before_a_kernel_starts(
    tiny_birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny set: 3 classes of 6 images in each split."""
    birds = str(tiny_birds)
    cases = {
        (
            "05_masks_and_reconstructions",
            "way",
            4,
            3,
        ): f"way=4: {birds}/test has only 3 classes; use way <= 3",
        ("06_gradcam", "pointing_query", 6, 5): (
            f"shot 1 + pointing_query 6 = 7 images per class, but all 3 classes of {birds}/test have fewer (6 "
            "each); lower shot or pointing_query so that shot + pointing_query <= 6"
        ),
        ("08_your_images", "shots", 5, 4): (
            f"the example set: shots 5 + queries 2 = 7 images per class, but all the 3 classes drawn from {birds}/test "
            "with seed 0 have fewer (6 each); lower shots or queries so that shots + queries <= 6, or change seed"
        ),
        ("07_gsfl", "hmdrn_way", 4, 3): f"hmdrn_way=4: {birds}/train has only 3 classes; use hmdrn_way <= 3",
    }
    checkpoint = tmp_path / "x.pt"
    checkpoint.write_bytes(b"")  # a checkpoint given: no brief training, whose episodes would be checked too
    fits = {
        "way": 3,
        "checkpoint": str(checkpoint),
        "checkpoints": {m: str(checkpoint) for m in ("protonet", "frn", "bifrn", "hmdrn")},
    }
    for (notebook, name, value, fitting), message in cases.items():
        small = {"shots": [1], "query": 2, "hmdrn_shot": 1, "hmdrn_query": 2} if notebook == "07_gsfl" else {}
        values = {"data_root": birds, **{k: v for k, v in fits.items() if k in declared(notebook)}, **small}
        values[name] = value
        with pytest.raises(ParameterError) as error:
            check_values(notebook, values)
        assert message in str(error.value), notebook
        check_values(notebook, {**values, name: fitting})  # one less fits
    # a fixed number the notebook draws is named as such, and the parameter that can make room for it
    with pytest.raises(ParameterError, match=(
        r"the brief training's shot 5 \+ train_query 8 = 13 images per class, but all 3 classes of .*/train "
        r"have fewer \(6 each\); lower train_query to at most 1;"
    )):  # fmt: skip
        check_values("05_masks_and_reconstructions", {"data_root": birds, "way": 3})
    # the runner: a relative path is taken from where it is started, and nothing runs
    monkeypatch.chdir(tiny_birds.parent)
    started = []
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: started.append(a))
    argv = ["05", "-p", "data_root", tiny_birds.name, "-p", "checkpoint", str(tmp_path / "x.pt")]
    (tmp_path / "x.pt").write_bytes(b"")
    assert main([*argv, "-p", "way", "5", "--output-root", str(tmp_path / "out")]) == 1
    assert f"way=5: {birds}/test has only 3 classes; use way <= 3" in capsys.readouterr().err
    assert not started and not (tmp_path / "out").exists()


def test_each_notebook_s_episodes_are_checked_only_where_it_draws_them(
    tiny_folder: Path, tmp_path: Path
) -> None:
    """A folder set without part maps: 4 classes per split with 5, 6, 7 and 8 images."""
    root = str(tiny_folder)
    checkpoint = tmp_path / "x.pt"
    checkpoint.write_bytes(b"")  # only its name is looked at

    def problems(notebook: str, **values: object) -> str:
        try:
            check_values(notebook, {"data_root": root, **values})
        except ParameterError as error:
            return str(error)
        return ""

    # 02: its training and validation episodes (the quick protocol's numbers, named by what sets them), and its
    # test episodes after training only when there is a test
    assert problems("02_train", way=5) == (
        f"way=5: {root}/train has only 4 classes; use way <= 4; shot 5 + query 10 = 15 images per class, but all 4 "
        f"classes of {root}/train have fewer: class_0 (5), class_1 (6), class_2 (7), class_3 (8); lower shot "
        f"or query so that shot + query <= 5; train_settings val_way=5: {root}/val has only 4 classes; use train_settings val_way <= 4; "
        f"train_settings val_shot 5 + val_query 16 = 21 images per class, but all 4 classes of {root}/val "
        "have fewer: class_0 (5), class_1 (6), class_2 (7), class_3 (8); lower train_settings val_shot or val_query "
        "so that train_settings val_shot + val_query <= 5"
    )
    small = dict(way=4, shot=1, query=3, val_every=0)  # training episodes that fit
    assert problems("02_train", **small, test_episodes=10, test_shots=[1], test_query=5) == (
        f"the test's way=5: {root}/test has only 4 classes; it needs a data set with at least 5 classes "
        f"there; test_shots 1 + test_query 5 = 6 images per class, but 1 of the 4 classes of {root}/test has "
        "fewer: class_0 (5); lower test_shots or test_query so that test_shots + test_query <= 5"
    )
    assert problems("02_train", **small, test_episodes=0, test_query=5) == ""
    # 04: validation only when it validates
    settings = dict(way=4, shot=1, query=3, test_shots=[1], test_query=4)
    assert f"the validation's way=5: {root}/val has only 4 classes" in problems(
        "04_ablation", **settings, val_every=2
    )
    assert "/val" not in problems("04_ablation", **settings, val_every=0)
    # 06 on a set without part maps: no pointing game, only the figure's 2 queries per class
    models = {"checkpoints": {m: str(checkpoint) for m in ("protonet", "frn", "bifrn", "hmdrn")}}
    assert problems("06_gradcam", **models, way=4, shot=3, pointing_query=40) == ""
    assert problems("06_gradcam", **models, way=4, shot=4, pointing_query=1) == (
        f"shot 4 + the Grad-CAM figure's query 2 = 6 images per class, but 1 of the 4 classes of {root}/test has "
        "fewer: class_0 (5); lower shot to at most 3"
    )
    # 08: the example classes only when a folder is left empty, and only the classes it draws
    mine = {"checkpoint": str(checkpoint), "support_dir": root, "query_dir": root}
    assert problems("08_your_images", **mine, way=9) == ""
    assert problems("08_your_images", **{**mine, "query_dir": ""}, way=9) == (
        f"the example set: way=9: {root}/test has only 4 classes; use way <= 4"
    )
    # 03 without a data set of its own reads the checkpoint's: nothing to check before the kernel
    assert problems("03_evaluate", checkpoint=str(checkpoint), data_root=None, way=9) == ""
    # a data set that is not there yet (01 generates the birds set there) is not read; one that must exist is named
    assert check_values("01_data_explorer", {"data_root": str(tiny_folder / "new"), "way": 9})
    assert problems("05_masks_and_reconstructions", data_root=str(tiny_folder / "new"), way=9).startswith(
        f"data_root='{tiny_folder / 'new'}': does not exist; fsl-birds FOLDER generates the embedded birds set there"
    )


def test_the_cam_target_choices_are_the_grad_cam_targets_of_the_library() -> None:
    """Declared by name (the parameters module does not load matplotlib), kept equal to ``CAM_TARGETS``."""
    from fsl_core.viz.gradcam import CAM_TARGETS

    assert declared("06_gradcam")["cam_target"].choices == tuple(CAM_TARGETS)
