"""The judge: the trusted parent that evaluates one candidate at a time on one device.

It draws input seeds from the OS, runs the reference on inputs it checks by digest, sends the candidate's
sandbox copies of the inputs, checks what comes back and computes every statistic. The candidate
runs in a fresh sandbox process per candidate; a crash, hang or CUDA fault kills only that process.

Run as a server: ``python -m kforge.runtime.judge`` reads EvalRequest JSON lines on stdin and
writes one ``{"type": "result", ...}`` JSON line per request on stdout (anything the problem code
prints goes to stderr).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from kforge.runtime import gpulock, wire
from kforge.runtime import protocol as P
from kforge.runtime.meta import ROOFLINE_MARGIN, roofline_floor_ms
from kforge.runtime.problem import (
    ARBITRATED_GUARDS,
    DEFAULT_TOLERANCE,
    DISTRIBUTIONS,
    STRUCTURAL_OPS,
    Mismatch,
    all_finite,
    clone_inputs,
    compare,
    compare_exact,
    compute_ops,
    digest,
    draw_inputs,
    eval_expr,
    exact_reference,
    flatten_outputs,
    load_problem_module,
)
from kforge.runtime.timing import Timer, capture_graph, summarise
from kforge.runtime.wire import Channel, PayloadTooLarge, dtype_from_name

HARNESS_VERSION = "kforge-judge/1"
LOG_TAIL_BYTES = 64 << 10
CHECK_FRACTION = 0.5  # share of timed outputs compared with the reference
# The wall-clock cross-check, over the rounds whose output was not returned: host time around a
# timed call, less the IPC round trip, may exceed the reported time by max(WALL_FLOOR_MS,
# WALL_SLACK_MS + WALL_SLACK_FRACTION x reported) before the timer is disbelieved. On an H100
# (2026-11-25) honest ~1 ms kernels showed ~0.7 ms of such overhead when half the rounds also
# exported their output by CUDA IPC; a tighter 0.25 ms + 15% rule rejected them all. These are the
# conservative figures; they are not yet re-measured on a GPU over unchecked rounds only.
WALL_FLOOR_MS = 1.0
WALL_SLACK_MS = 0.5
WALL_SLACK_FRACTION = 0.5
# Timed by plain calls (graph replay off, or not capturable), a candidate whose kernels kept the device
# busy for less than this in one profiled call (or, without the profile check, whose reading is within
# this of an empty call's) is flagged launch_bound: its kernels are too short for the timer to resolve.
# (The reading less an empty call's still holds the candidate's own host work, Python and launch,
# which for a Triton kernel can be as long as the kernel: the profiler's figure has none of it.)
LAUNCH_BOUND_MS = 0.02
# Plain calls are timed in do_bench's order (kforge.runtime.timing.Timer): the end event is on the
# current stream, and a device-wide synchronisation after it measures how long work outlasted it (the
# "tail", with the host's round trip). A candidate whose median tail exceeds the baseline's by more than
# max(TAIL_SLACK_MS, TAIL_SLACK_FRACTION x its median) ran work the timed region did not see.
TAIL_SLACK_MS = 0.05
TAIL_SLACK_FRACTION = 0.1
# The profiler check measures the device's busy time over one call on every stream, with a warm L2:
# a timed median (cold L2) under PROFILED_FLOOR x that figure is impossible for honest work.
PROFILED_FLOOR = 0.5
# The graph decision (cuda_graph_below_ms) reads plain warm-up calls, which a busy host lifts: while the
# quickest is within GRAPH_PROBE_SPAN x the threshold, more warm-up rounds are taken, up to
# GRAPH_PROBE_ROUNDS in all.
GRAPH_PROBE_SPAN = 10.0
GRAPH_PROBE_ROUNDS = 8
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
# The memory plan (docs/evaluation.md, "Memory"). Timing rotates TIMING_SETS input sets when they are
# small; past ROTATION_MAX_BYTES of inputs it keeps one set (fresh values are written into it every
# round anyway, so a candidate that caches by pointer is still caught). A problem whose evaluation would
# need more than the GPU's share for one judge (EVAL_FACTOR x its working set: the judge and the
# sandbox each hold about three) is judged holding the GPU alone. Past RELEASE_ABOVE_BYTES of working
# set, the judge returns its cached blocks to the driver between phases, so the sandbox can use them.
TIMING_SETS = 3
ROTATION_MAX_BYTES = 1 << 30
EVAL_FACTOR = 7
RELEASE_ABOVE_BYTES = 1 << 30
# A sandbox that runs out of GPU memory is blamed only when it asked for more than this multiple of the
# problem's working set (plus CANDIDATE_MEMORY_SLACK): the reference's forward needs one; an honest
# kernel with its copies of the inputs, its outputs and scratch needs a few. Less than that, and the
# judge's plan (or another process) left it too little: an infrastructure failure, judged again alone.
CANDIDATE_MEMORY_FACTOR = 4
CANDIDATE_MEMORY_SLACK = 1 << 30
_ALLOC = re.compile(r"Tried to allocate ([0-9.]+) (B|KiB|MiB|GiB|TiB)")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
# The baseline's math modes. "pytorch": PyTorch's defaults, as a user's PyTorch and KernelBench's timers
# run it (cuDNN may use TF32 in fp32 convolutions; bf16/fp16 matmuls may reduce in lower precision).
# "exact": no TF32, no reduced-precision reductions, as the correctness reference always computes.
_MATH_FLAGS = ("cudnn.allow_tf32", "matmul.allow_tf32", "matmul.allow_bf16_reduced_precision_reduction",
               "matmul.allow_fp16_reduced_precision_reduction")


def _math_backend(flag: str) -> tuple[Any, str]:
    group, name = flag.split(".", 1)
    return (torch.backends.cudnn if group == "cudnn" else torch.backends.cuda.matmul), name


def _math_state() -> dict[str, bool]:
    state = {}
    for flag in _MATH_FLAGS:
        obj, name = _math_backend(flag)
        if hasattr(obj, name):
            state[flag] = bool(getattr(obj, name))
    return state


PYTORCH_MATH = _math_state()  # read at import, before any judge changes a flag: PyTorch's own defaults
EXACT_MATH = {flag: False for flag in PYTORCH_MATH}
MATH_MODES = {"pytorch": PYTORCH_MATH, "exact": EXACT_MATH}


@contextlib.contextmanager
def math_mode(name: str) -> Any:
    """The baseline's math flags for the block (``MATH_MODES``), then the judge's exact ones again."""
    if name not in MATH_MODES:
        raise ValueError(f"baseline_math {name!r}: expected one of {', '.join(MATH_MODES)}")
    before = _math_state()
    _set_math(MATH_MODES[name])
    try:
        yield
    finally:
        _set_math(before)


def _set_math(state: dict[str, bool]) -> None:
    for flag, value in state.items():
        obj, name = _math_backend(flag)
        setattr(obj, name, value)


def describe_math(name: str) -> str:
    flags = ", ".join(f"{k}={v}" for k, v in MATH_MODES.get(name, {}).items())
    return f"{name} ({flags})"


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
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
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


def cuda_arch(major: int, minor: int) -> str:
    """TORCH_CUDA_ARCH_LIST for this device: Hopper and later get the arch-specific target (sm_90a)."""
    return f"{major}.{minor}a" if major >= 9 else f"{major}.{minor}"


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "harness": HARNESS_VERSION,
        "platform": platform.platform(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - optional
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=props.name, device_kind="cuda", cuda=torch.version.cuda,
                    sm=f"{props.major}{props.minor}", sm_count=props.multi_processor_count,
                    cuda_arch=cuda_arch(props.major, props.minor),
                    memory_gb=round(props.total_memory / 2**30, 1),
                    l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0))
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.mem,clocks.max.sm",
                                  "--format=csv,noheader", "-i", str(device.index or 0)],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                drv, sm, mem, smax = [s.strip() for s in out.stdout.strip().split(",")[:4]]
                info.update(driver=drv, clock_sm=sm, clock_mem=mem, clock_sm_max=smax)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
    else:
        info.update(device=f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                    device_kind="cpu")
    return info


class DeviceLock:
    """Judges that share one GPU: untimed work (loading, correctness, the op and profiler checks) runs
    under a shared lock and timing under an exclusive one, so no other candidate or reference of
    kforge's runs on the GPU while one is timed, yet the mostly host-bound correctness work of one
    candidate overlaps another's. A lock file per physical GPU (by UUID) in the temp directory, with a
    gate that makes later shared takers queue behind a waiting timing judge (``gpulock``); on the CPU,
    or with ``KFORGE_DEVICE_LOCK=0``, it does nothing."""

    def __init__(self, device: torch.device, path: str | Path | None = None) -> None:
        self.fd: int | None = None
        self.gate: int | None = None
        self.path: Path | None = None  # sandboxes take it shared while they start on the GPU
        self.mode: str | None = None
        self.waited_s = 0.0
        if path is None:
            if device.type != "cuda" or os.environ.get("KFORGE_DEVICE_LOCK", "1") == "0":
                return
            ident = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "") \
                or f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}:{device.index}"
            path = Path(tempfile.gettempdir()) / f"kforge-gpu-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.lock"
        self.path = Path(path)
        self.fd, self.gate = gpulock.open_lock(path)

    @contextlib.contextmanager
    def hold(self, exclusive: bool) -> Any:
        # Already held (exclusive covers everything; shared covers shared): nothing to take. Timing is
        # never entered from inside a shared section, so a lock is never upgraded (no deadlock).
        if self.fd is None or self.gate is None or self.mode == "ex" or (self.mode == "sh" and not exclusive):
            yield
            return
        assert not (self.mode == "sh" and exclusive), "exclusive inside shared"
        t0 = time.perf_counter()
        gpulock.acquire(self.fd, self.gate, exclusive)
        self.waited_s += time.perf_counter() - t0
        self.mode = "ex" if exclusive else "sh"
        try:
            yield
        finally:
            self.mode = None
            gpulock.release(self.fd)


class Judge:
    def __init__(self, device: str | None = None, workdir: str | Path | None = None, keep_spare: bool = True,
                 spares: int | None = None, transport: str | None = None) -> None:
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device if device != "cuda" else "cuda:0")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        # The reference computes in the problem's precision: no TF32 in fp32 matmuls and convolutions,
        # no bf16 partial sums in bf16 matmuls (both are PyTorch defaults that cost ulps).
        _set_math(EXACT_MATH)
        self._own_root = workdir is None  # a temp directory of ours: removed on close()
        self.root = Path(workdir or tempfile.mkdtemp(prefix="kforge-judge-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.info = device_info(self.device)
        self.lock = DeviceLock(self.device)
        # How many judges share this GPU (set by the local executor): with more than one, a candidate
        # that ran out of GPU memory is judged again alone before the verdict stands.
        self.sharing = max(1, int(os.environ.get("KFORGE_JUDGES_PER_GPU", "1") or 1))
        self.keep_spare = keep_spare
        # Sandboxes started ahead, each importing torch and starting CUDA while earlier candidates are
        # judged. One is too few on a GPU: on an H200 (2026-12-03) a candidate's judging took ~1.5 s and
        # a sandbox's start ~5 s, so each candidate waited ~3 s for its sandbox.
        self.spares = 0 if not keep_spare else spares if spares is not None else \
            int(os.environ.get(SPARES_ENV) or (2 if self.device.type == "cuda" else 1))
        self.sandbox_memory = sandbox_memory_limit(self.device.type)
        self._reapers: list[threading.Thread] = []  # threads waiting for killed sandboxes to exit
        self._spares: collections.deque[Sandbox] = collections.deque()
        self._sysrand = random.SystemRandom()
        self._compile_cache: dict[tuple[Any, ...], Any] = {}
        self._plans: dict[tuple[Any, ...], dict[str, Any]] = {}  # memory plans, per problem and shape
        self._mutating: set[tuple[Any, ...]] = set()  # problems whose reference writes its inputs
        self._plan: dict[str, Any] = {}  # the current evaluation's plan
        self._peak_floor = 0
        # Tensors shared with a sandbox by CUDA IPC live in their own memory pool, so the blocks a
        # sandbox can map hold nothing but its inputs (never a reference output).
        self._share_pool = torch.cuda.MemPool() if self.device.type == "cuda" and hasattr(torch.cuda, "MemPool") \
            else None
        # How tensors travel to and from sandboxes, decided now by a self-test (an echo through a real
        # sandbox, which then serves the first candidate) and recorded in every result.
        self._self_test_s: dict[str, float] = {}
        self.transport, record = wire.choose_transport(
            transport or os.environ.get(wire.TRANSPORT_ENV) or "auto", self.device.type, self._transport_self_test)
        self.info["transport"] = {**record, "self_test_s": self._self_test_s,
                                  "staging": (wire.staging_dir() or "the judge's folder") if self.transport == "host"
                                  else None}
        if self.transport == "host":
            self._share_pool = None
        self._top_up()

    def _transport_self_test(self, mode: str) -> str | None:
        t0 = time.perf_counter()
        sb = Sandbox(self.device, self.root, self.sandbox_memory, lock_path=self.lock.path, transport=mode)
        try:
            sb.wait_ready(timeout=300.0)  # it takes the GPU lock itself while it starts
        except Exception as exc:  # noqa: BLE001 - a sandbox that can't start says so in its log
            sb.kill()
            raise RuntimeError(f"a sandbox did not start ({exc}): {sb.log_tail(1500)}") from exc
        with self.lock.hold(exclusive=False):
            problem = sb.echo_check(self.device, timeout=120.0, alloc=self._shared_alloc)
        self._self_test_s[mode] = round(time.perf_counter() - t0, 3)
        if problem is None:
            self._spares.append(sb)  # passed: the first candidate's sandbox
        else:
            sb.kill()
        return problem

    def _shared_alloc(self) -> Any:
        if self._share_pool is None:
            return contextlib.nullcontext()
        return torch.cuda.use_mem_pool(self._share_pool)

    def _retire(self, sb: Sandbox) -> None:
        """Kill a used sandbox now; wait for it to exit (a CUDA context takes a while to tear down) and
        remove its folder in the background, so the next candidate need not wait for that."""
        if sb.proc.poll() is None:
            try:
                os.killpg(sb.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                sb.proc.kill()
        self._reapers = [t for t in self._reapers if t.is_alive()]
        reaper = threading.Thread(target=sb.kill, name="kforge-reap-sandbox", daemon=True)
        reaper.start()
        self._reapers.append(reaper)

    def close(self) -> None:
        for reaper in self._reapers:
            reaper.join(timeout=15)
        self._reapers = []
        while self._spares:
            self._spares.popleft().kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _new_sandbox(self) -> Sandbox:
        return Sandbox(self.device, self.root, self.sandbox_memory, lock_path=self.lock.path, transport=self.transport)

    def _take_sandbox(self) -> Sandbox:
        sb = self._spares.popleft() if self._spares else self._new_sandbox()  # the oldest: the likeliest ready
        self._top_up()
        return sb

    def _top_up(self) -> None:
        while len(self._spares) < self.spares:
            self._spares.append(self._new_sandbox())

    # ------------------------------------------------------------------------------------------
    def evaluate(self, req: P.EvalRequest) -> P.EvalResult:
        res = self._evaluate_once(req)
        if _out_of_memory(res) and not self._candidate_oom(res):
            # The judge's holdings, a spare sandbox or another judge on this GPU may have taken the
            # memory: judge it again with the leanest plan, holding the GPU alone, so only a candidate
            # that runs out on its own is failed.
            first = res
            res = self._evaluate_once(req, alone=True, lean=True)
            res.flags.append(f"oom_retried_alone (first: {first.status}, {(first.error or '')[:120]})")
            res.durations_s["total"] = round(res.durations_s.get("total", 0.0) + first.durations_s.get("total", 0.0),
                                             4)
            if _out_of_memory(res) and not self._candidate_oom(res):
                res.status, res.guard = P.INFRA_ERROR, "memory"
                res.error = ("out of GPU memory although the candidate asked for no more than "
                             f"{CANDIDATE_MEMORY_FACTOR}x the problem's working set: the GPU is too small for this "
                             f"problem under the judge's leanest plan, or another process holds its memory "
                             f"(an infrastructure failure, not the candidate's): {(res.error or '')[:300]}")
        elif _out_of_memory(res):
            res.guard = "memory"
        return res

    def _candidate_oom(self, res: P.EvalResult) -> bool:
        """Whether an out-of-memory failure is the candidate's own: it happened in its sandbox, and the
        sandbox asked for more than CANDIDATE_MEMORY_FACTOR x the working set (what it held at its peak
        plus the allocation that failed). Otherwise it is the judge's plan's, or the machine's."""
        if res.status != P.RUNTIME_ERROR:
            return False  # out of memory in the judge itself
        plan = (res.diagnostics.get("memory") or {}).get("plan") or {}
        working = float(plan.get("working_set_bytes") or 0)
        held = float(res.diagnostics.get("sandbox_peak_gib") or 0.0) * 2**30
        m = _ALLOC.search(res.error or "")
        asked = float(m.group(1)) * _UNITS[m.group(2)] if m else 0.0
        allowance = CANDIDATE_MEMORY_FACTOR * working + CANDIDATE_MEMORY_SLACK
        if working > 0 and held + asked > allowance:
            res.error = (f"the candidate ran out of GPU memory asking for {(held + asked) / 2**30:.2f} GiB (it held "
                         f"{held / 2**30:.2f} GiB and asked for {asked / 2**30:.2f} GiB more), over the "
                         f"{allowance / 2**30:.2f} GiB a kernel for this problem may use ({CANDIDATE_MEMORY_FACTOR}x "
                         f"its working set of {working / 2**30:.2f} GiB, plus {CANDIDATE_MEMORY_SLACK >> 30} GiB): "
                         f"{res.error or ''}")[:4000]
            return True
        return False

    def _evaluate_once(self, req: P.EvalRequest, alone: bool = False, lean: bool = False) -> P.EvalResult:
        t_start = time.perf_counter()
        res = P.EvalResult(request_id=req.request_id, problem_id=req.problem_id, status=P.INFRA_ERROR,
                           device=self.info.get("device"), device_kind=self.info.get("device_kind"),
                           versions={k: v for k, v in self.info.items() if k not in ("device", "device_kind")},
                           shape_name=req.shape_name)
        if self.device.type == "cpu":
            res.flags.append("cpu_timing")
        else:
            torch.cuda.reset_peak_memory_stats(self.device)
        self._peak_floor = 0
        self._plan = {}
        base_reserved = torch.cuda.memory_reserved(self.device) if self.device.type == "cuda" else 0
        sb: Sandbox | None = None
        try:
            sb = self._take_sandbox()
            self._evaluate(req, res, sb, alone, lean)
        except SandboxTimeout as exc:
            res.status, res.guard, res.error = P.TIMEOUT, res.guard or "timeout", f"{res.error or 'timed out'}: {exc}"
        except SandboxDied as exc:
            res.status, res.guard, res.error = P.RUNTIME_ERROR, "crash", str(exc)
        except SandboxProtocolError as exc:
            res.status, res.guard, res.error = P.RUNTIME_ERROR, "protocol", f"malformed answer from the sandbox: {exc}"
        except OutputTooLarge as exc:
            res.status, res.guard, res.error = P.INCORRECT, "output_size", str(exc)
        except Exception as exc:  # noqa: BLE001 - a failure of the judge itself is an infra error
            res.status, res.error = P.INFRA_ERROR, f"judge error: {type(exc).__name__}: {exc}"
        finally:
            t_end = time.perf_counter()
            if self.device.type == "cuda":
                peak = max(self._peak_floor, torch.cuda.max_memory_reserved(self.device))
                res.diagnostics["judge_peak_gib"] = round(peak / 2**30, 3)
                if self._plan:
                    self._plan["judge_held_gib"] = round(max(peak - base_reserved, 0) / 2**30, 3)
            if sb is not None:
                tail = sb.log_tail()
                if tail.strip():
                    res.log_tail = tail
                res.diagnostics["sandbox"] = {cmd: {"calls": int(n), "round_trip_s": round(rt, 4),
                                                    "busy_s": round(busy, 4)}
                                              for cmd, (n, rt, busy) in sb.stats.items()}
                if sb.peak_bytes:
                    res.diagnostics["sandbox_peak_gib"] = round(sb.peak_bytes / 2**30, 3)
                self._retire(sb)
            if self._plan:
                res.diagnostics["memory"] = self._memory_report(res)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            res.durations_s["teardown"] = round(time.perf_counter() - t_end, 4)
        res.flags = list(dict.fromkeys(res.flags))  # a re-measurement may raise the same flag twice
        res.durations_s["total"] = round(time.perf_counter() - t_start, 4)
        return res

    def _build_env(self, req: P.EvalRequest) -> dict[str, str]:
        """The import's environment: the compile stage's, else this device's arch (what a build would use)."""
        env = {k: str(v) for k, v in (req.build_env or {}).items()}
        if self.info.get("cuda_arch"):
            env.setdefault("TORCH_CUDA_ARCH_LIST", str(self.info["cuda_arch"]))
        return env

    def _decode(self, sb: Sandbox, payload: Any, cap: int, what: str = "the output") -> Any:
        try:
            return sb.chan.decode(payload, self.device, max_bytes=cap)
        except PayloadTooLarge as exc:
            raise OutputTooLarge(f"{what} came back far larger than the reference's: {exc} (the cap is "
                                 f"{OUTPUT_SLACK}x what the judge expects back, at least "
                                 f"{OUTPUT_FLOOR_BYTES >> 20} MiB); refused unread") from exc
        except Exception as exc:  # noqa: BLE001 - whatever the sandbox sent, it is not the judge's fault
            raise SandboxProtocolError(f"{type(exc).__name__}: {exc}") from exc

    def _reference(self, req: P.EvalRequest, shape: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
        """The problem module at ``shape``, its reference model and its init inputs (trusted code)."""
        dtype = dtype_from_name(req.dtype)
        module = load_problem_module(req.problem_source, req.problem_id, shape)
        init_inputs = list(module.get_init_inputs())
        torch.manual_seed(req.init_seed)
        ref_model = module.Model(*init_inputs)
        if isinstance(ref_model, torch.nn.Module):
            ref_model = ref_model.to(self.device)
            if dtype != torch.float32:
                ref_model = ref_model.to(dtype)
            ref_model.eval()
        return module, ref_model, init_inputs

    def _fail_reply(self, res: P.EvalResult, reply: dict[str, Any], default_guard: str = "exception") -> None:
        exc_type = str(reply.get("exc_type", ""))
        compile_like = reply.get("phase") == "import" or any(exc_type.endswith(n) for n in _COMPILE_EXC)
        res.status = P.COMPILE_ERROR if compile_like else P.RUNTIME_ERROR
        res.guard = "compile" if compile_like else default_guard
        res.error = _excerpt(reply)

    def _problem_key(self, req: P.EvalRequest, shape: dict[str, Any]) -> tuple[Any, ...]:
        return (req.problem_id, hashlib.sha256(req.problem_source.encode()).hexdigest(),
                json.dumps(shape, sort_keys=True, default=str), req.dtype)

    def _memory_plan(self, req: P.EvalRequest, module: Any, ref_model: Any, alone: bool, lean: bool) -> dict[str, Any]:
        """What this problem needs and how the judge will hold it (docs/evaluation.md, "Memory"): the
        working set of one reference forward (its inputs, outputs and temporaries), measured once per
        problem and shape by a forward of the reference before any candidate code runs, then how many
        timing sets, whether to hold the GPU alone and whether to release cached memory between phases."""
        key = self._problem_key(req, req.shape)
        measured = self._plans.get(key)
        if measured is None:
            dev, dtype = self.device, dtype_from_name(req.dtype)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                self._peak_floor = max(self._peak_floor, torch.cuda.max_memory_reserved(dev))
            with self._shared_alloc():
                inputs = draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype, dev)
            in_bytes = _tensor_bytes(inputs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                before = torch.cuda.memory_allocated(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            with torch.no_grad():
                out = ref_model(*inputs)  # on throwaway inputs: a reference that writes them harms nothing
            out_bytes = _tensor_bytes(flatten_outputs(out))
            forward = out_bytes
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                forward = max(out_bytes, torch.cuda.max_memory_allocated(dev) - before)
                self._peak_floor = max(self._peak_floor, torch.cuda.max_memory_reserved(dev))
            del out, inputs
            measured = {"input_bytes": in_bytes, "output_bytes": out_bytes, "working_set": in_bytes + forward}
            self._plans[key] = measured
        working = measured["working_set"]
        total = free = 0
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
        big = self.device.type == "cuda" and self.sharing > 1 and EVAL_FACTOR * working * self.sharing > 0.9 * total
        plan = {
            "working_set_bytes": int(working),
            "working_set_gib": round(working / 2**30, 4),
            "input_gib": round(measured["input_bytes"] / 2**30, 4),
            "output_gib": round(measured["output_bytes"] / 2**30, 4),
            "timing_sets": 1 if lean or TIMING_SETS * measured["input_bytes"] > ROTATION_MAX_BYTES else TIMING_SETS,
            "alone": bool(alone or big),
            "release_between_phases": bool(lean or working > RELEASE_ABOVE_BYTES),
            "judges_on_gpu": self.sharing,
        }
        if total:
            plan["device_free_gib"] = round(free / 2**30, 2)
            plan["device_total_gib"] = round(total / 2**30, 2)
        if lean:
            plan["lean"] = True
        return plan

    def _memory_report(self, res: P.EvalResult) -> dict[str, Any]:
        """The plan with what it came to: the judge's and the sandbox's peaks against the working set."""
        plan = dict(self._plan)
        working = plan.get("working_set_gib") or 0.0
        judge = res.diagnostics.get("judge_peak_gib")
        sandbox = res.diagnostics.get("sandbox_peak_gib")
        report: dict[str, Any] = {"working_set_gib": working, "judge_peak_gib": judge, "sandbox_peak_gib": sandbox,
                                  "plan": plan}
        if working > 0 and "judge_held_gib" in plan:
            report["judge_held_over_working_set"] = round(plan["judge_held_gib"] / working, 3)
        if working > 0 and isinstance(judge, (int, float)):
            report["peak_over_working_set"] = round((judge + (sandbox or 0.0)) / working, 3)
        return report

    def _release(self) -> None:
        """Between phases of a large problem: cached blocks back to the driver, for the sandbox."""
        if self.device.type == "cuda" and self._plan.get("release_between_phases"):
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def _evaluate(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, alone: bool = False,
                  lean: bool = False) -> None:
        t0 = time.perf_counter()
        with self.lock.hold(exclusive=False):  # the reference's weights go to the GPU
            module, ref_model, init_inputs = self._reference(req, req.shape)
            self._plan = self._memory_plan(req, module, ref_model, alone, lean)
        res.durations_s["reference"] = round(time.perf_counter() - t0, 4)
        if self._plan["alone"]:
            if not alone:
                res.flags.append("judged_alone: the problem's working set is large for a shared GPU")
            # The sandbox starts under the shared lock: ready it before this judge holds the GPU alone.
            sb.wait_ready(timeout=max(req.compile_timeout_s, 120.0))
            with self.lock.hold(exclusive=True):
                self._evaluate_candidate(req, res, sb, module, ref_model, init_inputs)
        else:
            self._evaluate_candidate(req, res, sb, module, ref_model, init_inputs)

    def _evaluate_candidate(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any,
                            init_inputs: list[Any]) -> None:
        tol = DEFAULT_TOLERANCE.get(req.dtype, 1e-4)
        atol = req.atol if req.atol is not None else tol
        rtol = req.rtol if req.rtol is not None else tol

        # -- load the candidate in its sandbox (import compiles) ----------------------------------
        t0 = time.perf_counter()
        cand_file = sb.dir / "candidate.py"
        cand_file.write_text(req.candidate_source)
        res.error = "while loading the candidate"
        sb.wait_ready(timeout=max(req.compile_timeout_s, 120.0))
        with self.lock.hold(exclusive=False):
            reply = sb.call({"cmd": "load", "candidate_file": str(cand_file), "init_seed": req.init_seed,
                             "module_name": f"kforge_candidate_{req.request_id}".replace("-", "_"),
                             "dtype": req.dtype, "flush_l2": req.flush_l2, "env": self._build_env(req)},
                            timeout=req.compile_timeout_s, tensors={"init": init_inputs})
        res.durations_s["compile"] = round(time.perf_counter() - t0, 4)
        if not reply.get("ok"):
            self._fail_reply(res, reply, "init")
            return
        res.error = None

        # -- correctness, then the op and profiler checks: GPU work that may overlap another judge's --
        with self.lock.hold(exclusive=False):
            if not self._untimed_checks(req, res, sb, module, ref_model, init_inputs, atol, rtol):
                return
        self._release()

        # -- timing: baseline here, candidate in the sandbox, interleaved ------------------------
        if req.min_samples <= 0:
            res.status = P.CORRECT
            return
        t0 = time.perf_counter()
        with self.lock.hold(exclusive=True):  # nothing else of kforge's runs on this GPU meanwhile
            t1 = time.perf_counter()
            if self._time(req, res, sb, module, ref_model, atol, rtol) and (res.speedup_vs_eager or 0) > 10:
                # An extraordinary claim: measure again with fresh inputs before it counts.
                first = res.speedup_vs_eager
                if self._time(req, res, sb, module, ref_model, atol, rtol):
                    res.flags.append(f"remeasured_gt10x (first {first:.2f}x)")
        res.durations_s["timing"] = round(time.perf_counter() - t1, 4)
        if t1 - t0 > 0.001:
            res.durations_s["timing_wait"] = round(t1 - t0, 4)

    def _untimed_checks(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any,
                        init_inputs: list[Any], atol: float, rtol: float) -> bool:
        """Correctness at the main and held-out shapes, then the op and profiler checks."""
        t0 = time.perf_counter()
        try:
            if not self._all_correctness(req, res, sb, module, ref_model, init_inputs, atol, rtol):
                return False
        finally:
            res.durations_s["correctness"] = round(time.perf_counter() - t0, 4)

        t0 = time.perf_counter()
        try:
            # -- did forward compute the whole answer with the reference's own torch ops? -------
            if req.ops_check and not self._ops_check(req, res, sb, module, ref_model):
                return False
            # -- the profiler: did the candidate launch a kernel of its own? ---------------------
            if self.device.type == "cuda" and req.profile_check and req.backend in _KERNEL_PATTERNS:
                if not self._profile_check(req, res, sb, module):
                    return False
            return True
        finally:
            res.durations_s["checks"] = round(time.perf_counter() - t0, 4)

    def _all_correctness(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any,
                         init_inputs: list[Any], atol: float, rtol: float) -> bool:
        """Correctness at the main shape, then at each held-out shape."""
        t0 = time.perf_counter()
        if not self._correctness(req, res, sb, module, ref_model, max(int(req.trials), 1), atol, rtol, "main"):
            return False
        res.diagnostics["correctness_main_s"] = round(time.perf_counter() - t0, 4)
        for k, shape in enumerate(req.heldout):
            label = f"heldout:{k}"
            h_module, h_ref, h_init = self._reference(req, shape)
            reply = sb.call({"cmd": "construct", "init_seed": req.init_seed}, timeout=req.compile_timeout_s,
                            tensors={"init": h_init})
            if not reply.get("ok"):
                self._fail_reply(res, reply, "init")
                res.error = f"{label} shape {shape}: {res.error}"
                return False
            if not self._correctness(req, res, sb, h_module, h_ref, max(int(req.heldout_trials), 1), atol, rtol,
                                     label):
                return False
            del h_ref
        if req.heldout:
            reply = sb.call({"cmd": "construct", "init_seed": req.init_seed}, timeout=req.compile_timeout_s,
                            tensors={"init": init_inputs})
            if not reply.get("ok"):
                self._fail_reply(res, reply, "init")
                return False
        return True

    def _reference_outputs(self, req: P.EvalRequest, module: Any, ref_model: Any, seed: int, dist: str,
                           key: int) -> tuple[list[Any], Any, list[Any] | None]:
        """Inputs for one trial, the reference's output on them, and their digest (None for a problem
        that writes its inputs by design). The reference runs on the inputs themselves, not a copy: a
        digest before and after shows whether it wrote them; if it did, the inputs are drawn again from
        the same seed (and from then on the reference of this problem runs on a copy)."""
        dev, dtype = self.device, dtype_from_name(req.dtype)
        pkey = self._problem_key(req, req.shape)
        with self._shared_alloc():
            inputs = draw_inputs(module, seed, dist, dtype, dev)
        before = None if req.inplace else digest(inputs, key)
        with torch.no_grad():
            if req.inplace or pkey in self._mutating:
                ref_out = ref_model(*clone_inputs(inputs))
            else:
                ref_out = ref_model(*inputs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if before is not None and pkey not in self._mutating and digest(inputs, key) != before:
            # The reference wrote its inputs: the candidate must still get the pristine ones.
            self._mutating.add(pkey)
            with self._shared_alloc():
                inputs = draw_inputs(module, seed, dist, dtype, dev)
            if digest(inputs, key) != before:
                raise RuntimeError(f"the reference of {req.problem_id} writes its inputs, and get_inputs() does not "
                                   "give the same inputs again from the same seed: declare the problem in-place")
        return inputs, ref_out, before

    def _arbitrate(self, exc: Mismatch, ref_model: Any, inputs: list[Any], out: Any, ref_out: Any, atol: float,
                   rtol: float, res: P.EvalResult, where: str) -> None:
        """An output that failed the fixed tolerance is judged against the exact (float64) answer
        (kforge.runtime.problem, "tolerance arbitration"). Returns when it passes; raises Mismatch, the
        original or the arbitration's, when it does not."""
        if exc.guard not in ARBITRATED_GUARDS:
            raise exc
        try:
            exact = exact_reference(ref_model, inputs)
        except Exception as err:  # noqa: BLE001 - no float64 model (dtype-pinned ops, memory): the verdict stands
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise Mismatch(exc.guard, f"{exc} (no float64 arbitration: {type(err).__name__}: {str(err)[:160]})",
                           exc.max_abs, exc.max_rel) from exc
        try:
            measured = compare_exact(out, ref_out, exact, atol, rtol)
        except Mismatch as err:
            raise Mismatch(err.guard, f"{exc}; against the exact answer: {err}", exc.max_abs, exc.max_rel) from exc
        finally:
            del exact
        res.flags.append("tolerance_arbitrated")
        notes = res.diagnostics.setdefault("arbitrated", [])
        if len(notes) < 8:
            notes.append({"where": where, "fixed_check": str(exc)[:200], **measured})

    def _correctness(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any,
                     trials: int, atol: float, rtol: float, label: str) -> bool:
        dev = self.device
        dists = list(DISTRIBUTIONS)
        trial = attempts = 0
        where = "" if label == "main" else f"{label} shape: "
        while trial < trials:
            attempts += 1
            if attempts > trials * 4 or not dists:
                raise RuntimeError(f"{where}the reference gives NaN/Inf on every input distribution")
            dist = dists[trial % len(dists)]
            seed = self._sysrand.getrandbits(63)
            key = self._sysrand.getrandbits(62)  # the digest's key: never leaves the judge
            inputs, ref_out, before = self._reference_outputs(req, module, ref_model, seed, dist, key)
            ref_list = flatten_outputs(ref_out)
            if not all_finite(ref_list):
                dists.remove(dist)  # the reference itself can't take these inputs (logs, probabilities)
                continue
            res.seeds.append(seed)
            res.distributions.append(dist if label == "main" else f"{label}/{dist}")
            poison = [t.numel() * t.element_size() for t in ref_list if isinstance(t, torch.Tensor)]
            runs = 2 if trial == 0 and label == "main" else 1  # twice on one input: races, uninitialised memory
            cap = reply_cap(ref_list, inputs)
            first: Any = None
            for run in range(runs):
                reply = sb.call({"cmd": "run", "poison": poison, "return_inputs": not req.inplace, "max_bytes": cap},
                                timeout=req.run_timeout_s, tensors={"inputs": inputs})
                res.trials_run += 1 if run == 0 else 0
                if not reply.get("ok"):
                    self._fail_reply(res, reply)
                    res.error = f"{where}{res.error}"
                    return False
                out_payload = reply.get("outputs")
                bad_device = _payload_devices(out_payload) - {dev.type}
                if bad_device:
                    res.status, res.guard = P.INCORRECT, "output_device"
                    res.error = f"{where}an output is on {sorted(bad_device)}, expected {dev.type}"
                    return False
                if before is not None:  # the inputs as the candidate left them, by digest: no second copy kept
                    after = self._decode(sb, reply.get("inputs_after"), cap, f"{where}the returned inputs")
                    changed = [i for i, (a, b) in enumerate(zip(digest(list(after), key), before)) if a != b]
                    if len(after) != len(before):
                        changed = changed or [min(len(after), len(before))]
                    del after
                    if changed:
                        res.status, res.guard = P.INCORRECT, "input_mutation"
                        res.error = f"{where}the candidate modified input {changed[0]}, which the problem does not allow"
                        return False
                out = self._decode(sb, out_payload, cap, f"{where}the output")
                try:
                    if run == 0:
                        try:
                            abs_err, rel_err = compare(out, ref_out, atol, rtol, dev.type)
                            res.max_abs_err = max(res.max_abs_err or 0.0, abs_err)
                            res.max_rel_err = max(res.max_rel_err or 0.0, rel_err)
                        except Mismatch as exc:
                            self._arbitrate(exc, ref_model, inputs, out, ref_out, atol, rtol, res,
                                            f"{label}/{dist}")
                            res.max_abs_err = max(res.max_abs_err or 0.0, exc.max_abs or 0.0)
                            res.max_rel_err = max(res.max_rel_err or 0.0, exc.max_rel or 0.0)
                        first = out if runs == 2 else None
                    else:
                        try:
                            compare(out, first, atol * 1e-2, rtol * 1e-2, dev.type)
                        except Mismatch as exc:
                            raise Mismatch("nondeterministic", "two runs on the same input disagree "
                                           f"({exc}): a race or uninitialised memory") from exc
                except Mismatch as exc:
                    res.status = P.INCORRECT
                    res.guard = exc.guard if label == "main" else f"heldout_{exc.guard}"
                    res.error = f"{where}trial {trial + 1} ({dist} inputs): {exc}"
                    res.mismatch = str(exc)
                    if exc.max_abs is not None:
                        res.max_abs_err = exc.max_abs
                        res.max_rel_err = exc.max_rel
                    return False
                del out
            del first, inputs, ref_out, ref_list
            res.trials_passed += 1
            trial += 1
        return True

    def _ops_check(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any) -> bool:
        """Reject a candidate whose forward runs every compute op the reference runs: it computed the
        answer with the library (behind a token kernel, say), whatever else it launched."""
        with self._shared_alloc():
            inputs = draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype_from_name(req.dtype),
                                 self.device)
        ref_ops = compute_ops(ref_model, clone_inputs(inputs))
        if not ref_ops:
            return True
        reply = sb.call({"cmd": "ops"}, timeout=req.run_timeout_s * 2, tensors={"inputs": inputs})
        if not reply.get("ok"):
            self._fail_reply(res, reply)
            return False
        ops = reply.get("ops", [])
        if not isinstance(ops, list):
            raise SandboxProtocolError("the op list is not a list")
        cand_ops = {str(o) for o in ops} - STRUCTURAL_OPS
        if ref_ops <= cand_ops:
            res.status, res.guard = P.REJECTED, "library_op"
            res.error = (f"forward ran every compute op of the reference ({', '.join(sorted(ref_ops))}): the answer "
                         "came from PyTorch, not from the candidate's kernels")
            return False
        return True

    def _profile_check(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any) -> bool:
        with self._shared_alloc():
            inputs = draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype_from_name(req.dtype),
                                 self.device)
        reply = sb.call({"cmd": "profile"}, timeout=req.run_timeout_s * 2, tensors={"inputs": inputs})
        if not reply.get("ok"):
            if reply.get("phase") == "profiler":
                res.flags.append("profiler_unavailable")
                return True
            self._fail_reply(res, reply)
            return False
        kernels = reply.get("kernels", [])
        if not isinstance(kernels, list):
            raise SandboxProtocolError("the profiler's kernel list is not a list")
        names = [str(n) for n in kernels][:200]
        res.kernels = names
        busy = reply.get("device_ms")
        if isinstance(busy, (int, float)) and math.isfinite(busy) and busy >= 0:
            # The device's busy time over one profiled call (kernels, copies; a warm L2): what the
            # launch_bound flag reads when timing falls back to plain calls.
            res.diagnostics["profiled_device_ms"] = round(float(busy), 6)
        own = _own_kernel_names(req.candidate_source, req.backend)
        if own and not any(o in n for n in names for o in own):
            res.status, res.guard = P.REJECTED, "profiler"
            res.error = (f"the profiler saw no kernel defined by the candidate ({', '.join(sorted(own))}) run in "
                         f"forward; it launched: {', '.join(names[:8]) or 'nothing on the GPU'}")
            return False
        return True

    def _compiled(self, req: P.EvalRequest, mode: str) -> Any:
        key = (req.problem_id, hashlib.sha256(req.problem_source.encode()).hexdigest(),
               json.dumps(req.shape, sort_keys=True), req.dtype, req.init_seed, mode)
        if key not in self._compile_cache:
            _, model, _ = self._reference(req, req.shape)
            self._compile_cache[key] = torch.compile(model, mode=None if mode == "default" else mode)
        return self._compile_cache[key]

    def _graph_undecided(self, req: P.EvalRequest, warm_base: list[float], warm_cand: list[float],
                         rounds: int) -> bool:
        """Whether to take another warm-up round before deciding on graph replay: the quickest plain
        call so far is above the threshold but near it (within GRAPH_PROBE_SPAN x), where a busy host
        (builds on every core, sandboxes starting) can lift every one of a few plain readings of a
        short kernel over it. At most GRAPH_PROBE_ROUNDS rounds in all: each costs a plain call on
        either side and one round trip."""
        if self.device.type != "cuda" or req.cuda_graph_below_ms <= 0 or not warm_base or not warm_cand:
            return False
        fastest = min(min(warm_base), min(warm_cand))
        return req.cuda_graph_below_ms <= fastest < GRAPH_PROBE_SPAN * req.cuda_graph_below_ms \
            and rounds < max(req.warmup, GRAPH_PROBE_ROUNDS)

    def _graph_setup(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, ref_model: Any,
                     compiled: dict[str, Any], ref_sets: list[Any], warm_base: list[float],
                     warm_cand: list[float]) -> tuple[list[Any], dict[str, list[Any]]] | None:
        """Graphs for timing by replay, when the faster side's quickest warm-up call is under
        ``cuda_graph_below_ms``: ([(graph, output)] per set for the baseline, {mode: [...]} for the
        torch.compile baselines that could be captured). Empty when timing plain calls (the reason is
        in the flags); None when the sandbox failed."""
        if self.device.type != "cuda" or req.cuda_graph_below_ms <= 0 or not warm_base or not warm_cand:
            return [], {}
        fastest = min(min(warm_base), min(warm_cand))  # min: the first warm-up call also compiles
        if fastest >= req.cuda_graph_below_ms:
            return [], {}
        try:
            with math_mode(req.baseline_math):
                ref_graphs = [capture_graph(ref_model, args, self.device) for args in ref_sets]
        except Exception as exc:  # noqa: BLE001 - the reference itself can't be captured: plain calls
            torch.cuda.synchronize(self.device)
            res.flags.append(f"graph_capture_failed: reference: {type(exc).__name__}: {str(exc)[:200]}")
            return [], {}
        reply = sb.call({"cmd": "graph_setup"}, timeout=req.run_timeout_s * 2)
        if not reply.get("ok"):
            self._fail_reply(res, reply)
            return None
        if not reply.get("graph"):
            res.flags.append(f"graph_capture_failed: candidate: {str(reply.get('error'))[:300]}")
            return [], {}
        comp_graphs: dict[str, list[Any]] = {}
        for mode, fn in compiled.items():
            try:
                with math_mode(req.baseline_math):
                    comp_graphs[mode] = [capture_graph(fn, args, self.device) for args in ref_sets]
            except Exception:  # noqa: BLE001 - e.g. "reduce-overhead" already replays its own graphs
                torch.cuda.synchronize(self.device)
        return ref_graphs, comp_graphs

    def _time(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any,
              atol: float, rtol: float) -> bool:
        """Interleaved timing: per round A (eager), B (candidate), C (torch.compile, per mode), A' (eager
        again, for the A/A check). True when the candidate's timing was accepted."""
        dev = self.device
        dtype = dtype_from_name(req.dtype)
        timer = Timer(dev, flush_l2=req.flush_l2)
        compiled = {m: self._compiled(req, m) for m in req.compile_modes}
        order = ", interleaved per round: eager, candidate" + "".join(f", compile[{m}]" for m in compiled) + \
            ", eager again (A/A)"
        res.timing_method = timer.method + order
        res.baseline_math = describe_math(req.baseline_math)
        n_sets = int(self._plan.get("timing_sets") or TIMING_SETS)
        with self._shared_alloc():
            sets = [draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype, dev) for _ in range(n_sets)]
        # The baseline's own copies, before the sandbox sees any. Fresh values are later written into
        # these same buffers, which a captured graph reads.
        ref_sets = [clone_inputs(s) for s in sets]
        reply = sb.call({"cmd": "time_setup"}, timeout=req.run_timeout_s, tensors={"sets": sets})
        del sets
        if not reply.get("ok"):
            self._fail_reply(res, reply)
            return False
        warm_base: list[float] = []
        warm_cand: list[float] = []
        w = 0
        while True:  # warm-up: JIT, autotuning and compilation are never timed
            with torch.no_grad(), math_mode(req.baseline_math):
                warm_base.append(timer.time_call(ref_model, ref_sets[w % n_sets])[0])
                for fn in compiled.values():
                    timer.time_call(fn, ref_sets[w % n_sets])
            reply = sb.call({"cmd": "time", "set": w % n_sets}, timeout=req.run_timeout_s)
            if not reply.get("ok"):
                self._fail_reply(res, reply)
                return False
            if isinstance(reply.get("ms"), (int, float)):
                warm_cand.append(float(reply["ms"]))
            w += 1
            if w >= max(req.warmup, 1) and not self._graph_undecided(req, warm_base, warm_cand, w):
                break
        # Short kernels: a plain call's Python, launch and device-wide synchronisation are as long as
        # the kernel, so both sides are timed by replaying a captured CUDA graph instead.
        graphs = self._graph_setup(req, res, sb, ref_model, compiled, ref_sets, warm_base, warm_cand)
        if graphs is None:
            return False
        ref_graphs, comp_graphs = graphs
        if ref_graphs:
            plain = [m for m in compiled if m not in comp_graphs]
            res.timing_method = timer.describe(graph=True) + order + \
                (f" (compile[{', '.join(plain)}]: plain calls, not capturable)" if plain else "")
            time_ref = lambda s: timer.time_graph(*ref_graphs[s])  # noqa: E731
        else:
            time_ref = lambda s: timer.time_call(ref_model, ref_sets[s])  # noqa: E731
        pings = []
        for _ in range(5):
            p0 = time.perf_counter()
            sb.call({"cmd": "ping"}, timeout=30)
            pings.append((time.perf_counter() - p0) * 1e3)
        ping_ms = sorted(pings)[2]
        # What a plain timed call reads with nothing in it (the events, the synchronisation, their
        # host latency): a plain reading less this is the kernel's own time, for the launch_bound flag.
        floor_ms = statistics.median(timer.time_call(_nothing, ())[0] for _ in range(11)) \
            if dev.type == "cuda" and not ref_graphs else None

        base_ms: list[float] = []
        base2_ms: list[float] = []
        cand_ms: list[float] = []
        base_tail: list[float] = []
        cand_tail: list[float] = []
        comp_ms: dict[str, list[float]] = {m: [] for m in compiled}
        wall_ms: list[float] = []
        plain_ms: list[float] = []  # the reported times of the rounds in wall_ms
        started = time.perf_counter()
        math_matters = True
        i = 0
        while True:
            s = i % n_sets
            # Fresh values every round, written into the same buffers (same pointers): a candidate
            # that caches by pointer, shape or value returns a stale answer, which the sampled checks see.
            with self._shared_alloc():
                fresh = draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype, dev)
            _refill(ref_sets[s], fresh)
            reply = sb.call({"cmd": "refresh", "set": s}, timeout=req.run_timeout_s, tensors={"inputs": fresh})
            del fresh
            if not reply.get("ok"):
                self._fail_reply(res, reply)
                return False
            with torch.no_grad(), math_mode(req.baseline_math):
                a, ref_out = time_ref(s)
            if not ref_graphs and timer.last_tail_ms is not None:
                base_tail.append(timer.last_tail_ms)
            # Which outputs are checked is drawn from the OS, where the candidate can't see it: a
            # candidate that replays stale answers on unchecked rounds is caught with probability
            # 1 - (1 - CHECK_FRACTION)^k over k such rounds. The first round is always checked.
            check = i == 0 or self._sysrand.random() < CHECK_FRACTION
            cap = reply_cap(ref_out)
            c0 = sb.cpu_ns() if dev.type == "cpu" else None
            w0 = time.perf_counter()
            reply = sb.call({"cmd": "time", "set": s, "return_output": check, "max_bytes": cap},
                            timeout=req.run_timeout_s)
            wall = (time.perf_counter() - w0) * 1e3
            c1 = sb.cpu_ns() if c0 is not None else None
            # On the CPU a busy host deschedules the sandbox, which lifts its wall clock but not the CPU
            # time the kernel counted for it: the cross-check reads the smaller (threads that overlap
            # lift the CPU time instead, and then the wall clock is the smaller).
            seen = min(wall, (c1 - c0) / 1e6) if c0 is not None and c1 is not None else wall
            if not reply.get("ok"):
                self._fail_reply(res, reply)
                return False
            b = reply.get("ms")
            if not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
                res.status, res.guard, res.error = P.REJECTED, "timer", f"the sandbox reported an impossible time {b!r}"
                return False
            if b > wall + 0.05:
                res.status, res.guard = P.REJECTED, "timer"
                res.error = f"reported {b:.3f} ms for a call the judge saw take {wall:.3f} ms by wall clock"
                return False
            with torch.no_grad(), math_mode(req.baseline_math):
                for m, fn in compiled.items():
                    comp_ms[m].append((timer.time_graph(*comp_graphs[m][s]) if m in comp_graphs
                                       else timer.time_call(fn, ref_sets[s]))[0])
                a2, _ = time_ref(s)
            # The output is checked after the round's timed calls, not between B and A': on an H200
            # (2026-12-03) A' had a slow tail (+10-20 us on up to ~half the rounds; A never), which
            # skewed the A/A of short kernels, and the checked rounds are half the rounds, with the
            # sandbox's output mapped into the judge and released just before A'. (Inferred, not yet
            # confirmed per round: benchmarks/aa_diagnosis.py splits A' by checked rounds.) The sandbox
            # keeps its output alive until the judge's next command. A graph replay of A' rewrote
            # ref_out in place from the same inputs: the same expected output.
            if check:
                expected = ref_out
                if req.baseline_math != "exact" and (i == 0 or math_matters):
                    # The baseline ran in PyTorch's math modes (TF32 convolutions, say); the candidate
                    # is checked against the exact reference, computed again where the modes differ
                    # for this problem (seen on the first round: the two outputs are not identical).
                    with torch.no_grad():
                        expected = ref_model(*ref_sets[s])
                    if i == 0:
                        math_matters = not _identical(expected, ref_out)
                timed_out = self._decode(sb, reply.get("output"), cap, "a timed output")
                try:
                    try:
                        compare(timed_out, expected, atol, rtol, dev.type)
                    except Mismatch as exc:
                        self._arbitrate(exc, ref_model, ref_sets[s], timed_out, expected, atol, rtol, res,
                                        f"timing round {i + 1}")
                except Mismatch as exc:
                    res.status, res.guard = P.INCORRECT, "timed_output"
                    res.error = f"an output checked during timing (fresh inputs, round {i + 1}) was wrong: {exc}"
                    return False
                del timed_out, expected
            del ref_out
            base_ms.append(a)
            base2_ms.append(a2)
            cand_ms.append(float(b))
            tail = reply.get("tail_ms")
            if isinstance(tail, (int, float)) and math.isfinite(tail):
                cand_tail.append(float(tail))
            if not check:  # a checked round also exported its output: its wall time is not comparable
                wall_ms.append(seen)
                plain_ms.append(float(b))
            i += 1
            if i >= req.max_samples or (time.perf_counter() - started) > req.max_timing_s and i >= 3:
                break
            if i >= req.min_samples:
                sa, sb_ = summarise(base_ms + base2_ms), summarise(cand_ms)
                if sa["rel_se"] < req.target_rel_se and sb_["rel_se"] < req.target_rel_se:
                    break
        cand = summarise(cand_ms)
        base = summarise(base_ms + base2_ms)
        # The wall-clock cross-check: time the host saw beyond the IPC round trip must be explained
        # by the reported device time (a patched timer reports far less than really elapsed).
        # (a run whose every round was checked has nothing comparable: the per-call check above stands)
        med_wall = statistics.median(wall_ms) if wall_ms else None
        med_plain = statistics.median(plain_ms) if plain_ms else cand["median_ms"]
        unexplained = med_wall - ping_ms - med_plain if med_wall is not None else 0.0
        cand["wall_median_ms"], cand["ipc_round_trip_ms"] = med_wall, ping_ms
        if med_wall is not None and unexplained > max(WALL_FLOOR_MS, WALL_SLACK_MS + WALL_SLACK_FRACTION * med_plain):
            res.status, res.guard = P.REJECTED, "timer"
            res.error = (f"reported median {med_plain:.3f} ms but the judge saw {med_wall:.3f} ms by wall "
                         f"clock (IPC round trip {ping_ms:.3f} ms): the timer was tampered with or work escaped it")
            return False
        if base_tail and cand_tail:
            extra = statistics.median(cand_tail) - statistics.median(base_tail)
            cand["tail_over_baseline_ms"] = round(extra, 6)
            if extra > max(TAIL_SLACK_MS, TAIL_SLACK_FRACTION * cand["median_ms"]):
                res.status, res.guard = P.REJECTED, "timer"
                res.error = (f"work outlasted the timed region by {extra:.3f} ms more than the baseline's did (median "
                             f"{cand['median_ms']:.3f} ms timed): it ran on a stream the timer did not see")
                return False
        profiled = res.diagnostics.get("profiled_device_ms")
        if isinstance(profiled, float) and not ref_graphs and cand["median_ms"] < PROFILED_FLOOR * profiled:
            res.status, res.guard = P.REJECTED, "timer"
            res.error = (f"timed median {cand['median_ms']:.4f} ms, but the profiler saw the device busy for "
                         f"{profiled:.4f} ms over one call (on every stream): work escaped the timed region")
            return False
        res.timing = cand
        res.baseline_eager = base
        res.aa_ratio = summarise(base_ms)["median_ms"] / summarise(base2_ms)["median_ms"]
        if self.device.type == "cuda" and abs(res.aa_ratio - 1.0) > req.aa_tolerance:  # CPU timings are labelled
            res.flags.append(f"noisy: A/A {res.aa_ratio:.4f} outside 1 +- {req.aa_tolerance:g}")
        res.speedup_vs_eager = base["median_ms"] / cand["median_ms"]
        if compiled:
            res.baseline_compile = {m: summarise(v) for m, v in comp_ms.items()}
            first = res.baseline_compile[req.compile_modes[0]]["median_ms"]
            res.speedup_vs_compile = first / cand["median_ms"]
        names = dict(module.__dict__)
        flops, nbytes = eval_expr(req.flops, names), eval_expr(req.bytes, names)
        res.roofline_floor_ms = roofline_floor_ms(self.info, flops, nbytes, req.dtype)
        if res.roofline_floor_ms:
            res.roofline_fraction = res.roofline_floor_ms / cand["median_ms"]
            if cand["median_ms"] < ROOFLINE_MARGIN * res.roofline_floor_ms:
                res.status, res.guard = P.REJECTED, "roofline"
                res.error = (f"{cand['median_ms']:.4f} ms is below the roofline floor {res.roofline_floor_ms:.4f} ms "
                             f"({nbytes or 0:.3g} bytes, {flops or 0:.3g} FLOPs on {self.info.get('device')}): "
                             "impossible, so the work was not all done inside the timed call")
                return False
        if floor_ms is not None:
            cand["timer_floor_ms"] = floor_ms
            # Its kernels are too short for plain calls to resolve: by the profiler's device time where
            # the profile check ran, else by how little the reading exceeds an empty call's.
            profiled = res.diagnostics.get("profiled_device_ms")
            if (profiled < LAUNCH_BOUND_MS if isinstance(profiled, float)
                    else cand["median_ms"] - floor_ms < LAUNCH_BOUND_MS):
                res.flags.append("launch_bound")
        res.status = P.CORRECT
        return True


