"""SEAL's outer loop for knowledge incorporation (ReST-EM), as `seal knowledge train`.

Round r (1..R) takes its own batch of training passages (disjoint across rounds), has the current model M(r-1)
write k self-edits per passage, scores each with the inner loop over several seeds (reward = mean accuracy),
keeps the selected ones, finetunes the generator on (self-edit prompt -> selected self-edit) with the loss on
the completion only, merges, and saves M(r) as a PEFT adapter and a merged Hugging Face folder. M(r) then
both writes the next self-edits and is the model the inner loop updates, as in the paper, unless a separate
student is given (teacher/student: the teacher writes, the student is updated and answers, the reward trains
the teacher). After each round (and before the first) the model is evaluated on the eval passages: it writes
one self-edit per passage, trains it into the student, and answers without the passage.

Everything is stored as it finishes (self-edit chunks, each trial, the selection, each checkpoint), so the same
command resumes a killed run from its last checkpoint and skips every stored trial.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ...config import inner_preset
from ...outer import SELECTION_RULES, Candidate, SFTConfig, finetune_and_merge, select_self_edits
from ...stats import mean_ci95
from ...runs import add_timing, ensure_base_evals, open_store, trial_recorder, trial_seed, write_results
from .data import DataError, resolve_data, select
from .experiment import EvalOptions, build_domain, ensure_self_edits, make_grader_checked


@dataclass
class TrainOptions(EvalOptions):
    """`data`/`n` are the eval passages; the training passages come from `train_data`."""
    train_data: str = "builtin:train"
    rounds: int = 2
    contexts: int = 50                   # training passages per round (disjoint across rounds)
    k: int = 5                           # self-edits sampled per training passage
    repeats: int = 3                     # inner-loop seeds per self-edit; reward = mean accuracy over them
    selection: str = "best"
    sft: dict = field(default_factory=dict)   # overrides of SFTConfig
    student: str | None = None           # a separate model to update and evaluate (teacher/student)
    eval_rounds: str = "all"             # all, last, or none
    out: str = "runs/knowledge-train"


def _settings(opts: TrainOptions, cfg, sft: SFTConfig, train_label: str, eval_label: str) -> dict:
    d = dataclasses.asdict(opts)
    for k in ("out", "show_progress", "device", "judge_key_env", "gen_key_env", "inner", "preset", "sft",
              "conditions", "start"):
        d.pop(k)
    d.update(data=eval_label, train_data=train_label, inner=dataclasses.asdict(cfg), sft=dataclasses.asdict(sft),
             contexts_per_round=opts.contexts, seeds=opts.repeats)
    for perf_only in ("adapters_per_pack", "micro_batch_tokens"):
        d["inner"].pop(perf_only)
    d["sft"].pop("micro_batch_tokens")
    return json.loads(json.dumps(d))


def _latest_checkpoint(store, out: Path, rounds: int) -> tuple[int, str | None]:
    for r in range(rounds, 0, -1):
        path = store.get_meta(f"checkpoint:{r}")
        if path and (out / path / "config.json").exists():
            return r, str(out / path)
    return 0, None


def run_train(opts: TrainOptions, log=print) -> dict:
    from ...inner import InnerLoop, Trial
    from ...models import load_model

    # 1. Check everything before any model work.
    if opts.rounds < 1 or opts.contexts < 1 or opts.k < 1 or opts.repeats < 1:
        raise ValueError("rounds, contexts, k and repeats must all be >= 1")
    if opts.selection not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {opts.selection!r}; choose from {', '.join(SELECTION_RULES)}")
    if opts.eval_rounds not in ("all", "last", "none"):
        raise ValueError("eval_rounds must be all, last or none")
    train_all, train_label = resolve_data(opts.train_data, default_split="train")
    need = opts.rounds * opts.contexts
    train_ctx = select(train_all, need, opts.select_seed)
    if len(train_ctx) < need:
        raise DataError(f"{train_label}: {opts.rounds} rounds x {opts.contexts} passages need {need} training "
                        f"passages, but it has {len(train_ctx)}")
    eval_all, eval_label = resolve_data(opts.data)
    eval_ctx = select(eval_all, opts.n, opts.select_seed)
    overlap = {p.id for p in train_ctx} & {p.id for p in eval_ctx}
    if overlap:
        raise DataError(f"{len(overlap)} passage(s) are in both the training and the eval set")
    cfg = inner_preset(opts.preset, **opts.inner)
    sft_cfg = SFTConfig(**opts.sft)
    grader = make_grader_checked(opts)
    out = Path(opts.out)
    settings = _settings(opts, cfg, sft_cfg, train_label, eval_label)
    store = open_store(out, settings, "knowledge-train")

    # 2. Models: the latest checkpoint of this run (or the starting model) writes the self-edits.
    start, ckpt = _latest_checkpoint(store, out, opts.rounds)
    if ckpt:
        log(f"resuming from the round-{start} checkpoint {ckpt}")
    teacher = load_model(ckpt or opts.model, opts.device, opts.dtype)
    student = load_model(opts.student, opts.device, opts.dtype) if opts.student else teacher
    t_domain = build_domain(opts, teacher, grader)
    s_domain = t_domain if student is teacher else build_domain(opts, student, grader)
    loop = InnerLoop(student, s_domain, cfg, answer_tokens=opts.answer_tokens, show_progress=opts.show_progress)
    model_key = (lambda r: "student") if opts.student else (lambda r: f"round-{r}")
    round_models = store.get_meta("round_models") or {}

    def run_trials(trials, bases):
        if trials:
            log(f"running {len(trials)} trial(s)")
        loop.run(trials, bases={id(p): bases[p.id] for p in {id(t.context): t.context for t in trials}.values()},
                 on_result=trial_recorder(store, trials))

    def evaluate(r: int) -> None:
        """M(r) writes one self-edit per eval passage; the student trains on it and answers."""
        round_models[str(r)] = model_key(r)
        store.set_meta("round_models", round_models)
        bases = ensure_base_evals(store, loop, model_key(r), eval_ctx)
        done = store.done_trials(r)
        trials = []
        if r == 0:
            trials += [Trial((0, "passage", p.id, 0, 0), p, s_domain.passage_update(p),
                             trial_seed(opts.seed, "passage", p.id)) for p in eval_ctx
                       if (0, "passage", p.id, 0, 0) not in done]
        edits = ensure_self_edits(store, teacher, t_domain, r, "eval", eval_ctx, 1, opts,
                                  seed_tag=("gen", "eval", r))
        trials += [Trial((r, "eval", p.id, 0, 0), p, s_domain.parse_self_edit(p, edits[p.id][0]),
                         trial_seed(opts.seed, "eval", r, p.id), self_edit=edits[p.id][0]) for p in eval_ctx
                   if (r, "eval", p.id, 0, 0) not in done]
        run_trials(trials, bases)

    def train_round(r: int) -> None:
        """E-step with M(r-1) on this round's passages, then the M-step that turns M(r-1) into M(r)."""
        ctxs = train_ctx[(r - 1) * opts.contexts:r * opts.contexts]
        bases = ensure_base_evals(store, loop, model_key(r - 1), ctxs)
        edits = ensure_self_edits(store, teacher, t_domain, r, "train", ctxs, opts.k, opts,
                                  seed_tag=("gen", "train", r))
        done = store.done_trials(r)
        trials = [Trial((r, "train", p.id, s, seed), p, s_domain.parse_self_edit(p, edits[p.id][s]),
                        trial_seed(opts.seed, "train", r, p.id, s, seed), self_edit=edits[p.id][s])
                  for p in ctxs for s in range(opts.k) for seed in range(opts.repeats)
                  if (r, "train", p.id, s, seed) not in done]
        run_trials(trials, bases)

        rewards: dict[tuple[str, int], list[float]] = {}
        for row in store.trials(r, "train"):
            rewards.setdefault((row["context_id"], row["sample"]), []).append(row["reward"])
        cands = [Candidate(p.id, s, sum(rewards[(p.id, s)]) / len(rewards[(p.id, s)]), edits[p.id][s])
                 for p in ctxs for s in range(opts.k)]
        chosen = select_self_edits(cands, {p.id: bases[p.id].accuracy for p in ctxs}, opts.selection)
        store.set_meta(f"selected:{r}", [
            {"context_id": c.context_id, "sample": c.sample, "reward": c.reward,
             "base_accuracy": bases[c.context_id].accuracy, "beat_base": c.reward > bases[c.context_id].accuracy,
             "chars": len(c.text)} for c in chosen])
        by_id = {p.id: p for p in ctxs}
        pairs = [(t_domain.self_edit_prompt(by_id[c.context_id]), c.text) for c in chosen]
        log(f"round {r}: finetuning the generator on {len(pairs)} selected self-edit(s)")
        rel = Path("checkpoints") / f"round-{r}"
        res = finetune_and_merge(teacher, pairs, sft_cfg, seed=trial_seed(opts.seed, "sft", r), out_dir=out / rel)
        store.set_meta(f"sft:{r}", {"steps": res.steps, "final_loss": res.final_loss, "losses": res.losses,
                                    "examples": res.examples, "seconds": round(res.seconds, 1)})
        add_timing(store, f"sft:{r}", res.seconds)
        store.set_meta(f"checkpoint:{r}", str(rel / "merged"))

    # 3. Rounds. Evaluation of M(r) comes before the round that trains M(r+1).
    eval_at = {"all": set(range(opts.rounds + 1)), "last": {0, opts.rounds}, "none": set()}[opts.eval_rounds]
    for r in range(start, opts.rounds + 1):
        if r in eval_at:
            evaluate(r)
        if r < opts.rounds:
            train_round(r + 1)

    summary = summarize_train(store, eval_ctx, opts.rounds, model_key)
    store.close()
    return write_results(out, "knowledge-train", settings, **summary)


