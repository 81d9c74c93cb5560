"""Test doubles for whole engine runs: a backend with no static check and a judge that scores a
candidate's text without a GPU (correct when it starts with ``TARGET``; faster the more it repeats)."""

from __future__ import annotations

from typing import Any, ClassVar

from kforge.api import Backend, Executor
from kforge.hookspecs import hookimpl
from kforge.runtime import protocol as P


class PlainBackend(Backend):
    name = "plain-text"
    description = "test double: any text is a candidate"


class Crash(RuntimeError):
    """Raised by the judge to kill a run mid-way (as a crash would)."""


class TextJudge(Executor):
    name = "text-judge"
    description = "test double: scores a candidate's text, judges nothing"
    capacity = 4
    target: ClassVar[str] = "a"
    crash_after: ClassVar[int | None] = None  # raise Crash on this evaluation (counted over the process)
    seen: ClassVar[int] = 0

    async def start(self, log_dir: Any = None) -> None:
        self.device_info = {"device": "text judge (test double)", "device_kind": "none"}

    async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
        cls = type(self)
        cls.seen += 1
        if cls.crash_after is not None and cls.seen >= cls.crash_after:
            cls.crash_after = None
            raise Crash(f"killed at evaluation {cls.seen}")
        code = request.candidate_source
        if not code.startswith(cls.target):
            return P.EvalResult(request.request_id, request.problem_id, P.INCORRECT, mismatch="wrong",
                                device=self.device_info["device"], device_kind="none")
        return P.EvalResult(request.request_id, request.problem_id, P.CORRECT,
                            speedup_vs_eager=float(code.count(cls.target)), timing={"median_ms": 1.0},
                            device=self.device_info["device"], device_kind="none")


@hookimpl
def register_backends(register):
    register(PlainBackend)


@hookimpl
def register_executors(register):
    register(TextJudge)
