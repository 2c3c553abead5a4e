"""A third domain, written only as a test fixture (plugins/toy_seal.py) and registered as a plugin through the
`seal.domains` entry point, runs eval and one ReST-EM round through the real `seal` command and the shared
engine; its run folder reports like any other."""
import json
import os
import subprocess
import sys
from pathlib import Path

from seal.engine.store import RunStore

PLUGINS = Path(__file__).parent / "plugins"


def _seal(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "seal", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_a_plugin_domain_runs_eval_and_a_rest_em_round_through_the_seal_command(tiny_dir, tmp_path):
    common = ["--model", str(tiny_dir), "--dtype", "fp32", "--no-progress", "--epochs", "2",
              "--max-new-tokens", "12"]
    r = _seal("toy", "eval", *common, "--out", str(tmp_path / "eval"), "--k", "2")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["kind"] == "toy-eval" and list(res["conditions"]) == ["base", "truth", "self-edit"]
    assert res["conditions"]["self-edit"]["n_trials"] == 2 * 2 and res["conditions"]["truth"]["n_trials"] == 2
    store = RunStore(tmp_path / "eval" / "store.sqlite")
    assert {t["condition"] for t in store.trials(0)} == {"truth", "self-edit"}
    assert all(t["status"] == "ok" and t["steps"] > 0 for t in store.trials(0, "truth"))
    store.close()

    r = _seal("toy", "train", *common, "--out", str(tmp_path / "train"), "--sft-rank", "4", "--sft-batch-size", "2")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "train" / "results.json").read_text())
    assert res["kind"] == "toy-train" and [x["round"] for x in res["rounds"]] == [1]
    assert res["rounds"][0]["trials"] == 3 * 2 and res["rounds"][0]["selected"] == 3     # rule best: one per word
    assert "seal-round-1" in res["conditions"]
    assert (tmp_path / "train" / "checkpoints" / "round-1" / "merged" / "config.json").exists()
    r = _seal("report", str(tmp_path / "train"))
    assert r.returncode == 0, r.stderr
    assert "Accuracy per round" in (tmp_path / "train" / "report.md").read_text()


def test_a_broken_plugin_is_named_and_the_others_still_work(tmp_path):
    broken = tmp_path / "broken-0.1.dist-info"
    broken.mkdir()
    (broken / "entry_points.txt").write_text("[seal.domains]\nbroken = no_such_module:SPEC\n")
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "seal", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "knowledge" in r.stdout
    assert "the domain plugin 'broken'" in r.stderr and "no_such_module" in r.stderr
