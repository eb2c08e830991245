"""The summaries every part reports: the mean and 95% confidence interval of per-episode accuracies, and the
Wilson interval of a rate counted over single trials (an image probed, a query pointed at)."""

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


def wilson_interval(percent: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score 95 % interval (low, high), in percent, of a rate of ``percent`` counted over ``n``
    trials taken as independent (E. B. Wilson, "Probable inference, the law of succession, and statistical
    inference", Journal of the American Statistical Association 22, 1927): unlike the normal approximation it
    stays inside 0..100 and keeps a width at 0 % and 100 %."""
    if n < 1:
        raise ValueError(f"a rate needs at least one trial, got n={n}")
    p = percent / 100.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = 100.0 * (centre - half), 100.0 * (centre + half)
    # rounding never leaves the rate itself outside its interval, nor the interval outside 0..100
    return max(0.0, min(low, percent)), min(100.0, max(high, percent))
