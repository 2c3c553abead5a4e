"""The ARC domain for the engine: a task in, a JSON self-edit out, test-time training on the demonstrations,
augmented greedy inference with a vote, reward 1 when every test output is among the two attempts (or, with
reward="cells", the share of correct cells: see `cell_share`).

It answers the Domain protocol's questions, so the batched inner loop trains k self-edits' TTT adapters in
one pass and answers every view of every task in one generation, as in the knowledge domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ...engine.protocol import Constraint, ContextView, Evaluation, Update, clean_text
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
    baselines = ("oracle",)
    no_update = "in-context"          # no update: the demonstrations are in the prompt
    stop_at_newline = False           # answers are multi-line grids
    answer_batch = 16
    reward_uses_base = False

    def __init__(self, render: Callable[[Prompt], str], count_tokens: Callable[[str], int],
                 settings: ArcSettings | None = None, eos_text: str = "", reward: str = "binary",
                 tasks: dict[str, list[ArcTask]] | None = None, oracle: dict | None = None,
                 answer_tokens: int | None = None, tokenizer=None):
        if reward not in REWARDS:
            raise ValueError(f"unknown ARC reward {reward!r}; use {' or '.join(REWARDS)}")
        self.render = render
        self.count_tokens = count_tokens
        self.s = settings or ArcSettings()
        self.eos_text = eos_text
        self.reward_kind = reward
        self._tasks = dict(tasks or {})
        self.oracle = oracle
        # An answer longer than the token limit could not be part of a training example either; the cap keeps one
        # huge grid (30 x 30 is about 2,700 tokens) from making every row of a CPU batch decode that long.
        every = [t for ts in self._tasks.values() for t in ts]
        self.answer_tokens = answer_tokens or (min(answer_tokens_for(every), self.s.max_tokens) if every else 64)

    # 1. contexts
    def contexts(self, split: str) -> list[ArcTask]:
        return self._tasks.get(split, [])

    # 2. the self-edit prompt
    def self_edit_prompt(self, task: ArcTask) -> str:
        return self.render(self_edit_prompt(task))

    def self_edit_message(self, task: ArcTask) -> str:
        return self_edit_prompt(task).user

    def self_edit_constraint(self, tokenizer) -> Constraint:
        """Constrained decoding: only the menu's canonical self-edits can be written (see constrained.py)."""
        from .constrained import self_edit_trie
        trie = self_edit_trie(tokenizer)
        return Constraint(trie.allowed, trie.depth)

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

    def baseline_update(self, name: str, task: ArcTask) -> Update:
        """Oracle TTT: the run's fixed configuration instead of a self-edit."""
        import json
        from .selfedit import validate_config
        if name != "oracle" or self.oracle is None:
            raise ValueError(f"unknown ARC baseline {name!r} (or no oracle configuration given)")
        update = self.config_update(task, validate_config(self.oracle))
        update.text = json.dumps(self.oracle)
        return update

    def read_self_edits(self, path: str, contexts: Sequence[ArcTask]) -> dict[str, list[str]]:
        """Self-edits from a JSON file: {task id: [self-edit JSON text or object, ...]}."""
        import json
        from pathlib import Path
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except RecursionError:
            raise ValueError(f"{path}: cannot read self-edits (JSON nested too deeply)") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read self-edits ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object mapping task ids to lists of self-edits")
        out = {}
        for t in contexts:
            if t.id not in data:  # else the task would silently get no self-edit (an invalid one, reward 0)
                raise ValueError(f"{path}: no self-edits for task {t.id}; the file must hold the selected tasks, "
                                 f"keyed by their ids (a task with several test inputs: <id>-0, <id>-1, ...)")
            items = data[t.id]
            if not isinstance(items, list):
                raise ValueError(f"{path}: {t.id}: expected a list of self-edits")
            # Stored as text: a lone surrogate (a "\\ud800" escape) would stop the store, so it is replaced.
            out[t.id] = [clean_text(x) if isinstance(x, str) else json.dumps(x) for x in items]
        return out

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
        # Stored per test input: its voted attempts as grid text, separated by a blank line (see `attempts_of`),
        # and its grade, the best attempt's share of correct cells (1.0 when that test output is solved).
        shown = ["\n\n".join(grid_to_text(g) for g in a) for a in attempts]
        if any(e is None for e in expected):
            # A task shipped without its solution (an ARC challenges file alone): its predictions are kept and it
            # has no score: grades None, accuracy and reward 0, and results leave it out of every accuracy
            # (`experiment.results.unscored_contexts`, from `describe`'s gold of None).
            return Evaluation(answers=shown, grades=[None] * len(expected), accuracy=0.0)
        grades = [cell_share(a, e) for a, e in zip(attempts, expected)]
        return Evaluation(answers=shown, grades=grades, accuracy=float(task_solved(attempts, expected)))

    # 6. what a report shows: one question per test input, its expected grid as the gold answer
    def describe(self, task: ArcTask) -> ContextView:
        gold = [grid_to_text(t.output) if t.output is not None else None for t in task.test]
        return ContextView(task.id, [f"test input {i + 1}" for i in range(len(task.test))], gold)

    # 5. reward: binary, as the paper (accuracy: 1 when the task is solved), or graded by cells
    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float:
        if self.reward_kind == "cells":
            return sum(g or 0.0 for g in evaluation.grades) / max(1, len(evaluation.grades))
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
