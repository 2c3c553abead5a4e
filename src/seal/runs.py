"""The parts every experiment shares: the run folder's store, seeds, stored base evaluations, trial records.

Domain-free: a context is anything with an `id`, and a trial is graded by whichever domain the inner loop has.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path

from .domains.base import Evaluation
from .store import RunStore


def trial_seed(run_seed: int, *parts) -> int:
    return zlib.crc32(json.dumps([run_seed, *parts]).encode()) & 0x7FFFFFFF


def open_store(out: Path, settings: dict, kind: str) -> RunStore:
    """The run's store; a folder that holds a run with other settings is refused, naming what differs."""
    store = RunStore(Path(out) / "store.sqlite")
    old = store.get_meta("settings")
    if old is not None and old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        store.close()
        raise ValueError(f"{out} holds a run with other settings ({', '.join(diff)}); use another --out "
                         "or the same options to resume")
    store.set_meta("settings", settings)
    store.set_meta("kind", kind)
    store.set_meta("command", os.environ.get("SEAL_COMMAND", ""))
    return store


def add_timing(store: RunStore, name: str, seconds: float) -> None:
    timings = store.get_meta("timings") or {}
    timings[name] = timings.get(name, 0.0) + seconds
    store.set_meta("timings", timings)


def ensure_base_evals(store: RunStore, loop, model_key: str, contexts: list) -> dict[str, Evaluation]:
    """The base model's evaluation of each context, computed once and stored under `model_key`."""
    bases = store.base_evals(model_key)
    missing = [p for p in contexts if p.id not in bases]
    if missing:
        t0 = time.perf_counter()
        evs = loop.base_evaluations(missing)
        store.add_base_evals(model_key, [(p.id, e.answers, e.grades, e.accuracy) for p, e in zip(missing, evs)])
        add_timing(store, f"base:{model_key}", time.perf_counter() - t0)
        bases = store.base_evals(model_key)
    return {p.id: Evaluation(bases[p.id]["answers"], bases[p.id]["grades"], bases[p.id]["accuracy"])
            for p in contexts}


def trial_recorder(store: RunStore, trials: list):
    """A callback that stores each finished trial (one transaction each)."""
    by_key = {t.key: t for t in trials}

    def record(res):
        t = by_key[res.key]
        ev = res.evaluation
        status = "ok" if res.error is None else ("invalid" if t.update.error else "failed")
        store.add_trial(res.key, status=status, reward=res.reward, self_edit=t.self_edit,
                        sequences=t.update.texts, answers=ev.answers if ev else None,
                        grades=ev.grades if ev else None, accuracy=ev.accuracy if ev else 0.0,
                        error=res.error, steps=res.steps, final_loss=res.final_loss, seconds=res.seconds)
    return record


def write_results(out: str | Path, kind: str, settings: dict, **fields) -> dict:
    """RUN_DIR/results.json: the run's kind, settings, results and the command that made it."""
    payload = {"kind": kind, "settings": settings, **fields, "command": os.environ.get("SEAL_COMMAND", "")}
    write_json(Path(out) / "results.json", payload)
    return payload


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
