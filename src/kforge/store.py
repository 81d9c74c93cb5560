"""The run store: one SQLite database (WAL) per run directory, the single source of truth.

Every proposal, candidate, result and event is written the moment it arrives; the live table,
reports, the dashboard and resume all read from here.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: the retimes table
DB_NAME = "kforge.db"

# A re-timing of a judged candidate (a search's winner judged again with fresh input seeds). Added in
# schema 2; a store of schema 1 gets it when a writer opens it (e.g. kforge resume).
_RETIMES = """
CREATE TABLE IF NOT EXISTS retimes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, candidate_id TEXT NOT NULL,
    problem_id TEXT NOT NULL, first_speedup REAL, trials INTEGER, created REAL, status TEXT, speedup REAL,
    verdict TEXT, result TEXT, finished REAL);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS problems (
    id TEXT PRIMARY KEY, name TEXT, level INTEGER, hash TEXT, shape_name TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS proposals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, problem_id TEXT NOT NULL,
    step INTEGER, seed INTEGER, parent_id TEXT, params TEXT, created REAL, outcome TEXT,
    tokens_in INTEGER DEFAULT 0, tokens_out INTEGER DEFAULT 0, cost_usd REAL DEFAULT 0);
CREATE TABLE IF NOT EXISTS candidates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, proposal_id TEXT NOT NULL,
    problem_id TEXT NOT NULL, code TEXT NOT NULL, code_hash TEXT NOT NULL, generator TEXT, model TEXT,
    label TEXT, parent_id TEXT, tokens_in INTEGER DEFAULT 0, tokens_out INTEGER DEFAULT 0,
    cost_usd REAL DEFAULT 0, created REAL, meta TEXT);
CREATE INDEX IF NOT EXISTS candidates_hash ON candidates(problem_id, code_hash);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, candidate_id TEXT UNIQUE NOT NULL, problem_id TEXT NOT NULL,
    status TEXT NOT NULL, speedup REAL, device TEXT, result TEXT NOT NULL, created REAL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + _RETIMES


