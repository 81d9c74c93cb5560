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
import hashlib
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
from kforge.runtime import build as B
from kforge.runtime import protocol as P

CALLS_FILE = "modal_calls.json"
MODAL_LOG = "modal.log"  # Modal's output (the image build's log, the App's progress), in runs/<run>/logs/
ATTEMPT_KEY = "modal_attempt_key"  # kforge.executors.modal_app.ATTEMPT_KEY (that module imports Modal)
COMPILED_BACKENDS = ("cuda", "cutlass")

# USD per GPU-hour on Modal, for the dry run's cost estimate only. Source: modal.com/pricing per-second
# rates (H100 $0.001097/s, H200 $0.001261/s, B200 $0.001736/s, A100-80GB $0.000694/s, ...) as quoted in
# public 2026 tables; check the live page before trusting a figure. CPU and memory are billed on top
# (a few cents per container-hour at the defaults) and are not included.
# CPU-only containers (the build tier): Modal's per-second list rates for a physical core and a GiB of memory
# ($0.0000131/core/s, $0.00000222/GiB/s as quoted in public 2026 tables; check the live page).
CPU_CORE_USD_PER_S = 0.0000131
MEMORY_GIB_USD_PER_S = 0.00000222
# The CUDA arch each GPU type builds for (TORCH_CUDA_ARCH_LIST): the CPU build tier compiles for every GPU
# that may load the build. A type not listed is not prebuilt: its candidates compile in the sandbox.
GPU_ARCH: dict[str, str] = {
    "T4": "7.5", "L4": "8.9", "A10": "8.6", "A10G": "8.6", "L40S": "8.9", "A100": "8.0", "A100-40GB": "8.0",
    "A100-80GB": "8.0", "H100": "9.0a", "H200": "9.0a", "B200": "10.0a",
}
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
    torch_index_url: str  # an extra index for torch ("" = PyPI only, whose torch wheel is the CUDA build)
    ninja: str = "1.13.2"  # load_inline builds with ninja: without it every CUDA candidate is a compile_error

    def describe(self) -> dict[str, Any]:
        sources = self.local_sources()
        out = {"base": self.base, "python": self.python, "pins": self.pins(),
               "cutlass_headers": f"NVIDIA/cutlass v{self.cutlass} at /opt/cutlass" if self.cutlass else None,
               "torch_index_url": self.torch_index_url or None,
               "index_strategy": "unsafe-best-match" if self.torch_index_url else "PyPI only",
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
        return {"torch": self.torch, "triton": self.triton, "numpy": self.numpy, "ninja": self.ninja}

    def requirements(self) -> list[str]:
        """What ``uv pip install`` gets: every package pinned exactly."""
        return [f"{name}=={version}" for name, version in self.pins().items()]

    def index_options(self) -> dict[str, str]:
        """``uv_pip_install`` keyword arguments for the indexes: none (PyPI) by default. With an extra
        index, uv must pick the best match across both: its default takes each package from the first
        index that lists it, and torch's index carries a few numpy versions only."""
        if not self.torch_index_url:
            return {}
        return {"extra_index_url": self.torch_index_url, "extra_options": "--index-strategy unsafe-best-match"}


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
    memory_limit_mib: int = 32768
    startup_timeout_s: int = 600
    block_network: bool = True
    transport: str = "auto"
    correctness_gpu: str = ""
    build_cpu: float = 8.0
    build_memory_mib: int = 16384
    quiet: bool = False
    est_build_seconds: float = 90.0
    est_correct_fraction: float = 0.5

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
                          numpy=opt("numpy"), cutlass=opt("cutlass"), torch_index_url=opt("torch_index_url"),
                          ninja=opt("ninja"))
        memory, limit = int(opt("memory_mib")), config.get("memory_limit_mib")
        limit = int(limit) if limit is not None else 2 * memory
        if limit < memory:
            raise RecipeError(f"executor.memory_limit_mib ({limit}) is below executor.memory_mib ({memory}): the hard "
                              "limit must be at least the request")
        check_gpu = str(opt("correctness_gpu") or "")
        if check_gpu and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*[!+]?", check_gpu):
            raise RecipeError(f"executor.correctness_gpu {check_gpu!r} is not a Modal GPU type (e.g. \"L4\", \"A10\")")
        transport = str(opt("transport"))
        if transport not in ("auto", "cuda_ipc", "host"):
            raise RecipeError(f"executor.transport {transport!r} is not one of auto, cuda_ipc, host")
        fraction = float(opt("est_correct_fraction"))
        if not 0 <= fraction <= 1:
            raise RecipeError("executor.est_correct_fraction must be between 0 and 1")
        extra: dict[str, Any] = {"memory_limit_mib": limit, "startup_timeout_s": int(opt("startup_timeout_s")), "block_network": bool(opt("block_network")), "transport": transport,
                 "correctness_gpu": check_gpu, "build_cpu": float(opt("build_cpu")),
                 "build_memory_mib": int(opt("build_memory_mib")),
                 "quiet": bool(opt("quiet")) or os.environ.get("KFORGE_QUIET", "") not in ("", "0"),
                 "est_build_seconds": float(opt("est_build_seconds")), "est_correct_fraction": fraction}
        return cls(**extra, app_name=opt("app_name"), gpu=gpu, allow_fallback=allow_fallback, timeout_s=int(opt("timeout_s")),
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
                "retire_on_candidate_fault": self.retire_on_candidate_fault, "transport": self.transport,
                "volume": self.volume or None, "memory_mib": [self.memory_mib, self.memory_limit_mib],
                "block_network": self.block_network,
                "image": {"base": self.image.base, "python": self.image.python, **self.image.pins(),
                          "cutlass": self.image.cutlass or None, "torch_index_url": self.image.torch_index_url or None}}

    def gpu_price_per_hour(self) -> tuple[float | None, str]:
        """USD per hour of one container's GPUs; for a fallback list, the dearest type (an upper bound)."""
        return self._price_of([self.gpu] if isinstance(self.gpu, str) else list(self.gpu))

    def estimate(self, candidates: int | None, builds: bool = False) -> dict[str, Any]:
        """The whole run's cost under its budget (``candidates``), by tier: the CPU build tier (when the
        backend compiles, ``builds``), the correctness tier on ``correctness_gpu``, timing on ``gpu``,
        and each container's start and idle scale-down."""
        price, basis = self.gpu_price_per_hour()
        est: dict[str, Any] = {
            "note": "an estimate, not a quote: per candidate, est_seconds_per_candidate on the GPU (and on "
                    "correctness_gpu first, if set: then only est_correct_fraction of them are timed on gpu), "
                    "est_build_seconds of build containers for compiled backends, plus one start and idle "
                    "scale-down per container; queueing and image builds are not included",
            "gpu_usd_per_hour": price, "price_basis": basis,
            "est_seconds_per_candidate": self.est_seconds_per_candidate,
        }
        if price is None:
            est["usd"] = None
            return est
        per_s = price / 3600.0
        tiers: dict[str, float] = {}
        timed_share = 1.0
        overhead = self._container_overhead_s() * per_s  # one container of the pinned GPU
        if self.correctness_gpu:
            cheap, _ = self._price_of([self.correctness_gpu])
            if cheap is None:
                est["usd"] = None
                est["price_basis"] = f"no price for {self.correctness_gpu!r}: add it to executor.gpu_usd_per_hour"
                return est
            tiers["correctness"] = self.est_seconds_per_candidate * cheap / 3600.0
            overhead += self._container_overhead_s() * cheap / 3600.0
            timed_share = self.est_correct_fraction
        tiers["timing"] = timed_share * self.est_seconds_per_candidate * per_s
        if builds:
            tiers["build"] = self.est_build_seconds * self.cpu_usd_per_second(self.build_cpu, self.build_memory_mib)
        per_candidate = sum(tiers.values())
        est["usd_per_candidate"] = round(per_candidate, 4)
        est["usd_per_candidate_by_tier"] = {k: round(v, 4) for k, v in tiers.items()}
        if candidates is None:
            est["usd_per_100_candidates"] = round(100 * per_candidate + self.max_containers * overhead, 2)
            est["candidates"] = None
            return est
        containers = min(self.max_containers, max(candidates, 1))
        est["candidates"] = candidates
        est["usd"] = round(candidates * per_candidate + containers * overhead, 2)
        return est

    @staticmethod
    def cpu_usd_per_second(cores: float, memory_mib: int) -> float:
        """A CPU-only container's price per second (Modal's list rates for cores and memory)."""
        return cores * CPU_CORE_USD_PER_S + memory_mib / 1024 * MEMORY_GIB_USD_PER_S

    def _price_of(self, names: list[str]) -> tuple[float | None, str]:
        worst: float | None = None
        for spec in names:
            family, count = _gpu_family(spec)
            price = self.gpu_usd_per_hour.get(family)
            if price is None:
                return None, f"no price for {family!r}: add it to executor.gpu_usd_per_hour"
            worst = max(worst or 0.0, price * count)
        return worst, "the dearest GPU in the fallback list" if len(names) > 1 else names[0]

    def build_arch(self) -> str | None:
        """TORCH_CUDA_ARCH_LIST for every GPU type that may load a build; None if one has no known arch."""
        names = ([self.gpu] if isinstance(self.gpu, str) else list(self.gpu)) + \
            ([self.correctness_gpu] if self.correctness_gpu else [])
        archs = [GPU_ARCH.get(_gpu_family(n)[0]) for n in names]
        if not archs or any(a is None for a in archs):
            return None
        return ";".join(sorted({str(a) for a in archs}, key=lambda a: float(a.rstrip("a"))))

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
    "triton": "3.6.0", "numpy": "2.2.6", "ninja": "1.13.2", "cutlass": "4.2.0",
    # PyPI's torch 2.11.0 wheel is the cu130 build and pins triton 3.6.0: no extra index is needed.
    "torch_index_url": "",
    "est_seconds_per_candidate": 45.0, "est_container_start_s": 60.0,
    "startup_timeout_s": 600, "block_network": True, "transport": "auto", "correctness_gpu": "", "build_cpu": 8.0, "build_memory_mib": 16384,
    "quiet": False, "est_build_seconds": 90.0, "est_correct_fraction": 0.5,
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
        Option("timeout_s", int, _DEFAULTS["timeout_s"], "Modal timeout for one attempt of a call (one candidate; "
               "scheduling and the container's start excluded, restarted on each retry); the judge's own "
               "per-candidate timeouts act first", minimum=10),
        Option("startup_timeout_s", int, _DEFAULTS["startup_timeout_s"], "Modal startup_timeout: a container's "
               "start (the judge, CUDA, the transport self-test), apart from timeout_s", minimum=10),
        Option("max_containers", int, _DEFAULTS["max_containers"], "concurrency cap: most containers (and calls in "
               "flight) at once", minimum=1),
        Option("retries", int, _DEFAULTS["retries"], "Modal retries per call, for infrastructure faults only "
               "(a candidate's failure is a result and is never retried)", minimum=0),
        Option("app_name", str, _DEFAULTS["app_name"], "name of the Modal App"),
        Option("volume", str, _DEFAULTS["volume"], "Modal Volume for the Triton compile cache (\"\" for none)"),
        Option("detach", bool, True, "calls outlive this process if it dies, so `kforge resume` re-attaches to "
               "them; false: a crash stops the app and resume submits again"),
        Option("cpu", float, _DEFAULTS["cpu"], "CPU cores per container (compilation runs on them)", minimum=0.125),
        Option("memory_mib", int, _DEFAULTS["memory_mib"], "memory requested per container, MiB", minimum=1024),
        Option("memory_limit_mib", int, None, "hard memory limit per container, MiB: past it the container is "
               "killed (default: twice memory_mib); a candidate doing so twice is judged its own fault",
               minimum=1024),
        Option("block_network", bool, True, "no network in the judge's containers (the judge and the sandboxes "
               "need none)"),
        Option("transport", str, "auto", "tensors between judge and sandbox: 'cuda_ipc', 'host' (staged in shared "
               "host memory) or 'auto' (a self-test at container start picks cuda_ipc if it works)",
               choices=("auto", "cuda_ipc", "host")),
        Option("correctness_gpu", str, "", "a cheaper GPU type (e.g. \"L4\") that checks correctness first; only "
               "correct candidates are timed on `gpu` (\"\" = off)"),
        Option("build_cpu", float, _DEFAULTS["build_cpu"], "CPU cores of the CPU-only build tier's containers "
               "(CUDA/CUTLASS candidates compile there, into the Volume)", minimum=0.125),
        Option("build_memory_mib", int, _DEFAULTS["build_memory_mib"], "memory of a build container, MiB",
               minimum=1024),
        Option("quiet", bool, False, "don't stream Modal's output (image build, app progress) to the terminal; "
               "it is still kept in runs/<run>/logs/modal.log (also KFORGE_QUIET=1)"),
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
        Option("ninja", str, _DEFAULTS["ninja"], "ninja version pinned in the image (load_inline builds with it)"),
        Option("torch_index_url", str, _DEFAULTS["torch_index_url"], "an extra package index for torch (\"\": PyPI "
               "only, whose torch wheel is already the CUDA build); set, uv picks the best match across both"),
        Option("est_build_seconds", float, _DEFAULTS["est_build_seconds"], "for the cost estimate: seconds one "
               "CUDA/CUTLASS build takes in the CPU tier", minimum=0),
        Option("est_correct_fraction", float, _DEFAULTS["est_correct_fraction"], "for the cost estimate with "
               "correctness_gpu: the share of candidates that pass it and are timed on `gpu`", minimum=0),
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
        self._builder: Any = None  # has .remote.aio(job) -> the build outcome (the CPU tier)
        self._correctness: Any = None  # like _function, on correctness_gpu
        self._building: dict[str, asyncio.Future[Any]] = {}
        self._run_key = ""

    # -- the Modal boundary -------------------------------------------------------------------
    def bind(self, function: Any, call_from_id: Callable[[str], Any], builder: Any = None,
             correctness: Any = None) -> None:
        """Use ``function`` (``.spawn.aio(dict)``) and ``call_from_id`` instead of starting an App; with
        ``builder`` (``.remote.aio(job)``: the CPU build tier) and ``correctness`` (like ``function``, on
        ``correctness_gpu``).

        ``start()`` binds the real ``ModalJudge().evaluate``, ``ModalBuilder().build``,
        ``ModalCorrectnessJudge().evaluate`` and ``modal.FunctionCall.from_id``; tests bind doubles with
        the same semantics, and a caller with a deployed App can bind its own."""
        self._function, self._call_from_id = function, call_from_id
        self._builder, self._correctness = builder, correctness

    async def _connect(self, log_path: Path | None = None) -> None:
        try:
            import modal
        except ImportError as exc:
            raise RuntimeError("the modal executor needs the Modal client: pip install 'modal~=1.6.0', then "
                               "`modal token new` (see `kforge modal check`)") from exc
        from kforge.executors import modal_app

        classes = modal_app.app_classes(self.settings)
        stack = contextlib.AsyncExitStack()
        try:
            # The image build's log (minutes, the first time) streams to stderr and into the run directory.
            stack.enter_context(modal_app.build_output(log_path, quiet=self.settings.quiet))
            await stack.enter_async_context(classes["app"].run(detach=self.settings.detach))
        except Exception as exc:
            await stack.aclose()
            where = f"; Modal's output, including the image build's log, is in {log_path}" if log_path else ""
            raise RuntimeError(f"could not start the Modal App {self.settings.app_name!r}: {type(exc).__name__}: "
                               f"{exc}{where} (`kforge modal check` tells whether Modal is configured and reachable; "
                               "`kforge modal check --image` builds the image alone)") from exc
        self._stack = stack
        self.bind(classes["judge"]().evaluate, modal.FunctionCall.from_id,
                  builder=classes["builder"]().build if classes["builder"] is not None else None,
                  correctness=classes["correctness"]().evaluate if classes["correctness"] is not None else None)

    # -- Executor -------------------------------------------------------------------------------
    def describe(self, candidates: int | None = None, backend: str | None = None) -> dict[str, Any]:
        s = self.settings
        builds = backend in COMPILED_BACKENDS or backend == "auto"  # auto: some candidates may be CUDA
        arch = s.build_arch()
        plan = [
            *([f"build: CUDA/CUTLASS candidates compile in CPU-only containers ({s.build_cpu:g} cores) into the "
               f"Volume {s.volume!r} for TORCH_CUDA_ARCH_LIST={arch}, committed; GPU containers reload it"]
              if s.volume and arch and (builds or backend is None) else
              ["build: in the GPU container's sandbox (no Volume, or a GPU with no known arch)"] if builds else []),
            *([f"correctness: on {s.correctness_gpu} (correctness only; a failure ends the candidate there)"]
              if s.correctness_gpu else []),
            f"timing: on {s.gpu_request()} ({self._gpu_policy()})",
        ]
        return {
            "executor": self.name, "app": s.app_name,
            "gpu": s.gpu_request(),
            "gpu_policy": self._gpu_policy(),
            "tiers": plan,
            "image": s.image.describe(),
            "fan_out": {"max_containers": s.max_containers, "calls_in_flight": s.max_containers,
                        "results": "streamed as each call finishes (spawn + get per candidate, no batch barrier)"},
            "timeout_s": {"per_attempt": s.timeout_s, "note": "Modal's timeout is per attempt, excludes scheduling, "
                          "and restarts on each retry"},
            "retries": {"max_retries": s.retries, "for": "raised exceptions and timeouts (kforge raises only for a "
                        "broken judge); a lost container is rescheduled outside retries, at most twice per "
                        "candidate before it is judged the candidate's fault"},
            "container": {"cpu": s.cpu, "memory_mib": [s.memory_mib, s.memory_limit_mib],
                          "block_network": s.block_network, "transport": s.transport,
                          "sandbox_env": "no MODAL_* variables or credentials"},
            "compile_cache": {"volume": s.volume, "mounted_at": "/cache",
                              "holds": "Triton's cache, the build tier's builds, the crash ledger"}
                             if s.volume else None,
            "detach": s.detach,
            "estimated_cost": s.estimate(candidates, builds=builds and bool(s.volume and arch)),
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
        self._run_key = run_dir.name if run_dir is not None else f"run-{os.getpid()}-{int(time.time())}"
        if self._function is None:
            log_path = None
            if log_dir is not None:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                log_path = Path(log_dir) / MODAL_LOG
            await self._connect(log_path)
        self._slots = asyncio.Semaphore(self.settings.max_containers)
        self._started_at = time.perf_counter()

    async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
        assert self._slots is not None and self._function is not None, "start() first"
        if request.backend == "cutlass" and not self.settings.image.cutlass:
            return self._infra(request, "the cutlass backend needs CUTLASS headers in the image: set "
                               "executor.cutlass to a CUTLASS release (e.g. \"4.2.0\")")
        build: dict[str, Any] = {}
        if self._builder is not None and self.settings.build_arch() and B.needs_build(request.candidate_source):
            build = await self._prebuild(request)
            if build.get("result") is not None:
                return build["result"]
            request.build_env = dict(build.get("env") or {})
        async with self._slots:
            result = await self._judge_tiers(request)
        if build.get("build_error"):  # the tier itself failed: the sandbox built the candidate instead
            result.flags.append(f"build_tier_failed: {build['build_error'][:200]}")
        elif build:
            result.durations_s["build"] = float(build.get("seconds") or 0.0)
            result.flags.append("build_cached" if build.get("cached") else "prebuilt")
        return result

    async def _prebuild(self, req: P.EvalRequest) -> dict[str, Any]:
        """The CPU tier: the candidate's extensions built in a CPU-only container into the Volume (one
        build per source in a run). Returns the outcome; under "result", the verdict if it failed."""
        job = {"source": req.candidate_source, "backend": req.backend, "arch": self.settings.build_arch(),
               "timeout_s": req.compile_timeout_s}
        digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
        pending = self._building.get(digest)
        if pending is None:
            pending = self._building[digest] = asyncio.ensure_future(self._builder.remote.aio(job))
        try:
            outcome = dict(await asyncio.shield(pending))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the build tier's infrastructure failed: judge as before
            self._building.pop(digest, None)
            return {"env": {}, "seconds": 0.0, "build_error": f"{type(exc).__name__}: {exc}"}
        status = outcome.get("status")
        if status in ("error", "timeout"):
            timeout = status == "timeout"
            seconds = float(outcome.get("seconds") or 0.0)
            outcome["result"] = P.EvalResult(
                request_id=req.request_id, problem_id=req.problem_id,
                status=P.TIMEOUT if timeout else P.COMPILE_ERROR, guard="compile_timeout" if timeout else "compile",
                error=outcome.get("error"), log_tail=outcome.get("log_tail"), device_kind="cuda",
                durations_s={"build": seconds, "total": seconds}, shape_name=req.shape_name,
                versions={"modal": {"tier": "build", "key": outcome.get("key")}},
                flags=["compile_stage"] + (["build_cached"] if outcome.get("cached") else []))
        return outcome

    async def _judge_tiers(self, req: P.EvalRequest) -> P.EvalResult:
        """With ``correctness_gpu``: correctness there first, and only a correct candidate is timed on the
        pinned GPU (which checks correctness again: the verdict that counts is the pinned GPU's)."""
        if self._correctness is None or req.min_samples <= 0:
            return await self._judge(req)
        check_req = P.EvalRequest.from_dict({**req.to_dict(), "min_samples": 0})
        first = await self._judge(check_req, self._correctness, tier="correctness")
        tier = {"gpu": self.settings.correctness_gpu, "device": first.device, "status": first.status,
                "seconds": first.durations_s.get("total"), "call_id": first.versions.get("modal", {}).get("call_id")}
        if first.status != P.CORRECT:
            first.flags.append(f"correctness_tier: judged on {self.settings.correctness_gpu} only")
            first.versions.setdefault("modal", {})["tier"] = "correctness"
            return first
        result = await self._judge(req)
        result.versions.setdefault("modal", {})["correctness_tier"] = tier
        return result

    def _infra(self, req: P.EvalRequest, error: str, **modal_record: Any) -> P.EvalResult:
        return P.EvalResult(request_id=req.request_id, problem_id=req.problem_id, status=P.INFRA_ERROR,
                            device_kind="cuda", shape_name=req.shape_name, error=error,
                            versions={"modal": {"gpu_requested": self.settings.gpu_request(), **modal_record}})

    async def _judge(self, req: P.EvalRequest, function: Any = None, tier: str = "timing") -> P.EvalResult:
        function = function or self._function
        rid = req.request_id
        lid = rid if tier == "timing" else f"{rid}#{tier}"  # the ledger's key: one call per tier
        reattach_error: str | None = None
        call_id = self.ledger.attachable(lid)
        if call_id is not None and self._call_from_id is not None:
            call = self._call_from_id(call_id)
            try:
                data = await self._await(lid, call)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - gone (app stopped, call expired or failed): submit again
                reattach_error = f"re-attaching to {call_id} failed ({type(exc).__name__}: {exc}); submitted again"
                self.ledger.mark(lid, "abandoned", error=reattach_error)
            else:
                return self._finish(req, data, call_id, reattached=True, lid=lid)
        payload = {**req.to_dict(), ATTEMPT_KEY: f"{self._run_key}/{lid}"}
        try:
            call = await function.spawn.aio(payload)
        except Exception as exc:  # noqa: BLE001 - Modal unreachable or refused the input
            return self._infra(req, f"could not submit to Modal: {type(exc).__name__}: {exc}")
        call_id = str(call.object_id)
        self.ledger.record(lid, call_id)
        try:
            data = await self._await(lid, call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every exception here is the infrastructure's
            self.ledger.mark(lid, "failed", error=f"{type(exc).__name__}: {exc}")
            return self._infra(req, f"Modal call {call_id} failed: {type(exc).__name__}: {exc} "
                                    f"({self._failure_hint(exc)})", call_id=call_id)
        result = self._finish(req, data, call_id, reattached=False, lid=lid)
        if reattach_error:
            result.flags.append("resubmitted")
        return result

    def _failure_hint(self, exc: BaseException) -> str:
        """What Modal did before this failure reached us, as far as its type tells (never a count of
        retries kforge did not see)."""
        name = type(exc).__name__
        if "Timeout" in name:
            return (f"the call ran past timeout_s={self.settings.timeout_s} s in an attempt; Modal's timeouts are "
                    f"retried, up to {self.settings.retries} times")
        if name in ("RemoteError", "JudgeUnhealthy"):
            return f"the judge raised; Modal retries raised exceptions up to {self.settings.retries} times"
        return ("Modal gave up on the input; container crashes and preemptions are rescheduled outside "
                "retries, so this may never have been retried")

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

    def _finish(self, req: P.EvalRequest, data: Any, call_id: str, reattached: bool, lid: str = "") -> P.EvalResult:
        lid = lid or req.request_id
        if not isinstance(data, dict) or data.get("request_id") != req.request_id:
            got = data.get("request_id") if isinstance(data, dict) else type(data).__name__
            self.ledger.mark(lid, "failed", error=f"unexpected answer {got!r}")
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
        self.ledger.mark(lid, "done")
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
