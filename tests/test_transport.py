"""The transport between a judge and its sandboxes (``cuda_ipc``, ``host``, ``auto``): the decision at
judge start, its self-test through a real sandbox, what every result records, the environment variable
that reaches a judge process, and what a sandbox's environment never holds.

On the CPU, both transports move CPU tensors through host memory, so what is tested here is the switch,
the self-test and the recording; the adversarial and fault suites run under each transport with
``KFORGE_TRANSPORT`` (docs/executors.md gives the GPU command).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kforge.runtime import wire  # noqa: E402
from kforge.runtime.judge import Judge, Sandbox  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_auto_tries_cuda_ipc_then_falls_back_to_host_and_says_why() -> None:
    tried: list[str] = []

    def self_test(mode: str) -> str | None:
        tried.append(mode)
        return "cudaIpcOpenMemHandle: operation not supported" if mode == "cuda_ipc" else None

    mode, record = wire.choose_transport("auto", "cuda", self_test)
    assert mode == "host" and tried == ["cuda_ipc", "host"]
    assert record["requested"] == "auto" and record["self_test"] == "passed"
    assert "not supported" in record["failed"]["cuda_ipc"]
    mode, record = wire.choose_transport("auto", "cuda", lambda m: None)
    assert mode == "cuda_ipc" and "failed" not in record
    tried.clear()
    assert wire.choose_transport(None, "cpu", self_test)[0] == "host" and tried == ["host"]  # no CUDA tensor


def test_a_transport_asked_for_by_name_must_pass() -> None:
    with pytest.raises(RuntimeError, match=r"cuda_ipc: no IPC here.*try transport = \"host\""):
        wire.choose_transport("cuda_ipc", "cuda", lambda m: "no IPC here")
    with pytest.raises(RuntimeError, match="host: disk full"):
        wire.choose_transport("auto", "cuda", lambda m: "disk full" if m == "host" else "no IPC")
    with pytest.raises(ValueError, match="not one of auto, cuda_ipc, host"):
        wire.parse_transport("shm")
    assert wire.parse_transport("CUDA-IPC") == "cuda_ipc"


@pytest.mark.parametrize("mode", ["host", "cuda_ipc"])
def test_the_judge_self_tests_and_every_result_records_the_transport(mode: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A real echo through a real sandbox at judge start; that sandbox then judges the first candidate."""
    from kforge.problems import builtin_problems
    from kforge.runtime import protocol as P

    monkeypatch.setenv(wire.STAGING_ENV, str(tmp_path / "shm"))
    (tmp_path / "shm").mkdir()
    judge = Judge(device="cpu", workdir=tmp_path / "judge", keep_spare=False, transport=mode)
    try:
        record = judge.info["transport"]
        assert judge.transport == mode and record["mode"] == mode and record["self_test"] == "passed"
        assert record["self_test_s"][mode] > 0 and len(judge._spares) == 1  # the tested sandbox is kept
        tested = judge._spares[0]
        assert tested.transport == mode
        if mode == "host":  # staged in the shared-memory folder, not the judge's
            assert record["staging"] == str(tmp_path / "shm") and tested.dir.parent == tmp_path / "shm"
        relu = {p.id: p for p in builtin_problems()}["relu"]
        req = P.EvalRequest(request_id="t", problem_id="relu", problem_source=relu.source,
                            candidate_source=relu.solutions()["triton"].read_text(), shape_name="small",
                            shape=relu.shape("small"), dtype=relu.dtype, trials=2, min_samples=0, ops_check=False,
                            compile_timeout_s=60, run_timeout_s=20)
        result = judge.evaluate(req)
        assert result.status == P.CORRECT, result.error
        assert result.versions["transport"]["mode"] == mode
        assert not judge._spares  # the first candidate took the self-tested sandbox
    finally:
        judge.close()


