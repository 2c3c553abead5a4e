"""Recipes: short scripts over the shared parts, and what a domain registers to get them.

A domain registers a `DomainSpec`: its config section, how to check its inputs before any model work, how to
build its Domain for a loaded model, and its recipes. `eval_recipe` and `train_recipe` are the two every domain
gets: evaluate conditions, and ReST-EM rounds followed by evaluations. A domain may add recipes of its own
(knowledge: continued pretraining, sequential edits) built from the same parts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import FINETUNE_FLAGS, SECTION_TYPES, Config, Flag, Recipe, comma_list
from .evaluate import Learner, parse_conditions
from .run import Run


@dataclass
class RecipeSpec:
    name: str                                  # the subcommand: seal DOMAIN NAME
    help: str
    sections: tuple[str, ...]                  # the shared config sections it reads, besides "domain"
    run: Callable[["DomainSpec", Config, str, Callable], dict]
    defaults: dict = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    show: Callable[["DomainSpec", dict], str] | None = None   # the text printed at the end
    own_sections: dict[str, type] = field(default_factory=dict)   # sections of this recipe alone (cpt, sequential)


@dataclass
class DomainSpec:
    """A domain as the command line, the recipes and the report see it."""
    name: str
    help: str
    section: type                              # its config section (the `domain:` key)
    build: Callable[[Config, Any, dict], Any]  # (config, loaded model or None, checked inputs) -> Domain
    check: Callable[[Config], dict] = lambda cfg: {}   # inputs checked before any model work
    recipes: dict[str, RecipeSpec] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)    # shorthand flags of the domain section
    labels: dict[str, str] = field(default_factory=dict)   # display names of conditions
    # run kind -> report section; or a function returning that table, so the plotting code loads only for reports
    report: dict[str, Callable] | Callable[[], dict[str, Callable]] = field(default_factory=dict)
    shortcuts: dict[str, tuple[str, dict, str]] = field(default_factory=dict)  # seal NAME -> (recipe, defaults, help)

    def recipe_config(self, recipe: str, extra_defaults: dict | None = None) -> Recipe:
        rs = self.recipes[recipe]
        sections = {"domain": self.section, **{s: SECTION_TYPES[s] for s in rs.sections}, **rs.own_sections}
        return Recipe(f"{self.name} {recipe}", sections, _deep(rs.defaults, extra_defaults or {}))


def _deep(a: dict, b: dict) -> dict:
    out = json.loads(json.dumps(a))
    for k, v in b.items():
        out[k] = _deep(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


EVAL_FLAGS = [
    Flag("conditions", "eval.conditions", "comma-separated conditions (the domain's no-update condition and "
         "baselines, self-edit, file:PATH, endpoint:MODEL; eval and cpt also take generator:PATH)", comma_list),
    Flag("k", "eval.k", "self-edits per context and condition", int),
    Flag("repeats", "eval.repeats", "inner-loop runs per self-edit (different seeds)", int),
    Flag("max-new-tokens", "generation.max_new_tokens", "self-edit length cap", int),
    Flag("temperature", "generation.temperature", "self-edit sampling temperature", float),
    Flag("self-edit-decoding", "generation.decoding", "free: any text; constrained: only the domain's valid "
         "self-edits", choices=("free", "constrained")),
    Flag("gen-url", "generation.endpoint_url", "OpenAI-compatible base URL for endpoint:MODEL conditions"),
    Flag("gen-key-env", "generation.endpoint_key_env", "environment variable holding the endpoint's key"),
]

TRAIN_FLAGS = [
    Flag("rounds", "outer.rounds", "ReST-EM rounds", int),
    Flag("contexts", "outer.contexts_per_round", "training contexts per round", int),
    Flag("train-k", "outer.k", "self-edits sampled per training context", int),
    Flag("train-repeats", "outer.repeats", "inner-loop seeds per training self-edit (reward = mean)", int),
    Flag("selection", "outer.selection", "which self-edits the generator is finetuned on",
         choices=("best", "best-beats-base", "all-beat-base", "solved", "best-graded")),
    Flag("student", "outer.student", "a separate model that the inner loop updates and evaluates (teacher/student)"),
    Flag("eval-rounds", "outer.eval_rounds", "evaluate after every round, only before and after, or not",
         choices=("all", "last", "none")),
    *FINETUNE_FLAGS,
]


@dataclass
class Loaded:
    """A model and its domain."""
    lm: Any
    domain: Any


def load(spec: DomainSpec, cfg: Config, name: str | None, checked: dict) -> Loaded:
    return Loaded(*WorkerBuild(spec.build, cfg, checked)(name))


@dataclass
class WorkerBuild:
    """How a model and its domain are built for a model name, in the driver (`load`) and in every Ray worker:
    picklable, so that an actor on another machine makes the same domain the driver has (`wrap` turns it into a
    derived domain, e.g. pooled)."""
    build: Callable
    cfg: Config
    checked: dict
    wrap: Callable | None = None

    def __call__(self, name: str | None):
        from ..engine.models import load_model
        lm = load_model(name, self.cfg.model.device, self.cfg.model.dtype)
        domain = self.build(self.cfg, lm, self.checked)
        return lm, (self.wrap(domain) if self.wrap else domain)


def learner_of(cfg: Config, loaded: Loaded, spec: DomainSpec, checked: dict, wrap: Callable | None = None,
               log=None) -> Learner:
    """The learner of `loaded` (its domain wrapped by `wrap` if given), its trials run where the executor section
    says: this process, or Ray actors building the same model and domain from `spec` and the checked inputs."""
    from ..engine.executor import LocalExecutor, RayExecutor
    from ..engine.inner import InnerLoop
    domain = wrap(loaded.domain) if wrap else loaded.domain
    loop = InnerLoop(loaded.lm, domain, cfg.inner.engine(), show_progress=cfg.run.show_progress)
    ex = _ray_section(cfg)
    if ex is None:
        return Learner(domain, loop, LocalExecutor(loop))
    build = WorkerBuild(spec.build, dataclasses.replace(cfg, legacy=None), checked, wrap)
    return Learner(domain, loop, RayExecutor(loop, build, ex.ray_address, ex.workers, ex.cpus_per_worker,
                                             ex.gpus_per_worker, ex.threads, ex.retries, log=log))


def _ray_section(cfg: Config):
    """The executor section when it asks for Ray, else None (local, or a recipe without the section)."""
    ex = cfg.sections.get("executor")
    return ex if ex is not None and ex.kind == "ray" else None


def check_executor(cfg: Config) -> None:
    """A Ray cluster that cannot be reached, or cannot hold the workers, is refused before any model work."""
    ex = _ray_section(cfg)
    if ex is not None:
        from ..engine.executor import connect
        connect(ex.ray_address, ex.workers, ex.cpus_per_worker, ex.gpus_per_worker)


def run_eval(spec: DomainSpec, cfg: Config, command: str = "", log=print) -> dict:
    """Evaluate the conditions on the domain's eval contexts, each with the model as it is."""
    from .evaluate import evaluate
    from .results import eval_results

    checked = spec.check(cfg)
    probe = spec.build(cfg, None, checked)          # a domain without a model: enough to check the conditions
    contexts = list(probe.contexts("eval"))
    if not contexts:
        raise ValueError(f"{spec.name}: no eval contexts selected")
    # generator:PATH: the self-edits of another model folder (a trained checkpoint), trained into --model, so
    # untrained and trained generators are compared on the same contexts with the same learner.
    conditions = parse_conditions(probe, cfg.eval.conditions, contexts, cfg.generation.endpoint_url,
                                  allow_generator=True)
    log(f"{len(contexts)} eval context(s){_all_note(cfg)}, conditions {', '.join(c.name for c in conditions)}, "
        f"{cfg.eval.k} self-edit(s) each x {cfg.eval.repeats} seed(s)")
    check_executor(cfg)
    with Run(cfg, f"{spec.name}-eval", command) as run:
        run.store.set_meta("contexts:eval", [c.id for c in contexts])
        loaded = load(spec, cfg, cfg.model.name, checked)
        learner = learner_of(cfg, loaded, spec, checked, log=log)
        evaluate(run, conditions, (loaded.lm, loaded.domain), learner, contexts, 0, cfg.eval.k, cfg.eval.repeats,
                 "round-0", load_model=lambda path: load(spec, cfg, path, checked), log=log)
        results = eval_results(run.store, [c.name for c in conditions], probe.no_update, "round-0")
        return run.write_results(**results, labels=spec.labels)


