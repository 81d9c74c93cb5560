"""Fixtures for the dashboard and report tests (the run itself: :mod:`tui_runs`)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_runs import RELU_CORRECT, REPO, RUN_NAME, make_run


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (Textual's loop), through anyio's pytest plugin."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dates on screen in UTC, whatever machine runs the tests (snapshots compare them)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, holding ``runs/<the quickstart run>`` and ``recipes/``
    with a copy of the quickstart recipe (so paths on screen are the same on every machine)."""
    monkeypatch.chdir(tmp_path)
    replay = make_run(tmp_path / "runs")
    replay.close()
    (tmp_path / "recipes").mkdir()
    shutil.copy(REPO / "recipes" / "quickstart.toml", tmp_path / "recipes" / "quickstart.toml")
    return tmp_path


@pytest.fixture
def finished_run(runs_root: Path) -> Path:
    return Path("runs") / RUN_NAME


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A recipe with one candidate (a correct ReLU) and the shortest honest judging: a real run in ~10 s."""
    cands = tmp_path / "tiny" / "candidates" / "relu"
    cands.mkdir(parents=True)
    shutil.copy(RELU_CORRECT, cands / "correct.py")
    recipe = tmp_path / "tiny" / "tiny.toml"
    recipe.write_text(f"""
[run]
name = "tiny"
out = "{(tmp_path / 'tiny-runs').as_posix()}"

[problems]
source = "builtin"
ids = ["relu"]
shapes = "small"

[generator]
name = "replay"
path = "candidates"

[search]
name = "best-of-n"
n = 1

[eval]
trials = 5
min_samples = 3
max_samples = 5
max_timing_s = 1
""")
    return recipe


@pytest.fixture
def launch_env(base_env: dict[str, str]) -> dict[str, str]:
    """The environment of a launched ``kforge run``: built-in plugins only, the repository importable."""
    env = dict(base_env)
    env.pop("TZ", None)
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))}
