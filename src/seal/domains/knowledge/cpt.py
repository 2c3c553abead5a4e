"""Continued pretraining (the paper's multi-passage experiment): the self-edits of n passages pooled into ONE
update, then every passage's questions answered without the passages.

Conditions: base; passage (the n passages only); self-edit (passages + the model's own self-edits);
file:PATH and endpoint:MODEL (passages + someone else's self-edits); generator:PATH (passages + self-edits
written by another model folder, e.g. a `seal knowledge train` checkpoint). The update is a LoRA adapter
(default; the paper's v1) or full finetuning of every weight (`cpt.update=full`; the paper's final version).
Accuracy is reported micro (pooled questions, as the original's CPT driver) and macro (mean over passages, with
a bootstrap 95% interval).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ...engine.protocol import Trial, TrialResult
from ...engine.seeds import seed_of
from ...engine.stats import mean_ci95
from ...experiment.evaluate import parse_conditions, self_edits_of
from ...experiment.recipes import check_executor, load
from ...experiment.results import context_order, paired_comparisons
from ...experiment.run import Run
from .pooled import Pool, load_pooled, pooled_update


@dataclass
class CPTSection:
    update: str = "lora"                  # lora (one adapter) or full (every weight)

    def __post_init__(self):
        if self.update not in ("lora", "full"):
            raise ValueError(f"update must be lora or full, got {self.update!r}")


def run_cpt(spec, cfg, command: str = "", log=print) -> dict:
    from ...engine.training import TrainJob, full_finetune, tokenize_update

    checked = spec.check(cfg)
    probe = spec.build(cfg, None, checked)
    chosen = list(probe.contexts("eval"))
    if not chosen:
        raise ValueError("knowledge: no passages selected")
    conditions = parse_conditions(probe, cfg.eval.conditions, chosen, cfg.generation.endpoint_url,
                                  allow_generator=True)
    check_executor(cfg)
    with Run(cfg, "knowledge-cpt", command) as run:
        run.store.set_meta("contexts:eval", [p.id for p in chosen])
        loaded, learner, pooled = load_pooled(spec, cfg, checked, log=log)
        lm, domain = loaded.lm, loaded.domain
        run.describe(domain, chosen)
        run.base_evals(learner.loop, "round-0", chosen)
        pool = Pool(tuple(chosen))
        inner = cfg.inner.engine()
        done = run.store.done_trials(0)
        for cond in conditions:
            if cond.kind == "none" or (0, cond.name, "pool", 0, 0) in done:
                continue
            if cond.kind == "baseline":
                updates = [domain.baseline_update(cond.name, p) for p in chosen]
            else:
                edits = self_edits_of(run, cond, (lm, domain), 0, chosen, cfg.eval.k, cfg.seeds.sample,
                                      load_model=lambda path: load(spec, cfg, path, checked))
                # As the original: every self-edit brings its passage along (k self-edits -> k copies of it).
                updates = [domain.parse_self_edit(p, t) for p in chosen for t in (edits.get(p.id) or [""])]
            update = pooled_update(updates)
            seed = seed_of(cfg.run.seed, cfg.seeds.trial, condition=cond.name, round=0, context="pool", sample=0,
                           repeat=0)
            trial = Trial((0, cond.name, "pool", 0, 0), pool, update, seed)
            log(f"{cond.name}: one {cfg.cpt.update} update on {len(update.texts)} sequences from {len(chosen)} "
                "passages")
            with run.timing(f"cpt:{cond.name}"):
                if cfg.cpt.update == "lora" or update.error:
                    run.run_trials(pooled.executor, [trial])
                    continue
                t0 = time.perf_counter()
                tok = lm.tokenizer
                ids, masks = tokenize_update(tok, update, inner.max_seq_len)
                job = TrainJob(ids, masks, lr=inner.lr, epochs=inner.epochs, batch_size=inner.batch_size, seed=seed)
                pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
                with full_finetune(lm.model, job, inner.schedule, inner.weight_decay, inner.max_grad_norm,
                                   inner.micro_batch_tokens, pad) as outcome:
                    answers = [a for ans in pooled.loop.answer([pool], desc="answers") for a in ans]
                ev = pooled.domain.grade(pool, answers)
                run.recorder([trial])(TrialResult(trial.key, ev, ev.accuracy, steps=outcome.steps,
                                                  final_loss=outcome.final_loss, losses=outcome.losses or [],
                                                  seconds=time.perf_counter() - t0, error=outcome.failed))
        results = cpt_results(run.store, [c.name for c in conditions])
        run.store.set_meta("cpt", results["conditions"])
        run.store.set_meta("cpt:comparisons", results["comparisons"])
        return run.write_results(**results, labels=spec.labels)


def cpt_results(store, names: list[str]) -> dict:
    """{"conditions": per condition the macro accuracy over passages (with interval) and the micro accuracy over
    pooled questions; "comparisons": every two conditions paired by passage (experiment.results.paired_comparisons:
    each condition's pooled grades split back into its passages)}."""
    order = context_order(store)
    rows = {r["condition"]: r for r in store.trials(0)}
    timings = store.get_meta("timings") or {}
    base = store.base_evals("round-0") or next((store.base_evals(m) for m in store.base_models()), {})
    results, scores = {}, {}
    for name in names:
        if name == "base":
            per = {c: base[c]["accuracy"] for c in order if c in base}
            grades = [g for c in order if c in base for g in base[c]["grades"]]
            n_seq = 0
        elif name in rows and rows[name]["grades"] is not None:
            grades = rows[name]["grades"]
            per, i = {}, 0   # the pooled grades come in passage order; each passage has its base's question count
            for c in order:
                n = len(base[c]["grades"]) if c in base else 0
                per[c] = sum(grades[i:i + n]) / max(1, n)
                i += n
            n_seq = len(rows[name]["sequences"] or [])
        else:
            continue
        scores[name] = per
        macro, ci = mean_ci95([per[c] for c in order if c in per])
        results[name] = {"accuracy": macro, "ci95": ci, "accuracy_macro": macro,
                         "accuracy_micro": sum(grades) / max(1, len(grades)), "n_questions": len(grades),
                         "n_contexts": len(per), "sequences": n_seq,
                         "seconds": round(timings.get(f"cpt:{name}", 0.0), 1)}
    nq = {c: len(base[c]["grades"]) for c in order if c in base}
    return {"conditions": results, "comparisons": paired_comparisons(scores, order, nq)}

