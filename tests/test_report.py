"""`seal report` on real run stores written row by row: the numbers in the tables are the ones the rows imply,
an interrupted run says what is missing, the HTML stands alone, and bad folders fail with exit code 2."""
import json
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from seal.domains.arc.serialize import grid_to_text
from seal.domains.arc.tasks import load_tasks
from seal.domains.arc.report import ARC_PALETTE, _draw_grid
from seal.api import report_main as main, write_report
from seal.engine.store import RunStore

PNG = b"\x89PNG\r\n\x1a\n"
SEEDS = 5
OFFSETS = [-0.25, 0.25, 0.0, 0.0, 0.0]  # reward noise over seeds that averages out to the self-edit's value

EVAL = ["e0", "e1", "e2", "e3"]
TRAIN = {1: ["t0", "t1", "t2"], 2: ["t3", "t4", "t5"]}
# per-self-edit mean reward over seeds: context -> [sample 0, 1, 2]
REWARDS = {1: {"t0": [0.25, 0.5, 0.75], "t1": [0.5, 0.5, 0.25], "t2": [0.25, 0.25, 0.25]},
           2: {"t3": [0.75, 0.75, 0.5], "t4": [0.5, 0.25, 0.5], "t5": [0.75, 0.25, 0.25]}}
BASE = {"m0": {"e0": 0.25, "e1": 0.25, "e2": 0.25, "e3": 0.25, "t0": 0.5, "t1": 0.25, "t2": 0.25},
        "m1": {"e0": 0.25, "e1": 0.25, "e2": 0.0, "e3": 0.0, "t3": 0.5, "t4": 0.5, "t5": 0.5},
        "m2": {"e0": 0.0, "e1": 0.0, "e2": 0.0, "e3": 0.0}}
EVAL_ACC = {0: [0.25, 0.5, 0.25, 0.5], 1: [0.5, 0.75, 0.75, 0.5], 2: [0.75, 0.75, 0.75, 0.75]}


def _grades(acc: float) -> list[float]:
    """Four questions per context, as many right as the accuracy says."""
    right = round(4 * acc)
    return [1.0] * right + [0.0] * (4 - right)


def _trial(store: RunStore, key: tuple, acc: float | None, status: str = "ok") -> None:
    store.add_trial(key, status=status, reward=acc or 0.0, self_edit="a fact.", sequences=["a fact."],
                    answers=["x"] * 4, grades=_grades(acc or 0.0) if acc is not None else None, accuracy=acc,
                    error=None if status == "ok" else "diverged", steps=10, final_loss=0.1, seconds=1.0)


def _base(store: RunStore, model: str, accs: dict[str, float]) -> None:
    store.add_base_evals(model, [(c, ["x"] * 4, _grades(a), a) for c, a in accs.items()])


def _text(lines: int) -> str:
    return "\n".join(["123456789"] * lines)  # 10 * lines - 1 characters