def _all_note(cfg: Config) -> str:
    """What a count of 0 means, said once at the start (domain.n = 0 selects every context)."""
    return " (domain.n = 0: all of them)" if getattr(cfg.domain, "n", None) == 0 else ""


def run_train(spec: DomainSpec, cfg: Config, command: str = "", log=print) -> dict:
    """ReST-EM rounds on the domain's training contexts, with evaluations on its eval contexts."""
    from .restem import Models, latest_checkpoint, rest_em
    from .results import train_results

    outer = cfg.outer
    checked = spec.check(cfg)
    probe = spec.build(cfg, None, checked)
    train = list(probe.contexts("train"))
    evals = list(probe.contexts("eval"))
    per = outer.contexts_per_round or len(train)
    need = per if outer.reuse_contexts else outer.rounds * per
    if len(train) < need:
        raise ValueError(f"{spec.name}: {outer.rounds} round(s) x {per} training contexts need {need}, but there are "
                         f"{len(train)}")
    overlap = {c.id for c in train[:need]} & {c.id for c in evals}
    if overlap:
        raise ValueError(f"{spec.name}: {len(overlap)} context(s) are in both the training and the eval set")
    conditions = parse_conditions(probe, cfg.eval.conditions, evals, cfg.generation.endpoint_url)
    check_executor(cfg)
    with Run(cfg, f"{spec.name}-train", command) as run:
        run.store.set_meta("contexts:eval", [c.id for c in evals])
        run.store.set_meta("contexts:train", [c.id for c in train[:need]])
        start, ckpt = latest_checkpoint(run.store, run.out, outer.rounds)
        if ckpt:
            log(f"resuming from the round-{start} checkpoint {ckpt}")
        teacher = load(spec, cfg, ckpt or cfg.model.name, checked)
        student = load(spec, cfg, outer.student, checked) if outer.student else teacher
        models = Models(teacher.lm, teacher.domain, learner_of(cfg, student, spec, checked, log=log),
                        outer.student is not None)
        rest_em(run, models, train, evals, conditions, start, log=log,
                load_model=lambda path: load(spec, cfg, path, checked))
        summary = train_results(run.store, [c.name for c in conditions], probe.no_update, outer.rounds,
                                outer.first_eval_condition, outer.eval_condition,
                                run.store.get_meta("round_models") or {})
        return run.write_results(**summary, labels=spec.labels)


