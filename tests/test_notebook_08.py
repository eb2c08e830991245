"""Notebook 08_your_images executed headless with tiny parameters: a model trained in the run, the example
support and query folders, and predictions.csv equal to what FewShotClassifier gives for that checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest

from fsl_core import FewShotClassifier
from fsl_core.notebook_parameters import declared, parameters_cell
from fsl_core.notebooks import resolve_notebook, run

NOTEBOOK = "08_your_images"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_parameters_cell_is_generated_from_the_declarations() -> None:
    cells = nbformat.read(resolve_notebook(NOTEBOOK), 4).cells
    (source,) = [c.source for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert source == parameters_cell(NOTEBOOK), "run: python -m fsl_core.notebooks --write-parameter-cells"
    inspected = papermill.inspect_notebook(str(resolve_notebook(NOTEBOOK)))
    spec = declared(NOTEBOOK)
    assert list(inspected) == list(spec) and all(inspected[k]["help"] == spec[k].help for k in spec)
    markdown = " ".join(c.source for c in cells if c.cell_type == "markdown")
    assert "Error displaying widget" in markdown and "re-run this cell" in markdown


@pytest.mark.slow
def test_your_images_runs_headless_and_writes_the_classifiers_predictions(
    birds: Path, tmp_path: Path, one_thread: None
) -> None:
    parameters = dict(
        data_root=str(birds),
        image_size=16,
        train_epochs=1,
        train_episodes=1,
        train_query=2,
        way=3,
        shots=2,
        queries=2,
        explain_query=4,
        threads=1,
    )
    folder = run(NOTEBOOK, parameters, run_name="tiny", output_root=tmp_path, progress_lines=False)
    assert (folder / "DONE").is_file()
    executed = nbformat.read(folder / f"{NOTEBOOK}.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)  # the form

    results = json.loads((folder / "results.json").read_text())
    checkpoint = Path(results["checkpoint"])
    assert checkpoint.is_file() and checkpoint.parent == folder / "train"  # trained in the run
    support, queries = folder / "example" / "support", folder / "example" / "queries"
    classes = sorted(p.name for p in support.iterdir())
    assert len(classes) == 3 and all(len(list((support / c).iterdir())) == 2 for c in classes)
    assert results["classes"] == classes and results["strategy"] == "episode" and results["images"] == 6
    assert results["cpu_threads"] == 1  # the threads parameter, as used

    table = pd.read_csv(folder / "predictions.csv")
    assert list(table.columns) == ["file", "predicted", "probability", *classes]
    assert sorted(table["file"]) == sorted(p.name for p in queries.iterdir())
    assert set(table["predicted"]) <= set(classes)
    probabilities = table[classes].to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(table["probability"], probabilities.max(1))
    assert table["predicted"].tolist() == [classes[i] for i in probabilities.argmax(1)]
    right = sum(
        file.startswith(f"{predicted}_") for file, predicted in zip(table["file"], table["predicted"])
    )
    assert results["summary"] == {
        "classified": "6 images, in predictions.csv",
        "example set": f"{right} of 6 right, {100 * right / 6:.1f} % (3 classes, 2 shots)",
    }
    # the numbers are the library's for the checkpoint the notebook trained
    expected = FewShotClassifier.from_checkpoint(checkpoint, device="cpu").fit(support).predict_proba(queries)
    assert table["file"].tolist() == expected.index.tolist()
    np.testing.assert_allclose(probabilities, expected[classes].to_numpy(), atol=1e-6)
    for name in ("support.png", "predictions.png", "explain.png"):
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
