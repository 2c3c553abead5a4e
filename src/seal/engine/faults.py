"""Named fault points inside the short critical windows of a run, for the kill/fault matrix.

The reliability suite (tests/test_reliability.py, benchmarks/kill_matrix.py) must land a kill exactly inside a
store transaction, between a checkpoint's temporary write and its rename, or between a merge into the weights
and the checkpoint that records it; a timer almost never does. With no environment variable set, a fault point
costs two environment lookups and does nothing.

    SEAL_FAULT=NAME[@N][:ACTION]   at the N-th time (default 1) this process reaches point NAME:
                                   ACTION kill (default: SIGKILL itself), raise (an unexpected RuntimeError),
                                   or nospace (an OSError as a full disk raises)
    SEAL_FAULT_TRACE=FILE          append the name of every point reached to FILE (how many times each is hit)

The points: store.trial, store.self_edits, store.base (inside the store's transactions, before commit),
results.write (results.json written under its temporary name, not yet renamed), checkpoint.write (a model
folder written under its temporary name), checkpoint.swap (the old folder removed, the new one not yet renamed),
adapter.write (a PEFT adapter's weights written, its config not yet), merge (the generator's adapter merged into
the weights in memory, the checkpoint not yet written), sequential.merge (a sequential edit merged, its stream
not yet stored), report.write (a report file written under its temporary name).
"""
from __future__ import annotations

import errno
import os
import signal

POINTS = ("store.trial", "store.self_edits", "store.base", "results.write", "checkpoint.write", "checkpoint.swap",
          "adapter.write", "merge", "sequential.merge", "report.write")

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Reach point `name`: do what SEAL_FAULT asks there, if anything."""
    trace = os.environ.get("SEAL_FAULT_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(name + "\n")
    spec = os.environ.get("SEAL_FAULT")
    if not spec:
        return
    point, _, action = spec.partition(":")
    point, _, nth = point.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    if action in ("", "kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise RuntimeError(f"fault injected at {name}")
    elif action == "nospace":
        raise OSError(errno.ENOSPC, f"No space left on device (fault injected at {name})")
    else:
        raise ValueError(f"SEAL_FAULT: unknown action {action!r} (kill, raise or nospace)")
