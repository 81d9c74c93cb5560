"""The evaluation runtime: the in-process Judge on the CPU (each candidate in its own real sandbox
process, Triton's interpreter switched on by the judge), with problems and candidates written as
strings. Timing is kept tiny; most cases skip it (min_samples=0)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kforge.runtime import protocol as P  # noqa: E402
from kforge.runtime.judge import Judge  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


RELU_PROBLEM = src("""
    import torch
    import torch.nn as nn

    batch_size = 16
    dim = 100


    class Model(nn.Module):
        def forward(self, x):
            return torch.relu(x)


    def get_inputs():
        return [torch.randn(batch_size, dim)]


    def get_init_inputs():
        return []
""")

# Outputs average 1/dim = 5e-5, below fp32's atol of 1e-4: only a relative check catches zeros.
TINY_SOFTMAX_PROBLEM = src("""
    import torch
    import torch.nn as nn

    batch_size = 2
    dim = 20000


    class Model(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=1)


    def get_inputs():
        return [torch.randn(batch_size, dim)]


    def get_init_inputs():
        return []
""")

# exp of the 'wide' distribution (|x| up to 1e2) overflows fp32 where x > 88.7 (about 0.5% of the
# elements; with 8192 of them some always do): the reference itself gives inf.
EXP_PROBLEM = src("""
    import torch
    import torch.nn as nn

    n = 2048


    class Model(nn.Module):
        def forward(self, x):
            return torch.exp(x)


    def get_inputs():
        return [torch.randn(4, n)]


    def get_init_inputs():
        return []
""")

# log of a signed input is NaN on every distribution.
LOG_PROBLEM = EXP_PROBLEM.replace("torch.exp(x)", "torch.log(x)")

TRITON_RELU = src("""
    import torch
    import torch.nn as nn
    import triton
    import triton.language as tl


    @triton.jit
    def relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        tl.store(y_ptr + offs, tl.where(x > 0, x, 0.0), mask=mask)


    class ModelNew(nn.Module):
        def forward(self, x):
            x = x.contiguous()
            y = torch.empty_like(x)
            n = x.numel()
            relu_kernel[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)
            return y
""")

TRITON_ZEROS = src("""
    import torch
    import torch.nn as nn
    import triton
    import triton.language as tl


    @triton.jit
    def zeros_kernel(y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offs, tl.zeros([BLOCK], dtype=tl.float32), mask=offs < n)


    class ModelNew(nn.Module):
        def forward(self, x):
            y = torch.empty_like(x)
            n = y.numel()
            zeros_kernel[(triton.cdiv(n, 8192),)](y, n, BLOCK=8192)
            return y
