"""Grids as text, and the prompts that show a task to a model.

Grid text is one row per line, cells as digits separated by single spaces, no brackets:

    1 0 2
    0 3 0

Why spaces: BPE tokenizers of the Llama-3 family split runs of digits into chunks of up to three ("102" can
be one token), so an unseparated row would be cut into tokens that straddle cells differently from row to
row. Separated by spaces, every cell is its own digit token for Llama-3 and SmolLM2 alike, and a row's cells
line up with its tokens. Newlines end rows, so the shape needs no brackets (the original's numpy-style text
spends two extra tokens per row on them). It is also the layout of the paper's self-edit prompt, so one
format serves both prompts. A 30 x 30 grid takes about 1,800 tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .grids import MAX_SIDE, Grid
from .tasks import Example


def grid_to_text(grid: Grid) -> str:
    return "\n".join(" ".join(map(str, row)) for row in grid)


def text_to_grid(text: str) -> Grid | None:
    """Parse grid text; None if it is not a grid (stray characters, ragged rows, over 30 x 30).

    Extra spaces around cells and blank lines before or after the grid are tolerated; a blank line inside
    it is not."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or len(lines) > MAX_SIDE:
        return None
    rows = []
    for line in lines:
        cells = line.split()
        if not cells or not all(len(c) == 1 and c in "0123456789" for c in cells):
            return None
        rows.append(tuple(int(c) for c in cells))
    if len(rows[0]) > MAX_SIDE or any(len(r) != len(rows[0]) for r in rows):
        return None
    return tuple(rows)


def parse_answer(generated: str) -> Grid | None:
    """The grid at the start of a model's answer: the lines up to the first blank line, as the model may go on
    writing after the grid (another "Input:" block, say)."""
    block = generated.lstrip("\n").split("\n\n", 1)[0]
    return text_to_grid(block)


SYSTEM = ("Find the rule that turns each input grid into its output grid in the examples, then apply it to the "
          "test input and write only the output grid, in the same format.\n"
          "Each grid is written one row per line, as digits 0-9 (colours) separated by spaces.")


@dataclass(frozen=True)
class Prompt:
    """One query in two shapes: `text` for a plain language model (it ends where the answer begins), and
    `system` + `user` for a chat model, whose assistant reply is the answer."""
    text: str
    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


def demonstrations_text(train: Sequence[Example]) -> str:
    """Each pair as an "Input:" and an "Output:" block, followed by a blank line."""
    return "".join(f"Input:\n{grid_to_text(e.input)}\nOutput:\n{grid_to_text(e.output)}\n\n" for e in train)


def task_prompt(train: Sequence[Example], test_input: Grid) -> Prompt:
    """The prompt asking for the output of `test_input` given the demonstrations `train` (possibly none)."""
    user = f"{demonstrations_text(train)}Input:\n{grid_to_text(test_input)}\nOutput:\n"
    return Prompt(text=f"{SYSTEM}\n\n{user}", system=SYSTEM, user=user)


def example_pair_text(train: Sequence[Example], query: Example) -> tuple[Prompt, str]:
    """A training sequence kept in two parts, so the loss can be put on the answer (the output grid) alone."""
    if query.output is None:
        raise ValueError("a training query needs its output grid")
    return task_prompt(train, query.input), grid_to_text(query.output)
