"""A seeded generator of small grid tasks, written for this project so that ARC runs need no data download.

Each family is a simple rule; its parameters (a colour map, an offset) are drawn once per task, so every
demonstration and test pair follows the same rule. Inputs are chosen so the rule is visible: never all
background, all different within a task, and never left unchanged by the rule.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from .augment import FLIP_H, FLIP_V, ROT90, ROT180, TRANSPOSE
from .grids import Grid
from .tasks import ArcTask, Example


@dataclass(frozen=True)
class Difficulty:
    """Grid sides and how many non-background colours the inputs use."""
    min_size: int
    max_size: int
    min_colours: int
    max_colours: int


DIFFICULTIES = {
    "tiny": Difficulty(3, 3, 1, 1),    # 3 x 3 grids, one colour on the background
    "easy": Difficulty(3, 4, 1, 2),    # 2-3 colours counting the background
    "medium": Difficulty(3, 6, 1, 3),
    "hard": Difficulty(5, 10, 2, 5),
}

Rule = Callable[[Grid], Grid]


# --- input makers ----------------------------------------------------------------------------------------------

def _noise(rng: random.Random, h: int, w: int, palette: Sequence[int]) -> Grid:
    """Random cells of the palette on a background, between a fifth and two thirds filled."""
    density = rng.uniform(0.2, 0.67)
    return tuple(tuple(rng.choice(palette) if rng.random() < density else 0 for _ in range(w)) for _ in range(h))


def _shape(rng: random.Random, h: int, w: int, palette: Sequence[int]) -> Grid:
    """A random h x w object whose bounding box is exactly h x w (every row and column has a cell)."""
    while True:
        cells = tuple(tuple(rng.choice(palette) if rng.random() < 0.6 else 0 for _ in range(w)) for _ in range(h))
        if all(any(row) for row in cells) and all(any(col) for col in zip(*cells)):
            return cells


def _place(h: int, w: int, obj: Grid, top: int, left: int) -> Grid:
    rows = [[0] * w for _ in range(h)]
    for i, row in enumerate(obj):
        rows[top + i][left:left + len(row)] = row
    return tuple(map(tuple, rows))


# --- the families: each returns (rule, input maker) for one task -------------------------------------------------

def _gravity(g: Grid) -> Grid:
    """Every coloured cell falls to the bottom of its column, keeping the column's order."""
    cols = []
    for col in zip(*g):
        cells = [c for c in col if c]
        cols.append([0] * (len(col) - len(cells)) + cells)
    return tuple(zip(*cols))


def _crop(g: Grid) -> Grid:
    rows = [i for i, row in enumerate(g) if any(row)]
    cols = [j for j, col in enumerate(zip(*g)) if any(col)]
    return tuple(row[cols[0]:cols[-1] + 1] for row in g[rows[0]:rows[-1] + 1])


