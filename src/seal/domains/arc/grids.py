"""ARC grids: immutable tuples of rows, validated once at the edge so the rest of the code can trust them.

Tuples (not lists or numpy arrays) because grids are compared, hashed and deduplicated everywhere: in the
TTT data builder, in the vote, and when checking an answer.
"""
from __future__ import annotations

from typing import Any

Grid = tuple[tuple[int, ...], ...]

MAX_SIDE = 30  # ARC's limit; augmented tasks with a bigger grid are dropped, as in the original
N_COLOURS = 10


class TaskError(ValueError):
    """A task or grid is malformed. The message says where (file, task, pair) and what is wrong."""


def as_grid(obj: Any, where: str) -> Grid:
    """Validate a list of rows of ints 0-9 (rectangular, 1-30 per side) and freeze it into a Grid.

    `where` names the place for the error message, e.g. "tasks.json: task 0a1b2c3d, train pair 2, output".
    """
    def fail(problem: str) -> TaskError:
        return TaskError(f"{where}: {problem}")

    if not isinstance(obj, (list, tuple)) or not obj:
        raise fail(f"expected a non-empty list of rows, got {_describe(obj)}")
    if len(obj) > MAX_SIDE:
        raise fail(f"{len(obj)} rows, at most {MAX_SIDE} allowed")
    rows = []
    width = None
    for r, row in enumerate(obj):
        if not isinstance(row, (list, tuple)) or not row:
            raise fail(f"row {r}: expected a non-empty list of cells, got {_describe(row)}")
        if width is None:
            width = len(row)
            if width > MAX_SIDE:
                raise fail(f"{width} columns, at most {MAX_SIDE} allowed")
        elif len(row) != width:
            raise fail(f"row {r} has {len(row)} cells, row 0 has {width} (grids must be rectangular)")
        for c, cell in enumerate(row):
            # bool is an int subclass; True/False in a grid file is a mistake, not a colour
            if isinstance(cell, bool) or not isinstance(cell, int) or not 0 <= cell < N_COLOURS:
                raise fail(f"row {r}, column {c}: {cell!r} is not a colour (an integer 0-9)")
        rows.append(tuple(row))
    return tuple(rows)


def shape(grid: Grid) -> tuple[int, int]:
    return len(grid), len(grid[0])


def fits(grid: Grid) -> bool:
    """Whether a grid is within ARC's 30x30 limit (augmentations can make grids bigger)."""
    return len(grid) <= MAX_SIDE and len(grid[0]) <= MAX_SIDE


def _describe(obj: Any) -> str:
    text = repr(obj)
    return f"{type(obj).__name__} {text[:40] + '...' if len(text) > 40 else text}"
