"""Rewards from verdicts, and the advantage estimators (pure Python: no model needed)."""

from __future__ import annotations

import math

import pytest
from kforge.runtime import protocol as P

from kforge_hf.advantages import (
    advantages,
    entropic,
    leave_one_out,
    mean_baseline,
    softmax_kl_to_uniform,
    solve_beta,
)
from kforge_hf.rewards import RewardConfig


def result(status: str, speedup: float | None = None, time_ms: float | None = None) -> P.EvalResult:
    return P.EvalResult("c1", "relu", status, speedup_vs_eager=speedup,
                        timing={"median_ms": time_ms} if time_ms is not None else None)


# -- rewards ---------------------------------------------------------------------------------------
def test_failures_score_the_failure_reward_and_infra_errors_are_left_out() -> None:
    cfg = RewardConfig(failure=-0.5)
    for status in (P.INCORRECT, P.COMPILE_ERROR, P.RUNTIME_ERROR, P.TIMEOUT, P.REJECTED):
        assert cfg.reward(result(status, speedup=3.0)) == -0.5
    assert cfg.reward(None) == -0.5  # no verdict at all (e.g. no code)
    assert cfg.reward(result(P.INFRA_ERROR)) is None


def test_reward_shapes_of_speedup() -> None:
    assert RewardConfig(shape="log").reward(result(P.CORRECT, 1.0)) == pytest.approx(1.0)
    assert RewardConfig(shape="log").reward(result(P.CORRECT, 3.0)) == pytest.approx(2.0)
    assert RewardConfig(shape="linear", scale=2.0).reward(result(P.CORRECT, 1.5)) == pytest.approx(3.0)
    assert RewardConfig(shape="inverse_time", scale=3000.0).reward(result(P.CORRECT, 2.0, time_ms=1.5)) \
        == pytest.approx(2000.0)
    # a correct kernel always beats a failure, even a slow one
    assert RewardConfig(shape="log").reward(result(P.CORRECT, 0.1)) > RewardConfig().failure


def test_clip_cap_and_bonus() -> None:
    cfg = RewardConfig(shape="linear", max_speedup=10.0, clip=(0.0, 5.0), correct_bonus=0.3)
    assert cfg.reward(result(P.CORRECT, 100.0)) == pytest.approx(5.3)  # capped at 10, clipped to 5, + bonus
    assert cfg.reward(result(P.CORRECT, 2.0)) == pytest.approx(2.3)
    assert RewardConfig(shape="linear", max_speedup=4.0).reward(result(P.CORRECT, 9.0)) == pytest.approx(4.0)
    assert cfg.reward(result(P.CORRECT, float("nan"))) == pytest.approx(0.3)  # never NaN
    assert cfg.reward(result(P.CORRECT, None)) == pytest.approx(0.3)  # correct but not timed
    assert cfg.reward(result(P.CORRECT, 2.0).to_dict()) == pytest.approx(2.3)  # a stored dict works too
    with pytest.raises(ValueError):
        RewardConfig(shape="cubic")


# -- advantages ------------------------------------------------------------------------------------
REWARDS = [0.0, 0.2, 1.0, 0.0, 0.5, 0.0, 2.0, 0.1]


def test_mean_baseline() -> None:
    a = mean_baseline(REWARDS)
    assert sum(a) == pytest.approx(0.0, abs=1e-12)
    assert a[6] == pytest.approx(2.0 - sum(REWARDS) / len(REWARDS))
    n = mean_baseline(REWARDS, normalize_std=True)
    assert math.sqrt(sum(x * x for x in n) / len(n)) == pytest.approx(1.0, rel=1e-4)
    assert mean_baseline([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]


def test_leave_one_out() -> None:
    a = leave_one_out(REWARDS)
    k = len(REWARDS)
    for i, r in enumerate(REWARDS):
        others = [x for j, x in enumerate(REWARDS) if j != i]
        assert a[i] == pytest.approx(r - sum(others) / (k - 1))
    # leave-one-out is the mean baseline scaled by k/(k-1)
    for x, y in zip(a, mean_baseline(REWARDS)):
        assert x == pytest.approx(y * k / (k - 1))
    assert leave_one_out([3.0]) == [0.0]


def test_entropic_matches_its_definition_and_favours_the_best() -> None:
    beta = 1.7
    a = entropic(REWARDS, beta)
    top = max(REWARDS)
    e = [math.exp(beta * (r - top)) for r in REWARDS]
    for i in range(len(REWARDS)):
        z = (sum(e) - e[i]) / (len(e) - 1)
        assert a[i] == pytest.approx(e[i] / z - 1.0)
    assert max(range(len(a)), key=a.__getitem__) == REWARDS.index(max(REWARDS))
    # a larger beta puts more of the weight on the best rollout
    hot = entropic(REWARDS, 8.0)
    assert hot[6] > a[6] and hot[2] < a[2] + 1e-9
    # beta -> 0: proportional to the leave-one-out baseline
    tiny = entropic(REWARDS, 1e-6)
    for x, y in zip(tiny, leave_one_out(REWARDS)):
        assert x == pytest.approx(1e-6 * y, rel=1e-3, abs=1e-12)


@pytest.mark.parametrize("budget", [0.1, math.log(2), 1.2])
def test_adaptive_beta_hits_the_kl_budget(budget: float) -> None:
    beta = solve_beta(REWARDS, budget)
    assert beta > 0
    assert softmax_kl_to_uniform(REWARDS, beta) == pytest.approx(budget, abs=1e-6)
    adv, diag = advantages(REWARDS, "entropic_adaptive", kl_budget=budget)
    assert diag["beta"] == pytest.approx(beta)
    assert diag["kl"] == pytest.approx(budget, abs=1e-6)
    assert adv == pytest.approx(entropic(REWARDS, beta))


def test_adaptive_beta_is_scale_free_and_handles_flat_and_unreachable_groups() -> None:
    # rewards ten times larger: the same softmax, so a tenth of the beta
    b1 = solve_beta(REWARDS)
    b10 = solve_beta([10 * r for r in REWARDS])
    assert b10 == pytest.approx(b1 / 10, rel=1e-6)
    assert solve_beta([0.5] * 6) == 0.0
    adv, _ = advantages([0.5] * 6, "entropic_adaptive")
    assert adv == [0.0] * 6
    # two tied best of four: KL can reach at most log(4/2) = log 2, never 1.0
    assert solve_beta([1.0, 1.0, 0.0, 0.0], kl_budget=1.0, beta_max=64.0) == 64.0


def test_advantages_dispatch() -> None:
    assert advantages(REWARDS, "mean")[0] == pytest.approx(mean_baseline(REWARDS))
    assert advantages(REWARDS, "loo")[0] == pytest.approx(leave_one_out(REWARDS))
    a, diag = advantages(REWARDS, "entropic", beta=2.0)
    assert diag["beta"] == 2.0 and a == pytest.approx(entropic(REWARDS, 2.0))
    with pytest.raises(ValueError):
        advantages(REWARDS, "ppo")
