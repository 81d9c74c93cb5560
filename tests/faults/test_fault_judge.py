"""Faults against one long-lived judge: each gets the verdict that names it, the judge process
survives it with its memory bounded, and the next candidate the same judge judges, a correct one,
passes.

The judge is the real one: a ``python -m kforge.runtime.judge`` process started by the local
executor (one worker), each candidate in its own sandbox process, on the CPU with Triton's
interpreter (a GPU for ``gpu``-marked faults, or for all with ``KFORGE_FAULTS_DEVICE=cuda``). The
candidates skip the static checks, which would reject some of them before anything ran: the point
is that the runtime survives them. ``test_fault_run.py`` runs the same files through ``kforge run``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_cases import CONTROL, RELU, TEST_SANDBOX_MEMORY_MB, Fault, fault_params

SHAPE = {"batch_size": 16, "dim": 65}  # the interpreter runs each call in milliseconds
# How much the judge's peak memory may grow while it judges a fault: what it holds for a candidate
# is the reference's inputs and outputs (kilobytes here), never the candidate's output or log.
JUDGE_MEMORY_SLACK = 256 << 20

_ids = itertools.count()


def _request(source: str, device: str, **timeouts: float) -> Any:
    from kforge.problems import builtin_problems
    from kforge.runtime import protocol as P

    problem = {p.id: p for p in builtin_problems()}["relu"]
    return P.EvalRequest(
        request_id=f"fault-{next(_ids)}", problem_id=problem.id, problem_source=problem.source,
        candidate_source=source, shape={**problem.shape("small"), **SHAPE}, dtype=problem.dtype,
        trials=5, warmup=1, min_samples=0, **{"run_timeout_s": 30.0, "compile_timeout_s": 60.0, **timeouts})


def _proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class JudgeUnderTest:
    """The local executor with one judge process on ``device``, driven from its own event loop."""

    def __init__(self, device: str, log_dir: Path) -> None:
        from kforge.executors.local import LocalExecutor, visible_gpus

        self.device = device
        gpus = visible_gpus()[:1] if device == "cuda" else None  # one judge, on the first visible GPU
        # The judge process reads its sandboxes' memory limit from the environment it starts with.
        saved = os.environ.get("KFORGE_SANDBOX_MEMORY_MB")
        os.environ["KFORGE_SANDBOX_MEMORY_MB"] = str(TEST_SANDBOX_MEMORY_MB)
        self.executor = LocalExecutor(device=device, gpus=gpus, workers=1, judges_per_gpu=1, compile_workers=0)
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self.executor.start(log_dir))
        finally:
            if saved is None:
                os.environ.pop("KFORGE_SANDBOX_MEMORY_MB", None)
            else:
                os.environ["KFORGE_SANDBOX_MEMORY_MB"] = saved
        assert len(self.executor.workers) == 1

    @property
    def pid(self) -> int:
        proc = self.executor.workers[0].proc
        assert proc is not None and proc.returncode is None, "the judge process is not running"
        return proc.pid

    def evaluate(self, source: str, **timeouts: float) -> Any:
        return self.loop.run_until_complete(self.executor.evaluate(_request(source, self.device, **timeouts)))

    def reset_peak_memory(self) -> int:
        """Reset the judge process's peak resident memory (VmHWM) to now; its resident memory, bytes."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:  # a kernel without the reset: the peak so far is the baseline
            return _proc_status_kb(self.pid, "VmHWM") << 10
        return _proc_status_kb(self.pid, "VmRSS") << 10

    def peak_memory(self) -> int:
        return _proc_status_kb(self.pid, "VmHWM") << 10

    def close(self) -> None:
        self.loop.run_until_complete(self.executor.shutdown())
        self.loop.close()


@pytest.fixture(scope="module")
def judge_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], JudgeUnderTest]]:
    judges: dict[str, JudgeUnderTest] = {}

    def get(device: str) -> JudgeUnderTest:
        if device not in judges:
            judge = JudgeUnderTest(device, tmp_path_factory.mktemp(f"judge-{device}"))
            judges[device] = judge
            # Warm: the first evaluation loads what every later one reuses (kernels, libraries), so
            # memory measured around a fault is the fault's.
            first = judge.evaluate((RELU / CONTROL).read_text())
            assert first.status == "correct", f"the control fails before any fault: {first.error}"
        return judges[device]

    yield get
    for judge in judges.values():
        judge.close()


def _verdict(result: Any) -> str:
    return f"{result.status} {result.guard}: {result.error}\n--- log tail ---\n{result.log_tail}"


