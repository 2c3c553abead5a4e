"""A run: its folder, store, resolved config, metrics sink and results, shared by every recipe.

Opening a run checks that the folder holds no run of another recipe or other settings (naming what differs),
writes the resolved config (config.yaml: `--config` it to reproduce the run), and stores the command line.
Every step that follows reads what the store already holds and adds only what is missing, so the same command
resumes a killed run.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

from ..engine.protocol import Trial, TrialResult
from ..engine.metrics import MetricsSink
from ..engine.faults import fault_point
from ..engine.protocol import Evaluation
from ..engine.models import check_model_name
from ..engine.store import RunStore
from .config import Config

SETTINGS_VERSION = 2


class RunError(ValueError):
    pass


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


class Run:
    def __init__(self, cfg: Config, kind: str, command: str = ""):
        self.cfg = cfg
        self.kind = kind
        self.out = Path(cfg.run.out)
        check_model_name(cfg.model.name)
        if "outer" in cfg.sections and cfg.outer.student:
            check_model_name(cfg.outer.student)
        self.store = RunStore(self.out / "store.sqlite")
        settings = json.loads(json.dumps(cfg.settings()))
        old = self.store.get_meta("settings")
        old_kind = self.store.get_meta("kind")
        if old_kind is not None and old_kind != kind:
            self.store.close()
            raise RunError(f"{self.out} holds a {old_kind} run, not {kind}; use another --out")
        if old is not None and old != settings and self.store.get_meta("settings_version") is None and cfg.legacy:
            # A folder from before configs: its flat settings cannot be compared, but its command line can be read
            # again; when it means exactly these settings, the run resumes.
            if cfg.legacy(self.store.get_meta("command") or "") == settings:
                old = settings
        if old is not None and old != settings:
            diff = _diff(old, settings)
            self.store.close()
            raise RunError(f"{self.out} holds a run with other settings ({', '.join(diff[:8])}"
                           f"{', ...' if len(diff) > 8 else ''}); use another --out, or the same options "
                           f"(or --config {self.out / 'config.yaml'}) to resume")
        self.store.set_meta("settings", settings)
        self.store.set_meta("settings_version", SETTINGS_VERSION)
        self.store.set_meta("kind", kind)
        self.store.set_meta("domain", kind.split("-")[0])
        if command:
            self.store.set_meta("command", command)
        self.command = command or self.store.get_meta("command") or ""
        tmp = self.out / "config.yaml.tmp"
        tmp.write_text(cfg.to_yaml())
        tmp.replace(self.out / "config.yaml")
        self.metrics = MetricsSink(self.out, cfg.run.log_to)

    def close(self) -> None:
        self.metrics.close()
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- time spent per step, summed over resumes
    @contextmanager
    def timing(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_timing(name, time.perf_counter() - t0)

    def add_timing(self, name: str, seconds: float) -> None:
        timings = self.store.get_meta("timings") or {}
        timings[name] = timings.get(name, 0.0) + seconds
        self.store.set_meta("timings", timings)

    # --- what a report shows of the contexts
    def describe(self, domain, contexts: Sequence[Any]) -> None:
        known = self.store.contexts()
        views = [(c.id, domain.describe(c)) for c in contexts if c.id not in known]
        if views:
            self.store.add_contexts([(cid, v.title, v.questions, v.gold) for cid, v in views])

    # --- the base model's evaluation of each context, once per model
    def base_evals(self, loop, model_key: str, contexts: Sequence[Any]) -> dict[str, Evaluation]:
        bases = self.store.base_evals(model_key)
        missing = [c for c in contexts if c.id not in bases]
        if missing:
            with self.timing(f"base:{model_key}"):
                evs = loop.base_evaluations(missing)
            self.store.add_base_evals(model_key, [(c.id, e.answers, e.grades, e.accuracy)
                                                  for c, e in zip(missing, evs)])
            bases = self.store.base_evals(model_key)
        return {c.id: Evaluation(bases[c.id]["answers"], bases[c.id]["grades"], bases[c.id]["accuracy"])
                for c in contexts}

    # --- trials: handed to the executor, each result stored (one transaction) and logged as it arrives
    def run_trials(self, executor, trials: list[Trial], bases: dict[str, Evaluation] | None = None,
                   keep_adapters: bool = False, log=None) -> list[TrialResult]:
        if trials and log:
            log(f"running {len(trials)} trial(s)")
        before = dict(getattr(executor, "stats", {}))
        t0 = time.perf_counter()
        out = executor.run(trials, bases=bases, on_result=self.recorder(trials), keep_adapters=keep_adapters)
        if trials:
            self.add_timing("trials", time.perf_counter() - t0)
        # A Ray executor's seconds: its workers loading models and computing packs, the driver recording results
        # (docs/SCALING.md reads them to give the driver's and the transfers' cost per trial).
        for key in ("load", "compute", "driver"):
            if key in before:
                self.add_timing(f"ray:{key}", executor.stats[key] - before[key])
        return out

    def recorder(self, trials: list[Trial]):
        by_key = {t.key: t for t in trials}

        def record(res: TrialResult) -> None:
            t = by_key[res.key]
            ev = res.evaluation
            status = "ok" if res.error is None else ("invalid" if t.update.error else "failed")
            self.store.add_trial(res.key, status=status, reward=res.reward, self_edit=t.self_edit,
                                 sequences=t.update.texts, pairs=t.update.pairs,
                                 answers=ev.answers if ev else None, grades=ev.grades if ev else None,
                                 accuracy=ev.accuracy if ev else 0.0, error=res.error, steps=res.steps,
                                 final_loss=res.final_loss, seconds=res.seconds)
            round_, condition, context_id, sample, seed = res.key
            ids = dict(round=round_, condition=condition, context=context_id, sample=sample, repeat=seed)
            if res.losses:
                self.metrics.log_steps("train", res.losses, **ids)
            self.metrics.log("trial", None, **ids, status=status, reward=res.reward,
                             accuracy=ev.accuracy if ev else 0.0, steps=res.steps, final_loss=res.final_loss,
                             seconds=res.seconds)
        return record

    # --- results.json: written once, by this one function, from the summary the report reads too
    def write_results(self, **fields) -> dict:
        payload = {"kind": self.kind, "recipe": self.cfg.recipe, "settings": self.store.get_meta("settings"),
                   **fields, "command": self.command}
        write_json(self.out / "results.json", payload)
        return payload


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    fault_point("results.write")
    tmp.replace(path)
