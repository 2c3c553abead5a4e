"""The numbers of a run, computed in one place from its store: results.json, the report and the docs read these
functions, so a finished, interrupted or resumed run reports the same numbers everywhere.

A condition's accuracy is the macro mean over contexts of each context's mean over its trials (samples and
seeds), with a 95% bootstrap interval over contexts taken in the run's own context order.
"""
from __future__ import annotations

from typing import Any

import itertools

from ..engine.stats import contexts_needed, mean_ci95, paired_difference


def per_context(rows: list[dict]) -> dict[str, float]:
    """A context's score: the mean accuracy over its trials. A failed or invalid trial counts as 0."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["context_id"], []).append(r["accuracy"] or 0.0)
    return {c: sum(v) / len(v) for c, v in by.items()}


def unscored_contexts(contexts: dict[str, dict]) -> set[str]:
    """Contexts with no score: a gold answer of None (an ARC task shipped without its solution). Their trials keep
    their answers (predictions), and every accuracy leaves them out."""
    return {c for c, v in contexts.items() if any(g is None for g in v.get("gold") or [])}


def context_order(store, split: str = "eval") -> list[str]:
    """The contexts of a split in the order the run chose them (older stores: sorted ids)."""
    order = store.get_meta(f"contexts:{split}")
    if isinstance(order, list):
        return order
    ids = {r["context_id"] for r in store.trials()} | {c for m in store.base_models() for c in store.base_evals(m)}
    return sorted(ids)


def summarize(rows: list[dict], order: list[str], n_questions: dict[str, int], seconds: float | None = None,
              unscored: set[str] = frozenset()) -> dict:
    """One condition: accuracy, interval and counts from its trial rows (dicts with context_id, accuracy, status,
    and optionally answers and sequences). Contexts in `unscored` count only in `n_unscored`; with no scored
    context, accuracy and interval are None."""
    scores = per_context(rows)
    ids = [c for c in order if c in scores and c not in unscored] + sorted(set(scores) - set(order) - unscored)
    acc, ci = mean_ci95([scores[c] for c in ids]) if ids else (None, [None, None])
    answers = [a for r in rows for a in (r.get("answers") or [])]
    out = {"accuracy": acc, "ci95": ci, "n_contexts": len(ids), "n_questions": sum(n_questions.get(c, 0) for c in ids),
           "n_unscored": len(set(scores) & unscored),
           "n_trials": len(rows), "n_failed": sum(r["status"] == "failed" for r in rows),
           "n_invalid": sum(r["status"] == "invalid" for r in rows),
           "contexts_solved": len({r["context_id"] for r in rows if (r["accuracy"] or 0) >= 1.0}),
           "empty_answers": (sum(not a.strip() for a in answers) / len(answers)) if answers else 0.0,
           "mean_sequences": (sum(len(r.get("sequences") or []) + len(r.get("pairs") or []) for r in rows)
                              / len(rows)) if rows else 0.0}
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    return out


def base_rows(store, model_key: str, split: str | None = None) -> list[dict]:
    """The no-update evaluations of a model, as trial-like rows; with `split`, only that split's contexts where
    the run recorded them (a ReST-EM run also evaluates its training contexts with no update)."""
    keep = store.get_meta(f"contexts:{split}") if split else None
    keep = set(keep) if isinstance(keep, list) else None
    return [{"context_id": c, "accuracy": v["accuracy"], "status": "ok", "answers": v["answers"], "sequences": None}
            for c, v in store.base_evals(model_key).items() if keep is None or c in keep]


def n_questions_of(store) -> dict[str, int]:
    """Questions per context: from the stored context views (older stores: the graded answers)."""
    n = {c: len(v["questions"]) for c, v in store.contexts().items()}
    if n:
        return n
    for m in store.base_models():
        for c, v in store.base_evals(m).items():
            n.setdefault(c, len(v["grades"]))
    for r in store.trials():
        if r["grades"] is not None:
            n.setdefault(r["context_id"], len(r["grades"]))
    return n


def eval_rows(store, names: list[str], no_update: str, model_key: str, round_: int = 0,
              stored_as: dict[str, str] | None = None) -> dict[str, tuple[list[dict], float | None]]:
    """Per condition of one evaluation (round `round_`): its trial rows (the no-update condition: the model's base
    evaluations) and the seconds they took."""
    timings = store.get_meta("timings") or {}
    out = {}
    for name in names:
        if name == no_update:
            out[name] = (base_rows(store, model_key, "eval"), timings.get(f"base:{model_key}"))
            continue
        cond = (stored_as or {}).get(name, name)
        rows = store.trials(round_, cond)
        out[name] = (rows, sum(r["seconds"] or 0.0 for r in rows) + timings.get(f"generate:{cond}:{round_}", 0.0))
    return out


def eval_results(store, names: list[str], no_update: str, model_key: str, round_: int = 0,
                 stored_as: dict[str, str] | None = None) -> dict[str, Any]:
    """One evaluation (round `round_`): per condition the summary, keyed by the condition's name, and the paired
    comparisons of every two conditions."""
    rows = eval_rows(store, names, no_update, model_key, round_, stored_as)
    return results_of(store, rows)


def results_of(store, rows: dict[str, tuple[list[dict], float | None]]) -> dict[str, Any]:
    """{"conditions": name -> summary, "comparisons": every pair, paired by context} from the conditions' rows."""
    order, nq, skip = context_order(store), n_questions_of(store), unscored_contexts(store.contexts())
    conditions = {name: summarize(r, order, nq, sec, skip) for name, (r, sec) in rows.items()}
    scores = {name: per_context(r) for name, (r, _) in rows.items()}
    return {"conditions": conditions, "comparisons": paired_comparisons(scores, order, nq, skip)}


