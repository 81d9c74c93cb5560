"""The run's event log, appended to as events arrive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from kforge.tui.model import LogLine


class EventLog(RichLog):
    """At most ``per_update`` lines are written per screen update: rendering a log line costs far more
    than folding its event, and nobody reads hundreds of lines a second. The rest are counted in one
    line (every event stays in the store and in events.jsonl)."""

    def __init__(self, per_update: int = 20, **kwargs: Any) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, highlight=False, auto_scroll=True, **kwargs)
        self.per_update = per_update
        self.skipped = 0

    def add(self, lines: Sequence[LogLine]) -> None:
        if len(lines) > self.per_update:
            skipped = len(lines) - self.per_update
            self.skipped += skipped
            self.write(Text(f"        … {skipped} more events (all of them are in the store and events.jsonl)",
                            style="dim"))
            lines = lines[-self.per_update:]
        for line in lines:
            self.write(line.render())
