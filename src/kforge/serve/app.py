"""``kforge serve``: the judge behind HTTP, on aiohttp, with a SQLite job queue.

The server process parses requests, checks candidates statically (an AST walk: the code is never
imported or run here), queues them, and hands them to the Evaluator's judges, which run in their own
processes as they do for ``kforge run``. docs/service.md documents every endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import math
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kforge import __version__
from kforge.evaluator import Evaluator
from kforge.options import RecipeError
from kforge.runtime import protocol as P
from kforge.serve.queue import CANCELLED, DONE, QUEUED, RUNNING, IdempotencyConflict, Job, JobQueue, NewJob

JOB_KEYS = {"problem", "code", "backend", "shape", "settings", "idempotency_key"}
MAX_ATTEMPTS = 3  # a job whose judging was interrupted this often (server crashes) is answered infra_error
SSE_KEEPALIVE_S = 15.0


@dataclass
class Limits:
    max_body_bytes: int = 8 << 20
    max_code_bytes: int = 256 << 10
    max_batch: int = 512
    max_pending_per_token: int = 1024
    max_queue: int = 10000
    inline_problems: bool = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_id(token: str | None) -> str:
    """The name a token is known by in the queue and metrics (a hash; the token itself is never stored)."""
    return "anonymous" if not token else "t_" + hashlib.sha256(token.encode()).hexdigest()[:12]


class ApiError(Exception):
    """A 4xx or 503 answer: what went wrong and what to do about it."""

    def __init__(self, status: int, code: str, message: str, fix: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fix, self.headers = status, code, message, fix, headers or {}

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "fix": self.fix}}
        return web.json_response(body, status=self.status, headers=self.headers)


def _body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class Service:
    """The HTTP handlers, the dispatcher and the figures behind /metrics."""

    def __init__(self, evaluator: Evaluator, queue: JobQueue, tokens: list[str] | None = None,
                 limits: Limits | None = None) -> None:
        self.evaluator, self.queue = evaluator, queue
        self.tokens = [t for t in (tokens or []) if t]
        self.limits = limits or Limits()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._user_cancelled: set[str] = set()
        self._wake = asyncio.Event()
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._checker: Any = None  # a one-process pool for the static checks, started on first use
        self.requests: Counter[tuple[str, int]] = Counter()
        self.results: Counter[str] = Counter()
        self.judge_seconds: deque[float] = deque(maxlen=200)
        self.handler_seconds = [0.0, 0]  # sum, count: the server's own time per request (not judging)
        self.recovered = 0
        self.started_at = time.time()
        from kforge.executors.local import gpu_names

        self.gpus = gpu_names()

    # -- lifetime ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body_bytes, middlewares=[self._middleware])
        app.add_routes([
            web.post("/v1/evaluations", self.submit_one),
            web.post("/v1/batches", self.submit_batch),
            web.get("/v1/evaluations/{id}", self.get_one),
            web.delete("/v1/evaluations/{id}", self.cancel_one),
            web.get("/v1/batches/{id}", self.get_batch),
            web.delete("/v1/batches/{id}", self.cancel_batch),
            web.get("/v1/stream", self.stream),
            web.get("/v1/problems", self.problems),
            web.get("/v1/problems/{id}", self.problem),
            web.get("/v1/health", self.health),
            web.get("/metrics", self.metrics),
        ])
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.recovered = self.queue.recover()
        self._wake = asyncio.Event()
        self._wake.set()
        self._dispatcher = asyncio.create_task(self._dispatch())

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()  # their jobs go back to the queue (requeue) for the next start
        await asyncio.gather(*tasks, return_exceptions=True)
        for q in list(self._subscribers):
            q.put_nowait("")  # wakes each stream so it ends
        if self._checker is not None:
            self._checker.shutdown(wait=False, cancel_futures=True)

    # -- dispatching ------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for job in self.queue.claim(self.evaluator.capacity - len(self._running)):
                self._running[job.id] = asyncio.create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        t0 = time.perf_counter()
        try:
            if job.attempts > MAX_ATTEMPTS:
                result = P.EvalResult(request_id=job.id, problem_id=job.problem_id, status=P.INFRA_ERROR,
                                      error=f"the server stopped while judging this job {job.attempts - 1} times; "
                                      "not judged again")
            else:
                try:
                    request = P.EvalRequest.from_dict(job.request)
                    rejected = self.evaluator.static_check(request, await self._static_problems(request))
                    result = rejected or await self.evaluator.arun(request)
                except asyncio.CancelledError:
                    if job.id not in self._user_cancelled:
                        self.queue.requeue(job.id)  # a shutdown, not the user: judge it after the restart
                    raise
                except Exception as exc:  # noqa: BLE001 - the executor failed, not the candidate
                    result = P.EvalResult(request_id=job.id, problem_id=job.problem_id, status=P.INFRA_ERROR,
                                          error=f"the executor failed: {type(exc).__name__}: {exc}")
            if self.queue.finish(job.id, result.to_dict()):
                self.results[result.status] += 1
                self.judge_seconds.append(time.perf_counter() - t0)
            self._notify(job.id)
        finally:
            self._running.pop(job.id, None)
            self._user_cancelled.discard(job.id)
            self._wake.set()

    async def _static_problems(self, request: P.EvalRequest) -> list[str]:
        """The static checks (an AST walk of a few ms) in a helper process, so they never hold up the
        event loop's answers; in a thread if that process cannot run."""
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        if self._checker is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._checker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_exit_with_parent, initargs=(os.getpid(),))
        try:
            return await loop.run_in_executor(self._checker, static_problems, request.backend,
                                              request.candidate_source)
        except (BrokenProcessPool, OSError):
            self._checker = None
            return await asyncio.to_thread(static_problems, request.backend, request.candidate_source)

    def _notify(self, job_id: str) -> None:
        for q in self._subscribers:
            q.put_nowait(job_id)

    # -- middleware: auth, errors, figures --------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        t0 = time.perf_counter()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unknown"
        try:
            self._authorise(request)
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except web.HTTPRequestEntityTooLarge:
            response = ApiError(413, "body_too_large", f"the request body is over {self.limits.max_body_bytes} bytes",
                                "send a smaller body: split the batch, or raise --max-body-bytes").response()
        except web.HTTPNotFound:
            response = ApiError(404, "no_such_route", f"no endpoint {request.method} {request.path}",
                                "see docs/service.md for the endpoints (POST /v1/evaluations, GET /v1/health...)"
                                ).response()
        except web.HTTPMethodNotAllowed as exc:
            response = ApiError(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                                f"use {', '.join(sorted(exc.allowed_methods))}").response()
        if route != "/v1/stream" and "wait" not in request.query:  # waiting is not the server's work
            self.handler_seconds[0] += time.perf_counter() - t0
            self.handler_seconds[1] += 1
        self.requests[(route, response.status)] += 1
        return response

    def _authorise(self, request: web.Request) -> None:
        if not self.tokens:
            request["token"] = token_id(None)
            return
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not given:
            raise ApiError(401, "token_required", "this server needs a bearer token",
                           "send the header 'Authorization: Bearer <token>' with a token the server was started with",
                           {"WWW-Authenticate": "Bearer"})
        for t in self.tokens:
            if hmac.compare_digest(given.encode(), t.encode()):
                request["token"] = token_id(t)
                return
        raise ApiError(401, "bad_token", "the bearer token is not one this server accepts",
                       "check the token (kforge serve --token / KFORGE_SERVE_TOKEN on the server)",
                       {"WWW-Authenticate": "Bearer"})

    # -- submission -------------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}",
                           'send a JSON object, e.g. {"problem": "relu", "code": "..."}') from exc
        if not isinstance(body, dict):
            raise ApiError(400, "malformed_request", f"the body is a JSON {type(body).__name__}, not an object",
                           'send a JSON object, e.g. {"problem": "relu", "code": "..."}')
        return body

    def _check_capacity(self, token: str, adding: int) -> None:
        depth = self.queue.active()
        if depth + adding > self.limits.max_queue:
            raise ApiError(503, "queue_full", f"the queue holds {depth} jobs; the limit is {self.limits.max_queue}",
                           "retry after the Retry-After seconds", {"Retry-After": str(self._retry_after(depth))})
        mine = self.queue.pending_for(token)
        if mine + adding > self.limits.max_pending_per_token:
            raise ApiError(429, "too_many_pending", f"this token has {mine} jobs queued or running; the limit is "
                           f"{self.limits.max_pending_per_token} (adding {adding})",
                           "wait for results before submitting more, or retry after the Retry-After seconds",
                           {"Retry-After": str(self._retry_after(mine))})

    def _retry_after(self, depth: int) -> int:
        per_job = (sum(self.judge_seconds) / len(self.judge_seconds)) if self.judge_seconds else 5.0
        return max(1, min(60, math.ceil(per_job * max(depth, 1) / max(self.evaluator.capacity, 1) / 4)))

    def _new_job(self, body: Any, where: str) -> NewJob:
        if not isinstance(body, dict):
            raise ApiError(400, "malformed_request", f"{where} is not a JSON object",
                           'each job is an object like {"problem": "relu", "code": "..."}')
        unknown = sorted(set(body) - JOB_KEYS)
        if unknown:
            raise ApiError(400, "unknown_field", f"{where} has unknown field(s): {', '.join(unknown)}",
                           f"use only {', '.join(sorted(JOB_KEYS))}")
        for name in ("problem", "code"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise ApiError(400, "missing_field", f"{where}.{name} is missing or not a non-empty string",
                               f"set {name}: " + ("a problem id (GET /v1/problems) or a problem's source"
                                                  if name == "problem" else "the candidate's Python source"))
        code, problem_ref = body["code"], body["problem"]
        size = len(code.encode())
        if size > self.limits.max_code_bytes:
            raise ApiError(413, "candidate_too_large", f"{where}.code is {size} bytes; the limit is "
                           f"{self.limits.max_code_bytes}", "send a smaller candidate (or raise --max-code-bytes)")
        settings = body.get("settings", {})
        if not isinstance(settings, dict):
            raise ApiError(400, "malformed_request", f"{where}.settings is not an object",
                           'settings is an object of [eval] settings, e.g. {"trials": 5}')
        key = body.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
            raise ApiError(400, "bad_idempotency_key", f"{where}.idempotency_key must be a string of 1-200 chars",
                           "use a unique string per logical evaluation, e.g. a UUID")
        is_id = problem_ref in self.evaluator.problem_ids()
        if not is_id and ("\n" not in problem_ref or not self.limits.inline_problems):
            from kforge.options import close_match

            hint = close_match(problem_ref, self.evaluator.problem_ids())
            raise ApiError(404, "unknown_problem", f"unknown problem {problem_ref!r}.{hint}",
                           "give a problem id from GET /v1/problems"
                           + (", or a problem's full source" if self.limits.inline_problems else ""))
        try:
            problem = self.evaluator.resolve_problem(problem_ref)
        except RecipeError as exc:
            raise ApiError(422, "bad_problem", str(exc), "send a KernelBench-format problem source") from exc
        backend = body.get("backend", "triton")
        try:
            self.evaluator.backend(str(backend))
        except RecipeError as exc:
            raise ApiError(422, "bad_backend", str(exc), "set backend to one of the installed backends") from exc
        try:
            # the static checks (an AST walk, a few ms) run when the job is dispatched, off the request path
            item = self.evaluator.prepare(problem, code, str(backend), str(body.get("shape", "auto")), None,
                                          check=False, **settings)
        except RecipeError as exc:
            raise ApiError(422, "bad_setting", str(exc).replace("eval.", "settings."),
                           "fix the named setting (docs/recipes.md lists every [eval] setting)") from exc
        digest = _body_hash({k: v for k, v in body.items() if k != "idempotency_key"})
        return NewJob(problem.id, item.to_dict(), digest, key)

    def _answer(self, job: Job, created: bool) -> dict[str, Any]:
        return {**job.public(), "created": created}

    async def submit_one(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        header_key = request.headers.get("Idempotency-Key")
        if header_key and "idempotency_key" not in body:
            body["idempotency_key"] = header_key
        new = self._new_job(body, "the job")
        self._check_capacity(request["token"], 1)
        try:
            _, [(job, created)] = self.queue.submit(request["token"], [new])
        except IdempotencyConflict as exc:
            raise ApiError(409, "idempotency_conflict", str(exc), "use a new idempotency key for a new request") \
                from exc
        self._wake.set()
        return web.json_response(self._answer(job, created), status=202 if created else 200)

    async def submit_batch(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        jobs = body.get("jobs")
        unknown = sorted(set(body) - {"jobs", "idempotency_key"})
        if unknown:
            raise ApiError(400, "unknown_field", f"the batch has unknown field(s): {', '.join(unknown)}",
                           'a batch is {"jobs": [...], "idempotency_key": "..."}')
        if not isinstance(jobs, list) or not jobs:
            raise ApiError(400, "missing_field", "the batch has no jobs list", 'send {"jobs": [{...}, ...]}')
        if len(jobs) > self.limits.max_batch:
            raise ApiError(413, "batch_too_large", f"the batch has {len(jobs)} jobs; the limit is "
                           f"{self.limits.max_batch}", "split it into several batches (or raise --max-batch)")
        batch_key: str | None = body.get("idempotency_key") or request.headers.get("Idempotency-Key")
        news = [self._new_job(j, f"jobs[{i}]") for i, j in enumerate(jobs)]
        if batch_key is not None:
            for i, new in enumerate(news):
                new.idem_key = new.idem_key or f"{batch_key}#{i}"
        self._check_capacity(request["token"], len(news))
        try:
            batch_id, out = self.queue.submit(request["token"], news, batch_key, _body_hash(jobs),
                                                as_batch=True)
        except IdempotencyConflict as exc:
            raise ApiError(409, "idempotency_conflict", str(exc), "use a new idempotency key for a new batch") \
                from exc
        self._wake.set()
        created_any = any(c for _, c in out)
        return web.json_response({"batch_id": batch_id, "created": created_any,
                                  "jobs": [self._answer(j, c) for j, c in out]}, status=202 if created_any else 200)

    # -- reading and cancelling -------------------------------------------------------------------
    def _own_job(self, request: web.Request, job_id: str) -> Job:
        job = self.queue.get(job_id)
        if job is None or job.token != request["token"]:
            raise ApiError(404, "unknown_job", f"no job {job_id!r} for this token",
                           "use the id that POST /v1/evaluations or /v1/batches returned")
        return job

    def _own_batch(self, request: web.Request, batch_id: str) -> list[Job]:
        jobs = self.queue.batch_jobs(batch_id) if self.queue.batch_exists(batch_id) else []
        if not jobs or jobs[0].token != request["token"]:
            raise ApiError(404, "unknown_batch", f"no batch {batch_id!r} for this token",
                           "use the batch_id that POST /v1/batches returned")
        return jobs

    async def get_one(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self._own_job(request, job_id)
        wait = _float_param(request, "wait", 0.0, 0.0, 60.0)
        if wait > 0 and job.state in (QUEUED, RUNNING):
            await self._wait_for({job_id}, wait)
            job = self._own_job(request, job_id)
        return web.json_response(job.public())

    async def _wait_for(self, ids: set[str], timeout: float) -> None:
        q: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.add(q)
        try:
            deadline = time.monotonic() + timeout
            while ids:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    ids.discard(await asyncio.wait_for(q.get(), left))
                except asyncio.TimeoutError:
                    return
        finally:
            self._subscribers.discard(q)

    async def get_batch(self, request: web.Request) -> web.Response:
        jobs = self._own_batch(request, request.match_info["id"])
        return web.json_response({"batch_id": request.match_info["id"], "jobs": [j.public() for j in jobs]})

    def _cancel(self, job: Job) -> str:
        before = self.queue.cancel(job.id)
        if before == RUNNING and job.id in self._running:
            self._user_cancelled.add(job.id)
            self._running[job.id].cancel()  # the executor kills the judge's sandbox and replaces it
        if before in (QUEUED, RUNNING):
            self._notify(job.id)
        return before or ""

    async def cancel_one(self, request: web.Request) -> web.Response:
        job = self._own_job(request, request.match_info["id"])
        before = self._cancel(job)
        after = self.queue.get(job.id)
        assert after is not None
        return web.json_response({**after.public(), "cancelled": before in (QUEUED, RUNNING)})

    async def cancel_batch(self, request: web.Request) -> web.Response:
        jobs = self._own_batch(request, request.match_info["id"])
        n = sum(self._cancel(j) in (QUEUED, RUNNING) for j in jobs)
        return web.json_response({"batch_id": request.match_info["id"], "cancelled": n})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one ``result`` event per job as it finishes (those already finished
        first), then ``end``. ``?batch=ID`` or ``?ids=a,b,c``."""
        if request.query.get("batch"):
            jobs = self._own_batch(request, request.query["batch"])
        elif request.query.get("ids"):
            jobs = [self._own_job(request, i) for i in request.query["ids"].split(",") if i]
        else:
            raise ApiError(400, "missing_parameter", "GET /v1/stream needs ?batch=ID or ?ids=a,b,c",
                           "name the batch or the job ids to stream")
        q: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.add(q)  # before reading states, so no finish slips between
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            pending = {j.id for j in jobs}
            for job in jobs:
                current = self.queue.get(job.id)
                if current is not None and current.state in (DONE, CANCELLED):
                    await _sse(response, "result", current.public(), current.id)
                    pending.discard(job.id)
            while pending:
                try:
                    job_id = await asyncio.wait_for(q.get(), SSE_KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")  # also finds a client that went away
                    continue
                if job_id == "":
                    break  # the server is shutting down
                if job_id in pending:
                    current = self.queue.get(job_id)
                    if current is not None and current.state in (DONE, CANCELLED):
                        await _sse(response, "result", current.public(), current.id)
                        pending.discard(job_id)
            await _sse(response, "end", {"remaining": len(pending)})
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away; its jobs go on
        finally:
            self._subscribers.discard(q)
        return response

    # -- problems, health, metrics ----------------------------------------------------------------
    async def problems(self, request: web.Request) -> web.Response:
        return web.json_response({"problems": self.evaluator.problem_ids()})

    async def problem(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        if pid not in self.evaluator.problem_ids():
            raise ApiError(404, "unknown_problem", f"unknown problem {pid!r}", "see GET /v1/problems for the ids")
        p = self.evaluator.resolve_problem(pid)
        return web.json_response(p.summary() | {"source": p.source, "constants": p.constants, "atol": p.atol,
                                                "rtol": p.rtol, "inplace": p.inplace})

    def health_data(self) -> dict[str, Any]:
        counts = self.queue.counts()
        ev = self.evaluator.health()
        alive = sum(j["alive"] for j in ev["judges"])
        ok = ev["started"] and (alive > 0 or not ev["judges"])
        return {"status": "ok" if ok else "degraded", "version": __version__, "executor": ev["executor"],
                "device": ev["device"], "device_kind": ev["device_kind"], "gpus": self.gpus, "judges": ev["judges"],
                "capacity": ev["capacity"], "queue_depth": counts[QUEUED], "running": counts[RUNNING],
                "jobs": counts, "streams": len(self._subscribers), "recovered_at_start": self.recovered,
                "uptime_s": round(time.time() - self.started_at, 1)}

    async def health(self, request: web.Request) -> web.Response:
        data = self.health_data()
        return web.json_response(data, status=200 if data["status"] == "ok" else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        h = self.health_data()
        lines = ["# HELP kforge_serve_jobs Jobs in the queue, by state.", "# TYPE kforge_serve_jobs gauge"]
        lines += [f'kforge_serve_jobs{{state="{s}"}} {n}' for s, n in h["jobs"].items()]
        lines += ["# HELP kforge_serve_judges_alive Judge processes alive.", "# TYPE kforge_serve_judges_alive gauge",
                  f"kforge_serve_judges_alive {sum(j['alive'] for j in h['judges'])}",
                  "# HELP kforge_serve_streams Open result streams.", "# TYPE kforge_serve_streams gauge",
                  f"kforge_serve_streams {h['streams']}",
                  "# HELP kforge_serve_results_total Results recorded, by status.",
                  "# TYPE kforge_serve_results_total counter"]
        lines += [f'kforge_serve_results_total{{status="{s}"}} {n}' for s, n in sorted(self.results.items())]
        lines += ["# HELP kforge_serve_requests_total HTTP requests, by route and status code.",
                  "# TYPE kforge_serve_requests_total counter"]
        lines += [f'kforge_serve_requests_total{{route="{r}",code="{c}"}} {n}'
                  for (r, c), n in sorted(self.requests.items())]
        lines += ["# HELP kforge_serve_handler_seconds The server's own time per request (not judging).",
                  "# TYPE kforge_serve_handler_seconds summary",
                  f"kforge_serve_handler_seconds_sum {self.handler_seconds[0]:.6f}",
                  f"kforge_serve_handler_seconds_count {self.handler_seconds[1]}",
                  "# HELP kforge_serve_judge_seconds Time from dispatch to result, recent jobs.",
                  "# TYPE kforge_serve_judge_seconds summary",
                  f"kforge_serve_judge_seconds_sum {sum(self.judge_seconds):.6f}",
                  f"kforge_serve_judge_seconds_count {len(self.judge_seconds)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})


def _exit_with_parent(parent: int) -> None:
    """In the checker process: exit once the server is gone (even killed with SIGKILL), not linger."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def static_problems(backend: str, code: str) -> list[str]:
    """The static checks' findings for ``code`` in ``backend`` (run in the checker process)."""
    from kforge.plugins import get_registry

    return list(get_registry().get("backends", backend)().static_check(code))


def _float_param(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", f"?{name}={raw!r} is not a number", f"give {name} in seconds") from exc
    return min(max(value, low), high)


async def _sse(response: web.StreamResponse, event: str, data: Any, event_id: str | None = None) -> None:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    await response.write((head + f"data: {json.dumps(data, default=str)}\n\n").encode())
