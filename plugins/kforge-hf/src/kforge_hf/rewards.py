"""Rewards from the judge's verdict: 0 for a failure, a configurable function of speedup for a correct kernel.

Standard library only (imported when the plugin registry is built).

``shape`` (the function of speedup ``s`` over PyTorch eager, after ``max_speedup`` caps it):

- ``log``: ``log2(1 + s)``: 1.0 at parity, 0 as ``s`` -> 0, compresses large speedups;
- ``linear``: ``s``;
- ``inverse_time``: ``1 / time_ms`` of the candidate (TTT-Discover's ``scale / runtime``; set ``scale``).

The result is multiplied by ``scale``, clipped to ``clip`` (if given) and a ``correct_bonus`` is added.
A failure (compile error, mismatch, crash, timeout, rejected, no code) scores ``failure``. An
infrastructure error is not the model's fault: :meth:`RewardConfig.reward` returns ``None`` and the
rollout is left out of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SHAPES = ("log", "linear", "inverse_time")


def _get(result: Any, key: str) -> Any:
    if isinstance(result, dict):
        return result.get(key)
    return getattr(result, key, None)


@dataclass(frozen=True)
class RewardConfig:
    shape: str = "log"
    scale: float = 1.0
    max_speedup: float | None = None
    clip: tuple[float, float] | None = None
    correct_bonus: float = 0.0
    failure: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown reward shape {self.shape!r}; choose one of {', '.join(SHAPES)}")
        if self.clip is not None and (len(self.clip) != 2 or self.clip[0] > self.clip[1]):
            raise ValueError(f"reward clip must be [low, high] with low <= high, not {self.clip!r}")

    def of_speedup(self, speedup: float | None, time_ms: float | None = None) -> float:
        """The reward of a correct kernel (before the bonus)."""
        if self.shape == "inverse_time":
            value = 1.0 / time_ms if time_ms and time_ms > 0 else 0.0
        else:
            s = max(0.0, float(speedup or 0.0))
            if not math.isfinite(s):
                s = 0.0
            if self.max_speedup is not None:
                s = min(s, self.max_speedup)
            value = math.log2(1.0 + s) if self.shape == "log" else s
        value *= self.scale
        if self.clip is not None:
            value = min(max(value, self.clip[0]), self.clip[1])
        return value

    def reward(self, result: Any) -> float | None:
        """Reward of an EvalResult (or its dict); ``None`` for an infrastructure error."""
        if result is None:
            return self.failure
        status = _get(result, "status")
        if status == "infra_error":
            return None
        if status != "correct":
            return self.failure
        speedup = _get(result, "speedup_vs_eager")
        timing = _get(result, "timing") or {}
        time_ms = timing.get("median_ms") if isinstance(timing, dict) else None
        return self.of_speedup(speedup, time_ms) + self.correct_bonus
