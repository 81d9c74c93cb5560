"""The local executor: one long-lived judge process per GPU (or one on the CPU).

Each judge (``python -m kforge.runtime.judge``) is pinned to its GPU with CUDA_VISIBLE_DEVICES and
evaluates one candidate at a time, each in a fresh sandbox process. The orchestrator never imports
torch: it speaks JSON lines to the judges.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kforge.api import Executor
from kforge.hookspecs import hookimpl
from kforge.options import Option
from kforge.runtime import build as B
from kforge.runtime import protocol as P

BUILD_TAIL_BYTES = 16 << 10


def visible_gpus() -> list[str]:
    """GPU indices visible to this process, found without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def gpu_names() -> list[str]:
    """Names of the visible GPUs from nvidia-smi (no torch), e.g. ['NVIDIA H100 80GB HBM3']."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


# Judges per GPU by default: one per JUDGE_GPU_MIB of the smallest GPU's memory, at most MAX_JUDGES_PER_GPU,
# and no more than one per JUDGE_CORES cores in all (each judge keeps a sandbox busy and starts spares,
# and the compile stage needs the other cores). The per-problem memory plan (docs/evaluation.md,
# "Memory") judges a problem too large for the share alone, and a candidate that runs out of memory
# beside other judges is judged again alone, so more judges cost memory only where it is there. An
# 80 GB card gets 3, a 141 GB card 4: untimed work (loading, correctness, checks: mostly host-bound)
# then overlaps while one judge times (issue #17; docs/performance.md, "Judges per GPU").
JUDGE_GPU_MIB = 24 * 1024
MAX_JUDGES_PER_GPU = 4
JUDGE_CORES = 4


def default_judges_per_gpu(memory_mib: list[int], cores: int) -> int:
    """Judges per GPU when the recipe names none: by the smallest GPU's memory and the cores."""
    if not memory_mib:
        return 1
    by_memory = min(MAX_JUDGES_PER_GPU, min(memory_mib) // JUDGE_GPU_MIB)
    by_cores = cores // (JUDGE_CORES * len(memory_mib))
    return max(1, min(by_memory, by_cores))


def gpu_memory_mib() -> list[int]:
    """Total memory of each GPU nvidia-smi lists, in MiB (no torch); [] if it can't say."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=15)
        return [int(float(line.strip())) for line in out.stdout.splitlines() if line.strip()] \
            if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []


class JudgeWorker:
    def __init__(self, index: int, gpu: str | None, log_path: Path | None, sharing: int = 1,
                 spares: int | None = None, transport: str | None = None) -> None:
        self.index, self.gpu, self.log_path, self.sharing, self.spares = index, gpu, log_path, sharing, spares
        self.transport = transport
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.busy_s = 0.0
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each evaluation

    async def start(self, timeout: float = 600.0) -> None:
        env = self.environment()
        log: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kforge.runtime.judge", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=log, env=env, limit=64 << 20)
        if log is not subprocess.DEVNULL:
            log.close()
        line = await asyncio.wait_for(self._readline(), timeout)
        msg = json.loads(line)
        if msg.get("type") != "hello":
            raise RuntimeError(f"judge {self.index} did not start: {line[:300]!r}")
        self.info = msg["info"]

    def environment(self) -> dict[str, str]:
        """The judge process's environment: pinned to its GPU (or the CPU), told how many judges share
        that GPU and how many sandboxes to keep started ahead."""
        env = dict(os.environ)
        src_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        if self.gpu is None:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["KFORGE_DEVICE"] = "cpu"
        else:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
            env["KFORGE_DEVICE"] = "cuda"
            env["KFORGE_JUDGES_PER_GPU"] = str(self.sharing)
        if self.spares is not None:
            env["KFORGE_SPARE_SANDBOXES"] = str(self.spares)
        if self.transport and not os.environ.get("KFORGE_TRANSPORT"):  # the environment wins over the recipe
            env["KFORGE_TRANSPORT"] = self.transport
        return env

    async def _readline(self) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            hint = f" (log: {self.log_path})" if self.log_path else ""
            raise ConnectionError(f"judge process {self.index} exited with code {code}{hint}")
        return line

    async def evaluate(self, req: P.EvalRequest, timeout: float) -> P.EvalResult:
        assert self.proc is not None and self.proc.stdin is not None
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write((json.dumps(req.to_dict()) + "\n").encode())
            await self.proc.stdin.drain()
            while True:
                msg = json.loads(await asyncio.wait_for(self._readline(), timeout))
                if msg.get("type") == "result":
                    return P.EvalResult.from_dict(msg["result"])
                if msg.get("type") == "error":
                    raise RuntimeError(msg.get("error"))
        finally:
            t1 = time.perf_counter()
            self.busy_s += t1 - t0
            self.intervals.append((t0, t1))

    async def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        if not kill and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 15)
                return
            except (asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
                pass
        self.proc.kill()
        await self.proc.wait()


class LocalExecutor(Executor):
    name = "local"
    description = "judges candidates on this machine: one judge per GPU, or the CPU with Triton's interpreter"
    options = (
        Option("device", str, "auto", "'auto' (GPUs if any, else the CPU), 'cuda' or 'cpu'",
               choices=("auto", "cuda", "cpu")),
        Option("gpus", list, None, "GPU indices to use (default: every visible GPU)", item_type=int),
        Option("workers", int, None, "number of judges on the CPU (default 1); on GPUs one per GPU", minimum=1),
        Option("judges_per_gpu", int, None,
               "judges sharing each GPU: their correctness work overlaps, timing takes the GPU alone "
               "(a lock per GPU); each holds a problem's tensors. Default: one per 24 GiB of the smallest GPU, "
               "at most 4, and at most one per 4 cores (3 on an 80 GB card, 4 on a 141 GB one)", minimum=1),
        Option("spare_sandboxes", int, None,
               "sandboxes each judge keeps started ahead (import torch, start CUDA) while it judges; default 2 on "
               "a GPU, 1 on the CPU", minimum=1),
        Option("compile_workers", int, None,
               "CPU processes building C++/CUDA extensions ahead of timing (default: the cores, less one "
               "per judge); 0 compiles inside the sandbox instead", minimum=0),
        Option("transport", str, None, "how tensors travel between a judge and its sandboxes: 'cuda_ipc' (by "
               "handle), 'host' (staged in shared host memory) or 'auto' (cuda_ipc if a self-test at judge "
               "start passes, else host); default auto, or $KFORGE_TRANSPORT, which wins over the recipe",
               choices=("auto", "cuda_ipc", "host")),
        Option("cache_dir", str, None, "the build cache (default: $KFORGE_CACHE_DIR, else "
               "~/.cache/kforge/build); `kforge cache` lists and prunes it"),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.workers: list[JudgeWorker] = []
        self.idle: asyncio.Queue[JudgeWorker] | None = None
        self.started_at = 0.0
        self.log_dir: Path | None = None
        self.device_info = {}
        self.compile_workers = 0
        self.cache_root = B.default_root()
        self._compile_sem: asyncio.Semaphore | None = None
        self._building: dict[str, asyncio.Future[Any]] = {}
        self.build_stats = {"built": 0, "cached": 0, "errors": 0, "timeouts": 0, "seconds": 0.0}

    def plan_devices(self) -> list[str | None]:
        device = self.config.get("device") or "auto"
        gpus = [str(g) for g in self.config["gpus"]] if self.config.get("gpus") else visible_gpus()
        if device == "cpu" or (device == "auto" and not gpus):
            return [None] * int(self.config.get("workers") or 1)
        if not gpus:
            raise RuntimeError("executor.device is 'cuda' but no GPU is visible (nvidia-smi found none)")
        per = self.config.get("judges_per_gpu")
        if per is None:
            memory = gpu_memory_mib()
            # nvidia-smi lists every GPU; these are the ones used (by index where they are indices)
            used = [memory[int(g)] for g in gpus if g.isdigit() and int(g) < len(memory)]
            per = default_judges_per_gpu(used if len(used) == len(gpus) else memory[:len(gpus)] if memory else [],
                                         os.cpu_count() or 1)
        return [g for g in gpus for _ in range(int(per))]

    def describe(self) -> dict[str, Any]:
        devices = self.plan_devices()
        return {"executor": self.name, "workers": len(devices),
                "devices": ["cpu (Triton interpreter)" if d is None else f"cuda:{d}" for d in devices],
                "compile_workers": self._plan_compile_workers(len(devices)),
                "build_cache": str(self._cache_root())}

    def _plan_compile_workers(self, judges: int) -> int:
        n = self.config.get("compile_workers")
        return int(n) if n is not None else max(1, (os.cpu_count() or 2) - judges)

    def _cache_root(self) -> Path:
        return Path(self.config["cache_dir"]).expanduser() if self.config.get("cache_dir") else B.default_root()


    async def start(self, log_dir: Any = None) -> None:
        self.log_dir = log_dir
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        devices = self.plan_devices()
        self.workers = [JudgeWorker(i, d, (log_dir / f"judge-{i}.log") if log_dir else None,
                                    sharing=devices.count(d), spares=self.config.get("spare_sandboxes"),
                                    transport=self.config.get("transport"))
                        for i, d in enumerate(devices)]
        await asyncio.gather(*(w.start() for w in self.workers))
        self.compile_workers = self._plan_compile_workers(len(self.workers))
        self.cache_root = self._cache_root()
        self._compile_sem = asyncio.Semaphore(max(self.compile_workers, 1))
        # Candidates in the compile stage and those compiled and waiting for a judge count as in
        # flight: the engine keeps that many going, so the GPUs time while the CPUs build.
        self.capacity = len(self.workers) + self.compile_workers
        self.device_info = self.workers[0].info
        self.idle = asyncio.Queue()
        for w in self.workers:
            self.idle.put_nowait(w)
        self.started_at = time.perf_counter()

    async def evaluate(self, req: P.EvalRequest) -> P.EvalResult:
        assert self.idle is not None, "start() first"
        build: dict[str, Any] = {}
        if self.compile_workers > 0 and B.needs_build(req.candidate_source):
            build = await self.prebuild(req)
            if build.get("result") is not None:
                return build["result"]
            req.build_env = build["env"]
        worker = await self.idle.get()
        result = await self._judge(worker, req)
        if build:
            result.durations_s["build"] = build["seconds"]
            result.flags.append("build_cached" if build.get("cached") else "prebuilt")
        return result

    # -- the compile stage ------------------------------------------------------------------------
    async def prebuild(self, req: P.EvalRequest) -> dict[str, Any]:
        """Build ``req``'s extensions in a CPU process into the cache; returns the env for the sandbox,
        or (under "result") the verdict when the build itself failed."""
        assert self._compile_sem is not None, "start() first"
        arch = self.device_info.get("cuda_arch")
        key = B.cache_key(req.candidate_source, req.backend, arch, self.device_info)
        entry = self.cache_root / key
        env = {"TORCH_EXTENSIONS_DIR": str(entry / "ext")}
        if arch:
            env["TORCH_CUDA_ARCH_LIST"] = str(arch)
        t0 = time.perf_counter()
        pending = self._building.get(key)
        if pending is not None:  # the same source is building for another request: share it
            outcome = dict(await asyncio.shield(pending))
            outcome["cached"] = True
        else:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._building[key] = fut
            try:
                outcome = await self._build_entry(req, key, entry, arch)
                fut.set_result(outcome)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: a waiter re-raises it, nobody else needs to
                raise
            finally:
                self._building.pop(key, None)
        seconds = round(time.perf_counter() - t0, 3)
        status = outcome.get("status")
        out: dict[str, Any] = {"env": env, "seconds": seconds, "cached": bool(outcome.get("cached")), "key": key}
        if status in ("error", "timeout"):
            timeout = status == "timeout"
            out["result"] = P.EvalResult(
                request_id=req.request_id, problem_id=req.problem_id,
                status=P.TIMEOUT if timeout else P.COMPILE_ERROR,
                guard="compile_timeout" if timeout else "compile", error=outcome.get("error"),
                log_tail=outcome.get("log_tail"), device=self.device_info.get("device"),
                device_kind=self.device_info.get("device_kind"),
                versions={k: v for k, v in self.device_info.items() if k not in ("device", "device_kind")},
                durations_s={"build": seconds, "total": seconds}, shape_name=req.shape_name,
                flags=["compile_stage"] + (["build_cached"] if out["cached"] else []))
        elif status == "nobuild":
            out["env"] = {k: v for k, v in env.items() if k != "TORCH_EXTENSIONS_DIR"}
        return out

    async def _build_entry(self, req: P.EvalRequest, key: str, entry: Path, arch: str | None) -> dict[str, Any]:
        state, manifest, _why = await asyncio.to_thread(B.read_entry, entry)
        if state in ("ok", "error"):
            self.build_stats["cached"] += 1
            return dict(manifest or {}, cached=True)
        assert self._compile_sem is not None
        async with self._compile_sem:
            return await self._run_build_process(req, key, entry, arch)

    async def _run_build_process(self, req: P.EvalRequest, key: str, entry: Path, arch: str | None
                                 ) -> dict[str, Any]:
        self.cache_root.mkdir(parents=True, exist_ok=True)
        work = Path(self.log_dir) / "builds" if self.log_dir else self.cache_root / ".requests"
        work.mkdir(parents=True, exist_ok=True)
        req_file, res_file = work / f"{key}-{req.request_id}.json", work / f"{key}-{req.request_id}.result.json"
        res_file.unlink(missing_ok=True)
        req_file.write_text(json.dumps({"source": req.candidate_source, "entry": str(entry), "arch": arch,
                                        "result": str(res_file), "versions": self.device_info}))
        env = dict(os.environ)
        src_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["CUDA_VISIBLE_DEVICES"] = ""  # the build needs the compiler, never a GPU
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kforge.runtime.build", str(req_file), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
        tail = bytearray()

        async def drain() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                tail.extend(chunk)
                del tail[:-BUILD_TAIL_BYTES]

        reader = asyncio.ensure_future(drain())
        try:
            await asyncio.wait_for(proc.wait(), req.compile_timeout_s)
        except asyncio.TimeoutError:
            _killpg(proc.pid)
            await proc.wait()
            self.build_stats["timeouts"] += 1
            # What was half-built is removed now rather than found corrupt later.
            await asyncio.to_thread(B.remove_entry, self.cache_root, key)
            return {"status": "timeout", "error": f"the build took longer than compile_timeout_s="
                    f"{req.compile_timeout_s:g} s and was killed", "log_tail": _text_tail(tail)}
        except asyncio.CancelledError:
            _killpg(proc.pid)
            raise
        finally:
            await asyncio.wait([reader], timeout=5)
            req_file.unlink(missing_ok=True)
        try:
            outcome = json.loads(res_file.read_text())
            res_file.unlink(missing_ok=True)
        except (OSError, ValueError):
            self.build_stats["errors"] += 1
            return {"status": "nobuild", "error": f"the build process exited with {proc.returncode}",
                    "log_tail": _text_tail(tail)}
        self.build_stats["seconds"] += time.perf_counter() - t0
        if outcome.get("status") == "ok":
            self.build_stats["built"] += 1
        elif outcome.get("status") == "error":
            self.build_stats["errors"] += 1
        outcome.setdefault("log_tail", _text_tail(tail))
        return outcome

    async def _judge(self, worker: JudgeWorker, req: P.EvalRequest) -> P.EvalResult:
        assert self.idle is not None
        # The judge enforces every per-call timeout itself; this outer limit only catches a judge that
        # stopped answering, so it bounds the sum of those timeouts (2 calls per timing round + 1 over).
        heldout_calls = len(req.heldout) * (req.heldout_trials + 1)
        limit = (req.compile_timeout_s * (1 + len(req.heldout) + 1)
                 + req.run_timeout_s * (2 * req.trials + req.warmup + 8 + heldout_calls + 4)
                 + 2 * (req.max_timing_s + 2 * req.run_timeout_s) + 300)  # twice: a >10x speedup is re-timed
        try:
            result = await worker.evaluate(req, timeout=limit)
        except asyncio.CancelledError:
            await worker.stop(kill=True)
            await self._restart(worker)
            raise
        except (ConnectionError, asyncio.TimeoutError, RuntimeError, ValueError) as exc:
            await worker.stop(kill=True)
            result = P.EvalResult(request_id=req.request_id, problem_id=req.problem_id, status=P.INFRA_ERROR,
                                  error=f"judge {worker.index} failed: {type(exc).__name__}: {exc}",
                                  device=worker.info.get("device"), device_kind=worker.info.get("device_kind"))
            await self._restart(worker)
            return result
        self.idle.put_nowait(worker)
        return result

    async def _restart(self, worker: JudgeWorker) -> None:
        assert self.idle is not None
        try:
            await worker.start()
        except Exception:  # noqa: BLE001 - one more try, then the worker stays out
            try:
                await worker.start()
            except Exception:  # noqa: BLE001
                return
        self.idle.put_nowait(worker)

    def busy_fraction(self) -> float | None:
        """The share of wall time each device (GPU, or CPU judge) had a candidate being judged on it,
        averaged over devices: judges sharing a GPU count once (the union of their busy intervals)."""
        if not self.workers or not self.started_at:
            return None
        now = time.perf_counter()
        wall = now - self.started_at
        if wall <= 0:
            return None
        by_device: dict[Any, list[tuple[float, float]]] = {}
        for w in self.workers:
            by_device.setdefault(w.gpu if w.gpu is not None else f"cpu{w.index}", []).extend(w.intervals)
        fractions = []
        for spans in by_device.values():
            covered, end = 0.0, self.started_at
            for a, b in sorted(spans):
                a, b = max(a, end), min(b, now)
                if b > a:
                    covered += b - a
                    end = b
            fractions.append(covered / wall)
        return min(1.0, sum(fractions) / len(fractions))

    def stats(self) -> dict[str, Any]:
        if not any(self.build_stats.values()):
            return {}
        return {"compile_workers": self.compile_workers,
                **{f"builds_{k}": (round(v, 2) if isinstance(v, float) else v) for k, v in self.build_stats.items()}}

    async def shutdown(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)


def _killpg(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _text_tail(buf: bytes | bytearray, limit: int = 4000) -> str:
    return bytes(buf[-limit:]).decode(errors="replace")


@hookimpl
def register_executors(register):
    register(LocalExecutor)
