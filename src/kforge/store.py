"""The run store: one SQLite database (WAL) per run directory, the single source of truth.

Every proposal, candidate, result and event is written the moment it arrives; the live table,
reports, the dashboard, resume and loggers all read from here. This module is the only one that
knows the schema (no SQL anywhere else) and it imports nothing else of kforge.

- :class:`RunReader` is a read-only handle (it has no write methods): the queries, each a typed row.
  SQLite's WAL mode lets it read a run while the engine writes it.
- :class:`Store` is the engine's handle: the same queries, and the writes.

The summary of a run and of each problem is computed from these rows in one place,
:func:`kforge.metrics.summarise`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, cast

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




def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a run's store."""
    return (Path(path) / DB_NAME).is_file()


class ProblemRow(TypedDict):
    id: str
    name: str | None
    level: int | None
    hash: str | None
    shape_name: str | None
    summary: dict[str, Any]  # the problem's summary as recorded (its path, dtype, shapes, ...)


class CandidateRecord(TypedDict):
    """A candidate as stored (``meta`` is JSON text)."""

    seq: int
    id: str
    proposal_id: str
    problem_id: str
    code: str
    code_hash: str
    generator: str | None
    model: str | None
    label: str | None
    parent_id: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    created: float | None
    meta: str | None


class CandidateRow(CandidateRecord):
    """A candidate with its result's ``status``, ``speedup`` and ``result`` (JSON text); all None while judged."""

    status: str | None
    speedup: float | None
    result: str | None


class ProposalRow(TypedDict):
    """A proposal as stored (``params`` is JSON text; ``outcome`` None until its generation came back)."""

    seq: int
    id: str
    problem_id: str
    step: int
    seed: int
    parent_id: str | None
    params: str | None
    created: float | None
    outcome: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float


class CandidateInfo(TypedDict):
    """What the dashboard shows of a candidate beside its result (no code)."""

    parent_id: str | None
    generator: str | None
    model: str | None
    label: str | None
    island: str | None  # the evolution search's island, from the proposal (or the generation's meta)
    generation: str | None


class CandidateView(TypedDict):
    """One candidate in full: its row, its result (None while judged) and its proposal's params."""

    id: str
    problem_id: str
    proposal_id: str
    code: str
    label: str | None
    generator: str | None
    model: str | None
    parent_id: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    meta: dict[str, Any]
    params: dict[str, Any]
    status: str | None
    speedup: float | None
    result: dict[str, Any] | None


class RetimeRow(TypedDict):
    """A re-timing of a judged candidate; ``status``, ``verdict`` and ``result`` are None until judged."""

    id: str
    candidate_id: str
    problem_id: str
    first_speedup: float | None
    trials: int | None
    status: str | None
    speedup: float | None
    verdict: str | None
    result: dict[str, Any] | None


class RunCounts(TypedDict):
    problems: int
    candidates: int
    results: int
    correct: int


class Usage(TypedDict):
    tokens_in: int
    tokens_out: int
    tokens: int
    cost_usd: float


def _loads(text: str | None, default: Any = None) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


