"""The modal executor: the same judge as ``local``, in Modal containers, one candidate per call.

The orchestrator side lives here and never imports Modal at module level: ``kforge run --dry-run``
and the recipe validator read the settings and plan without it. ``start()`` imports the Modal client,
builds the App from :mod:`kforge.executors.modal_app` and runs it. Each ``evaluate()`` spawns one call
(``spawn.aio``) and awaits it (``FunctionCall.get.aio``), so results stream back as each finishes and
the engine's own concurrency is the fan-out. Every call id is written to ``modal_calls.json`` in the
run directory before it is awaited, so ``kforge resume`` re-attaches to calls that outlived a crash
(``FunctionCall.from_id``) and re-submits the ones that did not. An interrupted run cancels its
outstanding calls.

A candidate's failure is a result, never an exception, so Modal's retries (``modal.Retries``) only
ever see infrastructure faults: a lost or preempted container, a judge whose own GPU context broke.
A call that fails after its retries becomes an ``infra_error`` result naming the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kforge.api import Executor
from kforge.hookspecs import hookimpl
from kforge.options import Option, RecipeError
from kforge.runtime import protocol as P

CALLS_FILE = "modal_calls.json"

# USD per GPU-hour on Modal, for the dry run's cost estimate only. Source: modal.com/pricing per-second
# rates (H100 $0.001097/s, H200 $0.001261/s, B200 $0.001736/s, A100-80GB $0.000694/s, ...) as quoted in
# public 2026 tables; check the live page before trusting a figure. CPU and memory are billed on top
# (a few cents per container-hour at the defaults) and are not included.
GPU_USD_PER_HOUR: dict[str, float] = {
    "T4": 0.59, "L4": 0.80, "A10": 1.10, "L40S": 1.95, "A100": 2.10, "A100-40GB": 2.10, "A100-80GB": 2.50,
    "RTX-PRO-6000": 3.03, "H100": 3.95, "H200": 4.54, "B200": 6.25, "B300": 7.10,
}


@dataclass(frozen=True)
class ImageSpec:
    """What the container image holds: a CUDA devel base, pinned Python packages, CUTLASS headers."""

    base: str
    python: str
    torch: str
    triton: str
    numpy: str
    cutlass: str  # a CUTLASS release tag without the "v" ("" = no headers)
    torch_index_url: str  # where the CUDA build of torch comes from ("" = PyPI)

    def describe(self) -> dict[str, Any]:
        sources = self.local_sources()
        out = {"base": self.base, "python": self.python, "pins": self.pins(),
               "cutlass_headers": f"NVIDIA/cutlass v{self.cutlass} at /opt/cutlass" if self.cutlass else None,
               "torch_index_url": self.torch_index_url or None,
               "kforge": f"the local {' and '.join(sources)} packages, added as Python source (add_local_python_source)"
               if len(sources) > 1 else "the local kforge package, added as Python source (add_local_python_source)"}
        if self.cutlass and "kforge_cutlass" not in sources:
            out["warning"] = ("kforge_cutlass (plugins/kforge-cutlass) is not installed here, so the image lacks it: "
                              "cutlass candidates, which import it for include_paths(), would fail to import there")
        return out

    def local_sources(self) -> list[str]:
        """The Python packages of this machine that go into the image as source: kforge's runtime and,
        with CUTLASS headers, the ``kforge_cutlass`` helper the cutlass backend's candidates import
        (``from kforge_cutlass import include_paths``), where it is installed."""
        import importlib.util

        names = ["kforge"]
        if self.cutlass and importlib.util.find_spec("kforge_cutlass") is not None:
            names.append("kforge_cutlass")
        return names

    def pins(self) -> dict[str, str]:
        return {"torch": self.torch, "triton": self.triton, "numpy": self.numpy}


@dataclass(frozen=True)
class ModalSettings:
    """The executor's resolved options: everything the App, the estimate and the containers need."""

    app_name: str
    gpu: str | tuple[str, ...]
    allow_fallback: bool
    timeout_s: int
    max_containers: int
    retries: int
    volume: str
    detach: bool
    cpu: float
    memory_mib: int
    scaledown_window_s: int
    retire_on_candidate_fault: bool
    image: ImageSpec
    est_seconds_per_candidate: float
    est_container_start_s: float
    gpu_usd_per_hour: dict[str, float]

    @classmethod
    def from_options(cls, config: dict[str, Any]) -> ModalSettings:
        def opt(name: str) -> Any:
            value = config.get(name)
            return _DEFAULTS[name] if value is None else value

        gpu = opt("gpu")
        allow_fallback = bool(opt("allow_fallback"))
        if isinstance(gpu, list):
            if not gpu:
                raise RecipeError("executor.gpu is an empty list; give a GPU type such as \"H100!\"")
            if len(gpu) > 1 and not allow_fallback:
                raise RecipeError(
                    f"executor.gpu is a list ({', '.join(gpu)}) but executor.allow_fallback is false. Timings are "
                    "only comparable on one GPU type: give one (e.g. \"H100!\"), or set allow_fallback = true to "
                    "trade comparability for throughput (each result still records the GPU that ran it).")
            gpu = gpu[0] if len(gpu) == 1 else tuple(gpu)
        for g in (gpu,) if isinstance(gpu, str) else gpu:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*[!+]?(:\d+)?", g):
                raise RecipeError(f"executor.gpu {g!r} is not a Modal GPU type (e.g. \"H100!\", \"A100-80GB\", \"L40S\")")
        if opt("retries") > 10:
            raise RecipeError("executor.retries must be at most 10 (Modal's limit)")
        if opt("timeout_s") > 24 * 3600:
            raise RecipeError("executor.timeout_s must be at most 86400 (Modal's limit for one call)")
        prices = {**GPU_USD_PER_HOUR, **{str(k): v for k, v in (config.get("gpu_usd_per_hour") or {}).items()}}
        for key, value in prices.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise RecipeError(f"executor.gpu_usd_per_hour.{key} must be a number of US dollars, not {value!r}")
        image = ImageSpec(base=opt("cuda_image"), python=opt("python"), torch=opt("torch"), triton=opt("triton"),
                          numpy=opt("numpy"), cutlass=opt("cutlass"), torch_index_url=opt("torch_index_url"))
        return cls(app_name=opt("app_name"), gpu=gpu, allow_fallback=allow_fallback, timeout_s=int(opt("timeout_s")),
                   max_containers=int(opt("max_containers")), retries=int(opt("retries")), volume=opt("volume"),
                   detach=bool(opt("detach")), cpu=float(opt("cpu")), memory_mib=int(opt("memory_mib")),
                   scaledown_window_s=int(opt("scaledown_window_s")),
                   retire_on_candidate_fault=bool(opt("retire_on_candidate_fault")), image=image,
                   est_seconds_per_candidate=float(opt("est_seconds_per_candidate")),
                   est_container_start_s=float(opt("est_container_start_s")),
                   gpu_usd_per_hour={k: float(v) for k, v in prices.items()})

    @property
    def pinned(self) -> bool:
        """One GPU type, asked for exactly: timings are comparable across results."""
        return isinstance(self.gpu, str) and not self.gpu.split(":")[0].endswith("+")

    def gpu_request(self) -> str | list[str]:
        """The ``gpu=`` argument for Modal: one type, or a preference list (fallback)."""
        return self.gpu if isinstance(self.gpu, str) else list(self.gpu)

    def container_record(self) -> dict[str, Any]:
        """What each container records in every result (under ``versions["modal"]`` / ``["image"]``)."""
        return {"app": self.app_name, "gpu_requested": self.gpu_request(), "pinned": self.pinned,
                "retire_on_candidate_fault": self.retire_on_candidate_fault,
                "image": {"base": self.image.base, "python": self.image.python, **self.image.pins(),
                          "cutlass": self.image.cutlass or None, "torch_index_url": self.image.torch_index_url or None}}

    def gpu_price_per_hour(self) -> tuple[float | None, str]:
        """USD per hour of one container's GPUs; for a fallback list, the dearest type (an upper bound)."""
        worst: float | None = None
        names = [self.gpu] if isinstance(self.gpu, str) else list(self.gpu)
        for spec in names:
            family, count = _gpu_family(spec)
            price = self.gpu_usd_per_hour.get(family)
            if price is None:
                return None, f"no price for {family!r}: add it to executor.gpu_usd_per_hour"
            worst = max(worst or 0.0, price * count)
        basis = "the dearest GPU in the fallback list" if len(names) > 1 else names[0]
        return worst, basis

    def estimate(self, candidates: int | None) -> dict[str, Any]:
        price, basis = self.gpu_price_per_hour()
        est: dict[str, Any] = {
            "note": "an estimate, not a quote: candidates x est_seconds_per_candidate x the GPU's $/s, plus one "
                    "start and idle scale-down per container; CPU, memory and queueing are not included",
            "gpu_usd_per_hour": price, "price_basis": basis,
            "est_seconds_per_candidate": self.est_seconds_per_candidate,
        }
        if price is None:
            est["usd"] = None
            return est
        per_s = price / 3600.0
        est["usd_per_candidate"] = round(self.est_seconds_per_candidate * per_s, 4)
        if candidates is None:
            est["usd_per_100_candidates"] = round(100 * self.est_seconds_per_candidate * per_s
                                                  + self.max_containers * self._container_overhead_s() * per_s, 2)
            est["candidates"] = None
            return est
        containers = min(self.max_containers, max(candidates, 1))
        est["candidates"] = candidates
        est["usd"] = round(candidates * self.est_seconds_per_candidate * per_s
                           + containers * self._container_overhead_s() * per_s, 2)
        return est

    def _container_overhead_s(self) -> float:
        return self.est_container_start_s + self.scaledown_window_s