def _train_run(out: Path, finished: bool) -> RunStore:
    """A two-round ReST-EM run; unfinished: killed after 14 of round 2's 45 training trials."""
    store = RunStore(out / "store.sqlite")
    store.set_meta("kind", "knowledge-train")
    store.set_meta("settings", {"rounds": 2, "k": 3, "seeds": SEEDS, "contexts_per_round": 3,
                                "inner": {"lr": 0.001, "epochs": 10}})
    store.set_meta("round_models", {"0": "m0", "1": "m1", **({"2": "m2"} if finished else {})})
    store.set_meta("timings", {"round 1": 120.5})
    _base(store, "m0", BASE["m0"])
    _base(store, "m1", BASE["m1"])
    store.add_self_edits(0, "eval", [(c, 0, "p", _text(1)) for c in EVAL])
    for c, acc in zip(EVAL, EVAL_ACC[0]):
        _trial(store, (0, "eval", c, 0, 0), acc)
        _trial(store, (0, "passage", c, 0, 0), 0.5)
    for r in (1, 2):
        store.add_self_edits(r, "train", [(c, s, "p", _text(2 * r)) for c in TRAIN[r] for s in range(3)])
        keys = [(r, "train", c, s, seed) for c in TRAIN[r] for s in range(3) for seed in range(SEEDS)]
        for key in keys if finished or r == 1 else keys[:14]:
            _trial(store, key, REWARDS[r][key[2]][key[3]] + OFFSETS[key[4]])
    store.set_meta("selected:1", [
        {"context_id": "t0", "sample": 2, "reward": 0.75, "base_accuracy": 0.5, "beat_base": True, "chars": 120},
        {"context_id": "t1", "sample": 0, "reward": 0.5, "base_accuracy": 0.25, "beat_base": True, "chars": 80},
        {"context_id": "t2", "sample": 0, "reward": 0.25, "base_accuracy": 0.25, "beat_base": False, "chars": 40}])
    store.set_meta("sft:1", {"steps": 12, "final_loss": 0.5432, "seconds": 30.0, "examples": 3})
    store.set_meta("self_edit_stats:1", {"sampled": {"n": 9, "chars": 19.0, "gold_answers": 0.25, "novel_words": 0.5},
                                         "selected": {"n": 3, "chars": 80.0, "gold_answers": 0.5,
                                                      "novel_words": 0.125}})
    store.add_self_edits(1, "eval", [(c, 0, "p", _text(2)) for c in EVAL])
    for c, acc in zip(EVAL, EVAL_ACC[1]):
        _trial(store, (1, "eval", c, 0, 0), acc)
    if finished:
        store.set_meta("selected:2", [
            {"context_id": c, "sample": 0, "reward": v, "base_accuracy": 0.5, "beat_base": v > 0.5, "chars": 90}
            for c, v in (("t3", 0.75), ("t4", 0.5), ("t5", 0.75))])
        store.set_meta("sft:2", {"steps": 12, "final_loss": 0.25, "seconds": 31.0, "examples": 3})
        _base(store, "m2", BASE["m2"])
        store.add_self_edits(2, "eval", [(c, 0, "p", _text(3)) for c in EVAL])
        for c, acc in zip(EVAL, EVAL_ACC[2]):
            _trial(store, (2, "eval", c, 0, 0), acc)
        (out / "results.json").write_text(json.dumps({"command": "seal knowledge train --rounds 2"}))
    return store


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def _tables(md: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of the report, as rows keyed by the header."""
    lines, out, i = md.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header, rows, i = _cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(header, _cells(lines[i]))))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def _row(md: str, want: dict[str, str]) -> dict[str, str]:
    """The one table row of the report whose cells match `want`."""
    found = [r for t in _tables(md) for r in t if all(r.get(k) == v for k, v in want.items())]
    assert len(found) == 1, (want, found)
    return found[0]


def _check_files(paths: dict) -> tuple[str, str]:
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert paths["figures"], "no plots"
    for png in paths["figures"]:
        assert png.read_bytes()[:8] == PNG
        assert f"(report/{png.name})" in md
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?data:)""", page, re.I), "external asset in the HTML"
    assert "url(" not in page
    assert page.count('src="data:image/png;base64,') == len(paths["figures"])
    return md, page


def test_finished_train_run(tmp_path):
    _train_run(tmp_path, finished=True).close()
    md, page = _check_files(write_report(tmp_path))
    # (a) accuracy per round, each from the rows above
    assert _row(md, {"round": "0", "condition": "base"})["accuracy"] == "25.0%"
    assert _row(md, {"round": "0", "condition": "passage"})["accuracy"] == "50.0%"
    assert _row(md, {"round": "0", "condition": "self-edit"})["accuracy"] == "37.5%"
    assert _row(md, {"round": "1", "condition": "SEAL round 1"})["accuracy"] == "62.5%"
    assert _row(md, {"round": "2", "condition": "SEAL round 2"})["accuracy"] == "75.0%"
    assert _row(md, {"round": "1", "condition": "base (round 1 model)"})["accuracy"] == "12.5%"
    assert _row(md, {"round": "2", "condition": "base (round 2 model)"})["accuracy"] == "0.0%"
    # (b) rewards: 9 self-edits, mean 3.5/9, median 0.25, best-of-3 mean 0.5, 3 of 9 above the m0 base
    r1 = _row(md, {"round": "1", "best-of-k mean": "50.0%"})
    assert (r1["mean"], r1["median"], r1["best-of-k mean"], r1["> base"]) == ("38.9%", "25.0%", "50.0%", "33.3%")
    # (c) selection, as stored
    s1, s2 = _row(md, {"round": "1", "source": "stored"}), _row(md, {"round": "2", "source": "stored"})
    assert (s1["beat base"], s1["share"], s1["mean chars"]) == ("2", "66.7%", "80")
    assert (s2["beat base"], s2["share"]) == ("2", "66.7%")
    assert _row(md, {"round": "1", "examples": "3"})["final loss"] == "0.5432"
    sel = _row(md, {"round": "1", "self-edits": "selected"})
    assert (sel["n"], sel["chars"], sel["gold answers"], sel["invented words"]) == ("3", "80", "50.0%", "12.5%")
    assert _row(md, {"round": "1", "self-edits": "sampled"})["gold answers"] == "25.0%"
    # (d) self-edit length: round r train edits have 2r lines of 9 characters
    assert _row(md, {"round": "2", "source": "train"})["mean chars"] == "39"
    assert _row(md, {"round": "2", "source": "train"})["mean lines"] == "4.0"
    assert _row(md, {"round": "0", "source": "eval"})["mean chars"] == "9"
    # (e) progress: all done
    assert _row(md, {"round": "2", "selected": "3"})["trials (train)"] == "45 of 45"
    assert "incomplete" not in md and "not yet" not in md
    assert "seal knowledge train --rounds 2" in md and "inner.lr" in md and "round 1" in md
    assert "62.5%" in page


