"""The one evaluator of conditions: condition specs -> trials -> stored results, for any domain.

Conditions:
- the domain's no-update condition (`base`, or `in-context`): the model as it is, answers stored once per model;
- the domain's baselines (`passage`, `oracle`): a fixed update per context;
- `self-edit`: the model's own self-edits; `endpoint:MODEL`: written by an OpenAI-compatible endpoint;
  `file:PATH`: read from a file (the domain reads its own format); `generator:PATH`: written by another model
  folder (e.g. a trained checkpoint).
Every spec is checked before any model work.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..engine.protocol import Trial
from ..engine.seeds import seed_of
from .selfedits import sample_self_edits

SAMPLED = ("self-edit", "endpoint", "generator")


class ConditionError(ValueError):
    pass


@dataclass
class Condition:
    name: str                             # as stored and as results.json keys it
    kind: str                             # none, baseline, self-edit, endpoint, generator, file
    arg: str | None = None                # endpoint model, generator folder
    texts: dict[str, list[str]] | None = None   # file: self-edits per context id


def parse_conditions(domain, specs: Sequence[str], contexts: Sequence[Any], endpoint_url: str | None,
                     allow_generator: bool = False) -> list[Condition]:
    """Every condition checked now, before any model work: a file is read and matched to the contexts here."""
    out: list[Condition] = []
    for spec in specs:
        if spec == domain.no_update:
            out.append(Condition(spec, "none"))
        elif spec in domain.baselines:
            out.append(Condition(spec, "baseline"))
        elif spec == "self-edit":
            out.append(Condition(spec, "self-edit"))
        elif spec.startswith("file:"):
            out.append(Condition(condition_name(spec), "file",
                                 texts=domain.read_self_edits(spec[5:], contexts)))
        elif spec.startswith("endpoint:"):
            if not spec[9:]:
                raise ConditionError("endpoint: needs a model name, e.g. endpoint:gpt-4.1")
            if not endpoint_url:
                raise ConditionError(f"{spec} needs an endpoint URL (--gen-url or generation.endpoint_url)")
            out.append(Condition(spec, "endpoint", arg=spec[9:]))
        elif spec.startswith("generator:") and allow_generator:
            if not (Path(spec[10:]) / "config.json").exists():
                raise ConditionError(f"{spec}: {spec[10:]} is not a model folder (no config.json)")
            out.append(Condition(spec, "generator", arg=spec[10:]))
        else:
            known = [domain.no_update, *domain.baselines, "self-edit", "file:PATH", "endpoint:MODEL"]
            raise ConditionError(f"unknown condition {spec!r} for the {domain.name} domain; use "
                                 f"{', '.join(known + (['generator:PATH'] if allow_generator else []))}")
    if not out:
        raise ConditionError("no conditions given")
    names = [c.name for c in out]
    if len(set(names)) < len(names):
        raise ConditionError(f"a condition is given twice: {names}")
    return out


def condition_name(spec: str) -> str:
    """The name a condition is stored and reported under: a file condition by its file's name."""
    return "file:" + Path(spec[5:]).name if spec.startswith("file:") else spec


@dataclass
class Learner:
    """The model that is updated and answers: its domain, its inner loop and the executor running its trials."""
    domain: Any
    loop: Any
    executor: Any


def self_edits_of(run, cond: Condition, writer, round_: int, contexts, k: int, template,
                  load_model: Callable[[str], Any] | None = None, source: str | None = None) -> dict[str, list[str]]:
    """The k self-edits per context of a condition that has them (None texts for the baselines)."""
    lm, domain = writer
    gen = run.cfg.generation
    source = source or cond.name
    if cond.kind == "file":
        return {c.id: (cond.texts.get(c.id) or [""])[:k] for c in contexts}
    if cond.kind == "endpoint":
        return sample_self_edits(run, lm, domain, round_, source, contexts, k, gen, template, endpoint=cond.arg)
    if cond.kind == "generator":
        other = load_model(cond.arg)
        return sample_self_edits(run, other.lm, other.domain, round_, source, contexts, k, gen, template)
    return sample_self_edits(run, lm, domain, round_, source, contexts, k, gen, template)


def evaluate(run, conditions: Sequence[Condition], writer, learner: Learner, contexts: Sequence[Any], round_: int,
             k: int, repeats: int, model_key: str, load_model=None, rename: dict[str, str] | None = None,
             log=print) -> None:
    """Run every condition on `contexts` with the models as they are now; `round_` is how many ReST-EM rounds
    trained them. `rename` maps a condition to the name the store keeps it under (a train recipe's evaluations)."""
    seeds = run.cfg.seeds
    seed = run.cfg.run.seed
    rename = rename or {}
    run.describe(learner.domain, contexts)
    need_base = any(c.kind == "none" for c in conditions) or learner.domain.reward_uses_base
    bases = run.base_evals(learner.loop, model_key, contexts) if need_base else {}
    done = run.store.done_trials(round_)
    trials = []
    for cond in conditions:
        name = rename.get(cond.name, cond.name)
        if cond.kind == "none":
            continue
        if cond.kind == "baseline":
            for c in contexts:
                for rep in range(repeats):
                    key = (round_, name, c.id, 0, rep)
                    if key not in done:
                        update = learner.domain.baseline_update(cond.name, c)
                        trials.append(Trial(key, c, update, seed_of(seed, seeds.baseline, condition=name,
                                                                   round=round_, context=c.id, sample=0,
                                                                   repeat=rep), self_edit=update_text(update)))
            continue
        texts = self_edits_of(run, cond, writer, round_, contexts, k, seeds.sample, load_model, source=name)
        for c in contexts:
            for s, text in enumerate(texts[c.id]):
                for rep in range(repeats):
                    key = (round_, name, c.id, s, rep)
                    if key not in done:
                        trials.append(Trial(key, c, learner.domain.parse_self_edit(c, text),
                                            seed_of(seed, seeds.trial, condition=name, round=round_, context=c.id,
                                                    sample=s, repeat=rep), self_edit=text))
    run.run_trials(learner.executor, trials, bases=bases, log=log)


def update_text(update) -> str | None:
    """The text a baseline update records as its self-edit (a fixed configuration's JSON), if any."""
    return update.text