def _gpu_family(spec: str) -> tuple[str, int]:
    """("H100", 1) for "H100!"; ("A100-80GB", 2) for "a100-80gb:2"."""
    name, _, count = spec.partition(":")
    return name.rstrip("!+").upper(), int(count or 1)


_DEFAULTS: dict[str, Any] = {
    "app_name": "kforge", "gpu": "H100!", "allow_fallback": False, "timeout_s": 1800, "max_containers": 8,
    "retries": 2, "volume": "kforge-compile-cache", "detach": True, "cpu": 4.0, "memory_mib": 16384,
    "scaledown_window_s": 60, "retire_on_candidate_fault": False,
    "cuda_image": "nvidia/cuda:13.0.1-devel-ubuntu22.04", "python": "3.12", "torch": "2.11.0",
    "triton": "3.6.0", "numpy": "2.2.6", "cutlass": "4.2.0",
    "torch_index_url": "https://download.pytorch.org/whl/cu130",
    "est_seconds_per_candidate": 45.0, "est_container_start_s": 60.0,
}


class CallLedger:
    """``modal_calls.json`` in the run directory: request id -> the Modal call judging it.

    Written (atomically) before a call is awaited, so a run that crashes, or is killed by a second
    Ctrl-C, leaves the ids of calls that may still finish; ``kforge resume`` re-attaches to them."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                self.entries = {str(k): v for k, v in data.get("calls", {}).items() if isinstance(v, dict)}
            except (OSError, ValueError):
                self.entries = {}  # unreadable: every unfinished candidate is simply submitted again

    def attachable(self, request_id: str) -> str | None:
        entry = self.entries.get(request_id)
        if entry and entry.get("state") in ("running", "done") and entry.get("call_id"):
            return str(entry["call_id"])
        return None

    def record(self, request_id: str, call_id: str, state: str = "running", **extra: Any) -> None:
        entry = self.entries.setdefault(request_id, {})
        entry.update(call_id=call_id, state=state, at=round(time.time(), 3), **extra)
        self._save()

    def mark(self, request_id: str, state: str, **extra: Any) -> None:
        if request_id in self.entries:
            self.entries[request_id].update(state=state, at=round(time.time(), 3), **extra)
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".modal_calls.", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "calls": self.entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


class ModalExecutor(Executor):
    name = "modal"
    description = "judges candidates in Modal containers (the same judge as local), results streamed as each finishes"
    options = (
        Option("gpu", (str, list), _DEFAULTS["gpu"],
               "Modal GPU type; pinned by default (\"H100!\"). A list is a fallback order, allowed only with "
               "allow_fallback = true", item_type=str),
        Option("allow_fallback", bool, False, "accept a GPU list (throughput over comparability); each result "
               "records the GPU that ran it"),
        Option("timeout_s", int, _DEFAULTS["timeout_s"], "Modal timeout for one call (one candidate, including a "
               "cold container start); the judge's own per-candidate timeouts act first", minimum=10),
        Option("max_containers", int, _DEFAULTS["max_containers"], "concurrency cap: most containers (and calls in "
               "flight) at once", minimum=1),
        Option("retries", int, _DEFAULTS["retries"], "Modal retries per call, for infrastructure faults only "
               "(a candidate's failure is a result and is never retried)", minimum=0),
        Option("app_name", str, _DEFAULTS["app_name"], "name of the Modal App"),
        Option("volume", str, _DEFAULTS["volume"], "Modal Volume for the Triton compile cache (\"\" for none)"),
        Option("detach", bool, True, "calls outlive this process if it dies, so `kforge resume` re-attaches to "
               "them; false: a crash stops the app and resume submits again"),
        Option("cpu", float, _DEFAULTS["cpu"], "CPU cores per container (compilation runs on them)", minimum=0.125),
        Option("memory_mib", int, _DEFAULTS["memory_mib"], "memory per container, MiB", minimum=1024),
        Option("scaledown_window_s", int, _DEFAULTS["scaledown_window_s"], "seconds an idle container waits for "
               "the next candidate before it stops", minimum=2),
        Option("retire_on_candidate_fault", bool, False, "also retire a container after a candidate's CUDA fault "
               "(the judge's own context is probed after every candidate and always retired if broken)"),
        Option("cuda_image", str, _DEFAULTS["cuda_image"], "base image (a CUDA devel image: nvcc for CUDA backends)"),
        Option("python", str, _DEFAULTS["python"], "Python version added to the image"),
        Option("torch", str, _DEFAULTS["torch"], "torch version pinned in the image"),
        Option("triton", str, _DEFAULTS["triton"], "triton version pinned in the image"),
        Option("numpy", str, _DEFAULTS["numpy"], "numpy version pinned in the image"),
        Option("cutlass", str, _DEFAULTS["cutlass"], "CUTLASS release whose headers go to /opt/cutlass (\"\" for none)"),
        Option("torch_index_url", str, _DEFAULTS["torch_index_url"], "extra package index for torch's CUDA build"),
        Option("est_seconds_per_candidate", float, _DEFAULTS["est_seconds_per_candidate"], "for the cost estimate: "
               "GPU seconds one candidate takes (compile, correctness, timing)", minimum=0),
        Option("est_container_start_s", float, _DEFAULTS["est_container_start_s"], "for the cost estimate: billed "
               "seconds to start one container (judge start, CUDA init)", minimum=0),
        Option("gpu_usd_per_hour", dict, None, "for the cost estimate: USD per GPU-hour by GPU type, overriding the "
               "built-in table (Modal's list prices)"),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.settings = ModalSettings.from_options(self.config)
        self.capacity = self.settings.max_containers
        # Before any result: the GPU asked for, named so prompts find its datasheet figures ("NVIDIA H100").
        # The first result replaces it with the device that really judged.
        first = self.settings.gpu if isinstance(self.settings.gpu, str) else self.settings.gpu[0]
        asked = "" if self.settings.pinned else ", or a fallback"
        self.device_info = {"device": f"NVIDIA {_gpu_family(first)[0]} (Modal gpu={first}{asked})",
                            "device_kind": "cuda", "executor": self.name, "gpu_requested": self.settings.gpu_request()}
        self.ledger = CallLedger(None)
        self.devices_seen: list[str] = []
        self.judge_seconds = 0.0
        self._function: Any = None  # has .spawn.aio(request_dict) -> a FunctionCall
        self._call_from_id: Callable[[str], Any] | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._slots: asyncio.Semaphore | None = None
        self._in_flight: dict[str, Any] = {}
        self._started_at = 0.0

    # -- the Modal boundary -------------------------------------------------------------------
    def bind(self, function: Any, call_from_id: Callable[[str], Any]) -> None:
        """Use ``function`` (``.spawn.aio(dict)``) and ``call_from_id`` instead of starting an App.

        ``start()`` binds the real ``ModalJudge().evaluate`` and ``modal.FunctionCall.from_id``; tests
        bind a double with the same semantics, and a caller with a deployed App can bind its own."""
        self._function, self._call_from_id = function, call_from_id

    async def _connect(self) -> None:
        try:
            import modal
        except ImportError as exc:
            raise RuntimeError("the modal executor needs the Modal client: pip install 'modal~=1.6.0', then "
                               "`modal token new` (see `kforge modal check`)") from exc
        from kforge.executors import modal_app

        app, judge_cls = modal_app.build_app(self.settings)
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(app.run(detach=self.settings.detach))
        except Exception as exc:
            await stack.aclose()
            raise RuntimeError(f"could not start the Modal App {self.settings.app_name!r}: {type(exc).__name__}: "
                               f"{exc} (`kforge modal check` tells whether Modal is configured and reachable)") from exc
        self._stack = stack
        self.bind(judge_cls().evaluate, modal.FunctionCall.from_id)

    # -- Executor -------------------------------------------------------------------------------
    def describe(self, candidates: int | None = None) -> dict[str, Any]:
        s = self.settings
        return {
            "executor": self.name, "app": s.app_name,
            "gpu": s.gpu_request(),
            "gpu_policy": self._gpu_policy(),
            "image": s.image.describe(),
            "fan_out": {"max_containers": s.max_containers, "calls_in_flight": s.max_containers,
                        "results": "streamed as each call finishes (spawn + get per candidate, no batch barrier)"},
            "timeout_s": s.timeout_s,
            "retries": {"max_retries": s.retries, "for": "infrastructure faults only (a candidate's failure is a "
                                                         "result, never retried)"},
            "compile_cache": {"volume": s.volume, "mounted_at": "/cache", "holds": "Triton's cache"}
                             if s.volume else None,
            "detach": s.detach,
            "estimated_cost": s.estimate(candidates),
        }

    def _gpu_policy(self) -> str:
        s = self.settings
        if not s.pinned:
            return "fallback: throughput over comparability; each result records the GPU that ran it"
        policy = "pinned: every candidate is timed on this GPU type"
        if isinstance(s.gpu, str) and s.gpu.split(":")[0].upper() == "H100":
            policy += " (Modal may serve a plain \"H100\" request with an H200; \"H100!\" rules that out)"
        return policy

    async def start(self, log_dir: Any = None) -> None:
        run_dir = Path(log_dir).parent if log_dir is not None else None
        self.ledger = CallLedger(run_dir / CALLS_FILE if run_dir is not None else None)
        if self._function is None:
            await self._connect()
        self._slots = asyncio.Semaphore(self.settings.max_containers)
        self._started_at = time.perf_counter()

    async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
        assert self._slots is not None and self._function is not None, "start() first"
        async with self._slots:
            return await self._judge(request)

    async def _judge(self, req: P.EvalRequest) -> P.EvalResult:
        rid = req.request_id
        reattach_error: str | None = None
        call_id = self.ledger.attachable(rid)
        if call_id is not None and self._call_from_id is not None:
            call = self._call_from_id(call_id)
            try:
                data = await self._await(rid, call)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - gone (app stopped, call expired or failed): submit again
                reattach_error = f"re-attaching to {call_id} failed ({type(exc).__name__}: {exc}); submitted again"
                self.ledger.mark(rid, "abandoned", error=reattach_error)
            else:
                return self._finish(req, data, call_id, reattached=True)
        try:
            call = await self._function.spawn.aio(req.to_dict())
        except Exception as exc:  # noqa: BLE001 - Modal unreachable or refused the input
            return P.EvalResult(request_id=rid, problem_id=req.problem_id, status=P.INFRA_ERROR, device_kind="cuda",
                                shape_name=req.shape_name,
                                error=f"could not submit to Modal: {type(exc).__name__}: {exc}")
        call_id = str(call.object_id)
        self.ledger.record(rid, call_id)
        try:
            data = await self._await(rid, call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every exception here is the infrastructure's
            self.ledger.mark(rid, "failed", error=f"{type(exc).__name__}: {exc}")
            return P.EvalResult(
                request_id=rid, problem_id=req.problem_id, status=P.INFRA_ERROR, device_kind="cuda",
                shape_name=req.shape_name,
                error=f"Modal call {call_id} failed after {self.settings.retries} retries: {type(exc).__name__}: {exc}",
                versions={"modal": {"call_id": call_id, "gpu_requested": self.settings.gpu_request()}})
        result = self._finish(req, data, call_id, reattached=False)
        if reattach_error:
            result.flags.append("resubmitted")
        return result

    async def _await(self, rid: str, call: Any) -> Any:
        """The call's result; on cancellation (an interrupted run) the call is cancelled on Modal too."""
        self._in_flight[rid] = call
        try:
            return await call.get.aio()
        except asyncio.CancelledError:
            await self._cancel(rid, call)
            raise
        finally:
            self._in_flight.pop(rid, None)

    async def _cancel(self, rid: str, call: Any) -> None:
        try:
            # terminate_containers: a candidate stuck in a kernel must not keep a GPU billed after the run
            await asyncio.wait_for(call.cancel.aio(terminate_containers=True), 15)
        except Exception:  # noqa: BLE001 - best effort: the run is stopping either way
            pass
        self.ledger.mark(rid, "cancelled")

    def _finish(self, req: P.EvalRequest, data: Any, call_id: str, reattached: bool) -> P.EvalResult:
        if not isinstance(data, dict) or data.get("request_id") != req.request_id:
            got = data.get("request_id") if isinstance(data, dict) else type(data).__name__
            self.ledger.mark(req.request_id, "failed", error=f"unexpected answer {got!r}")
            return P.EvalResult(request_id=req.request_id, problem_id=req.problem_id, status=P.INFRA_ERROR,
                                error=f"Modal call {call_id} answered for {got!r}, not {req.request_id!r}",
                                device_kind="cuda", shape_name=req.shape_name)
        result = P.EvalResult.from_dict(data)
        record = result.versions.setdefault("modal", {})
        record["call_id"] = call_id
        if reattached:
            record["reattached"] = True
        if result.device and result.device not in self.devices_seen:
            self.devices_seen.append(result.device)
            if len(self.devices_seen) == 1:  # the run summary names the GPU that really judged
                self.device_info = {**self.device_info, "device": result.device,
                                    "device_kind": result.device_kind or "cuda"}
            else:
                self.device_info = {**self.device_info, "devices": list(self.devices_seen)}
        self.judge_seconds += float(result.durations_s.get("total") or 0.0)
        self.ledger.mark(req.request_id, "done")
        return result

    def busy_fraction(self) -> float | None:
        """Judging time over (wall time x the concurrency cap): how full the fan-out was kept."""
        if not self._started_at:
            return None
        wall = (time.perf_counter() - self._started_at) * self.settings.max_containers
        return min(1.0, self.judge_seconds / wall) if wall > 0 else None

    async def shutdown(self) -> None:
        for rid, call in list(self._in_flight.items()):
            await self._cancel(rid, call)
        self._in_flight.clear()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()


@hookimpl
def register_executors(register):
    register(ModalExecutor)
