"""Continued pretraining (the paper's multi-passage experiment): the self-edits of n passages pooled into ONE
update, then every passage's questions answered without the passages.

Conditions: base; passage (the n passages only); self-edit (passages + the model's own self-edits);
file:PATH and endpoint:MODEL (passages + someone else's self-edits); generator:PATH (passages + self-edits
written by another model folder, e.g. a `seal knowledge train` checkpoint). The update is a LoRA adapter
(default; the paper's v1) or full finetuning of every weight (`--update full`; the paper's final version).
Accuracy is reported micro (pooled questions, as the original's CPT driver) and macro (mean over passages, with
a bootstrap 95% interval).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ...config import inner_preset
from ...stats import mean_ci95
from .data import DataError, resolve_data, select
from ...runs import add_timing, ensure_base_evals, open_store, trial_recorder, trial_seed, write_results
from .experiment import (ConditionError, EvalOptions, build_domain, ensure_self_edits, make_grader_checked,
                         parse_conditions, settings_record)
from .pooled import Pool, load_pooled_loops, pooled_update, split_grades

# The original's CPT grid trains 3 epochs at an effective batch of 8; one pass per sequence at batch 1
# (the single-passage setting) would cost n times the steps for the same data.
CPT_DEFAULTS = {"epochs": 3, "batch_size": 8}


@dataclass
class CPTOptions(EvalOptions):
    update: str = "lora"                  # lora or full
    out: str = "runs/knowledge-cpt"
    conditions: list[str] = field(default_factory=lambda: ["base", "passage", "self-edit"])


def run_cpt(opts: CPTOptions, log=print) -> dict:
    from ...adapters import TrainJob
    from ...fullft import full_finetune
    from ...inner import Trial, tokenize_update
    from ...models import load_model

    if opts.update not in ("lora", "full"):
        raise ValueError(f"update must be lora or full, got {opts.update!r}")
    passages, data_label = resolve_data(opts.data)
    chosen = select(passages, opts.n, opts.select_seed, opts.start)
    if not chosen:
        raise DataError(f"{data_label}: no passages selected")
    generators = {c: c[10:] for c in opts.conditions if c.startswith("generator:")}
    for name, path in generators.items():
        if not (Path(path) / "config.json").exists():
            raise ConditionError(f"{name}: {path} is not a model folder (no config.json)")
    conditions = parse_conditions([c for c in opts.conditions if c not in generators], chosen)
    conditions.update({name: None for name in generators})
    if any(c.startswith("endpoint:") for c in conditions) and not opts.gen_url:
        raise ConditionError("an endpoint: condition needs --gen-url (an OpenAI-compatible base URL)")
    cfg = inner_preset(opts.preset, **{**CPT_DEFAULTS, **opts.inner})
    grader = make_grader_checked(opts)
    out = Path(opts.out)
    settings = {**settings_record(opts, cfg, data_label), "update": opts.update}
    store = open_store(out, settings, "knowledge-cpt")

    lm, domain, loop, pooled = load_pooled_loops(opts, cfg, grader)
    base_ev = ensure_base_evals(store, loop, lm.name, chosen)
    pool = Pool(tuple(chosen))

    done = store.done_trials(0)
    for name, fixed in conditions.items():
        if name == "base" or (0, name, "pool", 0, 0) in done:
            continue
        if name == "passage":
            updates = [domain.passage_update(p) for p in chosen]
            edits = {}
        else:
            if fixed is not None:
                edits = {cid: texts[:opts.k] for cid, texts in fixed.items()}
            elif name in generators:
                gen = load_model(generators[name], opts.device, opts.dtype)
                edits = ensure_self_edits(store, gen, build_domain(opts, gen, grader), 0, name, chosen, opts.k, opts)
                del gen
            else:
                edits = ensure_self_edits(store, lm, domain, 0, name, chosen, opts.k, opts,
                                          endpoint=name[9:] if name.startswith("endpoint:") else None)
            # As the original: every self-edit brings its passage along (k self-edits -> k copies of it).
            updates = [domain.parse_self_edit(p, t) for p in chosen for t in (edits.get(p.id) or [""])]
        update = pooled_update(updates)
        seed = trial_seed(opts.seed, "cpt", name)
        trial = Trial((0, name, "pool", 0, 0), pool, update, seed)
        log(f"{name}: one {opts.update} update on {len(update.texts)} sequences from {len(chosen)} passages")
        t0 = time.perf_counter()
        if opts.update == "lora" or update.error:
            pooled.run([trial], on_result=trial_recorder(store, [trial]))
        else:
            tok = lm.tokenizer
            ids, masks = tokenize_update(tok, update, cfg.max_seq_len)
            job = TrainJob(ids, masks, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed)
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            with full_finetune(lm.model, job, cfg.schedule, cfg.weight_decay, cfg.max_grad_norm,
                               cfg.micro_batch_tokens, pad) as outcome:
                answers = [a for ans in pooled.answer([pool], desc="answers") for a in ans]
            ev = pooled.domain.grade(pool, answers)
            from ...inner import TrialResult
            trial_recorder(store, [trial])(TrialResult(
                trial.key, ev, ev.accuracy, steps=outcome.steps, final_loss=outcome.final_loss,
                seconds=time.perf_counter() - t0, error=outcome.failed))
        add_timing(store, f"cpt:{name}", time.perf_counter() - t0)

    results = summarize_cpt(store, chosen, list(conditions), base_ev)
    store.set_meta("cpt", results)
    store.close()
    return write_results(out, "knowledge-cpt", settings, conditions=results)


def summarize_cpt(store, chosen, conditions, base_ev) -> dict:
    pool = Pool(tuple(chosen))
    rows = {r["condition"]: r for r in store.trials(0)}
    timings = store.get_meta("timings") or {}
    results = {}
    for name in conditions:
        if name == "base":
            per = {p.id: base_ev[p.id].accuracy for p in chosen}
            grades = [g for p in chosen for g in base_ev[p.id].grades]
            n_seq = 0
        elif name in rows and rows[name]["grades"] is not None:
            per = split_grades(pool, rows[name]["grades"])
            grades = rows[name]["grades"]
            n_seq = len(rows[name]["sequences"] or [])
        else:
            continue
        macro, ci = mean_ci95(list(per.values()))
        results[name] = {"accuracy": macro, "ci95": ci, "accuracy_macro": macro,
                         "accuracy_micro": sum(grades) / max(1, len(grades)), "n_questions": len(grades),
                         "n_contexts": len(per), "sequences": n_seq,
                         "seconds": round(timings.get(f"cpt:{name}", 0.0), 1)}
    return results