def _family(name: str, rng: random.Random, palette: list[int], d: Difficulty) -> tuple[Rule, Callable[[], Grid]]:
    """The rule of one task of family `name`, and a maker of inputs that show it."""
    def size() -> tuple[int, int]:
        return rng.randint(d.min_size, d.max_size), rng.randint(d.min_size, d.max_size)

    def noise() -> Grid:
        return _noise(rng, *size(), palette)

    def framed() -> Grid:
        """A grid holding one object strictly smaller than it, so that cropping changes the grid."""
        h, w = size()
        oh, ow = rng.randint(1, max(1, h - 1)), rng.randint(1, max(1, w - 1))
        return _place(h, w, _shape(rng, oh, ow, palette), rng.randint(0, h - oh), rng.randint(0, w - ow))

    geometric = {"flip_h": FLIP_H, "flip_v": FLIP_V, "rotate90": ROT90, "rotate180": ROT180, "transpose": TRANSPOSE}
    if name in geometric:
        return geometric[name].apply, noise
    if name == "colour_map":
        targets = rng.sample([c for c in range(1, 10) if c not in palette] + palette, len(palette))
        if targets == palette:  # a permutation that changes nothing shows no rule
            targets = targets[1:] + targets[:1] if len(palette) > 1 else [palette[0] % 9 + 1]
        table = dict(zip(palette, targets))
        return (lambda g: tuple(tuple(table.get(c, c) for c in row) for row in g)), noise
    if name == "recolour":
        target = rng.choice([c for c in range(1, 10) if c not in palette[:1]])
        return (lambda g: tuple(tuple(target if c else 0 for c in row) for row in g)), noise
    if name == "gravity":
        return _gravity, noise
    if name == "tile":
        return (lambda g: tuple(row + row for row in g + g)), noise
    if name == "crop":
        return _crop, framed
    if name == "object_move":
        dy, dx = rng.choice([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])

        def move(g: Grid) -> Grid:
            h, w = len(g), len(g[0])
            return tuple(tuple(g[i - dy][j - dx] if 0 <= i - dy < h and 0 <= j - dx < w else 0 for j in range(w))
                         for i in range(h))

        def movable() -> Grid:
            """An object with room to move by (dy, dx) without leaving the grid."""
            h, w = size()
            oh, ow = rng.randint(1, max(1, h - 2)), rng.randint(1, max(1, w - 2))
            top = rng.randint(max(0, -dy), h - oh - max(0, dy))
            left = rng.randint(max(0, -dx), w - ow - max(0, dx))
            return _place(h, w, _shape(rng, oh, ow, palette), top, left)
        return move, movable
    raise ValueError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}")


FAMILIES = ("flip_h", "flip_v", "rotate90", "rotate180", "transpose", "colour_map", "recolour", "gravity",
            "tile", "crop", "object_move")


def generate_task(family: str, seed: int, index: int, n_train: int = 3, n_test: int = 1,
                  difficulty: str | Difficulty = "medium") -> ArcTask:
    """One task of a family, fully determined by (family, seed, index)."""
    d = DIFFICULTIES[difficulty] if isinstance(difficulty, str) else difficulty
    rng = random.Random(f"{family}-{seed}-{index}")  # str seeds are hashed with sha512: stable across runs
    palette = rng.sample(range(1, 10), rng.randint(d.min_colours, d.max_colours))
    rule, make_input = _family(family, rng, palette, d)
    examples: list[Example] = []
    seen: set[Grid] = set()
    shown: set[int] = set()  # colours the demonstrations use; a test input may use no other
    for _ in range(1000 * (n_train + n_test)):
        grid = make_input()
        out = rule(grid)
        colours = {c for row in grid for c in row}
        if grid in seen or out == grid or colours == {0} or (len(examples) >= n_train and colours - shown):
            continue
        seen.add(grid)
        if len(examples) < n_train:
            shown |= colours
        examples.append(Example(grid, out))
        if len(examples) == n_train + n_test:
            return ArcTask(f"gen-{family}-{seed}-{index}", examples[:n_train], examples[n_train:])
    raise ValueError(f"{family}: could not draw {n_train + n_test} distinct inputs at difficulty {d}")


def generate_tasks(n: int, seed: int = 0, families: Sequence[str] | None = None, min_size: int | None = None,
                   max_size: int | None = None, n_train: int = 3, n_test: int = 1,
                   difficulty: str = "medium") -> list[ArcTask]:
    """n tasks cycling through `families` (all by default); ids are "gen-<family>-<seed>-<i>".

    `difficulty` names a preset in DIFFICULTIES; `min_size`/`max_size` override its grid sides."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; known: {', '.join(DIFFICULTIES)}")
    families = list(families or FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {', '.join(FAMILIES)}")
    preset = DIFFICULTIES[difficulty]
    d = Difficulty(min_size or preset.min_size, max_size or preset.max_size, preset.min_colours, preset.max_colours)
    if not 2 <= d.min_size <= d.max_size <= 15:  # 15 keeps tiled outputs within ARC's 30 x 30
        raise ValueError(f"grid sides must satisfy 2 <= min_size <= max_size <= 15, got {d.min_size}..{d.max_size}")
    return [generate_task(families[i % len(families)], seed, i, n_train, n_test, d) for i in range(n)]
