"""The run store: one SQLite file (WAL) per run folder holding every self-edit, trial, answer, grade and reward.

Each finished unit of work is one committed transaction, so a run killed at any point (SIGKILL included)
loses at most the work in flight, and rerunning the same command skips everything already stored.

The store carries a schema version (meta `schema_version`). Opening an older store migrates it in place, in one
transaction, before anything else reads it; `open_readonly` migrates a copy, so a report never writes to a run.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .faults import fault_point

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS self_edits (
    round INTEGER NOT NULL, source TEXT NOT NULL, context_id TEXT NOT NULL, sample INTEGER NOT NULL,
    prompt TEXT, text TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (round, source, context_id, sample));
CREATE TABLE IF NOT EXISTS base_evals (
    model TEXT NOT NULL, context_id TEXT NOT NULL, answers TEXT NOT NULL, grades TEXT NOT NULL,
    accuracy REAL NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (model, context_id));
CREATE TABLE IF NOT EXISTS trials (
    round INTEGER NOT NULL, condition TEXT NOT NULL, context_id TEXT NOT NULL, sample INTEGER NOT NULL,
    seed INTEGER NOT NULL, status TEXT NOT NULL, self_edit TEXT, sequences TEXT, answers TEXT, grades TEXT,
    accuracy REAL, reward REAL NOT NULL, error TEXT, steps INTEGER, final_loss REAL, seconds REAL,
    finished REAL NOT NULL, pairs TEXT,
    PRIMARY KEY (round, condition, context_id, sample, seed));
CREATE TABLE IF NOT EXISTS contexts (
    context_id TEXT PRIMARY KEY, title TEXT NOT NULL, questions TEXT NOT NULL, gold TEXT NOT NULL);
"""

TRIAL_COLUMNS = ("round", "condition", "context_id", "sample", "seed", "status", "self_edit", "sequences", "answers",
                 "grades", "accuracy", "reward", "error", "steps", "final_loss", "seconds", "finished", "pairs")
_JSON_COLUMNS = ("sequences", "answers", "grades", "pairs")


class StoreError(ValueError):
    """A store that cannot be used: unreadable, from a newer seal, or not a run store."""


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Version 1 (no version stored): trials had no `pairs` column and there was no `contexts` table (both added
    by SCHEMA); sequential runs kept the stream number in the `round` column, now round 0 and the stream in the
    condition and source ("stream-S/step-T")."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(trials)")}
    if "pairs" not in cols:
        db.execute("ALTER TABLE trials ADD COLUMN pairs TEXT")
    kind = db.execute("SELECT value FROM meta WHERE key='kind'").fetchone()
    if kind and json.loads(kind[0]) == "knowledge-sequential":
        db.execute("UPDATE trials SET condition = 'stream-' || round || '/' || condition, round = 0 "
                   "WHERE condition LIKE 'step-%'")
        db.execute("UPDATE self_edits SET source = 'stream-' || round || '/' || source, round = 0 "
                   "WHERE source LIKE 'step-%'")


MIGRATIONS = {1: _migrate_1_to_2}


