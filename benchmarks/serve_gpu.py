"""Issue #18's GPU benchmark: several concurrent clients submit the throughput set to one ``kforge serve``
on one GPU; the rate is compared with ``kforge run`` on the same set and card.

    PYTHONPATH=src python3 benchmarks/serve_gpu.py OUTDIR        (what serve_gpu.sh calls)

Steps (one device call: about RUN_LIMIT_S + SERVE_LIMIT_S + start-ups):
1. build the throughput set (benchmarks/throughput/make_set.py) into OUTDIR/set;
2. ``kforge run`` on it (the mixed recipe: every candidate once, no re-timing), with fresh caches, as
   benchmarks/throughput/bench.py runs it; its rate = candidates judged / wall (process start to exit);
3. ``kforge serve`` on the same GPU with the same [eval] settings and fresh caches; once it listens,
   CLIENTS threads (default 8) each take candidates from one shared list and submit them one at a
   time (submit, then wait for the result), so the server always has CLIENTS jobs in flight; its rate =
   candidates judged / wall from the first submission to the last result (the server's own start-up,
   paid once per service, is reported apart);
4. figures: both rates and their ratio (target >= 0.9), p50/p95 latency per candidate (submit to
   result), the server's own time per request from /metrics (kforge_serve_handler_seconds), and
   whether both harnesses gave each candidate the same verdict. Printed last and written to
   OUTDIR/serve_gpu.json.

Settings (environment): CLIENTS (8), DEVICE (cuda; cpu for a smoke run), RUN_LIMIT_S (240: the kforge run is stopped
cleanly after this), SERVE_LIMIT_S (240), and bench.py's MAX_SAMPLES, MAX_TIMING_S, MIN_SAMPLES,
TRIALS, WARMUP, SHAPES, HELDOUT, COMPILE_WORKERS, JUDGES_PER_GPU, SET_PROBLEMS, CUDA_N.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE / "throughput"))

import bench  # noqa: E402  (benchmarks/throughput/bench.py: the same settings and kforge run harness)
import make_set  # noqa: E402

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def serve_part(outdir: Path, set_dir: Path, manifest: dict[str, Any], limit_s: float) -> dict[str, Any]:
    from kforge.client import Client
    from kforge.serve.launch import ServerProcess

    caches = bench.fresh_caches(outdir / "cache" / "serve")
    env = dict(os.environ, **caches)
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    sets = [s for s in bench.overrides() + bench.kforge_overrides() if s.startswith(("eval.", "executor."))]
    args = ["--device", bench.env("DEVICE", "cuda") or "cuda", "--log-dir", str(outdir / "serve-logs")] + [x for s in sets for x in ("--set", s)]
    shape = next((s.split("=", 1)[1] for s in bench.overrides() if s.startswith("problems.shapes=")), "auto")
    db = outdir / "serve.db"
    db.unlink(missing_ok=True)
    t_start = time.monotonic()
    server = ServerProcess(args, db=db, env=env, start_timeout=600).start()
    startup_s = time.monotonic() - t_start
    log(f"serve: listening on {server.url} after {startup_s:.1f} s")
    entries = list(manifest["entries"])
    todo = list(range(len(entries)))
    lock = threading.Lock()
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit_s
    clients = int(bench.env("CLIENTS", "8") or 8)

    def worker() -> None:
        with Client(server.url, timeout=600) as c:
            while time.monotonic() < deadline:
                with lock:
                    if not todo:
                        return
                    i = todo.pop(0)
                e = entries[i]
                code = (set_dir / e["id"]).read_text()
                t0 = time.monotonic()
                job = c.submit(e["problem"], code, backend=e["backend"], shape=shape)
                result = c.result(job.id, timeout=max(deadline - time.monotonic(), 1) + 600)
                with lock:
                    rows.append({"id": e["id"], "status": result.status, "latency_s": time.monotonic() - t0,
                                 "speedup": result.speedup, "guard": result.guard})

    t_first = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_first
    import httpx

    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    server.stop()
    server.kill()
    handler = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
               if line.startswith("kforge_serve_handler_seconds_")}
    lat = [r["latency_s"] for r in rows]
    n = handler.get("kforge_serve_handler_seconds_count", 0)
    return {"judged": len(rows), "wall_s": round(wall, 3), "startup_s": round(startup_s, 3), "clients": clients,
            "candidates_per_minute": round(len(rows) / wall * 60, 3) if wall > 0 else None,
            "latency_p50_s": percentile(lat, 0.5), "latency_p95_s": percentile(lat, 0.95),
            "latency_mean_s": round(statistics.fmean(lat), 3) if lat else None,
            "server_ms_per_request": round(handler.get("kforge_serve_handler_seconds_sum", 0) / n * 1000, 3)
            if n else None, "requests": n, "per_candidate": rows}


def main() -> None:
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else "serve-gpu-out").resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    set_dir = outdir / "set"
    manifest = make_set.write_set(set_dir)
    log(f"set: {manifest['counts']}")
    run = bench.kforge_part(outdir, set_dir, "mixed", float(bench.env("RUN_LIMIT_S", "240") or 240))
    run_rate = run["judged"] / run["wall_s"] * 60 if run.get("wall_s") else None
    log(f"kforge run: {run['judged']} judged in {run['wall_s']} s")
    serve = serve_part(outdir, set_dir, manifest, float(bench.env("SERVE_LIMIT_S", "240") or 240))
    log(f"kforge serve: {serve['judged']} judged in {serve['wall_s']} s")
    run_status = {r["id"]: r["status"] for r in run.get("per_candidate", [])}
    serve_status = {r["id"]: r["status"] for r in serve["per_candidate"]}
    both = sorted(set(run_status) & set(serve_status))
    differ = {i: [run_status[i], serve_status[i]] for i in both if run_status[i] != serve_status[i]}
    out = {"gpu": (outdir / "gpu.txt").read_text().strip() if (outdir / "gpu.txt").exists() else None,
           "kforge_run": {k: v for k, v in run.items() if k not in ("per_candidate",)},
           "kforge_run_candidates_per_minute": round(run_rate, 3) if run_rate else None,
           "serve": {k: v for k, v in serve.items() if k != "per_candidate"},
           "rate_ratio_serve_over_run": round(serve["candidates_per_minute"] / run_rate, 3)
           if run_rate and serve["candidates_per_minute"] else None,
           "verdicts": {"judged_by_both": len(both), "differ": differ},
           "serve_per_candidate": serve["per_candidate"]}
    (outdir / "serve_gpu.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: v for k, v in out.items() if k != "serve_per_candidate"}, indent=1, default=str))


if __name__ == "__main__":
    main()
