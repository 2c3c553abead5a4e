"""Grid text round-trips exactly and malformed text is refused; prompts keep the answer separate."""
import random

import pytest

from seal.domains.arc import Example, example_pair_text, grid_to_text, parse_answer, task_prompt, text_to_grid


def test_round_trip_random_and_extreme_sizes():
    rng = random.Random(0)
    grids = [((7,),), ((0,) * 30,) * 30, tuple(tuple(rng.randrange(10) for _ in range(30)) for _ in range(30))]
    grids += [tuple(tuple(rng.randrange(10) for _ in range(rng.randint(1, 30))) for _ in range(1))
              for _ in range(20)]
    for _ in range(100):
        h, w = rng.randint(1, 30), rng.randint(1, 30)
        grids.append(tuple(tuple(rng.randrange(10) for _ in range(w)) for _ in range(h)))
    for g in grids:
        assert text_to_grid(grid_to_text(g)) == g


def test_format():
    assert grid_to_text(((1, 0, 2), (0, 3, 0))) == "1 0 2\n0 3 0"


def test_tolerated_whitespace():
    assert text_to_grid("\n1 0 2  \n0 3 0\t\n\n") == ((1, 0, 2), (0, 3, 0))
    assert text_to_grid("1 0 2\r\n0 3 0\r\n") == ((1, 0, 2), (0, 3, 0))


@pytest.mark.parametrize("text", [
    "", "\n\n", "1 0\n0", "1 0\n\n0 1", "12 0\n0 1", "1,0\n0,1", "[[1 0]\n [0 1]]", "a b", "1 -1",
    "1 ٣",  # a non-ASCII digit
    "\n".join(["0"] * 31), " ".join(["0"] * 31),
])
def test_malformed_text_gives_none(text):
    assert text_to_grid(text) is None


def test_parse_answer_stops_at_the_grid():
    assert parse_answer("1 2\n3 4\n\nInput:\n5 6") == ((1, 2), (3, 4))
    assert parse_answer("\n1 2\n3 4") == ((1, 2), (3, 4))
    assert parse_answer("I think it is 1 2") is None


def test_prompt_and_answer_are_separate():
    demos = [Example(((1, 0),), ((0, 1),)), Example(((2, 0),), ((0, 2),))]
    prompt, answer = example_pair_text(demos, Example(((3, 0),), ((0, 3),)))
    assert answer == "0 3"
    assert prompt.user == "Input:\n1 0\nOutput:\n0 1\n\nInput:\n2 0\nOutput:\n0 2\n\nInput:\n3 0\nOutput:\n"
    assert prompt.text.endswith(prompt.user) and prompt.text.startswith(prompt.system)
    assert [m["role"] for m in prompt.messages()] == ["system", "user"]
    assert "0 3" not in prompt.text
    assert task_prompt(demos, ((3, 0),)) == prompt
    assert task_prompt([], ((3, 0),)).user == "Input:\n3 0\nOutput:\n"
    with pytest.raises(ValueError):
        example_pair_text(demos, Example(((3, 0),), None))
