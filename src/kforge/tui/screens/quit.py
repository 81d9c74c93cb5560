"""Asked on quit while a run started from the dashboard is still going."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class QuitScreen(ModalScreen[str]):
    """Dismisses with "leave" (quit, the run goes on), "stop" (stop it cleanly, then quit) or "cancel"."""

    BINDINGS = [Binding("l", "choose('leave')", "Leave it running"), Binding("s", "choose('stop')", "Stop it"),
                Binding("escape,c", "choose('cancel')", "Cancel")]

    def __init__(self, runs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = runs

    def compose(self) -> ComposeResult:
        what = "A run started here is" if self.runs == 1 else f"{self.runs} runs started here are"
        with Vertical(id="quit-box"):
            yield Label(f"{what} still going. It does not need the dashboard: you can leave it running and "
                        "attach again later with kforge tui RUN_DIR.", id="quit-text")
            with Horizontal(id="quit-buttons"):
                yield Button("Leave it running (l)", id="leave", variant="primary")
                yield Button("Stop it cleanly (s)", id="stop", variant="warning")
                yield Button("Cancel (esc)", id="cancel")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(str(event.button.id))

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