def shared_contexts(a: dict, b: dict, order: list[str], skip=frozenset()) -> list[str]:
    """The contexts both score dicts have (none of `skip`): in the run's order, then any others sorted."""
    both = (set(a) & set(b)) - set(skip)
    return [c for c in order if c in both] + sorted(both - set(order))


POWER_DELTA = 0.05   # the difference a power estimate is for: 5 points of accuracy (engine.stats.contexts_needed)


def paired_comparisons(scores: dict[str, dict[str, float]], order: list[str], n_questions: dict[str, int],
                       unscored: set[str] = frozenset()) -> list[dict]:
    """Every two conditions compared on the contexts both have scores for (in the run's context order): each
    later condition (in `scores`' order) minus each earlier one, with the paired bootstrap interval of the
    per-context difference and the sign test (engine.stats.paired_difference), and the contexts and questions
    the comparison rests on; and, from the spread of these differences, the contexts a comparison needs to see a
    5-point difference (80% power, 5% two-sided). A pair with no context in common is left out."""
    out = []
    for (b, sb), (a, sa) in itertools.combinations(scores.items(), 2):
        shared = shared_contexts(sa, sb, order, unscored)
        if not shared:
            continue
        d = paired_difference([sa[c] for c in shared], [sb[c] for c in shared])
        need = contexts_needed(d["sd"], POWER_DELTA) if d["sd"] is not None else None
        out.append({"condition": a, "versus": b, **d, "n_questions": sum(n_questions.get(c, 0) for c in shared),
                    "contexts_for_5_points": need})
    return out


def train_results(store, names: list[str], no_update: str, rounds: int, first_eval: str, eval_condition: str,
                  round_models: dict[str, str]) -> dict[str, Any]:
    """A ReST-EM run: the round-0 conditions, each later round's evaluation, their paired comparisons, and
    per-round training numbers."""
    rows = eval_rows(store, names, no_update, round_models.get("0", "round-0"), 0, {"self-edit": first_eval})
    for r in range(1, rounds + 1):
        seal = store.trials(r, eval_condition.format(round=r))
        if seal:
            rows[f"seal-round-{r}"] = (seal, None)
        base = base_rows(store, round_models.get(str(r), ""), "eval")
        if base:
            rows[f"{no_update}-round-{r}"] = (base, None)
    return {**results_of(store, rows), "rounds": round_stats(store, rounds)}


def self_edit_rewards(rows: list[dict]) -> dict[tuple[str, int], float]:
    """The reward of each sampled self-edit (context, sample): its mean over the inner-loop seeds."""
    by: dict[tuple[str, int], list[float]] = {}
    for t in rows:
        by.setdefault((t["context_id"], t["sample"]), []).append(t["reward"])
    return {k: sum(v) / len(v) for k, v in by.items()}


def best_of_k(rewards: dict[tuple[str, int], float]) -> dict[str, float]:
    """Per context, the reward of its best self-edit."""
    best: dict[str, float] = {}
    for (c, _), v in rewards.items():
        best[c] = max(best.get(c, v), v)
    return best


def context_rewards(rewards: dict[tuple[str, int], float]) -> dict[str, float]:
    """Per context, the mean reward of its sampled self-edits."""
    by: dict[str, list[float]] = {}
    for (c, _), v in rewards.items():
        by.setdefault(c, []).append(v)
    return {c: sum(v) / len(v) for c, v in by.items()}


