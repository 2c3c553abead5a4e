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


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties left out): the probability, under no difference,
    of a split at least this uneven. 1.0 with no untied pair. Hand-written because it is four lines of
    math.comb, and scipy would be a dependency for it alone."""
    import math
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(a, b, n_boot: int = 10000, seed: int = 0) -> dict:
    """`a` minus `b`, two score lists over the same contexts in the same order: the mean per-context difference
    with its 95% paired bootstrap interval (whole contexts resampled), the contexts where `a` is higher, lower
    and equal, and the two-sided sign test over the untied ones."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, ci = mean_ci95(d, n_boot, seed)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    return {"difference": mean, "ci95": ci, "n_contexts": int(d.size), "wins": wins, "losses": losses,
            "ties": int(d.size) - wins - losses, "sign_test_p": sign_test(wins, losses),
            "sd": float(d.std(ddof=1)) if d.size > 1 else None}


def contexts_needed(sd: float, delta: float = 0.05, alpha: float = 0.05, power: float = 0.8) -> int:
    """Contexts a paired comparison needs to detect a mean difference `delta` with probability `power` at
    two-sided level `alpha`, when the per-context differences have standard deviation `sd` (normal
    approximation: n = ((z_{1-alpha/2} + z_power) * sd / delta) ** 2, rounded up)."""
    import math
    from statistics import NormalDist
    if not sd > 0:
        return 1
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, math.ceil((z * sd / delta) ** 2))
