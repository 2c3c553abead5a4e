import json
import math

import pytest

from seal.engine import metrics
from seal.engine.metrics import MetricsSink, read_metrics


def test_lines_read_back_in_order_with_values(tmp_path):
    with MetricsSink(tmp_path) as sink:
        sink.log("trial", step=3, reward=0.5, condition="self_edit")
        sink.log("round", accuracy=0.25, name="r0")
        sink.log("train", 7, loss=1.5, extra={"a": [1, 2]})
    rows = read_metrics(tmp_path)
    assert [r["event"] for r in rows] == ["trial", "round", "train"]
    assert [r["step"] for r in rows] == [3, None, 7]
    assert rows[0]["reward"] == 0.5 and rows[0]["condition"] == "self_edit"
    assert rows[1]["accuracy"] == 0.25 and rows[1]["name"] == "r0"
    assert rows[2]["loss"] == 1.5 and rows[2]["extra"] == {"a": [1, 2]}
    assert all(isinstance(r["time"], float) for r in rows)
    assert rows[0]["time"] <= rows[1]["time"] <= rows[2]["time"]


def test_log_steps_one_line_per_step(tmp_path):
    with MetricsSink(tmp_path) as sink:
        sink.log_steps("train", [2.0, 1.0, 0.5], trial="t1")
    rows = read_metrics(tmp_path)
    assert [(r["step"], r["loss"], r["trial"]) for r in rows] == [(0, 2.0, "t1"), (1, 1.0, "t1"), (2, 0.5, "t1")]


def test_nan_and_inf_become_null(tmp_path):
    with MetricsSink(tmp_path) as sink:
        sink.log("train", 0, loss=float("nan"), grad=float("inf"), nested=[float("-inf"), 1.0])
    raw = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    row = json.loads(raw)  # strict-JSON readers must accept the file too
    assert row["loss"] is None and row["grad"] is None and row["nested"] == [None, 1.0]


def test_unserialisable_values_become_strings_and_scalars_numbers(tmp_path):
    import torch
    with MetricsSink(tmp_path) as sink:
        sink.log("trial", path=tmp_path, loss=torch.tensor(0.25), bad=torch.tensor(float("nan")))
    row = read_metrics(tmp_path)[0]
    assert row["path"] == str(tmp_path)
    assert row["loss"] == 0.25 and row["bad"] is None


def test_unknown_log_to_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="wandb") as err:
        MetricsSink(tmp_path / "run", log_to=("jsonl", "wandb"))
    assert "jsonl" in str(err.value) and "tensorboard" in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_missing_tensorboard_says_pip_install(tmp_path, monkeypatch):
    real = metrics.importlib.util.find_spec
    monkeypatch.setattr(metrics.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match="pip install tensorboard"):
        MetricsSink(tmp_path / "run", log_to=("jsonl", "tensorboard"))
    assert not (tmp_path / "run").exists()


def test_truncated_last_line_skipped(tmp_path):
    with MetricsSink(tmp_path) as sink:
        sink.log("train", 0, loss=1.0)
        sink.log("train", 1, loss=0.5)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "step": 2, "lo')  # a kill mid-write
    rows = read_metrics(tmp_path)
    assert [r["loss"] for r in rows] == [1.0, 0.5]


def test_damaged_middle_line_raises(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"event": "a"}\nnot json\n{"event": "b"}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_metrics(tmp_path)


def test_missing_file_reads_empty(tmp_path):
    assert read_metrics(tmp_path) == []
    assert read_metrics(tmp_path / "nowhere") == []


def test_resumed_run_appends(tmp_path):
    with MetricsSink(tmp_path) as sink:
        sink.log("round", 0, accuracy=0.1)
    with MetricsSink(tmp_path) as sink:
        sink.log("round", 1, accuracy=0.2)
    assert [(r["step"], r["accuracy"]) for r in read_metrics(tmp_path)] == [(0, 0.1), (1, 0.2)]


def test_resume_after_kill_mid_write_keeps_file_valid(tmp_path):
    with MetricsSink(tmp_path) as sink:
        sink.log("round", 0, accuracy=0.1)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"event": "round", "st')
    with MetricsSink(tmp_path) as sink:
        sink.log("round", 1, accuracy=0.2)
    # The fragment must not end up glued to the next record in the middle of the file.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1]


def test_resume_keeps_complete_record_missing_its_newline(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"event": "round", "step": 0}')
    with MetricsSink(tmp_path) as sink:
        sink.log("round", 1)
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]


def test_close_twice_harmless_and_log_after_close_refused(tmp_path):
    sink = MetricsSink(tmp_path)
    sink.log("a")
    sink.close()
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.log("b")
    assert len(read_metrics(tmp_path)) == 1


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    losses = [2.0, 1.25, 0.5]
    with MetricsSink(tmp_path, log_to=("jsonl", "tensorboard")) as sink:
        sink.log_steps("train", losses, trial="t1", done=True)
        sink.log("round", accuracy=0.1)
        sink.log("round", accuracy=0.3)
    tb = tmp_path / "tensorboard"
    assert list(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tb))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "train/loss" in scalars
    assert "train/trial" not in scalars and "train/done" not in scalars  # strings and bools are not scalars
    points = acc.Scalars("train/loss")
    assert [p.step for p in points] == [0, 1, 2]
    assert all(math.isclose(p.value, v, rel_tol=1e-6) for p, v in zip(points, losses))
    # Events logged without a step still get distinct x positions.
    rounds = acc.Scalars("round/accuracy")
    assert [p.step for p in rounds] == [0, 1]
    assert [round(p.value, 6) for p in rounds] == [0.1, 0.3]
    assert len(read_metrics(tmp_path)) == 5  # jsonl is written alongside