_CUDA_KERNEL = (r"__global__\s+(?:(?:__launch_bounds__|__maxnreg__)\s*\([^)]*\)\s*|[\w:<>\*]+\s+|\*\s*)*?"
                r"(?!__launch_bounds__|__maxnreg__)(\w+)\s*\(")
_KERNEL_PATTERNS = {
    "triton": None,  # @triton.jit function names, from the AST
    # __global__ [qualifiers, __launch_bounds__(..) in either order, the return type] name(
    "cuda": re.compile(_CUDA_KERNEL),
    "cutlass": re.compile(_CUDA_KERNEL),
}


def _own_kernel_names(source: str, backend: str) -> set[str]:
    """Names of the kernels the candidate defines (what the profiler should see it launch)."""
    names: set[str] = set()
    if backend == "triton":
        import ast

        try:
            tree = ast.parse(source)
        except SyntaxError:
            return names
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for dec in node.decorator_list:
                    d = dec.func if isinstance(dec, ast.Call) else dec
                    if (isinstance(d, ast.Attribute) and d.attr in ("jit", "autotune", "heuristics")) or \
                            (isinstance(d, ast.Name) and d.id == "jit"):
                        names.add(node.name)
        return names
    pattern = _KERNEL_PATTERNS.get(backend)
    if pattern is not None:
        names.update(pattern.findall(source))
    return names


