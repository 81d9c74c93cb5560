"""kforge serve's own overhead per request, on this machine (no GPU needed): issue #18's CPU figure.

The server runs in its own process with an executor that answers instantly (so no judge time is left
in the figures); a client process sends real HTTP requests on loopback:

- submit: POST /v1/evaluations with a real Triton candidate (JSON parse, the AST static checks,
  validation, the SQLite commit), round trip;
- get: GET /v1/evaluations/{id}, round trip;
- end to end: submit, the queue, the dispatcher, the static checks (an AST walk that every judged
  candidate gets, under kforge run too), the (instant) judge, the result's commit, and the long-poll
  that returns it;
- the server's own time per request, from its /metrics (kforge_serve_handler_seconds);
- batch: POST /v1/batches of 64 jobs, per job;
- throughput: THREADS clients submitting at once, requests per second.

Usage: PYTHONPATH=src python benchmarks/serve_overhead.py [--requests 300] [--threads 4]
Target: under 5 ms per request. Prints a small table last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CODE = (ROOT / "recipes" / "quickstart" / "candidates" / "relu" / "correct.py").read_text()
TOKEN = "bench"


def serve_instant(db: str) -> None:
    """The server half: kforge's Service and queue, with an executor that answers at once."""
    from aiohttp import web

    from kforge.api import Executor
    from kforge.evaluator import Evaluator
    from kforge.runtime import protocol as P
    from kforge.serve.app import Service
    from kforge.serve.queue import JobQueue

    class Instant(Executor):
        name = "instant"
        capacity = 4
        device_info = {"device": "instant (no judge)", "device_kind": "cpu"}

        async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
            return P.EvalResult(request_id=request.request_id, problem_id=request.problem_id, status=P.CORRECT,
                                device="instant (no judge)", device_kind="cpu")

    evaluator = Evaluator(Instant()).start()

    async def main() -> None:
        runner = web.AppRunner(Service(evaluator, JobQueue(db), [TOKEN]).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def ms(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"median_ms": round(statistics.median(s) * 1000, 3), "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1000, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--serve-instant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_instant:
        serve_instant(args.serve_instant)
        return
    import subprocess

    import httpx

    tmp = tempfile.mkdtemp(prefix="kforge-serve-bench-")
    proc = subprocess.Popen([sys.executable, __file__, "--serve-instant", str(Path(tmp) / "q.db")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = {"problem": "relu", "code": CODE, "settings": {"min_samples": 0}}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for _ in range(20):  # warm-up
                http.post("/v1/evaluations", json=body)
            submit, get, e2e, ids = [], [], [], []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                r = http.post("/v1/evaluations", json=body)
                submit.append(time.perf_counter() - t0)
                ids.append(r.json()["id"])
            time.sleep(2)  # the dispatcher finishes the submitted jobs (their static checks) first
            for job_id in ids:
                t0 = time.perf_counter()
                http.get(f"/v1/evaluations/{job_id}")
                get.append(time.perf_counter() - t0)
            for _ in range(min(args.requests, 100)):
                t0 = time.perf_counter()
                job_id = http.post("/v1/evaluations", json=body).json()["id"]
                while http.get(f"/v1/evaluations/{job_id}", params={"wait": 10}).json()["state"] != "done":
                    pass
                e2e.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            n_batches = 5
            for _ in range(n_batches):
                assert http.post("/v1/batches", json={"jobs": [body] * 64}).status_code == 202
            per_batch_job = (time.perf_counter() - t0) / (n_batches * 64)
            metrics = http.get("/metrics").text
        handler = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                   if line.startswith("kforge_serve_handler_seconds_")}
        server_ms = handler["kforge_serve_handler_seconds_sum"] / handler["kforge_serve_handler_seconds_count"] * 1000

        count = [0]
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as h:
                for _ in range(args.requests // args.threads):
                    h.post("/v1/evaluations", json=body)
                    with lock:
                        count[0] += 1

        threads = [threading.Thread(target=client) for _ in range(args.threads)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rps = count[0] / (time.perf_counter() - t0)
    finally:
        proc.kill()
        proc.wait()
    import os

    from kforge.backends.triton import TritonBackend

    backend = TritonBackend()
    t0 = time.perf_counter()
    for _ in range(50):
        backend.static_check(CODE)
    static_ms = (time.perf_counter() - t0) / 50 * 1000
    rows: list[tuple[str, Any]] = [
        ("submit, round trip", ms(submit)), ("get, round trip", ms(get)),
        ("end to end with an instant judge (submit, queue, dispatch, commit, long-poll)", ms(e2e)),
        ("server's own time per request (/metrics, mean)", {"mean_ms": round(server_ms, 3)}),
        ("batch of 64, per job", {"mean_ms": round(per_batch_job * 1000, 3)}),
        ("the static checks of this candidate (judge work, run at dispatch, in-process here)",
         {"mean_ms": round(static_ms, 3)}),
        (f"{args.threads} concurrent clients", {"requests_per_s": round(rps, 1)}),
    ]
    print(f"kforge serve overhead on {os.cpu_count()} cores ({args.requests} requests; target < 5 ms per request)")
    for name, figures in rows:
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    print(json.dumps(dict(rows)))


if __name__ == "__main__":
    main()