def reward_change(current: dict[str, float], previous: dict[str, float], order: list[str]) -> dict | None:
    """A round's mean reward per context minus the previous round's, paired on the contexts both sampled (in the
    run's order; the rest sorted), or None when they share none."""
    shared = shared_contexts(current, previous, order)
    return paired_difference([current[c] for c in shared], [previous[c] for c in shared]) if shared else None


def round_stats(store, rounds: int) -> list[dict]:
    """Per ReST-EM round: its sampled self-edits' rewards, the selection, the finetune; and, where the round's
    training contexts include some of the previous round's (outer.reuse_contexts), the change of the mean reward
    per context on those, paired (the check that ReST-EM learns what it is rewarded for)."""
    out, previous = [], {}
    order = context_order(store, "train")
    for r in range(1, rounds + 1):
        trials = store.trials(r, "train")
        if not trials:
            continue
        means = self_edit_rewards(trials)
        best = best_of_k(means)
        per_ctx = context_rewards(means)
        change, previous = reward_change(per_ctx, previous, order), per_ctx
        selected = store.get_meta(f"selected:{r}")
        texts = store.self_edits(r, "train")
        beat = [s["beat_base"] for s in selected or [] if s.get("beat_base") is not None]
        out.append({"round": r, "trials": len(trials), "self_edits": len(means),
                    "mean_reward": sum(means.values()) / len(means),
                    "mean_best_of_k": sum(best.values()) / len(best),
                    "selected": len(selected) if selected is not None else None,
                    "selected_beat_base": (sum(beat) / len(beat)) if beat else None,
                    "mean_self_edit_chars": sum(len(t) for t in texts.values()) / max(1, len(texts)),
                    "reward_vs_previous_round": change,
                    "self_edit_profile": store.get_meta(f"self_edit_stats:{r}") or {},
                    "sft": store.get_meta(f"sft:{r}")})
    return out


def display_name(name: str, labels: dict[str, str] | None = None) -> str:
    """How tables show a condition: the domain's label, or the round for a ReST-EM evaluation."""
    if labels and name in labels:
        return labels[name]
    head, sep, r = name.rpartition("-round-")
    if sep and r.isdigit():
        return f"SEAL round {r}" if head == "seal" else f"{head} (round {r} model)"
    return name


def format_table(results: dict, labels: dict[str, str] | None = None, title: str = "") -> str:
    from rich.console import Console
    from rich.table import Table

    labels = labels or {}
    table = Table(title=title or None)
    for col in ("condition", "accuracy", "95% CI", "questions", "contexts", "trials", "time (s)"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for name, r in results.items():
        scored = r["accuracy"] is not None
        table.add_row(display_name(name, labels), f"{100 * r['accuracy']:.1f}%" if scored else "-",
                      f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]" if scored else "-", str(r["n_questions"]),
                      str(r["n_contexts"]), str(r.get("n_trials", "-")),
                      f"{r['seconds']:.0f}" if "seconds" in r else "-")
    console = Console(record=True, width=110)
    with console.capture() as cap:
        console.print(table)
    unscored = max((r.get("n_unscored", 0) for r in results.values()), default=0)
    note = (f"{unscored} context(s) have no solution to score: their predictions are stored (store.sqlite, "
            f"report.md), and no accuracy counts them\n") if unscored else ""
    return cap.get() + note


def format_comparisons(pairs: list[dict], labels: dict[str, str] | None = None, keep=lambda name: True) -> str:
    """The paired comparisons whose two conditions `keep` accepts, as a terminal table (the report has them all)."""
    from rich.console import Console
    from rich.table import Table

    rows = [p for p in pairs if keep(p["condition"]) and keep(p["versus"])]
    if not rows:
        return ""
    table = Table(title="paired by context: first minus second")
    for col in ("first", "second", "difference", "95% CI", "higher/lower/equal", "sign p", "contexts",
                "for 5 points"):
        table.add_column(col, justify="left" if col in ("first", "second") else "right")
    for p in rows:
        table.add_row(display_name(p["condition"], labels), display_name(p["versus"], labels),
                      f"{100 * p['difference']:+.1f}", f"[{100 * p['ci95'][0]:+.1f}, {100 * p['ci95'][1]:+.1f}]",
                      f"{p['wins']}/{p['losses']}/{p['ties']}", f"{p['sign_test_p']:.3f}", str(p["n_contexts"]),
                      "-" if p["contexts_for_5_points"] is None else str(p["contexts_for_5_points"]))
    console = Console(record=True, width=110)
    with console.capture() as cap:
        console.print(table)
    return cap.get()
