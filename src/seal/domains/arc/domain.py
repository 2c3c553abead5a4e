"""The ARC domain for the engine: a task in, a JSON self-edit out, test-time training on the demonstrations,
augmented greedy inference with a vote, reward 1 when every test output is among the two attempts (or, with
reward="cells", the share of correct cells: see `cell_share`).

It answers the Domain protocol's questions, so the batched inner loop trains k self-edits' TTT adapters in
one pass and answers every view of every task in one generation, as in the knowledge domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..base import Evaluation, Update
from .augment import INFERENCE_VIEWS, Transform
from .selfedit import MAX_STEPS, SelfEditConfig, parse_self_edit, self_edit_prompt
from .serialize import Prompt, grid_to_text
from .tasks import ArcTask
from .ttt_data import build_ttt_examples, inference_queries
from .voting import cell_share, task_solved, vote


@dataclass
class ArcSettings:
    """Test-time training and inference knobs. Paper values in comments; defaults sized for a CPU."""
    max_examples: int = 32            # paper 250
    leave_n: tuple[int, ...] = (1, 2)
    max_tokens: int = 1024            # TTT examples and queries longer than this are dropped (paper 8192)
    max_steps: int = MAX_STEPS        # self-edits needing more optimizer steps are rejected (paper 375)
    batch_size: int = 2               # paper 2
    n_permutations: int = 1           # demonstration orders per leave-one-out context at inference (paper 2)
    views: tuple[Transform, ...] = INFERENCE_VIEWS
    seed: int = 0


REWARDS = ("binary", "cells")


class ArcDomain:
    name = "arc"
    stop_at_newline = False           # answers are multi-line grids

    def __init__(self, render: Callable[[Prompt], str], count_tokens: Callable[[str], int],
                 settings: ArcSettings | None = None, eos_text: str = "", reward: str = "binary"):
        if reward not in REWARDS:
            raise ValueError(f"unknown ARC reward {reward!r}; use {' or '.join(REWARDS)}")
        self.render = render
        self.count_tokens = count_tokens
        self.s = settings or ArcSettings()
        self.eos_text = eos_text
        self.reward_kind = reward

    # 2. the self-edit prompt
    def self_edit_prompt(self, task: ArcTask) -> str:
        return self.render(self_edit_prompt(task))

    # 3. self-edit -> update (or the reason it is rejected, which earns reward 0)
    def ttt_examples(self, task: ArcTask, config: SelfEditConfig):
        return build_ttt_examples(task.train, config.data_generation.groups(), self.s.leave_n, self.s.seed,
                                  self.s.max_examples, self.s.max_tokens,
                                  lambda text: self.count_tokens(text))

    def parse_self_edit(self, task: ArcTask, text: str | None) -> Update:
        if text is None:
            return Update(error="empty self-edit")
        res = parse_self_edit(text, lambda cfg: len(self.ttt_examples(task, cfg)), self.s.max_steps,
                              self.s.batch_size)
        if res.error:
            return Update(error=res.error)
        return self.config_update(task, res.config)

    def config_update(self, task: ArcTask, config: SelfEditConfig) -> Update:
        examples = self.ttt_examples(task, config)
        overrides = {"lr": config.training.learning_rate, "epochs": config.training.num_train_epochs,
                     "batch_size": self.s.batch_size}
        prompts = [self.render(e.prompt) for e in examples]
        if config.loss_on_output_only:
            return Update(pairs=[(p, e.answer) for p, e in zip(prompts, examples)], overrides=overrides)
        return Update(texts=[p + e.answer + self.eos_text for p, e in zip(prompts, examples)], overrides=overrides)

    # 4. evaluation: every test input under every view; answers mapped back and voted
    def _queries(self, task: ArcTask):
        return [inference_queries(task.train, t.input, self.s.seed, self.s.n_permutations, self.s.views,
                                  self.s.max_tokens, self.count_tokens) for t in task.test]

    def eval_prompts(self, task: ArcTask) -> list[str]:
        return [self.render(q.prompt) for qs in self._queries(task) for q in qs]

    def grade(self, task: ArcTask, answers: Sequence[str]) -> Evaluation:
        attempts, i = [], 0
        for qs in self._queries(task):
            attempts.append(vote(zip([q.view for q in qs], answers[i:i + len(qs)])))
            i += len(qs)
        expected = [t.output for t in task.test]
        ok = task_solved(attempts, expected)
        # Stored per test input: its voted attempts as grid text, separated by a blank line (see `attempts_of`),
        # and its grade, the best attempt's share of correct cells (1.0 when that test output is solved).
        shown = ["\n\n".join(grid_to_text(g) for g in a) for a in attempts]
        grades = [cell_share(a, e) for a, e in zip(attempts, expected)]
        return Evaluation(answers=shown, grades=grades, accuracy=float(ok))

    # 5. reward: binary, as the paper (accuracy: 1 when the task is solved), or graded by cells
    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float:
        if self.reward_kind == "cells":
            return sum(evaluation.grades) / max(1, len(evaluation.grades))
        return evaluation.accuracy


def attempts_of(stored: str) -> list:
    """The attempts (grids) of one test input, from a stored answer written by `ArcDomain.grade`."""
    from .serialize import text_to_grid
    return [g for g in (text_to_grid(block) for block in stored.split("\n\n")) if g is not None]


def answer_tokens_for(tasks: Sequence[ArcTask]) -> int:
    """Enough new tokens for the largest expected output: two tokens a cell (digit, then space or newline),
    sized from the demonstrations with room for a test output half again as large, so the test answer itself
    is never looked at."""
    cells = max(len(g) * len(g[0]) for t in tasks for e in t.train for g in (e.output, e.input))
    return 3 * cells + 16
