"""Sequential self-edits (the paper's forgetting experiment): a stream of passages; after each one the model's
self-edit update is merged into its weights, and every passage seen so far is re-tested.

Per stream the result is a lower-triangular matrix: row 0 is the unedited model on each passage, row r the
model after r merged edits on passages 0..r-1. Streams are drawn at random from the selected passages; the
output is the cell-wise mean and standard error over streams.

With `k > 1` each step samples k self-edits, trains them together (one batched pass), and merges the one with
the best reward; `pick="forgetting"` uses the forgetting-aware reward the paper proposes: accuracy on the new
passage minus `forget_weight` times the mean accuracy lost on the earlier passages. Each candidate's reward is
measured with its adapter on top of the current weights, which is exactly the model after merging it.

A stream is the unit of resumption: a finished stream is stored whole; an interrupted one is redone from its
start with the same seeds.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from ...adapters import merge_adapter_state
from ...config import inner_preset
from .data import DataError, resolve_data, select
from ...runs import ensure_base_evals, open_store, trial_recorder, trial_seed, write_results
from .experiment import EvalOptions, ensure_self_edits, make_grader_checked, settings_record
from .pooled import Pool, load_pooled_loops, split_grades


@dataclass
class SequentialOptions(EvalOptions):
    streams: int = 4
    length: int = 8                       # passages per stream
    k: int = 1                            # self-edit candidates per step
    pick: str = "accuracy"                # accuracy or forgetting (the reward that picks among candidates)
    forget_weight: float = 1.0
    edit: str = "self-edit"               # self-edit (passage + the model's self-edit) or passage (passage only)
    out: str = "runs/knowledge-sequential"


def forgetting_reward(new_acc: float, before: list[float], after: list[float], weight: float) -> float:
    """Accuracy on the new passage minus `weight` x the mean accuracy lost on the earlier ones (gains on earlier
    passages are not rewarded, only losses are charged)."""
    lost = [max(0.0, b - a) for b, a in zip(before, after)]
    return new_acc - weight * (sum(lost) / len(lost) if lost else 0.0)


def run_sequential(opts: SequentialOptions, log=print) -> dict:
    from ...inner import Trial

    if opts.pick not in ("accuracy", "forgetting") or opts.edit not in ("self-edit", "passage"):
        raise ValueError("pick must be accuracy or forgetting; edit must be self-edit or passage")
    if opts.streams < 1 or opts.length < 1 or opts.k < 1:
        raise ValueError("streams, length and k must be >= 1")
    passages, data_label = resolve_data(opts.data)
    pool = select(passages, opts.n, opts.select_seed, opts.start)
    if len(pool) < opts.length:
        raise DataError(f"{data_label}: a stream of {opts.length} passages needs at least that many, got {len(pool)}")
    cfg = inner_preset(opts.preset, **opts.inner)
    grader = make_grader_checked(opts)
    out = Path(opts.out)
    settings = {**settings_record(opts, cfg, data_label), "streams": opts.streams, "length": opts.length,
                "pick": opts.pick, "forget_weight": opts.forget_weight, "edit": opts.edit}
    store = open_store(out, settings, "knowledge-sequential")

    lm, domain, loop, pooled = load_pooled_loops(opts, cfg, grader)
    original = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    scale = cfg.alpha / cfg.rank

    for s in range(opts.streams):
        if store.get_meta(f"stream:{s}") is not None:
            continue
        store.drop_trials(s)
        lm.model.load_state_dict(original)
        ctxs = random.Random(trial_seed(opts.seed, "stream", s)).sample(pool, opts.length)
        base = ensure_base_evals(store, loop, lm.name, ctxs)
        matrix = [[base[p.id].accuracy for p in ctxs]]
        steps = []
        for step, p in enumerate(ctxs):
            if opts.edit == "passage":
                texts = [None]
                updates = [domain.passage_update(p)]
            else:
                # Written by the current (already edited) model; stored per stream and step.
                texts = ensure_self_edits(store, lm, domain, s, f"step-{step}", [p], opts.k, opts,
                                          seed_tag=("seq", s, step))[p.id]
                updates = [domain.parse_self_edit(p, t) for t in texts]
            seen = Pool(tuple(ctxs[:step + 1]))
            trials = [Trial((s, f"step-{step}", p.id, i, 0), seen, u, trial_seed(opts.seed, "seq", s, step, i),
                            self_edit=t) for i, (u, t) in enumerate(zip(updates, texts))]
            results = pooled.run(trials, on_result=trial_recorder(store, trials), keep_adapters=True)
            scored = []
            for res in results:
                if res.evaluation is None:
                    continue
                per = split_grades(seen, res.evaluation.grades)
                after = [per[c.id] for c in ctxs[:step]]
                fr = forgetting_reward(per[p.id], matrix[step][:step], after, opts.forget_weight)
                scored.append((fr if opts.pick == "forgetting" else per[p.id], res.key[3], per, fr, res))
            if scored:
                _, i, per, fr, res = max(scored, key=lambda x: (x[0], -x[1]))
                merge_adapter_state(lm.model, res.adapter, scale)
                matrix.append([per[c.id] for c in ctxs[:step + 1]])
            else:  # every candidate was invalid: nothing is merged, the model is unchanged
                i, fr = None, None
                matrix.append(matrix[step][:step] + [matrix[0][step]])
            steps.append({"context_id": p.id, "chosen": i, "forgetting_reward": fr, "candidates": len(results)})
            log(f"stream {s + 1}/{opts.streams}, step {step + 1}/{opts.length}: new passage "
                f"{matrix[-1][-1]:.2f}, earlier passages {_mean(matrix[-1][:-1]):.2f}")
        store.set_meta(f"stream:{s}", {"contexts": [p.id for p in ctxs], "matrix": matrix, "steps": steps})
    lm.model.load_state_dict(original)

    streams = [store.get_meta(f"stream:{s}") for s in range(opts.streams)]
    result = aggregate([st["matrix"] for st in streams], opts.length)
    result["forgetting_reward_mean"] = _mean([x["forgetting_reward"] for st in streams for x in st["steps"]
                                              if x["forgetting_reward"] is not None])
    store.set_meta("forgetting", result)
    store.close()
    return write_results(out, "knowledge-sequential", settings, forgetting=result)


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def aggregate(matrices: list[list[list[float]]], length: int) -> dict:
    """Cell-wise mean and standard error (sample std / sqrt(n)) over streams; upper cells are None."""
    n = len(matrices)
    mean, stderr = [], []
    for r in range(length + 1):
        mrow, srow = [], []
        for i in range(length):
            if (r == 0) or i < r:
                vals = [m[r][i] for m in matrices]
                mu = sum(vals) / n
                sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
                mrow.append(mu)
                srow.append(sd / math.sqrt(n))
            else:
                mrow.append(None)
                srow.append(None)
        mean.append(mrow)
        stderr.append(srow)
    diag = [mean[r + 1][r] for r in range(length)]
    return {"mean": mean, "stderr": stderr, "n_streams": n, "contexts_per_stream": length,
            "diagonal_mean": _mean(diag), "first_row_mean": _mean(mean[0]),
            "last_row_mean": _mean(mean[length])}


def format_matrix(result: dict) -> str:
    """The matrix as text: rows = after r edits, columns = passage i, mean (s.e.) in %."""
    lines = ["after \\ passage " + " ".join(f"{'d' + str(i):>12}" for i in range(result["contexts_per_stream"]))]
    for r, (mrow, srow) in enumerate(zip(result["mean"], result["stderr"])):
        cells = [f"{100 * m:5.1f} ({100 * e:4.1f})" if m is not None else " " * 12 for m, e in zip(mrow, srow)]
        lines.append(f"{r:>15} " + " ".join(cells))
    return "\n".join(lines)
