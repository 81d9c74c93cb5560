"""The kforge dashboard app: attach to a run directory, start a recipe and watch it, or pick either."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from kforge.tui.launch import LaunchedRun
from kforge.tui.model import classify_target
from kforge.tui.screens import HelpScreen, HomeScreen, QuitScreen, RunScreen
from kforge.tui.screens.base import KforgeScreen


class KforgeApp(App[int]):
    CSS_PATH = "kforge.tcss"
    TITLE = "kforge"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, target: str | Path | None = None, *, runs_dir: str | Path = "runs",
                 recipes_dir: str | Path = "recipes", overrides: Sequence[str] = (), extra_args: Sequence[str] = (),
                 poll_interval: float = 0.25, launch_env: dict[str, str] | None = None,
                 launch_cwd: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = Path(target) if target is not None else None
        self.kind = classify_target(self.target)
        self.runs_dir = Path(runs_dir)
        self.recipes_dir = Path(recipes_dir)
        self.overrides = list(overrides)
        self.extra_args = list(extra_args)
        self.poll_interval = poll_interval
        self.launch_env = launch_env
        self.launch_cwd = launch_cwd
        self.launches: list[LaunchedRun] = []

    def on_mount(self) -> None:
        self.push_screen(HomeScreen(self.runs_dir, self.recipes_dir))
        if self.kind == "run":
            assert self.target is not None
            self.open_run(self.target)
        elif self.kind == "recipe":
            assert self.target is not None
            self.launch(self.target, self.overrides, self.extra_args)

    # -- what the screens ask for -------------------------------------------------------------------
    def open_run(self, run_dir: Path) -> RunScreen:
        screen = RunScreen(run_dir=run_dir, poll_interval=self.poll_interval)
        self.push_screen(screen)
        return screen

    def launch(self, recipe: Path, overrides: Sequence[str] = (), extra_args: Sequence[str] = ()) -> RunScreen:
        """Start ``kforge run RECIPE --json`` in its own process and watch it."""
        run = LaunchedRun(recipe, overrides, extra_args, env=self.launch_env, cwd=self.launch_cwd)
        run.start()
        self.launches.append(run)
        screen = RunScreen(launch=run, poll_interval=self.poll_interval)
        self.push_screen(screen)
        return screen

    def running_launches(self) -> list[LaunchedRun]:
        return [r for r in self.launches if r.running()]

    # -- actions ------------------------------------------------------------------------------------
    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        text = self.screen.HELP if isinstance(self.screen, KforgeScreen) else ""
        self.push_screen(HelpScreen(text))

    def outcome(self) -> int:
        """The exit code of the last run this dashboard started that ended (0 if none did)."""
        codes = [r.returncode() for r in self.launches if not r.running()]
        return next((int(c) for c in reversed(codes) if c is not None), 0)

    async def action_quit(self) -> None:
        running = self.running_launches()
        if not running:
            self.exit(self.outcome())
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                for run in running:
                    run.stop()
                self.exit(0)
            elif choice == "leave":
                self.exit(0)

        if not isinstance(self.screen, QuitScreen):
            self.push_screen(QuitScreen(len(running)), chosen)
