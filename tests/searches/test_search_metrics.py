"""The search's metrics() reach the run: ``search`` events (``--json``, the store, loggers), the summary,
and the island and generation of each problem's best in result events, the live table, the plain
summary, the report and the dashboard."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import landscape_judge
import pytest
import search_helpers as H
from rich.console import Console

from kforge import engine as engine_module
from kforge.engine import Engine
from kforge.output import JsonLines, PlainLines, ProblemRows, print_summary
from kforge.recipe import load_recipe

EVOLUTION = """
[run]
seed = 2
[problems]
source = "builtin"
ids = ["matmul"]
[generator]
name = "tune"
[search]
name = "evolution"
generations = 4
islands = 2
population = 3
migration_interval = 2
features = ["tile_size", "warps"]
[executor]
name = "landscape-judge"
"""


def _run(tmp: Path, text: str, name: str = "run") -> tuple[dict[str, Any], Engine, list[dict[str, Any]], str]:
    recipe = tmp / f"{name}.toml"
    recipe.write_text(text)
    registry = H.make_registry(landscape_judge)
    engine = Engine(load_recipe(recipe, [], registry=registry, env={}), run_dir=tmp / name, registry=registry)
    events: list[dict[str, Any]] = []
    engine.bus.subscribe(events.append)
    out = io.StringIO()
    engine.bus.subscribe(JsonLines(out))  # what --json prints
    return asyncio.run(engine.run()), engine, events, out.getvalue()


def _rows(run_dir: Path, sql: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(run_dir / "kforge.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql)]
    finally:
        db.close()


def test_evolution_metrics_and_the_birthplace_of_the_best_reach_every_output(tmp_path: Path) -> None:
    summary, engine, events, printed = _run(tmp_path, EVOLUTION)
    run_dir = tmp_path / "run"

    # search events: in --json, in the store, the last one is the final metrics, also in the summary
    final = json.loads(json.dumps(engine.search.metrics()))
    searches = [e for e in events if e["event"] == "search"]
    assert searches and searches[-1]["metrics"] == final == summary["search"]
    assert all(e["search"] == "evolution" for e in searches)
    assert all(a["metrics"] != b["metrics"] for a, b in zip(searches, searches[1:]))  # only when changed
    lines = [json.loads(line) for line in printed.splitlines()]
    assert [e for e in lines if e["event"] == "search"][-1]["metrics"] == final
    stored = _rows(run_dir, "SELECT data FROM events WHERE type = 'search' ORDER BY seq")
    assert json.loads(stored[-1]["data"])["metrics"] == final
    assert events.index(searches[-1]) < [e["event"] for e in events].index("summary")

    # every result event says where its candidate was born, as the proposal does
    params = {r["cid"]: json.loads(r["params"]) for r in _rows(
        run_dir, "SELECT c.id AS cid, p.params FROM candidates c JOIN proposals p ON p.id = c.proposal_id")}
    results = [e for e in events if e["event"] == "result"]
    assert results and all((e["island"], e["generation"]) == (params[e["candidate"]]["island"],
                                                              params[e["candidate"]]["generation"])
                           for e in results)

    # the summary's best carries it too, and agrees with the search's own best
    best = summary["best"]["matmul"]
    assert (best["island"], best["generation"]) == (params[best["candidate"]]["island"],
                                                     params[best["candidate"]]["generation"])
    mbest = final["problems"]["matmul"]["best"]
    assert mbest["speedup"] == best["speedup"]
    if mbest["candidate"] == best["candidate"]:
        assert (mbest["island"], mbest["generation"]) == (best["island"], best["generation"])

    # the live table has an island/gen column showing the best's
    table = ProblemRows(["matmul"])
    for e in events:
        table.update(e)
    assert table.shown("matmul")["where"] == f"i{best['island']} g{best['generation']}"
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table.table())
    text = console.export_text()
    assert "island/gen" in text and f"i{best['island']} g{best['generation']}" in text

    # the plain summary, the report and the dashboard say it as well
    console = Console(record=True, width=200, file=io.StringIO())
    print_summary(console, summary)
    assert f"matmul island {best['island']} generation {best['generation']}" in console.export_text()
    from kforge.report import run_figures, write_report
    from kforge.tui.model import RunPoller, RunState

    fig = run_figures(run_dir)
    assert (fig["problems"][0]["island"], fig["problems"][0]["generation"]) == (best["island"], best["generation"])
    assert f"i{best['island']} g{best['generation']}" in Path(write_report(run_dir)["markdown"]).read_text()
    poller, state = RunPoller(run_dir), RunState(run_dir)
    try:
        batch = poller.read()
        assert batch is not None
        state.apply(batch)
    finally:
        poller.close()
    assert state.search_metrics == final
    assert f"(island {best['island']}, generation {best['generation']})" in state.best_info("matmul")


def test_search_events_are_throttled_and_best_of_n_runs_have_no_island(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "SEARCH_METRICS_INTERVAL_S", 0.0)
    _, _, every, _ = _run(tmp_path, EVOLUTION, "every")
    monkeypatch.setattr(engine_module, "SEARCH_METRICS_INTERVAL_S", 3600.0)
    summary, _, few, _ = _run(tmp_path, EVOLUTION, "few")
    n_every = sum(e["event"] == "search" for e in every)
    assert n_every > 3 and sum(e["event"] == "search" for e in few) == 2  # the first, and the last
    assert [e for e in every if e["event"] == "search"][-1]["metrics"] == summary["search"]

    text = EVOLUTION.replace('name = "evolution"\ngenerations = 4\nislands = 2\npopulation = 3\n'
                             'migration_interval = 2\nfeatures = ["tile_size", "warps"]', 'name = "best-of-n"\nn = 3')
    summary, _, events, _ = _run(tmp_path, text, "bon")
    assert "island" not in summary["best"]["matmul"]
    assert all("island" not in e for e in events if e["event"] == "result")
    assert summary["search"]["problems"]["matmul"]["asked"] == 3
    console = Console(record=True, width=200, file=io.StringIO())
    print_summary(console, summary)
    lines = PlainLines(console, ["matmul"], "t")
    for e in events:
        lines(e)
    assert "island" not in console.export_text()
