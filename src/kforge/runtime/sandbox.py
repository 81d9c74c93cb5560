"""The sandbox: a child process that imports one untrusted candidate and runs it on request.

It holds no reference outputs, no seeds and no statistics. It answers the judge's commands with raw
data only (outputs, elapsed times), which the judge checks. Start it with
``python -m kforge.runtime.sandbox READ_FD WRITE_FD PAYLOAD_DIR DEVICE [DATA_LIMIT_BYTES]``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
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
    return model


class _poisoned_empty:
    """torch.empty* returns memory filled with NaN / the largest integer while this is active."""

    def __enter__(self) -> None:
        import torch
        import torch.utils.deterministic as det

        self._prev = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(), det.fill_uninitialized_memory)
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = True

    def __exit__(self, *exc: Any) -> None:
        import torch
        import torch.utils.deterministic as det

        enabled, warn_only, fill = self._prev
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        det.fill_uninitialized_memory = fill


def _on_device(evt: Any) -> bool:
    return "CUDA" in str(getattr(evt, "device_type", ""))


def main(argv: list[str]) -> int:
    read_fd, write_fd, payload_dir, device_name = int(argv[0]), int(argv[1]), argv[2], argv[3]
    data_limit = int(argv[4]) if len(argv) > 4 else 0
    sys.dont_write_bytecode = True
    import torch

    from kforge.runtime.timing import Timer
    from kforge.runtime.wire import Channel, dtype_from_name

    _exit_with_parent()
    if data_limit > 0:
        _limit_data(data_limit)
    chan = Channel(read_fd, write_fd, payload_dir)
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.empty(1, device=device)  # create the context now, not inside a timed call
    chan.send({"type": "ready", "pid": os.getpid(), "device": str(device)})

    model = None
    cls: Any = None
    dtype = torch.float32
    timer: Timer | None = None
    time_sets: list[Any] = []
    while True:
        try:
            msg = chan.recv()
        except (EOFError, OSError):
            return 0
        chan.release()  # the judge has copied what we shared with it by handle
        cmd = msg.get("cmd")
        try:
            if cmd == "exit":
                return 0
            if cmd == "ping":
                chan.send({"ok": True})
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
                    chan.send(_error("import", exc))
                    continue
                try:
                    cls = module.ModelNew
                    dtype = dtype_from_name(msg.get("dtype", "float32"))
                    model = _construct(cls, chan.decode(msg["init"]), int(msg["init_seed"]), device, dtype)
                except BaseException as exc:  # noqa: BLE001
                    chan.send(_error("init", exc))
                    continue
                timer = Timer(device, flush_l2=bool(msg.get("flush_l2", True)))
                chan.send({"ok": True})
            elif cmd == "construct":  # the same candidate at another shape (held-out shapes)
                try:
                    model = None
                    model = _construct(cls, chan.decode(msg["init"]), int(msg["init_seed"]), device, dtype)
                except BaseException as exc:  # noqa: BLE001
                    chan.send(_error("init", exc))
                    continue
                chan.send({"ok": True})
            elif cmd == "ops":  # which aten ops forward runs (the judge compares with the reference's)
                assert model is not None
                from kforge.runtime.problem import compute_ops

                inputs = chan.decode(msg["inputs"], device)
                ops = compute_ops(model, inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                del inputs
                chan.send({"ok": True, "ops": sorted(ops)[:500]})
            elif cmd == "profile":
                assert model is not None
                inputs = chan.decode(msg["inputs"], device)
                try:
                    from torch.profiler import ProfilerActivity, profile
                except Exception as exc:  # noqa: BLE001
                    chan.send(_error("profiler", exc))
                    continue
                with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
                    out = model(*inputs)
                    torch.cuda.synchronize(device)
                names = sorted({evt.name for evt in prof.events() if _on_device(evt)})
                del out, inputs
                chan.send({"ok": True, "kernels": names[:200]})
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
                chan.send(reply)
                del out, inputs
            elif cmd == "time_setup":
                time_sets = chan.decode(msg["sets"], device)
                chan.send({"ok": True})
            elif cmd == "refresh":
                fresh = chan.decode(msg["inputs"], device)
                for dst, src in zip(time_sets[int(msg["set"])], fresh):
                    if isinstance(dst, torch.Tensor):
                        dst.copy_(src)  # same buffers, new values
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                del fresh
                chan.send({"ok": True})
            elif cmd == "time":
                assert model is not None and timer is not None
                args = time_sets[int(msg["set"])]
                with torch.no_grad():
                    ms, out = timer.time_call(model, args)
                reply = {"ok": True, "ms": ms}
                if msg.get("return_output"):
                    reply["output"] = chan.encode(out, max_bytes=msg.get("max_bytes"))
                chan.send(reply)
                del out
            else:
                chan.send({"ok": False, "phase": "protocol", "error": f"unknown command {cmd!r}"})
        except BaseException as exc:  # noqa: BLE001 - report, keep serving; the judge decides
            try:
                chan.send(_error(str(cmd), exc))
            except Exception:
                return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