def _readonly_uri(path: Path) -> str:
    """The URI that opens `path` for reading only. A WAL store needs its -shm file, which a folder on read-only
    media cannot hold; nothing can be writing there, so the file is opened as immutable instead."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return uri if os.access(path.parent, os.W_OK) else uri + "&immutable=1"


def _why(path: Path, e: sqlite3.Error) -> str:
    """What a store error means for the user, in one line."""
    text = str(e)
    if "readonly" in text or "read-only" in text or not os.access(path.parent, os.W_OK):
        return f"{path}: cannot write the run store: the folder is read-only ({text})"
    if "full" in text:
        return (f"{path}: cannot write the run store: the disk is full ({text}); finished work is kept: free some "
                f"space and run the same command to resume")
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return f"{path}: the run store is damaged ({text}); it was left as it is: move it aside or use another --out"
    return f"{path}: the run store cannot be used ({text})"


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            if existed:
                # A truncated or damaged file is refused before anything is written to it (it stays as it was).
                ro = sqlite3.connect(_readonly_uri(self.path), uri=True, timeout=30)
                check = ro.execute("PRAGMA quick_check").fetchone()
                ro.close()
                if check is None or check[0] != "ok":
                    raise StoreError(f"{self.path}: the run store is damaged (integrity check: {check and check[0]});"
                                     f" it was left as it is: move it aside or use another --out")
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._upgrade()
        except sqlite3.DatabaseError as e:
            raise StoreError(_why(self.path, e)) from e

    @contextmanager
    def _tx(self):
        """One transaction; a failed write (a full disk, a read-only folder) becomes one StoreError, and the
        transaction is rolled back, so the store keeps everything committed before it."""
        try:
            with self.db:
                yield
        except sqlite3.DatabaseError as e:
            raise StoreError(_why(self.path, e)) from e

    def _upgrade(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        fresh = "trials" not in tables
        version = SCHEMA_VERSION if fresh else 1
        if "meta" in tables:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = json.loads(row[0]) if row else version
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: written by a newer seal (store schema {version}; this seal reads up to "
                             f"{SCHEMA_VERSION}); upgrade seal to use it")
        with self._tx():
            if not fresh:
                for v in range(version, SCHEMA_VERSION):
                    MIGRATIONS[v](self.db)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),))
        self.migrated_from = None if version == SCHEMA_VERSION else version

    @classmethod
    def open_readonly(cls, path: str | Path) -> "RunStore":
        """The store for reading only. An older store is migrated in a temporary copy, never in place."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no run store")
        try:
            db = sqlite3.connect(_readonly_uri(path), uri=True, timeout=30)
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            db.close()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: cannot read the run store ({e})") from e
        if row and json.loads(row[0]) == SCHEMA_VERSION:
            store = cls.__new__(cls)
            store.path, store.migrated_from = path, None
            store.db = sqlite3.connect(_readonly_uri(path), uri=True, timeout=30)
            return store
        tmp = Path(tempfile.mkdtemp(prefix="seal-store-")) / "store.sqlite"
        src = sqlite3.connect(_readonly_uri(path), uri=True, timeout=30)
        dst = sqlite3.connect(tmp)
        src.backup(dst)   # a consistent copy, WAL included
        src.close()
        dst.close()
        store = cls(tmp)
        store._tmp = tmp.parent
        return store

    def close(self):
        self.db.close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- meta
    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def all_meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    # --- contexts (what a report shows of each: title, questions, gold answers)
    def add_contexts(self, items: list[tuple[str, str, list[str], list[str]]]) -> None:
        with self._tx():
            self.db.executemany("INSERT OR IGNORE INTO contexts VALUES (?, ?, ?, ?)",
                                [(c, t, json.dumps(q), json.dumps(g)) for c, t, q, g in items])

    def contexts(self) -> dict[str, dict]:
        rows = self.db.execute("SELECT context_id, title, questions, gold FROM contexts")
        return {c: {"title": t, "questions": json.loads(q), "gold": json.loads(g)} for c, t, q, g in rows}

    # --- self-edits
    def self_edits(self, round_: int, source: str) -> dict[tuple[str, int], str]:
        rows = self.db.execute("SELECT context_id, sample, text FROM self_edits WHERE round=? AND source=?",
                               (round_, source))
        return {(c, s): t for c, s, t in rows}

    def all_self_edits(self) -> list[dict]:
        rows = self.db.execute("SELECT round, source, context_id, sample, text FROM self_edits "
                               "ORDER BY round, source, context_id, sample")
        return [dict(zip(("round", "source", "context_id", "sample", "text"), r)) for r in rows]

    def add_self_edits(self, round_: int, source: str, items: list[tuple[str, int, str | None, str]]) -> None:
        """items: (context_id, sample, prompt, text); stored in one transaction."""
        now = time.time()
        with self._tx():
            self.db.executemany("INSERT OR IGNORE INTO self_edits VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(round_, source, c, s, p, t, now) for c, s, p, t in items])
            fault_point("store.self_edits")

    # --- base evaluations
    def base_evals(self, model: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT context_id, answers, grades, accuracy FROM base_evals WHERE model=?", (model,))
        return {c: {"answers": json.loads(a), "grades": json.loads(g), "accuracy": acc} for c, a, g, acc in rows}

    def base_models(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT model FROM base_evals ORDER BY model")]

    def add_base_evals(self, model: str, items: list[tuple[str, list[str], list[float], float]]) -> None:
        now = time.time()
        with self._tx():
            self.db.executemany("INSERT OR IGNORE INTO base_evals VALUES (?, ?, ?, ?, ?, ?)",
                                [(model, c, json.dumps(a), json.dumps(g), acc, now) for c, a, g, acc in items])
            fault_point("store.base")

    # --- trials
    def done_trials(self, round_: int | None = None) -> set[tuple]:
        q = "SELECT round, condition, context_id, sample, seed FROM trials"
        rows = self.db.execute(q + (" WHERE round=?" if round_ is not None else ""),
                               (() if round_ is None else (round_,)))
        return {tuple(r) for r in rows}

    def add_trial(self, key: tuple, *, status: str, reward: float, self_edit: str | None = None,
                  sequences: list[str] | None = None, pairs: list[tuple[str, str]] | None = None,
                  answers: list[str] | None = None, grades: list[float] | None = None,
                  accuracy: float | None = None, error: str | None = None, steps: int | None = None,
                  final_loss: float | None = None, seconds: float | None = None) -> None:
        round_, condition, context_id, sample, seed = key
        values = dict(round=round_, condition=condition, context_id=context_id, sample=sample, seed=seed,
                      status=status, self_edit=self_edit, sequences=sequences, answers=answers, grades=grades,
                      accuracy=accuracy, reward=reward, error=error, steps=steps, final_loss=final_loss,
                      seconds=seconds, finished=time.time(), pairs=[list(p) for p in pairs] if pairs else None)
        for k in _JSON_COLUMNS:
            values[k] = json.dumps(values[k]) if values[k] is not None else None
        with self._tx():
            self.db.execute(f"INSERT INTO trials ({', '.join(TRIAL_COLUMNS)}) VALUES "
                            f"({', '.join('?' * len(TRIAL_COLUMNS))})", [values[k] for k in TRIAL_COLUMNS])
            fault_point("store.trial")

    def drop_trials(self, condition_prefix: str) -> None:
        """Forget the trials and self-edits of a unit of work that must be redone whole (an interrupted
        sequential stream), named by the prefix of its conditions."""
        with self._tx():
            self.db.execute("DELETE FROM trials WHERE condition LIKE ? || '%'", (condition_prefix,))

    def trials(self, round_: int | None = None, condition: str | None = None) -> list[dict]:
        q, args = f"SELECT {', '.join(TRIAL_COLUMNS)} FROM trials WHERE 1=1", []
        if round_ is not None:
            q += " AND round=?"; args.append(round_)
        if condition is not None:
            q += " AND condition=?"; args.append(condition)
        out = []
        for row in self.db.execute(q + " ORDER BY round, condition, context_id, sample, seed", args):
            rec = dict(zip(TRIAL_COLUMNS, row))
            for k in _JSON_COLUMNS:
                if rec[k] is not None:
                    rec[k] = json.loads(rec[k])
            out.append(rec)
        return out
