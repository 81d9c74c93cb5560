"""Rewards for RL from the judge's verdict: one documented function, :func:`reward`.

The default shaping (docs/service.md states it in full):

- an infrastructure failure (``infra_error``: a judge died, a GPU was lost) gives ``None``: the
  trainer drops the sample instead of punishing the policy for the machine's fault;
- any other failing verdict (compile error, incorrect, crash, timeout, rejected) gives ``failure`` (0.0);
- a correct kernel gives ``scale * f(s) + correct_bonus``, clipped to ``clip`` if set, where ``s`` is
  its speedup over PyTorch eager, capped at ``max_speedup`` (10 by default, so the reward is bounded),
  and ``f`` is the ``shape``: ``log`` = log2(1 + s) (1.0 at parity, 0 as s -> 0, log2(11) = 3.46 at
  the cap), ``linear`` = s, ``sqrt`` = sqrt(s);
- a speedup inside the timing noise counts as parity (s = 1.0, so the reward is f(1) = 1.0 for
  ``log``): when ``|s - 1| <= noise`` (0.02 by default), when the speedup's p20-p80 band
  (baseline p20 / candidate p80 .. baseline p80 / candidate p20) contains 1.0, when the judge flagged
  the timing noisy (its A/A check failed), or when the result was not timed at all (``min_samples=0``).

Standard library only; takes an ``EvalResult`` or its JSON dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SHAPES = ("log", "linear", "sqrt")


def _get(result: Any, key: str) -> Any:
    return result.get(key) if isinstance(result, dict) else getattr(result, key, None)


@dataclass(frozen=True)
class RewardShaping:
    """How a verdict becomes a reward. Every field is documented in the module docstring."""

    shape: str = "log"
    max_speedup: float = 10.0
    noise: float = 0.02
    timing_band: bool = True
    scale: float = 1.0
    correct_bonus: float = 0.0
    failure: float = 0.0
    clip: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown reward shape {self.shape!r}; choose one of {', '.join(SHAPES)}")
        if not (self.max_speedup > 0):
            raise ValueError(f"max_speedup must be positive, not {self.max_speedup!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, not {self.noise!r}")
        if self.clip is not None and (len(self.clip) != 2 or self.clip[0] > self.clip[1]):
            raise ValueError(f"clip must be (low, high) with low <= high, not {self.clip!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RewardShaping:
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown reward shaping key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if data.get("clip") is not None:
            data["clip"] = tuple(data["clip"])
        return cls(**data)


DEFAULT_SHAPING = RewardShaping()


def effective_speedup(result: Any, shaping: RewardShaping = DEFAULT_SHAPING) -> float | None:
    """The speedup the reward uses: the judge's speedup over eager, 1.0 where it is inside the timing
    noise, capped at ``max_speedup``. ``None`` unless the result is correct."""
    if result is None or _get(result, "status") != "correct":
        return None
    s = _get(result, "speedup_vs_eager")
    if s is None or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        return 1.0  # correct but not timed (min_samples=0) or no usable figure: parity
    if abs(s - 1.0) <= shaping.noise or any(str(f).startswith("noisy") for f in _get(result, "flags") or []):
        return 1.0
    if shaping.timing_band:
        cand, base = _get(result, "timing") or {}, _get(result, "baseline_eager") or {}
        try:
            lo = base["p20_ms"] / cand["p80_ms"]
            hi = base["p80_ms"] / cand["p20_ms"]
        except (KeyError, TypeError, ZeroDivisionError):
            lo = hi = None
        if lo is not None and hi is not None and lo <= 1.0 <= hi:
            return 1.0
    return min(float(s), shaping.max_speedup)


def reward(result: Any, shaping: RewardShaping | None = None) -> float | None:
    """The reward of one verdict (an ``EvalResult`` or its dict): ``None`` for an infrastructure failure
    (or no result at all), ``shaping.failure`` for a failing kernel, a bounded function of the speedup
    for a correct one. See the module docstring for the exact shaping."""
    shaping = shaping or DEFAULT_SHAPING
    if result is None:
        return None
    status = _get(result, "status")
    if status == "infra_error":
        return None
    s = effective_speedup(result, shaping)
    if s is None:
        return shaping.failure
    value = {"log": math.log2(1.0 + s), "linear": s, "sqrt": math.sqrt(s)}[shaping.shape]
    value = value * shaping.scale + shaping.correct_bonus
    if shaping.clip is not None:
        value = min(max(value, shaping.clip[0]), shaping.clip[1])
    return value
