"""The sandbox: a child process that imports one untrusted candidate and runs it on request.

It holds no reference outputs, no seeds and no statistics. It answers the judge's commands with raw
data only (outputs, elapsed times), which the judge checks. Start it with
``python -m kforge.runtime.sandbox READ_FD WRITE_FD PAYLOAD_DIR DEVICE [DATA_LIMIT_BYTES [GPU_LOCK_FILE
[TRANSPORT]]]``, TRANSPORT being ``cuda_ipc`` (the default) or ``host`` (``kforge.runtime.wire``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import traceback
from typing import Any


def _error(phase: str, exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"ok": False, "phase": phase, "exc_type": f"{type(exc).__module__}.{type(exc).__name__}",
            "error": f"{type(exc).__name__}: {exc}"[:4000], "traceback": tb[-8000:]}


def _exit_with_parent() -> None:
    """Die when the judge dies, even if the candidate is stuck in a loop: no orphaned hangs."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, daemon=True).start()


def _limit_data(nbytes: int) -> None:
    """Let the candidate allocate at most ``nbytes`` of data (RLIMIT_DATA: heap and private anonymous
    mappings) beyond what this process already holds (torch and the runtime, whose size varies with
    the build).

    Soft and hard alike, set before any candidate code runs: the candidate can't raise it again, and
    an allocation past it fails in here (torch raises) instead of taking the machine's memory."""
    import resource

    try:
        held = next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmData:"))
    except (OSError, StopIteration, ValueError):
        held = 0
    nbytes += held
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        nbytes = min(nbytes, hard)  # never ask for more than we are allowed: that would fail
    resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))


def _construct(cls: Any, init: Any, seed: int, device: Any, dtype: Any) -> Any:
    import torch

    torch.manual_seed(seed)
    model = cls(*init)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
        if dtype != torch.float32:
            model = model.to(dtype)
        model.eval()
    if torch.device(device).type == "cuda":
        # Finished before the answer: the judge holds the GPU lock for this step, and work still
        # queued after it lets go would overlap another judge's timing.
        torch.cuda.synchronize(device)
    return model


class _poisoned_empty:
    """torch.empty* returns memory filled with NaN / the largest integer while this is active."""

    def __enter__(self) -> None:
        import torch
        import torch.utils.deterministic as det

        self._prev = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(), getattr(det, "fill_uninitialized_memory"))  # noqa: B009
        torch.use_deterministic_algorithms(True, warn_only=True)
        setattr(det, "fill_uninitialized_memory", True)  # noqa: B010 - a module property torch's stubs lack

    def __exit__(self, *exc: Any) -> None:
        import torch
        import torch.utils.deterministic as det

        enabled, warn_only, fill = self._prev
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        setattr(det, "fill_uninitialized_memory", fill)  # noqa: B010


class _gpu_lock:
    """The judges' lock file for this GPU (``kforge.runtime.gpulock``), held shared for the block;
    nothing without a path. Released and closed before any candidate code runs."""

    def __init__(self, path: str) -> None:
        self.path, self.fds = path, (-1, -1)

    def __enter__(self) -> None:
        if self.path:
            from kforge.runtime import gpulock

            self.fds = gpulock.open_lock(self.path)
            gpulock.acquire(*self.fds, exclusive=False)

    def __exit__(self, *exc: Any) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)  # closing the only descriptor releases the lock
        self.fds = (-1, -1)


def _import_triton() -> None:
    """Importing Triton (seconds of host work) before the sandbox says it is ready: a spare sandbox
    starts while the previous candidate is judged, so this is off the critical path."""
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - a CUDA-only install: the candidate's own import will say
        pass


def _warm_up_profiler(device: Any) -> None:
    """The profiler's first session (CUPTI's start-up), which the profiler check would otherwise pay
    in the middle of judging: GPU work, so done under the lock."""
    import torch

    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]):
            torch.ones(1, device=device).add_(1)
            torch.cuda.synchronize(device)
    except Exception:  # noqa: BLE001 - the profiler check reports an unusable profiler itself
        pass


def _on_device(evt: Any) -> bool:
    return "CUDA" in str(getattr(evt, "device_type", ""))


