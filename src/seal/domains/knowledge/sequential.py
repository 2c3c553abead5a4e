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
from dataclasses import dataclass, field

from ...engine.faults import fault_point
from ...engine.protocol import Trial
from ...engine.seeds import seed_of
from ...experiment.run import Run
from ...experiment.selfedits import sample_self_edits
from .data import DataError
from .pooled import Pool, load_pooled, split_grades


@dataclass
class SequentialSection:
    streams: int = 4
    length: int = 8                       # passages per stream
    pick: str = "accuracy"                # accuracy or forgetting (the reward that picks among candidates)
    forget_weight: float = 1.0
    edit: str = "self-edit"               # self-edit (passage + the model's self-edit) or passage (passage only)
    stream_seed: list[str] = field(default_factory=lambda: ["stream", "{stream}"])   # which passages a stream draws

    def __post_init__(self):
        if self.pick not in ("accuracy", "forgetting") or self.edit not in ("self-edit", "passage"):
            raise ValueError("pick must be accuracy or forgetting; edit must be self-edit or passage")
        if self.streams < 1 or self.length < 1:
            raise ValueError("streams and length must be >= 1")


def forgetting_reward(new_acc: float, before: list[float], after: list[float], weight: float) -> float:
    """Accuracy on the new passage minus `weight` x the mean accuracy lost on the earlier ones (gains on earlier
    passages are not rewarded, only losses are charged)."""
    lost = [max(0.0, b - a) for b, a in zip(before, after)]
    return new_acc - weight * (sum(lost) / len(lost) if lost else 0.0)


def stream_condition(stream: int, step: int) -> str:
    """The store's name for step `step` of stream `stream` (round 0: a stream is not a ReST-EM round)."""
    return f"stream-{stream}/step-{step}"


def run_sequential(spec, cfg, command: str = "", log=print) -> dict:
    from ...engine.lora import merge_adapter_state

    seq, k = cfg.sequential, cfg.eval.k
    checked = spec.check(cfg)
    probe = spec.build(cfg, None, checked)
    pool = list(probe.contexts("eval"))
    if len(pool) < seq.length:
        raise DataError(f"knowledge: a stream of {seq.length} passages needs at least that many, got {len(pool)}")
    if cfg.executor.kind != "local":
        # Each step merges the chosen adapter into the driver's model before the next step's trials: the workers
        # would need that model after every step. Streams are short; they run here.
        raise ValueError("knowledge sequential runs with --executor local only (each step merges its update "
                         "into the model the next step trains)")
    with Run(cfg, "knowledge-sequential", command) as run:
        run.store.set_meta("contexts:eval", [p.id for p in pool])
        loaded, learner, pooled = load_pooled(spec, cfg, checked)
        lm, domain = loaded.lm, loaded.domain
        original = {name: v.detach().clone() for name, v in lm.model.state_dict().items()}
        inner = cfg.inner.engine()
        scale = inner.alpha / inner.rank
        run.describe(domain, pool)
        for s in range(seq.streams):
            if run.store.get_meta(f"stream:{s}") is not None:
                continue
            run.store.drop_trials(f"stream-{s}/")
            lm.model.load_state_dict(original)
            ctxs = random.Random(seed_of(cfg.run.seed, seq.stream_seed, stream=s)).sample(pool, seq.length)
            base = run.base_evals(learner.loop, "round-0", ctxs)
            matrix = [[base[p.id].accuracy for p in ctxs]]
            steps = []
            for step, p in enumerate(ctxs):
                name = stream_condition(s, step)
                if seq.edit == "passage":
                    texts = [None]
                    updates = [domain.passage_update(p)]
                else:
                    # Written by the current (already edited) model; stored per stream and step.
                    texts = sample_self_edits(run, lm, domain, 0, name, [p], k, cfg.generation, cfg.seeds.sample,
                                              stream=s, step=step)[p.id]
                    updates = [domain.parse_self_edit(p, t) for t in texts]
                seen = Pool(tuple(ctxs[:step + 1]))
                trials = [Trial((0, name, p.id, i, 0), seen, u,
                                seed_of(cfg.run.seed, cfg.seeds.trial, stream=s, step=step, sample=i, context=p.id,
                                        condition=name, round=0, repeat=0), self_edit=t)
                          for i, (u, t) in enumerate(zip(updates, texts))]
                results = run.run_trials(pooled.executor, trials, keep_adapters=True)
                scored = []
                for res in results:
                    if res.evaluation is None:
                        continue
                    per = split_grades(seen, res.evaluation.grades)
                    after = [per[c.id] for c in ctxs[:step]]
                    fr = forgetting_reward(per[p.id], matrix[step][:step], after, seq.forget_weight)
                    scored.append((fr if seq.pick == "forgetting" else per[p.id], res.key[3], per, fr, res))
                if scored:
                    _, i, per, fr, res = max(scored, key=lambda x: (x[0], -x[1]))
                    merge_adapter_state(lm.model, res.adapter, scale)
                    fault_point("sequential.merge")
                    matrix.append([per[c.id] for c in ctxs[:step + 1]])
                else:  # every candidate was invalid: nothing is merged, the model is unchanged
                    i, fr = None, None
                    matrix.append(matrix[step][:step] + [matrix[0][step]])
                steps.append({"context_id": p.id, "chosen": i, "forgetting_reward": fr, "candidates": len(results)})
                run.metrics.log("sequential_step", step, stream=s, new_passage=matrix[-1][-1],
                                earlier=_mean(matrix[-1][:-1]))
                log(f"stream {s + 1}/{seq.streams}, step {step + 1}/{seq.length}: new passage "
                    f"{matrix[-1][-1]:.2f}, earlier passages {_mean(matrix[-1][:-1]):.2f}")
            run.store.set_meta(f"stream:{s}", {"contexts": [p.id for p in ctxs], "matrix": matrix, "steps": steps})
        lm.model.load_state_dict(original)
        result = sequential_results(run.store, seq.streams, seq.length)
        run.store.set_meta("forgetting", result)
        return run.write_results(forgetting=result)


def sequential_results(store, streams: int, length: int) -> dict:
    """The forgetting matrix over the streams finished so far (all of them once the run is done)."""
    done = [st for st in (store.get_meta(f"stream:{s}") for s in range(streams)) if st]
    result = aggregate([st["matrix"] for st in done], length) if done else {}
    result["forgetting_reward_mean"] = _mean([x["forgetting_reward"] for st in done for x in st["steps"]
                                              if x["forgetting_reward"] is not None])
    return result


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
