"""The Python API (kforge.evaluator.Evaluator) with the real CPU judge, and the reward function."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from kforge.evaluator import EvalJob, Evaluator
from kforge.options import RecipeError
from kforge.rewards import RewardShaping, effective_speedup, reward
from kforge.runtime import protocol as P

REPO = Path(__file__).resolve().parents[1]
RELU = REPO / "recipes" / "quickstart" / "candidates" / "relu"
CORRECT = (RELU / "correct.py").read_text()
WRONG = (RELU / "wrong_slope.py").read_text()
PLAIN = ("import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
         "        return torch.relu(x)\n")
RELU_PROBLEM = (REPO / "src" / "kforge" / "problems" / "builtin" / "relu.py").read_text()


def test_bad_input_is_refused_before_any_judge_starts(builtin_registry: object) -> None:
    ev = Evaluator("cpu")
    with pytest.raises(RecipeError, match="unknown problem 'rleu'. Did you mean 'relu'"):
        ev.evaluate("rleu", CORRECT)
    with pytest.raises(RecipeError, match="trails is not an option"):
        ev.evaluate("relu", CORRECT, trails=5)
    with pytest.raises(RecipeError, match="unknown backend 'cobol'"):
        ev.evaluate("relu", CORRECT, backend="cobol")
    with pytest.raises(RecipeError, match="not a KernelBench-format problem"):
        ev.evaluate("x = 1\ny = 2\n", CORRECT)
    rejected = ev.evaluate("relu", PLAIN)
    assert rejected.status == P.REJECTED and rejected.guard == "needs-kernel"
    assert not ev.health()["started"] and ev.executor.device_info == {}  # no judge was started for any of it
    ev.close()


def test_one_evaluator_judges_many_without_restarting(tmp_path: Path, builtin_registry: object) -> None:
    problem_file = tmp_path / "my_relu.py"
    problem_file.write_text(RELU_PROBLEM)
    with Evaluator("cpu", eval_defaults={"min_samples": 0}) as ev:
        pids = [w.proc.pid for w in ev.executor.workers]
        started_at = ev.executor.started_at
        first = ev.evaluate(problem_file, CORRECT, request_id="first")  # a KernelBench-format file
        assert first.status == P.CORRECT and first.request_id == "first" and first.shape_name == "small"

        async def stream() -> list[P.EvalResult]:
            jobs = [EvalJob(RELU_PROBLEM, WRONG, request_id="wrong"),  # an inline source
                    {"problem": "relu", "code": PLAIN, "request_id": "builtin"}]  # a built-in id (refused)
            return [r async for r in ev.aevaluate_many(jobs)]

        many = asyncio.run(stream())
        # the judges were started once: same processes, same start
        assert [w.proc.pid for w in ev.executor.workers] == pids and ev.executor.started_at == started_at
    assert sorted(r.request_id for r in many) == ["builtin", "wrong"]
    by_id = {r.request_id: r for r in many}
    assert by_id["wrong"].status == P.INCORRECT and by_id["wrong"].problem_id.startswith("inline-")
    assert by_id["builtin"].status == P.REJECTED and by_id["builtin"].problem_id == "relu"
    assert first.problem_id == "my_relu"
    assert not ev.health()["started"]
    with pytest.raises(RuntimeError, match="closed"):
        ev.evaluate("relu", CORRECT)


def _timed(speedup: float, cand: tuple[float, float, float], base: tuple[float, float, float], **kw: object) -> dict:
    return {"status": "correct", "speedup_vs_eager": speedup, "flags": kw.get("flags", []),
            "timing": {"p20_ms": cand[0], "median_ms": cand[1], "p80_ms": cand[2]},
            "baseline_eager": {"p20_ms": base[0], "median_ms": base[1], "p80_ms": base[2]}}


def test_reward_shaping() -> None:
    # failures score 0, infrastructure None
    for status in ("incorrect", "compile_error", "runtime_error", "timeout", "rejected"):
        assert reward({"status": status, "speedup_vs_eager": 5.0}) == 0.0
    assert reward({"status": "infra_error"}) is None and reward(None) is None
    # a clear 3x: log2(1 + 3) = 2; bands that do not touch 1.0
    three = _timed(3.0, (0.9, 1.0, 1.1), (2.9, 3.0, 3.1))
    assert reward(three) == pytest.approx(2.0)
    assert reward(three, RewardShaping(shape="linear")) == pytest.approx(3.0)
    assert reward(three, RewardShaping(shape="sqrt", scale=2.0, correct_bonus=0.5)) == pytest.approx(2 * 3 ** 0.5 + 0.5)
    # bounded: capped at max_speedup
    huge = _timed(400.0, (0.009, 0.01, 0.011), (3.9, 4.0, 4.1))
    assert reward(huge) == pytest.approx(math.log2(11.0))
    assert reward(huge, RewardShaping(max_speedup=3.0)) == pytest.approx(2.0)
    # inside the noise: parity, whichever way it leans
    assert effective_speedup(_timed(1.015, (0.9, 1.0, 1.1), (1.0, 1.015, 1.03))) == 1.0  # |s - 1| <= 0.02
    assert reward(_timed(1.08, (0.9, 1.0, 1.1), (0.95, 1.08, 1.2))) == 1.0  # p20-p80 band spans 1.0
    assert reward(_timed(0.93, (0.9, 1.0, 1.1), (0.85, 0.93, 1.0))) == 1.0
    assert reward(_timed(1.5, (0.99, 1.0, 1.01), (1.49, 1.5, 1.51), flags=["noisy: A/A 1.05 outside 1 +- 0.01"])) == 1.0
    assert reward(_timed(1.08, (0.99, 1.0, 1.01), (1.07, 1.08, 1.09))) == pytest.approx(math.log2(2.08))  # outside
    assert reward(_timed(1.08, (0.9, 1.0, 1.1), (0.95, 1.08, 1.2)), RewardShaping(timing_band=False, noise=0.0)) \
        == pytest.approx(math.log2(2.08))
    slow = _timed(0.5, (1.9, 2.0, 2.1), (0.95, 1.0, 1.05))
    assert reward(slow) == pytest.approx(math.log2(1.5))  # slower but correct: above a failure, below parity
    assert reward({"status": "correct", "speedup_vs_eager": None}) == 1.0  # not timed
    assert reward(P.EvalResult(request_id="r", problem_id="p", status="correct", speedup_vs_eager=3.0)) \
        == pytest.approx(2.0)
    assert reward({"status": "incorrect"}, RewardShaping(failure=-1.0)) == -1.0
    assert reward(three, RewardShaping(clip=(0.0, 1.5))) == 1.5
    with pytest.raises(ValueError, match="unknown reward shape"):
        RewardShaping(shape="exp")
    with pytest.raises(ValueError, match="unknown reward shaping key"):
        RewardShaping.from_dict({"shape": "log", "bonus": 1})
