"""The run store (real SQLite files in tmp_path) and run metrics as KernelBench defines them."""

from __future__ import annotations

import itertools
import math
import sqlite3
import statistics
import threading
from fractions import Fraction
from pathlib import Path

import pytest

from kforge.metrics import FAST_P, fast_p, geomean, pass_at_k, summarise_run
from kforge.store import DB_NAME, SCHEMA_VERSION, Store


# -- store ----------------------------------------------------------------------------------------
def _fill(store: Store) -> None:
    store.add_problem({"id": "relu", "name": "ReLU", "level": 1, "hash": "abc", "dtype": "float32"}, "small")
    store.add_problem({"id": "softmax", "name": "Softmax", "level": 1, "hash": "def"}, "small")
    store.add_proposal({"id": "relu:s0", "problem_id": "relu", "step": 0, "seed": 11, "params": {"sample": 0}})
    store.add_proposal({"id": "relu:s1", "problem_id": "relu", "step": 1, "seed": 12, "parent_id": "c0001"})
    store.add_candidate({"id": "c0001", "proposal_id": "relu:s0", "problem_id": "relu", "code": "print(1)\n",
                         "code_hash": "h1", "generator": "replay", "label": "a.py", "tokens_in": 10,
                         "tokens_out": 20, "cost_usd": 0.5})
    store.add_candidate({"id": "c0002", "proposal_id": "relu:s1", "problem_id": "relu", "code": "print(2)\n",
                         "code_hash": "h2", "generator": "replay", "parent_id": "c0001"})
    store.set_proposal_outcome("relu:s0", "candidate c0001")
    store.add_result("c0001", {"problem_id": "relu", "status": "correct", "speedup": 1.5, "device": "CPU",
                               "timing": {"median_ms": 2.0}})
    store.add_result("c0002", {"problem_id": "relu", "status": "incorrect", "speedup": None, "device": "CPU"})
    store.add_event({"event": "run_started", "ts": 1.0, "run_dir": "x"})
    store.add_event({"event": "result", "ts": 2.0, "candidate": "c0001"})
    store.set_meta("status", "running")
    store.set_meta("recipe", {"eval": {"trials": 5}})
    store.set_state("search", {"asked": {"relu": 2}})


def test_store_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "run", create=True)
    _fill(store)
    store.set_meta("status", "finished")  # replaced, not duplicated
    store.close()

    again = Store(tmp_path / "run")
    assert again.get_meta("schema_version") == SCHEMA_VERSION
    assert again.get_meta("status") == "finished"
    assert again.get_meta("recipe") == {"eval": {"trials": 5}}
    assert again.get_meta("absent", "dflt") == "dflt"
    assert again.get_state("search") == {"asked": {"relu": 2}}
    assert again.get_state("absent") is None

    problems = again.problems()
    assert [p["id"] for p in problems] == ["relu", "softmax"]
    assert problems[0] == {"id": "relu", "name": "ReLU", "level": 1, "hash": "abc", "shape_name": "small",
                           "summary": {"id": "relu", "name": "ReLU", "level": 1, "hash": "abc", "dtype": "float32"}}

    proposals = again.proposals()
    assert [p["id"] for p in proposals] == ["relu:s0", "relu:s1"]
    assert proposals[0]["outcome"] == "candidate c0001" and proposals[1]["outcome"] is None
    assert proposals[1]["parent_id"] == "c0001" and proposals[0]["seed"] == 11

    cands = again.candidates()
    assert [c["id"] for c in cands] == ["c0001", "c0002"]
    assert cands[0]["status"] == "correct" and cands[0]["speedup"] == 1.5
    assert cands[0]["tokens_in"] == 10 and cands[0]["cost_usd"] == 0.5 and cands[0]["code"] == "print(1)\n"
    assert cands[1]["status"] == "incorrect" and cands[1]["speedup"] is None
    assert [c["id"] for c in again.candidates("relu")] == ["c0001", "c0002"]
    assert again.candidates("softmax") == []
    assert again.candidate_by_hash("relu", "h2")["id"] == "c0002"
    assert again.candidate_by_hash("softmax", "h2") is None

    results = again.results()
    assert [r["candidate_id"] for r in results] == ["c0001", "c0002"]
    assert results[0]["timing"] == {"median_ms": 2.0} and results[0]["status"] == "correct"

    events = again.events()
    assert [e["event"] for e in events] == ["run_started", "result"]
    assert again.events(after_seq=events[0]["seq"]) == events[1:]
    again.close()


