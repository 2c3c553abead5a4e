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


def variance_components(grid) -> dict:
    """Method-of-moments sds of a balanced [context, self-edit, seed] grid of rewards (a nested random-effects
    model): between contexts, between the self-edits of one context, between the inner-loop seeds of one
    self-edit. With one seed per self-edit the seed noise cannot be told apart and is left inside the self-edits'
    spread (`between_seeds` is None)."""
    g = np.asarray(grid, dtype=float)
    n_c, k, reps = g.shape
    s2_seed = float(g.var(axis=2, ddof=1).mean()) if reps > 1 else None
    edit_means = g.mean(axis=2)
    s2_means = float(edit_means.var(axis=1, ddof=1).mean())
    # a context's self-edit means spread by its self-edits plus their seed noise / reps; the rest is the self-edits'
    s2_edit = max(0.0, s2_means - (s2_seed or 0.0) / reps)
    s2_ctx = max(0.0, float(edit_means.mean(axis=1).var(ddof=1)) - s2_means / k) if n_c > 1 else 0.0
    return {"contexts": n_c, "self_edits": k, "seeds": reps, "between_contexts": float(np.sqrt(s2_ctx)),
            "between_self_edits": float(np.sqrt(s2_edit if s2_seed is not None else s2_means)),
            "between_seeds": None if s2_seed is None else float(np.sqrt(s2_seed))}


def null_difference_sd(components: dict, k: int, seeds: int) -> float:
    """The sd of the per-context difference between two equally good policies compared on the same contexts, each
    scored with k self-edits x `seeds` inner-loop seeds: sqrt(2 (s_edit^2 / k + s_seed^2 / (k seeds)))."""
    s_edit, s_seed = components["between_self_edits"], components["between_seeds"] or 0.0
    return float(np.sqrt(2 * (s_edit ** 2 / k + s_seed ** 2 / (k * seeds))))
