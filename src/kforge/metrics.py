"""The one summary of a run and of each problem, and the metrics as KernelBench defines them.

Every view of a run reads its figures from here: the live table and the final summary of
``kforge run``, ``kforge report`` and ``kforge compare``, the dashboard and ``--json``. They fold the
same records (a result, a re-timing) into :class:`ProblemSummary` one at a time, from the store's
rows (:func:`summarise`) or from its events as they arrive, so they can never disagree.

This module imports nothing else of kforge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kforge.store import RunReader

FAST_P = (0.0, 0.5, 0.8, 1.0, 1.5, 2.0)

# verdicts on a re-timed winner (see kforge.api.Retime)
ACCEPTED = "accepted"  # correct again, and not much slower than first measured: its re-timing is reported
SLOWER = "slower"  # correct again, but more than the tolerance slower than first measured: flagged
INCORRECT = "incorrect"  # failed on the fresh inputs (or any other candidate failure): flagged
NOT_RETIMED = "not_retimed"  # the machine failed, or the re-timing took no time: flagged, says nothing
RETIME_VERDICTS = (ACCEPTED, SLOWER, INCORRECT, NOT_RETIMED)


def fast_p(best: dict[str, dict[str, Any]], problem_ids: list[str], p: float) -> float:
    """Fraction of all problems with a correct candidate whose speedup exceeds p."""
    if not problem_ids:
        return 0.0
    hits = 0
    for pid in problem_ids:
        r = best.get(pid)
        if r and r.get("status") == "correct" and r.get("speedup") is not None and r["speedup"] > p:
            hits += 1
    return hits / len(problem_ids)


def geomean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def retime_verdict(first_speedup: float | None, status: str, speedup: float | None, tolerance: float) -> str:
    """The verdict on a re-timing: ``slower`` when its speedup is below ``(1 - tolerance)`` x the first."""
    if status == "infra_error":
        return NOT_RETIMED
    if status != "correct":
        return INCORRECT
    if speedup is None:
        return NOT_RETIMED
    if first_speedup is not None and speedup < (1.0 - tolerance) * first_speedup:
        return SLOWER
    return ACCEPTED


def apply_retimes(best: dict[str, dict[str, Any]], retimes: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The reported best per problem once its winners were re-timed.

    ``best`` maps a problem to ``{candidate, status, speedup}`` from the first judgings; ``retimes``
    are the store's ``retimes`` rows. For a problem with re-timings the report is: the accepted one,
    with its re-timed speedup; else the fastest re-timing that was still correct (flagged slower);
    else, when a winner failed on fresh inputs, no correct result at all (the problem is unsolved);
    else (only machine failures) the first judging's best. Every re-timing that was not accepted is
    listed under ``flagged``; ``first_speedup`` keeps what the first judging measured."""
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for rt in retimes:
        if rt.get("verdict") in RETIME_VERDICTS:
            by_problem.setdefault(rt["problem_id"], []).append(rt)
    out = {pid: dict(b) for pid, b in best.items()}
    for pid, rts in by_problem.items():
        flagged = [{"candidate": rt["candidate_id"], "verdict": rt["verdict"], "status": rt.get("status"),
                    "first_speedup": rt.get("first_speedup"), "speedup": rt.get("speedup")}
                   for rt in rts if rt["verdict"] != ACCEPTED]
        accepted = [rt for rt in rts if rt["verdict"] == ACCEPTED]
        slower = [rt for rt in rts if rt["verdict"] == SLOWER]
        failed = [rt for rt in rts if rt["verdict"] == INCORRECT]
        pick = accepted[-1] if accepted else max(slower, key=lambda r: r["speedup"]) if slower else None
        if pick is not None:
            out[pid] = {"candidate": pick["candidate_id"], "status": "correct", "speedup": pick["speedup"],
                        "first_speedup": pick.get("first_speedup"), "retimed": True, "verdict": pick["verdict"]}
        elif failed:
            out[pid] = {"candidate": failed[0]["candidate_id"], "status": failed[0].get("status") or "incorrect",
                        "speedup": None, "first_speedup": failed[0].get("first_speedup"), "retimed": True,
                        "verdict": INCORRECT}
        else:
            out.setdefault(pid, {}).update(retimed=False)
        out[pid]["flagged"] = flagged
    return out


