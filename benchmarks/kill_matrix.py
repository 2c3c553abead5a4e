"""The kill matrix: SIGKILL every long command at seeded random moments and at the named fault points inside its
critical windows (seal.engine.faults), resume it to the end, and compare with an uninterrupted run of the same
settings and pack size.

    python benchmarks/kill_matrix.py                       # the full size: 20 random kills per command
    python benchmarks/kill_matrix.py --kills 2 --json docs/kill-matrix.json --commands knowledge-eval,report

Compared after every resumed run: the trial keys (0 lost, 0 duplicated), each trial's status, self-edit text,
training sequences, answers, grades, accuracy, reward, steps and final loss; the stored self-edits, base
evaluations and ReST-EM selections; results.json (all but seconds); every checkpoint file's bytes; report.md.
And: no folder or file under a temporary name is left where a reader would take it for a checkpoint, and every
checkpoint folder that exists is complete.

Commands run on a tiny random Llama with the built-in tokenizer (made here unless --model names one), one CPU
thread each, two commands at a time (--jobs). The numbers go to --json and are quoted in docs/RELIABILITY.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

COMMON = ["--dtype", "fp32", "--no-progress"]
# Each command at a size that finishes in seconds on the tiny model; the same settings for the reference run and
# every killed one (the adapters-per-pack default included).
COMMANDS: dict[str, list[str]] = {
    "knowledge-eval": ["knowledge", "eval", "--n", "3", "--k", "2", "--conditions", "base,passage,self-edit",
                       "--epochs", "2", "--max-new-tokens", "24"],
    "knowledge-train": ["knowledge", "train", "--rounds", "2", "--contexts", "2", "--k", "2", "--repeats", "1",
                        "--n", "2", "--epochs", "1", "--max-new-tokens", "16", "--sft-epochs", "1"],
    "knowledge-cpt": ["knowledge", "cpt", "--n", "3", "--conditions", "base,passage,self-edit", "--epochs", "1",
                      "--max-new-tokens", "16"],
    "knowledge-sequential": ["knowledge", "sequential", "--n", "4", "--streams", "2", "--length", "2", "--epochs",
                             "1", "--max-new-tokens", "16"],
    # ARC's test-time training is the slow part on the tiny model (its head over a 49,152-token vocabulary at
    # every output token): few TTT examples per self-edit.
    "arc-eval": ["arc", "eval", "--tasks", "builtin:tiny:2:0", "--k", "2", "--epochs", "1", "--max-examples", "4"],
    "arc-train": ["arc", "train", "--tasks", "builtin:tiny:1:0", "--train-tasks", "builtin:tiny:2:1", "--k", "1",
                  "--train-k", "2", "--epochs", "1", "--sft-epochs", "1", "--max-examples", "4"],
}
REPORT_OF = "knowledge-train"     # `seal report` is killed while it reports this command's finished run folder
ALL = [*COMMANDS, "report"]
TIMEOUT = 600


def env_for(extra: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for k in ("SEAL_FAULT", "SEAL_FAULT_TRACE"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def argv_of(name: str, model: str, out: Path, ref_dirs: dict[str, Path]) -> list[str]:
    if name == "report":
        return [sys.executable, "-m", "seal", "report", str(out)]
    return [sys.executable, "-m", "seal", *COMMANDS[name], "--model", model, *COMMON, "--out", str(out)]


# ----------------------------------------------------------------------------------------- what a run holds

def _hash(path: Path, out: Path) -> str:
    """A file's hash; in a text file (JSON, Markdown) the run folder's own path and name count as one token,
    since every killed run has its own folder."""
    data = path.read_bytes()
    if path.suffix in (".json", ".md"):
        for name in (str(out.resolve()), str(out)):
            data = data.replace(name.encode(), b"<run>")
    if path.suffix == ".md":   # the report's title names the folder (a bare name: elsewhere it is a vocabulary word)
        data = data.replace(f"seal report: {out.name}".encode(), b"seal report: <run>")
    return hashlib.sha256(data).hexdigest()[:16]


def snapshot(out: Path) -> dict:
    """Everything a finished run must hold the same after any number of kills and resumes."""
    snap: dict = {}
    store = out / "store.sqlite"
    if store.exists():
        db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        rows = db.execute("SELECT round, condition, context_id, sample, seed, status, self_edit, sequences, pairs, "
                          "answers, grades, accuracy, reward, steps, final_loss FROM trials").fetchall()
        snap["trial_rows"] = len(rows)
        snap["trials"] = {json.dumps(r[:5]): list(r[5:]) for r in rows}
        snap["self_edits"] = sorted(db.execute("SELECT round, source, context_id, sample, text FROM self_edits"))
        snap["base_evals"] = sorted(db.execute("SELECT model, context_id, answers, grades, accuracy FROM base_evals"))
        snap["meta"] = {k: _without_seconds(json.loads(v)) for k, v in db.execute("SELECT key, value FROM meta")
                        if k.startswith(("selected:", "stream:", "forgetting", "cpt", "checkpoint:", "round_models",
                                         "sft:"))}
        db.close()
    results = out / "results.json"
    if results.exists():
        snap["results"] = _without_seconds(json.loads(results.read_text()))
    ck = out / "checkpoints"
    if ck.exists():
        snap["checkpoint_files"] = {str(p.relative_to(out)): _hash(p, out) for p in sorted(ck.rglob("*")) if p.is_file()}
    report = out / "report.md"
    if report.exists():
        snap["report_md"] = _hash(report, out)
    return snap


def _without_seconds(x):
    if isinstance(x, dict):
        return {k: _without_seconds(v) for k, v in x.items() if k not in ("seconds", "command")}
    if isinstance(x, list):
        return [_without_seconds(v) for v in x]
    return x


def problems(out: Path, ref: dict) -> list[str]:
    """How a resumed run differs from the reference; [] when it holds exactly the same."""
    got = snapshot(out)
    bad = []
    for key in sorted(set(ref) | set(got)):
        if key == "trials":
            lost = set(ref[key]) - set(got.get(key, {}))
            extra = set(got.get(key, {})) - set(ref[key])
            changed = [k for k in set(ref[key]) & set(got.get(key, {})) if ref[key][k] != got[key][k]]
            bad += [f"trial lost: {k}" for k in sorted(lost)] + [f"trial not in the reference: {k}" for k in extra]
            bad += [f"trial differs: {k}" for k in sorted(changed)]
        elif isinstance(ref.get(key), dict) and isinstance(got.get(key), dict):
            a, b = ref[key], got[key]
            bad += [f"{key} differs: {k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif ref.get(key) != got.get(key):
            bad.append(f"{key} differs")
    if got.get("trial_rows") != len(got.get("trials", {})):
        bad.append("duplicated trial rows")
    bad += incomplete_checkpoints(out)
    return bad


def incomplete_checkpoints(out: Path) -> list[str]:
    """A checkpoint folder without all its files, or a temporary one a later round could be reading."""
    bad = []
    ck = out / "checkpoints"
    for d in sorted(ck.glob("round-*/*")) if ck.exists() else []:
        if d.name.endswith(".tmp"):
            bad.append(f"leftover temporary folder {d.relative_to(out)}")
        elif d.name == "merged" and not ((d / "config.json").is_file() and any(d.glob("*.safetensors"))):
            bad.append(f"incomplete checkpoint {d.relative_to(out)}")
        elif d.name == "adapter" and not ((d / "adapter_config.json").is_file()
                                          and (d / "adapter_model.safetensors").is_file()):
            bad.append(f"incomplete adapter {d.relative_to(out)}")
    return bad


# ----------------------------------------------------------------------------------------- running and killing

@dataclass
class Attempt:
    killed: bool
    rc: int | None
    seconds: float
    stderr: str = ""


def attempt(argv: list[str], env: dict, kill_at: float | None = None) -> Attempt:
    """Run `argv`; with `kill_at`, SIGKILL it that many seconds in unless it has finished by then."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            proc.wait(timeout=kill_at if kill_at is not None else TIMEOUT)
            killed = False
        except subprocess.TimeoutExpired:
            if kill_at is None:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{' '.join(argv)} ran past {TIMEOUT} s") from None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        err.seek(0)
        text = err.read()
    rc = proc.returncode
    if rc == -signal.SIGKILL:   # killed by a fault point inside the process
        killed = True
    return Attempt(killed, rc, time.perf_counter() - t0, text)


