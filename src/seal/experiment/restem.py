"""SEAL's outer loop (ReST-EM), written once for every domain.

Round r (1..R) takes its training contexts (a disjoint slice per round, or the same ones every round), has the
current model M(r-1) write k self-edits per context, scores each with the inner loop over `repeats` seeds
(reward = mean), keeps what the selection rule picks, finetunes the generator on (self-edit prompt -> kept
self-edit) with the loss on the completion only, merges, and saves M(r) as a PEFT adapter and a merged Hugging
Face folder. M(r) then writes the next self-edits and is the model the inner loop updates, as in the paper,
unless a separate student is given (the teacher writes and is trained by the reward; the student is updated
and answers). Before the first round and after the rounds `eval_rounds` names, the model is evaluated.

Everything is stored as it finishes (self-edit chunks, each trial, the selection, each checkpoint), so the same
command resumes a killed run from its last checkpoint and skips every stored trial.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..engine.protocol import Trial
from ..engine.seeds import seed_of
from .evaluate import evaluate
from .selfedits import sample_self_edits


@dataclass
class Candidate:
    """One sampled self-edit of a round, scored over its seeds."""
    context_id: str
    sample: int
    reward: float          # mean reward over the inner-loop seeds
    accuracy: float        # mean accuracy over them
    ok: bool               # every seed trained and answered (not invalid, not failed)
    text: str


def _best(cands: list[Candidate]) -> Candidate:
    return max(sorted(cands, key=lambda c: c.sample), key=lambda c: c.reward)  # max keeps the first of equals


def _by_context(cands: list[Candidate], keep: Callable[[Candidate], bool]) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    for c in cands:
        if keep(c):
            out.setdefault(c.context_id, []).append(c)
    return out


def _nonblank(c: Candidate) -> bool:
    return bool(c.text.strip())


def rule_best(cands, base):
    """The paper's knowledge rule: per context the highest mean reward, even below the base; ties to the earlier
    sample. Blank self-edits are never kept."""
    return [_best(cs) for cs in _by_context(cands, _nonblank).values()]


def rule_best_beats_base(cands, base):
    """`best`, kept only where it beats the base model's accuracy on the context."""
    best = [_best(cs) for cs in _by_context(cands, _nonblank).values()]
    return [b for b in best if b.reward > base.get(b.context_id, 0.0)]


def rule_all_beat_base(cands, base):
    """Every self-edit that beats the base model's accuracy on its context."""
    return [c for ctx, cs in _by_context(cands, _nonblank).items() for c in sorted(cs, key=lambda c: c.sample)
            if c.reward > base.get(ctx, 0.0)]


def rule_solved(cands, base):
    """The paper's ARC rule: every valid self-edit whose adapted model solved its task."""
    return [c for c in cands if c.ok and c.accuracy > 0]


def rule_best_graded(cands, base):
    """For graded rewards: per context every valid self-edit with the context's highest reward (ties all kept),
    if that reward is above 0, so a round learns something even when no rollout solves a task outright."""
    out = []
    for cs in _by_context(cands, lambda c: c.ok).values():
        top = max(c.reward for c in cs)
        out += [c for c in cs if top > 0 and c.reward == top]
    return out


SELECTION_RULES: dict[str, Callable] = {"best": rule_best, "best-beats-base": rule_best_beats_base,
                                        "all-beat-base": rule_all_beat_base, "solved": rule_solved,
                                        "best-graded": rule_best_graded}
NEEDS_BASE = {"best-beats-base", "all-beat-base"}


def select_self_edits(cands: list[Candidate], base: dict[str, float], rule: str) -> list[Candidate]:
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {', '.join(SELECTION_RULES)}")
    return SELECTION_RULES[rule](cands, base)


def candidates(rows: list[dict], texts: dict[tuple[str, int], str], order: list[str], k: int) -> list[Candidate]:
    """A round's stored training trials as candidates, in context order, then sample."""
    by: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        by.setdefault((row["context_id"], row["sample"]), []).append(row)
    out = []
    for ctx in order:
        for s in range(k):
            rs = by.get((ctx, s), [])
            if rs:
                out.append(Candidate(ctx, s, sum(r["reward"] for r in rs) / len(rs),
                                     sum(r["accuracy"] or 0.0 for r in rs) / len(rs),
                                     all(r["status"] == "ok" for r in rs), texts.get((ctx, s), "")))
    return out


@dataclass
class Models:
    """The models of a ReST-EM run: the teacher writes self-edits (and is finetuned), the learner is updated."""
    teacher: object        # LoadedModel
    t_domain: object
    learner: object        # experiment.evaluate.Learner
    student: bool


def self_edit_profile(domain, contexts, texts: dict[tuple[str, int], str], chosen: set[tuple[str, int]]) -> dict:
    """What a round's sampled self-edits look like, and the selected ones apart: the mean of each number the
    domain's optional `self_edit_stats(context, text)` gives (the knowledge domain: length, share of the gold
    answers restated, share of invented words), over all nonblank samples and over the selected. {} when the
    domain has no such method."""
    stats = getattr(domain, "self_edit_stats", None)
    if stats is None:
        return {}
    by_id = {c.id: c for c in contexts}
    rows = {key: stats(by_id[key[0]], text) for key, text in texts.items() if key[0] in by_id and text.strip()}

    def mean(keys) -> dict:
        keys = [k for k in keys if k in rows]
        names = sorted({n for k in keys for n in rows[k]})
        return {"n": len(keys), **{n: sum(rows[k][n] for k in keys) / len(keys) for n in names}}
    return {"sampled": mean(rows), "selected": mean(chosen)}


