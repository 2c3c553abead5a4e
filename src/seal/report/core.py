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
import sqlite3
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from matplotlib.figure import Figure  # no pyplot: no global state, PNGs are drawn by the Agg canvas

from ..engine.stats import mean_ci95
from ..engine.faults import fault_point
from ..engine.store import RunStore, StoreError
from ..experiment.evaluate import condition_name
from ..experiment.results import (best_of_k, context_rewards, paired_comparisons, per_context, reward_change,
                                  self_edit_rewards, unscored_contexts)

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
    contexts: dict[str, dict] = field(default_factory=dict)   # context_id -> title, questions, gold (if stored)

    @property
    def kind(self) -> str:
        return self.meta.get("kind") or "knowledge-eval"

    @property
    def settings(self) -> dict:
        s = self.meta.get("settings")
        return s if isinstance(s, dict) else {}

    def trials_of(self, round_: int, condition: str) -> list[dict]:
        return [t for t in self.trials if t["round"] == round_ and t["condition"] == condition]


def setting(run: "Run", key: str, old: str | None = None, default: Any = None) -> Any:
    """A setting by its dotted config key (e.g. eval.k), or by its flat name in stores written before configs
    were nested (`old`)."""
    d: Any = run.settings
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    if d is None and old is not None:
        d = run.settings.get(old)
    return default if d is None else d


def load_run(run_dir: str | Path, sections: dict | None = None) -> Run:
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path}: no such run folder")
    db_path = path / "store.sqlite"
    if not db_path.is_file():
        raise ReportError(f"{db_path}: no run store (store.sqlite) in {path}")
    try:
        # Read-only: a report never changes a run (an older store is migrated in a copy), and in WAL mode this
        # reader never blocks the job writing.
        store = RunStore.open_readonly(db_path)
        try:
            run = _read(store.db, path)
        finally:
            store.close()
    except StoreError as e:
        raise ReportError(str(e)) from e       # it names the store already
    except sqlite3.DatabaseError as e:
        raise ReportError(f"{db_path}: cannot read the run store ({e})") from e
    if section_of(run.kind, sections) is None:
        raise ReportError(f"{db_path}: unknown run kind {run.kind!r} (known: {', '.join(sections or SECTIONS)})")
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
    kind = str(meta.get("kind"))
    heavy = ("answers", "self_edit", "error") if kind.startswith("arc-") or kind.endswith("-eval") else ()
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
    contexts = {c: {"title": t, "questions": json.loads(q), "gold": json.loads(g)}
                for c, t, q, g in rows("contexts", "context_id, title, questions, gold")}
    return Run(path, meta, trials, self_edits, dict(base), dict(base_answers), n_questions, results, contexts)


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
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        tmp.replace(path)
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


# One definition of a context's score, shared with results.json (experiment.results).
_per_context = per_context


_ORDER: list[str] = []   # the run's own context order (meta contexts:eval), set when a report is written
_UNSCORED: set[str] = set()   # contexts with no solution to score (experiment.results.unscored_contexts), likewise


def _macro(per_ctx: dict[str, float]) -> tuple[float, list[float]]:
    """Macro mean over contexts with a bootstrap 95% CI, contexts in the run's own order: the same numbers
    results.json gives (experiment.results.summarize)."""
    ids = [c for c in _ORDER if c in per_ctx and c not in _UNSCORED] + sorted(set(per_ctx) - set(_ORDER) - _UNSCORED)
    return mean_ci95([per_ctx[c] for c in ids])


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


def _paired(doc: Doc, scores: dict[str, dict[str, float]], n_questions: dict[str, int]) -> None:
    """The paired comparisons of results.json (experiment.results.paired_comparisons) as a table: each later
    condition minus each earlier one, on the contexts both have."""
    paired_table(doc, paired_comparisons({k: v for k, v in scores.items() if v}, _ORDER, n_questions, _UNSCORED))


def paired_table(doc: Doc, pairs: list[dict]) -> None:
    """Paired comparisons (experiment.results.paired_comparisons) as the report's table; nothing when none."""
    if not pairs:
        return
    doc.heading("Paired comparisons", 3)
    doc.text("Each row: the per-context accuracy of the first condition minus the second's, on the contexts both "
             "have; the mean difference with a 95% paired bootstrap interval over contexts, the contexts where the "
             "first is higher / lower / equal, and a two-sided sign test over the untied ones. An interval above "
             "zero is a difference these contexts can see. 'for 5 points': the contexts a comparison with this "
             "spread of differences needs to see a 5-point difference (80% power, 5% two-sided).")
    doc.table(["first", "second", "difference (points)", "95% CI", "higher / lower / equal", "sign test p",
               "contexts", "questions", "for 5 points"],
              [[p["condition"], p["versus"], _num(100 * p["difference"], "+.1f"), _ci(p["ci95"]),
                f"{p['wins']} / {p['losses']} / {p['ties']}", _num(p["sign_test_p"], ".3f"), p["n_contexts"],
                p["n_questions"], DASH if p["contexts_for_5_points"] is None else p["contexts_for_5_points"]]
               for p in pairs])


# ------------------------------------------------------------------------------------------ any domain: eval

