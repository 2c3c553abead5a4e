"""The single-passage experiment: base / passage / passage + self-edits (own, from a file, from an endpoint).

Every step stores its output before the next begins (base answers, self-edits, then one row per trial), so
rerunning the same command resumes where the last run stopped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...config import InnerConfig, inner_preset
from ...stats import mean_ci95
from ...runs import add_timing, ensure_base_evals, open_store, trial_recorder, trial_seed, write_json
from ...store import RunStore
from .data import DataError, Passage, load_passages, resolve_data, select
from .domain import KnowledgeDomain
from .graders import make_grader
from .sequences import SequenceOptions


@dataclass
class EvalOptions:
    data: str | None = None               # JSON path, builtin:eval (default), builtin:train, hf:NAME[:SPLIT]
    n: int | None = 30
    start: int = 0
    select_seed: int = 42
    conditions: list[str] = field(default_factory=lambda: ["base", "passage", "self-edit"])
    out: str = "runs/knowledge-eval"
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    preset: str = "small"
    inner: dict = field(default_factory=dict)   # overrides of the preset (InnerConfig fields)
    family: str = "implications"
    k: int = 1                            # self-edits per context (the paper evaluates the first sample)
    repeats: int = 1                      # inner-loop runs per self-edit, each with its own seed
    seed: int = 0
    grader: str = "contains"
    judge_url: str | None = None
    judge_model: str | None = None
    judge_key_env: str = "OPENAI_API_KEY"
    gen_url: str | None = None
    gen_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 0.95
    answer_tokens: int = 32
    split: str = "lines"
    title_prefix: bool = True
    reward: str = "accuracy"
    show_progress: bool = True


class ConditionError(ValueError):
    pass


def _condition_name(spec: str) -> str:
    if spec.startswith("file:"):
        return "file:" + Path(spec[5:]).name
    return spec


def parse_conditions(specs: list[str], passages: list[Passage]) -> dict[str, dict[str, list[str]] | None]:
    """Check every condition before any model work. File conditions are read and matched to the selected
    passages here; a missing passage or a malformed file fails now, naming the file."""
    out: dict[str, dict[str, list[str]] | None] = {}
    for spec in specs:
        if spec in ("base", "passage", "self-edit"):
            out[spec] = None
        elif spec.startswith("file:"):
            path = spec[5:]
            records = load_passages(path, require_completions=False)
            by_key = {(r.title, r.context): r for r in records}
            edits = {}
            for p in passages:
                rec = by_key.get((p.title, p.context))
                if rec is None:
                    raise ConditionError(f"{path}: no record for passage '{p.title}' ({p.context[:60]}...); "
                                         "the file must hold the selected passages")
                edits[p.id] = [c for c in rec.completions if c.strip()]
            out[_condition_name(spec)] = edits
        elif spec.startswith("endpoint:"):
            if not spec[9:]:
                raise ConditionError("endpoint: needs a model name, e.g. endpoint:gpt-4.1")
            out[spec] = None
        else:
            raise ConditionError(f"unknown condition {spec!r}; use base, passage, self-edit, file:PATH, endpoint:MODEL")
    if not out:
        raise ConditionError("no conditions given")
    return out


def settings_record(opts: EvalOptions, cfg: InnerConfig, data_label: str) -> dict:
    """What determines the results; a rerun in the same folder must match it to resume."""
    d = dataclasses.asdict(opts)
    for k in ("out", "show_progress", "device", "judge_key_env", "gen_key_env", "inner", "preset"):
        d.pop(k)
    d["data"] = data_label
    d["inner"] = dataclasses.asdict(cfg)
    for perf_only in ("adapters_per_pack", "micro_batch_tokens"):  # speed knobs: same results either way
        d["inner"].pop(perf_only)
    return json.loads(json.dumps(d))  # as stored: tuples become lists


def make_grader_checked(opts):
    """The grader, checked before any model work (an unreachable judge fails now); None means the local judge,
    which needs the model."""
    if opts.grader == "local-judge":
        return None
    grader = make_grader(opts.grader, None, opts.judge_url, opts.judge_model, opts.judge_key_env)
    grader.check()
    return grader


def build_domain(opts, lm, grader) -> KnowledgeDomain:
    from ...generation import render_prompt
    render = lambda text, prefix="": render_prompt(lm, text, prefix)
    return KnowledgeDomain(opts.family, SequenceOptions(split=opts.split, title_prefix=opts.title_prefix),
                           grader or make_grader("local-judge", lm), render, opts.reward)


def ensure_self_edits(store: RunStore, lm, domain: KnowledgeDomain, round_: int, source: str,
                      contexts: list[Passage], k: int, opts, endpoint: str | None = None,
                      seed_tag: tuple = ("gen",), chunk: int = 16) -> dict[str, list[str]]:
    """k self-edits per context, sampled in chunks that are stored as they finish (a rerun samples only the
    missing chunks, with the same seeds). From `lm`, or from an OpenAI-compatible `endpoint` model.
    A chunk's sampling seed is derived from the run seed, `seed_tag` and the chunk's first item."""
    from tqdm.auto import tqdm

    from ...generation import generate, generate_openai

    stored = store.self_edits(round_, source)
    todo = [(p, s) for p in contexts for s in range(k) if (p.id, s) not in stored]
    t0 = time.perf_counter()
    with tqdm(total=len(todo), desc=f"self-edits [{source} r{round_}]", unit="edit",
              disable=not opts.show_progress) as bar:
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            if endpoint is None:
                prompts = [domain.self_edit_prompt(p) for p, _ in part]
                seed = trial_seed(opts.seed, *seed_tag, part[0][0].id, part[0][1])
                texts = generate(lm, prompts, max_new_tokens=opts.max_new_tokens, temperature=opts.temperature,
                                 top_p=opts.top_p, batch_size=chunk, seed=seed)
            else:
                prompts = [domain.family.user_text(p.title, p.context) for p, _ in part]
                texts = generate_openai(opts.gen_url, endpoint, prompts, key_env=opts.gen_key_env,
                                        temperature=opts.temperature, top_p=opts.top_p)
            store.add_self_edits(round_, source, [(p.id, s, pr, t) for (p, s), pr, t in zip(part, prompts, texts)])
            bar.update(len(part))
    if todo:
        add_timing(store, f"generate:{source}:{round_}", time.perf_counter() - t0)
    stored = store.self_edits(round_, source)
    return {p.id: [stored[(p.id, s)] for s in range(k)] for p in contexts}


def run_eval(opts: EvalOptions, log=print) -> dict:
    from ...inner import InnerLoop, Trial
    from ...models import load_model

    # 1. Everything that can be wrong with the input fails here, before any model work.
    passages, data_label = resolve_data(opts.data)
    chosen = select(passages, opts.n, opts.select_seed, opts.start)
    if not chosen:
        raise DataError(f"{data_label}: no passages selected (n={opts.n}, start={opts.start})")
    conditions = parse_conditions(opts.conditions, chosen)
    cfg = inner_preset(opts.preset, **opts.inner)
    if any(c.startswith("endpoint:") for c in conditions) and not opts.gen_url:
        raise ConditionError("an endpoint: condition needs --gen-url (an OpenAI-compatible base URL)")
    grader = make_grader_checked(opts)
    out = Path(opts.out)
    store = open_store(out, settings_record(opts, cfg, data_label), "knowledge-eval")

    lm = load_model(opts.model, opts.device, opts.dtype)
    domain = build_domain(opts, lm, grader)
    loop = InnerLoop(lm, domain, cfg, answer_tokens=opts.answer_tokens, show_progress=opts.show_progress)

    # 2. Base answers, once per context.
    base_ev = ensure_base_evals(store, loop, lm.name, chosen)

    # 3. Self-edits: the model's own (sampled and stored in chunks), from a file, or from an endpoint.
    edits: dict[str, dict[str, list[str]]] = {}
    for name, fixed in conditions.items():
        if name in ("base", "passage"):
            continue
        if fixed is not None:
            edits[name] = {cid: texts[:opts.k] for cid, texts in fixed.items()}
        else:
            edits[name] = ensure_self_edits(store, lm, domain, 0, name, chosen, opts.k, opts,
                                            endpoint=name[9:] if name.startswith("endpoint:") else None)

    # 4. Trials not yet in the store.
    done = store.done_trials(0)
    trials = []
    for name in conditions:
        if name == "base":
            continue
        for p in chosen:
            texts = [None] if name == "passage" else (edits[name].get(p.id) or [""])
            for s, text in enumerate(texts):
                for r in range(opts.repeats):
                    key = (0, name, p.id, s, r)
                    if key in done:
                        continue
                    upd = domain.passage_update(p) if name == "passage" else domain.parse_self_edit(p, text)
                    trials.append(Trial(key, p, upd, trial_seed(opts.seed, name, p.id, s, r), self_edit=text))
    if trials:
        log(f"running {len(trials)} trial(s) ({len(done)} already in the store)")
    loop.run(trials, bases={id(p): base_ev[p.id] for p in chosen}, on_result=trial_recorder(store, trials))

    # 5. Results.
    timings = store.get_meta("timings") or {}
    results = summarize(store, chosen, list(conditions), base_ev, timings, lm.name)
    store.close()
    payload = {"settings": settings_record(opts, cfg, data_label), "conditions": results,
               "command": os.environ.get("SEAL_COMMAND", "")}
    write_json(out / "results.json", payload)
    return payload


def summarize(store: RunStore, chosen: list[Passage], conditions: list[str], base_ev: dict, timings: dict,
              model_key: str) -> dict:
    results = {}
    ids = {p.id for p in chosen}
    n_questions = sum(len(p.questions) for p in chosen)
    for name in conditions:
        if name == "base":
            per_ctx = [base_ev[p.id].accuracy for p in chosen]
            answers = [a for p in chosen for a in base_ev[p.id].answers]
            seconds = timings.get(f"base:{model_key}", 0.0)
            extra = {}
        else:
            rows = [r for r in store.trials(0, name) if r["context_id"] in ids]
            by_ctx: dict[str, list[float]] = {}
            for r in rows:
                by_ctx.setdefault(r["context_id"], []).append(r["accuracy"] or 0.0)
            per_ctx = [sum(by_ctx[p.id]) / len(by_ctx[p.id]) for p in chosen if p.id in by_ctx]
            answers = [a for r in rows for a in (r["answers"] or [])]
            seconds = sum(r["seconds"] or 0.0 for r in rows) + timings.get(f"generate:{name}:0", 0.0)
            extra = {"n_trials": len(rows), "n_failed": sum(r["status"] != "ok" for r in rows),
                     "mean_sequences": (sum(len(r["sequences"] or []) for r in rows) / len(rows)) if rows else 0}
        acc, ci = mean_ci95(per_ctx)
        results[name] = {"accuracy": acc, "ci95": ci, "n_questions": n_questions, "n_contexts": len(per_ctx),
                         "seconds": round(seconds, 1),
                         "empty_answers": (sum(not a.strip() for a in answers) / len(answers)) if answers else 0.0,
                         **extra}
    return results


def format_table(results: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="knowledge incorporation (questions answered without the passage)")
    for col in ("condition", "accuracy", "95% CI", "questions", "contexts", "time (s)"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for name, r in results.items():
        table.add_row(name, f"{100 * r['accuracy']:.1f}%", f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]",
                      str(r["n_questions"]), str(r["n_contexts"]),
                      f"{r['seconds']:.0f}" if "seconds" in r else "-")
    console = Console(record=True, width=100)
    with console.capture() as cap:
        console.print(table)
    return cap.get()
