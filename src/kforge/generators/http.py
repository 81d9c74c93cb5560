"""What the API generators share: an httpx client with retries, and the generate() around it.

- Retries with exponential backoff and jitter on 408, 409, 429, 5xx, timeouts, connection errors and
  answers that are not JSON; ``Retry-After`` (seconds or a date) and ``retry-after-ms`` are honoured
  (up to ``max_backoff_s``). Any other 4xx is not retried.
- 401/403 stop the run with one error naming ``api_key_env``; 404 stops it naming ``base_url`` and
  ``model``. Neither is a per-candidate failure: every later call would fail the same way.
- The key is read from the environment when the first request is made, sent in a header and never
  put in a message, a log, the cache or a Generation (server error texts are scrubbed of it).
- ``concurrency`` requests at most in flight (an asyncio.Semaphore held only while a request is on
  the wire, not while backing off); ``timeout_s`` bounds each attempt end to end.
- Tokens come from the answer's ``usage``; cost is tokens times the recipe's prices per million.
- Every answer is cached by a hash of (generator, model, messages, sampling parameters, seed);
  ``replay_only`` serves from the cache and never opens a connection.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kforge.api import Generation, Generator, Proposal, RunContext
from kforge.extract import extract_code
from kforge.generators.cache import GenerationCache, cache_key
from kforge.options import Option, RecipeError
from kforge.prompts import Prompt, PromptSettings, build_prompt

RETRY_STATUSES = frozenset({408, 409, 429})


class GeneratorError(RecipeError):
    """A generator cannot work as configured (bad key, unknown model or address, cache miss in replay).
    Raised, not returned: it stops the run with one clear message (exit code 2)."""


class AuthError(GeneratorError):
    """The server refused the key (401/403)."""


class ReplayMiss(GeneratorError):
    """``replay_only`` is set and the cache holds no answer for a request."""


class RequestFailed(Exception):
    """One request failed for good: a 4xx retrying cannot fix, or retries ran out."""

    def __init__(self, message: str, attempts: int, status: int | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status


@dataclass
class _Transient:
    reason: str
    status: int | None = None
    retry_after: float | None = None


@dataclass
class Reply:
    data: dict[str, Any]
    attempts: int
    latency_s: float
    waits: list[float] = field(default_factory=list)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).
    ``headers`` must look names up case-insensitively, as httpx.Headers does."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpClient:
    """POST JSON with retries, a concurrency limit and a per-attempt deadline."""

    def __init__(self, *, base_url: str, headers: dict[str, str], owner: str, api_key_env: str,
                 secret: str | None, timeout_s: float = 300.0, max_retries: int = 5, concurrency: int = 8,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, model: str | None = None) -> None:
        import httpx  # here, not at module level: building the plugin registry stays fast

        self.base_url = base_url.rstrip("/")
        self.owner = owner
        self.api_key_env = api_key_env
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._secret = secret
        self._headers = headers
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._rng = random.Random()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers,
                                         limits=httpx.Limits(max_connections=max(1, concurrency)))
        self.requests_sent = 0

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"HttpClient({self.owner}, {self.base_url})"

    async def aclose(self) -> None:
        await self._client.aclose()

    def redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        return text

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: the server's Retry-After plus up to 10% jitter, or
        full-jitter exponential backoff (between half and all of backoff_s * 2**(attempt-1))."""
        if retry_after is not None:
            wait = min(retry_after, self.max_backoff_s)
            return wait + self._rng.uniform(0, 0.1 * wait)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + 0.5 * self._rng.random())

    async def post(self, path: str, payload: dict[str, Any]) -> Reply:
        url = self.base_url + path
        attempt = 0
        waits: list[float] = []
        started = time.monotonic()
        while True:
            attempt += 1
            outcome = await self._attempt(url, payload, attempt)
            if isinstance(outcome, dict):
                return Reply(outcome, attempt, time.monotonic() - started, waits)
            if attempt > self.max_retries:
                raise RequestFailed(f"gave up after {attempt} attempts (max_retries={self.max_retries}): "
                                    f"{outcome.reason}", attempt, outcome.status)
            wait = self.delay(attempt, outcome.retry_after)
            waits.append(wait)
            await asyncio.sleep(wait)

    async def _attempt(self, url: str, payload: dict[str, Any], attempt: int) -> dict[str, Any] | _Transient:
        import httpx

        try:
            async with self._sem:
                self.requests_sent += 1
                response = await asyncio.wait_for(self._client.post(url, json=payload), self.timeout_s)
                body = response.content
        except (httpx.TimeoutException, asyncio.TimeoutError):
            return _Transient(f"no answer within timeout_s={self.timeout_s:g}")
        except httpx.TransportError as exc:
            return _Transient(self.redact(f"connection error ({type(exc).__name__}: {exc})"))
        status = response.status_code
        if status in (401, 403):
            raise AuthError(self._auth_message(status))
        if status in RETRY_STATUSES or status >= 500:
            return _Transient(f"HTTP {status}{self._excerpt(body)}", status, parse_retry_after(response.headers))
        if status == 404:
            raise GeneratorError(f"{self.owner}: {url} answered HTTP 404{self._excerpt(body)}. Check "
                                 f"generator.base_url ({self.base_url}) and generator.model ({self.model}).")
        if status >= 400:
            raise RequestFailed(f"HTTP {status}{self._excerpt(body)} (not retried: resending the same request "
                                f"cannot fix it)", attempt, status)
        try:
            data = json.loads(body)
        except ValueError:
            return _Transient(f"HTTP {status} but the answer is not valid JSON ({len(body)} bytes)", status)
        if not isinstance(data, dict):
            return _Transient(f"HTTP {status} but the answer is JSON {type(data).__name__}, not an object", status)
        return data

    def _auth_message(self, status: int) -> str:
        if not self.api_key_env:
            return (f"{self.owner}: the server at {self.base_url} answered HTTP {status}: it wants an API key, "
                    f"and none was sent. Set generator.api_key_env to the name of the environment variable "
                    f"that holds the key.")
        return (f"{self.owner}: the server at {self.base_url} refused the API key (HTTP {status}) read from the "
                f"environment variable {self.api_key_env} (generator.api_key_env). Check that {self.api_key_env} "
                f"holds a valid key for this server and model.")

    def _excerpt(self, body: bytes, limit: int = 300) -> str:
        text = body.decode("utf-8", "replace").strip()
        try:
            data = json.loads(text)
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict) and err.get("message"):
                text = str(err["message"])
            elif isinstance(err, str):
                text = err
        except ValueError:
            pass
        text = self.redact(" ".join(text.split()))
        if not text:
            return ""
        return ": " + (text if len(text) <= limit else text[:limit] + "...")


