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
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from kforge.runtime import protocol as P
from kforge.runtime import wire
from kforge.runtime.correctness import Correctness
from kforge.runtime.device import EXACT_MATH, HARNESS_VERSION, DeviceLock, _set_math, cuda_arch, device_info  # noqa: F401
from kforge.runtime.guards import _KERNEL_PATTERNS, Guards, _own_kernel_names  # noqa: F401
from kforge.runtime.memory import CANDIDATE_MEMORY_FACTOR, MemoryPlanning, _out_of_memory
from kforge.runtime.problem import DEFAULT_TOLERANCE, clone_inputs, digest, load_problem_module
from kforge.runtime.sandbox_client import (  # noqa: F401 - the judge's public names, as before the split
    _COMPILE_EXC,
    OUTPUT_FLOOR_BYTES,
    OUTPUT_SLACK,
    SANDBOX_MEMORY_ENV,
    SPARES_ENV,
    OutputTooLarge,
    Sandbox,
    SandboxDied,
    SandboxProtocolError,
    SandboxTimeout,
    _excerpt,
    _machine_memory,
    reply_cap,
    sandbox_memory_limit,
)
from kforge.runtime.timed import GRAPH_PROBE_ROUNDS, GRAPH_PROBE_SPAN, Timing  # noqa: F401
from kforge.runtime.wire import PayloadTooLarge, dtype_from_name

# The reference models a judge keeps between candidates (Judge._reference): how many, and their
# parameters and buffers in all.
REFERENCE_CACHE = 4
REFERENCE_CACHE_BYTES = 2 << 30


def _state(model: Any) -> list[Any]:
    """A model's tensors: parameters, buffers and plain tensor attributes of every submodule."""
    plain = [v for m in model.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)]
    return [*model.parameters(), *model.buffers(), *plain]


def _state_fingerprint(model: Any, key: int) -> tuple[list[Any], list[Any]]:
    """The model's tensors themselves (a forward that rebinds an attribute changes which they are) and a
    keyed digest of their bytes (any write: in place, through ``.data``, or by another process through
    shared memory). Raises for tensors that can't be read this way (lazy parameters, say)."""
    tensors = _state(model)
    return tensors, digest(tensors, key)


def _same_state(model: Any, kept: tuple[list[Any], list[Any]], key: int) -> bool:
    tensors = _state(model)
    return len(tensors) == len(kept[0]) and all(a is b for a, b in zip(tensors, kept[0])) \
        and digest(tensors, key) == kept[1]


def _state_bytes(model: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _state(model))


def _on_gpu(values: list[Any]) -> bool:
    return any(isinstance(v, torch.Tensor) and v.device.type == "cuda" for v in values)


class ReferenceFailed(Exception):
    """Loading the problem, building its reference or its first forward raised: the problem's fault."""


