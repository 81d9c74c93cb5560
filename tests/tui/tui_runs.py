"""The run the dashboard and report tests look at.

A real quickstart run (``data/quickstart_run.json``, dumped from its store by ``data/make_fixture.py``),
written back into a fresh run directory with the real :class:`Store` calls the engine makes, one event
at a time, so a test can also stop half-way and watch the rest arrive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kforge.store import Store

DATA = Path(__file__).parent / "data" / "quickstart_run.json"
RUN_NAME = "quickstart-20261125-104709"
REPO = Path(__file__).resolve().parents[2]
RELU_CORRECT = REPO / "recipes" / "quickstart" / "candidates" / "relu" / "correct.py"


def load_dump() -> dict[str, Any]:
    return json.loads(DATA.read_text())


class RunReplay:
    """Writes the dumped run into ``run_dir`` as the engine wrote it: records and their event together."""

    def __init__(self, run_dir: Path, dump: dict[str, Any] | None = None) -> None:
        self.run_dir = run_dir
        self.d = dump or load_dump()
        self.events = list(self.d["events"])
        self.pos = 0
        self.proposals = {p["id"]: p for p in self.d["proposals"]}
        self.candidates = {c["id"]: c for c in self.d["candidates"]}
        self.results = {r["candidate_id"]: r for r in self.d["results"]}
        run_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(run_dir, create=True)
        meta = self.d["meta"]
        for key in ("recipe", "name", "started"):
            self.store.set_meta(key, meta[key])
        self.store.set_meta("status", "running")
        (run_dir / "recipe.json").write_text(json.dumps(meta["recipe"], indent=2))
        (run_dir / "candidates").mkdir(exist_ok=True)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.events)

    def write(self, n: int | None = None) -> int:
        """Write the next ``n`` events (all that are left by default); returns how many were written."""
        stop = len(self.events) if n is None else min(self.pos + n, len(self.events))
        written = 0
        while self.pos < stop:
            event = dict(self.events[self.pos])
            self.pos += 1
            written += 1
            with self.store.transaction():
                self._records_for(event)
                self.store.add_event(event)
        if self.done:
            self.finish()
        return written

    def _records_for(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        if kind == "run_started":
            (self.run_dir / "provenance.json").write_text(json.dumps(self.d["provenance"], indent=2))
            self.store.set_meta("provenance", self.d["provenance"])
            for p in self.d["problems"]:
                self.store.add_problem(p["summary"], p["shape_name"])
        elif kind == "proposal":
            p = self.proposals[e["proposal"]]
            self.store.add_proposal(p)
            # outcomes without a candidate (replay ran out) are known as soon as the proposal is
            if not str(p.get("outcome") or "").startswith("candidate"):
                self.store.set_proposal_outcome(p["id"], p["outcome"] or "", p["tokens_in"], p["tokens_out"],
                                                p["cost_usd"])
        elif kind == "candidate" and not e.get("duplicate"):
            c = self.candidates[e["candidate"]]
            self.store.add_candidate(c)
            p = self.proposals[c["proposal_id"]]
            self.store.set_proposal_outcome(p["id"], p["outcome"], p["tokens_in"], p["tokens_out"], p["cost_usd"])
            (self.run_dir / "candidates" / f"{c['id']}.py").write_text(c["code"])
        elif kind == "result":
            self.store.add_result(e["candidate"], self.results[e["candidate"]])
            self.store.set_meta("elapsed_s", round(e["ts"] - self.d["meta"]["started"], 3))

    def finish(self) -> None:
        meta = self.d["meta"]
        for key, value in self.d["state"].items():
            self.store.set_state(key, value)
        self.store.set_meta("summary", meta["summary"])
        self.store.set_meta("elapsed_s", meta["elapsed_s"])
        self.store.set_meta("status", meta["status"])

    def close(self) -> None:
        self.store.close()


def make_run(parent: Path, name: str = RUN_NAME, events: int | None = None) -> RunReplay:
    replay = RunReplay(parent / name)
    replay.write(events)
    return replay
