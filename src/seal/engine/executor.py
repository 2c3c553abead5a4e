"""Where trials run. Recipes hand trials to an executor and get each result back through `on_result`; the driver
alone writes the store, so resuming works the same whatever runs the trials.

Both executors form packs with the same function (`InnerLoop.packs`) and every trial carries the seed the driver
gave it, so the stored results do not depend on the executor or on the number of workers.

- `LocalExecutor` runs the packs in this process on one inner loop.
- `RayExecutor` runs them on Ray actors. Each actor builds its own model replica and domain once (from a
  picklable `build`, called with the model's name) and trains and answers the packs it is sent. The model that
  is updated is named by path: the built-in model and hub ids are resolved on each machine, and a round's merged
  checkpoint is read from the run folder, which must therefore be on storage that every machine shares. The
  results come back through Ray's object store. A worker that dies has its packs re-queued on a fresh actor
  (up to `retries` attempts per pack); a driver that dies resumes from the store like any run.
"""
from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from .inner import InnerLoop, Trial, TrialResult
from .protocol import Evaluation


class Executor(Protocol):
    def run(self, trials: Sequence[Trial], bases: dict[str, Evaluation] | None = None,
            on_result: Callable[[TrialResult], None] | None = None,
            keep_adapters: bool = False) -> list[TrialResult]: ...


class ExecutorError(ValueError):
    """A cluster that cannot be used (no cluster at the address, too few CPUs, a worker that keeps dying)."""


class LocalExecutor:
    """Trials in packs on one in-process inner loop."""

    def __init__(self, loop: InnerLoop):
        self.loop = loop

    def run(self, trials, bases=None, on_result=None, keep_adapters=False):
        return self.loop.run(trials, bases=bases, on_result=on_result, keep_adapters=keep_adapters)


def model_ref(name: str) -> str:
    """The name a worker loads the model by: a local path made absolute (workers do not share the driver's
    working folder), anything else (a hub id, the built-in model's name) as it is."""
    return str(Path(name).resolve()) if Path(name).exists() else name


def connect(address: str | None, workers: int, cpus: float, gpus: float) -> dict:
    """Connect to the Ray cluster (once per process) and check that it can hold the workers; its resources."""
    import logging

    import ray
    if not ray.is_initialized():
        _reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                     include_dashboard=False, configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or os.environ.get("RAY_ADDRESS") or "this machine"
            raise ExecutorError(f"no Ray cluster can be reached at {where} ({str(e).splitlines()[0][:200]}); start "
                                "one with `ray start --head` or give --ray-address host:port") from None
    have = ray.cluster_resources()
    for what, per in (("CPU", cpus), ("GPU", gpus)):
        if per and have.get(what, 0) < workers * per:
            raise ExecutorError(f"the Ray cluster has {have.get(what, 0):g} {what}(s); {workers} worker(s) x {per:g} "
                                f"{what}(s) each need {workers * per:g} (--workers, --worker-cpus, --worker-gpus)")
    return have


