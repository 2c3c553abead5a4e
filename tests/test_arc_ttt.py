"""TTT data (leave-n-out, augmentations, permutations, filters, cap), inference queries and the vote."""
from pathlib import Path

import pytest

from seal.domains.arc import (GEOMETRIC, GROUPS, Example, build_ttt_examples, generate_tasks, grid_to_text,
                              inference_queries, leave_n_out, load_tasks, solved, task_solved, vote, cell_share)
from seal.domains.arc.augment import stretch
from seal.domains.arc.selfedit import parse_self_edit
from seal.domains.arc.ttt_data import ttt_pairs

ARC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "arc"


def demos(n):
    """n distinct demonstrations (3x3 grids, output = input flipped left-right)."""
    return [Example(((i, 0, 1), (0, 2, 0), (3, 0, 0)), ((1, 0, i), (0, 2, 0), (0, 0, 3))) for i in range(1, n + 1)]


@pytest.mark.parametrize("n_demos", [2, 3, 4, 6])
def test_leave_one_out_and_two_out(n_demos):
    d = demos(n_demos)
    one = leave_n_out(d, 1)
    assert len(one) == n_demos
    for i, (context, query) in enumerate(one):
        assert query == d[i] and query not in context
        assert list(context) == [e for e in d if e != query]  # original order kept
    two = leave_n_out(d, 2)
    assert len(two) == n_demos * (n_demos - 1)
    assert all(len(c) == n_demos - 2 and q not in c for c, q in two)
    assert len(set(two)) == len(two)


def test_ttt_examples_without_augmentation():
    d = demos(4)
    examples = build_ttt_examples(d, [])
    pairs = ttt_pairs(d, [])
    assert len(examples) == len(pairs) and 4 + 12 <= len(pairs) <= 2 * (4 + 12)
    # no augmenter: no recolouring, only reordered contexts, so every query is a real demo
    assert {q for _, q in pairs} == set(d)
    for (context, query), ex in zip(pairs, examples):
        assert ex.answer == grid_to_text(query.output) and query not in context
        assert ex.prompt.user.endswith(f"Input:\n{grid_to_text(query.input)}\nOutput:\n")
    assert build_ttt_examples(d, []) == examples  # deterministic


