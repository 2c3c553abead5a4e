import json
from pathlib import Path

import pytest

from seal.domains.knowledge.data import DataError, builtin_passages, load_passages, select

from .conftest import SHARED

GOOD = {"title": "T", "context": "Some passage text.", "questions": [{"question": "Q?", "answer": "passage"}]}


def _write(tmp_path, content) -> Path:
    p = tmp_path / "data.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


@pytest.mark.parametrize("records, field, problem", [
    ([GOOD, {"title": "T2", "questions": GOOD["questions"]}], "'context'", "missing"),
    ([GOOD, {**GOOD, "context": "   "}], "'context'", "empty passage"),
    ([{**GOOD, "questions": [{"question": "Q?"}]}], "'questions[0].answer'", "missing"),
    ([{**GOOD, "questions": [{"question": "Q?", "answer": ""}]}], "'questions[0].answer'", "empty"),
    ([{**GOOD, "title": 7}], "'title'", "expected a string"),
    ([{**GOOD, "questions": "Q?"}], "'questions'", "expected a list"),
    ([GOOD, GOOD, "text"], "'(record)'", "expected an object"),
    ({"title": "T"}, "'(root)'", "expected a list"),
])
def test_malformed_records_name_file_record_and_field(tmp_path, records, field, problem):
    path = _write(tmp_path, records)
    with pytest.raises(DataError) as err:
        load_passages(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and problem in msg
    if isinstance(records, list):
        bad = next(i for i, r in enumerate(records) if r is not GOOD)
        assert f"record {bad}" in msg


def test_bad_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, '[{"title": "T",\n "context": }]')
    with pytest.raises(DataError, match=r"data\.json: not valid JSON \(line 2"):
        load_passages(path)


def test_builtin_passages_meet_the_spec():
    train, ev = builtin_passages("train"), builtin_passages("eval")
    assert len(train) + len(ev) >= 80 and len(ev) >= 30
    titles = [p.title for p in train + ev]
    assert len(set(titles)) == len(titles)
    for p in train + ev:
        assert 80 <= len(p.context.split()) <= 180, p.title
        assert len(p.questions) >= 4, p.title
        for q in p.questions:
            assert q.answer in p.context, (p.title, q.answer)


def test_selection_matches_the_papers_eval_set():
    path = SHARED / "squad" / "squad_val.json"
    if not path.exists():
        pytest.skip("shared SQuAD data not present")
    chosen = select(load_passages(path), 200, seed=42)
    assert sum(len(p.questions) for p in chosen) == 974
    gpt = json.loads((SHARED / "squad" / "synthetic" / "val200_gpt41_implications.json").read_text())
    assert [p.context for p in chosen[:5]] == [r["context"] for r in gpt[:5]]
