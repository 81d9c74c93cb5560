"""The view models, fed real events."""

from __future__ import annotations

from pathlib import Path

from tui_runs import load_dump, make_run

from kforge.store import RunReader as open_run
from kforge.store import Store
from kforge.tui.model import (
    Batch,
    RunPoller,
    RunState,
    candidate_detail,
    classify_target,
    list_recipes,
    list_runs,
)


def test_poller_reads_in_batches_and_state_folds_them(tmp_path: Path) -> None:
    replay = make_run(tmp_path, events=5)
    poller = RunPoller(replay.run_dir)
    state = RunState(replay.run_dir)
    first = poller.read()
    assert first is not None and len(first.events) == 5 and first.meta["recipe"]["budget"]["candidates"] == 20
    ch = state.apply(first)
    assert ch.new_problems == ["relu", "softmax", "layernorm"]
    assert ch.new_candidates == ["c0001", "c0002"]
    assert state.problems["relu"].in_flight == 1
    assert str(state.problem_status(state.problems["relu"])) == "1 in flight"
    assert poller.read() is None  # nothing new
    replay.write()
    batches = []
    while (batch := poller.read(limit=7)) is not None:
        batches.append(batch)
    assert len(batches) == 5 and sum(len(b.events) for b in batches) == len(load_dump()["events"]) - 5
    for b in batches:
        state.apply(b)
    assert state.status == "finished"
    assert state.n_results == 10 and state.n_correct == 5
    assert state.problems["relu"].history == [0.00258298260880267] * 5
    assert state.sparkline("relu")[0] == 0.0
    assert state.budget_rows() == [("candidates", "10", "20", "10", 0.5)]
    assert state.candidates["c0010"].parent_id == "c0009"
    poller.close()
    replay.close()


def test_island_comes_from_proposal_params(tmp_path: Path) -> None:
    store = Store(tmp_path / "r", create=True)
    store.add_proposal({"id": "p:0", "problem_id": "p", "step": 0, "seed": 1, "params": {"island": 3}})
    store.add_candidate({"id": "c0001", "proposal_id": "p:0", "problem_id": "p", "code": "x = 1", "code_hash": "h",
                         "generator": "g"})
    store.add_event({"event": "candidate", "ts": 1.0, "candidate": "c0001", "problem": "p", "label": None,
                     "generator": "g", "proposal": "p:0"})
    store.close()
    state = RunState(tmp_path / "r")
    poller = RunPoller(tmp_path / "r")
    batch = poller.read()
    assert isinstance(batch, Batch)
    state.apply(batch)
    assert state.candidates["c0001"].island == "3"
    assert state.candidate_cells("c0001")["island"] == "3"
    reader = open_run(tmp_path / "r")
    detail = candidate_detail(reader, "c0001")
    assert detail.island == "3" and detail.status is None
    assert dict(detail.evaluation())["Verdict"] == [("status", "being judged (no result yet)")]
    reader.close()
    poller.close()


def test_runs_and_recipes_lists(tmp_path: Path) -> None:
    make_run(tmp_path / "runs").close()
    (tmp_path / "runs" / "not-a-run").mkdir()
    runs = list_runs(tmp_path / "runs")
    assert [(r.name, r.status, r.problems, r.results, r.correct) for r in runs] == [("quickstart", "finished", 3, 10, 5)]
    repo = Path(__file__).resolve().parents[2]
    recipes = {r.name: r.description for r in list_recipes(repo / "recipes")}
    assert recipes["quickstart"].startswith("The quickstart")
    assert classify_target(None) == "home"
    assert classify_target(runs[0].path) == "run"
    assert classify_target(repo / "recipes" / "quickstart.toml") == "recipe"


def test_tui_command_refuses_what_is_neither_a_run_nor_a_recipe(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kforge.commands.tui import tui_cmd

    result = CliRunner().invoke(tui_cmd, [str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(tui_cmd, [str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "not a kforge run directory" in result.stderr
