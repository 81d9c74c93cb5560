"""Built-in loggers: a JSONL file of every event, always on in the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kforge.api import Logger
from kforge.hookspecs import hookimpl


class JsonlLogger(Logger):
    name = "jsonl"
    description = "every event as one JSON line in <run_dir>/events.jsonl (always on)"

    def setup(self, run_dir: Any, recipe: dict[str, Any]) -> None:
        self.fh = open(Path(run_dir) / "events.jsonl", "a", buffering=1)

    def log(self, event: dict[str, Any]) -> None:
        self.fh.write(json.dumps(event, default=str) + "\n")

    def close(self) -> None:
        self.fh.close()


@hookimpl
def register_loggers(register):
    register(JsonlLogger)
