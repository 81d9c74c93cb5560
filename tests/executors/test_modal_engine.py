"""A whole run through the engine with the modal executor, whose one Modal entry point (``_connect``,
which would start the App) binds FakeModal instead: the engine's concurrent ``evaluate`` calls, the
store and the summary see exactly what they would see from Modal."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from modal_doubles import FakeModal  # noqa: E402

from kforge.executors.modal import CALLS_FILE, ModalExecutor  # noqa: E402
from kforge.executors.modal_app import ContainerJudge  # noqa: E402
from kforge.hookspecs import hookimpl  # noqa: E402

FAKES: list[FakeModal] = []


class FakeBackedModalExecutor(ModalExecutor):
    async def _connect(self, log_path: Path | None = None) -> None:
        fake = FakeModal(lambda retire: ContainerJudge.start(device="cpu", retire=retire),
                         max_containers=self.settings.max_containers, max_retries=self.settings.retries)
        FAKES.append(fake)
        self.bind(fake, fake.from_id)


class FakeBackedPlugin:
    @hookimpl
    def register_executors(self, register):
        register(FakeBackedModalExecutor)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Any:
    import pluggy

    from kforge import hookspecs, plugins

    monkeypatch.setenv("KFORGE_LOAD_PLUGINS", "")
    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    for name in plugins.DEFAULT_PLUGINS:
        if name != "kforge.executors.modal":  # the fake-backed subclass takes the name "modal"
            pm.register(importlib.import_module(name), name=name)
    pm.register(FakeBackedPlugin(), name="fake-backed-modal")
    return plugins.build_registry(pm)


def test_engine_run_through_the_modal_executor(tmp_path: Path, registry: Any, container_env, candidates) -> None:
    from kforge.engine import Engine
    from kforge.recipe import validate
    from kforge.store import Store

    container_env()
    replay = tmp_path / "candidates" / "relu"
    replay.mkdir(parents=True)
    (replay / "a_solution.py").write_text(candidates["solution"])
    (replay / "b_wrong.py").write_text(candidates["wrong"])
    raw = {"run": {"name": "modal-fake", "out": str(tmp_path / "runs")},
           "problems": {"source": "builtin", "ids": ["relu"], "shapes": "small"},
           "generator": {"name": "replay", "path": str(tmp_path / "candidates")},
           "search": {"name": "best-of-n", "n": 2},
           "executor": {"name": "modal", "max_containers": 2, "volume": ""},
           "eval": {"min_samples": 0, "run_timeout_s": 20},
           "budget": {"candidates": 2}}
    engine = Engine(validate(raw, None, registry), registry=registry)
    try:
        summary = asyncio.run(engine.run())
    finally:
        for fake in FAKES:
            fake.close()
        FAKES.clear()
    assert summary["correct"] == 1
    store = Store(engine.run_dir)
    try:
        results = {r["candidate_id"]: r for r in store.results()}
    finally:
        store.close()
    assert sorted(r["status"] for r in results.values()) == ["correct", "incorrect"]
    calls = json.loads((engine.run_dir / CALLS_FILE).read_text())["calls"]
    assert set(calls) == set(results)  # every candidate's Modal call id is in the run directory
    for cid, row in results.items():
        assert row["versions"]["modal"]["call_id"] == calls[cid]["call_id"]
        assert row["device"].startswith("CPU")
    assert summary["device"].startswith("CPU")  # the device that judged, not just what was asked for
    provenance = json.loads((engine.run_dir / "provenance.json").read_text())
    assert provenance["executor"]["gpu"] == "H100!"