def _nothing() -> None:
    return None


def _identical(a: Any, b: Any) -> bool:
    xs, ys = flatten_outputs(a), flatten_outputs(b)
    return len(xs) == len(ys) and all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y
        for x, y in zip(xs, ys))


_OOM = re.compile(r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory")


def _out_of_memory(res: P.EvalResult) -> bool:
    """A GPU out-of-memory failure, in the sandbox or in the judge itself."""
    return res.status in (P.RUNTIME_ERROR, P.INFRA_ERROR) and bool(_OOM.search(res.error or ""))


def _refill(buffers: list[Any], fresh: list[Any]) -> None:
    """Fresh values into the same buffers (a captured graph reads them); non-tensor inputs replaced."""
    for k, (dst, src) in enumerate(zip(buffers, fresh)):
        if isinstance(dst, torch.Tensor) and isinstance(src, torch.Tensor) and dst.shape == src.shape:
            dst.copy_(src)
        else:
            buffers[k] = src.clone() if isinstance(src, torch.Tensor) else src


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


def serve() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (problem code, libraries) goes to stderr
    device = os.environ.get("KFORGE_DEVICE", "auto")
    try:
        judge = Judge(device=device)
    except (RuntimeError, ValueError) as exc:  # a transport that fails its self-test, a bad setting
        proto.write(json.dumps({"type": "error", "error": f"the judge could not start: {exc}"}) + "\n")
        return 3
    proto.write(json.dumps({"type": "hello", "info": judge.info, "pid": os.getpid()}) + "\n")
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = P.EvalRequest.from_dict(json.loads(line))
            except Exception as exc:  # noqa: BLE001
                proto.write(json.dumps({"type": "error", "error": f"bad request: {exc}"}) + "\n")
                continue
            result = judge.evaluate(req)
            proto.write(json.dumps({"type": "result", "result": result.to_dict()}) + "\n")
    finally:
        judge.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
