"""`seal knowledge train` end to end on a tiny model: rounds, checkpoints, results, teacher/student, and a
SIGKILL in the middle of round 2 that a rerun completes with the same trials and no duplicates."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from seal.engine.store import RunStore


def _cmd(model, out, *extra):
    return [sys.executable, "-m", "seal", "knowledge", "train", "--model", str(model), "--dtype", "fp32",
            "--out", str(out), "--no-progress", "--epochs", "2", "--max-new-tokens", "16", "--rounds", "2",
            "--contexts", "3", "--k", "2", "--repeats", "2", "--n", "2", "--sft-rank", "4", "--sft-alpha", "8",
            "--sft-batch-size", "2", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _trials(out):
    db = sqlite3.connect(out / "store.sqlite")
    rows = db.execute("SELECT round, condition, context_id, sample, seed, self_edit, accuracy, finished "
                      "FROM trials ORDER BY round, condition, context_id, sample, seed").fetchall()
    db.close()
    return rows


def test_train_two_rounds_then_resume_after_sigkill_in_round_2(tiny_dir, tmp_path):
    full = tmp_path / "full"
    r = subprocess.run(_cmd(tiny_dir, full), capture_output=True, text=True, timeout=900, env=_env())
    assert r.returncode == 0, r.stderr
    res = json.loads((full / "results.json").read_text())
    assert list(res["conditions"]) == ["base", "passage", "self-edit", "seal-round-1", "base-round-1",
                                       "seal-round-2", "base-round-2"]
    assert [x["round"] for x in res["rounds"]] == [1, 2]
    # Every accuracy row counts the 2 eval passages only (the no-update model is also scored on training passages).
    assert all(c["n_contexts"] == 2 for c in res["conditions"].values()), res["conditions"]
    assert all(x["trials"] == 3 * 2 * 2 and x["selected"] == 3 for x in res["rounds"])
    for rnd in (1, 2):
        assert (full / "checkpoints" / f"round-{rnd}" / "merged" / "config.json").exists()
        assert (full / "checkpoints" / f"round-{rnd}" / "adapter" / "adapter_config.json").exists()
    # What each round's sampled and selected self-edits are made of (the knowledge domain's self_edit_stats).
    for x in res["rounds"]:
        prof = x["self_edit_profile"]
        assert prof["selected"]["n"] == 3 and 3 <= prof["sampled"]["n"] <= 6
        assert all(0 <= g[f] <= 1 for g in prof.values() for f in ("gold_answers", "novel_words"))
        assert prof["sampled"]["chars"] > 0
    store = RunStore(full / "store.sqlite")
    assert store.get_meta("round_models") == {"0": "round-0", "1": "round-1", "2": "round-2"}
    assert len(store.get_meta("selected:2")) == 3 and store.get_meta("sft:2")["steps"] == 4
    # the metrics stream: each round, each generator-finetune step, each inner-loop trial
    from seal.engine.metrics import read_metrics
    events = read_metrics(full)
    assert [e["step"] for e in events if e["event"] == "round"] == [1, 2]
    assert sum(e["event"] == "finetune" for e in events) == 4 + 4
    assert sum(e["event"] == "trial" for e in events) == len(store.trials())
    # Round r's training passages are disjoint from round r-1's.
    ctx = {rnd: {t["context_id"] for t in store.trials(rnd, "train")} for rnd in (1, 2)}
    assert len(ctx[1]) == len(ctx[2]) == 3 and not ctx[1] & ctx[2]
    store.close()

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny_dir, killed, "--adapters-per-pack", "1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if any(row[0] == 2 and row[1] == "train" for row in _trials(killed)):
                break
        except sqlite3.OperationalError:
            pass   # the store is not created yet
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _trials(killed)
    assert any(row[0] == 2 for row in before) and len(before) < len(_trials(full)), "the kill lands in round 2"
    r = subprocess.run(_cmd(tiny_dir, killed, "--adapters-per-pack", "1"), capture_output=True, text=True,
                       timeout=900, env=_env())
    assert r.returncode == 0, r.stderr
    assert "resuming from the round-1 checkpoint" in r.stderr
    after = _trials(killed)
    assert len(after) == len({row[:5] for row in after})                  # no duplicates
    assert set(before) <= set(after)                                        # stored trials untouched
    # The same trials as the uninterrupted run: same keys, same self-edits, same accuracies.
    assert [row[:7] for row in after] == [row[:7] for row in _trials(full)]


def test_teacher_and_student(tiny_dir, tmp_path):
    """The teacher writes the self-edits and is finetuned; the student is the model updated and evaluated."""
    out = tmp_path / "ts"
    r = subprocess.run(_cmd(tiny_dir, out, "--rounds", "1", "--eval-rounds", "last", "--student", str(tiny_dir)),
                       capture_output=True, text=True, timeout=900, env=_env())
    assert r.returncode == 0, r.stderr
    store = RunStore(out / "store.sqlite")
    assert set(store.get_meta("round_models").values()) == {"student"}
    assert (out / "checkpoints" / "round-1" / "merged" / "config.json").exists()
    assert len(store.trials(1, "eval")) == 2 and len(store.trials(1, "train")) == 12
    store.close()
