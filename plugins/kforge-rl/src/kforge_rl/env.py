"""A multi-turn kernel-writing environment: the judge's verdict is the observation."""

from __future__ import annotations

import asyncio
import random
from typing import Any, NamedTuple

from kforge.extract import extract_code
from kforge.problems import Problem, load_problem_source
from kforge.prompts import build_prompt, format_feedback
from kforge.rewards import RewardShaping, reward
from kforge.searches.refine import feedback_from_failure, feedback_from_result


class Step(NamedTuple):
    observation: str  # the judge's feedback and the task again, as the next user message
    reward: float | None  # None: an infrastructure failure (drop the sample)
    done: bool
    info: dict[str, Any]  # "result" (the EvalResult or None), "code", "turn", "feedback"


def resolve_problem(judge: Any, ref: Any) -> Problem:
    """A Problem from an id or source, through an Evaluator (in-process) or a Client (asks the server)."""
    if isinstance(ref, Problem):
        return ref
    if hasattr(judge, "resolve_problem"):
        return judge.resolve_problem(ref)
    if isinstance(ref, str) and "\n" in ref:
        return load_problem_source(ref)
    return load_problem_source(judge.problem(ref)["source"], ref)


class KernelEnv:
    """``reset(problem)`` gives the prompt (system and user messages); ``step(completion)`` judges the
    code in the completion and gives a :class:`Step`. An episode ends after ``max_turns`` steps, or at
    the first correct kernel when ``stop_when_correct``. Rewards are :func:`kforge.rewards.reward`;
    an answer without code scores ``shaping.failure`` and its observation says what was wrong."""

    def __init__(self, judge: Any, problems: list[Any] | None = None, *, backend: str = "triton",
                 max_turns: int = 3, stop_when_correct: bool = False, shaping: RewardShaping | None = None,
                 shape: str = "auto", device: dict[str, Any] | None = None, **eval_settings: Any) -> None:
        from kforge.plugins import get_registry

        self.judge, self.problems, self.max_turns = judge, list(problems or []), max_turns
        self.stop_when_correct, self.shaping, self.shape = stop_when_correct, shaping or RewardShaping(), shape
        self.eval_settings = eval_settings
        self.backend_name = backend
        self.backend = get_registry().get("backends", backend)()
        self.device = device if device is not None else dict(getattr(judge, "device_info", {}) or {})
        self.problem: Problem | None = None
        self.turn = 0
        self.code: str | None = None
        self._ref: Any = None

    def reset(self, problem: Any = None, seed: int | None = None) -> list[dict[str, str]]:
        """Start an episode on ``problem`` (default: one of ``problems``, drawn with ``seed``)."""
        if problem is None:
            if not self.problems:
                raise ValueError("give reset() a problem, or the environment a list of problems")
            problem = random.Random(seed).choice(self.problems)
        self.problem = resolve_problem(self.judge, problem)
        # an Evaluator takes the Problem itself; a server, the id or source it was named by
        self._ref = self.problem if hasattr(self.judge, "resolve_problem") else problem
        self.turn, self.code = 0, None
        prompt = build_prompt(self.problem, self.backend, self.device, {})
        return [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]

    def step(self, completion: Any) -> Step:
        from kforge_rl.reward import completion_text

        if self.problem is None:
            raise RuntimeError("call reset() before step()")
        if self.turn >= self.max_turns:
            raise RuntimeError(f"the episode is over ({self.max_turns} turns); call reset()")
        self.turn += 1
        extraction = extract_code(completion_text(completion), parent_code=self.code)
        result = None
        if extraction.code is None:
            feedback = feedback_from_failure(extraction.error, edit=extraction.kind == "edit")
            value: float | None = self.shaping.failure
        else:
            self.code = extraction.code
            result = self.judge.evaluate(self._ref, extraction.code, backend=self.backend_name, shape=self.shape,
                                         **self.eval_settings)
            feedback = feedback_from_result(result)
            value = reward(result, self.shaping)
        correct = result is not None and result.status == "correct"
        done = self.turn >= self.max_turns or (self.stop_when_correct and correct)
        prompt = build_prompt(self.problem, self.backend, self.device,
                              {"parent_code": self.code, "feedback": feedback})
        observation = prompt.user if not done else "Verdict:\n" + format_feedback(feedback)
        return Step(observation, value, done, {"result": result, "code": extraction.code, "turn": self.turn,
                                               "feedback": feedback})

    async def astep(self, completion: Any) -> Step:
        """:meth:`step` for async agent loops (the judging runs in a worker thread)."""
        return await asyncio.to_thread(self.step, completion)