@dataclass
class Answer:
    """What a wire format's parser pulls out of a server's answer."""

    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str | None
    model: str | None
    truncated: bool


def api_options(*, base_url: str, api_key_env: str) -> tuple[Option, ...]:
    """The options every API generator takes; ``base_url`` and ``api_key_env`` defaults differ."""
    return (
        Option("model", str, None, "model name as the server knows it", required=True),
        Option("base_url", str, base_url, "the server's address"),
        Option("api_key_env", str, api_key_env,
               "name of the environment variable that holds the API key ('' sends none); never the key itself"),
        Option("temperature", float, 0.7, "sampling temperature (a proposal's own temperature wins)", minimum=0),
        Option("top_p", float, None, "nucleus sampling (default: the server's)"),
        Option("max_tokens", int, 8192, "most tokens in one answer", minimum=1),
        Option("concurrency", int, 8, "most requests in flight at once", minimum=1),
        Option("timeout_s", float, 300.0, "deadline for one attempt of one request, in seconds", minimum=0.001),
        Option("max_retries", int, 5, "retries of one request on 429, 5xx, timeouts and connection errors",
               minimum=0),
        Option("backoff_s", float, 1.0, "first retry delay; doubles each retry (with jitter)", minimum=0),
        Option("max_backoff_s", float, 60.0, "longest wait between retries, Retry-After included", minimum=0),
        Option("price_in_per_mtok", float, 0.0, "USD per million input tokens (for cost accounting)", minimum=0),
        Option("price_out_per_mtok", float, 0.0, "USD per million output tokens", minimum=0),
        Option("extra_body", dict, None, "extra JSON fields for each request (e.g. reasoning_effort, top_k); "
               "part of the cache key"),
        Option("cache", str, None, "folder of cached generations (default: generations/ in the run directory); "
               "relative to the current directory, like [run] out"),
        Option("replay_only", bool, False, "serve every generation from the cache and never touch the network; "
               "a cache miss stops the run"),
        Option("system_prompt", str, None, "file replacing the system message template", is_path=True),
        Option("user_template", str, None, "file replacing the user message template", is_path=True),
        Option("template_dir", str, None, "folder of <section>.txt files replacing prompt sections "
               "(docs/generators.md lists sections and placeholders)", is_path=True),
        Option("example", str, "other", "example in the prompt: 'other' (another problem and its solution), "
               "'self' (this problem's own example solution), 'none'", choices=("other", "self", "none")),
        Option("edit_format", str, "full", "with a parent candidate: ask for the full module or SEARCH/REPLACE "
               "edits", choices=("full", "diff")),
        Option("device", str, None, "target device to name in the prompt (default: the executor's device)"),
        Option("feedback_max_chars", int, 4000, "longest text (compile log, error) quoted from feedback",
               minimum=100),
    )


