"""The rows of HMDRN's ablation study, and the training grid and summary that notebook 04 builds from them.

The ablation of Ning Luo, Meiyin Hu, Huan Wan, Yanyan Yang, Zhuohang Jiang, Xin Wei, "Hierarchical Mask-Enhanced
Dual Reconstruction Network for Few-Shot Fine-Grained Image Classification", 2025, arXiv:2506.20263, adds the
components one at a time to a single-level reconstruction network: the penultimate feature level, the binary query
mask, then both; FRN, BiFRN and ProtoNet complete the table. Each row is a model name and its options
(``fsl_core.models.check_model_options``), so every row is one ``02_train`` run with other settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd


class AblationRow(NamedTuple):
    """One row of the ablation table: its display name, the model trained and that model's options."""

    name: str
    model: str
    options: Mapping[str, Any]


ABLATION_ROWS: dict[str, AblationRow] = {
    "last": AblationRow("single level, no mask", "hmdrn", {"levels": "last", "mask": False}),
    "last+mid": AblationRow("+ second level", "hmdrn", {"levels": "last+mid", "mask": False}),
    "last+mask": AblationRow("+ mask", "hmdrn", {"levels": "last", "mask": True}),
    "hmdrn": AblationRow("HMDRN (full)", "hmdrn", {}),
    "frn": AblationRow("FRN", "frn", {}),
    "bifrn": AblationRow("BiFRN", "bifrn", {}),
    # ProtoNet keeps its distance scale 1/D fixed: it trains stably at the reconstruction models' lr 0.1
    "protonet": AblationRow("ProtoNet", "protonet", {"learn_scale": False}),
}


def ablation_grid(rows: Sequence[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The ``02_train`` parameter sets of ``rows`` (keys of ``ABLATION_ROWS``), one per row and seed, in that order:
    {"label": "<row>-seed<seed>", "model", "model_options", "seed"}; the label names the run
    (``fsl_core.notebooks.sweep``) and is read back by ``row_of_label``."""
    return [
        {
            "label": f"{row}-seed{seed}",
            "model": ABLATION_ROWS[row].model,
            "model_options": dict(ABLATION_ROWS[row].options),
            "seed": seed,
        }
        for row in rows
        for seed in seeds
    ]


def row_of_label(label: str) -> str:
    """The row key of an ``ablation_grid`` label: ``"last+mid-seed3"`` → ``"last+mid"``."""
    return label.rsplit("-seed", 1)[0]


def ablation_table(runs: pd.DataFrame, shots: Sequence[int]) -> pd.DataFrame:
    """Test accuracy per ablation row and shot, averaged over the seeds of the row.

    ``runs``: the table of ``fsl_core.notebooks.sweep`` over notebook 02 with a "row" column (keys of
    ``ABLATION_ROWS``; "status", "seed", "test.<shot>.mean", "test.<shot>.ci95"). The interval of a mean over S
    seeds is sqrt(Σ ci²)/S (independent runs). Returns one record per row and shot: ``row`` (the key), ``name``
    (its display name), ``model`` (the model trained), ``shot``, ``mean``, ``ci95`` (%) and ``seeds``.
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
        failed = runs[runs["status"] == "failed"]
        errors = "; ".join(f"{run}: {error}" for run, error in zip(failed["run"], failed["error"]))
        raise ValueError(
            f"no ablation run produced a test accuracy at {', '.join(map(str, shots))} shot; "
            + (
                f"{len(failed)} of {len(runs)} runs failed ({errors})"
                if len(failed)
                else "no run failed, and none recorded a test at that shot: ask for the shots the runs were tested at"
            )
        )
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
    table.insert(1, "name", [ABLATION_ROWS[row].name for row in table["row"]])
    table.insert(2, "model", [ABLATION_ROWS[row].model for row in table["row"]])
    return table


def runs_summary(runs: pd.DataFrame, folder: str | Path) -> str:
    """One line on the training runs of a sweep (``fsl_core.notebooks.sweep``'s table, column "status"): how many,
    how many ran now, were reused or failed, and ``folder``, the folder holding them."""
    counts = runs["status"].value_counts()
    words = {"done": "trained now", "reused": "reused", "failed": "failed"}
    parts = [f"{counts[status]} {word}" for status, word in words.items() if counts.get(status)]
    total = len(runs)
    return f"{total} run{'s' * (total != 1)} ({', '.join(parts)}) in {folder}"