@dataclass
class Outcome:
    command: str
    reference_seconds: float = 0.0
    hits: dict = field(default_factory=dict)        # fault point -> times the reference run reached it
    random_kills: int = 0
    random_attempts: int = 0
    fault_kills: dict = field(default_factory=dict)  # fault point -> kills that landed there
    resumes: int = 0
    compared: int = 0
    differences: list = field(default_factory=list)
    failures: list = field(default_factory=list)     # a resume that did not exit 0

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("command", "reference_seconds", "hits", "random_kills",
                                              "random_attempts", "fault_kills", "resumes", "compared",
                                              "differences", "failures")}


def prepare(name: str, work: Path, ref_dirs: dict[str, Path], model: str) -> tuple[Path, dict, dict]:
    """The reference run of `name` (uninterrupted, every fault point counted): its folder, snapshot and hits."""
    out = fresh_copy(name, work, "reference", ref_dirs)
    trace = work / name / "trace.txt"
    a = attempt(argv_of(name, model, out, ref_dirs), env_for({"SEAL_FAULT_TRACE": str(trace)}))
    if a.rc != 0:
        raise RuntimeError(f"reference run of {name} failed:\n{a.stderr[-3000:]}")
    hits: dict[str, int] = {}
    for line in trace.read_text().split() if trace.exists() else []:
        hits[line] = hits.get(line, 0) + 1
    ref_dirs[name] = out
    return out, snapshot(out), {"hits": hits, "seconds": a.seconds}