def latest_checkpoint(store, out: Path, rounds: int) -> tuple[int, str | None]:
    for r in range(rounds, 0, -1):
        path = store.get_meta(f"checkpoint:{r}")
        if path and (out / path / "config.json").exists():
            return r, str(out / path)
    return 0, None


def train_round(run, models: Models, r: int, contexts, log=print) -> None:
    """E-step with M(r-1) on this round's contexts, then the M-step that turns M(r-1) into M(r)."""
    from ..engine.training import finetune_and_merge

    cfg, outer = run.cfg, run.cfg.outer
    learner = models.learner
    run.describe(learner.domain, contexts)
    need_base = outer.selection in NEEDS_BASE or learner.domain.reward_uses_base or outer.train_base
    bases = run.base_evals(learner.loop, model_key(models, r - 1), contexts) if need_base else {}
    edits = sample_self_edits(run, models.teacher, models.t_domain, r, "train", contexts, outer.k, cfg.generation,
                              cfg.seeds.sample)
    done = run.store.done_trials(r)
    trials = [Trial((r, "train", c.id, s, rep), c, learner.domain.parse_self_edit(c, edits[c.id][s]),
                    seed_of(cfg.run.seed, cfg.seeds.train_trial, condition="train", round=r, context=c.id, sample=s,
                            repeat=rep), self_edit=edits[c.id][s])
              for c in contexts for s in range(outer.k) for rep in range(outer.repeats)
              if (r, "train", c.id, s, rep) not in done]
    run.run_trials(learner.executor, trials, bases=bases, log=log)

    texts = {(cid, s): t for cid, ts in edits.items() for s, t in enumerate(ts)}
    cands = candidates(run.store.trials(r, "train"), texts, [c.id for c in contexts], outer.k)
    base_acc = {cid: ev.accuracy for cid, ev in bases.items()}
    chosen = select_self_edits(cands, base_acc, outer.selection)
    run.store.set_meta(f"selected:{r}", [
        {"context_id": c.context_id, "sample": c.sample, "reward": c.reward, "accuracy": c.accuracy,
         "base_accuracy": base_acc.get(c.context_id),
         "beat_base": (c.reward > base_acc[c.context_id]) if c.context_id in base_acc else None,
         "chars": len(c.text)} for c in chosen])
    run.store.set_meta(f"self_edit_stats:{r}", self_edit_profile(learner.domain, contexts, texts,
                                                                 {(c.context_id, c.sample) for c in chosen}))
    by_id = {c.id: c for c in contexts}
    pairs = [(models.t_domain.self_edit_prompt(by_id[c.context_id]), c.text) for c in chosen]
    log(f"round {r}: {sum(c.ok and c.accuracy > 0 for c in cands)} of {len(cands)} self-edits scored above 0 "
        f"accuracy, {len(pairs)} kept; finetuning the generator")
    rel = Path("checkpoints") / f"round-{r}"
    res = finetune_and_merge(models.teacher, pairs, cfg.finetune, seed=seed_of(cfg.run.seed, cfg.seeds.finetune,
                                                                                 round=r), out_dir=run.out / rel)
    # The next round's adapter is trained on this round's model: its PEFT config names this checkpoint as its base
    # (what a resumed run, which loads the model from there, writes too).
    models.teacher.name = str(run.out / rel / "merged")
    run.store.set_meta(f"sft:{r}", {"steps": res.steps, "final_loss": res.final_loss, "losses": res.losses,
                                    "examples": res.examples, "seconds": round(res.seconds, 1)})
    run.add_timing(f"sft:{r}", res.seconds)
    if res.losses:
        run.metrics.log_steps("finetune", res.losses, round=r)
    rewards = [c.reward for c in cands]
    run.metrics.log("round", r, candidates=len(cands), selected=len(chosen),
                    mean_reward=sum(rewards) / len(rewards) if rewards else None, finetune_steps=res.steps)
    run.store.set_meta(f"checkpoint:{r}", str(rel / "merged"))


def model_key(models: Models, r: int) -> str:
    """Under which name the base evaluations of the model after r rounds are stored."""
    return "student" if models.student else f"round-{r}"


def rest_em(run, models: Models, train_contexts, eval_contexts, conditions, start: int, log=print,
            load_model=None) -> None:
    cfg, outer = run.cfg, run.cfg.outer
    per = outer.contexts_per_round or len(train_contexts)
    eval_at = {"all": set(range(outer.rounds + 1)), "last": {0, outer.rounds}, "none": set()}[outer.eval_rounds]
    round_models = run.store.get_meta("round_models") or {}
    writer = (models.teacher, models.t_domain)
    later = [c for c in conditions if c.kind in ("none", "self-edit")]
    for r in range(start, outer.rounds + 1):
        if r in eval_at:
            round_models[str(r)] = model_key(models, r)
            run.store.set_meta("round_models", round_models)
            name = outer.first_eval_condition if r == 0 else outer.eval_condition.format(round=r)
            evaluate(run, conditions if r == 0 else later, writer, models.learner, eval_contexts, r, cfg.eval.k,
                     cfg.eval.repeats, model_key(models, r), load_model=load_model, rename={"self-edit": name},
                     log=log)
        if r < outer.rounds:
            n = r + 1
            ctxs = train_contexts[:per] if outer.reuse_contexts else train_contexts[(n - 1) * per:n * per]
            train_round(run, models, n, ctxs, log=log)
