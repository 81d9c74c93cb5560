"""A reward function with TRL GRPO's signature, judged by kforge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kforge.extract import extract_code
from kforge.rewards import RewardShaping, reward


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or (conversational) the last assistant message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence):
        for message in reversed(list(completion)):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                return str(message.get("content") or "")
    return str(completion or "")


class KernelReward:
    """``reward_funcs=[KernelReward(judge)]`` for TRL's ``GRPOTrainer``.

    Called as ``reward(prompts=..., completions=[...], problem_id=[...], **columns)``: one problem id
    per completion comes from the dataset column ``problem_column``. Each completion's code is taken
    by kforge's extractor (a fenced block defining ``ModelNew``); every candidate of the call is judged
    at once (a batch on a server), and each gets :func:`kforge.rewards.reward`: ``None`` for an
    infrastructure failure (TRL then leaves that completion out), ``shaping.failure`` (0.0) for a
    completion without code or a failing kernel, a bounded function of the speedup for a correct one.
    ``last_results`` keeps the verdicts of the latest call (None where no code was found).
    """

    def __init__(self, judge: Any, *, backend: str = "triton", problem_column: str = "problem_id",
                 shaping: RewardShaping | None = None, shape: str = "auto", **eval_settings: Any) -> None:
        self.judge, self.backend, self.problem_column = judge, backend, problem_column
        self.shaping = shaping or RewardShaping()
        self.shape, self.eval_settings = shape, eval_settings
        self.__name__ = "kforge_kernel_reward"  # TRL names each reward function's logged column by this
        self.last_results: list[Any] = []

    def __call__(self, completions: Sequence[Any], prompts: Any = None, **columns: Any) -> list[float | None]:
        ids = columns.get(self.problem_column)
        if ids is None:
            raise ValueError(f"KernelReward needs the dataset column {self.problem_column!r} (one problem id per "
                             f"completion); the columns passed were: {', '.join(sorted(columns)) or 'none'}")
        if isinstance(ids, str):
            ids = [ids] * len(completions)
        if len(ids) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(ids)} values in column {self.problem_column!r}")
        codes = [extract_code(completion_text(c)).code for c in completions]
        jobs = [{"problem": pid, "code": code, "backend": self.backend, "shape": self.shape,
                 "settings": dict(self.eval_settings)} for pid, code in zip(ids, codes) if code]
        judged = iter(self.judge.evaluate_all(jobs) if jobs else [])
        self.last_results = [next(judged) if code else None for code in codes]
        return [reward(r, self.shaping) if r is not None else self.shaping.failure for r in self.last_results]
