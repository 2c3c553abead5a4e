"""Passages with questions: the SQuAD-by-passage JSON layout, Hugging Face datasets, and the built-in set.

    [{"title": str, "context": str, "questions": [{"question": str, "answer": str}, ...]}, ...]

Files with self-edits add `"completions": [str, ...]` (and optionally `"prompt"`) to each record.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


class DataError(ValueError):
    """A data file is malformed. The message names the file, the record and the field."""


@dataclass(frozen=True)
class Question:
    question: str
    answer: str


@dataclass
class Passage:
    title: str
    context: str
    questions: list[Question]
    completions: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """Stable id from title and text, so a run store keys passages the same way across runs."""
        digest = hashlib.sha1(f"{self.title}\n{self.context}".encode()).hexdigest()[:12]
        return digest


def _fail(source, index, field_name, problem):
    where = f"record {index}" if index is not None else "top level"
    raise DataError(f"{source}: {where}, field '{field_name}': {problem}")


def _check_unicode(source, index, field_name, text: str) -> None:
    """A lone surrogate (a "\\ud800" JSON escape) cannot be encoded: not in a passage id, nor in the store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        _fail(source, index, field_name, f"not valid Unicode (a lone surrogate at character {e.start})")


def parse_records(records, source: str, require_completions: bool = False) -> list[Passage]:
    """Validate and convert records; the first problem raises one DataError naming source, record and field."""
    if not isinstance(records, list):
        _fail(source, None, "(root)", f"expected a list of passage records, got {type(records).__name__}")
    if not records:
        _fail(source, None, "(root)", "the file holds no records")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            _fail(source, i, "(record)", f"expected an object, got {type(rec).__name__}")
        for key in ("title", "context"):
            if key not in rec:
                _fail(source, i, key, "missing")
            if not isinstance(rec[key], str):
                _fail(source, i, key, f"expected a string, got {type(rec[key]).__name__}")
            _check_unicode(source, i, key, rec[key])
        if not rec["context"].strip():
            _fail(source, i, "context", "empty passage")
        qs = rec.get("questions")
        if qs is None:
            _fail(source, i, "questions", "missing")
        if not isinstance(qs, list):
            _fail(source, i, "questions", f"expected a list, got {type(qs).__name__}")
        if not qs:
            _fail(source, i, "questions", "no questions")
        questions = []
        for j, q in enumerate(qs):
            if not isinstance(q, dict):
                _fail(source, i, f"questions[{j}]", f"expected an object, got {type(q).__name__}")
            for key in ("question", "answer"):
                if key not in q:
                    _fail(source, i, f"questions[{j}].{key}", "missing")
                if not isinstance(q[key], str):
                    _fail(source, i, f"questions[{j}].{key}", f"expected a string, got {type(q[key]).__name__}")
                if not q[key].strip():
                    _fail(source, i, f"questions[{j}].{key}", "empty")
                _check_unicode(source, i, f"questions[{j}].{key}", q[key])
            questions.append(Question(q["question"].strip(), q["answer"].strip()))
        completions = rec.get("completions", [])
        if isinstance(completions, str):
            completions = [completions]
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            _fail(source, i, "completions", "expected a list of strings")
        if require_completions and not any(c.strip() for c in completions):
            _fail(source, i, "completions", "no non-empty self-edit")
        out.append(Passage(rec["title"].strip(), rec["context"].strip(), questions, list(completions)))
    seen: dict[str, int] = {}
    for i, p in enumerate(out):  # the same passage twice has one id: the store would drop the second's trials
        if p.id in seen:
            _fail(source, i, "context", f"the same title and passage as record {seen[p.id]}")
        seen[p.id] = i
    _warn_unanswerable(out, source)
    return out


def _warn_unanswerable(passages: list[Passage], source: str, shown: int = 10) -> None:
    """One warning per record whose gold answers do not appear in its passage (normalised as the `contains`
    grader reads them): SQuAD's always do, a user's own data may not, and such a question can only be answered
    from what the model already knows."""
    import logging
    from .graders import normalize_answer
    bad = []
    for i, p in enumerate(passages):
        text = normalize_answer(p.context)
        missing = [j for j, q in enumerate(p.questions) if normalize_answer(q.answer) not in text]
        if missing:
            bad.append((i, missing))
    log = logging.getLogger("seal.data")
    for i, missing in bad[:shown]:
        log.warning(f"seal: warning: {source}: record {i}: the answer of question(s) "
                    f"{', '.join(str(j) for j in missing)} does not appear in its passage")
    if len(bad) > shown:
        log.warning(f"seal: warning: {source}: {len(bad) - shown} more record(s) whose answers do not appear in "
                    f"their passage")


def load_passages(path: str | Path, require_completions: bool = False) -> list[Passage]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise DataError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    except OSError as e:  # a folder, an unreadable file
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return parse_records(records, str(path), require_completions)


BUILTIN = {"train": "fictional_train.json", "eval": "fictional_eval.json"}


def builtin_passages(split: str = "eval") -> list[Passage]:
    """The team's fictional passages: invented entities, so no pretrained model knows the answers."""
    if split not in BUILTIN:
        raise ValueError(f"unknown split {split!r}; use train or eval")
    text = resources.files("seal.data").joinpath(BUILTIN[split]).read_text(encoding="utf-8")
    return parse_records(json.loads(text), f"built-in {split} passages")


def load_hf_squad(name: str, split: str = "validation") -> list[Passage]:
    """A Hugging Face dataset with SQuAD columns (title, context, question, answers), grouped by context in
    first-seen order, with the first gold answer, as the paper's files are built. Needs `datasets` and network
    access to the hub (or a local copy in its cache)."""
    try:
        import datasets
    except ImportError:
        raise DataError("loading a Hugging Face dataset needs the `datasets` package: pip install datasets") from None
    rows = datasets.load_dataset(name, split=split)
    for col in ("title", "context", "question", "answers"):
        if col not in rows.column_names:
            raise DataError(f"{name} ({split}): column '{col}' missing; SQuAD columns are required")
    grouped: dict[str, dict] = {}
    for r in rows:
        rec = grouped.setdefault(r["context"], {"title": r["title"].replace("_", " "), "context": r["context"],
                                                 "questions": []})
        texts = r["answers"]["text"]
        if texts:
            rec["questions"].append({"question": r["question"], "answer": texts[0]})
    return parse_records([r for r in grouped.values() if r["questions"]], f"{name} ({split})")


def resolve_data(spec: str | None, default_split: str = "eval") -> tuple[list[Passage], str]:
    """`spec` is a JSON path, `builtin:train` / `builtin:eval`, or `hf:NAME[:SPLIT]`. Returns passages and a label."""
    if spec is None or spec == "builtin":
        return builtin_passages(default_split), f"builtin:{default_split}"
    if spec.startswith("builtin:"):
        split = spec.split(":", 1)[1]
        return builtin_passages(split), spec
    if spec.startswith("hf:"):
        parts = spec.split(":")
        return load_hf_squad(parts[1], parts[2] if len(parts) > 2 else "validation"), spec
    return load_passages(spec), str(Path(spec).resolve())


def select(passages: list[Passage], n: int | None, seed: int = 42, start: int = 0) -> list[Passage]:
    """The paper's selection: shuffle with `random.seed(seed)`, then take [start:start+n]."""
    items = list(passages)
    rng = random.Random(seed)
    rng.shuffle(items)
    return items[start:start + n] if n else items[start:]