def test_store_result_is_replaced_and_duplicates_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path, create=True)
    _fill(store)
    store.add_result("c0002", {"problem_id": "relu", "status": "timeout"})
    store.add_candidate({"id": "c0001", "proposal_id": "x", "problem_id": "relu", "code": "other", "code_hash": "z"})
    store.add_proposal({"id": "relu:s0", "problem_id": "relu", "step": 9, "seed": 0})
    assert [r["status"] for r in store.results()] == ["correct", "timeout"]
    assert store.candidates()[0]["code"] == "print(1)\n"
    assert store.proposals()[0]["step"] == 0
    store.close()


def test_store_uses_wal_and_is_readable_while_open(tmp_path: Path) -> None:
    store = Store(tmp_path, create=True)
    _fill(store)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    # a second connection (the dashboard, `kforge report`) sees every committed row at once
    reader = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert reader.execute("SELECT count(*) FROM results").fetchone()[0] == 2
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    finally:
        reader.close()
    assert (tmp_path / f"{DB_NAME}-wal").exists()
    store.close()


def test_store_survives_a_writer_that_never_closes(tmp_path: Path) -> None:
    """Rows are committed as they are written (autocommit): a crash after a write loses nothing."""
    store = Store(tmp_path, create=True)
    _fill(store)
    other = Store(tmp_path)  # a new connection, without closing the first
    assert len(other.results()) == 2 and other.get_meta("status") == "running"
    other.close()
    store.close()


def test_store_writes_from_another_thread(tmp_path: Path) -> None:
    store = Store(tmp_path, create=True)
    _fill(store)
    thread = threading.Thread(target=store.add_event, args=({"event": "summary", "ts": 3.0},))
    thread.start()
    thread.join()
    assert [e["event"] for e in store.events()][-1] == "summary"
    store.close()


def test_store_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a kforge run directory"):
        Store(tmp_path / "nothing")


# -- metrics --------------------------------------------------------------------------------------
def _r(pid: str, status: str, speedup: float | None = None, cid: str | None = None) -> dict:
    return {"problem_id": pid, "status": status, "speedup": speedup, "candidate_id": cid}


