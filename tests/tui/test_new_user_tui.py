"""The dashboard defects a new user met (issue 21), each pinned by a test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_app import SIZE, attached, run_screen, wait_for
from tui_runs import RUN_NAME

from kforge.metrics import ProblemSummary
from kforge.tui.app import KforgeApp
from kforge.tui.launch import LaunchedRun
from kforge.tui.model import RunState, classify_target
from kforge.tui.screens import RunScreen

pytestmark = pytest.mark.anyio


async def test_a_broken_recipe_says_it_did_not_start_everywhere_and_exits_non_zero(
        tmp_path: Path, launch_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[eval]\ntrials = 1\n")
    app = KforgeApp(bad, poll_interval=0.05, launch_env=launch_env)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = run_screen(app)
        await wait_for(pilot, lambda: screen.state.status == "failed", timeout=60, what="the launch to fail")
        await pilot.pause()
        assert "starting" not in str(screen.title) and "did not start" in str(screen.title)
        assert "did not start" in str(screen.sub_title)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == 2


def test_an_empty_best_so_far_draws_nothing() -> None:
    state = RunState()
    state.problems["relu"] = ProblemSummary("relu")
    assert state.sparkline("relu") == []
    assert state.sparkline("unknown") == []


def test_queued_candidates_are_not_called_judging() -> None:
    state = RunState()
    st = ProblemSummary("relu")
    st.in_flight = 3
    text = str(state.problem_status(st))
    assert "judging 3" not in text and "3" in text


async def test_stop_run_leaves_the_footer_once_the_run_is_over(finished_run: Path, tmp_path: Path) -> None:
    app = KforgeApp(finished_run, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        screen.launch = LaunchedRun(tmp_path / "r.toml")  # a launched run that is no longer running
        assert not screen.check_action("stop_run", ())


def test_only_toml_files_are_recipes(tmp_path: Path) -> None:
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match="recipe"):
        classify_target(png)
    toml = tmp_path / "r.toml"
    toml.write_text("")
    assert classify_target(toml) == "recipe"


@pytest.mark.parametrize("args", [["tui", "{recipe}"], ["run", "{recipe}", "--tui"]])
def test_no_terminal_no_escape_codes(args: list[str], tmp_path: Path, builtin_registry: object) -> None:
    from kforge.cli import cli

    recipe = tmp_path / "r.toml"
    recipe.write_text("")
    res = CliRunner().invoke(cli, [a.format(recipe=recipe) for a in args])
    assert res.exit_code == 2, res.output
    assert "\x1b" not in res.output and "terminal" in res.stderr


def test_after_the_dashboard_the_outcome_summary_and_run_dir(runs_root: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from kforge.commands.tui import report_launches

    run_dir = runs_root / "runs" / RUN_NAME
    launched = LaunchedRun(runs_root / "r.toml")
    launched.args = [sys.executable, "-c", "raise SystemExit(1)"]
    launched.start()
    launched.wait(30)
    launched.run_dir = run_dir
    assert report_launches([launched]) == 1
    out = capsys.readouterr()
    assert str(run_dir) in out.out and "Summary" in out.out
