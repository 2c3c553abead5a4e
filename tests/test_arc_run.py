"""The ARC domain on the engine: self-edit -> TTT update, grading by vote, and a whole mini run on a tiny model."""
import json
import subprocess
import sys

import pytest

from seal.domains.arc.constrained import canonical, menu
from seal.domains.arc.domain import ArcDomain, ArcSettings, attempts_of
from seal.experiment.restem import candidates, select_self_edits
from seal.domains.arc.generator import generate_tasks
from seal.domains.arc.serialize import grid_to_text
from seal.engine.store import RunStore

GOOD = {"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                            "use_chain_augmentations": False, "use_repeat_augmentations": False},
        "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.001, "num_train_epochs": 2}}


@pytest.fixture(scope="module")
def domain(smol):
    tok = smol.tokenizer
    return ArcDomain(lambda p: p.text, lambda t: len(tok(t)["input_ids"]), ArcSettings(max_examples=6),
                     eos_text=tok.eos_token)


@pytest.fixture(scope="module")
def task():
    return generate_tasks(1, seed=3, difficulty="easy")[0]


def test_valid_self_edit_becomes_a_ttt_update(domain, task):
    upd = domain.parse_self_edit(task, "Here it is: " + json.dumps(GOOD))
    assert upd.error is None and not upd.texts and len(upd.pairs) == 6      # capped at max_examples
    assert upd.overrides == {"lr": 0.001, "epochs": 2, "batch_size": 2}
    prompt, answer = upd.pairs[0]
    assert prompt.rstrip().endswith("Output:") and answer.split("\n")[0].replace(" ", "").isdigit()
    all_tokens = json.loads(json.dumps(GOOD))
    all_tokens["training"]["strategy"] = "train_using_all_tokens"
    upd = domain.parse_self_edit(task, json.dumps(all_tokens))
    assert not upd.pairs and len(upd.texts) == 6 and all(t.endswith(domain.eos_text) for t in upd.texts)


@pytest.mark.parametrize("text,why", [
    ("use every augmentation please", "no JSON object"),
    (json.dumps({**GOOD, "shell": "rm -rf /"}), "invalid self-edit"),
    (json.dumps({**GOOD, "training": {**GOOD["training"], "num_train_epochs": "2"}}), "invalid self-edit"),
    (json.dumps({**GOOD, "training": {**GOOD["training"], "num_train_epochs": 10}}), "over budget"),
])
def test_bad_self_edits_are_rejected(domain, task, text, why, monkeypatch):
    monkeypatch.setattr(domain.s, "max_steps", 20)
    upd = domain.parse_self_edit(task, text)
    assert upd.error and why in upd.error and not upd.pairs and not upd.texts


def test_grading_votes_over_views(domain, task):
    from seal.domains.arc.ttt_data import inference_queries
    (qs,) = [inference_queries(task.train, t.input, domain.s.seed, domain.s.n_permutations, domain.s.views,
                               domain.s.max_tokens, domain.count_tokens) for t in task.test]
    expected = task.test[0].output
    right = [grid_to_text(q.view.apply(expected)) for q in qs]     # each view answers in its own frame
    ev = domain.grade(task, right)
    assert ev.accuracy == 1.0 and attempts_of(ev.answers[0]) == [expected]   # stored attempts read back
    assert ev.grades == [1.0] and domain.reward(ev) == 1.0
    wrong = ["1 2\n3 4"] * len(qs)
    ev = domain.grade(task, wrong)
    assert ev.accuracy == 0.0 and ev.grades == [0.0]
    # one wrong cell: unsolved, so the binary reward is 0, but the graded ("cells") reward sees how close it was
    near = [list(row) for row in expected]
    near[0][0] = (near[0][0] + 1) % 10
    ev = domain.grade(task, [grid_to_text(q.view.apply(tuple(map(tuple, near)))) for q in qs])
    cells = len(expected) * len(expected[0])
    assert ev.accuracy == 0.0 and ev.grades == [pytest.approx((cells - 1) / cells)] and domain.reward(ev) == 0.0
    graded = ArcDomain(domain.render, domain.count_tokens, domain.s, reward="cells")
    assert graded.reward(ev) == pytest.approx((cells - 1) / cells)
    with pytest.raises(ValueError, match="unknown ARC reward 'gain'"):
        ArcDomain(domain.render, domain.count_tokens, reward="gain")
    # a minority of right answers still wins one of the two attempts when the rest disagree with each other
    mixed = right[:2] + [f"{i} {i}" for i in range(len(qs) - 2)]
    assert domain.grade(task, mixed).accuracy == 1.0


def _row(task: str, sample: int, accuracy: float, reward: float, status: str = "ok") -> dict:
    return {"context_id": task, "sample": sample, "accuracy": accuracy, "reward": reward, "status": status}



def test_rest_em_selection_binary_and_graded():
    rows = [_row("a", 0, 1.0, 1.0), _row("a", 1, 1.0, 1.0), _row("a", 2, 0.0, 0.9),
            _row("b", 0, 0.0, 0.5), _row("b", 1, 0.0, 0.7), _row("b", 2, 0.0, 0.7),
            _row("c", 0, 0.0, 0.0), _row("d", 0, 0.0, 0.0, "invalid"), _row("e", 0, 1.0, 1.0, "failed")]
    key = lambda cands: [(c.context_id, c.sample) for c in cands]
    cands = candidates(rows, {}, ["a", "b", "c", "d", "e"], 3)
    assert key(select_self_edits(cands, {}, "solved")) == [("a", 0), ("a", 1)]   # binary: every solver, nothing else
    # cells: each task's best (ties kept), none where all scored 0; invalid and failed rows never count
    assert key(select_self_edits(cands, {}, "best-graded")) == [("a", 0), ("a", 1), ("b", 1), ("b", 2)]


def _seal_arc(command: str, model, out, *args: str) -> None:
    cmd = [sys.executable, "-m", "seal", "arc", command, "--model", str(model), "--dtype", "fp32",
           "--tasks", "builtin:easy:2:0", "--k", "2", "--max-new-tokens", "24", "--out", str(out), "--no-progress",
           *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


def test_arc_mini_run_on_a_tiny_model(tiny_dir, tmp_path):
    out = tmp_path / "arc"
    _seal_arc("train", tiny_dir, out, "--train-tasks", "builtin:easy:2:1", "--max-examples", "4",
              "--train-k", "3", "--reward", "cells")
    res = json.loads((out / "results.json").read_text())["conditions"]
    # keyed as the options and the store name them (display labels are the report's business)
    assert set(res) == {"in-context", "self-edit", "seal-round-1", "in-context-round-1", "oracle"}
    assert res["self-edit"]["n_trials"] == 4 and res["oracle"]["n_trials"] == 2 and res["seal-round-1"]["n_trials"] == 4
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in res.values())
    store = RunStore(out / "store.sqlite")
    oracle = store.trials(0, "oracle")
    assert all(t["status"] == "ok" and t["steps"] == 2 * 2 for t in oracle)   # 4 examples, batch 2, 2 epochs
    # output-token loss: the examples are stored as (prompt, completion) pairs, not lost as an empty sequence list
    assert all(len(t["pairs"]) == 4 and not t["sequences"] and t["self_edit"] for t in oracle)
    menu_texts = {canonical(c) for c in menu()}
    for t in store.trials(0, "self-edit"):   # constrained decoding: even a random model writes menu self-edits
        assert t["status"] == "ok" and t["self_edit"] in menu_texts and t["steps"] > 0
    train = store.trials(1, "train")
    assert len(train) == 2 * 3 and all(0.0 <= t["reward"] <= 1.0 and len(t["grades"]) >= 1 for t in train)
    selected = store.get_meta("selected:1")
    assert [(s["context_id"], s["sample"]) for s in selected] == \
        [(c.context_id, c.sample) for c in select_self_edits(
            candidates(train, {}, store.get_meta("contexts:train"), 3), {}, "best-graded")]
    assert all(set(s) >= {"reward", "accuracy", "base_accuracy", "beat_base", "chars"} for s in selected)
    assert set(store.get_meta("sft:1")) == {"steps", "final_loss", "losses", "examples", "seconds"}  # one shape
    assert (out / "checkpoints" / "round-1" / "merged" / "config.json").exists()
    store.close()

    # The paper's free decoding: a random model's text is not a valid self-edit; it is recorded with reward 0.
    free = tmp_path / "free"
    _seal_arc("eval", tiny_dir, free, "--conditions", "self-edit", "--self-edit-decoding", "free")
    store = RunStore(free / "store.sqlite")
    rows = store.trials(0, "self-edit")
    assert len(rows) == 4 and all(t["status"] == "invalid" and t["reward"] == 0.0 and t["error"] for t in rows)
    store.close()

    # The trained checkpoint as generator:PATH in an eval: it writes the self-edits (on the menu, as constrained
    # decoding keeps them) and the tiny model, not the checkpoint, is trained on them.
    ckpt = out / "checkpoints" / "round-1" / "merged"
    gen = tmp_path / "gen"
    _seal_arc("eval", tiny_dir, gen, "--conditions", f"generator:{ckpt}")
    store = RunStore(gen / "store.sqlite")
    rows = store.trials(0, f"generator:{ckpt}")
    assert len(rows) == 4 and all(t["status"] == "ok" and t["self_edit"] in menu_texts and t["steps"] > 0
                                  for t in rows)
    assert store.get_meta("settings")["model"]["name"] == str(tiny_dir)
    store.close()
