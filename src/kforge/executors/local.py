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
from kforge.runtime import protocol as P


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


class JudgeWorker:
    def __init__(self, index: int, gpu: str | None, log_path: Path | None) -> None:
        self.index, self.gpu, self.log_path = index, gpu, log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.busy_s = 0.0

    async def start(self, timeout: float = 600.0) -> None:
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
            self.busy_s += time.perf_counter() - t0

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
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.workers: list[JudgeWorker] = []
        self.idle: asyncio.Queue[JudgeWorker] | None = None
        self.started_at = 0.0
        self.log_dir: Path | None = None
        self.device_info = {}

    def plan_devices(self) -> list[str | None]:
        device = self.config.get("device") or "auto"
        gpus = [str(g) for g in self.config["gpus"]] if self.config.get("gpus") else visible_gpus()
        if device == "cpu" or (device == "auto" and not gpus):
            return [None] * int(self.config.get("workers") or 1)
        if not gpus:
            raise RuntimeError("executor.device is 'cuda' but no GPU is visible (nvidia-smi found none)")
        return list(gpus)

    def describe(self) -> dict[str, Any]:
        devices = self.plan_devices()
        return {"executor": self.name, "workers": len(devices),
                "devices": ["cpu (Triton interpreter)" if d is None else f"cuda:{d}" for d in devices]}


    async def start(self, log_dir: Any = None) -> None:
        self.log_dir = log_dir
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        devices = self.plan_devices()
        self.workers = [JudgeWorker(i, d, (log_dir / f"judge-{i}.log") if log_dir else None)
                        for i, d in enumerate(devices)]
        await asyncio.gather(*(w.start() for w in self.workers))
        self.capacity = len(self.workers)
        self.device_info = self.workers[0].info
        self.idle = asyncio.Queue()
        for w in self.workers:
            self.idle.put_nowait(w)
        self.started_at = time.perf_counter()

    async def evaluate(self, req: P.EvalRequest) -> P.EvalResult:
        assert self.idle is not None, "start() first"
        worker = await self.idle.get()
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
        if not self.workers or not self.started_at:
            return None
        wall = (time.perf_counter() - self.started_at) * len(self.workers)
        return min(1.0, sum(w.busy_s for w in self.workers) / wall) if wall > 0 else None

    async def shutdown(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)


@hookimpl
def register_executors(register):
    register(LocalExecutor)