def test_interrupted_train_run(tmp_path):
    store = _train_run(tmp_path, finished=False)   # still open: a run that is writing, WAL and all
    md, _ = _check_files(write_report(tmp_path))
    store.close()
    assert "round 2: 14 of 45 trials so far; incomplete" in md
    assert "round 2: no eval trials yet" in md
    assert "no results.json: the run is still going or was interrupted" in md
    assert _row(md, {"round": "2", "selected": "not yet"})["trials (train)"] == "14 of 45"
    # round 2 selection computed from the trials so far: t3 only, best 0.75 > base 0.5 of the m1 model
    s2 = _row(md, {"round": "2", "source": "computed with the run's rule 'best' (round not finished)"})
    assert (s2["contexts"], s2["beat base"], s2["share"], s2["mean reward"], s2["mean chars"]) == \
        ("1", "1", "100.0%", "75.0%", "39")
    assert _row(md, {"round": "2", "condition": "SEAL round 2"})["accuracy"] == "—"
    assert _row(md, {"round": "1", "condition": "SEAL round 1"})["accuracy"] == "62.5%"
    assert _row(md, {"round": "2", "examples": "—"})["time (s)"] == "not yet"


def test_sequential_run(tmp_path):
    nan = float("nan")
    store = RunStore(tmp_path / "store.sqlite")
    store.set_meta("kind", "knowledge-sequential")
    store.set_meta("settings", {"streams": 2, "contexts_per_stream": 3})
    store.set_meta("forgetting", {
        "mean": [[0.4, 0.3, 0.2], [0.6, None, None], [0.5, 0.7, nan], [0.4, 0.5, 0.8]],
        "stderr": [[0.01, 0.01, 0.01], [0.02, None, None], [0.01, 0.03, nan], [0.01, 0.01, 0.04]],
        "n_streams": 2, "contexts_per_stream": 3})
    store.close()
    md, _ = _check_files(write_report(tmp_path))
    row2 = _row(md, {"after r edits": "2"})
    assert (row2["d1"], row2["d2"], row2["d3"]) == ("50.0 ± 1.0", "70.0 ± 3.0", "")
    assert _row(md, {"after r edits": "0 (no edits)"})["d3"] == "20.0 ± 1.0"
    assert _row(md, {"measure": "right after its own edit (diagonal mean)"})["accuracy"] == "70.0%"
    assert _row(md, {"measure": "before any edit (row 0 mean)"})["accuracy"] == "30.0%"
    assert _row(md, {"measure": "after all 3 edits (last row mean)"})["accuracy"] == "56.7%"
    assert _row(md, {"measure": "last row - row 0"})["accuracy"] == "+26.7 points"

    # killed during stream 2 of 3: no final matrix, the finished streams are shown
    going = tmp_path / "going"
    store = RunStore(going / "store.sqlite")
    store.set_meta("kind", "knowledge-sequential")
    store.set_meta("settings", {"streams": 3, "length": 2})
    assert "0 of 3 streams finished" in write_report(going)["markdown"].read_text()
    store.set_meta("stream:0", {"contexts": ["a", "b"], "matrix": [[0.5, 0.25], [0.75], [0.5, 1.0]], "steps": []})
    store.set_meta("stream:1", {"contexts": ["c", "d"], "matrix": [[0.25, 0.25], [0.25], [0.5, 0.5]], "steps": []})
    _trial(store, (2, "step-0", "e", 0, 0), 0.5)
    paths = write_report(going)
    md = paths["markdown"].read_text()
    assert "2 of 3 streams finished, 1 trials stored so far" in md
    assert _row(md, {"after r edits": "1"})["d1"] == "50.0 ± 25.0"   # (0.75 + 0.25) / 2, s.e. 0.354 / sqrt 2
    assert _row(md, {"after r edits": "2"})["d2"] == "75.0 ± 25.0"
    assert len(paths["figures"]) == 1


