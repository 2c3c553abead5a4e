"""Several passages as one context: one update trained on all of them, then all their questions answered.

The continued-pretraining and sequential-edit recipes evaluate one adapter on many passages' questions.
Wrapping the passages as one context lets them use the inner loop unchanged (batched training, batched
answers); `split_grades` gives each passage its own share of the grades back. A pool's self-edit is its
passages' self-edits, one after another, each opened by a `### passage N` line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ...engine.protocol import ContextView, Evaluation, Update
from .data import Passage
from .domain import KnowledgeDomain

_PART = re.compile(r"^### passage \d+\s*$", re.M)


@dataclass(frozen=True)
class Pool:
    passages: tuple[Passage, ...]

    @property
    def id(self) -> str:
        return "+".join(p.id for p in self.passages)


class PooledDomain:
    """A KnowledgeDomain over pools of passages."""
    name = "knowledge-pooled"
    baselines = ("passage",)
    no_update = "base"
    stop_at_newline = True

    def __init__(self, inner: KnowledgeDomain):
        self.inner = inner
        self.answer_tokens, self.answer_batch = inner.answer_tokens, inner.answer_batch
        self.reward_uses_base = inner.reward_uses_base

    def contexts(self, split: str) -> list[Pool]:
        return [Pool(tuple(self.inner.contexts(split)))]

    def self_edit_prompt(self, pool: Pool) -> str:
        return "\n\n".join(self.inner.self_edit_prompt(p) for p in pool.passages)

    def self_edit_message(self, pool: Pool) -> str:
        return "\n\n".join(self.inner.self_edit_message(p) for p in pool.passages)

    def self_edit_constraint(self, tokenizer):
        return None

    def parse_self_edit(self, pool: Pool, text: str | None) -> Update:
        parts = [t for t in _PART.split(text or "")[1:]] if text and _PART.search(text) else [text or ""]
        parts += [""] * (len(pool.passages) - len(parts))
        return pooled_update([self.inner.parse_self_edit(p, t) for p, t in zip(pool.passages, parts)])

    def baseline_update(self, name: str, pool: Pool) -> Update:
        return pooled_update([self.inner.baseline_update(name, p) for p in pool.passages])

    def read_self_edits(self, path: str, contexts: Sequence[Pool]) -> dict[str, list[str]]:
        out = {}
        for pool in contexts:
            per = self.inner.read_self_edits(path, pool.passages)
            out[pool.id] = ["\n".join(f"### passage {i + 1}\n{(per[p.id] or [''])[0]}"
                                      for i, p in enumerate(pool.passages))]
        return out

    def eval_prompts(self, pool: Pool) -> list[str]:
        return [q for p in pool.passages for q in self.inner.eval_prompts(p)]

    def grade(self, pool: Pool, answers: Sequence[str]) -> Evaluation:
        grades, i = [], 0
        for p in pool.passages:
            grades += self.inner.grade(p, answers[i:i + len(p.questions)]).grades
            i += len(p.questions)
        return Evaluation(answers=list(answers), grades=grades, accuracy=sum(grades) / max(1, len(grades)))

    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float:
        return evaluation.accuracy

    def describe(self, pool: Pool) -> ContextView:
        views = [self.inner.describe(p) for p in pool.passages]
        return ContextView(" + ".join(v.title for v in views), [q for v in views for q in v.questions],
                           [g for v in views for g in v.gold])


def split_grades(pool: Pool, grades: list[float]) -> dict[str, float]:
    """Per-passage accuracy from the pooled grades."""
    out, i = {}, 0
    for p in pool.passages:
        part = grades[i:i + len(p.questions)]
        out[p.id] = sum(part) / max(1, len(part))
        i += len(p.questions)
    return out


def pooled_update(updates: list[Update]) -> Update:
    """All passages' training sequences as one update; an invalid self-edit contributes nothing."""
    texts = [t for u in updates if not u.error for t in u.texts]
    return Update(texts=texts) if texts else Update(error="no valid training sequences in the pool")


def load_pooled(spec, cfg, checked, log=None):
    """The model and its knowledge domain, a learner over single passages (base answers) and one over pools."""
    from ...experiment.recipes import learner_of, load
    loaded = load(spec, cfg, cfg.model.name, checked)
    return (loaded, learner_of(cfg, loaded, spec, checked, log=log),
            learner_of(cfg, loaded, spec, checked, wrap=PooledDomain, log=log))

