"""The help screen: the keys of the screen it was opened from."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

GENERAL = """
## Everywhere

| key | does |
| --- | --- |
| `?` | this help |
| `q` | quit (asks first if a run started here is still going) |
| `ctrl+p` | command palette |
| `tab` / `shift+tab` | next / previous pane |
| arrows, `pgup`/`pgdn`, `home`/`end` | move in a table |
| mouse | click a row to select it, scroll with the wheel |
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, text: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(self.text.strip() + "\n" + GENERAL)

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "Help (escape to close)"

    def action_close(self) -> None:
        self.dismiss(None)