def test_eval_run(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")   # no "kind": an existing `seal knowledge eval` run
    store.set_meta("settings", {"model": None, "k": 2, "repeats": 1,
                                "conditions": ["base", "passage", "self-edit", "file:/data/edits.json"]})
    _base(store, "SmolLM2-135M-Instruct", {"c0": 0.25, "c1": 0.0, "c2": 0.25, "c3": 0.0})
    for c in ("c0", "c1", "c2", "c3"):
        _trial(store, (0, "passage", c, 0, 0), 0.5)
    # self-edit: per-context means 0.75, 0.25, 0.5 (one failed trial counts 0), 1.0
    for c, accs in {"c0": [0.5, 1.0], "c1": [0.25, 0.25], "c2": [1.0, None], "c3": [1.0, 1.0]}.items():
        for s, acc in enumerate(accs):
            _trial(store, (0, "self-edit", c, s, 0), acc, status="ok" if acc is not None else "failed")
    # file: unequal trials per context; the macro mean weighs contexts, not trials: (1.0 + 0.0) / 2
    _trial(store, (0, "file:edits.json", "c0", 0, 0), 1.0)
    for s in range(3):
        _trial(store, (0, "file:edits.json", "c1", s, 0), 0.0)
    store.close()
    (tmp_path / "results.json").write_text(json.dumps({"command": "seal knowledge eval --n 4",
                                                       "conditions": {"passage": {"seconds": 12.3}}}))
    md, _ = _check_files(write_report(tmp_path))
    base, passage = _row(md, {"condition": "base"}), _row(md, {"condition": "passage"})
    selfedit, fromfile = _row(md, {"condition": "self-edit"}), _row(md, {"condition": "file:edits.json"})
    assert (base["accuracy"], base["questions"], base["contexts"]) == ("12.5%", "16", "4")
    assert (passage["accuracy"], passage["trials"], passage["time (s)"]) == ("50.0%", "4 of 4", "12")
    assert (selfedit["accuracy"], selfedit["trials"], selfedit["failed"]) == ("62.5%", "8 of 8", "1")
    assert (fromfile["accuracy"], fromfile["contexts"], fromfile["questions"], fromfile["trials"]) == \
        ("50.0%", "2", "8", "4")
    lo, hi = (float(x) for x in passage["95% CI"].strip("[]").split(","))
    assert lo == hi == 50.0
    assert "seal knowledge eval --n 4" in md and "so far" not in md


def test_cpt_run(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    store.set_meta("kind", "knowledge-cpt")
    store.set_meta("cpt", {"passage": {"accuracy_micro": 0.3, "accuracy_macro": 0.25, "ci95": [0.2, 0.3],
                                       "n_questions": 40, "n_contexts": 10, "sequences": 10}})
    store.close()
    md, _ = _check_files(write_report(tmp_path))
    row = _row(md, {"condition": "passage"})
    assert (row["accuracy (macro)"], row["95% CI"], row["accuracy (micro)"]) == ("25.0%", "[20.0, 30.0]", "30.0%")

    going = tmp_path / "going"
    store = RunStore(going / "store.sqlite")
    store.set_meta("kind", "knowledge-cpt")
    _trial(store, (0, "passage", "pool", 0, 0), 0.375)
    store.close()
    md = write_report(going)["markdown"].read_text()
    assert "no summary yet" in md and _row(md, {"condition": "passage"})["accuracy (micro)"] == "37.5%"


def test_bad_folders_exit_2(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main([str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert str(empty / "store.sqlite") in capsys.readouterr().err
    odd = tmp_path / "odd"
    store = RunStore(odd / "store.sqlite")
    store.set_meta("kind", "chess-openings")   # any domain's eval and train runs report; this is neither
    store.close()
    assert main([str(odd)]) == 2
    err = capsys.readouterr().err
    assert "chess-openings" in err and str(odd / "store.sqlite") in err
    assert not (odd / "report.md").exists()


def test_main_writes_report(tmp_path, capsys):
    _train_run(tmp_path, finished=True).close()
    assert main([str(tmp_path)]) == 0
    assert str(tmp_path / "report.html") in capsys.readouterr().out
    assert (tmp_path / "report.md").read_text().startswith("# seal report")


# ------------------------------------------------------------------------------------------------------ ARC

ARC_TASKS = load_tasks("builtin:easy:3:0")      # three one-test tasks; the report loads the same ones
T0, T1, T2 = (t.id for t in ARC_TASKS)
WRONG = ((5, 5), (5, 5))


def _attempts(task_index: int, *solved: bool) -> list[str]:
    """A stored answer (see ArcDomain.grade): one attempt per flag, the expected output where it is True."""
    expected = ARC_TASKS[task_index].test[0].output
    return ["\n\n".join(grid_to_text(expected if ok else WRONG) for ok in solved)]


def _config(*groups: str, strategy: str = "output") -> str:
    gen = {f"use_{g}_augmentations": g in groups for g in ("basic", "size", "chain", "repeat")}
    return json.dumps({"data_generation": gen, "training": {"strategy": f"train_using_{strategy}_tokens",
                                                            "learning_rate": 1e-4, "num_train_epochs": 2}})


def _arc_trial(store: RunStore, key: tuple, status: str, solved: bool, self_edit: str | None,
               answers: list[str] | None = None, error: str | None = None) -> None:
    store.add_trial(key, status=status, reward=float(solved), self_edit=self_edit, answers=answers,
                    grades=[float(solved)] if answers is not None else None,
                    accuracy=float(solved) if answers is not None else None, error=error)


def _arc_run(out: Path, kind: str, finished: bool) -> RunStore:
    """Three eval tasks, k = 2. Self-edits (untrained): 3 of 6 pairs solved, tasks 0 and 1 by some pair, two
    invalid, one failed; in-context solves task 0 only; Oracle TTT tasks 0 and 1 and predicts no grid for 2.
    arc-train adds a round of training self-edits and, when finished, SEAL's own eval self-edits."""
    store = RunStore(out / "store.sqlite")
    store.set_meta("kind", kind)
    store.set_meta("settings", {"tasks": "builtin:easy:3:0", "conditions": ["in-context", "self-edit", "oracle"],
                                "k": 2, **({"rounds": 1, "train_tasks": "builtin:easy:2:1"}
                                           if kind == "arc-train" else {})})
    store.add_base_evals("round-0", [(T0, _attempts(0, True), [1.0], 1.0), (T1, _attempts(1, False), [0.0], 0.0),
                                     (T2, _attempts(2, False, False), [0.0], 0.0)])
    _arc_trial(store, (0, "self-edit", T0, 0, 0), "ok", True, _config("basic", "repeat"), _attempts(0, True))
    _arc_trial(store, (0, "self-edit", T0, 1, 0), "ok", True,
               f"Sure:\n```json\n{_config('basic', 'size', strategy='all')}\n```", _attempts(0, False, True))
    _arc_trial(store, (0, "self-edit", T1, 0, 0), "ok", True, _config("basic"), _attempts(1, True))
    _arc_trial(store, (0, "self-edit", T1, 1, 0), "invalid", False, "no json", error="no JSON object in the self-edit")
    _arc_trial(store, (0, "self-edit", T2, 0, 0), "failed", False, _config("chain"), error="out of memory")
    _arc_trial(store, (0, "self-edit", T2, 1, 0), "invalid", False, '{"training": {"learning_rate": 5}}',
               error="invalid self-edit: data_generation: Field required")
    oracle = _config("basic")
    _arc_trial(store, (0, "oracle", T0, 0, 0), "ok", True, oracle, _attempts(0, True))
    _arc_trial(store, (0, "oracle", T1, 0, 0), "ok", True, oracle, _attempts(1, False, True))
    _arc_trial(store, (0, "oracle", T2, 0, 0), "ok", False, oracle, [""])  # no grid among its answers
    if kind == "arc-train":
        # training tasks: three of four self-edits scored, two valid, one solved its task
        _arc_trial(store, (1, "train", "tr0", 0, 0), "ok", True, _config("size"), ["1"])
        _arc_trial(store, (1, "train", "tr0", 1, 0), "ok", False, _config("repeat", strategy="all"), ["1"])
        _arc_trial(store, (1, "train", "tr1", 0, 0), "invalid", False, "{", error="no JSON object in the self-edit")
    if kind == "arc-train" and finished:
        _arc_trial(store, (1, "train", "tr1", 1, 0), "invalid", False, "{", error="no JSON object in the self-edit")
        store.set_meta("selected:1", [{"context_id": "tr0", "sample": 0, "reward": 1.0}])
        store.set_meta("sft:1", {"steps": 8, "final_loss": 0.1234, "examples": 1})
        for task in (0, 1, 2):   # SEAL: task 2 solved by self-edit 1 only; self-edit 0 is stored without text
            _arc_trial(store, (1, "seal-round-1", ARC_TASKS[task].id, 0, 0), "ok", False, None, _attempts(task, False))
            _arc_trial(store, (1, "seal-round-1", ARC_TASKS[task].id, 1, 0), "ok", task == 2, _config("basic"),
                       _attempts(task, task == 2))
    if finished:   # a finished run has written results.json (the report's numbers still come from the store)
        (out / "results.json").write_text(json.dumps({"conditions": {"in-context": {"accuracy": 1 / 3}}}))
    return store


def test_arc_eval_run(tmp_path):
    _arc_run(tmp_path, "arc-eval", finished=True).close()
    paths = write_report(tmp_path)
    md, page = _check_files(paths)
    assert len(paths["figures"]) == 1 + 3   # the success-rate bars and one picture per task
    selfedit = _row(md, {"condition": "TTT + self-edits (untrained)"})
    assert (selfedit["success rate"], selfedit["pairs"], selfedit["tasks solved"], selfedit["invalid self-edits"]) \
        == ("50.0%", "6 of 6", "66.7% (2 of 3)", "33.3%")
    incontext, oracle = _row(md, {"condition": "in-context"}), _row(md, {"condition": "Oracle TTT"})
    assert (incontext["success rate"], incontext["tasks solved"], incontext["invalid self-edits"]) == \
        ("33.3%", "33.3% (1 of 3)", "—")
    assert (oracle["success rate"], oracle["pairs"], oracle["95% CI"]) == ("66.7%", "3 of 3", "[0.0, 100.0]")
    assert "TTT + self-edits (untrained): 1 failed to train or answer (counted as unsolved)" in md
    assert "SEAL" not in md and "no final summary" not in md and "so far" not in md
    # per task
    assert _row(md, {"task": T0}) == {"task": T0, "in-context": "yes", "TTT + self-edits (untrained)": "2 of 2",
                                      "Oracle TTT": "yes"}
    assert _row(md, {"task": T2}) == {"task": T2, "in-context": "no", "TTT + self-edits (untrained)": "0 of 2",
                                      "Oracle TTT": "no"}
    # configurations of the four valid self-edits (one wrapped in a code fence) and why the others were invalid
    configs = _row(md, {"self-edits of": "TTT + self-edits (untrained)"})
    assert [configs[h] for h in ("total", "valid", "basic", "size", "chain", "repeat", "output tokens",
                                 "all tokens")] == ["6", "4", "3", "1", "1", "1", "3", "1"]
    assert _row(md, {"reason": "no JSON object in the self-edit"})["self-edits"] == "1"
    # pictures: Oracle TTT's attempt where it predicted a grid, else the next condition that did
    assert f"{T0}: test input, expected output, first attempt of Oracle TTT (solved)" in md
    assert f"{T1}: test input, expected output, first attempt of Oracle TTT (solved)" in md  # by its second
    assert f"{T2}: test input, expected output, first attempt of in-context (not solved)" in md
    assert f'alt="{T0}: test input' in page


def test_arc_train_run(tmp_path):
    _arc_run(tmp_path, "arc-train", finished=True).close()
    paths = write_report(tmp_path)
    md, _ = _check_files(paths)
    seal = _row(md, {"condition": "SEAL (round 1)"})
    assert (seal["success rate"], seal["pairs"], seal["tasks solved"], seal["invalid self-edits"]) == \
        ("16.7%", "6 of 6", "33.3% (1 of 3)", "0.0%")
    assert _row(md, {"task": T2})["SEAL (round 1)"] == "1 of 2"
    training = _row(md, {"round": "1", "kept": "1"})
    assert [training[h] for h in ("tasks", "self-edits", "valid", "solved their task", "finetune examples", "steps",
                                  "final loss")] == ["2", "4", "2", "1", "1", "8", "0.1234"]
    train_configs = _row(md, {"self-edits of": "training tasks, round 1"})
    assert (train_configs["valid"], train_configs["size"], train_configs["repeat"], train_configs["all tokens"]) \
        == ("2", "1", "1", "1")
    seal_configs = _row(md, {"self-edits of": "SEAL (round 1)"})
    assert (seal_configs["valid"], seal_configs["basic"]) == ("6", "3")   # the three without text are skipped
    assert "SEAL (round 1): 3 valid self-edits have no readable JSON stored and are left out of the counts" in md
    assert _row(md, {"reason": "no JSON object in the self-edit"})["self-edits"] == "3"
    assert f"{T2}: test input, expected output, first attempt of SEAL (round 1), self-edit 1 (solved)" in md
    assert f"{T0}: test input, expected output, first attempt of SEAL (round 1), self-edit 0 (not solved)" in md
    assert "so far" not in md and "not yet" not in md


def test_interrupted_arc_train_run(tmp_path):
    store = _arc_run(tmp_path, "arc-train", finished=False)   # still open, no summary: computed from the rows
    md, _ = _check_files(write_report(tmp_path))
    store.close()
    assert "no final summary stored: the run is still going or was interrupted" in md
    assert _row(md, {"condition": "TTT + self-edits (untrained)"})["success rate"] == "50.0%"
    seal = _row(md, {"condition": "SEAL (round 1)"})
    assert (seal["success rate"], seal["pairs"], seal["tasks solved"]) == ("—", "0 of 6", "—")
    assert "SEAL (round 1): no pairs yet" in md
    assert "round 1: 3 self-edits scored so far, no selection stored yet" in md
    training = _row(md, {"round": "1", "kept": "not yet"})
    assert (training["self-edits"], training["valid"], training["solved their task"], training["finetune examples"]) \
        == ("3", "2", "1", "not yet")
    assert _row(md, {"task": T1})["SEAL (round 1)"] == "—"


def test_arc_tasks_not_loadable_or_many(tmp_path):
    # a task file that is gone: no pictures and why; the tables come from the store's task ids
    store = _arc_run(tmp_path, "arc-eval", finished=True)
    store.set_meta("settings", {"tasks": str(tmp_path / "gone.json"), "conditions": ["self-edit"], "k": 2})
    store.close()
    paths = write_report(tmp_path)
    md = paths["markdown"].read_text()
    assert f"No task pictures: the tasks '{tmp_path / 'gone.json'}' cannot be loaded here" in md
    assert [p.name for p in paths["figures"]] == ["arc_success.png"]
    assert _row(md, {"condition": "TTT + self-edits (untrained)"})["pairs"] == "6"   # no planned count known
    assert _row(md, {"task": T1})["TTT + self-edits (untrained)"] == "1 of 2"

    # a large task set at the very start of a run: pictures capped, every condition waiting
    many = tmp_path / "many"
    store = RunStore(many / "store.sqlite")
    store.set_meta("kind", "arc-eval")
    store.set_meta("settings", {"tasks": "builtin:easy:26:0", "conditions": ["in-context", "oracle"], "k": 2})
    store.close()
    paths = write_report(many)
    md = paths["markdown"].read_text()
    assert len(paths["figures"]) == 24 and all(p.read_bytes()[:8] == PNG for p in paths["figures"])
    assert "Showing the first 24 of 26 tasks." in md
    assert _row(md, {"condition": "Oracle TTT"})["pairs"] == "0 of 26" and "in-context: no pairs yet" in md
    assert "no condition has a predicted grid stored" in md


def test_arc_grid_colours():
    """Each cell in its ARC colour, row 0 on top."""
    grid = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    fig = Figure(figsize=(5, 2), dpi=100)
    ax = fig.subplots()
    _draw_grid(ax, grid, "")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3] / 255
    for r, row in enumerate(grid):
        for c, colour in enumerate(row):
            x, y = ax.transData.transform((c + 0.5, r + 0.5))
            got = pixels[pixels.shape[0] - 1 - int(y), int(x)]
            assert np.allclose(got, to_rgb(ARC_PALETTE(colour)), atol=0.02), (r, c, got)
    assert to_rgb(ARC_PALETTE(9)) == to_rgb("#870C25") and to_rgb(ARC_PALETTE(0)) == (0.0, 0.0, 0.0)
