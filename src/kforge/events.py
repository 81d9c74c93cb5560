"""Typed run events. One stream feeds the store, the live table, ``--json`` and logger plugins."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

RUN_STARTED = "run_started"
PROPOSAL = "proposal"
CANDIDATE = "candidate"
RESULT = "result"
BEST_IMPROVED = "best_improved"
RETIME = "retime"  # a judged candidate (a search's winner) judged again with fresh input seeds
SEARCH = "search"  # the search's metrics(), when they changed
BUDGET = "budget"
ERROR = "error"
SUMMARY = "summary"
RUN_FINISHED = "run_finished"
EVENT_TYPES = (RUN_STARTED, PROPOSAL, CANDIDATE, RESULT, BEST_IMPROVED, RETIME, SEARCH, BUDGET, ERROR, SUMMARY,
               RUN_FINISHED)

Sink = Callable[[dict[str, Any]], None]


def make(event: str, **data: Any) -> dict[str, Any]:
    assert event in EVENT_TYPES, event
    return {"event": event, "ts": round(time.time(), 3), **data}


class EventBus:
    """Delivers each event to every sink in order; a failing sink is reported, never fatal."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        self.errors: list[str] = []

    def subscribe(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def emit(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception as exc:  # noqa: BLE001 - a broken logger must not lose the run
                self.errors.append(f"{getattr(sink, '__qualname__', sink)}: {exc}")
