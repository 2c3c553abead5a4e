"""Continued pretraining (many passages, one update) and sequential edits (forgetting) on a tiny model."""
import json
import math

import pytest
import torch

from seal.engine.training import TrainJob
import seal
import seal.api
from seal.domains.knowledge.sequential import aggregate, forgetting_reward
from seal.engine.training import full_finetune
from seal.engine.models import load_model
from seal.engine.store import RunStore

FAST = {"model.dtype": "fp32", "run.show_progress": False, "generation.max_new_tokens": 16, "inner.epochs": 2}


def test_full_finetune_changes_every_layer_inside_and_restores_exactly(tiny_dir):
    lm = load_model(str(tiny_dir), dtype="fp32")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    ids = [lm.tokenizer("Kestrel is a town on the Orrin.")["input_ids"]] * 2
    job = TrainJob(ids, [[1] * len(ids[0])] * 2, lr=1e-2, epochs=2, batch_size=2, seed=0)
    with full_finetune(lm.model, job, pad_id=lm.tokenizer.pad_token_id) as outcome:
        changed = [k for k, v in lm.model.state_dict().items() if not torch.equal(v, before[k])]
        assert outcome.steps == 2 and outcome.losses[1] < outcome.losses[0]
        assert any("mlp" in k for k in changed) and any("embed" in k for k in changed)
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())


@pytest.mark.parametrize("update", ["lora", "full"])
def test_cpt_pools_every_passage_into_one_update(tiny_dir, tmp_path, update):
    out = tmp_path / update
    payload = seal.run("knowledge cpt", {"model.name": str(tiny_dir), "domain.n": 3, "run.out": str(out),
                                         "cpt.update": update, "eval.conditions": ["base", "passage", "self-edit"],
                                         **FAST}, log=lambda m: None)
    res = payload["conditions"]
    assert set(res) == {"base", "passage", "self-edit"}
    n_q = res["base"]["n_questions"]
    assert n_q > 3 and all(r["n_questions"] == n_q and r["n_contexts"] == 3 for r in res.values())
    assert res["passage"]["sequences"] == 3                 # one sequence per passage
    assert res["self-edit"]["sequences"] > 3                # self-edit lines plus the passages
    store = RunStore(out / "store.sqlite")
    rows = {r["condition"]: r for r in store.trials(0)}
    assert sorted(rows) == ["passage", "self-edit"]                      # one update per condition
    assert all(len(r["answers"]) == n_q for r in rows.values())
    assert store.get_meta("cpt")["passage"]["accuracy_micro"] == pytest.approx(sum(rows["passage"]["grades"]) / n_q)
    # Paired by passage: each pooled condition's grades split back into its passages, so a comparison's mean
    # difference is the difference of the macro accuracies, over the same 3 passages.
    pairs = payload["comparisons"]
    assert pairs == store.get_meta("cpt:comparisons")
    assert {(p["condition"], p["versus"]) for p in pairs} == {("passage", "base"), ("self-edit", "base"),
                                                               ("self-edit", "passage")}
    for p in pairs:
        assert p["n_contexts"] == 3 and p["n_questions"] == n_q
        assert p["difference"] == pytest.approx(res[p["condition"]]["accuracy_macro"]
                                                - res[p["versus"]]["accuracy_macro"])
    store.close()
    md = seal.api.write_report(out)["markdown"].read_text()
    assert "Paired comparisons" in md and "| self-edit | passage |" in md


def test_forgetting_reward_and_aggregate():
    assert forgetting_reward(0.8, [0.5, 0.5], [0.5, 0.1], 1.0) == pytest.approx(0.8 - 0.2)
    assert forgetting_reward(0.8, [0.5], [0.9], 1.0) == pytest.approx(0.8)     # gains are not rewarded
    m1 = [[0.1, 0.2], [0.5, None], [0.3, 0.6]]
    m2 = [[0.3, 0.2], [0.7, None], [0.1, 0.4]]
    agg = aggregate([m1, m2], 2)
    assert agg["mean"][0] == pytest.approx([0.2, 0.2]) and agg["mean"][1][1] is None
    assert agg["stderr"][2][0] == pytest.approx(math.sqrt(0.02) / math.sqrt(2))
    assert agg["diagonal_mean"] == pytest.approx((0.6 + 0.5) / 2)


def test_sequential_stream_matrix(tiny_dir, tmp_path):
    out = tmp_path / "seq"
    payload = seal.run("knowledge sequential", {"model.name": str(tiny_dir), "domain.n": 5, "run.out": str(out),
                                                "sequential.streams": 2, "sequential.length": 3, "eval.k": 2,
                                                "sequential.pick": "forgetting", **FAST}, log=lambda m: None)
    f = payload["forgetting"]
    assert f["n_streams"] == 2 and len(f["mean"]) == 4
    for r, row in enumerate(f["mean"]):
        assert len(row) == 3
        filled = [x is not None for x in row]
        assert filled == ([True] * 3 if r == 0 else [i < r for i in range(3)])   # lower-triangular
    store = RunStore(out / "store.sqlite")
    stream = store.get_meta("stream:0")
    base = store.base_evals("round-0")
    assert stream["matrix"][0] == [base[c]["accuracy"] for c in stream["contexts"]]
    # each step trained k=2 candidates, evaluated on every passage seen so far
    rows = [r for r in store.trials(0) if r["condition"].startswith("stream-0/")]
    assert len(rows) == 3 * 2 and len(store.trials(0)) == 2 * 3 * 2   # the stream is in the condition, round 0
    assert {len(r["answers"]) for r in rows if r["condition"] == "stream-0/step-2"} == {
        sum(len(base[c]["grades"]) for c in stream["contexts"])}
    assert all(s["chosen"] in (0, 1) for s in stream["steps"])
    store.close()
    assert json.loads((out / "results.json").read_text())["kind"] == "knowledge-sequential"
