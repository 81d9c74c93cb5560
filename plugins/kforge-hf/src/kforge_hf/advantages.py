"""Advantage estimators over one group of rollouts (rollouts that share a start state and prompt).

Standard library only. Each estimator takes the group's rewards and returns one advantage per
rollout plus a small dict of diagnostics (``beta`` and ``kl`` for the entropic ones).

- ``mean``: ``A_i = r_i - mean(r)`` (the group-mean baseline; ``normalize_std`` divides by the
  group's standard deviation, as GRPO does);
- ``loo``: leave-one-out, ``A_i = r_i - mean_{j != i} r_j``;
- ``entropic``: TTT-Discover's entropic objective with a fixed ``beta``:
  ``A_i = exp(beta (r_i - max r)) / mean_{j != i} exp(beta (r_j - max r)) - 1``, which weights the
  group's best rollouts (``beta -> 0`` is the mean baseline up to a scale, ``beta -> inf`` rewards
  only the best);
- ``entropic_adaptive``: the same, with ``beta`` chosen per group by bisection so that
  ``KL(softmax(beta r) || uniform) = kl_budget`` (TTT-Discover uses ``ln 2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

ESTIMATORS = ("mean", "loo", "entropic", "entropic_adaptive")


def mean_baseline(rewards: Sequence[float], normalize_std: bool = False, eps: float = 1e-6) -> list[float]:
    k = len(rewards)
    if k == 0:
        return []
    mu = sum(rewards) / k
    adv = [r - mu for r in rewards]
    if normalize_std and k > 1:
        std = math.sqrt(sum(a * a for a in adv) / k)
        adv = [a / (std + eps) for a in adv]
    return adv


def leave_one_out(rewards: Sequence[float]) -> list[float]:
    k = len(rewards)
    if k < 2:
        return [0.0] * k
    total = sum(rewards)
    return [r - (total - r) / (k - 1) for r in rewards]


def softmax_kl_to_uniform(rewards: Sequence[float], beta: float) -> float:
    """KL(q || uniform) for q = softmax(beta * r): ``log K - H(q)``; 0 at beta = 0."""
    k = len(rewards)
    if k < 2:
        return 0.0
    top = max(rewards)
    logits = [beta * (r - top) for r in rewards]
    m = max(logits)
    log_z = m + math.log(sum(math.exp(x - m) for x in logits))
    kl = 0.0
    for x in logits:
        logq = x - log_z
        q = math.exp(logq)
        if q > 0:
            kl += q * (logq + math.log(k))
    return max(0.0, kl)


def solve_beta(rewards: Sequence[float], kl_budget: float = math.log(2), beta_max: float = 1e6,
               iters: int = 60) -> float:
    """The beta at which ``KL(softmax(beta r) || uniform)`` reaches ``kl_budget`` (bisection; the KL
    grows with beta). A group whose rewards are all equal gets 0. If even ``beta_max`` stays under the
    budget (the budget is above what the group's ties allow), ``beta_max``."""
    k = len(rewards)
    if k < 2 or max(rewards) - min(rewards) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while hi < beta_max and softmax_kl_to_uniform(rewards, hi) < kl_budget:
        lo, hi = hi, hi * 2.0
    if softmax_kl_to_uniform(rewards, hi) < kl_budget:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if softmax_kl_to_uniform(rewards, mid) < kl_budget:
            lo = mid
        else:
            hi = mid
    return hi


def entropic(rewards: Sequence[float], beta: float, eps: float = 1e-12) -> list[float]:
    """Leave-one-out entropic advantages: ``w_i - 1`` with ``w_i = e_i / mean_{j != i} e_j``."""
    k = len(rewards)
    if k == 0:
        return []
    top = max(rewards)
    e = [math.exp(beta * (r - top)) for r in rewards]
    if k == 1 or max(rewards) == min(rewards):
        return [0.0] * k
    total = sum(e)
    return [ei / ((total - ei) / (k - 1) + eps) - 1.0 for ei in e]


def advantages(rewards: Sequence[float], estimator: str, *, beta: float = 2.0, kl_budget: float = math.log(2),
               beta_max: float = 1e6, normalize_std: bool = False) -> tuple[list[float], dict[str, Any]]:
    """Advantages of one group by the named estimator, and diagnostics."""
    rewards = [float(r) for r in rewards]
    if estimator == "mean":
        return mean_baseline(rewards, normalize_std), {}
    if estimator == "loo":
        return leave_one_out(rewards), {}
    if estimator == "entropic":
        return entropic(rewards, beta), {"beta": beta, "kl": softmax_kl_to_uniform(rewards, beta)}
    if estimator == "entropic_adaptive":
        b = solve_beta(rewards, kl_budget, beta_max)
        return entropic(rewards, b), {"beta": b, "kl": softmax_kl_to_uniform(rewards, b)}
    raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
