"""Does the dashboard keep up with 200 results a second?

A writer thread fills a run's store the way the engine does (a proposal, a candidate and a result per
candidate, each with its event, one transaction per step, real EvalResult JSON from the quickstart),
at a fixed rate, while the dashboard is attached to the run (headless, through ``App.run_test``). It
measures, and reports without asserting:

- the rate the writer reached, and the slowest store write (the dashboard must never block it);
- the lag from a result's commit to the moment the dashboard showed it (median, p95, max);
- how long the dashboard's event loop stalled (a 10 ms ticker's worst overshoot, p99);
- how long a key press took to be handled while results poured in.

    python benchmarks/tui_throughput.py                  # 200 results/s for 10 s over 50 problems
    python benchmarks/tui_throughput.py --rate 500 --seconds 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DUMP = REPO / "tests" / "tui" / "data" / "quickstart_run.json"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(int(q * len(values)), len(values) - 1)]


class Writer:
    """Runs in its own process, as the engine does: it competes with the dashboard for the CPU, not for
    its interpreter."""

    def __init__(self, run_dir: Path, rate: float, seconds: float, problems: int) -> None:
        from kforge.store import Store

        dump = json.loads(DUMP.read_text())
        self.templates = [r for r in dump["results"] if r.get("timing")] + [r for r in dump["results"]
                                                                            if not r.get("timing")]
        self.code = dump["candidates"][0]["code"]
        self.rate, self.seconds = rate, seconds
        self.problem_ids = [f"problem_{i:03d}" for i in range(problems)]
        self.store = Store(run_dir, create=True)
        recipe = copy.deepcopy(dump["meta"]["recipe"])
        recipe["budget"] = {"candidates": int(rate * seconds), "wall_clock_s": seconds * 2}
        for key, value in (("recipe", recipe), ("name", "throughput"), ("started", time.time()),
                           ("status", "running")):
            self.store.set_meta(key, value)
        self.commit_time: dict[int, float] = {}  # event seq of each result -> when it was committed
        self.slowest_write = 0.0
        self.written = 0
        self.elapsed = 0.0

    def _event(self, event: dict[str, Any]) -> int:
        self.store.add_event(event)
        return int(self.store.db.execute("SELECT last_insert_rowid()").fetchone()[0])

    def run(self) -> None:
        s = self.store
        with s.transaction():
            for pid in self.problem_ids:
                s.add_problem({"id": pid, "name": pid, "level": 1, "hash": "0"}, "small")
            self._event({"event": "run_started", "ts": time.time(), "run_dir": str(s.run_dir), "name": "throughput",
                         "problems": self.problem_ids, "seed": 0})
        start = time.monotonic()
        n = 0
        best: dict[str, float] = {}
        while True:
            due = start + n / self.rate
            now = time.monotonic()
            if now - start >= self.seconds:
                break
            if due > now:
                time.sleep(due - now)
            n += 1
            pid = self.problem_ids[n % len(self.problem_ids)]
            cid = f"c{n:06d}"
            prop: dict[str, Any] = {"id": f"{pid}:s{n}", "problem_id": pid, "step": n, "seed": n, "params": {"island": n % 4}}
            result = dict(self.templates[n % len(self.templates)], problem_id=pid, request_id=cid, candidate_id=cid)
            if result.get("speedup") is not None:
                result["speedup"] = result["speedup_vs_eager"] = 0.5 + (n % 97) / 40
            t0 = time.perf_counter()
            with s.transaction():
                s.add_proposal(prop)
                self._event({"event": "proposal", "ts": time.time(), "proposal": prop["id"], "problem": pid,
                             "step": n})
                s.add_candidate({"id": cid, "proposal_id": prop["id"], "problem_id": pid, "code": self.code,
                                 "code_hash": cid, "generator": "bench", "label": f"variant {n}"})
                s.set_proposal_outcome(prop["id"], f"candidate {cid}")
                self._event({"event": "candidate", "ts": time.time(), "candidate": cid, "problem": pid,
                             "label": f"variant {n}", "generator": "bench", "proposal": prop["id"]})
            with s.transaction():
                s.add_result(cid, result)
                seq = self._event({"event": "result", "ts": time.time(), "problem": pid, "candidate": cid,
                                   "label": f"variant {n}", "status": result["status"], "speedup": result.get("speedup"),
                                   "device": result.get("device"), "device_kind": result.get("device_kind"),
                                   "guard": result.get("guard"), "error": result.get("error"),
                                   "time_ms": (result.get("timing") or {}).get("median_ms"),
                                   "roofline_fraction": None, "speedup_vs_compile": None})
                if result.get("speedup") is not None and result["speedup"] > best.get(pid, 0.0):
                    best[pid] = result["speedup"]
                    self._event({"event": "best_improved", "ts": time.time(), "problem": pid, "candidate": cid,
                                 "speedup": result["speedup"]})
            self.commit_time[seq] = time.monotonic()
            self.slowest_write = max(self.slowest_write, time.perf_counter() - t0)
            self.written = n
        self.elapsed = time.monotonic() - start
        with s.transaction():
            self._event({"event": "run_finished", "ts": time.time(), "run_dir": str(s.run_dir), "status": "finished"})
            s.set_meta("status", "finished")
            s.set_meta("elapsed_s", self.elapsed)
        s.close()


def write_run(run_dir: str, rate: float, seconds: float, problems: int, report: str, go: str) -> None:
    """The writer process: create the store, wait for ``go`` to exist, fill the store, then leave its
    figures in ``report`` (a JSON file). Times are CLOCK_MONOTONIC, shared by every process."""
    w = Writer(Path(run_dir), rate, seconds, problems)
    while not Path(go).exists():
        time.sleep(0.01)
    w.run()
    Path(report).write_text(json.dumps({"commit_time": w.commit_time, "slowest_write": w.slowest_write,
                                        "written": w.written, "elapsed": w.elapsed}))


async def measure(rate: float, seconds: float, problems: int, poll: float) -> dict[str, Any]:
    from textual import events

    from kforge.tui.app import KforgeApp
    from kforge.tui.screens import RunScreen
    from kforge.tui.widgets import ProblemTable

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        report, go = Path(tmp) / "writer.json", Path(tmp) / "go"
        writer = multiprocessing.get_context("spawn").Process(
            target=write_run, args=(str(run_dir), rate, seconds, problems, str(report), str(go)), daemon=True)
        writer.start()
        while not (run_dir / "kforge.db").exists():
            await asyncio.sleep(0.01)
        app = KforgeApp(run_dir, poll_interval=poll)
        shown: list[tuple[float, int]] = []  # (when, last event seq shown)
        stalls: list[float] = []
        idle_stalls: list[float] = []
        keys: list[float] = []
        handler: list[float] = []  # seconds each screen update took on the UI thread
        async with app.run_test(size=(140, 42)) as pilot:
            while not isinstance(app.screen, RunScreen):
                await pilot.pause(0.01)
            screen = app.screen
            original = screen.show_changes

            def spy(changes: Any) -> None:
                t = time.perf_counter()
                original(changes)
                handler.append(time.perf_counter() - t)
                shown.append((time.monotonic(), screen.state.last_seq))

            setattr(screen, "show_changes", spy)  # noqa: B010 - a spy on the instance

            async def ticker(out: list[float], until: float | None = None) -> None:
                while (time.monotonic() < until) if until is not None else writer.is_alive():
                    t = time.monotonic()
                    await asyncio.sleep(0.01)
                    out.append(time.monotonic() - t - 0.01)

            # the same ticker with nothing arriving: what this machine's scheduling costs on its own
            await ticker(idle_stalls, until=time.monotonic() + 2.0)
            go.touch()
            tick = asyncio.ensure_future(ticker(stalls))
            table = screen.query_one(ProblemTable)
            table.focus()
            while writer.is_alive():
                await asyncio.sleep(0.5)
                # a key press as the terminal sends it; handled when the table's cursor has moved
                before = table.cursor_row
                t = time.monotonic()
                app.post_message(events.Key("down" if len(keys) % 2 == 0 else "up", None))
                while table.cursor_row == before and time.monotonic() - t < 5:
                    await asyncio.sleep(0.001)
                keys.append(time.monotonic() - t)
            await tick
            writer.join()
            w = json.loads(report.read_text())
            deadline = time.monotonic() + 30
            while not screen.state.finished and time.monotonic() < deadline:
                await pilot.pause(0.05)
            caught_up = time.monotonic()
            results_shown = screen.state.n_results
            cells = screen.query_one(ProblemTable).row_count
    lags = []
    j = 0
    commit_time = {int(k): v for k, v in w["commit_time"].items()}
    for seq, committed in sorted(commit_time.items()):
        while j < len(shown) and shown[j][1] < seq:
            j += 1
        if j < len(shown):
            lags.append(shown[j][0] - committed)
    last_commit = max(commit_time.values(), default=caught_up)
    return {
        "target_rate": rate, "seconds": seconds, "problems": problems, "poll_interval_s": poll,
        "results_written": w["written"], "writer_rate": round(w["written"] / max(w["elapsed"], 1e-9), 1),
        "slowest_store_write_ms": round(1000 * w["slowest_write"], 2),
        "results_shown": results_shown, "problem_rows": cells, "screen_updates": len(shown),
        "update_ms": {"median": round(1000 * statistics.median(handler), 2) if handler else None,
                      "max": round(1000 * max(handler), 2) if handler else None},
        "lag_ms": {"median": round(1000 * statistics.median(lags), 1) if lags else None,
                   "p95": round(1000 * pct(lags, 0.95), 1), "max": round(1000 * max(lags), 1) if lags else None},
        "caught_up_after_last_write_ms": round(1000 * (caught_up - last_commit), 1),
        "loop_stall_ms": {"p99": round(1000 * pct(stalls, 0.99), 1), "max": round(1000 * max(stalls), 1)
                          if stalls else None},
        "idle_loop_stall_ms": {"p99": round(1000 * pct(idle_stalls, 0.99), 1),
                               "max": round(1000 * max(idle_stalls), 1) if idle_stalls else None},
        "key_press_ms": {"median": round(1000 * statistics.median(keys), 1) if keys else None,
                         "max": round(1000 * max(keys), 1) if keys else None},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0, help="results per second to write")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--poll", type=float, default=0.25, help="the dashboard's poll interval (its default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = asyncio.run(measure(args.rate, args.seconds, args.problems, args.poll))
    keeps_up = (r["results_shown"] == r["results_written"] and r["writer_rate"] >= 0.95 * r["target_rate"]
                and (r["lag_ms"]["p95"] or 0) < 1000 and (r["loop_stall_ms"]["p99"] or 0) < 100)
    r["keeps_up"] = keeps_up
    if args.json:
        print(json.dumps(r))
        return
    print(f"writer: {r['results_written']} results in {r['seconds']:.0f} s = {r['writer_rate']}/s "
          f"(target {r['target_rate']:.0f}/s), slowest store write {r['slowest_store_write_ms']} ms")
    print(f"dashboard: showed {r['results_shown']} results over {r['problem_rows']} problem rows in "
          f"{r['screen_updates']} screen updates (poll every {r['poll_interval_s']} s), each taking "
          f"median {r['update_ms']['median']} ms, max {r['update_ms']['max']} ms of the UI thread")
    print(f"lag commit -> on screen: median {r['lag_ms']['median']} ms, p95 {r['lag_ms']['p95']} ms, "
          f"max {r['lag_ms']['max']} ms; caught up {r['caught_up_after_last_write_ms']} ms after the last write")
    print(f"event loop stalls: p99 {r['loop_stall_ms']['p99']} ms, max {r['loop_stall_ms']['max']} ms "
          f"(idle, before the writer starts: p99 {r['idle_loop_stall_ms']['p99']} ms, "
          f"max {r['idle_loop_stall_ms']['max']} ms); "
          f"key presses: median {r['key_press_ms']['median']} ms, max {r['key_press_ms']['max']} ms")
    print("keeps up: " + ("yes" if keeps_up else "NO"))
    sys.exit(0)


if __name__ == "__main__":
    main()
