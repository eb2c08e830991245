"""Result tables of the notebooks: accuracies as "mean ± ci" per shot, and their summary lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

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


def summary_lines(table: pd.DataFrame, label: str = "model", way: int = 5) -> dict[str, str]:
    """{"<label> <way>-way <shot>-shot": "mean ± ci95 %"} for every row of a long accuracy table."""
    return {
        f"{row[label]} {way}-way {int(row['shot'])}-shot": f"{row['mean']:.2f} ± {row['ci95']:.2f} %"
        for _, row in table.iterrows()
    }
