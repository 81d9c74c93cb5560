"""The judge's side of a sandbox: starting the process, the channel, output caps, the memory cap of
CPU sandboxes, and how its failures are named (the sandbox itself is ``kforge.runtime.sandbox``)."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from kforge.runtime import wire
from kforge.runtime.wire import Channel

LOG_TAIL_BYTES = 64 << 10
_COMPILE_EXC = ("SyntaxError", "IndentationError", "CompilationError", "CalledProcessError")
# What one sandbox reply may carry: OUTPUT_SLACK x the bytes the judge expects back (the reference's
# outputs, the inputs it handed over), never less than OUTPUT_FLOOR_BYTES, so a wrong shape or dtype
# still reaches the comparison and gets its own verdict. Beyond that (a 2 GB output for a 1 MB
# answer) the sandbox sends headers only and the judge refuses them unread: guard "output_size".
OUTPUT_SLACK = 4
OUTPUT_FLOOR_BYTES = 256 << 20
# What a candidate in a CPU sandbox may allocate (RLIMIT_DATA: heap and private anonymous mappings,
# on top of what the sandbox holds once torch is imported) is capped, so one that allocates without
# bound gets an allocation error in its own process instead of driving the machine, the judge with
# it, out of memory. KFORGE_SANDBOX_MEMORY_MB sets the cap (0: none); the default is half the
# machine's memory, or of its cgroup's limit if lower. GPU sandboxes get none: the CUDA driver maps
# far more host address space than it uses.
SANDBOX_MEMORY_ENV = "KFORGE_SANDBOX_MEMORY_MB"
SPARES_ENV = "KFORGE_SPARE_SANDBOXES"  # sandboxes a judge keeps started ahead (default: 2 on a GPU, 1 on the CPU)
SANDBOX_MEMORY_FRACTION = 0.5
SANDBOX_MEMORY_MIN_MB = 1024  # less leaves a candidate too little to run: a typo, not a choice
class SandboxDied(Exception):
    pass


class SandboxTimeout(Exception):
    pass


class SandboxProtocolError(Exception):
    """The sandbox answered with something malformed: the candidate's doing, not kforge's."""


class OutputTooLarge(Exception):
    """The sandbox returned tensors far bigger than the judge expects: refused before reading them."""


def _machine_memory() -> int | None:
    """Bytes of memory this process's machine (or cgroup, if it is limited more) has."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limits.append(int(Path(path).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    limits = [n for n in limits if n > 0]
    return min(limits) if limits else None


def sandbox_memory_limit(device_type: str) -> int | None:
    """Bytes of data a sandbox on this device type may allocate (RLIMIT_DATA); None for no cap."""
    if device_type != "cpu":
        return None
    raw = os.environ.get(SANDBOX_MEMORY_ENV, "").strip()
    if not raw:
        total = _machine_memory()
        return int(total * SANDBOX_MEMORY_FRACTION) if total else None
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"{SANDBOX_MEMORY_ENV}={raw!r}: expected MiB (0 for no limit)") from None
    if mb <= 0:
        return None
    if mb < SANDBOX_MEMORY_MIN_MB:
        raise ValueError(f"{SANDBOX_MEMORY_ENV}={raw!r}: at least {SANDBOX_MEMORY_MIN_MB} MiB (0 for no limit)")
    return int(mb * 2**20)


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(_tensor_bytes(x) for x in obj.values())
    return 0


def reply_cap(*expected: Any) -> int:
    """The most tensor bytes a sandbox reply may carry when the judge expects ``expected`` back."""
    return max(OUTPUT_FLOOR_BYTES, OUTPUT_SLACK * sum(_tensor_bytes(x) for x in expected))


