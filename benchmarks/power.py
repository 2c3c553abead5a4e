"""How many contexts a paired comparison of two self-edit policies needs to see a 5-point difference, from the
variance measured in one knowledge eval with k >= 2 self-edits per context (and, better, >= 2 inner-loop seeds
per self-edit):

    seal knowledge eval --data builtin:train --n 12 --conditions base,passage,self-edit --k 4 --repeats 2 \\
        --out runs/power-train12
    python benchmarks/power.py runs/power-train12 --json docs/power.json

The reward of one trial (one self-edit, one inner-loop seed, graded on the context's questions) is split into
three nested sources of variance, estimated by the method of moments:

- between contexts (some passages are easy): cancels in a paired comparison;
- between self-edits of one context (what RL can change, and what ReST-EM selects on);
- between inner-loop seeds of one self-edit (noise: the LoRA's initialisation and data order, and the question
  grading it feeds).

Two policies with the same mean, compared on the same contexts with k self-edits x r seeds each, differ per
context by noise of variance 2 (s_edit^2 / k + s_seed^2 / (k r)); the contexts needed for 5 points at 80% power
follow from that (engine.stats.contexts_needed). The split-half check compares self-edits 0..k/2-1 with the rest
of the same policy on the same contexts, whose true difference is zero: its measured sd must agree with the
prediction. The selection check asks whether the best of k by seed 0 is also better on seed 1 (a held-out
seed): if not, ReST-EM's "keep the best" keeps noise.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from seal.engine.stats import contexts_needed, mean_ci95, null_difference_sd, paired_difference, variance_components
from seal.engine.store import RunStore
from seal.experiment.results import POWER_DELTA, eval_rows, n_questions_of, per_context


def rewards_of(store, condition: str, round_: int = 0) -> dict[str, dict[int, dict[int, float]]]:
    """context -> sample -> seed -> reward, for the trials of one condition that ran (an invalid self-edit counts
    at its recorded reward, as it does in the results)."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    for t in store.trials(round_, condition):
        if t["status"] != "failed":
            out.setdefault(t["context_id"], {}).setdefault(t["sample"], {})[t["seed"]] = t["reward"]
    return out


def complete_grid(r: dict) -> tuple[list[str], np.ndarray]:
    """The contexts with every sample and seed the run has most often, as an array [context, sample, seed]."""
    shapes = {}
    for c, samples in r.items():
        key = (len(samples), min(len(s) for s in samples.values()))
        shapes[key] = shapes.get(key, 0) + 1
    k, reps = max(shapes, key=lambda s: (shapes[s], s))
    ids = sorted(c for c, s in r.items() if len(s) >= k and all(len(v) >= reps for v in s.values()))
    grid = np.array([[[r[c][s][e] for e in sorted(r[c][s])[:reps]] for s in sorted(r[c])[:k]] for c in ids])
    return ids, grid


def seed_share(comp: dict) -> float | None:
    """The share of a context's trial-to-trial variance that is inner-loop seed noise, not the self-edits."""
    s, e = comp["between_seeds"], comp["between_self_edits"]
    return None if s is None or s * s + e * e == 0 else s * s / (s * s + e * e)


def split_half(g: np.ndarray) -> dict:
    """Self-edits 0..k/2-1 against the rest, per context (true difference zero): the measured sd and interval."""
    h = g.shape[1] // 2
    a, b = g[:, :h, :].mean(axis=(1, 2)), g[:, h:2 * h, :].mean(axis=(1, 2))
    d = paired_difference(a, b)
    return {"self_edits_per_half": h, "seeds": g.shape[2], "difference": d["difference"], "ci95": d["ci95"],
            "sd_measured": d["sd"]}


def selection(g: np.ndarray) -> dict | None:
    """Keep the best of k by seed 0's reward (ReST-EM's rule, one seed) and score it on seed 1: how much the kept
    self-edit beats its context's mean self-edit on the held-out seed, with a bootstrap interval over contexts,
    beside what the same choice appears to gain on the seed it was chosen by."""
    if g.shape[2] < 2:
        return None
    best = g[:, :, 0].argmax(axis=1)
    rows = np.arange(g.shape[0])
    held_out = g[rows, best, 1] - g[:, :, 1].mean(axis=1)
    in_sample = g[rows, best, 0] - g[:, :, 0].mean(axis=1)
    gain, ci = mean_ci95(held_out)
    seen, _ = mean_ci95(in_sample)
    a, b = g[:, :, 0] - g[:, :, 0].mean(axis=1, keepdims=True), g[:, :, 1] - g[:, :, 1].mean(axis=1, keepdims=True)
    denom = math.sqrt(float((a ** 2).sum() * (b ** 2).sum()))
    return {"gain_on_selection_seed": seen, "gain_on_held_out_seed": gain, "held_out_ci95": ci,
            "seed_to_seed_correlation_within_context": float((a * b).sum() / denom) if denom > 0 else None}


