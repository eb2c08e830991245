"""The ablation rows of notebook 04 (``fsl_core.engine.ablation``): each a valid model and options, the training
grid built from them, and the line on the training runs."""

from __future__ import annotations

import pandas as pd
import pytest

from fsl_core.engine.ablation import ABLATION_ROWS, ablation_grid, ablation_table, row_of_label, runs_summary
from fsl_core.models import build_model, check_model_options
from fsl_core.notebook_parameters import declared


def test_every_row_is_a_model_with_valid_options_and_the_notebook_offers_every_row() -> None:
    for row in ABLATION_ROWS.values():
        check_model_options(row.model, row.options)
    rows = declared("04_ablation")["rows"]
    assert rows.default == list(ABLATION_ROWS) and rows.choices == tuple(ABLATION_ROWS)
    # the rows add HMDRN's parts one at a time: levels, then the mask, then both
    built = {key: build_model(row.model, "conv4", **row.options) for key, row in ABLATION_ROWS.items()}
    assert [built[key].levels for key in ("last", "last+mid", "last+mask", "hmdrn")] == [
        ("last",),
        ("last", "mid"),
        ("last",),
        ("last", "mid"),
    ]
    assert [built[key].mask for key in ("last", "last+mid", "last+mask", "hmdrn")] == [
        False,
        False,
        True,
        True,
    ]


def test_the_grid_has_one_run_per_row_and_seed_and_its_labels_give_the_rows_back() -> None:
    grid = ablation_grid(["last+mid", "protonet"], [0, 3])
    assert grid == [
        {
            "label": "last+mid-seed0",
            "model": "hmdrn",
            "model_options": {"levels": "last+mid", "mask": False},
            "seed": 0,
        },
        {
            "label": "last+mid-seed3",
            "model": "hmdrn",
            "model_options": {"levels": "last+mid", "mask": False},
            "seed": 3,
        },
        {"label": "protonet-seed0", "model": "protonet", "model_options": {"learn_scale": False}, "seed": 0},
        {"label": "protonet-seed3", "model": "protonet", "model_options": {"learn_scale": False}, "seed": 3},
    ]
    assert [row_of_label(run["label"]) for run in grid] == ["last+mid", "last+mid", "protonet", "protonet"]
    grid[0]["model_options"]["mask"] = True  # a grid's options are its own
    assert ABLATION_ROWS["last+mid"].options == {"levels": "last+mid", "mask": False}


def test_the_runs_line_counts_each_status() -> None:
    runs = pd.DataFrame({"status": ["done", "reused", "failed", "done"]})
    assert runs_summary(runs, "out/02_train") == "4 runs (2 trained now, 1 reused, 1 failed) in out/02_train"
    assert runs_summary(runs.iloc[1:2], "x") == "1 run (1 reused) in x"


def test_the_table_averages_each_row_over_its_seeds_and_names_the_row_and_the_model_trained() -> None:
    runs = pd.DataFrame(
        {
            "row": ["last+mid", "last+mid", "protonet", "frn"],
            "seed": [0, 1, 0, 0],
            "status": ["done", "reused", "done", "failed"],
            "test.1.mean": [40.0, 50.0, 30.0, None],
            "test.1.ci95": [3.0, 4.0, 2.0, None],
            "run": ["a", "b", "c", "d"],
            "error": [None, None, None, "boom"],
        }
    )
    table = ablation_table(runs, [1])
    assert table.to_dict("records") == [
        {
            "row": "last+mid",
            "name": "+ second level",
            "model": "hmdrn",
            "shot": 1,
            "mean": 45.0,
            "ci95": 2.5,
            "seeds": 2,
        },
        {
            "row": "protonet",
            "name": "ProtoNet",
            "model": "protonet",
            "shot": 1,
            "mean": 30.0,
            "ci95": 2.0,
            "seeds": 1,
        },
    ]
    with pytest.raises(
        ValueError,
        match=r"^no ablation run produced a test accuracy at 5 shot; 1 of 4 runs failed \(d: boom\)$",
    ):
        ablation_table(runs, [5])
    untested = runs[runs["status"] != "failed"].assign(**{"test.1.mean": None})  # trained, never tested
    with pytest.raises(
        ValueError,
        match=r"^no ablation run produced a test accuracy at 1 shot; no run failed, and none recorded a test at that shot: ask for the shots the runs were tested at$",
    ):
        ablation_table(untested, [1])


def test_the_notebook_s_table_names_each_row_as_the_library_does() -> None:
    import json
    from pathlib import Path

    notebook = json.loads(
        (Path(__file__).resolve().parents[1] / "notebooks" / "04_ablation.ipynb").read_text()
    )
    story = "".join(notebook["cells"][0]["source"])
    for key in ("last", "last+mid", "last+mask", "hmdrn"):
        assert f"| `{key}` | {ABLATION_ROWS[key].name} |" in story, key
    baselines = ", ".join(ABLATION_ROWS[key].name for key in ("frn", "bifrn", "protonet"))
    assert f"| `frn`, `bifrn`, `protonet` | {baselines} |" in story
