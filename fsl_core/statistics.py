"""The one summary of per-episode accuracies that every part reports: mean and 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def confidence_interval(accuracies: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(mean, 1.96·std/√n) of per-episode accuracies (n,), std with ddof=0 as in the FRN and BiFRN evaluation
    code: the protocol of FRN, BiFRN and HMDRN papers."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no accuracies to summarise")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))