def fresh_copy(name: str, work: Path, tag: str, ref_dirs: dict[str, Path]) -> Path:
    out = work / name / tag
    shutil.rmtree(out, ignore_errors=True)
    if name == "report":   # the report is killed over a finished run: a copy of the reference run, unreported
        shutil.copytree(ref_dirs[REPORT_OF], out)
        for p in ("report.md", "report.html"):
            (out / p).unlink(missing_ok=True)
        shutil.rmtree(out / "report", ignore_errors=True)
    return out


def finish_and_compare(o: Outcome, name: str, out: Path, model: str, ref: dict, ref_dirs) -> None:
    a = attempt(argv_of(name, model, out, ref_dirs), env_for())
    o.resumes += 1
    if a.rc != 0:
        o.failures.append(f"{out.name}: resume exited {a.rc}: {a.stderr.strip().splitlines()[-1:]}")
        return
    o.compared += 1
    o.differences += [f"{out.name}: {p}" for p in problems(out, ref)]


def run_command(name: str, work: Path, model: str, kills: int, per_chain: int, nths: int, seed: int,
                ref_dirs: dict[str, Path], log=print, points: list[str] | None = None) -> Outcome:
    o = Outcome(name)
    _, ref, info = prepare(name, work, ref_dirs, model)
    o.reference_seconds, o.hits = round(info["seconds"], 1), info["hits"]
    rng = random.Random(f"{seed}:{name}")
    T = info["seconds"]
    # Random moments: chains of up to `per_chain` kills on one folder, each followed by a resume that runs on to
    # the next kill; a chain ends when a run finishes before its kill, then the folder is finished and compared.
    chain = 0
    while o.random_kills < kills and o.random_attempts < 4 * kills + 4:
        chain += 1
        out = fresh_copy(name, work, f"random-{chain}", ref_dirs)
        landed = 0
        while landed < per_chain and o.random_kills < kills:
            o.random_attempts += 1
            a = attempt(argv_of(name, model, out, ref_dirs), env_for(), kill_at=rng.uniform(0.05, 1.0) * T)
            if not a.killed:
                if a.rc != 0:
                    o.failures.append(f"{out.name}: exited {a.rc}: {a.stderr.strip().splitlines()[-1:]}")
                break
            landed += 1
            o.random_kills += 1
        finish_and_compare(o, name, out, model, ref, ref_dirs)
    # Named points: each point the command reaches, at `nths` seeded occurrences, each on its own folder.
    for point, count in sorted(o.hits.items()):
        if points is not None and point not in points:
            continue
        for n in sorted(rng.sample(range(1, count + 1), min(nths, count))):
            out = fresh_copy(name, work, f"{point}@{n}", ref_dirs)
            a = attempt(argv_of(name, model, out, ref_dirs), env_for({"SEAL_FAULT": f"{point}@{n}"}))
            if not a.killed:
                o.failures.append(f"{out.name}: the fault point was not reached (exit {a.rc})")
                continue
            o.fault_kills[point] = o.fault_kills.get(point, 0) + 1
            finish_and_compare(o, name, out, model, ref, ref_dirs)
    log(f"{name}: {o.random_kills} random kills ({o.random_attempts} tries), "
        f"{sum(o.fault_kills.values())} at fault points {sorted(o.fault_kills)}, {o.compared} resumed runs "
        f"compared, {len(o.differences)} differences, {len(o.failures)} failures")
    return o


