"""The knowledge domain as registered: its config section, input checks, the Domain for a model, its recipes
(eval, train, cpt, sequential), shorthand flags and report sections."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...engine.config import speed_only
from ...experiment.config import Flag
from ...experiment.recipes import (EVAL_FLAGS, TRAIN_FLAGS, DomainSpec, RecipeSpec, run_train, show_eval,
                                   show_train, standard_recipes)
from .cpt import CPTSection, run_cpt
from .domain import REWARDS, KnowledgeDomain
from .sequential import SequentialSection, format_matrix, run_sequential


@dataclass
class KnowledgeSection:
    data: Optional[str] = None            # eval passages: a SQuAD-by-passage JSON file, builtin:eval, hf:NAME[:SPLIT]
    train_data: str = "builtin:train"     # training passages (train recipe)
    n: Optional[int] = 30                 # eval passages after the seed-42 shuffle (0 or null: all)
    start: int = 0                        # offset into the shuffled eval passages
    select_seed: int = 42                 # the paper's passage shuffle
    prompt: str = "implications"          # implications, implications-long, rewrite, self-qa, no-prompt, file:PATH
    split: str = "lines"                  # how a self-edit becomes sequences: lines (paper), segments, none
    title_prefix: bool = True
    grader: str = "contains"              # contains, em, f1, judge, local-judge
    judge_url: Optional[str] = None
    judge_model: Optional[str] = None
    judge_key_env: str = speed_only("OPENAI_API_KEY")
    reward: str = "accuracy"              # accuracy, or gain (accuracy minus the base model's)
    answer_tokens: int = 32

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be accuracy or gain, got {self.reward!r}")
        if self.split not in ("lines", "segments", "none"):
            raise ValueError(f"split must be lines, segments or none, got {self.split!r}")
        if self.n is not None and self.n < 0 or self.start < 0:
            raise ValueError("n and start must be >= 0")
        if self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1 (the answer length cap), got {self.answer_tokens}")


def check(cfg) -> dict:
    """The grader is checked now (an unreachable judge fails before any model work); None: the local judge."""
    from .graders import make_grader
    from .prompts import get_family
    d = cfg.domain
    get_family(d.prompt)
    if d.grader == "local-judge":
        return {"grader": None}
    grader = make_grader(d.grader, None, d.judge_url, d.judge_model, d.judge_key_env)
    grader.check()
    return {"grader": grader}


def build(cfg, lm, checked: dict) -> KnowledgeDomain:
    from .data import resolve_data, select
    from .graders import make_grader
    from .sequences import SequenceOptions
    d = cfg.domain

    loaded = checked.setdefault("passages", {})   # shared by every domain built for this run: read once

    def split(name, spec, default, n, start):
        def read():
            if name not in loaded:
                loaded[name] = select(resolve_data(spec, default_split=default)[0], n, d.select_seed, start)
            return loaded[name]
        return read

    render = None
    if lm is not None:
        from ...engine.generation import render_prompt
        render = lambda text, prefix="": render_prompt(lm, text, prefix)
    grader = checked.get("grader") or (make_grader("local-judge", lm) if lm is not None else None)
    return KnowledgeDomain(d.prompt, SequenceOptions(split=d.split, title_prefix=d.title_prefix), grader,
                           render or (lambda text, prefix="": text + prefix), d.reward,
                           passages={"eval": split("eval", d.data, "eval", d.n or None, d.start),
                                     "train": split("train", d.train_data, "train", None, 0)},
                           answer_tokens=d.answer_tokens)


DOMAIN_FLAGS = [
    Flag("data", "domain.data", "eval passages: a SQuAD-by-passage JSON file, builtin:eval (default), builtin:train, "
         "or hf:DATASET[:SPLIT]"),
    Flag("n", "domain.n", "passages to evaluate (after a seed-42 shuffle; 0 = all)", int),
    Flag("start", "domain.start", "offset into the shuffled passages", int),
    Flag("train-data", "domain.train_data", "training passages (same forms as --data)"),
    Flag("prompt", "domain.prompt", "self-edit prompt: implications, implications-long, rewrite, self-qa, no-prompt, "
         "or file:PATH (a template with {title} and {context})"),
    Flag("grader", "domain.grader", "contains (normalised gold answer inside the answer), em, f1, judge "
         "(OpenAI-compatible endpoint), local-judge (the loaded model)"),
    Flag("judge-url", "domain.judge_url", "judge base URL (default: $SEAL_JUDGE_BASE_URL, $OPENAI_BASE_URL or OpenAI)"),
    Flag("judge-model", "domain.judge_model", "judge model (default: $SEAL_JUDGE_MODEL or gpt-4.1)"),
    Flag("judge-key-env", "domain.judge_key_env", "environment variable holding the judge's key"),
    Flag("split", "domain.split", "how a self-edit becomes sequences (paper: lines)",
         choices=("lines", "segments", "none")),
    Flag("reward", "domain.reward", "accuracy, or gain over the base model", choices=REWARDS),
]

_TRAIN_SEEDS = {"sample": ["gen", "{condition}", "{round}", "{context}", "{sample}"],
                "trial": ["{condition}", "{round}", "{context}"], "baseline": ["{condition}", "{context}"]}
# In `knowledge train`, --k and --repeats are the training self-edits and seeds (the paper's outer-loop numbers).
_TRAIN_FLAGS = ([f for f in EVAL_FLAGS if f.name not in ("k", "repeats")]
                + [Flag("k", "outer.k", "self-edits sampled per training passage", int),
                   Flag("repeats", "outer.repeats", "inner-loop seeds per self-edit (reward = mean)", int),
                   # ... so the evaluation's own take a prefix.
                   Flag("eval-k", "eval.k", "self-edits per eval passage and condition", int),
                   Flag("eval-repeats", "eval.repeats", "inner-loop seeds per eval self-edit", int)]
                + [f for f in TRAIN_FLAGS if f.name not in ("train-k", "train-repeats")])

RECIPES = standard_recipes(eval_help="single-passage experiment: train on each passage's update, answer without it")
RECIPES["eval"].defaults = {"run": {"out": "runs/knowledge-eval"}}
RECIPES["train"] = RecipeSpec("train", RECIPES["train"].help, RECIPES["train"].sections, run_train,
                              {"run": {"out": "runs/knowledge-train"}, "seeds": _TRAIN_SEEDS}, _TRAIN_FLAGS,
                              show_train)
_EV = ("run", "model", "inner", "generation", "eval", "seeds", "executor")
RECIPES["cpt"] = RecipeSpec(
    "cpt", "continued pretraining: n passages' self-edits pooled into one update", _EV, run_cpt,
    # The original's CPT grid trains 3 epochs at an effective batch of 8; one pass per sequence at batch 1 (the
    # single-passage setting) would cost n times the steps for the same data.
    {"run": {"out": "runs/knowledge-cpt"}, "inner": {"epochs": 3, "batch_size": 8},
     "seeds": {"trial": ["cpt", "{condition}"]}},
    [f for f in EVAL_FLAGS] + [Flag("update", "cpt.update", "one LoRA adapter (paper v1) or full finetuning of every "
                                    "weight (paper v2)", choices=("lora", "full"))],
    lambda spec, p: show_eval(spec, p) + "\n" + "\n".join(
        f"{n}: micro accuracy {100 * r['accuracy_micro']:.1f}% over {r['n_questions']} questions"
        for n, r in p["conditions"].items()),
    own_sections={"cpt": CPTSection})
RECIPES["sequential"] = RecipeSpec(
    "sequential", "sequential self-edits merged one after another (forgetting)", _EV,
    run_sequential,
    {"run": {"out": "runs/knowledge-sequential"}, "eval": {"conditions": ["self-edit"]},
     "seeds": {"sample": ["seq", "{stream}", "{step}", "{context}", "{sample}"],
               "trial": ["seq", "{stream}", "{step}", "{sample}"]}},
    [f for f in EVAL_FLAGS if f.name != "conditions"] + [
        Flag("streams", "sequential.streams", "independent streams", int),
        Flag("length", "sequential.length", "passages per stream", int),
        Flag("pick", "sequential.pick", "with --k > 1: merge the candidate with the best accuracy on the new passage, "
             "or the best forgetting-aware reward", choices=("accuracy", "forgetting")),
        Flag("forget-weight", "sequential.forget_weight", "weight of the accuracy lost on earlier passages", float),
        Flag("edit", "sequential.edit", "self-edit (passage + self-edit) or passage only",
             choices=("self-edit", "passage"))],
    lambda spec, p: format_matrix(p["forgetting"]), own_sections={"sequential": SequentialSection})


def _report():
    from . import report
    return report.SECTIONS


SPEC = DomainSpec(
    name="knowledge", help="knowledge incorporation experiments", section=KnowledgeSection, build=build, check=check,
    recipes=RECIPES, flags=DOMAIN_FLAGS,
    report=_report,
    shortcuts={"demo": ("eval", {"domain": {"n": 6}, "run": {"out": "runs/demo-seed{seed}"}},
                        "base / passage / self-edit on built-in fictional passages (CPU, minutes)")})
