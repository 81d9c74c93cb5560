"""A client for ``kforge serve``, sync (:class:`Client`) and async (:class:`AsyncClient`), on httpx.

Both return the same :class:`~kforge.runtime.protocol.EvalResult` objects as the Python API, retry
429 and 503 answers after the server's Retry-After (and connection failures, which are safe to retry
because every submission carries an idempotency key), and raise :class:`ServiceError` for any other
error, with the server's explanation of what to fix.

    from kforge.client import Client

    with Client("http://gpu-box:8765", token="...") as c:
        result = c.evaluate("relu", code)                 # same signature as Evaluator.evaluate
        for result in c.evaluate_many([{"problem": "relu", "code": a}, {"problem": "softmax", "code": b}]):
            ...                                           # as each finishes (server-sent events)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from kforge.runtime.protocol import EvalResult

RETRY_STATUSES = (429, 503)
DONE_STATES = ("done", "cancelled")


class ServiceError(Exception):
    """The server refused a request (or could not be reached after the retries)."""

    def __init__(self, status: int, code: str, message: str, fix: str = "") -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (fix: {fix})" if fix else ""))
        self.status, self.code, self.message, self.fix = status, code, message, fix


@dataclass
class Job:
    """A job as the server reports it; ``result`` is an EvalResult once the job is done."""

    id: str
    state: str
    problem_id: str
    batch_id: str | None = None
    attempts: int = 0
    result: EvalResult | None = None
    created: bool | None = None  # on submission: False when an idempotency key matched an earlier job

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        res = data.get("result")
        return cls(id=data["id"], state=data["state"], problem_id=data.get("problem_id", ""),
                   batch_id=data.get("batch_id"), attempts=int(data.get("attempts") or 0),
                   result=EvalResult.from_dict(res) if res else None, created=data.get("created"))

    def final_result(self) -> EvalResult:
        """The result, or an ``infra_error`` result for a cancelled job (it was never judged)."""
        if self.result is not None:
            return self.result
        return EvalResult(request_id=self.id, problem_id=self.problem_id, status="infra_error",
                          error=f"the job was {self.state} before a result")


def job_body(problem: Any, code: str, backend: str = "triton", shape: str = "auto",
             idempotency_key: str | None = None, **settings: Any) -> dict[str, Any]:
    """The JSON body of one evaluation (``problem``: an id or a problem's source). In a batch a job needs
    no key of its own: the batch's key covers its jobs."""
    body: dict[str, Any] = {"problem": problem, "code": code, "backend": backend, "shape": shape}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if settings:
        body["settings"] = settings
    return body


def _as_body(job: dict[str, Any]) -> dict[str, Any]:
    job = dict(job)
    settings = dict(job.pop("settings", None) or {})
    return job_body(job.pop("problem"), job.pop("code"), **job, **settings)


def _error(response: httpx.Response) -> ServiceError:
    try:
        err = response.json()["error"]
        return ServiceError(response.status_code, err.get("code", ""), err.get("message", ""), err.get("fix", ""))
    except (ValueError, KeyError, TypeError):
        return ServiceError(response.status_code, "http_error", response.text[:500])


def _retry_delay(response: httpx.Response | None, attempt: int, max_wait: float) -> float:
    if response is not None:
        try:
            return min(max(float(response.headers.get("Retry-After", "")), 0.0), max_wait)
        except ValueError:
            pass
    return min(0.5 * 2 ** attempt, max_wait)


class _SSE:
    """Server-sent events, fed one line at a time: ``feed`` returns (event, data) at each blank line."""

    def __init__(self) -> None:
        self.event, self.data = "message", []  # type: str, list[str]

    def feed(self, line: str) -> tuple[str, Any] | None:
        if line == "":
            out = (self.event, json.loads("\n".join(self.data))) if self.data else None
            self.event, self.data = "message", []
            return out
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].strip())
        return None


