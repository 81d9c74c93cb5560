"""Small panels of label/value rows: the run's headline figures and its budgets."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static


class KeyValuePanel(Static):
    def show(self, rows: Sequence[tuple[str, str]]) -> None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for key, value in rows:
            grid.add_row(Text(key), Text(value))
        self.update(grid)


class BudgetPanel(Static):
    BAR = 12

    def show(self, rows: Sequence[tuple[str, str, str, str, float | None]]) -> None:
        if not rows:
            self.update(Text("no budget set in the recipe", style="dim"))
            return
        grid = Table.grid(padding=(0, 1))
        for _ in range(4):
            grid.add_column(no_wrap=True)
        grid.add_row(Text("budget", style="bold"), Text("used", style="bold"), Text("", style="bold"),
                     Text("left", style="bold"))
        for key, used, limit, left, frac in rows:
            bar = Text()
            if frac is not None:
                full = round(frac * self.BAR)
                style = "red" if frac >= 1 else "yellow" if frac >= 0.8 else "green"
                bar.append("█" * full, style=style)
                bar.append("░" * (self.BAR - full), style="dim")
            grid.add_row(Text(key), Text(f"{used} / {limit}"), bar, Text(left))
        self.update(grid)
