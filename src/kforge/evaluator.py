"""The judge as a library: :class:`Evaluator` owns an executor and its judges for as long as it lives.

    from kforge.evaluator import Evaluator

    with Evaluator() as ev:                      # local GPUs, else the CPU (Triton's interpreter)
        result = ev.evaluate("relu", code)       # an EvalResult, the same as `kforge run` records
        result = ev.evaluate("relu", other)      # the judges are already up: no start-up paid again

This is kforge's public Python API (docs/service.md states its stability promise). ``kforge eval``,
``kforge serve`` and the RL adapters all build their requests here, so a result, its guards and its
numbers are the same whichever door it came through. Nothing here imports torch: the judges run in
their own processes, and candidate code is only parsed here (the static checks), never imported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kforge.api import Executor
from kforge.options import OptionSet, RecipeError, close_match
from kforge.problems import (
    Problem,
    builtin_problems,
    is_problem_source,
    load_problem_path,
    load_problem_source,
)
from kforge.runtime import protocol as P

T = TypeVar("T")
SHAPES = ("auto", "small", "main")
EXECUTOR_ALIASES = {"cpu": ("local", {"device": "cpu"})}  # "cpu": the local executor on the CPU


class EvaluatorError(RuntimeError):
    """The executor could not start or stopped working (an infrastructure failure, exit code 3)."""


def eval_settings(settings: dict[str, Any] | None, path: str = "eval") -> dict[str, Any]:
    """``[eval]`` settings with every default filled in; an unknown key or bad value is a RecipeError
    that names the key and what is allowed."""
    from kforge.recipe import CORE_OPTIONS

    return CORE_OPTIONS["eval"].resolve(dict(settings or {}), path, skip=())


@dataclass
class EvalJob:
    """One evaluation to run: a problem reference, the candidate's code and how to judge it."""

    problem: Any
    code: str
    backend: str = "triton"
    shape: str = "auto"
    settings: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


