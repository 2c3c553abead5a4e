"""The numbers of a run, computed in one place from its store: results.json, the report and the docs read these
functions, so a finished, interrupted or resumed run reports the same numbers everywhere.

A condition's accuracy is the macro mean over contexts of each context's mean over its trials (samples and
seeds), with a 95% bootstrap interval over contexts taken in the run's own context order.
"""
from __future__ import annotations

from typing import Any

from ..engine.stats import mean_ci95


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


def base_rows(store, model_key: str) -> list[dict]:
    """The no-update evaluations of a model, as trial-like rows."""
    return [{"context_id": c, "accuracy": v["accuracy"], "status": "ok", "answers": v["answers"], "sequences": None}
            for c, v in store.base_evals(model_key).items()]


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


def eval_results(store, names: list[str], no_update: str, model_key: str, round_: int = 0,
                 stored_as: dict[str, str] | None = None, order: list[str] | None = None,
                 nq: dict[str, int] | None = None) -> dict[str, dict]:
    """Per condition of one evaluation (round `round_`): the summary, keyed by the condition's name."""
    order = context_order(store) if order is None else order
    nq = n_questions_of(store) if nq is None else nq
    timings = store.get_meta("timings") or {}
    skip = unscored_contexts(store.contexts())
    out = {}
    for name in names:
        if name == no_update:
            out[name] = summarize(base_rows(store, model_key), order, nq, timings.get(f"base:{model_key}"), skip)
            continue
        cond = (stored_as or {}).get(name, name)
        rows = store.trials(round_, cond)
        seconds = sum(r["seconds"] or 0.0 for r in rows) + timings.get(f"generate:{cond}:{round_}", 0.0)
        out[name] = summarize(rows, order, nq, seconds, skip)
    return out


def train_results(store, names: list[str], no_update: str, rounds: int, first_eval: str, eval_condition: str,
                  round_models: dict[str, str]) -> dict[str, Any]:
    """A ReST-EM run: the round-0 conditions, each later round's evaluation, and per-round training numbers."""
    order, nq, skip = context_order(store), n_questions_of(store), unscored_contexts(store.contexts())
    conditions = eval_results(store, names, no_update, round_models.get("0", "round-0"), 0,
                              {"self-edit": first_eval}, order, nq)
    for r in range(1, rounds + 1):
        rows = store.trials(r, eval_condition.format(round=r))
        if rows:
            conditions[f"seal-round-{r}"] = summarize(rows, order, nq, unscored=skip)
        base = base_rows(store, round_models.get(str(r), ""))
        if base and r > 0:
            conditions[f"{no_update}-round-{r}"] = summarize(base, order, nq, unscored=skip)
    return {"conditions": conditions, "rounds": round_stats(store, rounds)}


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


def round_stats(store, rounds: int) -> list[dict]:
    out = []
    for r in range(1, rounds + 1):
        trials = store.trials(r, "train")
        if not trials:
            continue
        means = self_edit_rewards(trials)
        best = best_of_k(means)
        selected = store.get_meta(f"selected:{r}")
        texts = store.self_edits(r, "train")
        beat = [s["beat_base"] for s in selected or [] if s.get("beat_base") is not None]
        out.append({"round": r, "trials": len(trials), "self_edits": len(means),
                    "mean_reward": sum(means.values()) / len(means),
                    "mean_best_of_k": sum(best.values()) / len(best),
                    "selected": len(selected) if selected is not None else None,
                    "selected_beat_base": (sum(beat) / len(beat)) if beat else None,
                    "mean_self_edit_chars": sum(len(t) for t in texts.values()) / max(1, len(texts)),
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
