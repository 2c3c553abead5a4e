"""Augmented inference, second half: map each view's answer back, vote, keep two attempts (pass@2).

The original votes in two stages (per view, then across views) and fills gaps with row-wise majority grids;
here a plain count over all mapped-back answers decides, with ties going to the answer seen first, which
keeps the result deterministic for a fixed query order.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from .augment import Transform
from .grids import Grid
from .serialize import parse_answer

ATTEMPTS = 2  # ARC scoring allows two attempts per test input


def vote(predictions: Iterable[tuple[Transform, str | Grid | None]], attempts: int = ATTEMPTS) -> list[Grid]:
    """The `attempts` most frequent answers, after undoing each prediction's view.

    A prediction is the model's text (parsed with `parse_answer`), an already parsed grid, or None (the
    query failed). Unparseable answers, and ones the view cannot map back, are dropped. Returns fewer than
    `attempts` grids (possibly none) when there are fewer distinct answers."""
    counts: dict[Grid, int] = {}
    for view, prediction in predictions:
        grid = parse_answer(prediction) if isinstance(prediction, str) else prediction
        if grid is None:
            continue
        try:
            grid = view.inverse(grid)
        except ValueError:
            continue
        counts[grid] = counts.get(grid, 0) + 1
    # sorted() is stable and dicts keep insertion order: equal counts stay in order of first appearance
    return sorted(counts, key=counts.__getitem__, reverse=True)[:attempts]


def solved(attempts: Sequence[Grid], expected: Grid) -> bool:
    """One test input is solved when its true output is among the (at most two) attempts."""
    return expected in attempts[:ATTEMPTS]


def task_solved(attempts_per_test: Sequence[Sequence[Grid]], expected: Sequence[Grid]) -> bool:
    """A task is solved only when every one of its test outputs is among that test's attempts."""
    if len(attempts_per_test) != len(expected):
        raise ValueError(f"{len(attempts_per_test)} sets of attempts for {len(expected)} test outputs")
    return all(solved(a, e) for a, e in zip(attempts_per_test, expected))


def cell_share(attempts: Sequence[Grid], expected: Grid) -> float:
    """The share of `expected`'s cells that the best attempt gets right; an attempt of another shape scores 0.

    1.0 exactly when `solved`. A graded signal for ReST-EM selection when binary rewards are all zero (a small
    model rarely solves a task outright, but a nearly right grid says more about its self-edit than a copy)."""
    cells = len(expected) * len(expected[0])
    best = 0.0
    for grid in attempts[:ATTEMPTS]:
        if len(grid) == len(expected) and all(len(r) == len(e) for r, e in zip(grid, expected)):
            same = sum(a == b for r, e in zip(grid, expected) for a, b in zip(r, e))
            best = max(best, same / cells)
    return best
