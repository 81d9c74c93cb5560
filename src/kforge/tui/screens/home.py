"""The start screen: the runs under the runs folder to open, the recipes to start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header

from kforge.tui.model import STATUS_STYLE, list_recipes, list_runs
from kforge.tui.screens.base import KforgeScreen
from kforge.tui.widgets import KeyedTable

HELP = """
# Runs and recipes

| key | does |
| --- | --- |
| `enter` (runs) | open the run: attach to it, running or finished |
| `enter` (recipes) | start the recipe (`kforge run RECIPE` in its own process) and watch it |
| `tab` | switch between runs and recipes |
| `g` | read the runs folder again |
"""


class RunList(KeyedTable):
    COLUMNS = (("run", "run", 34), ("status", "status", 11), ("started", "started", 16),
               ("problems", "problems", 8), ("results", "results", 8), ("correct", "correct", 8))


class RecipeList(KeyedTable):
    COLUMNS = (("recipe", "recipe", 18), ("description", "description", 90))


class HomeScreen(KforgeScreen):
    HELP = HELP
    BINDINGS = [Binding("g", "refresh", "Refresh")]

    def __init__(self, runs_dir: Path, recipes_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs_dir = runs_dir
        self.recipes_dir = recipes_dir

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        with Vertical(id="home"):
            yield RunList(id="runs")
            yield RecipeList(id="recipes")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "kforge"
        self.sub_title = "runs and recipes"
        self.query_one("#runs").border_title = f"Runs in {self.runs_dir}  (enter: open)"
        self.query_one("#recipes").border_title = f"Recipes in {self.recipes_dir}  (enter: start)"
        self.action_refresh()

    def action_refresh(self) -> None:
        runs = self.query_one(RunList)
        recipes = self.query_one(RecipeList)
        with self.app.batch_update():
            runs.upsert((str(r.path), {"run": r.path.name, "status": Text(r.status, style=STATUS_STYLE.get(r.status, "")),
                                       "started": r.started_text(), "problems": str(r.problems),
                                       "results": str(r.results), "correct": str(r.correct)})
                        for r in list_runs(self.runs_dir))
            recipes.upsert((str(r.path), {"recipe": r.name, "description": r.description})
                           for r in list_recipes(self.recipes_dir))

    def on_screen_resume(self) -> None:
        self.action_refresh()

    @on(DataTable.RowSelected, "#runs")
    def _open_run(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.open_run(Path(event.row_key.value))  # type: ignore[attr-defined]

    @on(DataTable.RowSelected, "#recipes")
    def _start_recipe(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.launch(Path(event.row_key.value))  # type: ignore[attr-defined]
