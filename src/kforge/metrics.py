"""Run metrics as KernelBench defines them, computed from stored results."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

FAST_P = (0.0, 0.5, 0.8, 1.0, 1.5, 2.0)


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


def summarise_run(results: list[dict[str, Any]], problem_ids: list[str]) -> dict[str, Any]:
    best = best_per_problem(results)
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
        "best": {p: {"candidate": best[p].get("candidate_id"), "status": best[p]["status"],
                     "speedup": best[p].get("speedup")} for p in problem_ids if p in best},
    }
