"""Orchestrator overheads, measured on this machine (no GPU needed): issue #9's CPU figures.

- `kforge --help` wall time (target < 0.3 s): a fresh process each time, median of 7.
- Engine overhead per candidate (target < 2 ms): a full `Engine.run()` (store writes in WAL mode,
  events, search, dedup) with the `tune` generator proposing real variants and a no-op executor
  that answers instantly, so what is left is the engine's own cost.
- Orchestrator memory (peak RSS) and store size per 10,000 candidates.

Usage: python benchmarks/overhead.py [--candidates 2000]
Prints a small table last.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def help_time(runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kforge", "--help"], capture_output=True, check=True,
                       env={**os.environ, "KFORGE_LOAD_PLUGINS": ""})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc; else the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def engine_overhead(n: int, result_fields: dict[str, Any] | None = None, rss_every: int = 0) -> dict[str, Any]:
    """A full Engine.run() over ``n`` tune candidates with a no-op executor. ``result_fields`` fills each
    result (e.g. a GPU result's timing samples, seeds, versions) so the store holds realistic rows;
    ``rss_every`` samples resident memory every that many results."""
    from kforge.api import Executor
    from kforge.engine import Engine
    from kforge.plugins import Registration, build_registry
    from kforge.recipe import load_recipe
    from kforge.runtime import protocol as P

    class NoopExecutor(Executor):
        name = "noop"
        description = "answers instantly: measures the engine, not the judge"
        capacity = 8

        async def start(self, log_dir: Any = None) -> None:
            self.device_info = {"device": "noop", "device_kind": "none"}

        async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
            res = P.EvalResult(request.request_id, request.problem_id, P.CORRECT, speedup_vs_eager=1.0,
                               device="noop", device_kind="none")
            for k, v in (result_fields or {}).items():
                setattr(res, k, copy.deepcopy(v))
            return res

    reg = build_registry()
    reg.items["executors"]["noop"] = Registration("executors", "noop", NoopExecutor, "benchmark")
    tmp = Path(tempfile.mkdtemp(prefix="kforge-overhead-"))
    recipe = tmp / "r.toml"
    recipe.write_text(f"""
[run]
name = "overhead"
out = "{tmp.as_posix()}"
[problems]

[generator]
name = "tune"
[search]
name = "best-of-n"
n = {n}
[executor]
name = "noop"
[budget]
candidates = {n}
""")
    rec = load_recipe(recipe, registry=reg)
    engine = Engine(rec, registry=reg)
    spent = {"generate": 0.0, "static_check": 0.0}
    gen, check = engine.generator.generate, engine.backend.static_check

    async def timed_generate(*a: Any) -> Any:
        t = time.perf_counter()
        try:
            return await gen(*a)
        finally:
            spent["generate"] += time.perf_counter() - t

    def timed_check(code: str) -> Any:
        t = time.perf_counter()
        try:
            return check(code)
        finally:
            spent["static_check"] += time.perf_counter() - t

    engine.generator.generate = timed_generate  # type: ignore[method-assign]
    engine.backend.static_check = timed_check  # type: ignore[method-assign]
    trace: list[tuple[int, float]] = [(0, rss_mb())]
    seen = {"results": 0}

    def sample(event: dict[str, Any]) -> None:
        if event.get("event") == "result":
            seen["results"] += 1
            if rss_every and seen["results"] % rss_every == 0:
                trace.append((seen["results"], rss_mb()))

    engine.bus.subscribe(sample)
    t0 = time.perf_counter()
    summary = asyncio.run(engine.run())
    wall = time.perf_counter() - t0
    trace.append((seen["results"], rss_mb()))
    db = Path(summary["run_dir"]) / "kforge.db"
    size = sum(f.stat().st_size for f in db.parent.glob("kforge.db*"))
    judged = summary["candidates"]
    own = wall - spent["generate"] - spent["static_check"]
    return {"candidates": judged, "wall_s": wall, "per_candidate_ms": 1e3 * own / max(judged, 1),
            "generate_ms": 1e3 * spent["generate"] / max(judged, 1),
            "static_check_ms": 1e3 * spent["static_check"] / max(judged, 1),
            "store_bytes": size, "store_mb_per_10k": size / max(judged, 1) * 10_000 / 2**20,
            "rss_trace_mb": [(k, round(v, 1)) for k, v in trace]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=2000)
    args = ap.parse_args()
    h = help_time()
    e = engine_overhead(args.candidates)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'measure':<44}{'value':>14}  target")
    print(f"{'kforge --help (median of 7, s)':<44}{h:>14.3f}  < 0.3")
    print(f"{'engine overhead per candidate (ms)':<44}{e['per_candidate_ms']:>14.3f}  < 2  ({e['candidates']} candidates)")
    print(f"{'  + static checks per candidate (ms)':<44}{e['static_check_ms']:>14.3f}")
    print(f"{'  + tune generator per candidate (ms)':<44}{e['generate_ms']:>14.3f}")
    print(f"{'store size per 10,000 candidates (MiB)':<44}{e['store_mb_per_10k']:>14.1f}")
    print(f"{'orchestrator peak RSS (MiB)':<44}{rss_mb:>14.1f}")


if __name__ == "__main__":
    main()