""")


def torch_candidate(body: str, header: str = "") -> str:
    """A candidate whose forward(self, x) runs ``body`` (the judge itself does not require Triton)."""
    return (f"import os\nimport torch\nimport torch.nn as nn\n{header}\n\n"
            "class ModelNew(nn.Module):\n    def forward(self, x):\n"
            + textwrap.indent(textwrap.dedent(body).strip(), "        ") + "\n")


def request(problem: str, candidate: str, **kw) -> P.EvalRequest:
    # ops_check off: these tests judge plain-torch candidates (the library-op rule is tested on its own)
    settings = dict(trials=5, warmup=1, min_samples=0, max_samples=5, max_timing_s=1.0, run_timeout_s=30.0,
                    compile_timeout_s=120.0, ops_check=False)
    settings.update(kw)
    return P.EvalRequest(request_id=f"t{time.monotonic_ns()}", problem_id="p", problem_source=problem,
                         candidate_source=candidate, **settings)


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory):
    j = Judge(device="cpu", workdir=tmp_path_factory.mktemp("judge"), keep_spare=True)
    yield j
    j.close()


def test_correct_triton_relu_is_correct_with_timing(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, TRITON_RELU, min_samples=3, max_samples=5))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert isinstance(res.speedup_vs_eager, float) and math.isfinite(res.speedup_vs_eager)
    assert res.speedup_vs_eager > 0
    assert res.speedup == res.speedup_vs_eager
    for stats in (res.timing, res.baseline_eager):
        assert stats is not None
        assert len(stats["samples_ms"]) == stats["n"]
        assert 0 < stats["p20_ms"] <= stats["median_ms"] <= stats["p80_ms"]
        assert stats["mean_ms"] > 0 and stats["rel_se"] >= 0 and stats["cv"] >= 0
    assert 3 <= res.timing["n"] <= 5
    # the baseline is timed twice per round (A, candidate, A'): the A/A check compares the two
    assert res.baseline_eager["n"] == 2 * res.timing["n"]
    assert res.aa_ratio is not None and res.aa_ratio > 0
    assert res.speedup_vs_eager == pytest.approx(res.baseline_eager["median_ms"] / res.timing["median_ms"])
    assert res.trials_run == res.trials_passed == 5
    assert len(res.seeds) == 5 and len(set(res.seeds)) == 5
    assert res.max_abs_err == 0.0
    assert res.device_kind == "cpu" and res.device.startswith("CPU")
    assert "cpu_timing" in res.flags
    assert "Triton interpreter" in res.timing_method
    assert res.versions["torch"] == torch.__version__
    assert res.error is None and res.guard is None
    assert set(res.durations_s) >= {"reference", "compile", "correctness", "checks", "timing", "teardown", "total"}
    # where the time went, per sandbox command: calls, round trips, and the sandbox's own busy time
    sandbox = res.diagnostics["sandbox"]
    assert sandbox["run"]["calls"] == 6  # five trials, the first run twice
    assert sandbox["time"]["calls"] >= 3 + 1  # warm-up and timed rounds
    for cmd in ("load", "run", "time", "refresh"):
        assert 0 <= sandbox[cmd]["busy_s"] <= sandbox[cmd]["round_trip_s"]
    assert 0 < res.diagnostics["correctness_main_s"] <= res.durations_s["correctness"]
    # the trials' time by part: the sandbox's share is its run round trips, and the parts fit the phase
    split = res.diagnostics["correctness_split_s"]
    assert set(split) == {"reference", "sandbox", "decode", "check"} and min(split.values()) >= 0
    assert split["sandbox"] == pytest.approx(sandbox["run"]["round_trip_s"], abs=0.05)
    assert sum(split.values()) <= res.durations_s["correctness"] + 1e-3
    # the result is plain JSON and survives a round trip
    again = P.EvalResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again == res


def test_zeros_on_a_softmax_with_tiny_outputs_is_incorrect(judge: Judge) -> None:
    res = judge.evaluate(request(TINY_SOFTMAX_PROBLEM, TRITON_ZEROS))
    assert res.status == P.INCORRECT, (res.error, res.log_tail)
    assert res.guard in ("relative_error", "tolerance"), res.guard
    assert res.speedup is None and res.timing is None


def test_input_mutation_is_incorrect(judge: Judge) -> None:
    cand = torch_candidate("y = torch.relu(x)\nx.mul_(2.0)\nreturn y")
    res = judge.evaluate(request(RELU_PROBLEM, cand))
    assert res.status == P.INCORRECT
    assert res.guard == "input_mutation"
    assert "input 0" in res.error


@pytest.mark.parametrize(("body", "guard"), [
    ("return torch.relu(x).reshape(-1)", "output_shape"),
    ("return torch.relu(x)[:, :-1]", "output_shape"),
    ("return torch.relu(x).double()", "output_dtype"),
    ("return (torch.relu(x), torch.relu(x))", "output_structure"),
    ("return 1.0", "output_type"),
    ("return torch.relu(x).numpy()", "output_type"),
])
def test_wrong_output_structure_is_incorrect(judge: Judge, body: str, guard: str) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate(body)))
    assert res.status == P.INCORRECT, (res.status, res.error)
    assert res.guard == guard, (res.guard, res.error)


def test_never_writing_the_output_is_incorrect(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("return torch.empty_like(x)")))
    assert res.status == P.INCORRECT, (res.status, res.error)
    assert res.guard in ("nonfinite", "tolerance", "relative_error", "nondeterministic"), res.guard


def test_nan_output_is_incorrect(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("return torch.full_like(x, float('nan'))")))
    assert res.status == P.INCORRECT
    assert res.guard == "nonfinite"
    assert "NaN/Inf" in res.error


def test_exit_in_forward_is_a_runtime_error(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("print('about to exit', flush=True)\nos._exit(3)")))
    assert res.status == P.RUNTIME_ERROR
    assert res.guard == "crash"
    assert "exited with code 3" in res.error
    assert "about to exit" in (res.log_tail or "")


def test_exception_in_forward_is_a_runtime_error(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("raise ValueError('kaboom 42')")))
    assert res.status == P.RUNTIME_ERROR
    assert res.guard == "exception"
    assert "kaboom 42" in res.error and "candidate.py" in res.error


def test_exception_in_init_is_a_runtime_error(judge: Judge) -> None:
    cand = torch_candidate("return x") + "\n    def __init__(self):\n        raise RuntimeError('no init')\n"
    res = judge.evaluate(request(RELU_PROBLEM, cand))
    assert res.status == P.RUNTIME_ERROR and res.guard == "init"
    assert "no init" in res.error


def test_infinite_loop_is_a_timeout(judge: Judge) -> None:
    t0 = time.monotonic()
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("while True:\n    pass"), run_timeout_s=3))
    assert res.status == P.TIMEOUT
    assert res.guard == "timeout"
    assert "3 s" in res.error
    assert time.monotonic() - t0 < 30


def test_syntax_error_is_a_compile_error(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, "import torch\n\ndef broken(:\n    pass\n"))
    assert res.status == P.COMPILE_ERROR
    assert res.guard == "compile"
    assert "SyntaxError" in res.error
    assert res.trials_run == 0


def test_import_error_is_a_compile_error(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, "import no_such_module_for_kforge_tests\n"))
    assert res.status == P.COMPILE_ERROR
    assert "no_such_module_for_kforge_tests" in res.error


def test_reference_inf_on_wide_inputs_drops_that_distribution(judge: Judge) -> None:
    res = judge.evaluate(request(EXP_PROBLEM, torch_candidate("return torch.exp(x)")))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert res.trials_run == res.trials_passed == 5
    assert len(res.seeds) == 5
    assert "wide" not in res.distributions
    assert set(res.distributions) == {"problem", "normal"}


def test_reference_nonfinite_everywhere_is_not_blamed_on_the_candidate(judge: Judge) -> None:
    res = judge.evaluate(request(LOG_PROBLEM, torch_candidate("return torch.log(x)")))
    assert res.status == P.INFRA_ERROR
    assert "NaN/Inf on every input distribution" in res.error


def test_the_judge_survives_and_keeps_judging(judge: Judge) -> None:
    """After crashes and hangs above, the same judge still gives a correct verdict."""
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("return torch.relu(x)")))
    assert res.status == P.CORRECT


def test_judge_without_a_spare_sandbox(tmp_path: Path) -> None:
    j = Judge(device="cpu", workdir=tmp_path, keep_spare=False)
    try:
        assert j.info["device_kind"] == "cpu"
        res = j.evaluate(request(RELU_PROBLEM, torch_candidate("return x.clamp(min=0)")))
        assert res.status == P.CORRECT
    finally:
        j.close()
    assert not list(tmp_path.glob("sb-*")), "every sandbox folder is removed"


def test_judge_server_speaks_json_lines(tmp_path: Path) -> None:
    """``python -m kforge.runtime.judge``: hello, then one result per request; a bad line is an error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFORGE_")}
    env["KFORGE_DEVICE"] = "cpu"
    req = request(RELU_PROBLEM, torch_candidate("return torch.relu(x)"))
    stdin = "this is not json\n" + json.dumps(req.to_dict()) + "\n"
    proc = subprocess.run([sys.executable, "-m", "kforge.runtime.judge"], input=stdin, capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    msgs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [m["type"] for m in msgs] == ["hello", "error", "result"]
    assert msgs[0]["info"]["device_kind"] == "cpu"
    assert "bad request" in msgs[1]["error"]
    assert msgs[2]["result"]["status"] == P.CORRECT
    assert msgs[2]["result"]["request_id"] == req.request_id


@pytest.mark.gpu
def test_correct_triton_relu_on_cuda(tmp_path: Path) -> None:
    j = Judge(device="cuda", workdir=tmp_path, keep_spare=False)
    try:
        res = j.evaluate(request(RELU_PROBLEM, TRITON_RELU, min_samples=5, max_samples=20))
        assert res.status == P.CORRECT, (res.error, res.log_tail)
        assert res.device_kind == "cuda"
        assert res.speedup_vs_eager is not None and res.speedup_vs_eager > 0
        assert "cuda-events" in res.timing_method
        assert "cpu_timing" not in res.flags
    finally:
        j.close()


def test_a_forward_that_runs_the_references_ops_is_rejected(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("return torch.relu(x)"), ops_check=True))
    assert res.status == P.REJECTED and res.guard == "library_op"
    assert "relu" in res.error