def best_per_problem(results: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return summarise_run(results, list(dict.fromkeys(str(r["problem_id"]) for r in results)))["best"]


def test_best_per_problem_prefers_the_fastest_correct() -> None:
    results = [_r("a", "incorrect", None, "c1"), _r("a", "correct", 1.2, "c2"), _r("a", "correct", 0.9, "c3"),
               _r("a", "incorrect", 5.0, "c4"), _r("b", "timeout", None, "c5")]
    best = best_per_problem(results)
    assert best["a"]["candidate"] == "c2"
    assert best["b"]["status"] == "timeout"  # no correct one: a failure is kept to show


def test_a_correct_result_without_a_timing_solves_its_problem() -> None:
    """Before, a correct but untimed result after a failure left the problem unsolved in the summary
    while the report counted it solved."""
    s = summarise_run([_r("a", "incorrect", None, "c1"), _r("a", "correct", None, "c2")], ["a"])
    assert s["problems_solved"] == 1 and s["best"]["a"] == {"candidate": "c2", "status": "correct", "speedup": None}
    assert s["geomean_speedup"] is None


def test_fast_p_denominator_is_all_problems_and_threshold_is_strict() -> None:
    problems = ["a", "b", "c", "d", "e"]
    best = best_per_problem([
        _r("a", "correct", 2.0),
        _r("b", "correct", 1.0),   # exactly 1.0: not faster than eager
        _r("c", "correct", 0.5),
        _r("d", "incorrect", 3.0),  # a fast wrong kernel counts for nothing
        # e: never produced a result, still in the denominator
    ])
    assert fast_p(best, problems, 0.0) == pytest.approx(3 / 5)
    assert fast_p(best, problems, 0.5) == pytest.approx(2 / 5)   # 0.5 is not > 0.5
    assert fast_p(best, problems, 1.0) == pytest.approx(1 / 5)   # 1.0 is not > 1.0
    assert fast_p(best, problems, 1.99) == pytest.approx(1 / 5)
    assert fast_p(best, problems, 2.0) == 0.0
    assert fast_p(best, [], 1.0) == 0.0


def test_fast_p_matches_the_kernelbench_definition() -> None:
    """fast_p = (1/N) * sum over all N problems of [correct and speedup > p], by brute force."""
    problems = [f"p{i}" for i in range(7)]
    results = [_r("p0", "correct", 0.3), _r("p0", "correct", 1.7), _r("p1", "incorrect", 9.0),
               _r("p2", "correct", 1.0), _r("p3", "compile_error"), _r("p4", "correct", 0.8),
               _r("p5", "correct", 2.5), _r("p5", "runtime_error")]
    best = best_per_problem(results)
    for p in FAST_P + (0.3, 1.7, 2.5):
        expected = sum(
            1 for pid in problems
            if any(r["problem_id"] == pid and r["status"] == "correct" and r["speedup"] > p for r in results)
        ) / len(problems)
        assert fast_p(best, problems, p) == pytest.approx(expected), p


def test_geomean() -> None:
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert geomean([0.5, 2.0, 1.0]) == pytest.approx(1.0)
    assert geomean([]) is None
    assert geomean([None, 0.0]) is None  # type: ignore[list-item]
    values = [0.37, 1.9, 1.1, 3.3]
    assert geomean(values) == pytest.approx(statistics.geometric_mean(values))


def test_summary_geomean_is_over_the_best_correct_per_problem() -> None:
    problems = ["a", "b", "c", "d"]
    results = [_r("a", "correct", 2.0, "c1"), _r("a", "correct", 1.0, "c2"), _r("b", "correct", 0.5, "c3"),
               _r("c", "incorrect", 10.0, "c4"), _r("c", "timeout", None, "c5")]
    s = summarise_run(results, problems)
    assert s["geomean_speedup"] == pytest.approx(math.sqrt(2.0 * 0.5))  # a's best and b; c and d excluded
    assert s["problems"] == 4 and s["candidates"] == 5 and s["correct"] == 3
    assert s["correctness_rate"] == pytest.approx(3 / 5)
    assert s["statuses"] == {"correct": 3, "incorrect": 1, "timeout": 1}
    assert s["problems_solved"] == 2
    assert s["fast_p"]["0"] == pytest.approx(2 / 4) and s["fast_p"]["1"] == pytest.approx(1 / 4)
    assert set(s["fast_p"]) == {f"{p:g}" for p in FAST_P}
    assert s["best"]["a"] == {"candidate": "c1", "status": "correct", "speedup": 2.0}
    assert s["best"]["c"]["status"] in ("incorrect", "timeout") and "d" not in s["best"]


def test_summary_of_nothing() -> None:
    s = summarise_run([], ["a"])
    assert s["geomean_speedup"] is None and s["correctness_rate"] == 0.0
    assert all(v == 0.0 for v in s["fast_p"].values())


def _pass_at_k_brute_force(n: int, c: int, k: int) -> Fraction:
    """The probability that k of n samples, drawn without replacement, include a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(1 for s in subsets if any(samples[i] for i in s))
    return Fraction(hits, len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_is_unbiased(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = _pass_at_k_brute_force(n, c, k)
            assert pass_at_k(n, c, k) == pytest.approx(float(expected), abs=1e-12), (n, c, k)


def test_pass_at_k_closed_form_for_larger_n() -> None:
    for n, c, k in ((200, 13, 1), (200, 13, 10), (200, 0, 100), (50, 49, 2), (100, 1, 100)):
        expected = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_summary_reports_pass_at_k_over_problems_with_enough_samples() -> None:
    from kforge.metrics import pass_at_k, summarise_run

    results = [{"problem_id": "a", "status": s, "speedup": 1.0 if s == "correct" else None}
               for s in ["correct", "incorrect", "incorrect", "incorrect", "incorrect"]]
    results += [{"problem_id": "b", "status": "incorrect", "speedup": None}]
    summary = summarise_run(results, ["a", "b"])
    assert summary["pass_at_k"]["1"] == (pass_at_k(5, 1, 1) + pass_at_k(1, 0, 1)) / 2
    assert summary["pass_at_k"]["5"] == 1.0  # only problem a has 5 samples, and one of them is correct
    assert "10" not in summary["pass_at_k"]