@pytest.mark.parametrize("fault", fault_params())
def test_fault_verdict_then_the_same_judge_passes_a_correct_candidate(
        fault: Fault, judge_on: Callable[[str], JudgeUnderTest]) -> None:
    judge = judge_on(fault.device)
    pid = judge.pid
    baseline = judge.reset_peak_memory()

    result = judge.evaluate(fault.source, run_timeout_s=fault.run_timeout_s,
                            compile_timeout_s=fault.compile_timeout_s)

    assert result.status == fault.status, f"{fault.name}: {_verdict(result)}"
    if fault.guards:
        assert result.guard in fault.guards, f"{fault.name}: {_verdict(result)}"
    else:
        assert result.guard is None, f"{fault.name}: {_verdict(result)}"
    named = f"{result.error or ''}\n{result.log_tail or ''}"
    assert re.search(fault.names, named, re.S), f"{fault.name}: the verdict does not name the fault: {_verdict(result)}"
    assert result.device_kind == fault.device

    # The judge process lived through it, and held none of what the candidate made or printed.
    assert judge.pid == pid, f"{fault.name}: the judge process was replaced"
    grew = judge.peak_memory() - baseline
    assert grew < JUDGE_MEMORY_SLACK, f"{fault.name}: the judge's peak memory grew by {grew >> 20} MiB"
    if fault.name == "stdout_flood":  # 256 MiB printed; a few KB kept
        assert result.log_tail is not None and len(result.log_tail) <= 4000

    # The next candidate on the same judge is correct, and judged so.
    t0 = time.monotonic()
    after = judge.evaluate((RELU / CONTROL).read_text())
    assert after.status == "correct", f"the control after {fault.name}: {_verdict(after)}"
    assert judge.pid == pid
    assert time.monotonic() - t0 < 120, "the judge was slow to answer after the fault"


# -- the pieces, without processes -------------------------------------------------------------------


def test_sandbox_memory_limit_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    from kforge.runtime.judge import SANDBOX_MEMORY_ENV, _machine_memory, sandbox_memory_limit

    monkeypatch.delenv(SANDBOX_MEMORY_ENV, raising=False)
    machine = _machine_memory()
    assert machine and sandbox_memory_limit("cpu") == machine // 2  # the default: half the machine
    assert sandbox_memory_limit("cuda") is None  # never on a GPU sandbox
    monkeypatch.setenv(SANDBOX_MEMORY_ENV, "6144")
    assert sandbox_memory_limit("cpu") == 6144 << 20
    monkeypatch.setenv(SANDBOX_MEMORY_ENV, "0")
    assert sandbox_memory_limit("cpu") is None  # off
    for bad in ("100", "lots"):  # 100 MiB can't even hold torch: a typo, refused loudly
        monkeypatch.setenv(SANDBOX_MEMORY_ENV, bad)
        with pytest.raises(ValueError, match=SANDBOX_MEMORY_ENV):
            sandbox_memory_limit("cpu")


def test_an_output_over_the_cap_is_a_header_only(tmp_path: Path) -> None:
    import torch

    from kforge.runtime.wire import Channel, PayloadTooLarge

    r, w = os.pipe()
    chan = Channel(r, w, tmp_path)
    try:
        small = torch.ones(4, 4)
        huge_view = small.reshape(1, 16).expand(1 << 26, 16)  # 4 GiB once contiguous, nothing now
        t0 = time.monotonic()
        payload = chan.encode([small, huge_view], max_bytes=1 << 20)
        assert time.monotonic() - t0 < 1.0  # nothing was copied
        assert payload["items"][1] == {"__kind__": "too_large", "dtype": "float32", "shape": [1 << 26, 16],
                                       "nbytes": 4 << 30}
        assert len(list(tmp_path.iterdir())) == 1  # only the small tensor's file was written
        with pytest.raises(PayloadTooLarge, match="declare 4,294,967,360 bytes, more than the 1,048,576 allowed"):
            chan.decode(payload, max_bytes=1 << 20)
        with pytest.raises(PayloadTooLarge, match="over the sender's cap"):  # whatever the receiver's cap
            chan.decode(payload["items"][1])
        within = chan.encode(small, max_bytes=1 << 20)
        assert torch.equal(chan.decode(within, max_bytes=1 << 20), small)
    finally:
        chan.close()


def test_the_judge_refuses_an_oversized_header_unread(tmp_path: Path) -> None:
    from kforge.runtime.judge import OUTPUT_FLOOR_BYTES, OUTPUT_SLACK, reply_cap
    from kforge.runtime.wire import Channel, PayloadTooLarge, declared_bytes

    r, w = os.pipe()
    chan = Channel(r, w, tmp_path)
    try:
        # No such file exists: the refusal comes from the header, before any read.
        lying = {"__kind__": "tensor", "file": "t1.bin", "dtype": "float32", "shape": [1 << 29], "device": "cpu"}
        with pytest.raises(PayloadTooLarge, match="2,147,483,648 bytes"):
            chan.decode({"__kind__": "list", "items": [lying]}, max_bytes=reply_cap())
        # A CUDA tensor is copied at its strides: a tiny shape with a huge stride counts as huge.
        strided = {"__kind__": "cuda_ipc", "dtype": "float32", "shape": [2, 2], "stride": [1 << 40, 1]}
        assert declared_bytes(strided) > 1 << 40
        with pytest.raises(PayloadTooLarge):
            chan.decode(strided, max_bytes=reply_cap())
    finally:
        chan.close()
    import torch

    assert reply_cap() == OUTPUT_FLOOR_BYTES
    big = torch.empty(1 << 27, device="meta")  # 512 MiB expected back: the cap scales with it
    assert reply_cap([big]) == OUTPUT_SLACK * (512 << 20)