def test_ttt_augmentation_permutation_filter_and_cap():
    d = demos(3)
    base = len(leave_n_out(d, 1) + leave_n_out(d, 2))
    pairs = ttt_pairs(d, ["size"])
    assert len(pairs) == 2 * (1 + 3) * base  # every copy and every recoloured variant is distinct here
    up = stretch(2, 2).apply
    assert (tuple(Example(up(e.input), up(e.output)) for e in d[1:]),
            Example(up(d[0].input), up(d[0].output))) in pairs
    everything = build_ttt_examples(d, GROUPS, seed=1, max_examples=10_000)
    assert len(everything) == 2 * (1 + 23) * base
    capped = build_ttt_examples(d, GROUPS, seed=1, max_examples=50)
    assert len(capped) == 50 and set(capped) <= set(everything)
    assert capped == build_ttt_examples(d, GROUPS, seed=1, max_examples=50)
    assert capped != build_ttt_examples(d, GROUPS, seed=2, max_examples=50)
    lengths = sorted(len(e.prompt.text + e.answer) for e in build_ttt_examples(d, ["size"]))
    limit = lengths[len(lengths) // 2]
    short = build_ttt_examples(d, ["size"], max_length=limit)
    assert 0 < len(short) < len(pairs) and all(len(e.prompt.text + e.answer) <= limit for e in short)
    def n_words(text):
        return len(text.split())
    by_words = build_ttt_examples(d, ["size"], max_length=n_words(short[-1].prompt.text + short[-1].answer),
                                  length_fn=n_words)
    assert short[-1] in by_words and len(by_words) < len(pairs)


def test_oversized_augmentations_are_dropped():
    big = [Example(((1,) * 20,) * 20, ((2,) * 20,) * 20), Example(((3,) * 20,) * 20, ((4,) * 20,) * 20)]
    pairs = ttt_pairs(big, ["size", "repeat", "chain"])
    assert all(len(g) <= 20 for c, q in pairs for e in (*c, q) for g in (e.input, e.output))
    assert len(pairs) == 2 * 4  # nothing fits, but the flags still switch colour permutation on


@pytest.fixture(scope="module")
def paper_tasks():
    if not (ARC_DIR / "arc-agi_training_challenges.json").exists():
        pytest.skip("ARC data not found at ../shared/data/arc")
    tasks = load_tasks("arc:paper-train", data_dir=ARC_DIR, split=False)
    tasks += load_tasks("arc:paper-eval", data_dir=ARC_DIR, split=False)
    return {t.id: t for t in tasks}


@pytest.mark.parametrize("task_id, groups, expected", [
    ("6150a2bd", [], 4), ("6150a2bd", ["basic"], 96), ("6150a2bd", GROUPS, 192),
    ("5582e5ca", ["size"], 72), ("5582e5ca", ["chain"], 126),
    ("358ba94e", ["size"], 32), ("bc4146bd", ["chain"], 32), ("bc4146bd", ["repeat"], 64),
    ("8e1813be", ["repeat"], 44),
])
def test_reference_dataset_sizes(paper_tasks, task_id, groups, expected):
    """Raw TTT set sizes from the reference's table (colour-permutation collisions may differ by one)."""
    assert abs(len(ttt_pairs(paper_tasks[task_id].train, groups)) - expected) <= 1


def test_step_guard_on_a_real_task(paper_tasks):
    task = paper_tasks["5582e5ca"]
    edit = ('{"data_generation": {"use_basic_augmentations": true, "use_size_augmentations": false, '
            '"use_chain_augmentations": false, "use_repeat_augmentations": false}, '
            '"training": {"strategy": "train_using_all_tokens", "learning_rate": 0.0001, "num_train_epochs": %d}}')
    def count(config):
        return len(build_ttt_examples(task.train, config.data_generation.groups()))
    assert parse_self_edit(edit % 3, count).steps == 3 * 108  # 216 examples, the table's max of 3 epochs
    assert parse_self_edit(edit % 4, count).error.startswith("over budget")


# --- inference queries and the vote --------------------------------------------------------------------------

@pytest.mark.parametrize("n_demos, low, high", [(2, 7, 7), (3, 8, 11), (4, 9, 17)])
def test_inference_queries(n_demos, low, high):
    d = demos(n_demos)
    test_input = ((4, 0, 1), (0, 2, 0), (3, 0, 0))
    queries = inference_queries(d, test_input)
    assert low <= len(queries) <= high
    assert len({q.prompt for q in queries}) == len(queries)
    views = [q.view.name for q in queries]
    assert views.count("identity") == len(queries) - 5
    assert views[-5:] == ["transpose", "flip_v", "flip_h", "rot90", "rot180"]
    for q in queries:  # leave-one-out contexts: never all demos, and the test input under the query's view
        assert q.prompt.user.count("Input:\n") == n_demos
        assert q.prompt.user.endswith(f"Input:\n{grid_to_text(q.view.apply(test_input))}\nOutput:\n")
    assert inference_queries(d, test_input) == queries
    assert inference_queries(d, test_input, max_length=10) == []


def test_vote_maps_back_and_counts():
    truth, other = ((1, 2), (3, 4)), ((9, 9), (9, 9))
    rot90, flip_h = GEOMETRIC["rot90"], GEOMETRIC["flip_h"]
    predictions = [
        (GEOMETRIC["identity"], grid_to_text(other)),
        (rot90, grid_to_text(rot90.apply(truth))),
        (flip_h, flip_h.apply(truth)),  # already parsed grids are fine too
        (GEOMETRIC["identity"], "garbage"),
        (rot90, None),
        (stretch(2, 2), "1 2\n3 4"),  # cannot be mapped back: dropped
        (GEOMETRIC["identity"], "5 5\n5 5"),
    ]
    attempts = vote(predictions)
    assert attempts == [truth, other]  # 2 votes first; then the tie between 1-vote answers goes to the earliest
    assert solved(attempts, truth) and solved(attempts, other) and not solved(attempts, ((5, 5), (5, 5)))
    assert vote([(GEOMETRIC["identity"], None)]) == []
    assert not solved([], truth)
    assert vote(predictions, attempts=3)[2] == ((5, 5), (5, 5))


def test_vote_ties_break_by_first_appearance():
    a, b = ((1,),), ((2,),)
    identity = GEOMETRIC["identity"]
    assert vote([(identity, b), (identity, a), (identity, a), (identity, b)]) == [b, a]
    assert vote([(identity, a), (identity, b), (identity, b)]) == [b, a]


def test_task_solved_needs_every_test():
    a, b = ((1,),), ((2,),)
    assert task_solved([[a, b], [b]], [b, b])
    assert not task_solved([[a, b], [a]], [b, b])
    with pytest.raises(ValueError):
        task_solved([[a]], [a, b])


def test_cell_share_grades_the_best_attempt():
    truth = ((1, 2, 3), (4, 5, 6))
    assert cell_share([truth], truth) == 1.0
    assert cell_share([((1, 2, 3), (4, 5, 0))], truth) == pytest.approx(5 / 6)
    # the better of the two attempts counts; another shape scores 0; a third attempt is never looked at
    assert cell_share([((0, 0, 0), (4, 5, 6)), ((1, 2, 3), (4, 0, 0))], truth) == pytest.approx(4 / 6)
    assert cell_share([((1, 2), (4, 5)), ((1, 2, 3),)], truth) == 0.0
    assert cell_share([((1, 2, 3, 9), (4, 5, 6, 9))], truth) == 0.0
    assert cell_share([((0, 0, 0), (0, 0, 0)), ((0, 0, 0), (0, 0, 0)), truth], truth) == 0.0
    assert cell_share([], truth) == 0.0


def test_generated_tasks_flow_end_to_end():
    """A generated task through TTT data, queries and a perfect oracle vote."""
    for task in generate_tasks(len(GROUPS) * 2, seed=11, difficulty="easy"):
        assert build_ttt_examples(task.train, GROUPS)
        test = task.test[0]
        queries = inference_queries(task.train, test.input)
        answers = [(q.view, grid_to_text(q.view.apply(test.output))) for q in queries]
        assert task_solved([vote(answers)], [test.output])
