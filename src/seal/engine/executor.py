"""Where trials run. Recipes hand trials to an executor and get each result back through `on_result`; the driver
alone writes the store, so resuming works the same whatever runs the trials.

`LocalExecutor` runs them in this process on one inner loop (today's behaviour). Another executor (Ray actors
each holding a model replica) implements the same `run` and plugs in without touching the recipes.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

from .inner import InnerLoop, Trial, TrialResult
from .protocol import Evaluation


class Executor(Protocol):
    def run(self, trials: Sequence[Trial], bases: dict[str, Evaluation] | None = None,
            on_result: Callable[[TrialResult], None] | None = None,
            keep_adapters: bool = False) -> list[TrialResult]: ...


class LocalExecutor:
    """Trials in packs on one in-process inner loop."""

    def __init__(self, loop: InnerLoop):
        self.loop = loop

    def run(self, trials, bases=None, on_result=None, keep_adapters=False):
        return self.loop.run(trials, bases=bases, on_result=on_result, keep_adapters=keep_adapters)
