"""Grid transforms: every inverse restores the grid; groups match the original's vocabulary."""
import random

import pytest

from seal.domains.arc import GEOMETRIC, GROUPS, augmenters, generate_tasks, transform_task
from seal.domains.arc.augment import (INFERENCE_VIEWS, colour_permutation, random_colour_permutation, reflect,
                                      roll, stretch, tile)


def random_grids(n=60, seed=0, max_side=9):
    rng = random.Random(seed)
    grids = [((5,),), ((1, 2, 3),), ((1,), (2,))]
    for _ in range(n):
        h, w = rng.randint(1, max_side), rng.randint(1, max_side)
        grids.append(tuple(tuple(rng.randrange(10) for _ in range(w)) for _ in range(h)))
    return grids


ALL = [*GEOMETRIC.values(), stretch(2, 2), stretch(2, 1), stretch(1, 3), tile(2, 1), tile(1, 2), tile(2, 3),
       reflect(0, True), reflect(0, False), reflect(1, True), reflect(1, False), roll(1, 2), roll(3, 0),
       *augmenters(GROUPS, seed=5)]


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_inverse_restores_every_grid(t):
    for g in random_grids():
        assert t.inverse(t.apply(g)) == g


def test_symmetries_are_what_their_names_say():
    g = ((1, 2, 3), (4, 5, 6))
    assert GEOMETRIC["rot90"].apply(g) == ((3, 6), (2, 5), (1, 4))  # counter-clockwise, as numpy.rot90
    assert GEOMETRIC["rot270"].apply(g) == ((4, 1), (5, 2), (6, 3))
    assert GEOMETRIC["rot180"].apply(g) == ((6, 5, 4), (3, 2, 1))
    assert GEOMETRIC["flip_h"].apply(g) == ((3, 2, 1), (6, 5, 4))
    assert GEOMETRIC["flip_v"].apply(g) == ((4, 5, 6), (1, 2, 3))
    assert GEOMETRIC["transpose"].apply(g) == ((1, 4), (2, 5), (3, 6))
    assert GEOMETRIC["anti_transpose"].apply(g) == ((6, 3), (5, 2), (4, 1))
    assert len({t.apply(g) for t in GEOMETRIC.values()}) == 8  # the 8 symmetries all differ
    assert [t.name for t in INFERENCE_VIEWS] == ["transpose", "flip_v", "flip_h", "rot90", "rot180"]


def test_size_transforms():
    g = ((1, 2), (3, 4))
    assert stretch(2, 2).apply(g) == ((1, 1, 2, 2), (1, 1, 2, 2), (3, 3, 4, 4), (3, 3, 4, 4))
    assert stretch(2, 1).apply(g) == ((1, 2), (1, 2), (3, 4), (3, 4))
    assert tile(1, 2).apply(g) == ((1, 2, 1, 2), (3, 4, 3, 4))
    assert reflect(0, True).apply(g) == ((3, 4), (1, 2), (1, 2), (3, 4))
    assert reflect(1, False).apply(g) == ((1, 2, 2, 1), (3, 4, 4, 3))
    assert roll(1, 1).apply(((1, 2, 3), (4, 5, 6))) == ((6, 4, 5), (3, 1, 2))
    # a guess that is not an exact image cannot be mapped back: training-only in practice
    for t, not_an_image in ((stretch(2, 2), ((1, 2), (3, 4))), (tile(2, 1), ((1,), (2,))),
                            (reflect(1, False), ((1, 2),)), (stretch(2, 2), ((1, 1, 2),) * 2)):
        with pytest.raises(ValueError, match="not an output of"):
            t.inverse(not_an_image)


def test_colour_permutations():
    rng = random.Random(0)
    for _ in range(50):
        p = random_colour_permutation(rng, moved={0, 3, 7})
        assert p.apply(((0,),)) == ((0,),) and p.apply(((3, 7),)) != ((3, 7),)
        for g in random_grids(10, seed=rng.randrange(1000)):
            assert p.inverse(p.apply(g)) == g
    a = random_colour_permutation(random.Random(1))
    assert a == random_colour_permutation(random.Random(1)) and a != random_colour_permutation(random.Random(2))
    with pytest.raises(ValueError):
        colour_permutation((0, 1, 1, 3, 4, 5, 6, 7, 8, 9))


def test_groups_follow_the_original_counts():
    sizes = {g: len(augmenters([g])) for g in GROUPS}
    assert sizes == {"basic": 11, "size": 3, "chain": 6, "repeat": 3}
    assert augmenters([]) == []
    assert [t.name for t in augmenters(["chain"])][0] == "rot90>upscale2"
    assert augmenters(GROUPS, seed=1) == augmenters(GROUPS, seed=1)
    with pytest.raises(ValueError, match="unknown augmentation groups"):
        augmenters(["colour"])


def test_transform_whole_task():
    task = generate_tasks(1, seed=0, families=["rotate90"])[0]
    turned = transform_task(task, GEOMETRIC["transpose"].apply)
    for before, after in zip(task.train + task.test, turned.train + turned.test):
        assert after.input == GEOMETRIC["transpose"].apply(before.input)
        assert after.output == GEOMETRIC["transpose"].apply(before.output)
    assert transform_task(turned, GEOMETRIC["transpose"].inverse) == task
