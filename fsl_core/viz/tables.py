"""Result tables of the notebooks: accuracies as "mean ± ci" per shot, and the ablation table over seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from fsl_core.engine.evaluate import EvalResult


def results_table(results: Mapping[str, Mapping[int, EvalResult]], label: str = "model") -> pd.DataFrame:
    """A long accuracy table from {name: {shot: EvalResult}} (``evaluate_shots`` per name): one row per name and
    shot, columns ``label`` (the name), "shot", "mean", "ci95" (accuracies in %) and "episodes", as
    ``accuracy_table``, ``summary_lines`` and ``plot_accuracy_bars`` take it."""
    return pd.DataFrame(
        [
            {label: name, "shot": shot, "mean": r.mean, "ci95": r.ci95, "episodes": r.episodes}
            for name, by_shot in results.items()
            for shot, r in by_shot.items()
        ],
        columns=[label, "shot", "mean", "ci95", "episodes"],
    )


def accuracy_table(
    rows: pd.DataFrame, index: str = "model", way: int = 5, order: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per ``index`` value, one column per shot ("5-way 1-shot"), cells "mean ± ci95".

    ``rows``: a long table with columns ``index``, "shot", "mean" and "ci95" (accuracies in %); ``order``:
    the row order (default: first appearance).
    """
    cells = rows.assign(accuracy=[f"{m:.2f} ± {c:.2f}" for m, c in zip(rows["mean"], rows["ci95"])])
    table = cells.pivot(index=index, columns="shot", values="accuracy")
    table = table.reindex([r for r in (order or list(dict.fromkeys(rows[index]))) if r in table.index])
    table = table.add_prefix(f"{way}-way ").add_suffix("-shot")
    table.columns.name = None  # the headers say the shot; a "shot" name above the index reads as a row label
    return table


def ablation_table(runs: pd.DataFrame, shots: Sequence[int], names: Mapping[str, str]) -> pd.DataFrame:
    """Test accuracy per ablation row and shot, averaged over the seeds of the row.

    ``runs``: the table of ``fsl_core.notebooks.sweep`` over notebook 02 with a "row" column ("status",
    "seed", "test.<shot>.mean", "test.<shot>.ci95"); ``names``: {row: display name}. The interval of a mean
    over S seeds is sqrt(Σ ci²)/S (independent runs). Returns columns row, shot, mean, ci95, seeds, model.
    Raises a ValueError naming the errors when no run produced a test accuracy.
    """
    records = []
    for _, run in runs[runs["status"] != "failed"].iterrows():
        for shot in shots:
            mean = run.get(f"test.{shot}.mean")
            if mean is not None and not pd.isna(mean):
                records.append(
                    {
                        "row": run["row"],
                        "shot": shot,
                        "seed": run["seed"],
                        "mean": mean,
                        "ci95": run[f"test.{shot}.ci95"],
                    }
                )
    if not records:
        raise ValueError(f"no ablation run produced a test accuracy; errors: {runs['error'].tolist()}")
    table = (
        pd.DataFrame(records)
        .groupby(["row", "shot"], sort=False)
        .agg(
            mean=("mean", "mean"),
            ci95=("ci95", lambda c: float(np.sqrt((c**2).sum()) / len(c))),
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    table["model"] = [names[r] for r in table["row"]]
    return table


def summary_lines(table: pd.DataFrame, label: str = "model", way: int = 5) -> dict[str, str]:
    """{"<label> <way>-way <shot>-shot": "mean ± ci95 %"} for every row of a long accuracy table."""
    return {
        f"{row[label]} {way}-way {int(row['shot'])}-shot": f"{row['mean']:.2f} ± {row['ci95']:.2f} %"
        for _, row in table.iterrows()
    }
