"""The engine: asks the search, generates, judges, records, tells, as results arrive (no barrier)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kforge
from kforge import events as E
from kforge.api import Candidate, Generation, Proposal, Retime, RunContext, code_hash
from kforge.metrics import ProblemSummary, problem_summaries, result_record, retime_verdict, summarise
from kforge.options import OptionSet, RecipeError
from kforge.plugins import Registry, describe_plugins, get_registry
from kforge.problems import Problem, select
from kforge.recipe import Recipe
from kforge.runtime import protocol as P
from kforge.store import ProposalRow, Store


class InfrastructureError(Exception):
    """The executor or machine failed (exit code 3)."""


# budgets that stop generation but leave re-timings of winners to finish (re-timings make no candidate
# and cost no tokens); the wall clock and an interrupt stop them too
GENERATION_BUDGETS = ("budget: candidates", "budget: tokens", "budget: usd")
SEARCH_METRICS_INTERVAL_S = 1.0  # at most one ``search`` event per second (and a last one before the summary)
RESULT_WHERE = ("island", "generation")  # proposal params a result event carries when the search set them


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def new_run_dir(out: str | Path, name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _writable_dir_problem(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be (or become) a folder this process writes in, or None."""
    path = path.expanduser()
    if path.exists():
        if not path.is_dir():
            return f"{what} {path} is a file, not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else f"{what} {path} is not writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{what} {path} cannot be created: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{what} {path} cannot be created: {parent} is not writable"
    return None


def preflight(recipe: Recipe, run_dir: Path | None, resume: bool, plugins: list[Any],
              problem_ids: list[str]) -> list[str]:
    """Check what would stop a run before anything starts (a dry run checks it too): the run
    directory, [run] out, each generator's needs (an API key, replay files). Raises RecipeError with
    every problem found; returns the warnings."""
    from kforge.store import DB_NAME

    errors: list[str] = []
    warnings: list[str] = []
    if run_dir is not None and not resume:
        if (run_dir / DB_NAME).exists():
            errors.append(f"--run-dir {run_dir} holds a run already: a run never writes into another. Continue "
                          f"it with kforge resume {run_dir}, or give a new directory.")
        elif run_dir.exists() and run_dir.is_dir() and any(run_dir.iterdir()):
            errors.append(f"--run-dir {run_dir} is not empty: give a new or empty directory")
        else:
            errors += [m for m in [_writable_dir_problem(run_dir, "--run-dir")] if m]
    elif run_dir is None:
        errors += [m for m in [_writable_dir_problem(Path(recipe.tables["run"]["out"]), "run.out")] if m]
    for plugin in plugins:
        check = getattr(plugin, "preflight", None)
        if check is not None:
            errs, warns = check(problem_ids)
            errors += errs
            warnings += warns
    if errors:
        raise RecipeError(mistakes=errors)
    return warnings


def load_problems(recipe: Recipe, registry: Registry) -> list[Problem]:
    table = recipe.tables["problems"]
    src = table["source"]
    source_cls = registry.get("problem_sources", src if src in registry.names("problem_sources") else "path")
    problems = source_cls().load(table)
    problems = select(problems, table.get("ids"), table.get("level"))
    if not problems:
        raise RecipeError("the [problems] selection is empty")
    return problems


def static_rejection(request_id: str, problem_id: str, problems: list[str]) -> P.EvalResult:
    """The result for a candidate the static checks rejected; its guard is the first rule broken."""
    m = re.match(r"rule ([\w-]+)", problems[0])
    return P.EvalResult(request_id=request_id, problem_id=problem_id, status=P.REJECTED,
                        guard=m.group(1) if m else "static", error="; ".join(problems),
                        device="static check (not run)")


