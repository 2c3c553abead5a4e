"""The Domain protocol: the five questions a domain answers, and nothing else the engine needs to know."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


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


@dataclass
class Evaluation:
    answers: list[str]
    grades: list[float]
    accuracy: float


@runtime_checkable
class Domain(Protocol):
    name: str

    def contexts(self, split: str) -> Sequence[Any]:
        """1. The contexts of a split ("train" or "eval")."""

    def self_edit_prompt(self, context: Any) -> str:
        """2. The prompt that asks the model for a self-edit on `context`."""

    def parse_self_edit(self, context: Any, text: str) -> Update:
        """3. How a self-edit text becomes an update, or why it is invalid."""

    def eval_prompts(self, context: Any) -> list[str]:
        """4a. The prompts the updated model answers (without the context)."""

    def grade(self, context: Any, answers: list[str]) -> Evaluation:
        """4b. Grade the updated model's answers."""

    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float:
        """5. The reward an evaluation gives."""