class Store:
    def __init__(self, run_dir: str | Path, create: bool = False) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / DB_NAME
        if not create and not path.exists():
            raise FileNotFoundError(f"{self.run_dir} is not a kforge run directory (no {DB_NAME})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if create:
            self.db.executescript(_SCHEMA)
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'retimes'").fetchone() is None:
            self.db.executescript(_RETIMES)
            self.set_meta("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so a crash leaves all or none of them (e.g. a result and the search state)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta / state ---------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_state(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- records --------------------------------------------------------------------------------
    def add_problem(self, summary: dict[str, Any], shape_name: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO problems(id, name, level, hash, shape_name, summary) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (summary["id"], summary["name"], summary.get("level"), summary.get("hash"), shape_name,
                         json.dumps(summary)))

    def add_proposal(self, p: dict[str, Any]) -> None:
        self.db.execute("INSERT OR IGNORE INTO proposals(id, problem_id, step, seed, parent_id, params, created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (p["id"], p["problem_id"], p["step"], p["seed"], p.get("parent_id"),
                         json.dumps(p.get("params", {})), time.time()))

    def set_proposal_outcome(self, proposal_id: str, outcome: str, tokens_in: int = 0, tokens_out: int = 0,
                             cost_usd: float = 0.0) -> None:
        """What became of a proposal, and what its generation cost (paid even when no candidate came)."""
        self.db.execute("UPDATE proposals SET outcome = ?, tokens_in = ?, tokens_out = ?, cost_usd = ? WHERE id = ?",
                        (outcome, tokens_in, tokens_out, cost_usd, proposal_id))

    def usage(self) -> dict[str, Any]:
        row = self.db.execute("SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), "
                              "COALESCE(SUM(cost_usd), 0) FROM proposals").fetchone()
        return {"tokens_in": int(row[0]), "tokens_out": int(row[1]), "tokens": int(row[0]) + int(row[1]),
                "cost_usd": round(float(row[2]), 6)}

    def add_candidate(self, c: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO candidates(id, proposal_id, problem_id, code, code_hash, generator, model, label, "
            "parent_id, tokens_in, tokens_out, cost_usd, created, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (c["id"], c["proposal_id"], c["problem_id"], c["code"], c["code_hash"], c.get("generator"),
             c.get("model"), c.get("label"), c.get("parent_id"), c.get("tokens_in", 0), c.get("tokens_out", 0),
             c.get("cost_usd", 0.0), time.time(), json.dumps(c.get("meta") or {}, default=str)))

    def add_result(self, candidate_id: str, result: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO results(candidate_id, problem_id, status, speedup, device, result, "
                        "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (candidate_id, result["problem_id"], result["status"], result.get("speedup"),
                         result.get("device"), json.dumps(result), time.time()))

    def add_retime(self, r: dict[str, Any]) -> None:
        """A re-timing asked for (its result comes later: ``status`` is NULL until then)."""
        self.db.execute("INSERT OR IGNORE INTO retimes(id, candidate_id, problem_id, first_speedup, trials, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (r["id"], r["candidate_id"], r["problem_id"], r.get("first_speedup"), r.get("trials"),
                         time.time()))

    def set_retime_result(self, retime_id: str, result: dict[str, Any], verdict: str | None) -> None:
        self.db.execute("UPDATE retimes SET status = ?, speedup = ?, verdict = ?, result = ?, finished = ? WHERE id = ?",
                        (result["status"], result.get("speedup"), verdict, json.dumps(result), time.time(),
                         retime_id))

    def add_event(self, event: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO events(ts, type, data) VALUES (?, ?, ?)",
                        (event.get("ts", time.time()), event["event"], json.dumps(event)))

    # -- queries --------------------------------------------------------------------------------
    def problems(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT id, name, level, hash, shape_name FROM problems ORDER BY rowid")]

    def candidates(self, problem_id: str | None = None) -> list[dict[str, Any]]:
        q = ("SELECT c.*, r.status, r.speedup, r.result FROM candidates c LEFT JOIN results r "
             "ON r.candidate_id = c.id")
        args: tuple[Any, ...] = ()
        if problem_id:
            q += " WHERE c.problem_id = ?"
            args = (problem_id,)
        return [dict(r) for r in self.db.execute(q + " ORDER BY c.seq", args)]

    def candidate_by_hash(self, problem_id: str, code_hash: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM candidates WHERE problem_id = ? AND code_hash = ? ORDER BY seq LIMIT 1",
                              (problem_id, code_hash)).fetchone()
        return dict(row) if row else None

    def candidate(self, candidate_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM candidates WHERE id = ?", (candidate_id,)).fetchone()
        return dict(row) if row else None

    def proposal_params(self, candidate_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The params of the proposal behind each candidate, without the code they may carry (parents,
        inspirations): ``island``, ``generation``, ``edit``, ... (scalars only)."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(candidate_ids), 500):
            chunk = candidate_ids[i:i + 500]
            q = ("SELECT c.id, p.params FROM candidates c JOIN proposals p ON p.id = c.proposal_id "
                 "WHERE c.id IN (" + ",".join("?" * len(chunk)) + ")")
            for cid, params in self.db.execute(q, chunk):
                data = json.loads(params or "{}")
                out[cid] = {k: v for k, v in data.items() if isinstance(v, (int, float, bool)) or
                            (isinstance(v, str) and len(v) <= 200)} if isinstance(data, dict) else {}
        return out

    def retimes(self) -> list[dict[str, Any]]:
        """Every re-timing, in the order asked: the row's columns, ``result`` parsed (None while judged)."""
        try:
            rows = self.db.execute("SELECT * FROM retimes ORDER BY seq").fetchall()
        except sqlite3.OperationalError:  # a schema-1 store opened read-only: it has none
            return []
        out = []
        for r in rows:
            d = dict(r)
            d["result"] = json.loads(d["result"]) if d.get("result") else None
            out.append(d)
        return out

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) | {"candidate_id": r[1]}
                for r in self.db.execute("SELECT result, candidate_id FROM results ORDER BY seq")]

    def proposals(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM proposals ORDER BY seq")]

    def events(self, after_seq: int = 0) -> list[dict[str, Any]]:
        return [json.loads(r[0]) | {"seq": r[1]}
                for r in self.db.execute("SELECT data, seq FROM events WHERE seq > ? ORDER BY seq", (after_seq,))]