class ApiGenerator(Generator):
    """A model behind an HTTP API. Subclasses give the wire format: path, headers, payload, parse."""

    path: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model = str(self.opts.model or "")
        if not self.model:
            raise RecipeError(f"generator.model is required by the {self.name} generator")
        self.prompt_settings = PromptSettings.from_options(self.opts)
        self._client: HttpClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cache: GenerationCache | None = None
        self.usage = {"requests": 0, "cache_hits": 0, "retries": 0, "failed": 0, "tokens_in": 0, "tokens_out": 0,
                      "cost_usd": 0.0}

    def preflight(self, problem_ids: list[str]) -> tuple[list[str], list[str]]:
        """Before the run (and in a dry run): (errors, warnings). A missing API key is an error,
        unless every generation comes from the cache (``replay_only``)."""
        env = str(self.opts.api_key_env or "")
        if env and not os.environ.get(env) and not self.opts.replay_only:
            return [f"{self.name} generator: the environment variable {env} (generator.api_key_env) is not set. "
                    f"Export it with your API key, or set generator.api_key_env = \"\" for a server that needs "
                    f"no key, or generator.replay_only = true to replay a cache."], []
        return [], []

    # -- wire format (subclasses) ---------------------------------------------------------------
    def headers(self, key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def payload(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, data: dict[str, Any]) -> Answer:
        raise NotImplementedError

    def wire_seed(self, seed: int) -> int | None:
        """The seed as sent (and cached): servers take 32-bit seeds."""
        return seed % 2**31

    # -- prompts and requests -------------------------------------------------------------------
    def build_prompt(self, proposal: Proposal, ctx: RunContext) -> Prompt:
        problem = ctx.problems_by_id[proposal.problem_id]
        return build_prompt(problem, ctx.backend, ctx.device, proposal.params, self.prompt_settings)

    def sampling(self, proposal: Proposal) -> dict[str, Any]:
        temperature = proposal.params.get("temperature")
        out: dict[str, Any] = {"temperature": float(temperature if temperature is not None
                                                     else self.opts.temperature),
                               "max_tokens": int(self.opts.max_tokens)}
        if self.opts.top_p is not None:
            out["top_p"] = float(self.opts.top_p)
        return out

    def request(self, proposal: Proposal, prompt: Prompt) -> dict[str, Any]:
        """Everything that determines the answer: what the cache key hashes and the payload is built from."""
        return {"generator": self.name, "model": self.model, "messages": prompt.messages(),
                "sampling": self.sampling(proposal), "extra_body": dict(self.opts.extra_body or {}),
                "seed": self.wire_seed(proposal.seed)}

    def neutral_key(self, request: dict[str, Any], prompt: Prompt) -> str | None:
        """The cache key of the request with the prompt's device section blanked (see cache.py)."""
        if not prompt.device_section:
            return None
        messages = [{**m, "content": m["content"].replace(prompt.device_section, "$device")}
                    for m in request["messages"]]
        return "device-neutral-" + cache_key({**request, "messages": messages})

    def cache_for(self, ctx: RunContext) -> GenerationCache:
        if self._cache is None:
            folder = self.opts.cache
            if not folder:
                if ctx.run_dir is None:
                    raise GeneratorError(f"{self.name}: no cache folder (set generator.cache)")
                folder = Path(ctx.run_dir) / "generations"
            self._cache = GenerationCache(folder)
        return self._cache

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * float(self.opts.price_in_per_mtok)
                + tokens_out * float(self.opts.price_out_per_mtok)) / 1e6

    def _http(self) -> HttpClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            env = str(self.opts.api_key_env or "")
            key = os.environ.get(env) if env else None
            if env and not key:
                raise GeneratorError(f"{self.name}: the environment variable {env} (generator.api_key_env) is not "
                                     f"set. Export it with your API key, or set generator.api_key_env = \"\" for a "
                                     f"server that needs no key.")
            self._client = HttpClient(
                base_url=str(self.opts.base_url), headers=self.headers(key),
                owner=f"{self.name} generator", api_key_env=env, secret=key,
                timeout_s=float(self.opts.timeout_s), max_retries=int(self.opts.max_retries),
                concurrency=int(self.opts.concurrency), backoff_s=float(self.opts.backoff_s),
                max_backoff_s=float(self.opts.max_backoff_s),
                model=self.model)
            self._loop = loop
        return self._client

    def _redact(self, text: str) -> str:
        return self._client.redact(text) if self._client is not None else text

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except RuntimeError:  # its event loop is gone: nothing left to close
                pass

    # -- generate -------------------------------------------------------------------------------
    async def generate(self, proposals: list[Proposal], ctx: RunContext) -> list[Generation]:
        return list(await asyncio.gather(*(self.generate_one(p, ctx) for p in proposals)))

    async def generate_one(self, proposal: Proposal, ctx: RunContext) -> Generation:
        prompt = self.build_prompt(proposal, ctx)
        request = self.request(proposal, prompt)
        key = cache_key(request)
        neutral = self.neutral_key(request, prompt)
        cache = self.cache_for(ctx)
        record = cache.get(key)
        meta: dict[str, Any] = {"cache_key": key, "prompt_hash": prompt.hash(), "seed": request["seed"],
                                "temperature": request["sampling"]["temperature"], **prompt.meta}
        match = "exact"
        if record is None and self.opts.replay_only and neutral is not None:
            record, match = cache.get_alias(neutral), "device-neutral"
        if record is not None:
            self.usage["cache_hits"] += 1
            meta.update(cached=True, attempts=0, cache_match=match)
        elif self.opts.replay_only:
            raise ReplayMiss(f"{self.name}: replay_only is set and {cache.folder} holds no generation for proposal "
                             f"{proposal.id} (problem {proposal.problem_id}, cache key {key}). The prompt, model, "
                             f"sampling parameters or seed differ from the recorded run; point generator.cache at "
                             f"that run's generations/ folder and keep its recipe.")
        else:
            try:
                reply = await self._http().post(self.path, self.payload(request))
                try:
                    answer = self.parse(reply.data)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    raise RequestFailed(f"unexpected answer from the server: {exc}", reply.attempts) from None
            except RequestFailed as exc:
                self.usage["failed"] += 1
                self.usage["retries"] += max(0, exc.attempts - 1)
                return Generation(proposal.id, None, self.name, model=self.model, error=f"{self.name}: {self._redact(str(exc))}",
                                  meta={**meta, "attempts": exc.attempts, "http_status": exc.status})
            self.usage["requests"] += 1
            self.usage["retries"] += reply.attempts - 1
            record = {"request": request, "problem_id": proposal.problem_id, "proposal_id": proposal.id,
                      "created": time.time(), "latency_s": round(reply.latency_s, 3), "attempts": reply.attempts,
                      "answer": {"text": answer.text, "tokens_in": answer.tokens_in, "tokens_out": answer.tokens_out,
                                 "finish_reason": answer.finish_reason, "model": answer.model,
                                 "truncated": answer.truncated}}
            cache.put(key, record, aliases=(neutral,) if neutral else ())
            meta.update(cached=False, attempts=reply.attempts, latency_s=round(reply.latency_s, 3),
                        retry_waits_s=[round(w, 3) for w in reply.waits])
        return self._generation(proposal, record, meta)

    def _generation(self, proposal: Proposal, record: dict[str, Any], meta: dict[str, Any]) -> Generation:
        ans = record["answer"]
        tokens_in, tokens_out = int(ans.get("tokens_in") or 0), int(ans.get("tokens_out") or 0)
        cost = self.cost(tokens_in, tokens_out)
        self.usage["tokens_in"] += tokens_in
        self.usage["tokens_out"] += tokens_out
        self.usage["cost_usd"] += cost
        ex = extract_code(ans.get("text") or "", proposal.params.get("parent_code"), bool(ans.get("truncated")))
        meta.update(ex.meta(), finish_reason=ans.get("finish_reason"), answer_chars=len(ans.get("text") or ""))
        model = ans.get("model") or self.model
        sample = proposal.params.get("sample", proposal.step)
        label = f"{self.model} #{sample}" + (" edit" if ex.kind == "edit" and ex.code else "")
        error = f"{self.name}: {ex.error}" if ex.error else None
        return Generation(proposal.id, ex.code, self.name, model=model, label=label, tokens_in=tokens_in,
                          tokens_out=tokens_out, cost_usd=cost, error=error, meta=meta)

    def usage_summary(self) -> dict[str, Any]:
        """This generator's totals over the run (cache hits count their recorded tokens and cost)."""
        return {**self.usage, "cost_usd": round(float(self.usage["cost_usd"]), 6)}