def test_a_forward_that_runs_other_ops_passes_the_ops_check(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, torch_candidate("return x.clamp(min=0)"), ops_check=True))
    assert res.status == P.CORRECT, res.error  # clamp is not relu: the rule is a subset test, not a ban


TIMER_FORGER = '''
import time
import torch
import torch.nn as nn

_real = time.perf_counter
time.perf_counter = lambda: _real() * 0.01  # every interval the harness measures shrinks 100x


class ModelNew(nn.Module):
    def forward(self, x):
        end = _real() + 0.005  # 5 ms of real work per call
        while _real() < end:
            pass
        return x.clamp(min=0)
'''


def test_a_patched_timer_is_caught_by_the_wall_clock(judge: Judge) -> None:
    res = judge.evaluate(request(RELU_PROBLEM, TIMER_FORGER, min_samples=10, max_samples=12, max_timing_s=3.0))
    assert res.status == P.REJECTED and res.guard == "timer", (res.status, res.error)
    assert "wall clock" in res.error


def test_device_lock_lets_untimed_work_overlap_and_times_alone(tmp_path) -> None:
    """Two judges on one GPU: shared sections overlap; an exclusive one (timing) waits for them and
    keeps them out until it is done."""
    import threading
    import time as _time

    import torch

    from kforge.runtime.judge import DeviceLock

    path = tmp_path / "gpu.lock"
    a, b = DeviceLock(torch.device("cpu"), path), DeviceLock(torch.device("cpu"), path)
    events: list[str] = []

    with a.hold(exclusive=False):
        with b.hold(exclusive=False):  # shared + shared: no wait
            events.append("both shared")
    assert b.waited_s < 0.5

    def timed() -> None:
        with b.hold(exclusive=True):
            events.append("b timing")
            _time.sleep(0.3)
            events.append("b done")

    with a.hold(exclusive=False):
        t = threading.Thread(target=timed)
        t.start()
        _time.sleep(0.3)
        events.append("a shared ends")  # b can't time while a's correctness runs
    _time.sleep(0.15)
    with a.hold(exclusive=False):  # and a can't start again while b times
        events.append("a shared again")
    t.join()
    assert events == ["both shared", "a shared ends", "b timing", "b done", "a shared again"]
    # nested holds take nothing more
    with a.hold(exclusive=True):
        with a.hold(exclusive=False):
            assert a.mode == "ex"
    assert a.mode is None