def tiny_model(folder: Path) -> str:
    """A tiny random Llama with the built-in tokenizer (the tests' tiny model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from seal.engine.models import load_model
    tok = load_model(dtype="fp32").tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def run_matrix(commands: list[str], work: Path, model: str, kills: int = 20, per_chain: int = 5, nths: int = 1,
               seed: int = 0, jobs: int = 2, log=print, points: dict[str, list[str]] | None = None) -> list[Outcome]:
    """`points`: per command, the fault points to kill at (default: every point the command reaches)."""
    only = (lambda c: (points or {}).get(c)) if points is not None else (lambda c: None)
    ref_dirs: dict[str, Path] = {}
    order = [c for c in commands if c != "report"]
    if "report" in commands and REPORT_OF not in order:
        order.append(REPORT_OF)
    with ThreadPoolExecutor(jobs) as pool:
        outcomes = list(pool.map(lambda c: run_command(c, work, model, kills if c in commands else 0, per_chain,
                                                       nths if c in commands else 0, seed, ref_dirs, log, only(c)),
                                 order))
        if "report" in commands:
            outcomes.append(run_command("report", work, model, kills, per_chain, nths, seed, ref_dirs, log,
                                        only("report")))
    return [o for o in outcomes if o.command in commands]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", default=",".join(ALL), help=f"comma-separated, of {', '.join(ALL)}")
    p.add_argument("--kills", type=int, default=20, help="random-moment kills per command")
    p.add_argument("--per-chain", type=int, default=5, help="kills on one folder before it is finished")
    p.add_argument("--nths", type=int, default=1, help="occurrences of each fault point to kill at")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="commands run at a time")
    p.add_argument("--model", help="a model folder (default: a tiny random Llama made here)")
    p.add_argument("--work", help="working folder (default: a temporary one, removed)")
    p.add_argument("--json", help="write the matrix here")
    a = p.parse_args()
    commands = [c for c in a.commands.split(",") if c]
    unknown = set(commands) - set(ALL)
    if unknown:
        p.error(f"unknown command(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="seal-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = a.model or tiny_model(work / "tiny-model")
    outcomes = run_matrix(commands, work, model, a.kills, a.per_chain, a.nths, a.seed, a.jobs)
    total = {"random_kills": sum(o.random_kills for o in outcomes),
             "fault_kills": sum(sum(o.fault_kills.values()) for o in outcomes),
             "compared": sum(o.compared for o in outcomes),
             "differences": sum(len(o.differences) for o in outcomes),
             "failures": sum(len(o.failures) for o in outcomes), "seconds": round(time.perf_counter() - t0)}
    print(json.dumps(total))
    for o in outcomes:
        for d in o.differences + o.failures:
            print(f"  {o.command}: {d}")
    if a.json:
        Path(a.json).write_text(json.dumps({"command": "python benchmarks/kill_matrix.py " + " ".join(sys.argv[1:]),
                                            "total": total, "commands": [o.row() for o in outcomes]}, indent=2))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not total["differences"] and not total["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
