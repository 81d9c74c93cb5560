"""CUDA-graph replay for short kernels (EVALUATION.md: kernels under ~20 us are timed by graph replay
or flagged launch-bound). GPU only: the judge decides from the warm-up times whether to capture, both
sides are replayed, a candidate that can't be captured is timed plainly, and one that captured no
work is caught by the sampled output checks."""

from __future__ import annotations

import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from test_judge import TRITON_RELU  # noqa: E402  (tests/ is on sys.path under pytest)
from test_judge import request as judge_request  # noqa: E402

from kforge.runtime import protocol as P  # noqa: E402
from kforge.runtime.judge import Judge  # noqa: E402

pytestmark = pytest.mark.gpu


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def relu_problem(n: int) -> str:
    return src(f"""
        import torch
        import torch.nn as nn

        n = {n}


        class Model(nn.Module):
            def forward(self, x):
                return torch.relu(x)


        def get_inputs():
            return [torch.randn(n)]


        def get_init_inputs():
            return []
    """)


# Reads a value back to the host inside forward: legal, but a CUDA graph can't capture it.
SYNCING_RELU = TRITON_RELU.replace("        y = torch.empty_like(x)\n",
                                   "        if float(x.abs().sum()) < 0:\n            return x\n"
                                   "        y = torch.empty_like(x)\n")

# Computes honestly when called plainly, but inside a capture returns its last answer: the graph holds
# no work, so every replay "takes" almost nothing and returns a stale output.
CAPTURE_CHEAT = TRITON_RELU.replace("        y = torch.empty_like(x)\n",
                                    "        if torch.cuda.is_current_stream_capturing() and hasattr(self, 'last'):\n"
                                    "            return self.last\n"
                                    "        y = torch.empty_like(x)\n"
                                    "        self.last = y\n")
assert SYNCING_RELU != TRITON_RELU and CAPTURE_CHEAT != TRITON_RELU


def request(problem: str, candidate: str, **kw) -> P.EvalRequest:
    """test_judge's request, with warm-up and enough timed rounds for the graph decision and the A/A."""
    settings = dict(warmup=3, min_samples=20, max_samples=60, max_timing_s=5.0, run_timeout_s=60.0,
                    compile_timeout_s=300.0)
    return judge_request(problem, candidate, **{**settings, **kw})


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory):
    j = Judge(device="cuda", workdir=tmp_path_factory.mktemp("graphs"), keep_spare=True)
    yield j
    j.close()


def test_a_short_kernel_is_timed_by_graph_replay(judge: Judge) -> None:
    res = judge.evaluate(request(relu_problem(1 << 16), TRITON_RELU))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert res.timing_method.startswith("cuda-graph replay between cuda-events"), res.timing_method
    assert "launch_bound" not in res.flags and not any(f.startswith("graph_capture") for f in res.flags)
    # a replay holds no Python call, launch gap or synchronisation: a 256 KiB ReLU is a few microseconds
    assert res.timing["median_ms"] < 0.05, res.timing
    assert res.baseline_eager["median_ms"] < 0.05, res.baseline_eager
    assert 0.8 < res.aa_ratio < 1.25, res.aa_ratio


def test_graphs_switched_off_time_plain_calls_and_flag_launch_bound(judge: Judge) -> None:
    res = judge.evaluate(request(relu_problem(1 << 16), TRITON_RELU, cuda_graph_below_ms=0.0))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert res.timing_method.startswith("cuda-events+device-sync"), res.timing_method
    assert "launch_bound" in res.flags


def test_a_long_kernel_is_timed_by_plain_calls(judge: Judge) -> None:
    res = judge.evaluate(request(relu_problem(1 << 27), TRITON_RELU, min_samples=10, max_samples=20))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert res.timing["median_ms"] > 0.1
    assert res.timing_method.startswith("cuda-events+device-sync"), res.timing_method


def test_a_candidate_that_cannot_be_captured_is_timed_plainly_and_stays_correct(judge: Judge) -> None:
    res = judge.evaluate(request(relu_problem(1 << 16), SYNCING_RELU))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert any(f.startswith("graph_capture_failed: candidate") for f in res.flags), res.flags
    assert res.timing_method.startswith("cuda-events+device-sync"), res.timing_method
    assert "launch_bound" in res.flags
    # the failed capture left the GPU usable: the next candidate is judged as usual
    again = judge.evaluate(request(relu_problem(1 << 16), TRITON_RELU))
    assert again.status == P.CORRECT and again.timing_method.startswith("cuda-graph replay")


def test_a_candidate_whose_graph_holds_no_work_is_caught(judge: Judge) -> None:
    res = judge.evaluate(request(relu_problem(1 << 16), CAPTURE_CHEAT))
    assert res.status == P.INCORRECT, (res.status, res.error, res.flags)
    assert res.guard == "timed_output", (res.guard, res.error)


def test_torch_compile_baselines_are_replayed_too(judge: Judge) -> None:
    res = judge.evaluate(request(relu_problem(1 << 16), TRITON_RELU, compile_modes=["default"]))
    assert res.status == P.CORRECT, (res.error, res.log_tail)
    assert res.timing_method.startswith("cuda-graph replay") and "not capturable" not in res.timing_method
    assert res.baseline_compile["default"]["median_ms"] < 0.05
