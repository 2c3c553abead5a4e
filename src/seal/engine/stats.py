"""Summary statistics for per-context scores."""
from __future__ import annotations

import numpy as np


def mean_ci95(values, n_boot: int = 10000, seed: int = 0) -> tuple[float, list[float]]:
    """Mean and a 95% percentile-bootstrap interval over contexts (resampling whole contexts)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    if x.size == 1:
        return float(x[0]), [float(x[0]), float(x[0])]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(x.mean()), [float(lo), float(hi)]
