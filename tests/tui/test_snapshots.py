"""What the main screens look like, compared with accepted SVG snapshots (pytest-textual-snapshot).

Deterministic by construction: a fixed terminal size, a finished run (no clock on screen: times are
relative to the run's start), dates in UTC (conftest), paths relative to a fixed working directory,
and each screenshot taken only once the dashboard has read the whole store.

Update after a deliberate change of the screens: ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

pytest.importorskip("pytest_textual_snapshot")

from textual.pilot import Pilot  # noqa: E402

from kforge.tui.app import KforgeApp  # noqa: E402
from kforge.tui.screens import CandidateScreen, HomeScreen, RunScreen  # noqa: E402

SIZE = (140, 42)
SnapCompare = Callable[..., bool]


async def _until(pilot: Pilot, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the dashboard did not get there in time"
        await pilot.pause(0.05)
    await pilot.pause()


async def _attached(pilot: Pilot) -> None:
    app = pilot.app
    await _until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.state.finished)


def _then(*steps: Callable[[Pilot], Awaitable[None]]) -> Callable[[Pilot], Awaitable[None]]:
    async def run(pilot: Pilot) -> None:
        for step in steps:
            await step(pilot)
        await pilot.pause()

    return run


def _press(*keys: str) -> Callable[[Pilot], Awaitable[None]]:
    async def run(pilot: Pilot) -> None:
        await pilot.press(*keys)

    return run


def _open(cid: str) -> Callable[[Pilot], Awaitable[None]]:
    async def run(pilot: Pilot) -> None:
        screen = pilot.app.screen
        assert isinstance(screen, RunScreen)
        screen.open_candidate(cid)
        await _until(pilot, lambda: isinstance(pilot.app.screen, CandidateScreen))

    return run


def _app(target: Path | None) -> KforgeApp:
    return KforgeApp(target, runs_dir="runs", recipes_dir="recipes", poll_interval=0.02)


def test_run_screen(snap_compare: SnapCompare, finished_run: Path) -> None:
    assert snap_compare(_app(finished_run), terminal_size=SIZE, run_before=_then(_attached))


def test_run_screen_with_a_problem_selected(snap_compare: SnapCompare, finished_run: Path) -> None:
    assert snap_compare(_app(finished_run), terminal_size=SIZE,
                        run_before=_then(_attached, _press("down", "down", "enter")))


def test_candidate_code(snap_compare: SnapCompare, finished_run: Path) -> None:
    assert snap_compare(_app(finished_run), terminal_size=SIZE, run_before=_then(_attached, _open("c0010")))


def test_candidate_diff(snap_compare: SnapCompare, finished_run: Path) -> None:
    assert snap_compare(_app(finished_run), terminal_size=SIZE,
                        run_before=_then(_attached, _open("c0010"), _press("2")))


def test_candidate_evaluation(snap_compare: SnapCompare, finished_run: Path) -> None:
    assert snap_compare(_app(finished_run), terminal_size=SIZE,
                        run_before=_then(_attached, _open("c0006"), _press("3")))


def test_start_screen(snap_compare: SnapCompare, runs_root: Path) -> None:
    async def home(pilot: Pilot) -> None:
        await _until(pilot, lambda: isinstance(pilot.app.screen, HomeScreen))

    assert snap_compare(_app(None), terminal_size=SIZE, run_before=_then(home))


def test_help_screen(snap_compare: SnapCompare, finished_run: Path) -> None:
    assert snap_compare(_app(finished_run), terminal_size=SIZE, run_before=_then(_attached, _press("question_mark")))
