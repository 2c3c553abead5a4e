"""One sink for a run's metrics (per training step, per trial, per round), in the style of TRL's `report_to`.

Code that produces a number calls `MetricsSink.log` once and never cares where it goes. `metrics.jsonl` in the
run folder is always written: it needs nothing installed, survives a killed run line by line, and is what
`read_metrics` (and so any report) reads back. TensorBoard is optional (`log_to=("jsonl", "tensorboard")`) for
watching curves live; it mirrors the numeric values and is never read back, so nothing depends on it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

VALID_LOG_TO = ("jsonl", "tensorboard")
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _plain(value: Any) -> Any:
    """`value` with NaN/inf as None (strict JSON has no NaN, and most JSON readers refuse it) and one-element
    numpy/torch values as Python numbers (so they are logged as numbers, not as their repr)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    scalar = _scalar(value)
    if scalar is not None:
        return _plain(scalar)
    return value


def _scalar(value: Any) -> int | float | bool | None:
    """The Python number inside a numpy scalar or one-element tensor/array, else None."""
    if isinstance(value, (bool, int, float)) or not hasattr(value, "item"):
        return None
    try:
        item = value.item()  # raises for a multi-element array or tensor: those are left to default=str
    except Exception:
        return None
    return item if isinstance(item, (bool, int, float)) else None


def _drop_partial_line(path: Path) -> None:
    """Make `path` end at a line boundary before appending to it.

    A run killed mid-write leaves a fragment with no newline; appending after it would glue the next record
    onto the fragment and corrupt a line in the middle of the file. A tail that still parses (killed just
    before its newline) is kept and terminated; anything else after the last newline is cut away.
    """
    if not path.exists():
        return
    with open(path, "r+b") as f:
        end = f.seek(0, 2)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        # Scan backwards in blocks: the fragment is at most one record, but the file can be large.
        pos, cut = end, 0
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                cut = start + nl + 1
                break
            pos = start
        f.seek(cut)
        tail = f.read()
        try:
            json.loads(tail)
        except ValueError:
            f.seek(cut)
            f.truncate()
        else:
            f.write(b"\n")


class MetricsSink:
    """Where a run's metrics go: `run_dir/metrics.jsonl` always, TensorBoard under `run_dir/tensorboard` too if
    asked. Use as a context manager, or call `close()`; a sink on a folder that already has metrics appends to
    them, so a resumed run keeps one history."""

    def __init__(self, run_dir: str | Path, log_to: Sequence[str] = ("jsonl",)):
        if isinstance(log_to, str):  # ("tensorboard") without the comma would otherwise iterate letters
            log_to = (log_to,)
        for target in log_to:
            if target not in VALID_LOG_TO:
                raise ValueError(f"unknown log_to value {target!r}; valid values: {', '.join(VALID_LOG_TO)}")
        # Checked before touching the folder, so a missing extra fails at once rather than after hours of work.
        if "tensorboard" in log_to and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("log_to='tensorboard' needs the tensorboard package: pip install tensorboard")

        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.log_to = tuple(dict.fromkeys(log_to))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer = None
        if "tensorboard" in self.log_to:
            from torch.utils.tensorboard import SummaryWriter  # lazy: loads tensorboard, protobuf, numpy...
            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))
        # TensorBoard needs an x for every point; events logged without a step get their own running count.
        self._counters: dict[str, int] = {}
        self._closed = False

    def log(self, event: str, step: int | None = None, **values: Any) -> None:
        """Record one event (e.g. "train", "trial", "round") with its values."""
        if self._closed:
            raise ValueError(f"MetricsSink for {self.run_dir} is closed")
        record = {"event": event, "step": step, "time": time.time(), **values}
        line = json.dumps(_plain(record), default=str, allow_nan=False)
        # One write per line and a flush: a killed run (SIGKILL included) keeps every line already logged.
        self._file.write(line + "\n")
        self._file.flush()
        if self._writer is not None:
            if step is None:
                step = self._counters.get(event, 0)
                self._counters[event] = step + 1
            for key, value in values.items():
                scalar = _scalar(value) if not isinstance(value, (int, float)) else value
                if isinstance(scalar, (int, float)) and not isinstance(scalar, bool):
                    self._writer.add_scalar(f"{event}/{key}", scalar, global_step=step)

    def log_steps(self, event: str, losses: Sequence[float], **values: Any) -> None:
        """One line per training step: step i with `loss=losses[i]`, plus `values` on each (e.g. the trial)."""
        for i, loss in enumerate(losses):
            self.log(event, step=i, loss=loss, **values)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every line of `run_dir/metrics.jsonl`, in order; [] if there is none yet.

    A last line cut off by a kill mid-write is skipped; a bad line anywhere else is real damage and raises.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if n == len(lines):
                break
            raise ValueError(f"{path}:{n}: not a JSON line: {line[:80]!r}") from None
    return records
