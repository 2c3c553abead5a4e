"""From a self-edit text to training sequences (paper: one line per sequence, title prefix, passage last)."""
from __future__ import annotations

import re
from dataclasses import dataclass

_QUESTION = re.compile(r"^\s*(?:\*\*)?Q(?:uestion)?\s*\d*\s*[:.)]", re.IGNORECASE)
_ANSWER = re.compile(r"^\s*(?:\*\*)?A(?:nswer)?\s*\d*\s*[:.)]", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")


@dataclass
class SequenceOptions:
    split: str = "lines"          # lines (paper), segments (split on '---' only), none (the whole text)
    title_prefix: bool = True
    append_passage: bool = True
    drop_preamble: bool = True    # drop a first line like "Sure, here are..." before a numbered list


def _segments_by_line(text: str, drop_preamble: bool) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if drop_preamble and len(lines) > 1 and not _NUMBERED.match(lines[0]) and _NUMBERED.match(lines[1]):
        lines = lines[1:]
    return lines


def _qa_pairs(lines: list[str]) -> list[str] | None:
    """Self-QA: keep each question with its answer. Unlike the original (which missed 'Answer 1:'), any
    'Answer N:' / 'A:' form counts. Returns None if the text is not in question/answer form."""
    if not any(_QUESTION.match(ln) for ln in lines) or not any(_ANSWER.match(ln) for ln in lines):
        return None
    pairs, current = [], []
    for ln in lines:
        if _QUESTION.match(ln) and current:
            pairs.append("\n".join(current))
            current = []
        current.append(ln)
    if current:
        pairs.append("\n".join(current))
    return pairs


def build_sequences(self_edit: str, title: str, context: str, opts: SequenceOptions | None = None,
                    family: str | None = None) -> list[str]:
    """Training sequences for one self-edit. An empty self-edit gives just the passage (if appended)."""
    opts = opts or SequenceOptions()
    text = (self_edit or "").strip()
    if family == "self-qa" and text and not _QUESTION.match(text):
        text = "Question 1: " + text  # the prompt's label opened the first question
    pieces: list[str] = []
    if text:
        chunks = [c.strip() for c in text.split("---") if c.strip()] or [text]
        if opts.split == "none":
            pieces = [text]
        elif opts.split == "segments":
            pieces = chunks
        elif opts.split == "lines":
            for chunk in chunks:
                lines = _segments_by_line(chunk, opts.drop_preamble)
                pieces += _qa_pairs(lines) or lines
        else:
            raise ValueError(f"unknown split {opts.split!r}; use lines, segments or none")
    prefix = f"{title}\n" if opts.title_prefix else ""
    out = [prefix + p for p in pieces]
    if opts.append_passage:
        out.append(prefix + context.strip())
    return out