class _Base:
    def __init__(self, url: str, token: str | None, retries: int, max_retry_wait: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries, self.max_retry_wait = retries, max_retry_wait

    def _should_retry(self, response: httpx.Response | None, attempt: int) -> bool:
        return attempt < self.retries and (response is None or response.status_code in RETRY_STATUSES)


class Client(_Base):
    """Sync client. ``retries``: how often a 429/503 or a lost connection is retried."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0, retries: int = 8,
                 max_retry_wait: float = 60.0) -> None:
        super().__init__(url, token, retries, max_retry_wait)
        self.http = httpx.Client(timeout=timeout, headers=self.headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None
            try:
                response = self.http.request(method, self.url + path, json=body, params=params)
            except httpx.TransportError:
                response = None
                if not self._should_retry(None, attempt):
                    raise
            if response is not None and response.status_code < 400:
                return response.json()
            if not self._should_retry(response, attempt):
                assert response is not None
                raise _error(response)
            time.sleep(_retry_delay(response, attempt, self.max_retry_wait))
            attempt += 1

    def submit(self, problem: Any, code: str, backend: str = "triton", shape: str = "auto",
               idempotency_key: str | None = None, **settings: Any) -> Job:
        return Job.from_json(self._call("POST", "/v1/evaluations",
                                        job_body(problem, code, backend, shape, idempotency_key or uuid.uuid4().hex,
                                                 **settings)))

    def submit_batch(self, jobs: Iterable[dict[str, Any]], idempotency_key: str | None = None) -> tuple[str, list[Job]]:
        """Jobs as dicts with the keys of :func:`job_body`; returns (batch id, jobs in order)."""
        data = self._call("POST", "/v1/batches", {"jobs": [_as_body(j) for j in jobs],
                                                  "idempotency_key": idempotency_key or uuid.uuid4().hex})
        return data["batch_id"], [Job.from_json(j) for j in data["jobs"]]

    def get(self, job_id: str, wait: float = 0.0) -> Job:
        return Job.from_json(self._call("GET", f"/v1/evaluations/{job_id}", params={"wait": wait} if wait else None))

    def result(self, job_id: str, timeout: float | None = None) -> EvalResult:
        """Wait (long-polling) for a job's result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id, wait=30.0)
            if job.state in DONE_STATES:
                return job.final_result()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")

    def evaluate(self, problem: Any, code: str, backend: str = "triton", shape: str = "auto", **settings: Any
                 ) -> EvalResult:
        """Submit and wait: the same call and result as :meth:`kforge.evaluator.Evaluator.evaluate`."""
        return self.result(self.submit(problem, code, backend, shape, **settings).id)

    def stream(self, batch_id: str | None = None, ids: list[str] | None = None) -> Iterator[Job]:
        """Jobs as they finish (server-sent events), until all named are done or cancelled."""
        params = {"batch": batch_id} if batch_id else {"ids": ",".join(ids or [])}
        with self.http.stream("GET", self.url + "/v1/stream", params=params, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            sse = _SSE()
            for line in response.iter_lines():
                got = sse.feed(line)
                if got and got[0] == "result":
                    yield Job.from_json(got[1])
                elif got and got[0] == "end":
                    return

    def evaluate_many(self, jobs: Iterable[dict[str, Any]]) -> Iterator[EvalResult]:
        """Submit a batch and yield each result as it finishes; ``request_id`` is the job id."""
        batch_id, submitted = self.submit_batch(jobs)
        pending = {j.id for j in submitted}
        for job in self.stream(batch_id=batch_id):
            pending.discard(job.id)
            yield job.final_result()
        for job_id in pending:  # the stream ended early (a server restart): wait for the rest
            yield self.result(job_id)

    def evaluate_all(self, jobs: Iterable[dict[str, Any]]) -> list[EvalResult]:
        """Submit a batch and wait for all of it; the results in the jobs' order."""
        batch_id, submitted = self.submit_batch(jobs)
        done = {j.id: j.final_result() for j in self.stream(batch_id=batch_id)}
        return [done[j.id] if j.id in done else self.result(j.id) for j in submitted]

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._call("DELETE", f"/v1/evaluations/{job_id}"))

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/health"))

    def problem(self, problem_id: str) -> dict[str, Any]:
        """A served problem's summary and source."""
        return dict(self._call("GET", f"/v1/problems/{problem_id}"))


class AsyncClient(_Base):
    """Async client: the same methods as :class:`Client`, awaited; streams are async iterators."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0, retries: int = 8,
                 max_retry_wait: float = 60.0) -> None:
        super().__init__(url, token, retries, max_retry_wait)
        self.http = httpx.AsyncClient(timeout=timeout, headers=self.headers)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None
            try:
                response = await self.http.request(method, self.url + path, json=body, params=params)
            except httpx.TransportError:
                response = None
                if not self._should_retry(None, attempt):
                    raise
            if response is not None and response.status_code < 400:
                return response.json()
            if not self._should_retry(response, attempt):
                assert response is not None
                raise _error(response)
            await asyncio.sleep(_retry_delay(response, attempt, self.max_retry_wait))
            attempt += 1

    async def submit(self, problem: Any, code: str, backend: str = "triton", shape: str = "auto",
                     idempotency_key: str | None = None, **settings: Any) -> Job:
        return Job.from_json(await self._call("POST", "/v1/evaluations",
                                              job_body(problem, code, backend, shape, idempotency_key or uuid.uuid4().hex,
                                                 **settings)))

    async def submit_batch(self, jobs: Iterable[dict[str, Any]], idempotency_key: str | None = None
                           ) -> tuple[str, list[Job]]:
        data = await self._call("POST", "/v1/batches", {"jobs": [_as_body(j) for j in jobs],
                                                        "idempotency_key": idempotency_key or uuid.uuid4().hex})
        return data["batch_id"], [Job.from_json(j) for j in data["jobs"]]

    async def get(self, job_id: str, wait: float = 0.0) -> Job:
        return Job.from_json(await self._call("GET", f"/v1/evaluations/{job_id}",
                                              params={"wait": wait} if wait else None))

    async def result(self, job_id: str, timeout: float | None = None) -> EvalResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id, wait=30.0)
            if job.state in DONE_STATES:
                return job.final_result()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")

    async def evaluate(self, problem: Any, code: str, backend: str = "triton", shape: str = "auto",
                       **settings: Any) -> EvalResult:
        return await self.result((await self.submit(problem, code, backend, shape, **settings)).id)

    async def stream(self, batch_id: str | None = None, ids: list[str] | None = None) -> AsyncIterator[Job]:
        params = {"batch": batch_id} if batch_id else {"ids": ",".join(ids or [])}
        async with self.http.stream("GET", self.url + "/v1/stream", params=params, timeout=None) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error(response)
            sse = _SSE()
            async for line in response.aiter_lines():
                got = sse.feed(line)
                if got and got[0] == "result":
                    yield Job.from_json(got[1])
                elif got and got[0] == "end":
                    return

    async def evaluate_many(self, jobs: Iterable[dict[str, Any]]) -> AsyncIterator[EvalResult]:
        batch_id, submitted = await self.submit_batch(jobs)
        pending = {j.id for j in submitted}
        async for job in self.stream(batch_id=batch_id):
            pending.discard(job.id)
            yield job.final_result()
        for job_id in pending:
            yield await self.result(job_id)

    async def evaluate_all(self, jobs: Iterable[dict[str, Any]]) -> list[EvalResult]:
        batch_id, submitted = await self.submit_batch(jobs)
        done = {j.id: j.final_result() async for j in self.stream(batch_id=batch_id)}
        return [done[j.id] if j.id in done else await self.result(j.id) for j in submitted]

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json(await self._call("DELETE", f"/v1/evaluations/{job_id}"))

    async def health(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/v1/health"))

    async def problem(self, problem_id: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/v1/problems/{problem_id}"))