class Evaluator:
    """Judges candidates with one executor and its judges, started once and kept until :meth:`close`.

    ``executor``: ``"local"`` (a judge per GPU, or the CPU when there is none), ``"cpu"`` (the local
    executor on the CPU), ``"modal"``, any installed executor's name, or an :class:`~kforge.api.Executor`
    instance. ``executor_options`` are that executor's recipe options (``kforge plugins`` lists them).
    ``problems``: a KernelBench-format file or directory whose problem ids become known, beside the
    built-in ones. ``eval_defaults``: ``[eval]`` settings for every call (a call's own settings win).
    """

    def __init__(self, executor: str | Executor = "local", *, executor_options: dict[str, Any] | None = None,
                 problems: str | Path | None = None, log_dir: str | Path | None = None,
                 eval_defaults: dict[str, Any] | None = None, registry: Any = None) -> None:
        from kforge.plugins import get_registry

        self.registry = registry or get_registry()
        self.executor = self._make_executor(executor, dict(executor_options or {}))
        self.eval_defaults = dict(eval_defaults or {})
        eval_settings(self.eval_defaults, "eval_defaults")  # a typo fails here, not on the first call
        self.log_dir = Path(log_dir) if log_dir else None
        self._problems: dict[str, Problem] = {p.id: p for p in builtin_problems()}
        if problems is not None:
            self._problems.update({p.id: p for p in load_problem_path(Path(problems))})
        self._backends: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._lock = threading.Lock()

    # -- lifetime ---------------------------------------------------------------------------------
    def _make_executor(self, executor: str | Executor, options: dict[str, Any]) -> Executor:
        if not isinstance(executor, str):
            return executor
        name, preset = EXECUTOR_ALIASES.get(executor, (executor, {}))
        cls = self.registry.get("executors", name)
        resolved = OptionSet(f"executor {name!r}", tuple(getattr(cls, "options", ()))).resolve(
            {**preset, **options}, "executor", skip=())
        return cls(**resolved)

    def start(self) -> Evaluator:
        """Start the executor and its judges (idempotent). Raises :class:`EvaluatorError` if they can't."""
        with self._lock:
            if self._closed:
                raise EvaluatorError("this Evaluator was closed; make a new one")
            if self._started:
                return self
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="kforge-evaluator", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            try:
                asyncio.run_coroutine_threadsafe(self.executor.start(self.log_dir), loop).result()
            except Exception as exc:
                self._stop_loop()
                raise EvaluatorError(f"could not start the {self.executor.name or 'executor'} judges: "
                                     f"{type(exc).__name__}: {exc}") from exc
            self._started = True
            return self

    def close(self) -> None:
        """Stop the judges and the executor. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._started and self._loop is not None:
                try:
                    asyncio.run_coroutine_threadsafe(self.executor.shutdown(), self._loop).result(60)
                except Exception:  # noqa: BLE001 - closing must not raise over the caller's own error
                    pass
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop = None

    def __enter__(self) -> Evaluator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Evaluator:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.close)

    @property
    def device_info(self) -> dict[str, Any]:
        """The device that judges (name, kind, versions), once started."""
        return dict(self.executor.device_info or {})

    @property
    def capacity(self) -> int:
        return max(1, int(getattr(self.executor, "capacity", 1) or 1))

    # -- problems and requests --------------------------------------------------------------------
    def problem_ids(self) -> list[str]:
        return sorted(self._problems)

    def resolve_problem(self, problem: Any) -> Problem:
        """A :class:`~kforge.problems.Problem` from a built-in (or ``problems=``) id, a KernelBench-format
        file, an inline source string, or a Problem itself. Unknown: a RecipeError saying what to give."""
        if isinstance(problem, Problem):
            return problem
        if isinstance(problem, Path):
            return self._problem_file(problem)
        if not isinstance(problem, str) or not problem.strip():
            raise RecipeError("problem must be a problem id, a KernelBench-format file, or the source of one "
                              f"(got {type(problem).__name__})")
        if problem in self._problems:
            return self._problems[problem]
        if "\n" in problem:
            if not is_problem_source(problem):
                raise RecipeError("the inline problem source is not a KernelBench-format problem: it must define "
                                  "class Model, get_inputs() and get_init_inputs()")
            return load_problem_source(problem)
        if problem.endswith(".py") or Path(problem).exists():
            return self._problem_file(Path(problem))
        known = self.problem_ids()
        shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
        raise RecipeError(f"unknown problem {problem!r}.{close_match(problem, known)} Give a problem id "
                          f"({shown}), a KernelBench-format file, or the problem's source.")

    @staticmethod
    def _problem_file(path: Path) -> Problem:
        found = load_problem_path(path)
        if len(found) != 1:
            raise RecipeError(f"{path} holds {len(found)} problems; name one file, or pass the directory as "
                              "problems= and the problem by its id")
        return found[0]

    def backend(self, name: str) -> Any:
        if name not in self._backends:
            self._backends[name] = self.registry.get("backends", name)()
        return self._backends[name]

    def shape_for(self, shape: str) -> str:
        if shape not in SHAPES:
            raise RecipeError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
        if shape != "auto":
            return shape
        return "main" if self.device_info.get("device_kind") == "cuda" else "small"

    def prepare(self, problem: Any, code: str, backend: str = "triton", shape: str = "auto",
                request_id: str | None = None, *, check: bool = True, **settings: Any
                ) -> P.EvalRequest | P.EvalResult:
        """The EvalRequest for one candidate, or the ``rejected`` result when the static checks refuse it
        (``check=False``: no static checks here; :meth:`static_check` runs them later). Bad input
        (problem, backend, shape, settings) raises a RecipeError that says what to fix."""
        from kforge.engine import build_request, static_rejection

        if not isinstance(code, str):
            raise RecipeError(f"code must be the candidate's source text, not {type(code).__name__}")
        prob = self.resolve_problem(problem)
        be = self.backend(backend)
        ev = eval_settings({**self.eval_defaults, **settings})
        if shape not in SHAPES:
            raise RecipeError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
        rid = request_id or uuid.uuid4().hex[:16]
        static = be.static_check(code) if check else []
        if static:  # refused before any judge time is spent (or any judge started)
            return static_rejection(rid, prob.id, static)
        if shape == "auto" and not self._started:
            self.start()  # "auto" depends on the device the judges found
        shape_name = self.shape_for(shape)
        return build_request(prob, code, rid, be, shape_name, ev, 0)

    def static_check(self, request: P.EvalRequest, problems: list[str] | None = None) -> P.EvalResult | None:
        """The ``rejected`` result for a request prepared with ``check=False`` whose candidate the
        static checks refuse (``problems``: their findings, if already run elsewhere); None if they pass."""
        from kforge.engine import static_rejection

        if problems is None:
            problems = self.backend(request.backend).static_check(request.candidate_source)
        if not problems:
            return None
        rejected = static_rejection(request.request_id, request.problem_id, problems)
        rejected.shape_name = request.shape_name
        return rejected

    # -- judging ----------------------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if not self._started:
            self.start()
        if self._closed or self._loop is None:
            coro.close()
            raise EvaluatorError("this Evaluator was closed; make a new one")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _judge(self, item: P.EvalRequest | P.EvalResult) -> P.EvalResult:
        if isinstance(item, P.EvalResult):
            return item
        return await self.executor.evaluate(item)

    async def arun(self, item: P.EvalRequest | P.EvalResult) -> P.EvalResult:
        """Judge a prepared request (from :meth:`prepare`) from any event loop. Cancelling the awaiting
        task stops the judging (the judge's worker is replaced)."""
        if isinstance(item, P.EvalResult):
            return item
        return await asyncio.wrap_future(self._submit(self._judge(item)))

    def run(self, item: P.EvalRequest | P.EvalResult) -> P.EvalResult:
        if isinstance(item, P.EvalResult):
            return item
        return self._submit(self._judge(item)).result()

    async def aevaluate(self, problem: Any, code: str, backend: str = "triton", shape: str = "auto",
                        request_id: str | None = None, **settings: Any) -> P.EvalResult:
        """The async twin of :meth:`evaluate`."""
        if not self._started:
            await asyncio.to_thread(self.start)
        return await self.arun(self.prepare(problem, code, backend, shape, request_id, **settings))

    def evaluate(self, problem: Any, code: str, backend: str = "triton", shape: str = "auto",
                 request_id: str | None = None, **settings: Any) -> P.EvalResult:
        """Judge ``code`` (a module defining ``ModelNew``) against ``problem``; returns the EvalResult.

        ``settings`` are ``[eval]`` settings (``trials``, ``run_timeout_s``, ``min_samples``...).
        ``shape``: ``auto`` (main on a GPU, small on the CPU), ``small`` or ``main``. ``request_id``
        (default: a fresh one) is copied into the result."""
        item = self.prepare(problem, code, backend, shape, request_id, **settings)
        return self.run(item)

    async def aevaluate_many(self, jobs: Iterable[EvalJob | dict[str, Any]]) -> AsyncIterator[P.EvalResult]:
        """Judge many candidates at once, yielding each result as it finishes (completion order; match
        them by ``request_id``, which is the job's own if it set one). Every job is checked before any
        is judged, so bad input raises before judge time is spent."""
        if not self._started:
            await asyncio.to_thread(self.start)
        prepared = [self._prepare_job(j) for j in jobs]
        futures = [asyncio.wrap_future(self._submit(self._judge(p))) for p in prepared]
        try:
            for fut in asyncio.as_completed(futures):
                yield await fut
        finally:
            for f in futures:
                f.cancel()

    def evaluate_many(self, jobs: Iterable[EvalJob | dict[str, Any]]) -> Iterator[P.EvalResult]:
        """The sync twin of :meth:`aevaluate_many`: results as they finish."""
        self.start()
        prepared = [self._prepare_job(j) for j in jobs]
        futures = [self._submit(self._judge(p)) for p in prepared]
        try:
            for fut in concurrent.futures.as_completed(futures):
                yield fut.result()
        finally:
            for f in futures:
                f.cancel()

    def evaluate_all(self, jobs: Iterable[EvalJob | dict[str, Any]]) -> list[P.EvalResult]:
        """Judge many candidates at once; the results in the jobs' order."""
        self.start()
        prepared = [self._prepare_job(j) for j in jobs]
        return [f.result() for f in [self._submit(self._judge(p)) for p in prepared]]

    def _prepare_job(self, job: EvalJob | dict[str, Any]) -> P.EvalRequest | P.EvalResult:
        if isinstance(job, dict):
            job = EvalJob(**job)
        return self.prepare(job.problem, job.code, job.backend, job.shape, job.request_id, **job.settings)

    # -- state ------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The judges (alive or not), the device, the executor's capacity and busy fraction."""
        judges = []
        for w in getattr(self.executor, "workers", []) or []:
            proc = getattr(w, "proc", None)
            judges.append({"index": w.index, "device": "cpu" if w.gpu is None else f"cuda:{w.gpu}",
                           "alive": bool(proc is not None and proc.returncode is None),
                           "pid": getattr(proc, "pid", None)})
        info = self.device_info
        return {"started": self._started and not self._closed, "executor": self.executor.name,
                "device": info.get("device"), "device_kind": info.get("device_kind"), "judges": judges,
                "capacity": self.capacity, "busy_fraction": self.executor.busy_fraction()}

