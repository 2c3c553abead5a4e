"""The run store: one SQLite file (WAL) per run folder holding every self-edit, trial, answer, grade and reward.

Each finished unit of work is one committed transaction, so a run killed at any point (SIGKILL included)
loses at most the work in flight, and rerunning the same command skips everything already stored.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

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
    finished REAL NOT NULL,
    PRIMARY KEY (round, condition, context_id, sample, seed));
"""


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self):
        self.db.close()

    # --- meta
    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # --- self-edits
    def self_edits(self, round_: int, source: str) -> dict[tuple[str, int], str]:
        rows = self.db.execute("SELECT context_id, sample, text FROM self_edits WHERE round=? AND source=?",
                               (round_, source))
        return {(c, s): t for c, s, t in rows}

    def add_self_edits(self, round_: int, source: str, items: list[tuple[str, int, str | None, str]]) -> None:
        """items: (context_id, sample, prompt, text); stored in one transaction."""
        now = time.time()
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO self_edits VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(round_, source, c, s, p, t, now) for c, s, p, t in items])

    # --- base evaluations
    def base_evals(self, model: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT context_id, answers, grades, accuracy FROM base_evals WHERE model=?", (model,))
        return {c: {"answers": json.loads(a), "grades": json.loads(g), "accuracy": acc} for c, a, g, acc in rows}

    def add_base_evals(self, model: str, items: list[tuple[str, list[str], list[float], float]]) -> None:
        now = time.time()
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO base_evals VALUES (?, ?, ?, ?, ?, ?)",
                                [(model, c, json.dumps(a), json.dumps(g), acc, now) for c, a, g, acc in items])

    # --- trials
    def done_trials(self, round_: int | None = None) -> set[tuple]:
        q = "SELECT round, condition, context_id, sample, seed FROM trials"
        rows = self.db.execute(q + (" WHERE round=?" if round_ is not None else ""),
                               (() if round_ is None else (round_,)))
        return {tuple(r) for r in rows}

    def add_trial(self, key: tuple, *, status: str, reward: float, self_edit: str | None = None,
                  sequences: list[str] | None = None, answers: list[str] | None = None,
                  grades: list[float] | None = None, accuracy: float | None = None, error: str | None = None,
                  steps: int | None = None, final_loss: float | None = None, seconds: float | None = None) -> None:
        round_, condition, context_id, sample, seed = key
        with self.db:
            self.db.execute(
                "INSERT INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (round_, condition, context_id, sample, seed, status, self_edit,
                 json.dumps(sequences) if sequences is not None else None,
                 json.dumps(answers) if answers is not None else None,
                 json.dumps(grades) if grades is not None else None,
                 accuracy, reward, error, steps, final_loss, seconds, time.time()))

    def drop_trials(self, round_: int) -> None:
        """Forget a round's trials (a unit of work that must be redone whole, e.g. an interrupted stream)."""
        with self.db:
            self.db.execute("DELETE FROM trials WHERE round=?", (round_,))

    def trials(self, round_: int | None = None, condition: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM trials WHERE 1=1", []
        if round_ is not None:
            q += " AND round=?"; args.append(round_)
        if condition is not None:
            q += " AND condition=?"; args.append(condition)
        cur = self.db.execute(q + " ORDER BY round, condition, context_id, sample, seed", args)
        cols = [d[0] for d in cur.description]
        out = []
        for row in cur:
            rec = dict(zip(cols, row))
            for k in ("sequences", "answers", "grades"):
                if rec[k] is not None:
                    rec[k] = json.loads(rec[k])
            out.append(rec)
        return out
