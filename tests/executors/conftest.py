"""Fixtures for the executor tests: the built-in relu problem, its example solution and broken
candidates, EvalRequests sized for the CPU, and a plugin registry that includes the modal executor."""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART_RELU = REPO / "recipes" / "quickstart" / "candidates" / "relu"
MODAL_RECIPE = REPO / "recipes" / "modal.toml"

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def relu_problem() -> Any:
    from kforge.problems import builtin_problems

    return {p.id: p for p in builtin_problems()}["relu"]


@pytest.fixture(scope="session")
def candidates(relu_problem: Any) -> dict[str, str]:
    """The relu example solution shipped with the problem, and the quickstart's broken candidates."""
    return {"solution": relu_problem.solutions()["triton"].read_text(),
            "wrong": (QUICKSTART_RELU / "wrong_slope.py").read_text(),
            "crash": (QUICKSTART_RELU / "crash.py").read_text(),
            "syntax": (QUICKSTART_RELU / "syntax_error.py").read_text()}


@pytest.fixture
def make_request(relu_problem: Any) -> Callable[..., Any]:
    """An EvalRequest for the relu problem at its small (CPU) shape, kept cheap: two correctness trials,
    no ops check, timing skipped unless asked (the judge's depth is test_judge.py's subject)."""
    from kforge.runtime import protocol as P

    def make(code: str, request_id: str | None = None, **overrides: Any) -> P.EvalRequest:
        fields: dict[str, Any] = dict(
            request_id=request_id or f"c{next(_ids):04d}", problem_id=relu_problem.id,
            problem_source=relu_problem.source, candidate_source=code, backend="triton", shape_name="small",
            shape=relu_problem.shape("small"), dtype=relu_problem.dtype, trials=2, min_samples=0,
            ops_check=False, compile_timeout_s=60, run_timeout_s=20)
        fields.update(overrides)
        return P.EvalRequest(**fields)

    return make


@pytest.fixture
def modal_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The built-in plugins plus the modal executor (whether or not DEFAULT_PLUGINS lists it yet)."""
    import pluggy

    from kforge import hookspecs, plugins

    for key in [k for k in os.environ if k.startswith("KFORGE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "")
    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    for name in (*plugins.DEFAULT_PLUGINS, "kforge.executors.modal"):
        if not pm.has_plugin(name):
            pm.register(importlib.import_module(name), name=name)
    yield plugins.build_registry(pm)


@pytest.fixture
def container_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """Set what Modal would set in a container: the settings record, and the CPU as the device."""
    import json

    from kforge.executors.modal import ModalSettings

    def apply(settings: ModalSettings | None = None) -> None:
        settings = settings or ModalSettings.from_options({})
        monkeypatch.setenv("KFORGE_MODAL_SETTINGS", json.dumps(settings.container_record()))
        monkeypatch.setenv("KFORGE_DEVICE", "cpu")
        monkeypatch.setenv("MODAL_TASK_ID", "ta-test")

    return apply
