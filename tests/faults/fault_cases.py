"""The fault suite's candidates (``candidates/relu/*.py``) and the verdict each must get.

A fault is a candidate that misbehaves as a process rather than as a kernel: it crashes, hangs,
exhausts memory, returns or prints far too much, or exits. Each entry names its file, the verdict
(status and guard) the judge must reach, a pattern the verdict's error (or log tail) must match so
that it names the fault, and the devices it applies to. ``correct.py`` is the control judged after
each fault by the same judge.

Faults run on the CPU (Triton's interpreter) unless they exist only on a GPU; with
``KFORGE_FAULTS_DEVICE=cuda`` every fault that applies to a GPU runs there (``gpu``-marked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = Path(__file__).parent / "candidates"
RELU = CANDIDATES / "relu"
CONTROL = "correct.py"
FORCED_DEVICE = os.environ.get("KFORGE_FAULTS_DEVICE")  # "cuda": every fault that can, on the GPU
# The CPU sandboxes' memory limit in these tests: well above what a candidate needs, below the
# 12 GiB that memory_hog.py reserves.
TEST_SANDBOX_MEMORY_MB = 6144


@dataclass(frozen=True)
class Fault:
    name: str
    file: str
    status: str
    guards: tuple[str, ...]  # any of these; () for a correct verdict (no guard)
    names: str  # regex over the error and log tail: the verdict names the fault
    devices: tuple[str, ...] = ("cpu", "cuda")
    run_timeout_s: float = 30.0
    compile_timeout_s: float = 60.0
    static_rule: str | None = None  # the static checker's rule, where it rejects the file first

    @property
    def device(self) -> str:
        if FORCED_DEVICE == "cuda":
            return "cuda"
        return "cpu" if "cpu" in self.devices else "cuda"

    @property
    def source(self) -> str:
        return (RELU / self.file).read_text()


FAULTS = (
    Fault("segfault", "segfault_ctypes.py", "runtime_error", ("crash",), r"killed by signal SIGSEGV",
          static_rule="no-ctypes"),
    Fault("segfault_in_kernel", "oob_write.py", "runtime_error", ("crash",), r"killed by signal SIGSEGV",
          devices=("cpu",)),
    # A CUDA error surfaces as an exception at the next synchronisation, or, where the runtime
    # aborts instead, as a crash whose log tail carries CUDA's message.
    Fault("illegal_memory_access", "oob_write.py", "runtime_error", ("exception", "crash"),
          r"illegal memory access|illegal address", devices=("cuda",)),
    Fault("infinite_loop_in_forward", "loop_forward.py", "timeout", ("timeout",), r"no answer within \d+ s",
          run_timeout_s=3.0),
    Fault("infinite_loop_at_import", "loop_import.py", "timeout", ("timeout",),
          r"while loading the candidate: no answer within \d+ s", compile_timeout_s=5.0),
    Fault("out_of_memory", "oom.py", "runtime_error", ("exception",), r"can't allocate memory|not enough memory",
          devices=("cpu",)),
    # On a GPU the judge attributes an out-of-memory failure (docs/evaluation.md, "Memory"): a 16 TiB
    # request is far over what the problem allows, so the candidate's, with the guard "memory".
    Fault("cuda_out_of_memory", "oom.py", "runtime_error", ("memory",),
          r"ran out of GPU memory asking for .*OutOfMemoryError",
          devices=("cuda",)),
    Fault("memory_limit", "memory_hog.py", "runtime_error", ("init",),
          r"(can't allocate memory|not enough memory).*12884901888 bytes", devices=("cpu",)),
    Fault("huge_output", "huge_output.py", "incorrect", ("output_size",),
          r"declare 2,147,483,648 bytes.*refused unread"),
    Fault("huge_output_view", "huge_output_view.py", "incorrect", ("output_size",), r"refused unread"),
    Fault("stdout_flood", "stdout_flood.py", "correct", (), r"end of flood \d+"),  # the tail is the end
    Fault("os_exit_0", "os_exit_0.py", "runtime_error", ("crash",), r"exited with code 0\b",
          static_rule="no-process-control"),
    Fault("os_exit_1", "os_exit_1.py", "runtime_error", ("crash",), r"exited with code 1\b",
          static_rule="no-process-control"),
)


def fault_params() -> list[Any]:
    """One pytest param per fault on the device it runs on here; gpu-marked where that is CUDA."""
    params = []
    for fault in FAULTS:
        if FORCED_DEVICE == "cuda" and "cuda" not in fault.devices:
            continue  # a CPU-only fault (the sandbox memory limit, the interpreter's segfault)
        marks = [pytest.mark.gpu] if fault.device == "cuda" else []
        params.append(pytest.param(fault, id=fault.name, marks=marks))
    return params


def cpu_verdicts() -> dict[str, tuple[str, str | None]]:
    """What ``kforge run`` on the CPU records for each file: the static rejection, else the CPU verdict."""
    verdicts: dict[str, tuple[str, str | None]] = {CONTROL: ("correct", None)}
    for fault in FAULTS:
        if "cpu" not in fault.devices:
            continue
        if fault.static_rule:
            verdicts[fault.file] = ("rejected", fault.static_rule)
        else:
            verdicts[fault.file] = (fault.status, fault.guards[0] if fault.guards else None)
    return verdicts