def build_request(problem: Problem, code: str, request_id: str, backend: Any, shape_name: str,
                  ev: dict[str, Any], init_seed: int) -> P.EvalRequest:
    """The EvalRequest for one candidate: the problem at a shape, the [eval] settings, its backend."""
    if hasattr(backend, "for_code"):  # the auto backend: the candidate's own language
        backend = backend.for_code(code)
    return P.EvalRequest(
        request_id=request_id, problem_id=problem.id, problem_source=problem.source, candidate_source=code,
        backend=backend.name, loader=backend.runtime_loader, shape_name=shape_name,
        shape=problem.shape(shape_name), dtype=problem.dtype,
        atol=ev["atol"] if ev["atol"] is not None else problem.atol,
        rtol=ev["rtol"] if ev["rtol"] is not None else problem.rtol,
        trials=ev["trials"], warmup=ev["warmup"], min_samples=ev["min_samples"], max_samples=ev["max_samples"],
        max_timing_s=ev["max_timing_s"], target_rel_se=ev["target_rel_se"], flush_l2=ev["flush_l2"],
        compile_timeout_s=ev["compile_timeout_s"], run_timeout_s=ev["run_timeout_s"],
        init_seed=init_seed, flops=problem.flops, bytes=problem.bytes, inplace=problem.inplace,
        compile_modes=list(ev["baseline_compile"] or []), profile_check=ev["profile_check"],
        aa_tolerance=ev["aa_tolerance"], heldout_trials=ev["heldout_trials"], ops_check=ev["ops_check"],
        cuda_graph_below_ms=ev["cuda_graph_below_ms"], baseline_math=ev["baseline_math"],
        # held-out shapes are GPU-sized: judged only when the run judges main shapes
        heldout=list(problem.shapes.get("heldout") or []) if ev["heldout"] and shape_name == "main" else [])


