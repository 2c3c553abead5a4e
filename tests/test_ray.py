"""Trials on a real Ray cluster started on this machine (`ray start --head` on loopback, 2 CPUs; not Ray's local
mode): the same stored results with `--executor ray` (1 and 2 workers) as with `--executor local`, for a
knowledge eval, one ReST-EM round and an ARC eval; a worker SIGKILLed in the middle of a pack loses and
duplicates nothing; a cluster that cannot be used is refused in one line before any model work."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'seal-lm[ray]')")

EVAL = ["knowledge", "eval", "--epochs", "2", "--max-new-tokens", "16", "--n", "3", "--k", "2", "--repeats", "2"]
TRAIN = ["knowledge", "train", "--epochs", "2", "--max-new-tokens", "16", "--rounds", "1", "--contexts", "2", "--k", "2",
         "--repeats", "2", "--n", "2", "--sft-rank", "4", "--sft-alpha", "8", "--sft-batch-size", "2"]
ARC = ["arc", "eval", "--tasks", "builtin:tiny:1:0", "--k", "2", "--epochs", "1"]


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEAL_FAULT", "RAY_"))}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head node on loopback with 2 worker CPUs, stopped (with every process it started) at the end."""
    port = _free_port()
    head = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        ok = subprocess.run(["ray", "status", f"--address={address}"], capture_output=True, text=True, env=_env())
        if ok.returncode == 0 and "2.0 CPU" in ok.stdout:
            break
        if head.poll() is not None or time.time() > deadline:
            head.kill()
            pytest.fail(f"the Ray head did not start: {head.stderr.read()[-2000:] if head.stderr else ''}")
        time.sleep(1)
    yield address
    os.killpg(head.pid, signal.SIGTERM)     # the head, its processes and the workers they started
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(30)


def _seal(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "seal", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _tiny(tiny_dir, out):
    return ["--model", tiny_dir, "--dtype", "fp32", "--no-progress", "--out", out]


def _ray(address, workers):
    return ["--executor", "ray", "--ray-address", address, "--workers", workers]


def _stored(out):
    """Everything a run stored except timings: every trial's row, the self-edits, base answers, the settings, each
    round's selection and generator finetune."""
    db = sqlite3.connect(out / "store.sqlite")

    def rows(table, order, skip=("seconds", "finished", "created")):
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] not in skip]
        return db.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}").fetchall()
    got = {"trials": rows("trials", "round, condition, context_id, sample, seed"),
           "self_edits": rows("self_edits", "round, source, context_id, sample"),
           "base_evals": rows("base_evals", "model, context_id")}
    for key, value in db.execute("SELECT key, value FROM meta WHERE key = 'settings' OR key LIKE 'selected:%' OR "
                                 "key LIKE 'sft:%'"):
        value = json.loads(value)
        got[key] = {k: v for k, v in value.items() if k != "seconds"} if key.startswith("sft:") else value
    db.close()
    return got


@pytest.fixture(scope="module")
def local_eval(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "local"
    r = _seal(*EVAL, *_tiny(tiny_dir, out))
    assert r.returncode == 0, r.stderr[-3000:]
    return _stored(out)


def test_knowledge_eval_on_one_and_two_workers_stores_what_local_does(ray_head, local_eval, tiny_dir, tmp_path):
    assert len(local_eval["trials"]) == 3 * 2 + 3 * 2 * 2        # passage x 2 seeds, self-edit 2 x 2 seeds
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        r = _seal(*EVAL, *_tiny(tiny_dir, out), *_ray(ray_head, workers))
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"ray: {workers} worker(s) x 1 CPU(s) on a cluster of 2 CPU(s)" in r.stderr
        assert _stored(out) == local_eval, workers


def test_a_rest_em_round_and_an_arc_eval_on_two_workers_store_what_local_does(ray_head, tiny_dir, tmp_path):
    for recipe in (TRAIN, ARC):
        ref, dist = tmp_path / f"{recipe[0]}-local", tmp_path / f"{recipe[0]}-ray"
        r = _seal(*recipe, *_tiny(tiny_dir, ref))
        assert r.returncode == 0, r.stderr[-3000:]
        r = _seal(*recipe, *_tiny(tiny_dir, dist), *_ray(ray_head, 2))
        assert r.returncode == 0, r.stderr[-3000:]
        if recipe is TRAIN:      # the round-1 evaluation is answered by the round's checkpoint, loaded by the workers
            assert f"ray: the workers load {dist.resolve()}/checkpoints/round-1/merged" in r.stderr, r.stderr
        stored = _stored(ref)
        assert stored["trials"] and _stored(dist) == stored, recipe[0]


def _worker_running_a_pack() -> int | None:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in ps.splitlines()[1:] if line.split()[1:2] == ["ray::PackWorker.run_pack"]]
    return pids[0] if pids else None


def test_a_worker_killed_mid_pack_loses_and_duplicates_nothing(ray_head, local_eval, tiny_dir, tmp_path):
    out = tmp_path / "killed"
    args = [*EVAL, *_tiny(tiny_dir, out), *_ray(ray_head, 2), "--adapters-per-pack", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "seal", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=_env())
    killed, deadline = None, time.time() + 300
    while killed is None and proc.poll() is None and time.time() < deadline:
        stored = 0
        if (out / "store.sqlite").exists():
            try:
                db = sqlite3.connect(out / "store.sqlite", timeout=5)
                stored = db.execute("SELECT COUNT(*) FROM trials WHERE condition != 'base'").fetchone()[0]
                db.close()
            except sqlite3.OperationalError:   # the table is not there yet
                pass
        pid = _worker_running_a_pack() if stored >= 1 else None
        if pid:
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert killed, "no worker was caught running a pack"
    assert proc.returncode == 0, err[-3000:]
    assert "died" in err and "re-queued" in err, err[-3000:]
    got = _stored(out)
    keys = [row[:5] for row in got["trials"]]
    assert len(keys) == len(set(keys))                      # nothing twice
    assert got == local_eval                                # nothing lost, nothing different


def test_a_cluster_that_cannot_be_used_is_refused_before_model_work(ray_head, tiny_dir, tmp_path):
    cases = [(_ray(f"127.0.0.1:{_free_port()}", 1), "no Ray cluster can be reached at 127.0.0.1:"),
             (_ray(ray_head, 3), "the Ray cluster has 2 CPU(s); 3 worker(s) x 1 CPU(s) each need 3"),
             (_ray(ray_head, 1) + ["--worker-gpus", "1"], "the Ray cluster has 0 GPU(s)")]
    for flags, says in cases:
        out = tmp_path / "refused"
        r = _seal(*EVAL, *_tiny(tiny_dir, out), *flags, timeout=180)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert says in r.stderr, r.stderr[-2000:]
        assert not (out / "store.sqlite").exists()
    r = _seal("knowledge", "sequential", "--streams", "1", "--length", "2", *_tiny(tiny_dir, tmp_path / "seq"),
              *_ray(ray_head, 1))
    assert r.returncode == 2 and "runs with --executor local only" in r.stderr, r.stderr[-2000:]
