"""The knowledge domain: passages in, implications (or rewrites, QA...) out, questions without the passage."""
from __future__ import annotations

from typing import Callable, Sequence

from ...engine.protocol import ContextView, Evaluation, Update, clean_text
from .data import DataError, Passage, builtin_passages, load_passages
from .graders import GradeItem, MetricGrader, contains, normalize_answer
from .prompts import PromptFamily, get_family, question_text
from .sequences import SequenceOptions, build_sequences

REWARDS = ("accuracy", "gain")

# Bounds on one self-edit, which is untrusted text. The largest in the paper's files has 11,002 characters and
# 77 lines, and a generation budget of a few hundred tokens writes far less; a longer one (a runaway or hostile
# text) is rejected with reward 0 rather than trained for hours. Each sequence is also cut at
# `inner.max_seq_len` tokens when it is tokenized.
MAX_SELF_EDIT_CHARS = 100_000
MAX_SELF_EDIT_SEQUENCES = 256   # training sequences from the self-edit, the passage not counted


def _plain(user_text: str, prefix: str = "") -> str:
    return user_text + prefix


class KnowledgeDomain:
    name = "knowledge"
    baselines = ("passage",)
    no_update = "base"
    stop_at_newline = True
    answer_batch = 32

    def __init__(self, family: str | PromptFamily = "implications", sequences: SequenceOptions | None = None,
                 grader=None, render: Callable[..., str] = _plain, reward: str = "accuracy",
                 passages: dict[str, Callable[[], list[Passage]] | list[Passage]] | None = None,
                 answer_tokens: int = 32):
        self.family = family if isinstance(family, PromptFamily) else get_family(family)
        self.seq = sequences or SequenceOptions()
        self.grader = grader or MetricGrader("contains")
        self.render = render
        if reward not in REWARDS:
            raise ValueError(f"reward must be accuracy or gain, got {reward!r}")
        self.reward_kind = reward
        self.reward_uses_base = reward == "gain"
        self.answer_tokens = answer_tokens
        self._passages = dict(passages or {})

    # 1. contexts (a split is given as a list, or as a function that loads it when first asked for)
    def contexts(self, split: str) -> list[Passage]:
        if split not in self._passages:
            self._passages[split] = builtin_passages(split)
        if callable(self._passages[split]):
            self._passages[split] = self._passages[split]()
        return self._passages[split]

    # 2. the self-edit prompt
    def self_edit_prompt(self, p: Passage) -> str:
        return self.render(self.family.user_text(p.title, p.context), self.family.label)

    def self_edit_message(self, p: Passage) -> str:
        return self.family.user_text(p.title, p.context)

    def self_edit_constraint(self, tokenizer):
        return None   # self-edits are free text

    # 3. self-edit -> update
    def parse_self_edit(self, p: Passage, text: str | None) -> Update:
        if text is None:
            return Update(error="empty self-edit")
        if len(text) > MAX_SELF_EDIT_CHARS:   # checked first: nothing is copied or split
            return Update(error=f"self-edit too long: {len(text):,} characters, at most {MAX_SELF_EDIT_CHARS:,}")
        if not text.strip():
            return Update(error="empty self-edit")
        seqs = build_sequences(clean_text(text), p.title, p.context, self.seq, self.family.name)
        own = len(seqs) - (1 if self.seq.append_passage else 0)
        if own > MAX_SELF_EDIT_SEQUENCES:
            return Update(error=f"self-edit too long: {own:,} training sequences, at most {MAX_SELF_EDIT_SEQUENCES}")
        if not seqs:
            return Update(error="self-edit gave no training sequences")
        return Update(texts=seqs)

    def baseline_update(self, name: str, p: Passage) -> Update:
        if name != "passage":
            raise ValueError(f"unknown knowledge baseline {name!r}; the baseline is passage")
        return self.passage_update(p)

    def passage_update(self, p: Passage) -> Update:
        """The 'train on the passage' baseline: the passage alone, as the self-edit sequences would end."""
        opts = SequenceOptions(split=self.seq.split, title_prefix=self.seq.title_prefix, append_passage=True)
        return Update(texts=build_sequences("", p.title, p.context, opts))

    def read_self_edits(self, path: str, contexts: Sequence[Passage]) -> dict[str, list[str]]:
        """Self-edits from a SEAL-format file: passage records carrying `completions` (e.g. the paper's GPT-4.1
        implications), matched to the chosen passages by title and text."""
        by_key = {(r.title, r.context): r for r in load_passages(path, require_completions=False)}
        out = {}
        for p in contexts:
            rec = by_key.get((p.title, p.context))
            if rec is None:
                raise DataError(f"{path}: no record for passage '{p.title}' ({p.context[:60]}...); "
                                "the file must hold the selected passages")
            out[p.id] = [clean_text(c) for c in rec.completions if c.strip()]
        return out

    # 4. evaluation
    def eval_prompts(self, p: Passage) -> list[str]:
        return [self.render(question_text(p.title, q.question)) for q in p.questions]

    def grade(self, p: Passage, answers: Sequence[str]) -> Evaluation:
        items = [GradeItem(q.question, q.answer, a) for q, a in zip(p.questions, answers)]
        grades = self.grader.grade(items)
        return Evaluation(answers=list(answers), grades=grades, accuracy=sum(grades) / max(1, len(grades)))

    # 5. reward
    def reward(self, evaluation: Evaluation, base: Evaluation | None = None) -> float:
        if self.reward_kind == "gain" and base is not None:
            return evaluation.accuracy - base.accuracy
        return evaluation.accuracy

    # 6. what a report shows
    def describe(self, p: Passage) -> ContextView:
        return ContextView(p.title, [q.question for q in p.questions], [q.answer for q in p.questions])

    # optional: what a self-edit is made of (experiment.restem.self_edit_profile, per ReST-EM round)
    def self_edit_stats(self, p: Passage, text: str) -> dict[str, float]:
        """Its length in characters; the share of the passage's gold answers it contains (as the `contains`
        grader matches them: normalised, whole words), i.e. how much of what will be asked it restates; and the
        share of its words (normalised) that are not in the passage's title or text, i.e. how much it invents."""
        words = normalize_answer(text).split()
        known = set(normalize_answer(f"{p.title} {p.context}").split())
        golds = [q.answer for q in p.questions]
        return {"chars": float(len(text)),
                "gold_answers": sum(contains(text, g) for g in golds) / len(golds) if golds else 0.0,
                "novel_words": sum(w not in known for w in words) / len(words) if words else 0.0}
