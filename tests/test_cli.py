"""The CLI end to end on a tiny random Llama folder (the same loading path as a hub model): results, resume
after SIGKILL, and every kind of bad input."""
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from .test_graders import _JudgeHandler
from .conftest import loopback_server


def _cmd(tiny_dir, out, *extra):
    return [sys.executable, "-m", "seal", "knowledge", "eval", "--model", str(tiny_dir), "--dtype", "fp32",
            "--out", str(out), "--no-progress", "--epochs", "2", "--max-new-tokens", "24", *extra]


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def _trials(out):
    db = sqlite3.connect(out / "store.sqlite")
    rows = db.execute("SELECT condition, context_id, sample, seed, finished, status, reward FROM trials").fetchall()
    db.close()
    return rows


def test_cli_end_to_end_and_resume(tiny_dir, tmp_path):
    out = tmp_path / "run"
    r = _run(_cmd(tiny_dir, out, "--n", "3", "--conditions", "base,passage,self-edit"))
    assert r.returncode == 0, r.stderr
    assert "passage" in r.stdout and "95% CI" in r.stdout
    res = json.loads((out / "results.json").read_text())["conditions"]
    assert set(res) == {"base", "passage", "self-edit"}
    for cond in res.values():
        assert 0.0 <= cond["accuracy"] <= 1.0
        assert cond["ci95"][0] <= cond["accuracy"] <= cond["ci95"][1]
        assert cond["n_questions"] > 0
    rows = _trials(out)
    assert len(rows) == 6
    r2 = _run(_cmd(tiny_dir, out, "--n", "3", "--conditions", "base,passage,self-edit"))
    assert r2.returncode == 0 and "running" not in r2.stderr   # nothing left to run
    assert _trials(out) == rows
    r3 = _run(_cmd(tiny_dir, out, "--n", "3", "--conditions", "base,passage,self-edit", "--lr", "1e-4"))
    assert r3.returncode == 2 and "other settings (inner.lr)" in r3.stderr
    # The run folder's resolved config reproduces the run: the same settings, so it resumes with nothing to do.
    r4 = _run([sys.executable, "-m", "seal", "knowledge", "eval", "--config", str(out / "config.yaml")])
    assert r4.returncode == 0 and "running" not in r4.stderr, r4.stderr
    assert _trials(out) == rows
    # Metrics stream: every training step of every trial, and every trial, in metrics.jsonl.
    from seal.engine.metrics import read_metrics
    events = read_metrics(out)
    trials = [e for e in events if e["event"] == "trial"]
    steps = [e for e in events if e["event"] == "train"]
    assert len(trials) == 6 and {e["condition"] for e in trials} == {"passage", "self-edit"}
    store_steps = sum(row[0] for row in sqlite3.connect(out / "store.sqlite").execute("SELECT steps FROM trials"))
    assert len(steps) == store_steps and all(isinstance(e["loss"], float) for e in steps)
    # The report reads the same numbers as results.json (one function, one context order).
    r5 = _run([sys.executable, "-m", "seal", "report", str(out)])
    assert r5.returncode == 0, r5.stderr
    md = (out / "report.md").read_text()
    for name, cond in res.items():
        ci = f"[{100 * cond['ci95'][0]:.1f}, {100 * cond['ci95'][1]:.1f}]"
        assert f"| {name} | {100 * cond['accuracy']:.1f}% | {ci} |" in md, (name, ci)
    assert "## Examples" in md and "| question | gold | base | self-edit |" in md
    # Every two conditions compared paired by context, in results.json and the report alike: on the same 3
    # contexts, the mean of the differences is the difference of the means.
    pairs = json.loads((out / "results.json").read_text())["comparisons"]
    assert {(p["condition"], p["versus"]) for p in pairs} == {("passage", "base"), ("self-edit", "base"),
                                                               ("self-edit", "passage")}
    for p in pairs:
        assert p["n_contexts"] == 3 and p["wins"] + p["losses"] + p["ties"] == 3
        assert p["difference"] == pytest.approx(res[p["condition"]]["accuracy"] - res[p["versus"]]["accuracy"])
        assert p["ci95"][0] <= p["difference"] <= p["ci95"][1] and 0 < p["sign_test_p"] <= 1
        assert (f"| {p['condition']} | {p['versus']} | {100 * p['difference']:+.1f} | "
                f"[{100 * p['ci95'][0]:.1f}, {100 * p['ci95'][1]:.1f}] |") in md
    # A folder written before configs (settings version 1: flat settings, the command line in the store) resumes
    # when its command line means the same settings today, and is refused when it does not.
    import shlex
    db = sqlite3.connect(out / "store.sqlite")
    cmd = _cmd(tiny_dir, out, "--n", "3", "--conditions", "base,passage,self-edit")
    with db:
        db.execute("DELETE FROM meta WHERE key = 'settings_version'")
        db.execute("UPDATE meta SET value = ? WHERE key = 'settings'", (json.dumps({"n": 3, "k": 1}),))
        db.execute("UPDATE meta SET value = ? WHERE key = 'command'", (json.dumps("seal " + shlex.join(cmd[3:])),))
    db.close()
    r6 = _run(_cmd(tiny_dir, out, "--n", "3", "--conditions", "base,passage,self-edit", "--lr", "1e-4"))
    assert r6.returncode == 2 and "other settings" in r6.stderr
    r7 = _run(cmd)
    assert r7.returncode == 0 and "running" not in r7.stderr, r7.stderr
    assert _trials(out) == rows


