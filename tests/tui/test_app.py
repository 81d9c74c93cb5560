"""The dashboard driven with ``App.run_test()`` and a ``Pilot``, on a real run's store."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import TabbedContent
from tui_runs import RUN_NAME, make_run

from kforge.store import RunReader as open_run
from kforge.tui.app import KforgeApp
from kforge.tui.messages import StoreChanged
from kforge.tui.screens import CandidateScreen, HelpScreen, HomeScreen, QuitScreen, RunScreen
from kforge.tui.widgets import CandidateTable, EventLog, KeyedTable, ProblemTable

pytestmark = pytest.mark.anyio
SIZE = (140, 42)


async def wait_for(pilot: Pilot, cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await pilot.pause(0.05)
    await pilot.pause()  # let what the change started (mounting a screen) finish


def run_screen(app: KforgeApp) -> RunScreen:
    screen = app.screen
    assert isinstance(screen, RunScreen), screen
    return screen


def cell(table: ProblemTable | CandidateTable, row: str, col: str) -> str:
    return str(table.get_cell(row, col))


async def attached(pilot: Pilot) -> RunScreen:
    app = pilot.app
    assert isinstance(app, KforgeApp)
    await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.state.finished, what="the run")
    await pilot.pause()
    return run_screen(app)


async def test_attach_to_a_finished_run_shows_one_row_per_problem(finished_run: Path) -> None:
    app = KforgeApp(finished_run, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        table = screen.query_one(ProblemTable)
        assert table.row_count == 3
        assert [cell(table, p, "problem") for p in ("relu", "softmax", "layernorm")] == ["relu", "softmax", "layernorm"]
        assert cell(table, "relu", "tried") == "5/1"
        assert cell(table, "layernorm", "tried") == "3/3"
        assert cell(table, "relu", "eager") == "0.0026x"
        assert cell(table, "relu", "first") == "9.0s"
        assert cell(table, "relu", "status") == "solved"
        assert screen.selected == "relu"
        cands = screen.query_one(CandidateTable)
        assert cands.row_count == 5
        assert cell(cands, "c0003", "status") == "runtime_error"
        assert screen.state.status == "finished"
        assert len(screen.query_one(EventLog).lines) > 10


async def test_navigate_to_a_candidate_and_see_its_diff_against_its_parent(finished_run: Path) -> None:
    app = KforgeApp(finished_run, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        await pilot.press("down", "down")
        assert screen.selected == "layernorm"
        cands = screen.query_one(CandidateTable)
        assert cands.row_count == 3
        assert cell(cands, "c0010", "parent") == "c0009"
        assert cell(cands, "c0010", "generator") == "tune"
        assert cell(cands, "c0010", "label") == "BLOCK_SIZE[min] 4096->1024"  # shown as written, not as markup
        await pilot.press("enter")  # problems -> candidates
        assert cands.has_focus
        await pilot.press("down", "down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CandidateScreen), what="the candidate screen")
        cand = app.screen
        assert isinstance(cand, CandidateScreen) and cand.detail is not None
        assert cand.detail.id == "c0010"
        assert cand.query_one(TabbedContent).active == "code"
        await pilot.press("2")
        assert cand.query_one(TabbedContent).active == "diff"
        assert "diff against its parent c0009" in str(cand.query_one("#diff-note").render())
        assert "-        BLOCK_SIZE = min(4096, triton.next_power_of_2(n_cols))" in cand.detail.diff
        assert "+        BLOCK_SIZE = min(1024, triton.next_power_of_2(n_cols))  # tuned: smaller blocks" in cand.detail.diff
        await pilot.press("3")
        assert cand.query_one(TabbedContent).active == "evaluation"
        sections = dict(cand.detail.evaluation())
        assert dict(sections["Verdict"])["status"] == "correct"
        assert dict(sections["Device"])["device"].startswith("CPU")
        assert "spread (p80-p20)/median" in dict(sections["Timing"])
        await pilot.press("P")  # its parent
        await wait_for(pilot, lambda: isinstance(app.screen, CandidateScreen) and app.screen.candidate_id == "c0009")
        await pilot.press("escape", "escape")
        assert app.screen is screen


async def test_a_failed_candidate_shows_its_error_and_guard(finished_run: Path) -> None:
    app = KforgeApp(finished_run, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        screen.open_candidate("c0007")
        await wait_for(pilot, lambda: isinstance(app.screen, CandidateScreen))
        cand = app.screen
        assert isinstance(cand, CandidateScreen) and cand.detail is not None
        detail = cand.detail
        verdict = dict(dict(detail.evaluation())["Verdict"])
        assert verdict["guard"] == "nonfinite"
        assert "NaN/Inf" in verdict["error"]
        # no parent: the diff compares with the problem's best correct candidate
        assert detail.base_id == "c0002"
        assert "no parent recorded" in detail.diff_note


async def test_b_opens_the_best_candidate_and_s_sorts_by_speedup(finished_run: Path) -> None:
    app = KforgeApp(finished_run, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        await pilot.press("down", "down")  # layernorm: the tuned child c0010 is its best
        await pilot.press("s")
        cands = screen.query_one(CandidateTable)
        order = [str(cands.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value) for i in range(cands.row_count)]
        speedups = [screen.state.candidates[c].speedup or 0 for c in order]
        assert speedups == sorted(speedups, reverse=True)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, CandidateScreen))
        best = app.screen
        assert isinstance(best, CandidateScreen)
        assert best.candidate_id == screen.state.problems["layernorm"].best_candidate == "c0010"


async def test_help_screen_and_mouse(finished_run: Path) -> None:
    app = KforgeApp(finished_run, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        await pilot.press("question_mark")
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        assert "open the candidate" in help_screen.text
        await pilot.press("escape")
        assert pilot.app.screen is screen
        # a click on a problem's row selects it (row 3 of the table: its header, relu, softmax)
        table = screen.query_one(ProblemTable)
        await pilot.click(ProblemTable, offset=(5, 3))
        await pilot.pause()
        assert screen.selected == "softmax", table.cursor_row


async def test_start_screen_lists_runs_and_recipes_and_opens_a_run(runs_root: Path) -> None:
    app = KforgeApp(None, runs_dir="runs", recipes_dir="recipes", poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        home = app.screen
        assert isinstance(home, HomeScreen)
        runs = home.query_one("#runs", KeyedTable)
        assert runs.row_count == 1
        assert str(runs.get_cell(str(Path("runs") / RUN_NAME), "status")) == "finished"
        assert home.query_one("#recipes", KeyedTable).row_count == 1
        await pilot.press("enter")
        screen = await attached(pilot)
        assert screen.run_dir == Path("runs") / RUN_NAME
        await pilot.press("escape")
        assert app.screen is home


async def test_attach_while_the_run_goes_on_updates_rows_in_place(tmp_path: Path) -> None:
    """Half the run is in the store when the dashboard attaches; the rest arrives while it watches.
    The rows are updated in place (no clearing), and the writer never waits on the dashboard."""
    replay = make_run(tmp_path, events=12)
    try:
        app = KforgeApp(replay.run_dir, poll_interval=0.02)
        changed: list[StoreChanged] = []
        async with app.run_test(size=SIZE, message_hook=lambda m: changed.append(m)
                                if isinstance(m, StoreChanged) else None) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.state.last_seq == 12)
            screen = run_screen(app)
            table = screen.query_one(ProblemTable)
            assert screen.state.status == "running"
            assert table.row_count == 3
            clears: list[bool] = []
            setattr(table, "clear", lambda *a, **k: clears.append(True))  # noqa: B010 - a spy on the instance
            relu_before = cell(table, "relu", "tried")
            slowest = 0.0
            while not replay.done:
                t0 = time.perf_counter()
                replay.write(3)
                slowest = max(slowest, time.perf_counter() - t0)
                await pilot.pause(0.03)
            await wait_for(pilot, lambda: screen.state.finished, what="the end of the run")
            await pilot.pause()
            assert not clears
            assert table.row_count == 3
            assert relu_before != cell(table, "relu", "tried") == "5/1"
            assert cell(table, "layernorm", "status") == "solved"
            assert slowest < 1.0  # the store took every write at once: the reader holds no lock
            assert 1 <= len(changed) <= 40
        # close and open again while the store is there: the same figures
        app2 = KforgeApp(replay.run_dir, poll_interval=0.02)
        async with app2.run_test(size=SIZE) as pilot:
            screen2 = await attached(pilot)
            assert cell(screen2.query_one(ProblemTable), "layernorm", "tried") == "3/3"
    finally:
        replay.close()


async def test_the_dashboard_never_writes_the_store(finished_run: Path) -> None:
    before = (finished_run / "kforge.db").stat().st_mtime_ns
    app = KforgeApp(finished_run, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        store = open_run(finished_run)
        try:
            # the dashboard's handle has no write methods, and its connection is read-only underneath
            assert not any(hasattr(store, m) for m in ("set_meta", "set_state", "add_result", "add_event"))
            with pytest.raises(Exception, match="readonly"):
                store.db.execute("INSERT INTO meta(key, value) VALUES ('x', '1')")
        finally:
            store.close()
        assert screen.state.n_results == 10
    assert (finished_run / "kforge.db").stat().st_mtime_ns == before


@pytest.mark.slow
async def test_launch_a_recipe_and_watch_it_to_the_end(tiny_recipe: Path, launch_env: dict[str, str]) -> None:
    app = KforgeApp(tiny_recipe, runs_dir=tiny_recipe.parent, recipes_dir=tiny_recipe.parent, poll_interval=0.1,
                    launch_env=launch_env)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = run_screen(app)
        assert screen.launch is not None
        await wait_for(pilot, lambda: screen.run_dir is not None, timeout=60, what="run_started")
        assert screen.run_dir is not None and screen.run_dir.parent == tiny_recipe.parent.parent / "tiny-runs"
        await wait_for(pilot, lambda: screen.state.finished, timeout=120,
                       what=f"the launched run to finish: {screen.launch.stderr_tail()}")
        await pilot.pause()
        table = screen.query_one(ProblemTable)
        assert cell(table, "relu", "status") == "solved"
        assert cell(table, "relu", "tried") == "1/1"
        assert cell(screen.query_one(CandidateTable), "c0001", "status") == "correct"
        assert screen.launch.wait(30) == 0
        await pilot.press("q")  # nothing is running any more: no question
        await pilot.pause()
    assert app.return_value == 0


@pytest.mark.slow
async def test_quitting_while_a_launched_run_goes_on_asks_and_can_stop_it(tiny_recipe: Path,
                                                                          launch_env: dict[str, str]) -> None:
    app = KforgeApp(tiny_recipe, poll_interval=0.1, launch_env=launch_env)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = run_screen(app)
        await wait_for(pilot, lambda: screen.run_dir is not None, timeout=60, what="run_started")
        run_dir = screen.run_dir
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="the question")
        await pilot.press("s")
        await pilot.pause()
    launched = app.launches[0]
    assert launched.wait(60) == 130  # interrupted: a clean stop
    assert run_dir is not None
    store = open_run(run_dir)
    try:
        assert store.get_meta("status") == "interrupted"
    finally:
        store.close()


async def test_a_recipe_that_cannot_start_says_why(tmp_path: Path, launch_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[generator]\nname = "no-such-generator"\n')
    app = KforgeApp(bad, poll_interval=0.05, launch_env=launch_env)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = run_screen(app)
        await wait_for(pilot, lambda: screen.state.status == "failed", timeout=60, what="the launch to fail")
        assert screen.launch_error is not None
        assert "exited with code 2" in screen.launch_error
        assert "no-such-generator" in screen.launch_error
        assert len(screen.query_one(EventLog).lines) > 2  # shown in the log too


async def test_no_color_is_respected(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = KforgeApp(finished_run, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await attached(pilot)
        assert app.no_color
        assert cell(screen.query_one(ProblemTable), "relu", "status") == "solved"