def device_busy_ms(events: Any) -> float | None:
    """How long the device was busy over the profiled events: the union of the device events' time
    ranges (kernels, copies, memsets; overlapping streams counted once), in ms. None if none has one."""
    spans = []
    for evt in events:
        rng = getattr(evt, "time_range", None)
        if _on_device(evt) and rng is not None and rng.end > rng.start:
            spans.append((float(rng.start), float(rng.end)))
    if not spans:
        return None
    spans.sort()
    busy, (lo, hi) = 0.0, spans[0]
    for a, b in spans[1:]:
        if a > hi:
            busy, lo, hi = busy + (hi - lo), a, b
        else:
            hi = max(hi, b)
    return (busy + hi - lo) / 1e3  # the profiler's time ranges are in microseconds


def main(argv: list[str]) -> int:
    read_fd, write_fd, payload_dir, device_name = int(argv[0]), int(argv[1]), argv[2], argv[3]
    data_limit = int(argv[4]) if len(argv) > 4 else 0
    lock_path = argv[5] if len(argv) > 5 else ""
    transport = argv[6] if len(argv) > 6 else "cuda_ipc"
    sys.dont_write_bytecode = True
    import torch

    from kforge.runtime.timing import Timer, capture_graph
    from kforge.runtime.wire import Channel, dtype_from_name

    _exit_with_parent()
    if data_limit > 0:
        _limit_data(data_limit)
    chan = Channel(read_fd, write_fd, payload_dir, cuda_ipc=transport != "host")
    device = torch.device(device_name)
    # Starting on the GPU (a CUDA context, the profiler's start-up) is GPU work of kforge's: under the
    # judges' per-GPU lock, taken shared, so it never overlaps another candidate's timing. A spare
    # sandbox starts while the previous candidate is judged, timing included.
    if device.type == "cuda":
        _import_triton()  # host work only: outside the lock
    # Two holds, not one: a judge waiting to time waits for one of the two start-up steps, not both.
    with _gpu_lock(lock_path):
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.empty(1, device=device)  # create the context now, not inside a timed call
    if device.type == "cuda":
        with _gpu_lock(lock_path):
            _warm_up_profiler(device)
    chan.send({"type": "ready", "pid": os.getpid(), "device": str(device)})

    model = None
    cls: Any = None
    dtype = torch.float32
    timer: Timer | None = None
    time_sets: list[Any] = []
    graphs: list[tuple[Any, Any]] = []  # (graph, static output) per timing set, when timing by graph replay
    while True:
        try:
            msg = chan.recv()
        except (EOFError, OSError):
            return 0
        chan.release()  # the judge has copied what we shared with it by handle
        cmd = msg.get("cmd")
        t_cmd = time.perf_counter()

        def answer(reply: dict[str, Any], started: float = t_cmd) -> None:
            # How long this command kept the sandbox busy: the judge's breakdown of where time goes
            # (diagnostic only; the judge never decides anything by it).
            reply["busy_s"] = round(time.perf_counter() - started, 6)
            if device.type == "cuda":
                reply["peak_bytes"] = int(torch.cuda.max_memory_reserved(device))
            chan.send(reply)

        try:
            if cmd == "exit":
                return 0
            if cmd == "ping":
                answer({"ok": True})
            elif cmd == "echo":  # the judge's transport self-test: tensors in, 2x+1 of each back
                got = chan.decode(msg["inputs"], device)
                back = [t * 2 + 1 for t in got]
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                answer({"ok": True, "outputs": chan.encode(back),
                        "devices": [str(t.device) for t in got]})
                del got, back
            elif cmd == "load":
                # Where the compile stage left this candidate's build (and the arch it built for):
                # set before the import so load_inline finds its extension already built.
                os.environ.update({str(k): str(v) for k, v in (msg.get("env") or {}).items()})
                try:
                    spec = importlib.util.spec_from_file_location(msg["module_name"], msg["candidate_file"])
                    assert spec is not None and spec.loader is not None
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[msg["module_name"]] = module
                    spec.loader.exec_module(module)
                except BaseException as exc:  # noqa: BLE001 - any failure to import is the candidate's
                    answer(_error("import", exc))
                    continue
                try:
                    cls = module.ModelNew
                    dtype = dtype_from_name(msg.get("dtype", "float32"))
                    model = _construct(cls, chan.decode(msg["init"]), int(msg["init_seed"]), device, dtype)
                except BaseException as exc:  # noqa: BLE001
                    answer(_error("init", exc))
                    continue
                timer = Timer(device, flush_l2=bool(msg.get("flush_l2", True)))
                answer({"ok": True})
            elif cmd == "construct":  # the same candidate at another shape (held-out shapes)
                try:
                    model = None
                    model = _construct(cls, chan.decode(msg["init"]), int(msg["init_seed"]), device, dtype)
                except BaseException as exc:  # noqa: BLE001
                    answer(_error("init", exc))
                    continue
                answer({"ok": True})
            elif cmd == "ops":  # which aten ops forward runs (the judge compares with the reference's)
                assert model is not None
                from kforge.runtime.problem import compute_ops

                inputs = chan.decode(msg["inputs"], device)
                ops = compute_ops(model, inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                del inputs
                answer({"ok": True, "ops": sorted(ops)[:500]})
            elif cmd == "profile":
                assert model is not None
                inputs = chan.decode(msg["inputs"], device)
                try:
                    from torch.profiler import ProfilerActivity, profile
                except Exception as exc:  # noqa: BLE001
                    answer(_error("profiler", exc))
                    continue
                with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
                    out = model(*inputs)
                    torch.cuda.synchronize(device)
                events = prof.events()
                names = sorted({evt.name for evt in events if _on_device(evt)})
                del out, inputs
                answer({"ok": True, "kernels": names[:200], "device_ms": device_busy_ms(events)})
            elif cmd == "run":
                assert model is not None, "load first"
                inputs = chan.decode(msg["inputs"], device)
                for nbytes in msg.get("poison", []):
                    # Fill memory the allocator will hand out next with NaN bytes, so an output the
                    # candidate never writes cannot hold anything that looks right.
                    torch.empty(int(nbytes), dtype=torch.uint8, device=device).fill_(0xFF)
                # And whatever the allocator does: every torch.empty* the candidate makes during a
                # correctness run comes filled with NaN (floats) or the largest integer.
                with torch.no_grad(), _poisoned_empty():
                    out = model(*inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                # Past the judge's cap an output goes back as a header only: no 2 GB file, no copy.
                cap = msg.get("max_bytes")
                reply: dict[str, Any] = {"ok": True, "outputs": chan.encode(out, max_bytes=cap)}
                if msg.get("return_inputs"):
                    reply["inputs_after"] = chan.encode(inputs, max_bytes=cap)
                answer(reply)
                del out, inputs
            elif cmd == "time_setup":
                graphs = []
                time_sets = chan.decode(msg["sets"], device)
                answer({"ok": True})
            elif cmd == "graph_setup":  # short kernels: time replays of one captured graph per set
                assert model is not None
                try:
                    graphs = [capture_graph(model, args, device) for args in time_sets]
                except BaseException as exc:  # noqa: BLE001 - not capturable: the judge times plain calls
                    graphs = []
                    answer({"ok": True, "graph": False, "error": f"{type(exc).__name__}: {exc}"[:500]})
                    continue
                answer({"ok": True, "graph": True})
            elif cmd == "refresh":
                fresh = chan.decode(msg["inputs"], device)
                for dst, src in zip(time_sets[int(msg["set"])], fresh):
                    if isinstance(dst, torch.Tensor):
                        dst.copy_(src)  # same buffers, new values
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                del fresh
                answer({"ok": True})
            elif cmd == "time":
                assert model is not None and timer is not None
                s = int(msg["set"])
                with torch.no_grad():
                    ms, out = timer.time_graph(*graphs[s]) if graphs else timer.time_call(model, time_sets[s])
                reply = {"ok": True, "ms": ms}
                if not graphs and timer.last_tail_ms is not None:
                    reply["tail_ms"] = timer.last_tail_ms
                if msg.get("return_output"):
                    if graphs:  # the graph's static output: a plain copy, outside its private pool
                        out = [o.clone() if isinstance(o, torch.Tensor) else o for o in out] \
                            if isinstance(out, (list, tuple)) else out.clone() if isinstance(out, torch.Tensor) else out
                    reply["output"] = chan.encode(out, max_bytes=msg.get("max_bytes"))
                answer(reply)
                del out
            else:
                answer({"ok": False, "phase": "protocol", "error": f"unknown command {cmd!r}"})
        except BaseException as exc:  # noqa: BLE001 - report, keep serving; the judge decides
            try:
                answer(_error(str(cmd), exc))
            except Exception:
                return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