def test_bad_data_file_fails_before_model_work(tiny_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"title": "T", "context": "text", "questions": [{"question": "Q?", "answer": 3}]}]))
    t0 = time.time()
    r = _run(_cmd(tiny_dir, tmp_path / "run", "--data", str(bad)))
    assert r.returncode == 2
    assert f"{bad}: record 0, field 'questions[0].answer': expected a string" in r.stderr
    assert not (tmp_path / "run").exists()
    assert time.time() - t0 < 60


def test_unknown_condition_and_missing_file_passages(tiny_dir, tmp_path):
    r = _run(_cmd(tiny_dir, tmp_path / "r", "--conditions", "base,magic"))
    assert r.returncode == 2 and "unknown condition 'magic'" in r.stderr
    other = tmp_path / "edits.json"
    other.write_text(json.dumps([{"title": "X", "context": "Y", "questions": [{"question": "q", "answer": "a"}],
                                  "completions": ["z"]}]))
    r = _run(_cmd(tiny_dir, tmp_path / "r", "--conditions", f"file:{other}"))
    assert r.returncode == 2 and "no record for passage" in r.stderr and str(other) in r.stderr


def test_generator_condition_writes_with_another_model_and_trains_the_learner(tiny_dir, tmp_path):
    """generator:PATH in an eval: another model folder writes the self-edits, --model learns them, and the result
    is paired with the model's own self-edits on the same passages."""
    import shutil
    other = tmp_path / "writer"
    shutil.copytree(tiny_dir, other)
    out = tmp_path / "run"
    cond = f"generator:{other}"
    r = _run(_cmd(tiny_dir, out, "--n", "2", "--conditions", f"self-edit,{cond}"))
    assert r.returncode == 0, r.stderr
    payload = json.loads((out / "results.json").read_text())
    assert payload["conditions"][cond]["n_trials"] == 2 and payload["conditions"][cond]["n_questions"] > 0
    pair = [p for p in payload["comparisons"] if {p["condition"], p["versus"]} == {cond, "self-edit"}]
    assert len(pair) == 1 and pair[0]["n_contexts"] == 2
    from seal.engine.store import RunStore
    store = RunStore(out / "store.sqlite")
    texts = store.self_edits(0, cond)
    store.close()
    assert len(texts) == 2


def test_empty_self_edits_are_recorded_with_reward_zero(tiny_dir, tmp_path):
    from seal.domains.knowledge.data import builtin_passages, select
    chosen = select(builtin_passages("eval"), 2)
    recs = [{"title": p.title, "context": p.context,
             "questions": [{"question": q.question, "answer": q.answer} for q in p.questions],
             "completions": ["   "] if i == 0 else ["1. A fact.\n2. Another fact."]} for i, p in enumerate(chosen)]
    f = tmp_path / "edits.json"
    f.write_text(json.dumps(recs))
    out = tmp_path / "run"
    r = _run(_cmd(tiny_dir, out, "--n", "2", "--conditions", f"file:{f}"))
    assert r.returncode == 0, r.stderr
    rows = {row[1]: row for row in _trials(out)}
    assert rows[chosen[0].id][5] == "invalid" and rows[chosen[0].id][6] == 0.0
    assert rows[chosen[1].id][5] == "ok"


@pytest.fixture
def judge_url():
    with loopback_server(_JudgeHandler) as url:
        yield url


def test_judge_run_keeps_the_key_out_of_every_file(tiny_dir, tmp_path, judge_url):
    secret = "sk-live-DO-NOT-LEAK-4242"
    env = {**os.environ, "SEAL_SECRET": secret}
    out = tmp_path / "run"
    r = _run(_cmd(tiny_dir, out, "--n", "1", "--conditions", "base,passage", "--grader", "judge",
                  "--judge-url", judge_url, "--judge-model", "judge", "--judge-key-env", "SEAL_SECRET"), env=env)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_unreachable_judge_fails_before_training(tiny_dir, tmp_path):
    t0 = time.time()
    r = _run(_cmd(tiny_dir, tmp_path / "run", "--grader", "judge", "--judge-url", "http://127.0.0.1:9/v1"))
    assert r.returncode == 2 and "judge is not usable" in r.stderr
    assert not (tmp_path / "run" / "store.sqlite").exists()
    assert time.time() - t0 < 60
