"""kforge serve for real: HTTP on loopback, the CPU judge (Triton's interpreter), the SQLite queue.

One server (a token, small limits) serves most tests; each judged candidate costs seconds on the CPU,
so the tests share it and judge as few as they can."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("aiohttp")

from kforge.client import AsyncClient, Client, ServiceError  # noqa: E402
from kforge.rewards import reward  # noqa: E402
from kforge.serve.launch import ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RELU = REPO / "recipes" / "quickstart" / "candidates" / "relu"
CORRECT = (RELU / "correct.py").read_text()
WRONG = (RELU / "wrong_slope.py").read_text()
HANG = (RELU / "hang.py").read_text()
PLAIN_TORCH = ("import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
               "    def forward(self, x):\n        return torch.relu(x)\n")
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_env: dict[str, str]) -> Any:
    db = tmp_path_factory.mktemp("serve") / "queue.db"
    args = ["--device", "cpu", "--token", TOKEN, "--max-body-bytes", "65536", "--max-code-bytes", "8192",
            "--max-batch", "3", "--max-pending-per-token", "3", "--set", "eval.min_samples=0"]
    with ServerProcess(args, db=db, env=dict(base_env)) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Any:
    with Client(server.url, token=TOKEN, retries=0) as c:
        yield c


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"code", "message", "fix"}, body
    assert body["error"]["message"] and body["error"]["fix"]
    return dict(body["error"])


def test_every_4xx_names_what_to_fix(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = server.url + "/v1/evaluations"
    good = {"problem": "relu", "code": CORRECT}
    with httpx.Client(timeout=30) as http:
        r = http.post(url, json=good)
        assert r.status_code == 401 and _error(r)["code"] == "token_required"
        r = http.post(url, json=good, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and _error(r)["code"] == "bad_token"
        r = http.post(url, content=b"{not json", headers=auth)
        assert r.status_code == 400 and _error(r)["code"] == "malformed_json"
        r = http.post(url, json=[good], headers=auth)
        assert r.status_code == 400 and _error(r)["code"] == "malformed_request"
        r = http.post(url, json={**good, "cod": 1}, headers=auth)
        assert r.status_code == 400 and "cod" in _error(r)["message"]
        r = http.post(url, json={"problem": "relu"}, headers=auth)
        assert r.status_code == 400 and "code" in _error(r)["message"]
        r = http.post(url, content=b'{"x": "' + b"a" * 70000 + b'"}', headers=auth)
        assert r.status_code == 413 and _error(r)["code"] == "body_too_large"
        r = http.post(url, json={"problem": "relu", "code": CORRECT + "#" * 9000}, headers=auth)
        err = _error(r)
        assert r.status_code == 413 and err["code"] == "candidate_too_large" and "8192" in err["message"]
        r = http.post(url, json={"problem": "rleu", "code": CORRECT}, headers=auth)
        err = _error(r)
        assert r.status_code == 404 and err["code"] == "unknown_problem" and "'relu'" in err["message"]
        r = http.post(url, json={**good, "backend": "cobol"}, headers=auth)
        assert r.status_code == 422 and "cobol" in _error(r)["message"]
        r = http.post(url, json={**good, "settings": {"trails": 5}}, headers=auth)
        err = _error(r)
        assert r.status_code == 422 and "settings.trails" in err["message"] and "'trials'" in err["message"]
        r = http.post(server.url + "/v1/batches", json={"jobs": [good] * 4}, headers=auth)
        assert r.status_code == 413 and _error(r)["code"] == "batch_too_large"
        r = http.get(server.url + "/v1/evaluations/j_nope", headers=auth)
        assert r.status_code == 404 and _error(r)["code"] == "unknown_job"
        r = http.get(server.url + "/v1/stream", headers=auth)
        assert r.status_code == 400 and "batch" in _error(r)["message"]
        # nothing above was accepted
        assert http.get(server.url + "/v1/health", headers=auth).json()["jobs"]["queued"] == 0


def test_evaluate_is_idempotent_and_static_rejections_skip_the_judge(client: Client, server: ServerProcess) -> None:
    job = client.submit("relu", CORRECT, idempotency_key="once")
    again = client.submit("relu", CORRECT, idempotency_key="once")
    assert job.created is True and again.created is False and again.id == job.id
    with pytest.raises(ServiceError) as exc:  # the same key for another body is refused, not merged
        client.submit("relu", WRONG, idempotency_key="once")
    assert exc.value.status == 409
    result = client.result(job.id, timeout=240)
    assert result.status == "correct" and result.request_id == job.id
    assert result.trials_passed == result.trials_run == 5 and result.device_kind == "cpu"
    assert reward(result) == 1.0  # correct and not timed (min_samples=0 on this server): parity
    rejected = client.result(client.submit("relu", PLAIN_TORCH).id, timeout=60)
    assert rejected.status == "rejected" and rejected.guard == "needs-kernel"
    assert rejected.device == "static check (not run)" and not rejected.durations_s  # no judge time
    assert reward(rejected) == 0.0
    maps = Path(f"/proc/{server.pid}/maps")
    if maps.exists():  # the server process queued and checked the candidates; it never imported them
        loaded = maps.read_text()
        assert "libtorch" not in loaded and "triton" not in loaded
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'kforge_serve_results_total{status="correct"} 1' in metrics  # judged once, not twice
    assert 'kforge_serve_jobs{state="done"} 2' in metrics


def test_concurrent_clients_and_a_stream_that_disconnects(server: ServerProcess) -> None:
    results: dict[str, Any] = {}
    submitted = threading.Event()

    def sync_client() -> None:
        with Client(server.url, token=TOKEN) as c:
            job = c.submit("relu", WRONG)
            results["sync_id"] = job.id
            submitted.set()
            results["sync"] = c.result(job.id, timeout=240)

    async def async_client() -> None:
        async with AsyncClient(server.url, token=TOKEN) as c:
            inline = (REPO / "src" / "kforge" / "problems" / "builtin" / "relu.py").read_text()
            results["async"] = [r async for r in c.evaluate_many([{"problem": inline, "code": CORRECT}])]

    threads = [threading.Thread(target=sync_client), threading.Thread(target=lambda: asyncio.run(async_client()))]
    for t in threads:
        t.start()
    assert submitted.wait(60)
    # a third client opens the stream of the sync client's job and goes away before its result
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=30) as http, http.stream("GET", server.url + "/v1/stream",
                                                       params={"ids": results["sync_id"]}, headers=auth) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    for t in threads:
        t.join(300)
    assert results["sync"].status == "incorrect" and results["sync"].guard == "tolerance"  # its job went on
    assert [r.status for r in results["async"]] == ["correct"]
    assert results["async"][0].problem_id.startswith("inline-")
    with Client(server.url, token=TOKEN) as c:
        health = c.health()
    assert health["streams"] == 0 and health["status"] == "ok" and health["jobs"]["running"] == 0


def test_judge_that_dies_gives_infrastructure_not_kernel(client: Client) -> None:
    assert client.health()["running"] == 0  # the judge is idle: it takes the next job at once
    job = client.submit("relu", HANG, run_timeout_s=120)
    deadline = time.monotonic() + 120
    pid = None
    while time.monotonic() < deadline:  # wait until the judge has the candidate (its sandbox is looping)
        health = client.health()
        alive = [j for j in health["judges"] if j["alive"]]
        if client.get(job.id).state == "running" and alive:
            pid = alive[0]["pid"]
            time.sleep(3)
            break
        time.sleep(0.5)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    result = client.result(job.id, timeout=120)
    assert result.status == "infra_error" and "judge" in (result.error or "")
    assert reward(result) is None  # the trainer drops it instead of punishing the policy
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the executor replaced the judge
        judges = client.health()["judges"]
        if judges and judges[0]["alive"] and judges[0]["pid"] != pid:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the judge was not replaced")


def test_pending_limit_is_429_with_retry_after_and_cancel_stops_jobs(client: Client, server: ServerProcess) -> None:
    batch_id, jobs = client.submit_batch([{"problem": "relu", "code": HANG, "settings": {"run_timeout_s": 120}}] * 3)
    with pytest.raises(ServiceError) as exc:
        client.submit("relu", CORRECT)
    assert exc.value.status == 429 and exc.value.code == "too_many_pending" and exc.value.fix
    r = httpx.post(server.url + "/v1/evaluations", json={"problem": "relu", "code": CORRECT},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    cancelled = httpx.delete(f"{server.url}/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert cancelled.json()["cancelled"] == 3
    states = {client.get(j.id).state for j in jobs}
    assert states == {"cancelled"}
    assert client.submit("relu", PLAIN_TORCH).created  # room again


def test_client_waits_for_retry_after_on_503(tmp_path: Path) -> None:
    """Against a stub server on loopback: 503 with Retry-After: 1 first, then an answer."""
    from aiohttp import web

    calls: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.json_response({"error": {"code": "queue_full", "message": "full", "fix": "retry"}},
                                     status=503, headers={"Retry-After": "1"})
        body = await request.json()
        return web.json_response({"id": "j_1", "state": "queued", "problem_id": body["problem"], "created": True},
                                 status=202)

    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_post("/v1/evaluations", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            holder["port"] = runner.addresses[0][1]
            holder["stop"] = asyncio.Event()
            ready.set()
            await holder["stop"].wait()
            await runner.cleanup()

        holder["loop"] = asyncio.new_event_loop()
        holder["loop"].run_until_complete(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(30)
    try:
        with Client(f"http://127.0.0.1:{holder['port']}", retries=2) as c:
            job = c.submit("relu", CORRECT)
        assert job.id == "j_1" and len(calls) == 2
        assert calls[1] - calls[0] >= 0.95
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        t.join(10)


def test_non_loopback_without_token_refuses_to_start(base_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "kforge", "serve", "--host", "0.0.0.0", "--db",
                           str(tmp_path / "q.db")], capture_output=True, text=True, env=base_env, timeout=60)
    assert proc.returncode == 2 and "--token" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "q.db").exists()  # refused before the queue or any judge started
