"""Reliability (docs/RELIABILITY.md): the crashes a new user met in the first minutes, faults (a full disk, a
read-only run folder, a damaged store, a checkpoint folder deleted mid-run, an unexpected error), secrets, and the
kill matrix at its small size (`python benchmarks/kill_matrix.py` runs the full one)."""
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from .conftest import loopback_server, send_json

ROOT = Path(__file__).resolve().parents[1]


def _seal(*args, env=None, timeout=600):
    full = {k: v for k, v in os.environ.items() if not k.startswith("SEAL_FAULT")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "seal", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full)


def _tiny(tiny_dir, out):
    return ["--model", tiny_dir, "--dtype", "fp32", "--no-progress", "--out", out]


def _one_clear_line(r):
    """Exit 2 and a single `seal: error:` line: no traceback reaches the user."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("seal: error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


def _folder_hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------- new-user crashes

ARC_TASK = {"train": [{"input": [[1, 0], [0, 1]], "output": [[0, 1], [1, 0]]},
                      {"input": [[2, 0], [0, 2]], "output": [[0, 2], [2, 0]]}],
            "test": [{"input": [[3, 0], [0, 3]]}]}


def test_arc_tasks_without_solutions_run_inference_only(tiny_dir, tmp_path):
    """An ARC challenges file without its solutions: predictions stored and reported, no score (it was a
    TypeError traceback); as training tasks, whose reward is their score, one clear line before model work."""
    tasks = tmp_path / "challenges.json"
    solved = json.loads(json.dumps(ARC_TASK))
    solved["test"][0]["output"] = [[0, 3], [3, 0]]
    tasks.write_text(json.dumps({"nosol": ARC_TASK, "withsol": solved}))
    out = tmp_path / "arc"
    r = _seal("arc", "eval", "--tasks", tasks, "--k", "1", "--epochs", "1", *_tiny(tiny_dir, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 context(s) have no solution to score" in r.stdout
    res = json.loads((out / "results.json").read_text())["conditions"]
    for cond in res.values():
        assert cond["n_unscored"] == 1 and cond["n_contexts"] == 1   # the solved task alone is scored
        assert cond["accuracy"] is not None
    db = sqlite3.connect(out / "store.sqlite")
    stored = db.execute("SELECT answers, grades FROM trials WHERE context_id LIKE 'nosol%'").fetchall()
    assert stored and all(json.loads(g) == [None] for _, g in stored)            # no score ...
    assert all(isinstance(json.loads(a)[0], str) for a, _ in stored)               # ... but its predictions
    rep = _seal("report", out)
    assert rep.returncode == 0, rep.stderr[-2000:]
    md = (out / "report.md").read_text()
    assert "no solution to score" in md and "| nosol-0 | no solution |" in md
    # Training tasks need their solutions: refused, naming the file and the task, before a run folder exists.
    r = _seal("arc", "train", "--tasks", "builtin:tiny:1:0", "--train-tasks", tasks, *_tiny(tiny_dir,
                                                                                                 tmp_path / "t"))
    line = _one_clear_line(r)
    assert str(tasks) in line and "nosol" in line and "'output'" in line
    assert not (tmp_path / "t").exists()


def _in_process(capsys, *args):
    """`seal ARGS` run in this process (seal.cli.main): its exit code and stderr."""
    from seal.cli import main
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, cap.out, cap.err)


def test_a_missing_model_folder_is_named_not_a_hub_traceback(tmp_path, capsys):
    for name, says in [("/a/folder/that/does/not/exist", "model folder /a/folder/that/does/not/exist does not exist"),
                       ("./no-such-folder", "model folder ./no-such-folder does not exist"),
                       (str(tmp_path), "holds no config.json"),
                       (str(tmp_path / "x.gguf"), "GGUF file not found")]:
        r = _in_process(capsys, "knowledge", "eval", "--model", name, "--n", "1", "--out", tmp_path / "run")
        assert says in _one_clear_line(r), r.stderr
        assert not (tmp_path / "run").exists()      # before any model work or run folder
    # A hub id that could exist, offline and not cached: the error says so (a real process: the hub client reads
    # HF_HUB_OFFLINE once, when it is imported).
    r = _seal("knowledge", "eval", "--model", "nobody-at-all/no-such-model", "--n", "1", "--out", tmp_path / "hub",
              env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert "no Hugging Face model of that name is cached" in _one_clear_line(r)


def test_counts_of_zero_say_what_they_mean(tiny_dir, tmp_path, capsys):
    for flag, says in [("--max-new-tokens", "max_new_tokens must be >= 1"), ("--k", "k and repeats must be >= 1"),
                       ("--set", "answer_tokens must be >= 1")]:
        value = "domain.answer_tokens=0" if flag == "--set" else "0"
        r = _in_process(capsys, "knowledge", "eval", flag, value, *_tiny(tiny_dir, tmp_path / "z"))
        assert says in _one_clear_line(r)
        assert not (tmp_path / "z").exists()
    r = _seal("knowledge", "eval", "--n", "0", "--conditions", "base", "--set", "domain.answer_tokens=4",
              *_tiny(tiny_dir, tmp_path / "all"))
    assert r.returncode == 0, r.stderr[-2000:]
    from seal.domains.knowledge.data import builtin_passages
    assert f"{len(builtin_passages('eval'))} eval context(s) (domain.n = 0: all of them)" in r.stderr


def test_answers_missing_from_their_passage_warn_once_per_record(tmp_path, caplog):
    from seal.domains.knowledge.data import load_passages
    recs = [{"title": "A", "context": "Paris is the capital of France.",
             "questions": [{"question": "Capital?", "answer": "Paris"}]},
            {"title": "B", "context": "The river is long.",
             "questions": [{"question": "Name?", "answer": "Danube"}, {"question": "Long?", "answer": "long"},
                           {"question": "Where?", "answer": "Europe"}]}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(recs))
    with caplog.at_level("WARNING", logger="seal.data"):
        load_passages(path)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"seal: warning: {path}: record 1: the answer of question(s) 0, 2 does not appear in its "
                     "passage"]


# ----------------------------------------------------------------------------------------- faults

def _mount(kind, target, *opts):
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", *kind, *opts, str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip()}): needs root and mount permission")


def _umount(target):
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _trials(out):
    db = sqlite3.connect(f"{(out / 'store.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name='trials'").fetchone():
        return set()                                         # the disk was full before the schema was written
    rows = db.execute("SELECT round, condition, context_id, sample, seed, finished, answers FROM trials").fetchall()
    db.close()
    return set(rows)


EVAL = ["knowledge", "eval", "--n", "3", "--conditions", "base,passage", "--epochs", "1", "--max-new-tokens", "16"]


def test_a_full_disk_gives_one_clear_error_and_the_run_resumes_once_freed(tiny_dir, tmp_path):
    """The run folder on a small tmpfs that fills up mid-run: one clear line, nothing committed is lost, and once
    space is freed the same command finishes with the same trials as a run that never met a full disk."""
    ref = tmp_path / "ref"
    assert _seal(*EVAL, *_tiny(tiny_dir, ref)).returncode == 0
    disk = tmp_path / "disk"
    _mount(["-t", "tmpfs", "tmpfs"], disk, "-o", "size=1m")
    try:
        out = disk / "run"
        filler = disk / "filler"
        # Leave room for the store's first pages, not for the whole run.
        filler.write_bytes(b"\0" * (1024 * 1024 - 200 * 1024))
        r = _seal(*EVAL, *_tiny(tiny_dir, out))
        line = _one_clear_line(r)
        assert "full" in line or "No space left" in line, line
        before = _trials(out) if (out / "store.sqlite").exists() else set()
        print(f"full disk: {line}; {len(before)} trial(s) kept")
        filler.unlink()
        r = _seal(*EVAL, *_tiny(tiny_dir, out))
        assert r.returncode == 0, r.stderr[-2000:]
        after = _trials(out)
        assert before <= after                                  # nothing already computed was rewritten
        strip = lambda rows: {row[:5] + row[6:] for row in rows}  # noqa: E731 - all but the finish time
        assert strip(after) == strip(_trials(ref))
    finally:
        _umount(disk)


def test_a_read_only_run_folder_is_refused_and_left_untouched(tiny_dir, tmp_path):
    src = tmp_path / "run"
    assert _seal(*EVAL, *_tiny(tiny_dir, src)).returncode == 0
    before = _folder_hashes(src)
    ro = tmp_path / "ro"
    _mount(["--bind", str(src)], ro)
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({r.stderr.strip()})")
        for args in ([*EVAL, *_tiny(tiny_dir, ro)], [*EVAL, "--lr", "5e-4", *_tiny(tiny_dir, ro)], ["report", ro]):
            r = _seal(*args)
            assert "read-only" in _one_clear_line(r).lower(), (args, r.stderr[-2000:])
    finally:
        _umount(ro)
    assert _folder_hashes(src) == before


def test_a_damaged_store_is_refused_and_kept_as_it_was(tiny_dir, tmp_path):
    """Truncated to half, random bytes, a zeroed header: eval and report each refuse the store in one line naming
    it, and the file is left byte for byte as it was (never "repaired" by a fresh store over it)."""
    good = tmp_path / "good"
    assert _seal(*EVAL, *_tiny(tiny_dir, good)).returncode == 0
    data = (good / "store.sqlite").read_bytes()
    for damage, bad in (("truncated", data[:len(data) // 2]), ("garbage", os.urandom(len(data))),
                        ("zeroed-header", b"\0" * 100 + data[100:])):
        out = tmp_path / damage
        out.mkdir()
        shutil.copy(good / "config.yaml", out / "config.yaml")
        store = out / "store.sqlite"
        store.write_bytes(bad)
        for args in ([*EVAL, *_tiny(tiny_dir, out)], ["report", out]):
            line = _one_clear_line(_seal(*args))
            assert str(store) in line and ("damaged" in line or "cannot read" in line), (damage, line)
        assert store.read_bytes() == bad, damage


TRAIN = ["knowledge", "train", "--rounds", "2", "--contexts", "2", "--k", "2", "--repeats", "1", "--n", "2",
         "--epochs", "1", "--max-new-tokens", "16", "--sft-epochs", "1"]


def _kill_matrix():
    spec = importlib.util.spec_from_file_location("kill_matrix", ROOT / "benchmarks" / "kill_matrix.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kill_matrix"] = mod          # its dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def test_a_checkpoint_folder_deleted_mid_run_is_rebuilt_the_same(tiny_dir, tmp_path):
    """Killed in round 2, then the round-1 checkpoint is deleted: the resume rebuilds it from the stored trials
    (the same selection, the same finetune) and ends with the same trials, checkpoints and results as a run that
    was never interrupted."""
    km = _kill_matrix()
    ref = tmp_path / "ref"
    assert _seal(*TRAIN, *_tiny(tiny_dir, ref), env={"OMP_NUM_THREADS": "1"}).returncode == 0
    want = km.snapshot(ref)
    out = tmp_path / "run"
    r = _seal(*TRAIN, *_tiny(tiny_dir, out), env={"OMP_NUM_THREADS": "1", "SEAL_FAULT": "store.self_edits@3"})
    assert r.returncode == -signal.SIGKILL
    assert (out / "checkpoints" / "round-1" / "merged" / "config.json").exists()
    shutil.rmtree(out / "checkpoints")
    r = _seal(*TRAIN, *_tiny(tiny_dir, out), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert km.problems(out, want) == []


def test_an_unexpected_error_prints_one_line_and_a_log_with_the_traceback(tiny_dir, tmp_path):
    out = tmp_path / "run"
    r = _seal(*EVAL, *_tiny(tiny_dir, out), env={"SEAL_FAULT": "store.trial@2:raise"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("seal: internal error")]
    log = Path(line.split("the traceback is in ")[1].split(". Finished")[0])
    assert log.parent == out / "logs" and "Traceback" in log.read_text()
    assert "fault injected at store.trial" in log.read_text()
    assert len(_trials(out)) == 1                           # the first trial was committed, and is kept
    r = _seal(*EVAL, *_tiny(tiny_dir, out))
    assert r.returncode == 0 and len(_trials(out)) == 3


def test_ctrl_c_exits_130_with_one_line_and_the_run_resumes(tiny_dir, tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAL_FAULT")}
    # Ctrl-C as a terminal delivers it: the child must not inherit an ignored SIGINT (a shell's background job,
    # e.g. `pytest &`, ignores it, and Python then installs no KeyboardInterrupt handler).
    p = subprocess.Popen([sys.executable, "-m", "seal", *EVAL, *map(str, _tiny(tiny_dir, out))], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (out / "store.sqlite").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, (p.returncode, err[-2000:])
    assert "Traceback" not in err and "seal: interrupted" in err
    r = _seal(*EVAL, *_tiny(tiny_dir, out))
    assert r.returncode == 0 and len(_trials(out)) == 3


# ----------------------------------------------------------------------------------------- secrets

CANARY = "sk-canary-7f3e9b1d2c4a6e8f0b1d3c5a7e9f1b2d"


class _EchoingEndpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint on loopback that answers "yes" to judges and writes a short self-edit,
    and, for model "leaky", fails with the caller's Authorization header in its error body (a hostile server
    that would put the key into seal's error message if seal printed response bodies)."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization", "")
        if body.get("model") == "leaky":
            send_json(self, 500, {"error": {"message": f"bad key {auth}"}})
        else:
            text = "yes" if body["messages"][0]["role"] == "system" else "1. A fact.\n2. Another fact."
            send_json(self, 200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    with loopback_server(_EchoingEndpoint) as url:
        yield url


def _no_canary(out: Path, *texts: str) -> None:
    for text in texts:
        assert CANARY not in text
    for p in out.rglob("*") if out.exists() else []:
        if p.is_file():
            assert CANARY.encode() not in p.read_bytes(), p


def test_an_api_key_never_reaches_a_file_a_log_a_report_or_an_error(tiny_dir, tmp_path, endpoint, capsys,
                                                                    monkeypatch):
    env = {"SEAL_CANARY_KEY": CANARY}
    keyed = ["--judge-key-env", "SEAL_CANARY_KEY", "--gen-key-env", "SEAL_CANARY_KEY", "--gen-url", endpoint]
    runs = [("knowledge", "eval", "--n", "2", "--conditions", "base,endpoint:writer", "--grader", "judge",
             "--judge-url", endpoint, "--judge-model", "j", "--epochs", "1"),
            ("knowledge", "cpt", "--n", "2", "--conditions", "base,endpoint:writer", "--epochs", "1"),
            ("arc", "eval", "--tasks", "builtin:tiny:1:0", "--conditions", "in-context,endpoint:writer",
             "--epochs", "1", "--max-examples", "4")]
    monkeypatch.setenv("SEAL_CANARY_KEY", CANARY)     # for the reports, run in this process
    for i, args in enumerate(runs):
        out = tmp_path / f"run{i}"
        flags = keyed if args[0] == "knowledge" and args[1] == "eval" else keyed[2:]
        r = _seal(*args, *flags, *_tiny(tiny_dir, out), env=env)
        assert r.returncode == 0, (args, r.stderr[-3000:])
        rep = _in_process(capsys, "report", out)
        assert rep.returncode == 0, rep.stderr
        _no_canary(out, r.stdout, r.stderr, rep.stdout, rep.stderr)
    # A hostile endpoint that echoes the key in its error, and an unexpected error while the key is set.
    out = tmp_path / "leak"
    r = _seal("knowledge", "eval", "--n", "1", "--conditions", "endpoint:leaky", *keyed[2:], *_tiny(tiny_dir, out),
              env=env)
    assert r.returncode == 2 and "failed" in r.stderr
    _no_canary(out, r.stdout, r.stderr)
    r = _seal(*EVAL, *keyed[2:], *_tiny(tiny_dir, tmp_path / "crash"), env={**env, "SEAL_FAULT": "store.trial:raise"})
    assert r.returncode == 1
    _no_canary(tmp_path / "crash", r.stdout, r.stderr)


# ----------------------------------------------------------------------------------------- the kill matrix

def test_kill_matrix_small(tiny_dir, tmp_path, monkeypatch):
    """Every long command killed once at a seeded random moment, and each fault point once on one command that
    reaches it, then resumed: the same trials, self-edits, answers, grades, checkpoints, results and report as an
    uninterrupted run; nothing lost, nothing duplicated, no half-written checkpoint. (It replaces the earlier
    single SIGKILL-and-resume tests of knowledge eval and train, which it covers with a stricter comparison.)"""
    km = _kill_matrix()
    # ARC's eval on one task rather than two (its test-time training is the slow part on the tiny model).
    monkeypatch.setitem(km.COMMANDS, "arc-eval", [*km.COMMANDS["arc-eval"]])
    km.COMMANDS["arc-eval"][km.COMMANDS["arc-eval"].index("builtin:tiny:2:0")] = "builtin:tiny:1:0"
    t0 = time.perf_counter()
    # Each fault point once, on one command that reaches it (the full matrix tries every point on every command).
    points = {"knowledge-eval": ["store.base"], "arc-eval": ["store.self_edits", "results.write"],
              "knowledge-train": ["adapter.write", "merge"], "knowledge-cpt": ["store.trial"],
              "knowledge-sequential": ["sequential.merge"], "arc-train": ["checkpoint.write"],
              "report": ["report.write"]}
    outcomes = km.run_matrix(km.ALL, tmp_path, str(tiny_dir), kills=1, per_chain=1, nths=1, seed=0, jobs=2,
                             log=lambda m: None, points=points)
    by = {o.command: o for o in outcomes}
    assert set(by) == set(km.ALL)
    for o in outcomes:
        assert o.differences == [] and o.failures == [], (o.command, o.differences, o.failures)
        assert o.random_kills == 1
        assert set(o.fault_kills) == set(points[o.command]), (o.command, o.fault_kills, o.hits)
        # per_chain=1: every random attempt is a folder of its own, compared once finished (a run can finish before
        # its kill moment when it runs faster than the reference did; then one more attempt is made).
        assert o.compared == o.random_attempts + len(points[o.command])
    print(f"kill matrix (small): {time.perf_counter() - t0:.0f} s")