@dataclass
class ProblemSummary:
    """What the run knows about one problem, folded one result and one re-timing at a time.

    The best is the correct result with the highest speedup vs eager (a correct result without a
    timing still solves the problem). Once the search re-timed its winners (:meth:`add_retime`),
    the reported best is the re-timed one (:func:`apply_retimes`) and the ``best_*`` figures are its
    figures; ``first_speedup`` keeps what the first judgings measured."""

    id: str
    name: str = ""
    tried: int = 0  # judged (or statically rejected) candidates
    correct: int = 0
    in_flight: int = 0  # candidates without a result yet (the dashboard counts them)
    statuses: dict[str, int] = field(default_factory=dict)
    last_status: str | None = None
    first_correct_s: float | None = None  # seconds from the run's start to its first correct result
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best) at each improvement
    history: list[float] = field(default_factory=list)  # best so far after each result (0: none yet)
    first_speedup: float | None = None  # the first judgings' best speedup vs eager
    first: dict[str, Any] = field(default_factory=dict)  # that candidate's figures
    first_result: dict[str, Any] = field(default_factory=dict)  # the first result (shown while none is correct)
    max_vs_compile: float | None = None  # the highest speedup vs torch.compile of a correct candidate
    where: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # candidate: (island, generation)
    retimes: list[dict[str, Any]] = field(default_factory=list)  # finished re-timings of winners
    retime: dict[str, Any] | None = None  # what apply_retimes reports (None: no re-timing)
    # the reported best
    best_speedup: float | None = None
    best_candidate: str | None = None
    best_vs_compile: float | None = None
    best_roofline: float | None = None
    best_time_ms: float | None = None
    baseline_ms: float | None = None

    def add_result(self, *, candidate: str, status: str, speedup: float | None = None,
                   vs_compile: float | None = None, roofline: float | None = None, time_ms: float | None = None,
                   baseline_ms: float | None = None, t: float | None = None, island: Any = None,
                   generation: Any = None) -> bool:
        """Count one result; True when it is the problem's new best."""
        self.tried += 1
        self.last_status = status
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not self.first_result:
            self.first_result = {"candidate": candidate, "status": status, "speedup": speedup}
        improved = False
        if status == "correct":
            self.correct += 1
            if island is not None and generation is not None:
                self.where[candidate] = (island, generation)
            if self.first_correct_s is None and t is not None:
                self.first_correct_s = t
            if vs_compile is not None and (self.max_vs_compile is None or vs_compile > self.max_vs_compile):
                self.max_vs_compile = vs_compile
            if speedup is not None and (self.first_speedup is None or speedup > self.first_speedup):
                self.first_speedup = speedup
                self.first = {"candidate": candidate, "roofline": roofline, "time_ms": time_ms,
                              "baseline_ms": baseline_ms}
                improved = True
                if t is not None:
                    self.curve.append((t, speedup))
            elif not self.first:
                self.first = {"candidate": candidate}  # solved without a timing: still the problem's best
        self._report()
        self.history.append(self.best_speedup or 0.0)
        return improved

    def add_retime(self, row: Mapping[str, Any]) -> None:
        """A finished re-timing: ``candidate_id``, ``verdict``, ``status``, ``speedup``, ``first_speedup``,
        and for the figures shown ``time_ms``, ``baseline_ms``, ``roofline``, ``vs_compile``."""
        if row.get("verdict") not in RETIME_VERDICTS:
            return
        self.retimes.append({"problem_id": self.id, **row})
        self._report()

    def first_best(self) -> dict[str, Any] | None:
        """The first judgings' best: ``{candidate, status, speedup}`` (None before any result)."""
        if self.first:
            return {"candidate": self.first["candidate"], "status": "correct", "speedup": self.first_speedup}
        return dict(self.first_result) if self.first_result else None

    def reported(self) -> dict[str, Any] | None:
        """The problem's reported best, as the run's summary lists it: ``{candidate, status, speedup}``,
        and once re-timed ``first_speedup``, ``retimed``, ``verdict`` and ``flagged``."""
        first = self.first_best()
        if not self.retimes:
            return first
        return apply_retimes({self.id: first or {}}, self.retimes)[self.id]

    @property
    def solved(self) -> bool:
        rep = self.reported()
        return rep is not None and rep.get("status") == "correct"

    def _report(self) -> None:
        rep = self.reported()
        self.retime = rep if self.retimes else None
        self.best_candidate = self.best_speedup = None
        self.best_roofline = self.best_time_ms = self.baseline_ms = None
        self.best_vs_compile = self.max_vs_compile
        if rep is None or rep.get("status") != "correct":
            return
        self.best_candidate, self.best_speedup = rep.get("candidate"), rep.get("speedup")
        if rep.get("retimed"):
            pick: dict[str, Any] = next((r for r in reversed(self.retimes) if r["candidate_id"] == rep["candidate"]
                                         and r["verdict"] == rep["verdict"]), {})
            self.best_time_ms, self.baseline_ms = pick.get("time_ms"), pick.get("baseline_ms")
            self.best_roofline = pick.get("roofline")
            if pick.get("vs_compile") is not None:
                self.best_vs_compile = pick["vs_compile"]
        elif self.first.get("candidate") == self.best_candidate:
            self.best_time_ms, self.baseline_ms = self.first.get("time_ms"), self.first.get("baseline_ms")
            self.best_roofline = self.first.get("roofline")

    @property
    def best_where(self) -> tuple[Any, Any] | None:
        """(island, generation) the reported best was born on, when the search said."""
        return self.where.get(self.best_candidate or "")

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "name": self.name, "tried": self.tried, "correct": self.correct,
               "solved": self.solved, "best_speedup": self.best_speedup, "best_candidate": self.best_candidate,
               "best_speedup_vs_compile": self.best_vs_compile, "roofline_fraction": self.best_roofline,
               "best_time_ms": self.best_time_ms, "baseline_ms": self.baseline_ms,
               "time_to_first_correct_s": self.first_correct_s, "statuses": dict(self.statuses),
               "first_speedup": self.first_speedup, "retime": self.retime}
        if self.best_where is not None:
            out["island"], out["generation"] = self.best_where
        return out