class Sandbox:
    """A started sandbox process with its channel and a bounded tail of its output."""

    # Never handed to a candidate: the executor's credentials (Modal's identity token and API token,
    # a generator's API key the orchestrator's environment holds). Matched on the variable's name.
    SECRET_ENV = re.compile(r"^(MODAL_|AWS_|AZURE_|GOOGLE_APPLICATION_CREDENTIALS$)|(^|_)(TOKEN|SECRET|PASSWORD"
                            r"|API_?KEY|CREDENTIALS?|PRIVATE_KEY|ACCESS_KEY)(_|$)", re.IGNORECASE)

    def __init__(self, device: torch.device, root: Path, memory_limit: int | None = None,
                 lock_path: Path | None = None, transport: str = "cuda_ipc") -> None:
        # ``host``: tensors are staged in shared host memory (/dev/shm when roomy), the sandbox's folder.
        staging = wire.staging_dir() if transport == "host" else None
        self.transport = transport
        self.dir = Path(tempfile.mkdtemp(prefix="sb-", dir=staging or root))
        j_read, s_write = os.pipe()
        s_read, j_write = os.pipe()
        env = self.environment()
        if device.type == "cpu":
            env["TRITON_INTERPRET"] = "1"
            # OpenMP workers sleep between parallel regions instead of spinning: the CPU time the judge
            # reads for the wall-clock cross-check is then the work done, not the wait.
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["PYTHONUNBUFFERED"] = "1"
        src_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kforge.runtime.sandbox", str(s_read), str(s_write), str(self.dir), str(device),
             str(memory_limit or 0), str(lock_path or ""), transport],
            pass_fds=(s_read, s_write), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=self.dir, env=env, start_new_session=True)
        os.close(s_read)
        os.close(s_write)
        self.chan = Channel(j_read, j_write, self.dir, cuda_ipc=transport != "host")
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()
        self.ready = False
        # Per command: [calls, round-trip seconds, seconds the sandbox said it was busy], and the most
        # GPU memory it said it had reserved: the judge's breakdown of where time and memory go.
        self.stats: dict[str, list[float]] = {}
        self.peak_bytes = 0

    @classmethod
    def environment(cls) -> dict[str, str]:
        """The sandbox's environment: the judge's, less every variable that names a credential."""
        return {k: v for k, v in os.environ.items() if not cls.SECRET_ENV.search(k)}

    def echo_check(self, device: torch.device, timeout: float, alloc: Any = contextlib.nullcontext) -> str | None:
        """The transport's self-test on this (ready) sandbox: tensors on ``device`` (one strided, one
        integer) go over, 2x+1 of each comes back; None if every value and device came back right."""
        with alloc():
            a = torch.arange(64 * 48, dtype=torch.float32, device=device).reshape(64, 48)
            sent = [a, a.t()[3:17], torch.arange(-5, 1000, dtype=torch.int64, device=device)]
        try:
            reply = self.call({"cmd": "echo"}, timeout, tensors={"inputs": sent})
            if not reply.get("ok"):
                return str(reply.get("error") or "the sandbox refused the echo")[:500]
            if any(not str(d).startswith(device.type) for d in reply.get("devices") or ["?"]):
                return f"the sandbox received tensors on {reply.get('devices')}, not {device.type}"
            back = self.chan.decode(reply["outputs"], device)
        except Exception as exc:  # noqa: BLE001 - whatever broke, this transport does not work here
            return f"{type(exc).__name__}: {exc}"[:500]
        for k, (x, y) in enumerate(zip(sent, back)):
            if y.device.type != device.type or y.dtype != x.dtype or not torch.equal(y, x * 2 + 1):
                return f"tensor {k} came back wrong ({y.dtype} on {y.device})"
        return None if len(back) == len(sent) else f"{len(back)} tensors came back, not {len(sent)}"

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):  # type: ignore[union-attr,attr-defined]
            self._tail.append(chunk)
            self._tail_bytes += len(chunk)
            while self._tail_bytes > LOG_TAIL_BYTES and len(self._tail) > 1:
                self._tail_bytes -= len(self._tail.popleft())

    def log_tail(self, limit: int = 4000) -> str:
        self._drain.join(timeout=0.2) if self.proc.poll() is not None else None
        text = b"".join(self._tail).decode(errors="replace")
        return text[-limit:]

    def wait_ready(self, timeout: float) -> None:
        if not self.ready:
            self.recv(timeout)
            self.ready = True

    def call(self, msg: dict[str, Any], timeout: float, tensors: dict[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        if tensors:
            msg = dict(msg, **{k: self.chan.encode(v) for k, v in tensors.items()})
        try:
            self.chan.send(msg)
        except (BrokenPipeError, OSError) as exc:
            raise SandboxDied(self.describe_exit()) from exc
        reply = self.recv(timeout)
        st = self.stats.setdefault(str(msg.get("cmd")), [0, 0.0, 0.0])
        st[0] += 1
        st[1] += time.perf_counter() - t0
        busy, peak = reply.get("busy_s"), reply.get("peak_bytes")
        if isinstance(busy, (int, float)) and math.isfinite(busy):
            st[2] += float(busy)
        if isinstance(peak, int):
            self.peak_bytes = max(self.peak_bytes, peak)
        return reply

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            if not self.chan.poll(timeout):
                raise SandboxTimeout(f"no answer within {timeout:g} s")
            reply = self.chan.recv()
            self.chan.release()  # the sandbox has its own copies of what we shared by handle
            return reply
        except (EOFError, OSError, ConnectionResetError) as exc:
            raise SandboxDied(self.describe_exit()) from exc
        except ValueError as exc:  # not JSON, not an object: whatever wrote it, it was not the judge
            raise SandboxProtocolError(f"unreadable message: {exc}") from exc

    def cpu_ns(self) -> int | None:
        """CPU time the sandbox's threads have run, in ns, as the kernel counts it (schedstat): what the
        candidate can neither forge nor inflate by being descheduled. None where it can't be read."""
        try:
            tasks = os.listdir(f"/proc/{self.proc.pid}/task")
            return sum(int(Path(f"/proc/{self.proc.pid}/task/{t}/schedstat").read_text().split()[0]) for t in tasks)
        except (OSError, ValueError, IndexError):
            return None

    def describe_exit(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "the sandbox stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the candidate's process was killed by signal {name}"
        return f"the candidate's process exited with code {code}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.chan.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _payload_devices(obj: Any) -> set[str]:
    """Device types of the tensors in a sandbox payload, read from its headers."""
    found: set[str] = set()
    if isinstance(obj, dict):
        kind = obj.get("__kind__")
        if kind == "tensor":
            found.add(str(obj.get("device")))
        elif kind == "cuda_ipc":
            found.add("cuda")
        elif kind in ("list", "tuple"):
            for x in obj.get("items", []):
                found |= _payload_devices(x)
        elif kind == "dict":
            for x in obj.get("items", {}).values():
                found |= _payload_devices(x)
    return found


def _excerpt(reply: dict[str, Any], limit: int = 2000) -> str:
    err = str(reply.get("error") or "unknown error")
    tb = str(reply.get("traceback") or "")
    lines = [ln for ln in tb.splitlines() if ln.strip()]
    # keep the frames inside the candidate plus the final line: what a generator needs to fix it
    keep = [ln for ln in lines if "candidate.py" in ln or ln.startswith("    ")][-12:]
    text = err if not keep else err + "\n" + "\n".join(keep)
    return text[:limit]
