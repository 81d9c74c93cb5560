"""The device a judge runs on: what it is (recorded with every result), its lock shared by the judges
of one GPU, and the math modes of the timed baselines."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kforge.runtime import gpulock

HARNESS_VERSION = "kforge-judge/1"
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
        self.device = device
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
            try:
                if self.device.type == "cuda":
                    # the judge's own GPU work of this step is done before another judge may time
                    torch.cuda.synchronize(self.device)
            except Exception:  # noqa: BLE001 - a broken context fails the judge's next GPU call anyway
                pass
            finally:
                gpulock.release(self.fd)
