"""The knowledge domain: passages in, implications (or rewrites, QA...) out, questions without the passage."""
from __future__ import annotations

from typing import Callable

from ..base import Evaluation, Update
from .data import Passage, builtin_passages
from .graders import GradeItem, MetricGrader
from .prompts import PromptFamily, get_family, question_text
from .sequences import SequenceOptions, build_sequences


def _plain(user_text: str, prefix: str = "") -> str:
    return user_text + prefix


class KnowledgeDomain:
    name = "knowledge"

    def __init__(self, family: str | PromptFamily = "implications", sequences: SequenceOptions | None = None,
                 grader=None, render: Callable[..., str] = _plain, reward: str = "accuracy",
                 passages: dict[str, list[Passage]] | None = None):
        self.family = family if isinstance(family, PromptFamily) else get_family(family)
        self.seq = sequences or SequenceOptions()
        self.grader = grader or MetricGrader("contains")
        self.render = render
        if reward not in ("accuracy", "gain"):
            raise ValueError(f"reward must be accuracy or gain, got {reward!r}")
        self.reward_kind = reward
        self._passages = passages or {}

    # 1. contexts
    def contexts(self, split: str) -> list[Passage]:
        if split not in self._passages:
            self._passages[split] = builtin_passages(split)
        return self._passages[split]

    # 2. the self-edit prompt
    def self_edit_prompt(self, p: Passage) -> str:
        return self.render(self.family.user_text(p.title, p.context), self.family.label)

    # 3. self-edit -> update
    def parse_self_edit(self, p: Passage, text: str | None) -> Update:
        if text is None or not text.strip():
            return Update(error="empty self-edit")
        seqs = build_sequences(text, p.title, p.context, self.seq, self.family.name)
        if not seqs:
            return Update(error="self-edit gave no training sequences")
        return Update(texts=seqs)

    def passage_update(self, p: Passage) -> Update:
        """The 'train on the passage' baseline: the passage alone, as the self-edit sequences would end."""
        opts = SequenceOptions(split=self.seq.split, title_prefix=self.seq.title_prefix, append_passage=True)
        return Update(texts=build_sequences("", p.title, p.context, opts))

    # 4. evaluation
    def eval_prompts(self, p: Passage) -> list[str]:
        return [self.render(question_text(p.title, q.question)) for q in p.questions]

    def grade(self, p: Passage, answers: list[str]) -> Evaluation:
        items = [GradeItem(q.question, q.answer, a) for q, a in zip(p.questions, answers)]
        grades = self.grader.grade(items)
        return Evaluation(answers=list(answers), grades=grades, accuracy=sum(grades) / max(1, len(grades)))

    # 5. reward
    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float:
        if self.reward_kind == "gain" and base is not None:
            return evaluation.accuracy - base.accuracy
        return evaluation.accuracy