def summarize_train(store, eval_ctx, rounds: int, model_key) -> dict:
    """Accuracy per condition (macro over eval passages, bootstrap 95% CI) and per-round training statistics."""
    ids = [p.id for p in eval_ctx]
    n_q = sum(len(p.questions) for p in eval_ctx)

    def row(per_ctx: dict[str, float]) -> dict:
        vals = [per_ctx[i] for i in ids if i in per_ctx]
        acc, ci = mean_ci95(vals)
        return {"accuracy": acc, "ci95": ci, "n_contexts": len(vals), "n_questions": n_q}

    conditions = {}
    base0 = store.base_evals(model_key(0))
    conditions["base"] = row({c: v["accuracy"] for c, v in base0.items()})
    conditions["passage"] = row({t["context_id"]: t["accuracy"] or 0.0 for t in store.trials(0, "passage")})
    for r in range(rounds + 1):
        trials = store.trials(r, "eval")
        if trials:
            name = "self-edit (round 0)" if r == 0 else f"SEAL round {r}"
            conditions[name] = {**row({t["context_id"]: t["accuracy"] or 0.0 for t in trials}),
                                "base_of_this_model": row({c: v["accuracy"]
                                                           for c, v in store.base_evals(model_key(r)).items()})}
    per_round = []
    for r in range(1, rounds + 1):
        trials = store.trials(r, "train")
        if not trials:
            continue
        by_edit: dict[tuple, list[float]] = {}
        for t in trials:
            by_edit.setdefault((t["context_id"], t["sample"]), []).append(t["reward"])
        means = [sum(v) / len(v) for v in by_edit.values()]
        best: dict[str, float] = {}
        for (c, _), v in by_edit.items():
            best[c] = max(best.get(c, 0.0), sum(v) / len(v))
        selected = store.get_meta(f"selected:{r}")
        texts = store.self_edits(r, "train")
        per_round.append({
            "round": r, "trials": len(trials), "mean_reward": sum(means) / len(means),
            "mean_best_of_k": sum(best.values()) / len(best),
            "selected": len(selected) if selected is not None else None,
            "selected_beat_base": (sum(s["beat_base"] for s in selected) / len(selected)) if selected else None,
            "mean_self_edit_chars": sum(len(t) for t in texts.values()) / max(1, len(texts)),
            "sft": store.get_meta(f"sft:{r}"),
        })
    return {"conditions": conditions, "rounds": per_round}
