"""The store carries a schema version; an older store is migrated (in place when opened for writing, in a copy
when read for a report); a newer or damaged one gets one clear error."""
import json
import sqlite3

import pytest

from seal.engine.store import SCHEMA_VERSION, RunStore, StoreError

V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE self_edits (round INTEGER NOT NULL, source TEXT NOT NULL, context_id TEXT NOT NULL,
    sample INTEGER NOT NULL, prompt TEXT, text TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (round, source, context_id, sample));
CREATE TABLE base_evals (model TEXT NOT NULL, context_id TEXT NOT NULL, answers TEXT NOT NULL, grades TEXT NOT NULL,
    accuracy REAL NOT NULL, created REAL NOT NULL, PRIMARY KEY (model, context_id));
CREATE TABLE trials (round INTEGER NOT NULL, condition TEXT NOT NULL, context_id TEXT NOT NULL,
    sample INTEGER NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, self_edit TEXT, sequences TEXT,
    answers TEXT, grades TEXT, accuracy REAL, reward REAL NOT NULL, error TEXT, steps INTEGER, final_loss REAL,
    seconds REAL, finished REAL NOT NULL, PRIMARY KEY (round, condition, context_id, sample, seed));
"""


def _v1(path, kind):
    db = sqlite3.connect(path)
    db.executescript(V1)
    db.execute("INSERT INTO meta VALUES ('kind', ?)", (json.dumps(kind),))
    for stream in (0, 1):
        db.execute("INSERT INTO trials VALUES (?, 'step-0', 'p1', 0, 0, 'ok', 'x', '[]', '[\"a\"]', '[1.0]', 1.0, "
                   "1.0, NULL, 3, 0.5, 1.0, 0.0)", (stream,))
        db.execute("INSERT INTO self_edits VALUES (?, 'step-0', 'p1', 0, NULL, 'x', 0.0)", (stream,))
    db.commit()
    db.close()


def test_an_old_sequential_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "store.sqlite"
    _v1(path, "knowledge-sequential")
    store = RunStore(path)
    assert store.migrated_from == 1 and store.get_meta("schema_version") == SCHEMA_VERSION
    rows = store.trials()
    assert [(r["round"], r["condition"]) for r in rows] == [(0, "stream-0/step-0"), (0, "stream-1/step-0")]
    assert rows[0]["pairs"] is None and rows[0]["answers"] == ["a"]
    assert set(store.self_edits(0, "stream-1/step-0")) == {("p1", 0)}
    store.close()
    again = RunStore(path)   # migrating twice changes nothing
    assert again.migrated_from is None and len(again.trials()) == 2
    again.close()


def test_a_report_reads_an_old_store_without_writing_to_it(tmp_path):
    path = tmp_path / "store.sqlite"
    _v1(path, "knowledge-sequential")
    before = path.read_bytes()
    store = RunStore.open_readonly(path)
    assert store.migrated_from == 1 and store.trials()[1]["condition"] == "stream-1/step-0"
    store.close()
    assert path.read_bytes() == before


def test_a_newer_or_damaged_store_is_refused_by_name(tmp_path):
    path = tmp_path / "store.sqlite"
    store = RunStore(path)
    store.set_meta("schema_version", SCHEMA_VERSION + 1)
    store.close()
    with pytest.raises(StoreError, match="written by a newer seal"):
        RunStore(path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.sqlite: the run store is damaged"):
        RunStore(junk)


def test_pairs_are_stored_with_their_trial(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    store.add_trial((0, "oracle", "t1", 0, 0), status="ok", reward=1.0, pairs=[("Input: 1", "2")], sequences=[])
    assert store.trials()[0]["pairs"] == [["Input: 1", "2"]]
    store.close()
