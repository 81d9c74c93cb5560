"""best-of-n re-times each problem's winner with fresh seeds before it is reported.

The search in-process (when a re-timing is asked, the fallback to the next best, state round trips),
the reported figures (:func:`kforge.metrics.apply_retimes`), whole engine runs with a judge that
answers differently the second time (:mod:`retime_judge`), budgets, a run killed with SIGKILL in the
middle of a re-timing and resumed, and one run with the real judge on the CPU (fresh input seeds)."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import retime_judge as RJ
import search_helpers as H

from kforge.api import Candidate, Proposal, code_hash
from kforge.engine import Engine
from kforge.metrics import apply_retimes, retime_verdict, summarise_run
from kforge.recipe import load_recipe
from kforge.runtime import protocol as P
from kforge.searches.best_of_n import BestOfN

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


# -- the search, in-process --------------------------------------------------------------------------
def _search(**options: Any) -> BestOfN:
    search = BestOfN(**{"n": 3, **options})
    search.setup(H.context(("relu", "softmax")))
    return search


def _tell(search: BestOfN, p: Proposal, cid: str, speedup: float | None) -> None:
    cand = Candidate(id=cid, problem_id=p.problem_id, proposal_id=p.id, code=cid, code_hash=code_hash(cid),
                     generator="t")
    status = P.CORRECT if speedup is not None else P.INCORRECT
    search.tell(cand, p, P.EvalResult(cid, p.problem_id, status, speedup_vs_eager=speedup))


def _retimed(status: str, speedup: float | None) -> P.EvalResult:
    return P.EvalResult("r", "x", status, speedup_vs_eager=speedup)


def test_the_winner_is_re_timed_only_once_the_problems_samples_are_all_judged() -> None:
    search = _search()
    props = search.ask(6)
    relu = [p for p in props if p.problem_id == "relu"]
    _tell(search, relu[0], "c1", 2.0)
    _tell(search, relu[1], "c2", 3.0)
    assert search.ask_retimes(4, final=False) == []  # relu:s2 is still out
    _tell(search, relu[2], "c3", None)  # incorrect
    rts = search.ask_retimes(4, final=False)
    assert [(r.problem_id, r.candidate_id, r.first_speedup, r.id) for r in rts] == [("relu", "c2", 3.0, "c2-r0")]
    assert search.ask_retimes(4, final=False) == []  # one re-timing per problem at a time
    assert search.tell_retime(rts[0], _retimed(P.CORRECT, 2.9)) == {"verdict": "accepted", "first_speedup": 3.0}
    assert search.ask_retimes(4, final=False) == []  # accepted: relu is done; softmax has results out
    # softmax: nothing correct -> nothing to re-time, even once generation is over
    for i, p in enumerate(p for p in props if p.problem_id == "softmax"):
        _tell(search, p, f"s{i}", None)
    assert search.ask_retimes(4, final=True) == []
    m = search.metrics()["problems"]
    assert m["relu"]["winner"] == "c2" and m["relu"]["flagged"] == {} and m["softmax"]["retimed"] == 0


def test_a_flagged_winner_falls_back_to_the_next_best_and_state_round_trips() -> None:
    search = _search(retime_tolerance=0.2, retime_trials=9)
    relu = [p for p in search.ask(6) if p.problem_id == "relu"]
    for p, (cid, s) in zip(relu, [("c1", 2.0), ("c2", 3.0), ("c3", 2.5)]):
        _tell(search, p, cid, s)
    first = search.ask_retimes(1, final=False)[0]
    assert first.candidate_id == "c2" and first.trials == 9
    assert search.tell_retime(first, _retimed(P.INCORRECT, None))["verdict"] == "incorrect"
    second = search.ask_retimes(1, final=False)[0]
    assert second.candidate_id == "c3" and second.id == "c3-r1"

    # a resumed search continues the same fallback: same pending re-timing, same next one
    again = _search(retime_tolerance=0.2, retime_trials=9)
    again.load_state_dict(json.loads(json.dumps(search.state_dict())))
    assert again.ask_retimes(1, final=False) == []  # c3's re-timing is in flight (the engine redoes it)
    assert again.tell_retime(second, _retimed(P.CORRECT, 1.9))["verdict"] == "slower"  # 1.9 < 0.8 x 2.5
    third = again.ask_retimes(1, final=False)[0]
    assert third.candidate_id == "c1"
    assert again.tell_retime(third, _retimed(P.CORRECT, 1.7))["verdict"] == "accepted"  # 1.7 >= 0.8 x 2.0
    assert again.ask_retimes(1, final=True) == []
    assert again.metrics()["problems"]["relu"]["flagged"] == {"c2": "incorrect", "c3": "slower"}
    assert again.tell_retime(third, _retimed(P.CORRECT, 1.7)) == {}  # told twice: ignored


def test_final_re_times_a_problem_whose_sampling_a_budget_cut_short() -> None:
    search = _search()
    p = search.ask(1)[0]
    _tell(search, p, "c1", 1.5)
    assert search.ask_retimes(2, final=False) == []  # more samples would come
    assert [r.candidate_id for r in search.ask_retimes(2, final=True)] == ["c1"]
    off = _search(retime_winner=False)
    p = off.ask(1)[0]
    _tell(off, p, "c1", 1.5)
    assert off.ask_retimes(2, final=True) == []


def test_verdicts_and_the_reported_best() -> None:
    assert retime_verdict(2.0, "correct", 1.6, 0.25) == "accepted"
    assert retime_verdict(2.0, "correct", 1.4, 0.25) == "slower"
    assert retime_verdict(2.0, "correct", 5.0, 0.25) == "accepted"  # faster: the re-timing is what is reported
    assert retime_verdict(2.0, "incorrect", None, 0.25) == "incorrect"
    assert retime_verdict(2.0, "timeout", None, 0.25) == "incorrect"
    assert retime_verdict(2.0, "infra_error", None, 0.25) == "not_retimed"

    first = {"a": {"candidate": "c1", "status": "correct", "speedup": 3.0},
             "b": {"candidate": "c5", "status": "correct", "speedup": 4.0},
             "c": {"candidate": "c7", "status": "correct", "speedup": 2.0},
             "d": {"candidate": "c9", "status": "correct", "speedup": 2.0}}

    def rt(pid: str, cid: str, verdict: str, status: str, speedup: float | None, first_s: float) -> dict[str, Any]:
        return {"problem_id": pid, "candidate_id": cid, "verdict": verdict, "status": status, "speedup": speedup,
                "first_speedup": first_s}

    rows = [rt("a", "c1", "incorrect", "incorrect", None, 3.0), rt("a", "c2", "accepted", "correct", 1.9, 2.0),
            rt("b", "c5", "slower", "correct", 1.0, 4.0), rt("b", "c6", "slower", "correct", 1.2, 3.0),
            rt("c", "c7", "incorrect", "incorrect", None, 2.0),
            rt("d", "c9", "not_retimed", "infra_error", None, 2.0),
            {"problem_id": "d", "candidate_id": "c9", "verdict": None, "status": None}]  # in flight: ignored
    rep = apply_retimes(first, rows)
    assert rep["a"] == {"candidate": "c2", "status": "correct", "speedup": 1.9, "first_speedup": 2.0, "retimed": True,
                        "verdict": "accepted", "flagged": [{"candidate": "c1", "verdict": "incorrect",
                                                            "status": "incorrect", "first_speedup": 3.0,
                                                            "speedup": None}]}
    assert rep["b"]["candidate"] == "c6" and rep["b"]["speedup"] == 1.2 and rep["b"]["verdict"] == "slower"
    assert rep["c"]["status"] == "incorrect" and rep["c"]["speedup"] is None  # failed on fresh inputs: unsolved
    assert rep["d"]["speedup"] == 2.0 and rep["d"]["retimed"] is False  # only the machine failed: first kept
    results = [{"problem_id": p, "candidate_id": b["candidate"], "status": "correct", "speedup": b["speedup"]}
               for p, b in first.items()]
    s = summarise_run(results, list(first), rows)
    assert s["problems_solved"] == 3 and s["correct"] == 4 and s["retimes"] == 6
    assert s["geomean_speedup"] == pytest.approx((1.9 * 1.2 * 2.0) ** (1 / 3))
    assert s["fast_p"]["1.5"] == pytest.approx(2 / 4)


# -- whole runs with the retime judge ----------------------------------------------------------------
SPEC = {
    "relu": [(3.0, 2.8), (2.0, 2.0), (0, 0)],  # the winner holds up: 2.8 reported
    "softmax": [(3.0, 0), (2.0, 1.9), (1.0, 1.0)],  # the winner fails on fresh inputs: the next best, 1.9
    "layernorm": [(4.0, 1.0), (1.5, 1.4)],  # the winner was a lucky timing: the next best, 1.4
}
RECIPE = """
[run]
seed = 5
[problems]
source = "builtin"
ids = {ids}
[generator]
name = "replay"
path = "{path}"
[search]
name = "best-of-n"
n = 3
{search}
[executor]
name = "retime-judge"
"""


def _recipe(tmp: Path, ids: list[str] | None = None, search: str = "retime_trials = 7", spec: Any = None) -> Path:
    root = RJ.write_candidates(tmp / "cands", spec or SPEC)
    path = tmp / "retime.toml"
    path.write_text(RECIPE.format(ids=json.dumps(ids or list(SPEC)), path=root.as_posix(), search=search))
    return path


def _run(recipe: Path, run_dir: Path, *overrides: str, resume: bool = False
         ) -> tuple[dict[str, Any], Engine, list[dict[str, Any]]]:
    registry = H.make_registry(RJ)
    rec = load_recipe(recipe, list(overrides), registry=registry, env={})
    engine = Engine(rec, run_dir=run_dir, registry=registry, resume=resume)
    events: list[dict[str, Any]] = []
    engine.bus.subscribe(events.append)
    return asyncio.run(engine.run()), engine, events


def _rows(run_dir: Path, sql: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(run_dir / "kforge.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql)]
    finally:
        db.close()


def _labels(run_dir: Path) -> dict[str, str]:
    """Candidate id -> problem/file (ids follow arrival order; files do not)."""
    return {r["id"]: f"{r['problem_id']}/{r['label']}" for r in _rows(run_dir, "SELECT id, problem_id, label "
                                                                                "FROM candidates")}


def test_a_run_reports_each_problems_re_timed_winner(tmp_path: Path) -> None:
    RJ.LOG.clear()
    summary, engine, events = _run(_recipe(tmp_path), tmp_path / "run")
    run_dir = tmp_path / "run"
    label = _labels(run_dir)

    # what is reported: the re-timed winner, with what it first measured and the flagged ones
    best = {pid: {**b, "candidate": label[b["candidate"]],
                  "flagged": [(label[f["candidate"]], f["verdict"]) for f in b["flagged"]]}
            for pid, b in summary["best"].items()}
    assert best["relu"] == {"candidate": "relu/0.py", "status": "correct", "speedup": 2.8, "first_speedup": 3.0,
                            "retimed": True, "verdict": "accepted", "flagged": []}
    assert best["softmax"]["candidate"] == "softmax/1.py" and best["softmax"]["speedup"] == 1.9
    assert best["softmax"]["flagged"] == [("softmax/0.py", "incorrect")]
    assert best["layernorm"]["candidate"] == "layernorm/1.py" and best["layernorm"]["speedup"] == 1.4
    assert best["layernorm"]["flagged"] == [("layernorm/0.py", "slower")]
    assert summary["geomean_speedup"] == pytest.approx((2.8 * 1.9 * 1.4) ** (1 / 3))
    assert summary["fast_p"]["2"] == pytest.approx(1 / 3)  # the first timings would have said 3/3
    assert summary["retimes"] == 5 and summary["problems_solved"] == 3
    # the samples are counted as first judged: a re-timing is not a candidate
    assert summary["candidates"] == 8 and summary["correct"] == 7 and summary["statuses"] == {"correct": 7,
                                                                                            "incorrect": 1}

    # the store holds both judgings: the first in results, the re-timing in retimes
    assert len(_rows(run_dir, "SELECT * FROM results")) == 8 == len(_rows(run_dir, "SELECT * FROM candidates"))
    retimes = _rows(run_dir, "SELECT * FROM retimes ORDER BY seq")
    assert sorted((label[r["candidate_id"]], r["verdict"], r["status"], r["speedup"], r["first_speedup"])
                  for r in retimes) == [
        ("layernorm/0.py", "slower", "correct", 1.0, 4.0), ("layernorm/1.py", "accepted", "correct", 1.4, 1.5),
        ("relu/0.py", "accepted", "correct", 2.8, 3.0),
        ("softmax/0.py", "incorrect", "incorrect", None, 3.0), ("softmax/1.py", "accepted", "correct", 1.9, 2.0)]
    assert all(r["trials"] == 7 and json.loads(r["result"])["candidate_id"] == r["candidate_id"] for r in retimes)

    # judged again with retime_trials and fresh seeds, only after every sample of its problem was judged
    for pid in SPEC:
        log = [(i, e) for i, e in enumerate(RJ.LOG) if e["problem"] == pid]
        firsts = [i for i, e in log if not e["retime"]]
        agains = [i for i, e in log if e["retime"]]
        assert len(firsts) == len(SPEC[pid]) and agains and max(firsts) < min(agains)
        assert all(RJ.LOG[i]["trials"] == 5 for i in firsts) and all(RJ.LOG[i]["trials"] == 7 for i in agains)
    first_seeds = {s for e in RJ.LOG if not e["retime"] for s in e["seeds"]}
    assert not first_seeds & {s for e in RJ.LOG if e["retime"] for s in e["seeds"]}

    # events: a retime event per re-timing, after its problem's results; the summary in the store
    kinds = [e["event"] for e in events]
    assert kinds.count("retime") == 5 and kinds[-2:] == ["summary", "run_finished"]
    for pid in SPEC:
        last_result = max(i for i, e in enumerate(events) if e["event"] == "result" and e["problem"] == pid)
        assert min(i for i, e in enumerate(events) if e["event"] == "retime" and e["problem"] == pid) > last_result
    ev = next(e for e in events if e["event"] == "retime" and label[e["candidate"]] == "relu/0.py")
    assert ev["verdict"] == "accepted" and ev["speedup"] == 2.8 and ev["first_speedup"] == 3.0
    stored = json.loads(_rows(run_dir, "SELECT value FROM meta WHERE key = 'summary'")[0]["value"])
    assert stored["best"] == summary["best"]

    # the live table, the report and the dashboard show the re-timed figures
    from rich.console import Console

    from kforge.output import ProblemRows
    from kforge.report import run_figures
    from kforge.tui.model import RunPoller, RunState

    table = ProblemRows(list(SPEC))
    for e in events:
        table.update(e)
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table.table())
    text = console.export_text()
    assert "re-timed" in text and "island/gen" not in text
    assert table.shown("relu")["best"] == 2.8 and table.shown("relu")["retimed"] == "ok (first 3.00x)"
    assert table.shown("softmax")["retimed"] == "ok (first 2.00x), 1 flagged"
    assert table.shown("layernorm")["time_ms"] == pytest.approx(1 / 1.4)
    fig = run_figures(run_dir)
    by_id = {p["id"]: p for p in fig["problems"]}
    assert by_id["softmax"]["best_speedup"] == 1.9 and by_id["softmax"]["first_speedup"] == 3.0
    assert fig["geomean_speedup"] == summary["geomean_speedup"] and fig["retimes"] == 5
    poller = RunPoller(run_dir)
    state = RunState(run_dir)
    try:
        batch = poller.read()
        assert batch is not None
        state.apply(batch)
    finally:
        poller.close()
    assert state.problem_cells("layernorm")["eager"] == "1.40x"
    assert "re-timed, first 1.50x" in state.best_info("layernorm")
    assert any("re-timed" in line.text for line in state.log)


def test_without_retime_winner_the_first_judging_is_reported(tmp_path: Path) -> None:
    RJ.LOG.clear()
    summary, _, events = _run(_recipe(tmp_path, search="retime_winner = false"), tmp_path / "run")
    assert not any(e["retime"] for e in RJ.LOG) and not any(e["event"] == "retime" for e in events)
    assert {p: b["speedup"] for p, b in summary["best"].items()} == {"relu": 3.0, "softmax": 3.0, "layernorm": 4.0}
    assert all("retimed" not in b for b in summary["best"].values()) and summary["retimes"] == 0


def test_re_timings_do_not_count_against_the_candidates_budget(tmp_path: Path) -> None:
    """The budget stops generation after two samples of softmax; the winner is still re-timed (it fails
    on fresh inputs) and so is the next best, and neither is a candidate."""
    RJ.LOG.clear()
    summary, engine, events = _run(_recipe(tmp_path, ids=["softmax"]), tmp_path / "run", "budget.candidates=2")
    assert summary["stopped"] == "budget: candidates" and summary["candidates"] == 2
    assert engine.search.asked == {"softmax": 2}
    assert [(e["verdict"], e["first_speedup"]) for e in events if e["event"] == "retime"] == [
        ("incorrect", 3.0), ("accepted", 2.0)]
    assert summary["best"]["softmax"]["speedup"] == 1.9
    assert len(_rows(tmp_path / "run", "SELECT * FROM candidates")) == 2


def test_the_wall_clock_budget_and_an_interrupt_stop_re_timings(tmp_path: Path) -> None:
    registry = H.make_registry(RJ)
    rec = load_recipe(_recipe(tmp_path), ["budget.wall_clock_s=60"], registry=registry, env={})
    engine = Engine(rec, run_dir=tmp_path / "run", registry=registry)
    now = time.monotonic()
    assert engine._may_retime(now)
    for reason, allowed in [("budget: candidates", True), ("budget: tokens", True), ("budget: usd", True),
                            ("budget: wall_clock_s", False), ("interrupted", False)]:
        engine.stop_reason = reason
        assert engine._may_retime(now) is allowed, reason
    engine.stop_reason = "budget: candidates"
    assert not engine._may_retime(now - 61)  # past the wall clock, even after another budget stopped the run


CHILD = """
import asyncio, sys
from pathlib import Path
sys.path[:0] = [{searches!r}, {generators!r}]
import retime_judge, search_helpers
from kforge.engine import Engine
from kforge.recipe import load_recipe
registry = search_helpers.make_registry(retime_judge)
recipe = load_recipe({recipe!r}, [], registry=registry, env={{}})
asyncio.run(Engine(recipe, run_dir=Path({run_dir!r}), registry=registry).run())
"""


def test_sigkill_mid_re_timing_then_resume_matches_an_uninterrupted_run(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = _recipe(tmp_path)
    full_dir, cut_dir, hang = tmp_path / "full", tmp_path / "cut", tmp_path / "hang"
    hang.mkdir()
    full, _, _ = _run(recipe, full_dir)

    script = CHILD.format(searches=str(HERE), generators=str(HERE.parent / "generators"), recipe=str(recipe),
                          run_dir=str(cut_dir))
    env = {**os.environ, "KFORGE_TEST_HANG_DIR": str(hang), "KFORGE_LOAD_PLUGINS": ""}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (hang / "hanging").exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the other problems' judgings (10 ms each) finish
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no clean-up at all
        proc.wait()
    kept = {r["candidate_id"] for r in _rows(cut_dir, "SELECT candidate_id FROM results")}
    pending = _rows(cut_dir, "SELECT id FROM retimes WHERE status IS NULL")
    assert pending and json.loads(_rows(cut_dir, "SELECT value FROM meta WHERE key = 'status'")[0]["value"]) \
        == "running"

    RJ.LOG.clear()
    monkeypatch.delenv("KFORGE_TEST_HANG_DIR", raising=False)
    resumed, _, events = _run(recipe, cut_dir, resume=True)
    assert not {e["id"] for e in RJ.LOG} & kept  # the results recorded before the kill were kept
    redone = [e["id"] for e in RJ.LOG if e["retime"]]
    assert {r["id"] for r in pending} <= set(redone) and len(redone) == len(set(redone))
    assert next(e for e in events if e["event"] == "budget")["message"].endswith(
        f"{len(pending)} re-timings to redo")

    def normal(run_dir: Path) -> Any:
        label = _labels(run_dir)
        rts = sorted((label[r["candidate_id"]], r["verdict"], r["status"], r["speedup"], r["first_speedup"])
                     for r in _rows(run_dir, "SELECT * FROM retimes"))
        res = sorted((label[r["candidate_id"]], r["status"], r["speedup"])
                     for r in _rows(run_dir, "SELECT * FROM results"))
        return rts, res

    assert normal(cut_dir) == normal(full_dir)
    assert not _rows(cut_dir, "SELECT id FROM retimes WHERE status IS NULL")
    for key in ("geomean_speedup", "fast_p", "retimes", "problems_solved", "candidates"):
        assert resumed[key] == full[key], key


@pytest.mark.slow
def test_the_real_judge_re_times_with_fresh_input_seeds(tmp_path: Path) -> None:
    """The local executor on the CPU: the winner's re-timing is a new evaluation with new input seeds."""
    quick = REPO / "recipes" / "quickstart" / "candidates" / "relu"
    root = tmp_path / "cands" / "relu"
    root.mkdir(parents=True)
    for name in ("correct.py", "wrong_slope.py"):
        (root / name).write_text((quick / name).read_text())
    recipe = tmp_path / "real.toml"
    recipe.write_text(f"""
[problems]
ids = ["relu"]
[generator]
name = "replay"
path = "{(tmp_path / 'cands').as_posix()}"
[search]
name = "best-of-n"
n = 2
retime_trials = 6
[eval]
min_samples = 3
max_samples = 5
max_timing_s = 1
""")
    registry = H.make_registry()
    rec = load_recipe(recipe, [], registry=registry, env={"KFORGE_LOAD_PLUGINS": ""})
    summary = asyncio.run(Engine(rec, run_dir=tmp_path / "run", registry=registry).run())
    first = [r for r in _rows(tmp_path / "run", "SELECT * FROM results") if r["status"] == "correct"]
    (rt,) = _rows(tmp_path / "run", "SELECT * FROM retimes")
    assert len(first) == 1 and rt["candidate_id"] == first[0]["candidate_id"]
    again, once = json.loads(rt["result"]), json.loads(first[0]["result"])
    assert rt["status"] == "correct" and rt["verdict"] in ("accepted", "slower")  # CPU timings are noisy
    assert again["trials_run"] == 6 and once["trials_run"] == 5
    assert again["seeds"] and not set(again["seeds"]) & set(once["seeds"])
    best = summary["best"]["relu"]
    assert best["retimed"] is True and best["speedup"] == rt["speedup"] and math.isclose(
        best["first_speedup"], first[0]["speedup"])