def _eval_model(run: Run) -> str | None:
    if "round-0" in run.base:
        return "round-0"
    model = run.settings.get("model")
    if model in run.base:
        return model
    return next(iter(run.base)) if len(run.base) == 1 else None


def _knowledge_eval(doc: Doc, run: Run) -> None:
    trials = [t for t in run.trials if t["round"] == 0]
    model = _eval_model(run)
    base = run.base.get(model, {}) if model else {}
    n_ctx = len(set(base) | {t["context_id"] for t in trials})
    k, repeats = setting(run, "eval.k", "k", 1), setting(run, "eval.repeats", "repeats", 1)
    planned = [condition_name(c) for c in setting(run, "eval.conditions", "conditions", [])]
    names = ["base"] + [c for c in dict.fromkeys(planned + sorted({t["condition"] for t in trials})) if c != "base"]
    extras = (run.results or {}).get("conditions") or {}

    doc.heading("Conditions")
    doc.text("Accuracy on the questions about each passage, answered without it: the macro mean over contexts of "
             "each context's mean over its trials, with a 95% bootstrap interval over contexts.")
    rows, notes, plotted, scores = [], [], [], {}
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
        scores[name] = per_ctx
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
    _paired(doc, scores, run.n_questions)


# ----------------------------------------------------------------------------------------- any domain: train

def _expected_train_trials(s: dict) -> int | None:  # noqa: C901 (old flat and new nested settings)
    """contexts x k x seeds, when the settings say all three; seeds may be a count or a list of seeds."""
    outer = s.get("outer") if isinstance(s.get("outer"), dict) else {}
    n, k, seeds = (outer.get("contexts_per_round", s.get("contexts_per_round")), outer.get("k", s.get("k")),
                   outer.get("repeats", s.get("seeds")))
    seeds = len(seeds) if isinstance(seeds, list) else seeds
    return n * k * seeds if all(isinstance(v, int) for v in (n, k, seeds)) else None


_per_self_edit_reward = self_edit_rewards   # one definition with results.json's round numbers


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
    last = max([setting(run, "outer.rounds", "rounds", 0), *seen])
    evals = {t["context_id"] for t in run.trials if t["condition"] in ("eval", "passage")}
    evals |= {e["context_id"] for e in run.self_edits if e["source"] == "eval"}
    rm = run.meta.get("round_models")
    planned = {"last": {0, last}, "none": set()}.get(setting(run, "outer.eval_rounds", "eval_rounds"),
                                                     set(range(last + 1)))
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
    rows, scores = [], {}

    def add(r: int, name: str, series_name: str, per_ctx: dict[str, float], n_trials: int | str) -> None:
        scores[name] = per_ctx
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
    _paired(doc, scores, run.n_questions)
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
             "model that wrote them (the previous round's model) on the same context. vs the previous round: on "
             "the contexts both rounds sampled (rounds that reuse their contexts), the change of the mean reward "
             "per context, in points, with its 95% paired interval.")
    rows, boxes, previous = [], [], {}
    order = [c for c in (tr.run.meta.get("contexts:train") or []) if isinstance(c, str)]
    for r in tr.rounds[1:]:
        rewards = _per_self_edit_reward(tr.run.trials_of(r, "train"))
        if not rewards:
            rows.append([r, 0, 0, DASH, DASH, DASH, DASH, DASH])
            continue
        per_ctx = context_rewards(rewards)
        change, previous = reward_change(per_ctx, previous, order), per_ctx
        moved = (f"{100 * change['difference']:+.1f} {_ci(change['ci95'])} on {change['n_contexts']}" if change
                 else DASH)
        base = tr.base_of(r - 1)
        best = best_of_k(rewards)
        vs_base = [v > base[c] for (c, _), v in rewards.items() if c in base]
        values = list(rewards.values())
        rows.append([r, len(values), len(best), _pct(statistics.fmean(values)), _pct(statistics.median(values)),
                     _pct(statistics.fmean(best.values())), _pct(statistics.fmean(vs_base)) if vs_base else DASH,
                     moved])
        boxes.append((r, values, [base[c] for c in best if c in base]))
    doc.table(["round", "self-edits", "contexts", "mean", "median", "best-of-k mean", "> base",
               "vs the previous round"], rows)
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
             "so far with the run's selection rule.")
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
            from ..experiment.restem import candidates, select_self_edits
            base = tr.base_of(r - 1)
            rule = setting(tr.run, "outer.selection", "selection", "best")
            rows_r = tr.run.trials_of(r, "train")
            order = list(dict.fromkeys(t["context_id"] for t in rows_r))
            texts = {(e["context_id"], e["sample"]): "x" * e["chars"] for e in tr.run.self_edits
                     if e["round"] == r and e["source"] == "train"}   # the rules read only whether one is blank
            chosen = select_self_edits(candidates(rows_r, texts, order, 1 + max(t["sample"] for t in rows_r)), base,
                                       rule)
            selected = [{"context_id": c.context_id, "sample": c.sample, "reward": c.reward,
                         "base_accuracy": base.get(c.context_id),
                         "beat_base": c.context_id in base and c.reward > base[c.context_id], "chars": len(c.text)}
                        for c in chosen]
            source = f"computed with the run's rule {rule!r} (round not finished)"
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
    _train_profile(doc, tr)


