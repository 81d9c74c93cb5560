"""What every dashboard screen shares: one handler for failed workers, and its help text."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState


class KforgeScreen(Screen[None]):
    HELP: ClassVar[str] = ""

    @on(Worker.StateChanged)
    def _on_worker_state(self, event: Worker.StateChanged) -> None:
        """Workers run with exit_on_error=False: a failure is shown, never a crash of the dashboard."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            what = event.worker.description or event.worker.name
            self.app.notify(f"{what} failed: {type(error).__name__}: {error}", severity="error", timeout=15)