class RunReader:
    """A run's store opened read-only: every query, no write (a write could not take a lock anyway).

    Each query is its own short read transaction (autocommit), so a reader never holds a snapshot
    that blocks the engine's writes."""

    db: sqlite3.Connection
    run_dir: Path

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / DB_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{self.run_dir} is not a kforge run directory (no {DB_NAME})")
        self._connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)

    def _connect(self, target: str | Path, uri: bool = False, timeout: float = 30) -> None:
        self.db = sqlite3.connect(target, uri=uri, timeout=timeout, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta / state ---------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def metas(self, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Every meta value (or those of ``keys``), parsed."""
        if keys is None:
            rows = self.db.execute("SELECT key, value FROM meta")
        else:
            rows = self.db.execute(f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(keys))})", keys)
        return {r[0]: json.loads(r[1]) for r in rows}

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def usage(self) -> Usage:
        """Tokens and dollars every generation cost (paid even when no candidate came)."""
        row = self.db.execute("SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), "
                              "COALESCE(SUM(cost_usd), 0) FROM proposals").fetchone()
        return Usage(tokens_in=int(row[0]), tokens_out=int(row[1]), tokens=int(row[0]) + int(row[1]),
                     cost_usd=round(float(row[2]), 6))

    # -- rows -----------------------------------------------------------------------------------
    def problems(self) -> list[ProblemRow]:
        return [ProblemRow(id=r[0], name=r[1], level=r[2], hash=r[3], shape_name=r[4], summary=_loads(r[5], {}))
                for r in self.db.execute("SELECT id, name, level, hash, shape_name, summary FROM problems ORDER BY rowid")]

    def counts(self) -> RunCounts:
        """How many problems, candidates, results and correct results the run holds."""
        res = self.db.execute("SELECT COUNT(*), COALESCE(SUM(status = 'correct'), 0) FROM results").fetchone()
        return RunCounts(problems=int(self.db.execute("SELECT COUNT(*) FROM problems").fetchone()[0]),
                         candidates=int(self.db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]),
                         results=int(res[0]), correct=int(res[1]))

    def candidates(self, problem_id: str | None = None) -> list[CandidateRow]:
        q = ("SELECT c.*, r.status, r.speedup, r.result FROM candidates c LEFT JOIN results r "
             "ON r.candidate_id = c.id")
        args: tuple[Any, ...] = ()
        if problem_id:
            q += " WHERE c.problem_id = ?"
            args = (problem_id,)
        return [cast(CandidateRow, dict(r)) for r in self.db.execute(q + " ORDER BY c.seq", args)]

    def candidate_by_hash(self, problem_id: str, code_hash: str) -> CandidateRecord | None:
        """The first candidate of a problem with this code hash (the engine's dedup)."""
        row = self.db.execute("SELECT * FROM candidates WHERE problem_id = ? AND code_hash = ? ORDER BY seq LIMIT 1",
                              (problem_id, code_hash)).fetchone()
        return cast(CandidateRecord, dict(row)) if row else None

    def candidate(self, candidate_id: str) -> CandidateRecord | None:
        row = self.db.execute("SELECT * FROM candidates WHERE id = ?", (candidate_id,)).fetchone()
        return cast(CandidateRecord, dict(row)) if row else None

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

    def retimes(self, finished: bool = False) -> list[RetimeRow]:
        """Every re-timing in the order asked (with ``finished``, only those judged)."""
        try:
            rows = self.db.execute("SELECT id, candidate_id, problem_id, first_speedup, trials, status, speedup, "
                                   "verdict, result FROM retimes ORDER BY seq").fetchall()
        except sqlite3.OperationalError:  # a schema-1 store opened read-only: it has none
            return []
        out = [RetimeRow(id=r[0], candidate_id=r[1], problem_id=r[2], first_speedup=r[3], trials=r[4], status=r[5],
                         speedup=r[6], verdict=r[7], result=_loads(r[8])) for r in rows]
        return [r for r in out if r["verdict"] is not None] if finished else out

    def results(self) -> list[dict[str, Any]]:
        """Every result in the order recorded: the EvalResult's fields, with ``candidate_id``."""
        return [json.loads(r[0]) | {"candidate_id": r[1]}
                for r in self.db.execute("SELECT result, candidate_id FROM results ORDER BY seq")]

    def proposals(self) -> list[ProposalRow]:
        return [cast(ProposalRow, dict(r)) for r in self.db.execute("SELECT * FROM proposals ORDER BY seq")]

    def events(self, after_seq: int = 0, limit: int = -1, types: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Events after ``after_seq`` in order (at most ``limit``; only ``types`` if given), each with its ``seq``."""
        where = f" AND type IN ({','.join('?' * len(types))})" if types else ""
        rows = self.db.execute(f"SELECT data, seq FROM events WHERE seq > ?{where} ORDER BY seq LIMIT ?",
                               (after_seq, *types, limit))
        return [json.loads(r[0]) | {"seq": r[1]} for r in rows]

    def started(self) -> float | None:
        """When the run started: its first ``run_started`` event, else the ``started`` meta."""
        row = self.db.execute("SELECT ts FROM events WHERE type = 'run_started' ORDER BY seq LIMIT 1").fetchone()
        if row is not None:
            return float(row[0])
        started = self.get_meta("started")
        return float(started) if started is not None else None

    def result_times(self) -> dict[str, float]:
        """When each candidate's result was recorded: its ``result`` event's time (the store's timeline)."""
        rows = self.db.execute("SELECT json_extract(data, '$.candidate'), ts FROM events WHERE type = 'result'")
        return {r[0]: float(r[1]) for r in rows if r[0] is not None}

    def candidate_infos(self, ids: list[str]) -> dict[str, CandidateInfo]:
        """What the dashboard shows of each candidate beside its result (never the code, nor a search's
        params, which can hold whole programs: only the island and the generation out of them)."""
        out: dict[str, CandidateInfo] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = ("SELECT c.id, c.parent_id, c.generator, c.model, c.label, "
                 "COALESCE(json_extract(p.params, '$.island'), json_extract(c.meta, '$.island')), "
                 "json_extract(p.params, '$.generation') FROM candidates c "
                 "LEFT JOIN proposals p ON p.id = c.proposal_id WHERE c.id IN (" + ",".join("?" * len(chunk)) + ")")
            for r in self.db.execute(q, chunk):
                out[r[0]] = CandidateInfo(parent_id=r[1], generator=r[2], model=r[3], label=r[4],
                                          island=None if r[5] is None else str(r[5]),
                                          generation=None if r[6] is None else str(r[6]))
        return out

    def candidate_view(self, candidate_id: str) -> CandidateView | None:
        """One candidate with its code, result and proposal params, or None."""
        row = self.db.execute(
            "SELECT c.id, c.problem_id, c.proposal_id, c.code, c.label, c.generator, c.model, c.parent_id, "
            "c.tokens_in, c.tokens_out, c.cost_usd, c.meta, p.params, r.status, r.speedup, r.result "
            "FROM candidates c LEFT JOIN results r ON r.candidate_id = c.id "
            "LEFT JOIN proposals p ON p.id = c.proposal_id WHERE c.id = ?", (candidate_id,)).fetchone()
        if row is None:
            return None
        meta, params = _loads(row[11], {}), _loads(row[12], {})
        return CandidateView(id=row[0], problem_id=row[1], proposal_id=row[2], code=row[3], label=row[4],
                             generator=row[5], model=row[6], parent_id=row[7], tokens_in=int(row[8] or 0),
                             tokens_out=int(row[9] or 0), cost_usd=float(row[10] or 0.0),
                             meta=meta if isinstance(meta, dict) else {},
                             params=params if isinstance(params, dict) else {}, status=row[13], speedup=row[14],
                             result=_loads(row[15]))

    def best_correct(self, problem_id: str, exclude: str | None = None) -> tuple[str, str] | None:
        """(id, code) of the problem's fastest correct candidate (first judged among equals), or None."""
        row = self.db.execute(
            "SELECT c.id, c.code FROM candidates c JOIN results r ON r.candidate_id = c.id WHERE c.problem_id = ? "
            "AND r.status = 'correct' AND c.id != ? ORDER BY r.speedup DESC, c.seq LIMIT 1",
            (problem_id, exclude or "")).fetchone()
        return (row[0], row[1]) if row is not None else None


class Store(RunReader):
    """The engine's handle on a run's store: the reader's queries, and the writes."""

    def __init__(self, run_dir: str | Path, create: bool = False) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / DB_NAME
        if not create and not path.exists():
            raise FileNotFoundError(f"{self.run_dir} is not a kforge run directory (no {DB_NAME})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if create:
            self.db.executescript(_SCHEMA)
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'retimes'").fetchone() is None:
            self.db.executescript(_RETIMES)
            self.set_meta("schema_version", SCHEMA_VERSION)

    @property
    def in_transaction(self) -> bool:
        """Whether writes are open in :meth:`transaction` (not yet committed)."""
        return self.db.in_transaction

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

    def set_state(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (key, json.dumps(value)))

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