def show_eval(spec: DomainSpec, payload: dict, keep=lambda name: True) -> str:
    from .results import format_comparisons, format_table
    return (format_table(payload["conditions"], spec.labels, f"{spec.name}: conditions")
            + format_comparisons(payload.get("comparisons") or [], spec.labels, keep))


def show_train(spec: DomainSpec, payload: dict) -> str:
    # On the terminal, the rounds' self-edits against each other and the baselines; the drift of each round's
    # model without an update (the base-round-N rows) is in the report.
    # A run with --eval-rounds none scored no condition: print the round lines only, not a table of dashes.
    scored = {name: row for name, row in payload["conditions"].items()
              if row.get("n_trials") or row.get("accuracy") is not None}
    lines = [show_eval(spec, {**payload, "conditions": scored},
                       keep=lambda name: "-round-" not in name or name.startswith("seal-round-"))] if scored else []
    for r in payload["rounds"]:
        change = r.get("reward_vs_previous_round")
        moved = (f", {100 * change['difference']:+.1f} points on the {change['n_contexts']} context(s) of the "
                 f"previous round [{100 * change['ci95'][0]:+.1f}, {100 * change['ci95'][1]:+.1f}]") if change else ""
        lines.append(f"round {r['round']}: mean reward {r['mean_reward']:.3f}, best-of-k {r['mean_best_of_k']:.3f}, "
                     f"{r['selected']} selected{moved}")
    return "\n".join(lines)


def standard_recipes(eval_defaults: dict | None = None, train_defaults: dict | None = None,
                     eval_help: str = "evaluate conditions: no update, baselines, self-edits",
                     train_help: str = "SEAL's outer loop (ReST-EM): rounds of sample -> score -> select -> finetune"
                     ) -> dict[str, RecipeSpec]:
    ev = ("run", "model", "inner", "generation", "eval", "seeds", "executor")
    return {"eval": RecipeSpec("eval", eval_help, ev, run_eval, eval_defaults or {}, EVAL_FLAGS, show_eval),
            "train": RecipeSpec("train", train_help, ev + ("outer", "finetune"), run_train, train_defaults or {},
                                EVAL_FLAGS + TRAIN_FLAGS, show_train)}