def _reachable(address: str | None) -> None:
    """A host:port with no cluster behind it is named at once (Ray itself waits a minute for it, then says less)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return                                       # auto, None, ray://: Ray finds and checks those itself
    import socket
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise ExecutorError(f"no Ray cluster can be reached at {address} ({e.strerror or e}); start one with "
                            "`ray start --head` or check --ray-address") from None


class PackWorker:
    """What a Ray actor runs: a model replica and an inner loop, rebuilt when the packs name another model."""

    def __init__(self, build: Callable[[str], tuple[Any, Any]], cfg, threads: int):
        import torch
        torch.set_num_threads(threads)
        self.build, self.cfg = build, cfg
        self.model: str | None = None
        self.loop: InnerLoop | None = None

    def run_pack(self, model: str, trials: list[Trial], bases: dict):
        import socket
        t0 = time.perf_counter()
        if model != self.model:
            if os.path.isabs(model) and not os.path.exists(model):
                raise ExecutorError(f"the Ray worker on {socket.gethostname()} cannot read the model {model}: the "
                                    "run folder must be on storage that every machine of the cluster shares")
            self.loop, self.model = None, None
            lm, domain = self.build(model)
            self.loop, self.model = InnerLoop(lm, domain, self.cfg, show_progress=False), model
        loaded = time.perf_counter()
        results = self.loop.run_pack(trials, bases)
        return results, {"host": socket.gethostname(), "pid": os.getpid(), "load": loaded - t0,
                         "compute": time.perf_counter() - loaded}


class RayExecutor:
    """Packs of trials on `workers` Ray actors. `loop` is the driver's inner loop: its config forms the packs and
    its model's current name is what the workers load (a ReST-EM round renames it to the round's checkpoint)."""

    IN_FLIGHT = 2     # packs queued per worker, so that the next one is there when a worker finishes

    def __init__(self, loop: InnerLoop, build: Callable[[str], tuple[Any, Any]], address: str | None = None,
                 workers: int = 1, cpus: float = 1.0, gpus: float = 0.0, threads: int | None = None,
                 retries: int = 3, log: Callable[[str], None] | None = None):
        self.loop, self.build = loop, build
        self.address, self.workers, self.cpus, self.gpus = address, workers, cpus, gpus
        self.threads = threads or max(1, int(cpus))
        self.retries = retries
        self.log = log or (lambda m: None)
        self.actors: list = []
        self.model: str | None = None       # the model the workers were last sent
        # Seconds, summed over calls: workers loading models and computing packs; the driver receiving and
        # recording results (Run.run_trials stores them as timings).
        self.stats = {"load": 0.0, "compute": 0.0, "driver": 0.0}

    def _actor(self):
        import ray
        cls = ray.remote(PackWorker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0,
                                             max_task_retries=0)
        return cls.remote(self.build, self.loop.cfg, self.threads)

    def start(self) -> None:
        if not self.actors:
            have = connect(self.address, self.workers, self.cpus, self.gpus)
            self.actors = [self._actor() for _ in range(self.workers)]
            self.log(f"ray: {self.workers} worker(s) x {self.cpus:g} CPU(s){f', {self.gpus:g} GPU(s)' if self.gpus else ''}"
                     f" on a cluster of {have.get('CPU', 0):g} CPU(s)")

    def run(self, trials, bases=None, on_result=None, keep_adapters=False):
        import ray
        from ray.exceptions import RayActorError, RayTaskError
        if keep_adapters:
            raise ExecutorError("this recipe keeps each trial's adapter in the driver's memory; run it with "
                                "--executor local")
        results, packs = self.loop.packs(trials)
        if on_result:
            for r in results:
                on_result(r)
        if not packs:
            return results
        self.start()
        model = model_ref(self.loop.lm.name)
        if model != self.model:
            self.log(f"ray: the workers load {model}")
            self.model = model
        bases = bases or {}
        done: dict[int, list[TrialResult]] = {}
        queue = deque(range(len(packs)))
        attempts = [0] * len(packs)
        flying: dict[Any, tuple[int, int]] = {}          # object ref -> (pack, actor slot)
        load = [0] * len(self.actors)

        def submit(slot: int) -> None:
            i = queue.popleft()
            attempts[i] += 1
            pack = packs[i]
            ref = self.actors[slot].run_pack.remote(model, pack, {t.context.id: bases[t.context.id] for t in pack
                                                                  if t.context.id in bases})
            flying[ref] = (i, slot)
            load[slot] += 1

        while queue or flying:
            for depth in range(self.IN_FLIGHT):         # one pack to every worker before a second to any
                for slot in range(len(self.actors)):
                    if queue and load[slot] <= depth:
                        submit(slot)
            ready, _ = ray.wait(list(flying), num_returns=1)
            t0 = time.perf_counter()
            i, slot = flying.pop(ready[0])
            load[slot] -= 1
            try:
                pack_results, info = ray.get(ready[0])
            except RayTaskError as e:                 # the pack raised: the error of its own (a judge, a domain)
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
            except RayActorError as e:               # the worker died: its packs go back to the queue
                self._replace(slot, e)
                for ref, (j, s) in list(flying.items()):
                    if s == slot:                    # queued behind the pack that was running: not its fault
                        del flying[ref]
                        load[slot] -= 1
                        attempts[j] -= 1
                        queue.appendleft(j)
                queue.appendleft(i)
                for j in set(queue):
                    if attempts[j] >= self.retries:
                        raise ExecutorError(f"a pack of {len(packs[j])} trial(s) failed on {attempts[j]} Ray worker(s) "
                                            f"(the last: {str(e).splitlines()[0][:200]}); finished trials are stored: "
                                            "the same command resumes") from None
                continue
            done[i] = pack_results
            self.stats["load"] += info["load"]
            self.stats["compute"] += info["compute"]
            if on_result:
                for r in pack_results:
                    on_result(r)
            self.stats["driver"] += time.perf_counter() - t0
        for i in range(len(packs)):
            results += done[i]
        return results

    def _replace(self, slot: int, error: Exception) -> None:
        import ray
        self.log(f"ray: worker {slot} died ({type(error).__name__}); its packs are re-queued on a fresh worker")
        try:
            ray.kill(self.actors[slot], no_restart=True)
        except Exception:  # noqa: BLE001 - it is gone already
            pass
        self.actors[slot] = self._actor()

    def close(self) -> None:
        import ray
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - a dead actor needs no killing
                pass
        self.actors = []