def analyse(run: Path, condition: str, against: list[str], runs=(1, 3, 5, 9)) -> dict:
    store = RunStore.open_readonly(run / "store.sqlite")
    ids, g = complete_grid(rewards_of(store, condition))
    if g.size == 0 or g.shape[1] < 2:
        raise SystemExit(f"{run}: condition {condition!r} needs >= 2 self-edits per context (run with --k 4)")
    nq = n_questions_of(store)
    comp = variance_components(g)
    reps = g.shape[2]
    sh = split_half(g)
    projections = []
    for m in runs:   # m self-edits per context and policy, at the run's seeds per self-edit, and at one seed
        for r in sorted({1, reps}):
            sd = null_difference_sd(comp, m, r)
            projections.append({"self_edits_per_context": m, "seeds_per_self_edit": r, "sd_of_difference": sd,
                                "contexts_for_5_points": contexts_needed(sd, POWER_DELTA)})
    mine = dict(zip(ids, g.mean(axis=(1, 2))))
    versus = {}
    # the other conditions scored as results.json scores them (an eval run has one model: its base evaluations)
    rows = eval_rows(store, against, "base", store.base_models()[0]) if against else {}
    for other in against:
        theirs = per_context(rows[other][0])
        shared = [c for c in ids if c in theirs]
        if len(shared) >= 2:
            d = paired_difference([mine[c] for c in shared], [theirs[c] for c in shared])
            versus[other] = {**d, "contexts_for_5_points": contexts_needed(d["sd"], POWER_DELTA)}
    store.close()
    return {"run": str(run), "condition": condition, "contexts": len(ids),
            "questions": int(sum(nq.get(c, 0) for c in ids)),
            "questions_per_context": float(np.mean([nq.get(c, 0) for c in ids])),
            "mean_reward": float(g.mean()), "components": comp,
            "seed_share_of_within_context_variance": seed_share(comp),
            "split_half": {**sh, "sd_predicted": null_difference_sd(comp, sh["self_edits_per_half"], reps)},
            "selection": selection(g), "projections": projections, "versus": versus,
            "delta": POWER_DELTA}


def show(res: dict) -> None:
    c = res["components"]
    print(f"{res['run']}: {res['condition']}, {res['contexts']} contexts, {res['questions']} questions "
          f"({res['questions_per_context']:.1f} per context), {c['self_edits']} self-edits x "
          f"{c['seeds']} seed(s); mean reward {res['mean_reward']:.3f}")
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")
    print(f"  sd between contexts {fmt(c['between_contexts'])}, between self-edits "
          f"{fmt(c['between_self_edits'])}, between seeds {fmt(c['between_seeds'])}"
          f" (seeds' share of the within-context variance {fmt(res['seed_share_of_within_context_variance'])})")
    sh = res["split_half"]
    print(f"  split half ({sh['self_edits_per_half']} vs {sh['self_edits_per_half']} self-edits): difference "
          f"{sh['difference']:+.3f} [{sh['ci95'][0]:+.3f}, {sh['ci95'][1]:+.3f}], sd measured "
          f"{fmt(sh['sd_measured'])}, predicted {fmt(sh['sd_predicted'])}")
    s = res["selection"]
    if s:
        print(f"  best of {c['self_edits']} by seed 0: {s['gain_on_selection_seed']:+.3f} over the mean "
              f"on seed 0, {s['gain_on_held_out_seed']:+.3f} [{s['held_out_ci95'][0]:+.3f}, "
              f"{s['held_out_ci95'][1]:+.3f}] on seed 1; seed-to-seed correlation within a context "
              f"{fmt(s['seed_to_seed_correlation_within_context'])}")
    print("  contexts for a 5-point difference of two policies (80% power, 5% two-sided):")
    for p in res["projections"]:
        print(f"    {p['self_edits_per_context']} self-edit(s) x {p['seeds_per_self_edit']} seed(s): sd "
              f"{p['sd_of_difference']:.3f} -> {p['contexts_for_5_points']}")
    for other, d in res["versus"].items():
        print(f"  {res['condition']} - {other}: {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] "
              f"on {d['n_contexts']} contexts, sd {fmt(d['sd'])} -> {d['contexts_for_5_points']} contexts for 5 points")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a knowledge eval run folder with k >= 2 self-edits per context")
    ap.add_argument("--condition", default="self-edit")
    ap.add_argument("--against", default="passage,base", help="conditions to pair it with (comma-separated)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    a = ap.parse_args(argv)
    if not (a.run / "store.sqlite").is_file():
        print(f"{a.run}: no store.sqlite (not a run folder)", file=sys.stderr)
        return 2
    res = analyse(a.run, a.condition, [c for c in a.against.split(",") if c])
    show(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
