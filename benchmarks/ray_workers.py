"""The same knowledge eval on 1 and 2 Ray workers (1 CPU each) of a cluster started here, and without Ray: trials
per minute, what the driver and the transfers cost per trial, and whether the stores agree.

    python benchmarks/ray_workers.py --json docs/ray-workers.json

A Ray head with 2 CPUs is started on loopback for the run and stopped at the end. Each configuration is one
`seal knowledge eval` in a fresh folder; its store's timings give the wall time of the trials (`trials`), the
seconds the workers spent loading the model and computing packs (`ray:load`, `ray:compute`) and the seconds the
driver spent receiving and recording results (`ray:driver`). What a worker spends neither loading nor computing
(waiting for packs, sending results back) is the transfer cost: workers x wall - load - compute.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(cpus: int, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    head = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    for _ in range(120):
        r = subprocess.run(["ray", "status", f"--address={address}"], capture_output=True, text=True, env=env)
        if r.returncode == 0 and f"{cpus}.0 CPU" in r.stdout:
            return head, address
        time.sleep(1)
    raise SystemExit("the Ray head did not start")


def stop_head(head: subprocess.Popen) -> None:
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(30)


def stored(out: Path) -> tuple[list, dict]:
    db = sqlite3.connect(out / "store.sqlite")
    rows = db.execute("SELECT round, condition, context_id, sample, seed, status, self_edit, answers, grades, reward, "
                      "steps, final_loss FROM trials ORDER BY 1, 2, 3, 4, 5").fetchall()
    timings = json.loads(db.execute("SELECT value FROM meta WHERE key = 'timings'").fetchone()[0])
    db.close()
    return rows, timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="eval passages")
    ap.add_argument("--repeats", type=int, default=4, help="seeds per passage (trials = n x repeats)")
    ap.add_argument("--model", default=None, help="default: the built-in model")
    ap.add_argument("--extra", default="", help="more seal flags, e.g. '--epochs 2'")
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default=None, help="run folders (default: a temporary folder)")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SEAL_FAULT"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    work = Path(a.work or tempfile.mkdtemp(prefix="ray-workers-"))
    base = [sys.executable, "-m", "seal", "knowledge", "eval", "--conditions", "passage", "--n", str(a.n),
            "--repeats", str(a.repeats), "--no-progress", *(["--model", a.model] if a.model else []), *a.extra.split()]
    head, address = start_head(2, env)
    results, reference = [], None
    try:
        configs = [("local (2 threads)", [], 0), ("ray, 1 worker x 1 CPU", ["--workers", "1"], 1),
                   ("ray, 2 workers x 1 CPU", ["--workers", "2"], 2)]
        for name, flags, workers in configs:
            out = work / f"workers-{workers}"
            ray = ["--executor", "ray", "--ray-address", address, *flags] if workers else []
            t0 = time.perf_counter()
            r = subprocess.run([*base, "--out", str(out), *ray], capture_output=True, text=True, env=env)
            wall_cmd = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"{name} failed: {r.stderr[-2000:]}")
            rows, t = stored(out)
            reference = reference or rows
            n, wall = len(rows), t["trials"]
            row = {"config": name, "workers": workers, "trials": n, "trials_wall_s": round(wall, 1),
                   "command_wall_s": round(wall_cmd, 1), "trials_per_min": round(60 * n / wall, 2),
                   "same_store_as_local": rows == reference}
            if workers:
                load, compute, driver = t["ray:load"], t["ray:compute"], t["ray:driver"]
                row.update(worker_load_s=round(load, 1), worker_compute_s=round(compute, 1),
                           compute_per_trial_s=round(compute / n, 3), driver_per_trial_ms=round(1000 * driver / n, 1),
                           transfer_and_wait_per_trial_ms=round(1000 * (workers * wall - load - compute) / n, 1))
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop_head(head)
    local = results[0]["trials_per_min"]
    for row in results:
        row["speedup_vs_local"] = round(row["trials_per_min"] / local, 2)
    payload = {"command": "python " + " ".join(sys.argv), "cpus": os.cpu_count(), "n": a.n, "repeats": a.repeats,
               "results": results}
    print(json.dumps(payload, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
