"""The knowledge domain's report sections: continued pretraining and the forgetting matrix of sequential
edits (eval and train runs use the shared sections of seal.report)."""
from __future__ import annotations

import math
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .sequential import aggregate
from ...report.core import (DASH, Doc, Run, _bar_chart, _ci, _finite, _finite_mean, _num, _pct, paired_table, setting)


# ---------------------------------------------------------------------------------------- knowledge-sequential

def _matrix(value: Any) -> list[list[float]]:
    """JSON rows with null or NaN for the cells not measured -> floats with NaN."""
    if not isinstance(value, list):
        return []
    return [[float(x) if _finite(x) else math.nan for x in row] for row in value if isinstance(row, list)]


def _knowledge_sequential(doc: Doc, run: Run) -> None:
    doc.heading("Forgetting")
    f = run.meta.get("forgetting")
    if not isinstance(f, dict):
        streams = [v for k, v in run.meta.items() if k.startswith("stream:") and isinstance(v, dict)]
        done = [st["matrix"] for st in streams if isinstance(st.get("matrix"), list) and st["matrix"]]
        total = setting(run, "sequential.streams", "streams", "?")
        doc.text(f"In progress or interrupted: no final forgetting matrix yet; {len(done)} of {total} streams "
                 f"finished, {len(run.trials)} trials stored so far."
                 + (" The matrix below covers the finished streams." if done else ""))
        f = aggregate(done, len(done[0]) - 1) if done else {}   # as the run computes at its end
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
    pairs = run.meta.get("cpt:comparisons")
    paired_table(doc, pairs if isinstance(pairs, list) else [])



SECTIONS = {"knowledge-sequential": _knowledge_sequential, "knowledge-cpt": _knowledge_cpt}
