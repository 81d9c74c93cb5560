"""A candidate's evaluation, section by section."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from kforge.tui.model import STATUS_STYLE, CandidateDetail


class EvaluationView(Static):
    def show(self, detail: CandidateDetail) -> None:
        parts: list[RenderableType] = []
        for title, rows in detail.evaluation():
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True, min_width=24)
            grid.add_column(overflow="fold")
            for key, value in rows:
                style = STATUS_STYLE.get(value, "") if key == "status" else ""
                grid.add_row(Text(key), Text(value, style=style))
            parts += [Text(title, style="bold underline"), grid, Text("")]
        self.update(Group(*parts))