def test_cuda_kernel_names_are_found_whatever_the_qualifier_order() -> None:
    from kforge.runtime.judge import _own_kernel_names

    assert _own_kernel_names("__global__ void __launch_bounds__(256) foo(float* x) {}", "cuda") == {"foo"}
    assert _own_kernel_names("__global__ __launch_bounds__(128, 2) void bar(int n) {}", "cuda") == {"bar"}
    assert _own_kernel_names('extern "C" __global__ static void\nbaz(int n) {}', "cutlass") == {"baz"}
    assert _own_kernel_names("template <int B> __global__ void k2(const float* __restrict__ x) {}", "cuda") == {"k2"}


def test_close_removes_the_judges_own_temp_directory(tmp_path) -> None:
    from kforge.runtime.judge import Judge

    judge = Judge(device="cpu", keep_spare=False)
    root = judge.root
    assert root.is_dir()
    judge.close()
    assert not root.exists()
    kept = Judge(device="cpu", workdir=tmp_path / "mine", keep_spare=False)
    kept.close()
    assert (tmp_path / "mine").is_dir()  # a directory the caller gave is the caller's


# A candidate that runs out of GPU memory the first time it is loaded anywhere (a marker file says
# so), asking for little (2 MiB): as one does when the judge's holdings or another judge on the same
# GPU took the memory it needs.
OOM_ONCE = """
import os
import torch
import torch.nn as nn

MARK = {mark!r}


class ModelNew(nn.Module):
    def forward(self, x):
        if not os.path.exists(MARK):
            open(MARK, "w").close()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        return torch.relu(x)
"""

OOM_GREEDY = torch_candidate('raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")')
OOM_MODEST = torch_candidate('raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")')


def test_out_of_memory_is_blamed_on_the_candidate_only_when_it_asked_for_too_much(tmp_path, monkeypatch) -> None:
    # One judge on its device: an out-of-memory is retried whether or not other judges share the GPU
    # (the judge's own holdings or another process can be the cause as well).
    monkeypatch.delenv("KFORGE_JUDGES_PER_GPU", raising=False)
    j = Judge(device="cpu", workdir=tmp_path / "j", keep_spare=False)
    try:
        # A modest request that failed once: the judge's plan or a neighbour took the memory. Judged again
        # with the leanest plan, alone, it passes: never the candidate's verdict.
        res = j.evaluate(request(RELU_PROBLEM, OOM_ONCE.format(mark=str(tmp_path / "mark"))))
        assert res.status == P.CORRECT, (res.error, res.log_tail)
        assert any(f.startswith("oom_retried_alone (first: runtime_error") for f in res.flags), res.flags
        assert res.diagnostics["memory"]["plan"]["lean"] is True
        # Modest, and still out of memory alone: an infrastructure failure, which names the cause.
        res = j.evaluate(request(RELU_PROBLEM, OOM_MODEST))
        assert (res.status, res.guard) == (P.INFRA_ERROR, "memory"), (res.status, res.error)
        assert "not the candidate's" in res.error and "Tried to allocate 2.00 MiB" in res.error
        # Asking for 20 GiB for a problem whose working set is a few KiB: the candidate's own, at once.
        res = j.evaluate(request(RELU_PROBLEM, OOM_GREEDY))
        assert (res.status, res.guard) == (P.RUNTIME_ERROR, "memory"), (res.status, res.error)
        assert "over the" in res.error and "working set" in res.error and "OutOfMemoryError" in res.error
        assert not any(f.startswith("oom_retried") for f in res.flags)
    finally:
        j.close()


def test_a_sandbox_starts_under_the_gpu_lock_taken_shared(tmp_path) -> None:
    """A sandbox's start on the GPU (its CUDA context, the profiler's start-up) is kforge's GPU work: it
    waits while a judge times (the per-GPU lock held exclusively), and holds nothing once ready."""
    import fcntl

    from kforge.runtime.judge import Sandbox, SandboxTimeout

    lock = tmp_path / "gpu.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a judge timing a candidate
    sb = Sandbox(torch.device("cpu"), tmp_path, lock_path=lock)
    try:
        # importing torch takes seconds; then it waits for the lock: the kernel lists it as a blocked
        # waiter ("->") in /proc/locks, under the sandbox's pid
        deadline = time.monotonic() + 60
        while not any(ln.split()[1] == "->" and ln.split()[5] == str(sb.proc.pid)
                      for ln in Path("/proc/locks").read_text().splitlines() if len(ln.split()) > 5):
            assert sb.proc.poll() is None and time.monotonic() < deadline, "the sandbox never waited for the lock"
            time.sleep(0.1)
        with pytest.raises(SandboxTimeout):
            sb.wait_ready(timeout=1)  # and it is not ready while it waits
        fcntl.flock(fd, fcntl.LOCK_UN)
        sb.wait_ready(timeout=60)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ready: the sandbox holds no lock any more
    finally:
        sb.kill()
        os.close(fd)