class Engine:
    def __init__(self, recipe: Recipe, run_dir: Path | None = None, registry: Registry | None = None,
                 resume: bool = False) -> None:
        self.resume = resume
        self.recipe = recipe
        self.registry = registry or get_registry()
        self.run_dir = run_dir or new_run_dir(recipe.tables["run"]["out"], recipe.name)
        self.bus = E.EventBus()
        self.stop_reason: str | None = None
        self.problems = load_problems(recipe, self.registry)
        self.problem_ids = [p.id for p in self.problems]
        reg = self.registry
        bname, bopts = recipe.plugin("backend")
        self.backend = reg.get("backends", bname)(**bopts)
        gname, gopts = recipe.plugin("generator")
        self.generator = reg.get("generators", gname)(**gopts)
        sname, sopts = recipe.plugin("search")
        self.search = reg.get("searches", sname)(**sopts)
        # generators a search routes some proposals to by params["generator_hint"] (evolution's tune edits)
        self.routes: dict[str, Any] = {}
        for hint, hopts in (getattr(self.search, "generator_routes", lambda: {})() or {}).items():
            if hint == gname:
                continue  # the recipe's generator already is that one
            cls = reg.get("generators", hint)
            optset = OptionSet(f"generator {hint!r}", tuple(getattr(cls, "options", ())))
            self.routes[hint] = cls(**optset.resolve(dict(hopts or {}), f"search.{hint}", skip=()))
        ename, eopts = recipe.plugin("executor")
        self.executor = reg.get("executors", ename)(**eopts)
        self.warnings = preflight(recipe, run_dir, resume, [self.generator, *self.routes.values()],
                                  self.problem_ids)
        self.loggers = [cls() for cls in (reg.items.get("loggers", {})[n].impl for n in reg.names("loggers"))]
        self.ctx = RunContext(seed=recipe.tables["run"]["seed"], problems=self.problems, backend=self.backend,
                              recipe=recipe.to_dict(), run_dir=self.run_dir)
        self.ctx.generator = self.generator
        self.shape_name = "small"
        self._metrics_last: Any = None
        self._metrics_at = float("-inf")
        self.progress: dict[str, ProblemSummary] = {}  # each problem's summary so far (for best_improved)
        self.broken_problems: dict[str, str] = {}  # problem id -> why its reference fails (guard "reference")
        self.n_candidates = 0
        self._cand_seq = 0
        self._held: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._tags: dict[asyncio.Future[Any], tuple[str, Any]] = {}

    def plan(self) -> dict[str, Any]:
        t = self.recipe.tables
        return {
            "run": t["run"], "run_dir_parent": str(Path(t["run"]["out"]).resolve()),
            "problems": [{"id": p.id, "name": p.name, "level": p.level} for p in self.problems],
            "shapes": t["problems"]["shapes"], "backend": t["backend"], "generator": t["generator"],
            "search": t["search"], "executor": {**t["executor"], **self._describe_executor()},
            "eval": t["eval"], "budget": t["budget"],
            **({"generator_routes": {hint: {"name": gen.name, **gen.config} for hint, gen in self.routes.items()}}
               if self.routes else {}),
        }

    def _describe_executor(self) -> dict[str, Any]:
        import inspect

        try:
            # An executor that can price the whole run gets its budget and backend (the modal executor).
            params = inspect.signature(self.executor.describe).parameters
            hints = {"candidates": self.recipe.tables["budget"].get("candidates"), "backend": self.backend.name}
            return {"plan": self.executor.describe(**{k: v for k, v in hints.items() if k in params})}
        except Exception as exc:  # noqa: BLE001 - a dry run reports what it could not plan
            return {"plan": f"unavailable: {exc}"}

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.emit(E.make(E.BUDGET if reason.startswith("budget") else E.ERROR, reason=reason,
                             message=f"stopping: {reason}"))
        if reason == "interrupted":
            for t in list(self._tasks):
                t.cancel()

    def emit(self, event: dict[str, Any]) -> None:
        self.store.add_event(event)
        if self.store.in_transaction:
            self._held.append(event)  # shown once committed: nothing is shown that a crash could lose
        else:
            self.bus.emit(event)

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        """One atomic step of the run: its records commit together, then its events are shown."""
        with self.store.transaction():
            yield
        held, self._held = self._held, []
        for event in held:
            self.bus.emit(event)

    # ------------------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        if self.resume:
            self.store = Store(self.run_dir)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.store = Store(self.run_dir, create=True)
            (self.run_dir / "recipe.json").write_text(json.dumps(self.recipe.to_dict(), indent=2))
            if self.recipe.path is not None:
                (self.run_dir / "recipe.toml").write_text(self.recipe.path.read_text())
            (self.run_dir / "candidates").mkdir(exist_ok=True)
            self.store.set_meta("recipe", self.recipe.to_dict())
            self.store.set_meta("name", self.recipe.name)
            self.store.set_meta("started", time.time())
        self.store.set_meta("status", "running")
        for lg in list(self.loggers):
            try:
                lg.setup(self.run_dir, self.recipe.to_dict())
            except Exception as exc:  # noqa: BLE001 - a broken logger must not stop the run
                self.loggers.remove(lg)
                print(f"warning: logger {lg.name!r} failed to start and is off: {exc}", file=sys.stderr)
                continue
            self.bus.subscribe(lg.log)
        self.emit(E.make(E.RUN_STARTED, run_dir=str(self.run_dir), name=self.recipe.name,
                         problems=self.problem_ids, seed=self.ctx.seed, resumed=self.resume))
        # the wall-clock budget counts the time the run already spent before a crash
        started = time.monotonic() - float(self.store.get_meta("elapsed_s", 0.0) or 0.0)
        try:
            try:
                await self.executor.start(self.run_dir / "logs")
            except Exception as exc:  # noqa: BLE001
                message = f"the {self.executor.name} executor failed to start: {type(exc).__name__}: {exc}"
                self.emit(E.make(E.ERROR, reason="infrastructure", message=message))
                self.emit(E.make(E.RUN_FINISHED, run_dir=str(self.run_dir), status="failed"))
                raise InfrastructureError(message) from exc
            info = self.executor.device_info or {}
            shapes = self.recipe.tables["problems"]["shapes"]
            self.shape_name = ("main" if info.get("device_kind") == "cuda" else "small") if shapes == "auto" else shapes
            self.ctx.device, self.ctx.shape_name = dict(info), self.shape_name
            self._write_provenance(info)
            for p in self.problems:
                self.store.add_problem(p.summary(), self.shape_name)
            self.search.setup(self.ctx)
            if self.resume:
                self._restore()
            await self._loop(started)
        finally:
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.executor.shutdown()
            await self.generator.aclose()
            for routed in self.routes.values():
                await routed.aclose()
            failure = sys.exc_info()[1]
            if failure is not None:  # the run failed: the stream still ends, and what holds files closes
                self.store.set_meta("status", "failed")
                if not isinstance(failure, (InfrastructureError, asyncio.CancelledError)):
                    message = f"the run failed: {type(failure).__name__}: {failure}"
                    with contextlib.suppress(Exception):
                        self.emit(E.make(E.ERROR, reason="failed", message=message))
                        self.emit(E.make(E.RUN_FINISHED, run_dir=str(self.run_dir), status="failed"))
                self._close_loggers()
        summary, _ = summarise(self.store)  # the run's one summary, from its store (a resumed run's too)
        metrics = self._search_metrics(force=True)
        if metrics:
            summary["search"] = metrics
        summary["usage"] = self.store.usage()
        summary.update(run_dir=str(self.run_dir), stopped=self.stop_reason, shape=self.shape_name,
                       device=(self.executor.device_info or {}).get("device"),
                       wall_s=round(time.monotonic() - started, 2))
        busy = self.executor.busy_fraction()
        if busy is not None:
            key = "gpu_busy_fraction" if self.ctx.device.get("device_kind") == "cuda" else "judge_busy_fraction"
            summary[key] = round(busy, 3)
        if self.executor.stats():
            summary["executor_stats"] = self.executor.stats()
        self.emit(E.make(E.SUMMARY, **summary))
        self.store.set_meta("status", "interrupted" if self.stop_reason == "interrupted" else "finished")
        self.store.set_meta("summary", summary)
        self.emit(E.make(E.RUN_FINISHED, run_dir=str(self.run_dir), status=self.store.get_meta("status")))
        self._close_loggers()
        self.store.close()
        return summary

    def _close_loggers(self) -> None:
        for lg in self.loggers:
            try:
                lg.close()
            except Exception:  # noqa: BLE001
                pass
        self.loggers = []

    def _write_provenance(self, info: dict[str, Any]) -> None:
        prov = {"kforge": kforge.__version__, "git_sha": _git_sha(), "python": platform.python_version(),
                "platform": platform.platform(), "argv": list(sys.argv), "device": info,
                "plugins": [{"name": p["name"], "version": p["version"]} for p in describe_plugins(self.registry)],
                "shape": self.shape_name, "executor": self.executor.describe()}
        (self.run_dir / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
        self.store.set_meta("provenance", prov)

    def _budget_left(self, started: float) -> bool:
        budget = self.recipe.tables["budget"]
        if budget.get("candidates") is not None and self.n_candidates >= budget["candidates"]:
            self.request_stop("budget: candidates")
        if budget.get("wall_clock_s") is not None and time.monotonic() - started > budget["wall_clock_s"]:
            self.request_stop("budget: wall_clock_s")
        if budget.get("tokens") is not None or budget.get("usd") is not None:
            usage = self.store.usage()
            if budget.get("tokens") is not None and usage["tokens"] >= budget["tokens"]:
                self.request_stop("budget: tokens")
            if budget.get("usd") is not None and usage["cost_usd"] >= budget["usd"]:
                self.request_stop("budget: usd")
        return self.stop_reason is None

    def _restore(self) -> None:
        """Continue a run from its store: the search's state, then every unfinished step again."""
        state = self.store.get_state("search")
        if state is not None:
            self.search.load_state_dict(state)
        cands = self.store.candidates()
        self._cand_seq = max((int(c["id"][1:]) for c in cands if c["id"][1:].isdigit()), default=0)
        results = self.store.results()
        self.progress = problem_summaries(results, self.problem_ids)
        proposals = {p["id"]: p for p in self.store.proposals()}

        def as_proposal(row: ProposalRow) -> Proposal:
            return Proposal(id=row["id"], problem_id=row["problem_id"], step=row["step"], seed=row["seed"],
                            parent_id=row["parent_id"], params=json.loads(row["params"] or "{}"))

        regenerate = [as_proposal(p) for p in proposals.values() if p["outcome"] is None]
        reevaluate = [(Candidate(id=c["id"], problem_id=c["problem_id"], proposal_id=c["proposal_id"], code=c["code"],
                                 code_hash=c["code_hash"], generator=c["generator"] or "", label=c["label"],
                                 parent_id=c["parent_id"]), as_proposal(proposals[c["proposal_id"]]))
                      for c in cands if c["status"] is None and c["proposal_id"] in proposals]
        self.n_candidates = len(cands) + len(regenerate)
        retimes = self.store.retimes()
        redo = [Retime(id=r["id"], problem_id=r["problem_id"], candidate_id=r["candidate_id"],
                       first_speedup=r["first_speedup"], trials=r["trials"]) for r in retimes if r["status"] is None]
        if regenerate:
            self._spawn_generation(regenerate)
        for cand, prop in reevaluate:
            self._spawn(self._evaluate(cand, prop), ("eval", cand))
        for rt in redo:
            self._spawn(self._retime(rt), ("retime", rt))
        self.emit(E.make(E.BUDGET, message=f"resumed: {len(results)} results kept, {len(reevaluate)} "
                         f"evaluations, {len(regenerate)} generations and {len(redo)} re-timings to redo",
                         reason="resumed"))

    async def _loop(self, started: float) -> None:
        in_flight = sum(len(tag[1]) if tag[0] == "gen" else 1 for tag in self._tags.values())
        # a search may want whole batches in flight (TTT generates G x K rollouts together)
        lookahead = max(max(self.executor.capacity, 1) * 2, int(getattr(self.search, "lookahead", 0) or 0))
        while True:
            while self._budget_left(started) and in_flight < lookahead and not self.search.done():
                room = lookahead - in_flight
                cap = self.recipe.tables["budget"].get("candidates")
                if cap is not None:
                    room = min(room, cap - self.n_candidates)
                with self._step():
                    proposals = self.search.ask(room) if room > 0 else []
                    for p in proposals:
                        self.store.add_proposal(p.to_dict())
                        self.emit(E.make(E.PROPOSAL, proposal=p.id, problem=p.problem_id, step=p.step))
                    self.store.set_state("search", self.search.state_dict())
                if not proposals:
                    break
                self.n_candidates += len(proposals)  # reserved; settled when the generation comes back
                in_flight += len(proposals)
                self._spawn_generation(proposals)
            in_flight += self._ask_retimes(lookahead - in_flight, started)
            if not self._tasks:
                break
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self._tasks.discard(task)
                kind, payload = self._tags.pop(task)
                if task.cancelled():
                    if kind == "gen":
                        in_flight -= len(payload)
                    else:
                        in_flight -= 1
                    continue
                exc = task.exception()
                if exc is not None:
                    raise exc
                if kind == "gen":
                    for proposal, gen in task.result():
                        with self._step():
                            submitted = self._accept(proposal, gen)
                        if not submitted:
                            in_flight -= 1
                elif kind == "retime":
                    in_flight -= 1
                    with self._step():
                        self._record_retime(*task.result())
                        self.store.set_meta("elapsed_s", round(time.monotonic() - started, 3))
                else:
                    in_flight -= 1
                    with self._step():
                        self._record(*task.result())
                        self.store.set_meta("elapsed_s", round(time.monotonic() - started, 3))
            self._search_metrics()

    def _spawn(self, coro: Any, tag: tuple[str, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        self._tags[task] = tag

    def _spawn_generation(self, proposals: list[Proposal]) -> None:
        """Generate a batch: proposals whose ``generator_hint`` names a routed generator go to it (e.g.
        evolution's tune edits to the ``tune`` generator, no model call), the rest to the recipe's."""
        groups: dict[str, list[Proposal]] = {}
        for p in proposals:
            hint = p.params.get("generator_hint")
            groups.setdefault(hint if isinstance(hint, str) and hint in self.routes else "", []).append(p)
        for hint, group in groups.items():
            self._spawn(self._generate(group, self.routes.get(hint, self.generator)), ("gen", group))

    async def _generate(self, proposals: list[Proposal], generator: Any = None
                        ) -> list[tuple[Proposal, Generation]]:
        generator = generator or self.generator
        gens = await generator.generate(proposals, self.ctx)
        by_id = {g.proposal_id: g for g in gens}
        return [(p, by_id.get(p.id) or Generation(p.id, None, generator.name, error="no generation"))
                for p in proposals]

    # -- re-timing winners ------------------------------------------------------------------------
    def _may_retime(self, started: float) -> bool:
        if self.stop_reason is not None and self.stop_reason not in GENERATION_BUDGETS:
            return False
        wall = self.recipe.tables["budget"].get("wall_clock_s")
        return wall is None or time.monotonic() - started <= wall

    def _ask_retimes(self, room: int, started: float) -> int:
        """Ask the search for re-timings of judged candidates and start them; how many started."""
        ask = getattr(self.search, "ask_retimes", None)
        if ask is None or room <= 0 or not self._may_retime(started):
            return 0
        retimes = list(ask(room, self.stop_reason is not None or self.search.done()) or [])
        if not retimes:
            return 0
        with self._step():  # asked and recorded together: a resumed run redoes exactly these
            for rt in retimes:
                self.store.add_retime(rt.to_dict())
            self.store.set_state("search", self.search.state_dict())
        for rt in retimes:
            self._spawn(self._retime(rt), ("retime", rt))
        return len(retimes)

    async def _retime(self, rt: Retime) -> tuple[Retime, P.EvalResult]:
        row = self.store.candidate(rt.candidate_id)
        if row is None:
            return rt, P.EvalResult(request_id=rt.id, problem_id=rt.problem_id, status=P.INFRA_ERROR,
                                    error=f"re-timing {rt.id}: candidate {rt.candidate_id} is not in the store")
        req = build_request(self.ctx.problems_by_id[rt.problem_id], row["code"], rt.id, self.backend,
                            self.shape_name, self.recipe.tables["eval"], self.ctx.seed)
        if rt.trials is not None:
            req = dataclasses.replace(req, trials=int(rt.trials))
        return rt, await self.executor.evaluate(req)

    def _record_retime(self, rt: Retime, result: P.EvalResult) -> None:
        told = getattr(self.search, "tell_retime", None)
        info = dict(told(rt, result) or {}) if told is not None else {}
        verdict = info.get("verdict") or retime_verdict(rt.first_speedup, result.status, result.speedup, 1.0)
        data = result.to_dict()
        data["candidate_id"] = rt.candidate_id
        self.store.set_retime_result(rt.id, data, verdict)
        self.emit(E.make(E.RETIME, problem=rt.problem_id, candidate=rt.candidate_id, retime=rt.id,
                         status=result.status, verdict=verdict, speedup=result.speedup,
                         first_speedup=rt.first_speedup, time_ms=(result.timing or {}).get("median_ms"),
                         baseline_ms=(result.baseline_eager or {}).get("median_ms"),
                         speedup_vs_compile=result.speedup_vs_compile, roofline_fraction=result.roofline_fraction,
                         device=result.device, device_kind=result.device_kind, guard=result.guard,
                         error=result.error, trials=result.trials_run, flags=result.flags))
        self.store.set_state("search", self.search.state_dict())

    # -- search metrics ---------------------------------------------------------------------------
    def _search_metrics(self, force: bool = False) -> dict[str, Any]:
        """Emit the search's ``metrics()`` as a ``search`` event when they changed (at most once a second
        unless ``force``); the figures emitted, or {}."""
        now = time.monotonic()
        if not force and now - self._metrics_at < SEARCH_METRICS_INTERVAL_S:
            return {}
        try:
            metrics = json.loads(json.dumps(self.search.metrics() or {}, default=str))
        except Exception as exc:  # noqa: BLE001 - a search's display figures must not stop the run
            metrics = {"error": f"{type(exc).__name__}: {exc}"}
        self._metrics_at = now
        if metrics and metrics != self._metrics_last:
            self._metrics_last = metrics
            self.emit(E.make(E.SEARCH, search=self.search.name, metrics=metrics))
        return metrics

    def _accept(self, proposal: Proposal, gen: Generation) -> bool:
        """Record a generation and submit it; False if nothing was submitted."""
        paid: dict[str, Any] = {"tokens_in": gen.tokens_in, "tokens_out": gen.tokens_out, "cost_usd": gen.cost_usd}
        if gen.code is None:
            self.n_candidates -= 1  # the reservation is released
            self.store.set_proposal_outcome(proposal.id, f"no candidate: {gen.error or 'generator had none'}", **paid)
            if gen.meta.get("exhausted"):
                self.search.tell(None, proposal, None)  # the generator has nothing more for this problem
            else:  # a sample that failed before judging (no code in the answer, an edit that didn't apply)
                failed = P.EvalResult(request_id=proposal.id, problem_id=proposal.problem_id, status=P.COMPILE_ERROR,
                                      guard="no_code", error=gen.error or "the generator returned no code")
                self.search.tell(None, proposal, failed)
            self.store.set_state("search", self.search.state_dict())
            return False
        h = code_hash(gen.code)
        dup = self.store.candidate_by_hash(proposal.problem_id, h)
        if dup is not None:
            self.n_candidates -= 1
            self.store.set_proposal_outcome(proposal.id, f"duplicate of {dup['id']}", **paid)
            self.emit(E.make(E.CANDIDATE, candidate=dup["id"], problem=proposal.problem_id, label=gen.label,
                             generator=gen.generator, proposal=proposal.id, duplicate=True))
            original = Candidate(id=dup["id"], problem_id=dup["problem_id"], proposal_id=dup["proposal_id"],
                                 code=dup["code"], code_hash=dup["code_hash"], generator=dup["generator"] or "",
                                 label=dup["label"], parent_id=dup["parent_id"])
            self.search.tell(original, proposal, None)  # a duplicate: never judged twice
            self.store.set_state("search", self.search.state_dict())
            return False
        self._cand_seq += 1
        cid = f"c{self._cand_seq:04d}"
        cand = Candidate(id=cid, problem_id=proposal.problem_id, proposal_id=proposal.id, code=gen.code,
                         code_hash=h, generator=gen.generator, label=gen.label, parent_id=proposal.parent_id)
        self.store.add_candidate({**cand.__dict__, "model": gen.model, **paid, "meta": gen.meta})
        (self.run_dir / "candidates" / f"{cid}.py").write_text(gen.code)
        self.store.set_proposal_outcome(proposal.id, f"candidate {cid}", **paid)
        self.emit(E.make(E.CANDIDATE, candidate=cid, problem=proposal.problem_id, label=gen.label,
                         generator=gen.generator, proposal=proposal.id))
        unreadable = gen.meta.get("compile_error")
        if unreadable:  # e.g. a replay file that is not text: a compile error with the reason, never run
            res = P.EvalResult(request_id=cid, problem_id=proposal.problem_id, status=P.COMPILE_ERROR,
                               guard="encoding", error=str(unreadable), device="static check (not run)")
            self._record(cand, proposal, res)
            return False
        problems = self.backend.static_check(gen.code)
        if problems:
            res = static_rejection(cid, proposal.problem_id, problems)
            self._record(cand, proposal, res)
            return False
        self._spawn(self._evaluate(cand, proposal), ("eval", cand))
        return True

    def _request(self, cand: Candidate) -> P.EvalRequest:
        return build_request(self.ctx.problems_by_id[cand.problem_id], cand.code, cand.id, self.backend,
                             self.shape_name, self.recipe.tables["eval"], self.ctx.seed)

    async def _evaluate(self, cand: Candidate, proposal: Proposal) -> tuple[Candidate, Proposal, P.EvalResult]:
        result = await self.executor.evaluate(self._request(cand))
        return cand, proposal, result

    def _record(self, cand: Candidate, proposal: Proposal, result: P.EvalResult) -> None:
        data = result.to_dict()
        data["candidate_id"] = cand.id
        self.store.add_result(cand.id, data)
        self.emit(E.make(E.RESULT, problem=cand.problem_id, candidate=cand.id, label=cand.label,
                         status=result.status, speedup=result.speedup, device=result.device,
                         device_kind=result.device_kind, guard=result.guard, error=result.error,
                         time_ms=(result.timing or {}).get("median_ms"),
                         baseline_ms=(result.baseline_eager or {}).get("median_ms"),
                         roofline_fraction=result.roofline_fraction, timing_method=result.timing_method,
                         speedup_vs_compile=result.speedup_vs_compile, aa_ratio=result.aa_ratio,
                         cv=(result.timing or {}).get("cv"), n=(result.timing or {}).get("n"),
                         flags=result.flags, shape=result.shape_name,
                         **{k: proposal.params[k] for k in RESULT_WHERE if k in proposal.params}))
        st = self.progress.setdefault(cand.problem_id, ProblemSummary(cand.problem_id))
        if st.add_result(**result_record(data)):
            self.emit(E.make(E.BEST_IMPROVED, problem=cand.problem_id, candidate=cand.id, speedup=result.speedup))
        if result.status == P.INFRA_ERROR:
            if result.guard == "reference":  # the problem file is at fault, not the machine
                self.broken_problems.setdefault(cand.problem_id, result.error or "")
            self.emit(E.make(E.ERROR, problem=cand.problem_id, candidate=cand.id, message=result.error))
        self.search.tell(cand, proposal, result)
        self.store.set_state("search", self.search.state_dict())