def test_the_environment_variable_reaches_a_judge_process(tmp_path: Path) -> None:
    """``KFORGE_TRANSPORT`` as the local executor passes it; a bad value is a clear error, exit 3."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "KFORGE_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "KFORGE_SPARE_SANDBOXES": "1"}
    for value, expect in (("host", "host"), ("bogus", None)):
        proc = subprocess.run([sys.executable, "-m", "kforge.runtime.judge"], input="", capture_output=True,
                              text=True, env={**env, wire.TRANSPORT_ENV: value}, timeout=120, cwd=tmp_path)
        hello = json.loads(proc.stdout.splitlines()[0])
        if expect:
            assert proc.returncode == 0 and hello["type"] == "hello"
            assert hello["info"]["transport"]["mode"] == expect
        else:
            assert proc.returncode == 3 and hello["type"] == "error"
            assert "'bogus' is not one of auto, cuda_ipc, host" in hello["error"]


def test_a_sandbox_gets_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from the started sandbox process itself (/proc/PID/environ)."""
    secrets = {"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1", "MODAL_IDENTITY_TOKEN": "jwt",
               "ANTHROPIC_API_KEY": "sk-1", "OPENAI_APIKEY": "sk-2", "AWS_SECRET_ACCESS_KEY": "x", "GH_TOKEN": "y"}
    kept = {"TOKENIZERS_PARALLELISM": "false", "KFORGE_X": "1"}
    for k, v in {**secrets, **kept}.items():
        monkeypatch.setenv(k, v)
    sb = Sandbox(torch.device("cpu"), tmp_path, transport="host")
    try:
        sb.wait_ready(120)
        raw = Path(f"/proc/{sb.proc.pid}/environ").read_bytes().split(b"\0")
        names = {item.split(b"=", 1)[0].decode() for item in raw if b"=" in item}
    finally:
        sb.kill()
    assert not names & set(secrets), names & set(secrets)
    assert set(kept) <= names and "PYTHONPATH" in names


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["auto", "host", "cuda_ipc"])
def test_on_a_gpu_each_transport_judges_and_auto_prefers_ipc(mode: str, tmp_path: Path) -> None:
    """On a GPU with working CUDA IPC (bare metal), auto picks cuda_ipc; host stages CUDA tensors through
    host memory; each judges the relu solution correct and records what it used."""
    from kforge.problems import builtin_problems
    from kforge.runtime import protocol as P

    judge = Judge(device="cuda", workdir=tmp_path / "judge", keep_spare=False, transport=mode)
    try:
        expected = "cuda_ipc" if mode == "auto" else mode
        assert judge.transport == expected and judge.info["transport"]["self_test"] == "passed"
        relu = {p.id: p for p in builtin_problems()}["relu"]
        req = P.EvalRequest(request_id=f"g-{mode}", problem_id="relu", problem_source=relu.source,
                            candidate_source=relu.solutions()["triton"].read_text(), shape_name="main",
                            shape=relu.shape("main"), dtype=relu.dtype, min_samples=5, max_timing_s=2.0)
        result = judge.evaluate(req)
        assert result.status == P.CORRECT, result.error
        assert result.versions["transport"]["mode"] == expected
    finally:
        judge.close()


def test_the_local_executor_passes_the_recipe_transport_and_the_environment_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kforge.executors.local import JudgeWorker, LocalExecutor

    monkeypatch.delenv(wire.TRANSPORT_ENV, raising=False)
    assert JudgeWorker(0, None, None, transport="host").environment()[wire.TRANSPORT_ENV] == "host"
    assert wire.TRANSPORT_ENV not in JudgeWorker(0, None, None).environment()
    monkeypatch.setenv(wire.TRANSPORT_ENV, "cuda_ipc")
    assert JudgeWorker(0, None, None, transport="host").environment()[wire.TRANSPORT_ENV] == "cuda_ipc"
    assert {o.name: o for o in LocalExecutor.options}["transport"].choices == ("auto", "cuda_ipc", "host")


def test_a_strided_cuda_tensor_staged_through_host_declares_its_extent() -> None:
    """``host`` rebuilds a non-contiguous CUDA tensor's strides on arrival (as ``cuda_ipc`` keeps them), so
    its header is capped by its strided extent, like an IPC header: a tiny shape with a huge stride is
    refused before anything is allocated."""
    header = {"__kind__": "tensor", "file": "t.bin", "dtype": "float32", "shape": [2, 2], "device": "cuda",
              "contiguous": False, "stride": [1 << 30, 1]}
    assert wire.declared_bytes(header) == ((1 << 30) + 2) * 4
    assert wire.declared_bytes({**header, "device": "cpu"}) == 16  # CPU tensors arrive contiguous, as before
    assert wire.declared_bytes({**header, "contiguous": True}) == 16


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["host", "cuda_ipc"])
def test_on_a_gpu_a_strided_tensor_keeps_its_strides_both_ways(mode: str, tmp_path: Path) -> None:
    device = torch.device("cuda", 0)
    sb = Sandbox(device, tmp_path, transport=mode)
    try:
        sb.wait_ready(300)
        x = torch.arange(64 * 48, dtype=torch.float32, device=device).reshape(64, 48).t()[3:17]
        reply = sb.call({"cmd": "echo"}, 120, tensors={"inputs": [x]})
        [back] = sb.chan.decode(reply["outputs"], device)
    finally:
        sb.kill()
    expected = x * 2 + 1
    assert torch.equal(back, expected) and back.stride() == expected.stride() and back.is_cuda