def test_an_out_of_memory_retry_alone_does_not_wait_on_its_own_sandbox(tmp_path, monkeypatch) -> None:
    """Judged again alone, the judge holds the GPU lock exclusively: its new sandbox, which starts
    under that lock taken shared, must be ready before, or the two would wait for each other."""
    from kforge.runtime.judge import DeviceLock

    monkeypatch.setenv("KFORGE_JUDGES_PER_GPU", "2")
    # no spare: the retry's sandbox is started at that moment, so it is not ready yet
    j = Judge(device="cpu", workdir=tmp_path / "j", keep_spare=False)
    j.lock = DeviceLock(j.device, path=tmp_path / "gpu.lock")  # as on a GPU: sandboxes take it shared
    try:
        t0 = time.monotonic()
        res = j.evaluate(request(RELU_PROBLEM, OOM_ONCE.format(mark=str(tmp_path / "mark")), compile_timeout_s=60.0))
        assert res.status == P.CORRECT, (res.status, res.error, res.log_tail)
        assert any(f.startswith("oom_retried_alone") for f in res.flags)
        assert time.monotonic() - t0 < 50, "no wait for the sandbox's own lock"
    finally:
        j.close()


def test_a_judge_keeps_its_spare_sandboxes_started(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KFORGE_SPARE_SANDBOXES", raising=False)
    assert Judge(device="cpu", workdir=tmp_path / "a", keep_spare=False).spares == 0
    monkeypatch.setenv("KFORGE_SPARE_SANDBOXES", "2")
    j = Judge(device="cpu", workdir=tmp_path / "b")
    try:
        assert j.spares == 2 and len(j._spares) == 2
        started = [sb.proc.pid for sb in j._spares]
        res = j.evaluate(request(RELU_PROBLEM, torch_candidate("return x.clamp(min=0)")))
        assert res.status == P.CORRECT, (res.error, res.log_tail)
        # the oldest spare judged it; the other moved up and a new one was started behind it
        now = [sb.proc.pid for sb in j._spares]
        assert len(now) == 2 and now[0] == started[1] and now[1] not in started
        assert all(sb.proc.poll() is None for sb in j._spares)
    finally:
        j.close()
    assert not list((tmp_path / "b").glob("sb-*")), "every sandbox is gone after close()"


def test_a_busy_host_gets_more_warm_up_rounds_before_the_graph_decision() -> None:
    """Plain warm-up readings of a short kernel carry the host's latency: while the quickest is above
    cuda_graph_below_ms but within GRAPH_PROBE_SPAN x of it, the judge takes more rounds (up to
    GRAPH_PROBE_ROUNDS); far above it, at or under it, on the CPU or with graphs off, it decides now."""
    import torch

    from kforge.runtime.judge import GRAPH_PROBE_ROUNDS, GRAPH_PROBE_SPAN

    j = Judge.__new__(Judge)  # only the device matters to the decision; no sandboxes are started
    j.device = torch.device("cuda")
    req = request("", "", warmup=3, cuda_graph_below_ms=0.1)
    near = 0.1 * GRAPH_PROBE_SPAN / 2
    assert j._graph_undecided(req, [0.3, near], [0.25], 3)  # all a little over: look again
    assert not j._graph_undecided(req, [0.3, near], [0.25], GRAPH_PROBE_ROUNDS)  # enough rounds taken
    assert not j._graph_undecided(req, [0.3, 0.09], [0.25], 3)  # one under: graph replay
    assert not j._graph_undecided(req, [5.0], [0.1 * GRAPH_PROBE_SPAN], 3)  # a long kernel: plain calls
    assert not j._graph_undecided(request("", "", warmup=3, cuda_graph_below_ms=0.0), [0.3], [0.3], 3)
    j.device = torch.device("cpu")
    assert not j._graph_undecided(req, [0.3], [0.3], 3)
    # A recipe's warm-up longer than the probe rounds is never cut short.
    j.device = torch.device("cuda")
    assert j._graph_undecided(request("", "", warmup=12, cuda_graph_below_ms=0.1), [0.3], [0.3], 9)


def test_profiled_device_time_is_the_union_of_device_spans() -> None:
    """The profile check's device_ms (what launch_bound reads under plain timing): device events only,
    overlapping streams counted once, microseconds to milliseconds; None when nothing ran on the device."""
    from types import SimpleNamespace as NS

    from kforge.runtime.sandbox import device_busy_ms

    def ev(kind: str, a: float, b: float) -> NS:
        return NS(device_type=f"DeviceType.{kind}", time_range=NS(start=a, end=b))

    events = [ev("CUDA", 10, 14), ev("CPU", 0, 500), ev("CUDA", 12, 20),  # overlap: 10-20
              ev("CUDA", 30, 33), ev("CUDA", 40, 40)]  # a separate 3 us, an empty span ignored
    assert device_busy_ms(events) == pytest.approx(0.013)
    assert device_busy_ms([ev("CPU", 0, 9)]) is None
    assert device_busy_ms([]) is None


def test_a_waiting_timing_judge_is_not_starved_by_later_shared_holders(tmp_path) -> None:
    """flock alone would grant each new shared request (another judge's correctness work, a spare
    sandbox starting) while a timing judge waits; the gate queues them behind it, sandboxes included."""
    import threading
    import time as _time

    import torch

    from kforge.runtime.judge import DeviceLock
    from kforge.runtime.sandbox import _gpu_lock

    path = tmp_path / "gpu.lock"
    a, b, c = (DeviceLock(torch.device("cpu"), path) for _ in range(3))
    events: list[str] = []

    def timed() -> None:
        with b.hold(exclusive=True):
            events.append("b timing")
            _time.sleep(0.3)
            events.append("b done")

    def later_shared() -> None:
        with c.hold(exclusive=False):
            events.append("c shared")

    def sandbox_starts() -> None:
        with _gpu_lock(str(path)):
            events.append("sandbox starts")

    with a.hold(exclusive=False):
        tb = threading.Thread(target=timed)
        tb.start()
        _time.sleep(0.2)  # b now waits for a
        others = [threading.Thread(target=later_shared), threading.Thread(target=sandbox_starts)]
        for t in others:
            t.start()
        _time.sleep(0.3)
        events.append("a shared ends")  # neither c nor the sandbox got in ahead of b
    for t in [tb, *others]:
        t.join(timeout=10)
    assert events[:3] == ["a shared ends", "b timing", "b done"], events
    assert sorted(events[3:]) == ["c shared", "sandbox starts"], events


# -- tolerances grounded in the reference's own rounding (docs/evaluation.md, "Tolerances") -------------
MATMUL_PROBLEM = src("""
    import torch
    import torch.nn as nn

    M, K, N = 64, 512, 64


    class Model(nn.Module):
        def forward(self, a, b):
            return a @ b


    def get_inputs():
        return [torch.randn(M, K), torch.randn(K, N)]


    def get_init_inputs():
        return []
""")

# An honest fp32 Triton matmul that sums K in blocks of 32 (another order than the reference's): on the
# 'wide' inputs some of its elements, like some of the fp32 reference's own, miss the exact answer by
# more than atol + rtol*|r|; against the float64 answer it is as accurate as the reference.
TRITON_BLOCKED_MATMUL = src("""
    import torch
    import torch.nn as nn
    import triton
    import triton.language as tl


    @triton.jit
    def mm_kernel(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        pm, pn = tl.program_id(0), tl.program_id(1)
        rm = pm * BM + tl.arange(0, BM)
        rn = pn * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
            b = tl.load(b_ptr + (k + rk)[:, None] * N + rn[None, :])
            acc += tl.dot(a, b, input_precision="ieee")
        tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc)


    class ModelNew(nn.Module):
        def forward(self, a, b):
            a, b = a.contiguous(), b.contiguous()
            M, K = a.shape
            N = b.shape[1]
            c = torch.empty(M, N, device=a.device, dtype=torch.float32)
            mm_kernel[(M // 32, N // 32)](a, b, c, M, N, K, BM=32, BN=32, BK=32)
            return c
""")

BF16_MATMUL = src("""
    import torch
    import torch.nn as nn


    class ModelNew(nn.Module):
        def forward(self, a, b):
            return (a.bfloat16() @ b.bfloat16()).float()
""")


def test_an_honest_blocked_matmul_passes_every_distribution_and_bf16_fails(judge: Judge) -> None:
    res = judge.evaluate(request(MATMUL_PROBLEM, TRITON_BLOCKED_MATMUL, trials=6))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert res.distributions.count("wide") == 2
    for note in res.diagnostics.get("arbitrated", []):  # where the fixed rule failed, it was by far
        assert note["worst_excess_over_reference_error"] < 1.0
    res = judge.evaluate(request(MATMUL_PROBLEM, BF16_MATMUL))
    assert (res.status, res.guard) == (P.INCORRECT, "tolerance"), (res.status, res.error)
    assert "against the exact answer" in res.error or "no float64" not in res.error


# A reference that writes its input (without declaring the problem in-place): the candidate must still
# get the pristine inputs, so an honest candidate is judged correct.
WRITES_ITS_INPUT = src("""
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def forward(self, x):
            y = x * 2
            x.zero_()
            return y


    def get_inputs():
        return [torch.randn(8, 64)]


    def get_init_inputs():
        return []
""")


def test_a_reference_that_writes_its_inputs_still_hands_the_candidate_pristine_ones(judge: Judge) -> None:
    res = judge.evaluate(request(WRITES_ITS_INPUT, torch_candidate("return x * 2")))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    # a candidate that writes them is still caught
    res = judge.evaluate(request(WRITES_ITS_INPUT, torch_candidate("y = x * 2\nx.zero_()\nreturn y")))
    assert (res.status, res.guard) == (P.INCORRECT, "input_mutation"), (res.status, res.error)


def test_the_memory_plan_is_measured_and_keeps_one_timing_set_for_large_inputs(tmp_path, monkeypatch) -> None:
    from kforge.runtime import memory

    monkeypatch.setattr(memory, "ROTATION_MAX_BYTES", 3 * 16 * 100 * 4 - 1)  # RELU_PROBLEM's inputs: 6400 bytes
    j = Judge(device="cpu", workdir=tmp_path / "j", keep_spare=False)
    try:
        res = j.evaluate(request(RELU_PROBLEM, TRITON_RELU, min_samples=3, max_samples=3))
        assert res.status == P.CORRECT, (res.error, res.log_tail)
        mem = res.diagnostics["memory"]
        assert mem["plan"]["working_set_bytes"] == 2 * 16 * 100 * 4  # its input and its output
        assert mem["plan"]["timing_sets"] == 1 and mem["plan"]["alone"] is False
        assert res.baseline_math.startswith("pytorch (")
    finally:
        j.close()


def test_a_busy_host_does_not_make_the_wall_clock_check_reject_an_honest_kernel(tmp_path, monkeypatch) -> None:
    """A descheduled sandbox, made deterministic: it is stopped (SIGSTOP) just before each timed call reaches
    it and continued 10 ms later, as a busy host's scheduler would. The judge's wall clock grows by 10 ms a
    call; the sandbox's own timed region and the CPU time the kernel counts for it do not. The cross-check
    reads the smaller of wall clock and CPU time, so the honest kernel passes; reading the wall clock
    alone, it is a false rejection."""
    import signal
    import threading

    from kforge.runtime import judge as J

    real_call = J.Sandbox.call

    def descheduled(self, msg, timeout, tensors=None):
        if msg.get("cmd") == "time":
            os.kill(self.proc.pid, signal.SIGSTOP)
            threading.Timer(0.01, os.kill, (self.proc.pid, signal.SIGCONT)).start()
        return real_call(self, msg, timeout, tensors)

    monkeypatch.setattr(J.Sandbox, "call", descheduled)
    # 12 rounds: the cross-check reads the rounds whose output was not sampled for checking (each is with
    # probability 1/2, the first always), so with 6 all could be checked (3%) and nothing compared.
    j = Judge(device="cpu", workdir=tmp_path / "j", keep_spare=True, spares=1)
    try:
        res = j.evaluate(request(RELU_PROBLEM, TRITON_RELU, min_samples=12, max_samples=12, max_timing_s=30.0))
        assert res.status == P.CORRECT, (res.error, res.log_tail)
        monkeypatch.setattr(J.Sandbox, "cpu_ns", lambda self: None)  # the wall clock alone
        res = j.evaluate(request(RELU_PROBLEM, TRITON_RELU, min_samples=12, max_samples=12, max_timing_s=30.0))
        assert (res.status, res.guard) == (P.REJECTED, "timer"), (res.status, res.error)
    finally:
        j.close()

STATEFUL_PROBLEM = src("""
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.scale = nn.Parameter(torch.randn(dim))
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls += 1  # a reference whose forward writes its own state
            return x * self.scale


    def get_inputs():
        return [torch.randn(4, 8)]


    def get_init_inputs():
        return [8]
""")


INIT_TENSOR_PROBLEM = src("""
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = nn.Parameter(w.clone())

        def forward(self, x):
            return x * self.w


    def get_inputs():
        return [torch.randn(4, 3)]


    def get_init_inputs():
        return [torch.ones(3)]
""")


def test_the_reference_is_kept_for_the_next_candidate_only_while_its_state_is_untouched(tmp_path) -> None:
    """Judge._reference keeps the problem's module and model for the next candidate of the same
    problem, shape and init seed; the sandbox always gets clones of the init inputs; a model whose
    state was written (here by its own forward) is built afresh; torch.compile gets its own instance."""
    from kforge.runtime import judge as J

    j = Judge(device="cpu", workdir=tmp_path, keep_spare=False)
    try:
        req = request(INIT_TENSOR_PROBLEM, "")
        m1, r1, i1 = j._reference(req, req.shape)
        m2, r2, i2 = j._reference(req, req.shape)
        assert m1 is m2 and r1 is r2
        assert torch.equal(i1[0], i2[0]) and i1[0] is not i2[0]  # a clone each time
        i2[0].fill_(7.0)  # what a sandbox could do to the init inputs it was sent
        assert torch.equal(j._reference(req, req.shape)[2][0], torch.ones(3))
        assert j._reference(req, req.shape, cache=False)[1] is not r1  # the instance torch.compile wraps
        assert j._reference(req, req.shape)[1] is r1  # ... which leaves the kept one kept
        other_seed = request(req.problem_source, "", init_seed=req.init_seed + 1)
        assert j._reference(other_seed, other_seed.shape)[1] is not r1
        with torch.no_grad():
            r1.w.data.mul_(2.0)  # a write no version counter sees
        r2 = j._reference(req, req.shape)[1]
        assert r2 is not r1 and torch.equal(r2.w, torch.ones(3))  # seen by the digest: built afresh
        r2.w = torch.nn.Parameter(r2.w.detach().clone())  # same values, another tensor (a rebinding)
        assert j._reference(req, req.shape)[1] is not r2

        sreq = request(STATEFUL_PROBLEM, "")
        _, s1, _ = j._reference(sreq, sreq.shape)
        assert j._reference(sreq, sreq.shape)[1] is s1  # untouched: kept
        with torch.no_grad():
            s1(torch.randn(4, 8))
        s2 = j._reference(sreq, sreq.shape)[1]
        assert s2 is not s1 and float(s2.calls) == 0.0  # written by its forward: built afresh
        assert torch.equal(s2.scale, s1.scale)  # from the same init seed

        # tensors made under inference_mode (no version counter) are kept and judged like any other
        ireq = request(INIT_TENSOR_PROBLEM.replace("self.w = nn.Parameter(w.clone())",
                                                   "with torch.inference_mode():\n            "
                                                   "self.register_buffer('w', w.clone())"), "")
        assert j._reference(ireq, ireq.shape)[1] is j._reference(ireq, ireq.shape)[1]
        cand = src("""
            import torch
            import torch.nn as nn


            class ModelNew(nn.Module):
                def __init__(self, w):
                    super().__init__()
                    self.register_buffer("w", w.clone())

                def forward(self, x):
                    return x * self.w
        """)
        res = j.evaluate(request(ireq.problem_source, cand, trials=1, heldout=[]))
        assert res.status == P.CORRECT, (res.error, res.log_tail)
        # a reference whose tensors can't be read yet (a lazy module) is simply built every time
        lreq = request(INIT_TENSOR_PROBLEM.replace("self.w = nn.Parameter(w.clone())",
                                                   "self.lin = nn.LazyLinear(3)"), "")
        l1 = j._reference(lreq, lreq.shape)[1]
        assert j._reference(lreq, lreq.shape)[1] is not l1

        for k in range(J.REFERENCE_CACHE + 2):  # bounded: the oldest go first
            r = request(RELU_PROBLEM, "", init_seed=1000 + k)
            j._reference(r, r.shape)
        assert len(j._references) == J.REFERENCE_CACHE
    finally:
        j.close()


def test_a_judge_waiting_to_time_waits_for_one_correctness_trial_not_the_phase(tmp_path) -> None:
    """Judges sharing a GPU: correctness takes the shared lock per trial, so another judge's timing
    (the lock taken exclusively) gets in between two trials instead of after all of them."""
    import contextlib
    import threading

    from kforge.runtime.judge import DeviceLock

    path = tmp_path / "gpu.lock"
    j = Judge(device="cpu", workdir=tmp_path / "j", keep_spare=True)
    j.lock = DeviceLock(torch.device("cpu"), path)  # as on a GPU: the lock file shared by the judges
    other = DeviceLock(torch.device("cpu"), path)
    holds: list[float] = []  # when each of the judge's shared holds began
    hold = j.lock.hold

    @contextlib.contextmanager
    def counted(exclusive: bool):
        with hold(exclusive):
            holds.append(time.monotonic())
            yield

    j.lock.hold = counted  # type: ignore[method-assign]
    slow = torch_candidate("time.sleep(0.4)\nreturn x.clamp(min=0)", header="import time")
    box: dict[str, P.EvalResult] = {}
    try:
        j._spares[0].wait_ready(timeout=120)
        t = threading.Thread(target=lambda: box.update(res=j.evaluate(request(RELU_PROBLEM, slow, trials=4,
                                                                                  heldout=[]))))
        t.start()
        deadline = time.monotonic() + 120
        # holds: the reference, the load, trial 1 (run twice), trial 2: ask while trial 2 runs
        while len(holds) < 4 and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        with other.hold(exclusive=True):
            time.sleep(0.5)  # another judge timing: the judge's next trial waits for it
            released = time.monotonic()
        t.join(timeout=120)
        assert box["res"].status == P.CORRECT, (box["res"].error, box["res"].log_tail)
        # it waited for the trial in flight (one call, ~0.4 s), not for the rest of the phase (~1.2 s
        # and more), and the judge's remaining trials came after the timing
        assert other.waited_s < 0.9, other.waited_s
        assert len(holds) == 6 and any(h >= released for h in holds), holds
        assert 0.4 <= box["res"].durations_s["lock_wait"] < 1.5  # and the result says how long it waited
    finally:
        j.close()
