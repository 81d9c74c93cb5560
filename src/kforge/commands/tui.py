"""``kforge tui [RUN_DIR | RECIPE]``: the dashboard.

Textual is imported inside the functions only, so importing this module (as ``kforge.cli`` does)
loads nothing of it: ``kforge run`` and ``kforge run --json`` stay free of Textual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click


def run_tui(target: str | Path | None = None, *, overrides: Sequence[str] = (), extra_args: Sequence[str] = (),
            runs_dir: str | Path = "runs", recipes_dir: str | Path = "recipes") -> int:
    """Open the dashboard on a run directory, a recipe (started as ``kforge run RECIPE --json`` in its
    own process, with ``--set`` ``overrides`` and ``extra_args`` such as ``["--run-dir", DIR]``), or
    nothing (the list of runs and recipes). Returns the exit code. ``kforge run RECIPE --tui`` calls
    ``run_tui(RECIPE, overrides=..., extra_args=...)``."""
    from kforge.tui.app import KforgeApp
    from kforge.tui.model import classify_target

    try:
        classify_target(target)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 2
    problem = no_terminal()
    if problem:
        click.echo(f"Error: {problem}", err=True)
        return 2
    app = KforgeApp(target, runs_dir=runs_dir, recipes_dir=recipes_dir, overrides=overrides, extra_args=extra_args)
    code = app.run()
    outcome = report_launches(app.launches)
    return outcome if outcome is not None else int(code or 0)


def no_terminal() -> str | None:
    """Why the dashboard cannot open here (no terminal to draw on: it would write escape codes into a
    pipe and wait for keys that never come), or None."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return None
    return ("the dashboard needs a terminal (stdin and stdout are not both one). Without a terminal, "
            "kforge run RECIPE prints one line per verdict, and --json one event per line.")


def report_launches(launches: Sequence[Any]) -> int | None:
    """After the dashboard closed: for each run it started, where it is and how it ended (its summary
    on stdout); the exit code of the last one that ended (None: none ended, or none was started)."""
    from kforge.cli import _stdout_console
    from kforge.output import print_summary
    from kforge.store import RunReader, is_run_dir

    code: int | None = None
    for run in launches:
        if run.running():
            where = f" in {run.run_dir}" if run.run_dir is not None else ""
            click.echo(f"kforge: the run of {run.recipe} goes on in the background (pid {run.pid}){where}; "
                       f"watch it again with: kforge tui {run.run_dir or ''}".rstrip(), err=True)
            continue
        code = run.returncode()
        if run.run_dir is None:
            tail = run.stderr_tail()
            click.echo(f"kforge: the run of {run.recipe} did not start (exit code {code})"
                       + (f":\n{tail}" if tail else ""), err=True)
            continue
        summary = None
        if is_run_dir(run.run_dir):
            with RunReader(run.run_dir) as reader:
                summary = reader.get_meta("summary")
        if summary:
            print_summary(_stdout_console(), {**summary, "run_dir": str(run.run_dir)})
        else:
            click.echo(f"run directory: {run.run_dir} (no summary: the run ended with exit code {code})")
    return code


@click.command("tui")
@click.argument("target", required=False, type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a value of the RECIPE being started (repeatable).")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="The folder of runs the start screen lists.")
@click.option("--recipes", "recipes_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("recipes"),
              show_default=True, help="The folder of recipes the start screen lists.")
def tui_cmd(target: Path | None, overrides: tuple[str, ...], runs_dir: Path, recipes_dir: Path) -> None:
    """Watch runs in a terminal dashboard.

    TARGET is a run directory (running or finished: the dashboard reads its store and can be opened
    and closed at will while the run goes on) or a recipe (started in its own process, then watched).
    Without TARGET it lists the runs under --runs and the recipes under --recipes."""
    sys.exit(run_tui(target, overrides=overrides, runs_dir=runs_dir, recipes_dir=recipes_dir))
