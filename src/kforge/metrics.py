"""Run metrics as KernelBench defines them, computed from stored results."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

FAST_P = (0.0, 0.5, 0.8, 1.0, 1.5, 2.0)

# verdicts on a re-timed winner (see kforge.api.Retime)
ACCEPTED = "accepted"  # correct again, and not much slower than first measured: its re-timing is reported
SLOWER = "slower"  # correct again, but more than the tolerance slower than first measured: flagged
INCORRECT = "incorrect"  # failed on the fresh inputs (or any other candidate failure): flagged
NOT_RETIMED = "not_retimed"  # the machine failed, or the re-timing took no time: flagged, says nothing
RETIME_VERDICTS = (ACCEPTED, SLOWER, INCORRECT, NOT_RETIMED)


def best_per_problem(results: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The correct result with the highest speedup for each problem (or its first result if none is correct)."""
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        pid = r["problem_id"]
        cur = best.get(pid)
        s = r.get("speedup") if r.get("status") == "correct" else None
        cs = cur.get("speedup") if cur and cur.get("status") == "correct" else None
        if cur is None or (s is not None and (cs is None or s > cs)):
            best[pid] = r
    return best


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


def summarise_run(results: list[dict[str, Any]], problem_ids: list[str],
                  retimes: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The run's figures. With ``retimes`` (the store's re-timings of winners), each problem's best,
    ``fast_p``, ``geomean_speedup`` and ``problems_solved`` use the re-timed figures
    (:func:`apply_retimes`); ``candidates``, ``correct``, ``statuses`` and ``pass_at_k`` count the
    first judgings (the samples)."""
    retimes = [r for r in retimes if r.get("verdict") in RETIME_VERDICTS]
    first = best_per_problem(results)
    best = apply_retimes({p: {"candidate": r.get("candidate_id"), "status": r["status"], "speedup": r.get("speedup")}
                          for p, r in first.items()}, retimes)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    correct = statuses.get("correct", 0)
    best_speedups = [best[p]["speedup"] for p in problem_ids if p in best and best[p].get("status") == "correct"
                     and best[p].get("speedup") is not None]
    per_problem: dict[str, list[int]] = {}
    for r in results:
        n_c = per_problem.setdefault(r["problem_id"], [0, 0])
        n_c[0] += 1
        n_c[1] += r.get("status") == "correct"
    pass_k = {}
    for k in (1, 5, 10):
        vals = [pass_at_k(n, c, k) for n, c in per_problem.values() if n >= k]
        if vals:
            pass_k[str(k)] = sum(vals) / len(vals)  # mean over the problems with at least k samples
    return {
        "pass_at_k": pass_k,
        "problems": len(problem_ids),
        "candidates": len(results),
        "correct": correct,
        "correctness_rate": correct / len(results) if results else 0.0,
        "statuses": statuses,
        "problems_solved": sum(1 for p in problem_ids if p in best and best[p].get("status") == "correct"),
        "fast_p": {f"{p:g}": fast_p(best, problem_ids, p) for p in FAST_P},
        "geomean_speedup": geomean(best_speedups),
        "best": {p: best[p] for p in problem_ids if p in best},
        "retimes": len(retimes),
    }
