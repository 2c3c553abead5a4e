"""Invertible grid transforms: the views used for training-data augmentation and for augmented inference.

A prediction made on a transformed task is mapped back with `inverse`, so every transform here has one.
The eight symmetries of the square and colour permutations are bijections on all grids. The size-changing
transforms (upscale, stretch, tile, reflect) are only injective: `inverse` recovers the grid from an exact
image and raises ValueError on anything else (a model's guess need not be one), so they serve as training
augmentations, and inference uses the symmetries.

Rotations follow numpy.rot90: rot90 turns counter-clockwise. flip_v turns the grid upside down (numpy
flipud, the original's Flip0); flip_h mirrors it left-right (fliplr, Flip1).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .grids import Grid
from .tasks import ArcTask, Example

GridFn = Callable[[Grid], Grid]


@dataclass(frozen=True)
class Transform:
    """A named grid map with its inverse. Two transforms are equal when their names are, so a name must
    spell out every parameter (e.g. "roll(1,2)")."""
    name: str
    forward: GridFn = field(repr=False, compare=False)
    backward: GridFn = field(repr=False, compare=False)

    def apply(self, grid: Grid) -> Grid:
        return self.forward(grid)

    def inverse(self, grid: Grid) -> Grid:
        return self.backward(grid)

    def then(self, other: Transform) -> Transform:
        """This transform followed by `other` (inverted in the opposite order)."""
        return Transform(f"{self.name}>{other.name}", lambda g: other.forward(self.forward(g)),
                         lambda g: self.backward(other.backward(g)))


# --- the symmetries of the square ---------------------------------------------------------------------------

def _rot90(g: Grid) -> Grid:
    return tuple(zip(*g))[::-1]


def _rot180(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g[::-1])


def _rot270(g: Grid) -> Grid:
    return tuple(zip(*g[::-1]))


def _flip_v(g: Grid) -> Grid:
    return g[::-1]


def _flip_h(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g)


def _transpose(g: Grid) -> Grid:
    return tuple(zip(*g))


def _anti_transpose(g: Grid) -> Grid:
    return _rot180(_transpose(g))


IDENTITY = Transform("identity", lambda g: g, lambda g: g)
ROT90 = Transform("rot90", _rot90, _rot270)
ROT180 = Transform("rot180", _rot180, _rot180)
ROT270 = Transform("rot270", _rot270, _rot90)
FLIP_H = Transform("flip_h", _flip_h, _flip_h)
FLIP_V = Transform("flip_v", _flip_v, _flip_v)
TRANSPOSE = Transform("transpose", _transpose, _transpose)
ANTI_TRANSPOSE = Transform("anti_transpose", _anti_transpose, _anti_transpose)

GEOMETRIC = {t.name: t for t in (IDENTITY, ROT90, ROT180, ROT270, FLIP_H, FLIP_V, TRANSPOSE, ANTI_TRANSPOSE)}
# The original's inference views (besides the identity): Transpose, Flip0, Flip1, Rotate90, Rotate180.
INFERENCE_VIEWS = (TRANSPOSE, FLIP_V, FLIP_H, ROT90, ROT180)


# --- size-changing transforms (injective; inverse only on exact images) ------------------------------------

def _exact(name: str, forward: GridFn, guess: Callable[[Grid], Grid | None]) -> Transform:
    """A transform whose inverse guesses the preimage and checks that it maps back onto the grid."""
    def backward(g: Grid) -> Grid:
        pre = guess(g)
        if pre is None or not pre or not pre[0] or forward(pre) != g:
            raise ValueError(f"a {len(g)}x{len(g[0])} grid is not an output of {name}")
        return pre
    return Transform(name, forward, backward)


def _every(g: Grid, fy: int, fx: int) -> Grid | None:
    if len(g) % fy or len(g[0]) % fx:
        return None
    return tuple(row[::fx] for row in g[::fy])


def _block(g: Grid, ny: int, nx: int) -> Grid | None:
    if len(g) % ny or len(g[0]) % nx:
        return None
    return tuple(row[:len(row) // nx] for row in g[:len(g) // ny])


def stretch(fy: int, fx: int) -> Transform:
    """Repeat every row fy times and every column fx times (fy = fx: each cell becomes an f x f block)."""
    name = f"upscale{fy}" if fy == fx else f"stretch({fy},{fx})"
    return _exact(name, lambda g: tuple(tuple(c for c in row for _ in range(fx)) for row in g for _ in range(fy)),
                  lambda g: _every(g, fy, fx))


def tile(ny: int, nx: int) -> Transform:
    """Tile the whole grid ny times vertically and nx times horizontally."""
    return _exact(f"tile({ny},{nx})", lambda g: tuple(row * nx for _ in range(ny) for row in g),
                  lambda g: _block(g, ny, nx))


def reflect(axis: int, mirror_first: bool) -> Transform:
    """Join the grid with its mirror image along an axis (0: stacked vertically, 1: side by side)."""
    if axis == 0:
        def forward(g: Grid) -> Grid:
            return g[::-1] + g if mirror_first else g + g[::-1]
    else:
        def forward(g: Grid) -> Grid:
            return tuple(row[::-1] + row if mirror_first else row + row[::-1] for row in g)

    def guess(g: Grid) -> Grid | None:
        half = _block(g, 2, 1) if axis == 0 else _block(g, 1, 2)
        if half is None or not mirror_first:
            return half
        return _flip_v(half) if axis == 0 else _flip_h(half)
    return _exact(f"reflect({axis},{'mirror_first' if mirror_first else 'grid_first'})", forward, guess)


def roll(dy: int, dx: int) -> Transform:
    """Cyclic shift by dy rows down and dx columns right (modulo each grid's own size)."""
    def shift(g: Grid, sy: int, sx: int) -> Grid:
        h, w = len(g), len(g[0])
        return tuple(tuple(g[(i - sy) % h][(j - sx) % w] for j in range(w)) for i in range(h))
    return Transform(f"roll({dy},{dx})", lambda g: shift(g, dy, dx), lambda g: shift(g, -dy, -dx))


# --- colours -------------------------------------------------------------------------------------------------

def colour_permutation(mapping: tuple[int, ...]) -> Transform:
    """Recolour cell c as mapping[c]; `mapping` is a permutation of 0..9."""
    if sorted(mapping) != list(range(10)):
        raise ValueError(f"{mapping} is not a permutation of the colours 0-9")
    inverse = tuple(mapping.index(c) for c in range(10))
    return Transform("colours:" + "".join(map(str, mapping)),
                     lambda g: tuple(tuple(mapping[c] for c in row) for row in g),
                     lambda g: tuple(tuple(inverse[c] for c in row) for row in g))


def random_colour_permutation(rng: random.Random, moved: Iterable[int] = ()) -> Transform:
    """A random permutation of colours 1-9 that sends every colour in `moved` elsewhere, so that a recoloured
    task really differs from its source. 0 stays fixed because ARC uses it as the background."""
    moved = set(moved) - {0}
    while True:  # rejection sampling: a derangement of the moved colours comes up at least 1/e of the time
        mapping = (0, *rng.sample(range(1, 10), 9))
        if all(mapping[c] != c for c in moved):
            return colour_permutation(mapping)


# --- the self-edit's augmentation groups ---------------------------------------------------------------------

GROUPS = ("basic", "size", "chain", "repeat")


def augmenters(groups: Iterable[str], seed: int = 0) -> list[Transform]:
    """The transforms switched on by the self-edit's flags, in the original's order (11 + 3 + 6 + 3).

    basic: the rotations and flips, the four mirror-joins, a cyclic shift and the transpose; size: upscale x2,
    double height, double width; chain: each rotation/flip/transpose followed by upscale x2; repeat: tiling
    twice vertically, horizontally, and both. The shift's offset (1-3 cells per axis, never zero) is drawn
    from `seed`, one offset for every grid, so a shifted task keeps a consistent rule."""
    groups = set(groups)
    unknown = groups - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown augmentation groups {sorted(unknown)}; known: {', '.join(GROUPS)}")
    rng = random.Random(seed)
    up2 = stretch(2, 2)
    table = {
        "basic": [ROT90, ROT270, ROT180, FLIP_V, FLIP_H, reflect(0, True), reflect(1, True), reflect(0, False),
                  reflect(1, False), roll(rng.randint(1, 3), rng.randint(1, 3)), TRANSPOSE],
        "size": [up2, stretch(2, 1), stretch(1, 2)],
        "chain": [t.then(up2) for t in (ROT90, ROT270, ROT180, FLIP_V, FLIP_H, TRANSPOSE)],
        "repeat": [tile(2, 1), tile(1, 2), tile(2, 2)],
    }
    return [t for name in GROUPS if name in groups for t in table[name]]


# --- whole tasks ---------------------------------------------------------------------------------------------

def transform_example(example: Example, fn: GridFn) -> Example:
    return Example(fn(example.input), None if example.output is None else fn(example.output))


def transform_task(task: ArcTask, fn: GridFn) -> ArcTask:
    """Apply one grid map to every grid of a task (demonstration and test inputs and outputs alike)."""
    return ArcTask(task.id, [transform_example(e, fn) for e in task.train],
                   [transform_example(e, fn) for e in task.test], parent=task.parent)