def _train_profile(doc: Doc, tr: _Train) -> None:
    """experiment.restem.self_edit_profile per round: all sampled self-edits, and the selected apart."""
    rows = []
    for r in tr.rounds[1:]:
        prof = tr.run.meta.get(f"self_edit_stats:{r}")
        for group in ("sampled", "selected"):
            g = (prof or {}).get(group) if isinstance(prof, dict) else None
            if isinstance(g, dict) and g.get("n"):
                rows.append([r, group, g["n"], _num(g.get("chars"), ".0f"), _pct(g.get("gold_answers")),
                             _pct(g.get("novel_words"))])
    if not rows:
        return
    doc.heading("What the self-edits are made of", 3)
    doc.text("Per round, the mean over the sampled (nonblank) self-edits and over the selected ones: length in "
             "characters; gold answers: the share of the context's gold answers the self-edit contains (normalised, "
             "whole words), i.e. how much of what will be asked it restates; invented words: the share of its words "
             "that are not in the context. A finetune that moves the policy moves these.")
    doc.table(["round", "self-edits", "n", "chars", "gold answers", "invented words"], rows)


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


# ------------------------------------------------------------------------------------------------ any kind

# Sections for any domain's eval and train runs; domains register their own for other kinds (or to replace these).
SECTIONS: dict[str, Callable[[Doc, Run], None]] = {"*-eval": _knowledge_eval, "*-train": _knowledge_train}


def section_of(kind: str, sections: dict | None) -> Callable | None:
    table = {**SECTIONS, **(sections or {})}
    return table.get(kind) or table.get("*-" + kind.rsplit("-", 1)[-1])


def _examples(doc: Doc, run: Run, contexts: dict, n: int = 3) -> None:
    """What the model wrote and what it learned, for the first contexts: the self-edit, then each question with
    its gold answer, the base model's answer and the adapted model's."""
    order = [c for c in _ORDER if c in contexts][:n]
    trials = [t for t in run.trials if t["round"] == 0 and t.get("answers") is not None]
    adapted = next((c for c in ("self-edit", "eval") if any(t["condition"] == c for t in trials)), None)
    if not order or adapted is None:
        return
    doc.heading("Examples")
    doc.text(f"The first {len(order)} contexts: the self-edit of sample 0 ({adapted}), then each question with the "
             "gold answer, the base model's answer and the adapted model's.")
    base = run.base.get("round-0") and run.base_answers.get("round-0", {}) or next(iter(run.base_answers.values()), {})
    for cid in order:
        view = contexts[cid]
        t = next((t for t in trials if t["context_id"] == cid and t["condition"] == adapted and t["sample"] == 0), None)
        doc.heading(view["title"], 3)
        if t is not None and t.get("self_edit"):
            doc.code(t["self_edit"])
        answers = (t or {}).get("answers") or []
        base_answers = base.get(cid) or []
        rows = [[q, g, base_answers[i] if i < len(base_answers) else DASH, answers[i] if i < len(answers) else DASH]
                for i, (q, g) in enumerate(zip(view["questions"], [DASH if g is None else g for g in view["gold"]]))]
        doc.table(["question", "gold", "base", adapted], rows)


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


def write_report(run_dir: str | Path, sections: dict | None = None) -> dict:
    """Write RUN_DIR/report.md, RUN_DIR/report.html and RUN_DIR/report/*.png; returns the paths written.
    `sections`: run kind -> section, as the domains register them (the command passes every registered domain's;
    without them only the sections every domain's eval and train runs share are known)."""
    run = load_run(run_dir, sections)
    _ORDER[:] = run.meta.get("contexts:eval") if isinstance(run.meta.get("contexts:eval"), list) else []
    _UNSCORED.clear()
    _UNSCORED.update(unscored_contexts(run.contexts))
    doc = Doc(run.path / "report")
    doc.heading(f"seal report: {run.path.name}", 1)
    doc.text(f"Run kind: {run.kind}. Folder: {run.path}.")
    section_of(run.kind, sections)(doc, run)
    if run.kind.endswith("-eval") and run.contexts:
        _examples(doc, run, run.contexts)
    _run_details(doc, run)
    paths = {"markdown": run.path / "report.md", "html": run.path / "report.html"}
    for key, text in (("markdown", doc.markdown()), ("html", doc.html(f"seal report: {run.path.name}"))):
        tmp = paths[key].with_suffix(paths[key].suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        fault_point("report.write")
        tmp.replace(paths[key])  # a reader never sees half a report
    return {**paths, "figures": doc.figures}


def main(argv: list[str] | None = None, sections: dict | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seal report", description="Markdown and HTML report of a run folder.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding store.sqlite")
    a = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        paths = write_report(a.run_dir, sections)
    except ReportError as e:
        print(f"seal: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a read-only run folder
        print(f"seal: error: cannot write the report: {e}", file=sys.stderr)
        return 2
    print(f"report: {paths['markdown']}\nreport: {paths['html']}")
    return 0