class Judge(MemoryPlanning, Correctness, Guards, Timing):
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
        self._references: collections.OrderedDict[tuple[Any, ...], tuple[Any, ...]] = collections.OrderedDict()
        self._state_key = self._sysrand.getrandbits(62)  # the kept models' digests: never leaves the judge
        self._mutating: set[tuple[Any, ...]] = set()  # problems whose reference writes its inputs
        self._plan: dict[str, Any] = {}  # the current evaluation's plan
        self._timing_waited = 0.0  # the current evaluation's wait to time
        self._peak_floor: int = 0
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
            self._references.clear()  # the kept reference models' memory too, back to the driver
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            res = self._evaluate_once(req, alone=True, lean=True)
            res.flags.append(f"oom_retried_alone (first: {first.status}, {(first.error or '')[:120]})")
            res.durations_s["total"] = round(res.durations_s.get("total", 0.0) + first.durations_s.get("total", 0.0),
                                             4)
            waits = res.durations_s.get("lock_wait", 0.0) + first.durations_s.get("lock_wait", 0.0)
            if waits:
                res.durations_s["lock_wait"] = round(waits, 4)
            if _out_of_memory(res) and not self._candidate_oom(res):
                res.status, res.guard = P.INFRA_ERROR, "memory"
                res.error = ("out of GPU memory although the candidate asked for no more than "
                             f"{CANDIDATE_MEMORY_FACTOR}x the problem's working set: the GPU is too small for this "
                             f"problem under the judge's leanest plan, or another process holds its memory "
                             f"(an infrastructure failure, not the candidate's): {(res.error or '')[:300]}")
        elif _out_of_memory(res):
            res.guard = "memory"
        return res

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
        waited = self.lock.waited_s
        self._timing_waited = 0.0
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
        except ReferenceFailed as exc:
            res.status, res.guard = P.INFRA_ERROR, "reference"
            res.error = (f"the problem's reference failed before any candidate code ran ({exc}): fix the problem "
                         "file (Model, get_inputs, get_init_inputs)")[:4000]
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
            # Time spent waiting for the GPU lock other than to time (timing_wait): in the shared steps
            # (reference, load, each trial and check) or, judged alone, for the whole evaluation. The
            # phases' durations include it.
            shared_wait = self.lock.waited_s - waited - self._timing_waited
            if shared_wait > 0.001:
                res.durations_s["lock_wait"] = round(shared_wait, 4)
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

    def _reference(self, req: P.EvalRequest, shape: dict[str, Any], cache: bool = True) -> tuple[Any, Any, list[Any]]:
        """The problem module at ``shape``, its reference model and its init inputs (trusted code).

        Kept for the next candidates of the same problem, shape, dtype and init seed (the judge's
        search or RL loop sends many in a row): loading the module, building the model and moving its
        weights to the GPU, under the GPU lock, for every candidate is waste where a model is costly to
        build (KernelBench level 3; the built-in problems' take ~0.01 s). A kept model is used again
        only while its tensors are the same objects with the same bytes (a keyed digest, taken when it
        was built and checked at each use): a reference whose forward updates its own state, or whose
        weights anything else wrote, is built afresh, as it was for every candidate before. Not kept:
        a model whose init inputs are on the GPU (a sandbox is sent those), one whose tensors can't be
        digested, and past REFERENCE_CACHE models or REFERENCE_CACHE_BYTES in all. The candidate's
        sandbox never gets the kept init inputs, only clones (``_shareable``)."""
        key = (*self._problem_key(req, shape), req.init_seed)
        if cache:
            hit = self._references.get(key)
            if hit is not None:
                try:
                    same = _same_state(hit[1], hit[3], self._state_key)
                except Exception:  # noqa: BLE001 - unreadable now: build afresh
                    same = False
                if same:
                    self._references.move_to_end(key)
                    return hit[0], hit[1], clone_inputs(hit[2])
                del self._references[key]
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
        if cache and isinstance(ref_model, torch.nn.Module) and not _on_gpu(init_inputs):
            try:
                size = _state_bytes(ref_model)
                kept = _state_fingerprint(ref_model, self._state_key) if size <= REFERENCE_CACHE_BYTES else None
            except Exception:  # noqa: BLE001 - e.g. inference-mode or lazy tensors: simply not kept
                kept = None
            if kept is not None:
                self._references[key] = (module, ref_model, clone_inputs(init_inputs), kept, size)
                while len(self._references) > REFERENCE_CACHE or \
                        sum(v[4] for v in self._references.values()) > REFERENCE_CACHE_BYTES:
                    self._references.popitem(last=False)
        return module, ref_model, init_inputs

    def _shareable(self, values: list[Any]) -> list[Any]:
        """What a sandbox may be sent of the init inputs: GPU tensors cloned into the shared pool (CUDA
        IPC maps a tensor's whole allocation, which in the judge's own pool can hold a reference's
        weights), everything else as it is."""
        if not _on_gpu(values):
            return values
        with self._shared_alloc():
            return [v.clone() if isinstance(v, torch.Tensor) and v.device.type == "cuda" else v for v in values]

    def _fail_reply(self, res: P.EvalResult, reply: dict[str, Any], default_guard: str = "exception") -> None:
        exc_type = str(reply.get("exc_type", ""))
        compile_like = reply.get("phase") == "import" or any(exc_type.endswith(n) for n in _COMPILE_EXC)
        res.status = P.COMPILE_ERROR if compile_like else P.RUNTIME_ERROR
        res.guard = "compile" if compile_like else default_guard
        res.error = _excerpt(reply)

    def _evaluate(self, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, alone: bool = False,
                  lean: bool = False) -> None:
        t0 = time.perf_counter()
        with self.lock.hold(exclusive=False):  # the reference's weights go to the GPU
            try:
                module, ref_model, init_inputs = self._reference(req, req.shape)
                self._plan = self._memory_plan(req, module, ref_model, alone, lean)
            except torch.OutOfMemoryError:
                raise  # the GPU can't hold the problem under this plan: the out-of-memory path decides
            except Exception as exc:  # noqa: BLE001 - before any candidate code ran: the problem's own fault
                raise ReferenceFailed(f"{type(exc).__name__}: {exc}") from exc
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
                            timeout=req.compile_timeout_s, tensors={"init": self._shareable(init_inputs)})
        res.durations_s["compile"] = round(time.perf_counter() - t0, 4)
        if not reply.get("ok"):
            self._fail_reply(res, reply, "init")
            return
        res.error = None

        # -- correctness, then the op and profiler checks: GPU work that may overlap another judge's.
        # Each trial and each check takes the shared lock on its own, so a judge waiting to time waits
        # for one trial of another judge's, not for its whole correctness phase.
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
            self._timing_waited = t1 - t0
            if t1 - t0 > 0.001:
                res.durations_s["timing_wait"] = round(t1 - t0, 4)
            if self._time(req, res, sb, module, ref_model, atol, rtol) and (res.speedup_vs_eager or 0) > 10:
                # An extraordinary claim: measure again with fresh inputs before it counts.
                first = res.speedup_vs_eager
                if self._time(req, res, sb, module, ref_model, atol, rtol):
                    res.flags.append(f"remeasured_gt10x (first {first:.2f}x)")
        res.durations_s["timing"] = round(time.perf_counter() - t1, 4)

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
            if req.ops_check:
                with self.lock.hold(exclusive=False):
                    if not self._ops_check(req, res, sb, module, ref_model):
                        return False
            # -- the profiler: did the candidate launch a kernel of its own? ---------------------
            if self.device.type == "cuda" and req.profile_check and req.backend in _KERNEL_PATTERNS:
                with self.lock.hold(exclusive=False):
                    if not self._profile_check(req, res, sb, module):
                        return False
            return True
        finally:
            res.durations_s["checks"] = round(time.perf_counter() - t0, 4)


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
