"""The Domain protocol: the questions a domain answers, and nothing else the engine needs to know.

A domain is a small object with these methods; the engine and the experiment layer call nothing else, and
no module below the domains imports one. Contexts are the domain's own objects; all the engine asks of a
context is a stable string `id`.

1. contexts(split)                    which contexts there are ("train", "eval")
2. self_edit_prompt(ctx)              the prompt that asks the model for a self-edit (rendered for the model)
   self_edit_message(ctx)             the same request as a plain user message (for chat endpoints)
   self_edit_constraint(tokenizer)    an optional decoding constraint (only valid self-edits can be sampled)
3. parse_self_edit(ctx, text)         a self-edit text -> an Update, or an Update with the reason it is invalid
   baseline_update(name, ctx)         the domain's fixed updates (e.g. "passage", "oracle")
   read_self_edits(path, contexts)    self-edits written elsewhere, from a file in the domain's format
4. eval_prompts(ctx), grade(ctx, answers)   how an updated model is evaluated on the context
5. reward(evaluation, base)           the reward an evaluation gives (base: the no-update evaluation)
6. describe(ctx)                      what a report shows of a context (its questions and gold answers)

Attributes: `name`, `baselines` (the names `baseline_update` takes), `no_update` (the name of the no-update
condition: "base", or "in-context" where the context is in the prompt), `stop_at_newline` (answers end at
their first line), `answer_tokens` and `answer_batch` (answer generation budget), and `reward_uses_base`
(whether `reward` reads `base`, so the experiment knows when base evaluations of training contexts are needed).

Optional: `self_edit_stats(ctx, text) -> {name: number}`, what a self-edit is made of, which ReST-EM averages
per round over the sampled and the selected self-edits (results.json, the report).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Untrusted text (a self-edit read from a file or an endpoint) as valid Unicode: a lone surrogate, which
    JSON's "\\ud800" escape or a binary file yields, becomes U+FFFD. No tokenizer and no SQLite database takes
    a lone surrogate (they need UTF-8), so one such character would stop a whole run."""
    return _SURROGATE.sub("\ufffd", text)


@dataclass
class Update:
    """A parsed self-edit: the training texts and any hyperparameters the self-edit chose.

    `texts` are trained on whole (loss on every token); `pairs` are (prompt, completion) examples trained with
    the loss on the completion only. `error` is set when the self-edit is empty or invalid: such an update is
    never trained, and its trial gets reward 0."""
    texts: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    text: str | None = None           # what a fixed (baseline) update records as its self-edit, if anything


@dataclass
class Evaluation:
    answers: list[str]
    grades: list[float]
    accuracy: float


@dataclass
class ContextView:
    """What a report shows of one context: a title, and per evaluation prompt its question and gold answer."""
    title: str
    questions: list[str]
    gold: list[str]


@dataclass
class Constraint:
    """A decoding constraint for self-edits: `allowed(ids so far) -> the token ids allowed next` and the fewest
    new tokens a complete self-edit needs."""
    allowed: Callable[[list[int]], list[int]]
    min_new_tokens: int


@runtime_checkable
class Domain(Protocol):
    name: str
    baselines: tuple[str, ...]
    no_update: str
    stop_at_newline: bool
    answer_tokens: int
    answer_batch: int
    reward_uses_base: bool

    def contexts(self, split: str) -> Sequence[Any]: ...

    def self_edit_prompt(self, context: Any) -> str: ...

    def self_edit_message(self, context: Any) -> str: ...

    def self_edit_constraint(self, tokenizer: Any) -> Constraint | None: ...

    def parse_self_edit(self, context: Any, text: str | None) -> Update: ...

    def baseline_update(self, name: str, context: Any) -> Update: ...

    def read_self_edits(self, path: str, contexts: Sequence[Any]) -> dict[str, list[str]]: ...

    def eval_prompts(self, context: Any) -> list[str]: ...

    def grade(self, context: Any, answers: Sequence[str]) -> Evaluation: ...

    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float: ...

    def describe(self, context: Any) -> ContextView: ...


PROTOCOL_METHODS = ("contexts", "self_edit_prompt", "self_edit_message", "self_edit_constraint", "parse_self_edit",
                    "baseline_update", "read_self_edits", "eval_prompts", "grade", "reward", "describe")
PROTOCOL_ATTRIBUTES = ("name", "baselines", "no_update", "stop_at_newline", "answer_tokens", "answer_batch",
                       "reward_uses_base")


# The inner loop's data types: trials in, results out (torch-free, so recipes import them without a model).
@dataclass
class Trial:
    key: Any                      # the caller's identifier, handed back in the result
    context: Any
    update: Update
    seed: int
    self_edit: str | None = None  # the raw text the update came from, for the record


@dataclass
class TrialResult:
    key: Any
    evaluation: Evaluation | None
    reward: float
    error: str | None = None
    steps: int = 0
    final_loss: float | None = None
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list, repr=False)   # per optimizer step
    adapter: dict | None = field(default=None, repr=False)