def result_record(r: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a stored result (an EvalResult with ``candidate_id``) that a summary folds."""
    return {"candidate": r.get("candidate_id") or r.get("request_id") or "?", "status": r["status"],
            "speedup": r.get("speedup"), "vs_compile": r.get("speedup_vs_compile"),
            "roofline": r.get("roofline_fraction"), "time_ms": (r.get("timing") or {}).get("median_ms"),
            "baseline_ms": (r.get("baseline_eager") or {}).get("median_ms")}


def event_record(e: Mapping[str, Any]) -> dict[str, Any]:
    """The same fields, from a ``result`` event (what the live table and the dashboard fold)."""
    return {"candidate": e["candidate"], "status": e["status"], "speedup": e.get("speedup"),
            "vs_compile": e.get("speedup_vs_compile"), "roofline": e.get("roofline_fraction"),
            "time_ms": e.get("time_ms"), "baseline_ms": e.get("baseline_ms"), "island": e.get("island"),
            "generation": e.get("generation")}


def retime_record(rt: Mapping[str, Any]) -> dict[str, Any]:
    """A finished re-timing as a summary folds it, from the store's row (``result`` parsed) or a ``retime``
    event."""
    data = rt.get("result") or {}
    if "retime" in rt and "candidate" in rt:  # an event
        return {"candidate_id": rt["candidate"], "verdict": rt.get("verdict"), "status": rt.get("status"),
                "speedup": rt.get("speedup"), "first_speedup": rt.get("first_speedup"),
                "time_ms": rt.get("time_ms"), "baseline_ms": rt.get("baseline_ms"),
                "roofline": rt.get("roofline_fraction"), "vs_compile": rt.get("speedup_vs_compile")}
    return {"candidate_id": rt["candidate_id"], "verdict": rt.get("verdict"), "status": rt.get("status"),
            "speedup": rt.get("speedup"), "first_speedup": rt.get("first_speedup"),
            "time_ms": (data.get("timing") or {}).get("median_ms"),
            "baseline_ms": (data.get("baseline_eager") or {}).get("median_ms"),
            "roofline": data.get("roofline_fraction"), "vs_compile": data.get("speedup_vs_compile")}


def problem_summaries(results: Iterable[Mapping[str, Any]], problem_ids: Iterable[str] = (),
                      retimes: Iterable[Mapping[str, Any]] = (), names: Mapping[str, str] | None = None,
                      times: Mapping[str, float] | None = None, started: float | None = None,
                      where: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, ProblemSummary]:
    """Each problem's summary from stored results and re-timings. ``times`` (when each candidate's
    result was recorded) and ``started`` give the time to first correct and the curve; ``where`` (a
    candidate's proposal params) the island and generation."""
    out = {pid: ProblemSummary(pid, (names or {}).get(pid) or "") for pid in problem_ids}
    for r in results:
        st = out.setdefault(r["problem_id"], ProblemSummary(r["problem_id"]))
        rec = result_record(r)
        ts = (times or {}).get(rec["candidate"])
        params = (where or {}).get(rec["candidate"]) or {}
        st.add_result(**rec, t=None if ts is None or started is None else max(ts - started, 0.0),
                      island=params.get("island"), generation=params.get("generation"))
    for rt in retimes:
        if rt.get("verdict") in RETIME_VERDICTS:
            out.setdefault(rt["problem_id"], ProblemSummary(rt["problem_id"])).add_retime(retime_record(rt))
    return out


def run_figures_of(problems: Mapping[str, ProblemSummary], problem_ids: list[str] | None = None) -> dict[str, Any]:
    """The run's figures from its problems' summaries: ``problems``, ``candidates``, ``correct``,
    ``correctness_rate``, ``statuses``, ``problems_solved``, ``fast_p`` (over all problems),
    ``geomean_speedup`` (over each solved problem's reported best), ``pass_at_k`` and ``best``."""
    ids = list(problems) if problem_ids is None else problem_ids
    best = {pid: rep for pid in ids if pid in problems and (rep := problems[pid].reported()) is not None}
    for pid, b in best.items():
        w = problems[pid].best_where
        if w is not None and b.get("status") == "correct":
            b["island"], b["generation"] = w
    statuses: dict[str, int] = {}
    for st in problems.values():
        for status, count in st.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    n = sum(st.tried for st in problems.values())
    correct = sum(st.correct for st in problems.values())
    pass_k = {}
    for k in (1, 5, 10):
        vals = [pass_at_k(st.tried, st.correct, k) for st in problems.values() if st.tried >= k]
        if vals:
            pass_k[str(k)] = sum(vals) / len(vals)  # mean over the problems with at least k samples
    speedups = [b["speedup"] for b in best.values() if b.get("status") == "correct" and b.get("speedup") is not None]
    return {
        "pass_at_k": pass_k,
        "problems": len(ids),
        "candidates": n,
        "correct": correct,
        "correctness_rate": correct / n if n else 0.0,
        "statuses": statuses,
        "problems_solved": sum(1 for b in best.values() if b.get("status") == "correct"),
        "fast_p": {f"{p:g}": fast_p(best, ids, p) for p in FAST_P},
        "geomean_speedup": geomean(speedups),
        "best": best,
    }


def summarise_run(results: list[dict[str, Any]], problem_ids: list[str],
                  retimes: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The run's figures from its results and re-timings (see :func:`run_figures_of`). With
    ``retimes``, each problem's best, ``fast_p``, ``geomean_speedup`` and ``problems_solved`` use the
    re-timed figures (:func:`apply_retimes`); ``candidates``, ``correct``, ``statuses`` and
    ``pass_at_k`` count the first judgings (the samples)."""
    retimes = [r for r in retimes if r.get("verdict") in RETIME_VERDICTS]
    summary = run_figures_of(problem_summaries(results, problem_ids, retimes), problem_ids)
    summary["retimes"] = len(retimes)
    return summary


def summarise(store: RunReader) -> tuple[dict[str, Any], dict[str, ProblemSummary]]:
    """The run's figures and each problem's summary, read from its store: what the final summary,
    ``kforge report`` and ``--json`` print."""
    problems = store.problems()
    results = store.results()
    retimes = store.retimes(finished=True)
    problem_ids = [p["id"] for p in problems] or list(dict.fromkeys(r["problem_id"] for r in results))
    judged = sorted({r["candidate_id"] for r in results if r.get("status") == "correct" and r.get("candidate_id")})
    stats = problem_summaries(results, problem_ids, retimes, names={p["id"]: p["name"] or "" for p in problems},
                              times=store.result_times(), started=store.started(),
                              where=store.proposal_params(judged))
    summary = run_figures_of(stats, problem_ids)
    summary["retimes"] = len(retimes)
    summary["per_problem"] = {pid: stats[pid].as_dict() for pid in problem_ids if pid in stats}
    return summary, stats
