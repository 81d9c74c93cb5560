"""Messages the dashboard's workers post to its screens."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message


class StoreChanged(Message):
    """New batches wait in the screen's queue. Bursts collapse into one queued message (the handler
    drains every waiting batch), so results arriving faster than the screen redraws never pile up."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StoreChanged)


class RunDirKnown(Message):
    """A launched run printed its run directory."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir


class LaunchFailed(Message):
    """A launched run ended before it started (bad recipe, no judge...)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
