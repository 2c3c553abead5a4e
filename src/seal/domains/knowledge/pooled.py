"""Several passages as one context: one update trained on all of them, then all their questions answered.

The continued-pretraining and sequential-edit experiments evaluate one adapter on many passages' questions.
Wrapping the passages as one context lets them use the inner loop unchanged (batched training, batched
answers); `split` gives each passage its own share of the grades back.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base import Evaluation, Update
from .data import Passage
from .domain import KnowledgeDomain


@dataclass(frozen=True)
class Pool:
    passages: tuple[Passage, ...]

    @property
    def id(self) -> str:
        return "+".join(p.id for p in self.passages)


class PooledDomain:
    """A KnowledgeDomain over pools of passages (eval and grading only; updates are built by the caller)."""
    name = "knowledge-pooled"

    def __init__(self, inner: KnowledgeDomain):
        self.inner = inner

    def eval_prompts(self, pool: Pool) -> list[str]:
        return [q for p in pool.passages for q in self.inner.eval_prompts(p)]

    def grade(self, pool: Pool, answers: list[str]) -> Evaluation:
        grades, i = [], 0
        for p in pool.passages:
            grades += self.inner.grade(p, answers[i:i + len(p.questions)]).grades
            i += len(p.questions)
        return Evaluation(answers=list(answers), grades=grades, accuracy=sum(grades) / max(1, len(grades)))

    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float:
        return evaluation.accuracy


def load_pooled_loops(opts, cfg, grader):
    """The model, its domain, an inner loop over single passages (base answers) and one over pools."""
    from ...inner import InnerLoop
    from ...models import load_model
    from .experiment import build_domain

    lm = load_model(opts.model, opts.device, opts.dtype)
    domain = build_domain(opts, lm, grader)
    kw = dict(answer_tokens=opts.answer_tokens, show_progress=opts.show_progress)
    return lm, domain, InnerLoop(lm, domain, cfg, **kw), InnerLoop(lm, PooledDomain(domain), cfg, **kw)


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
