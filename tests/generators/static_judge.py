"""A test double for the judge: an executor that only parses candidates (no torch, no processes).

The generator tests are about generation; judging is tested for real elsewhere (tests/test_judge.py,
tests/test_cli_run.py). This executor lets a whole engine run against the loopback server finish in
well under a second: a candidate that parses is 'correct' with a speedup taken from its length, one
that does not is a compile error.
"""

from __future__ import annotations

import ast
from typing import Any

from kforge.api import Executor
from kforge.hookspecs import hookimpl
from kforge.runtime import protocol as P


class StaticJudge(Executor):
    name = "static-judge"
    description = "test double: parses candidates, judges nothing"
    capacity = 4

    async def start(self, log_dir: Any = None) -> None:
        self.device_info = {"device": "static judge (test double)", "device_kind": "none"}

    async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
        try:
            ast.parse(request.candidate_source)
        except SyntaxError as exc:
            return P.EvalResult(request.request_id, request.problem_id, P.COMPILE_ERROR, error=str(exc))
        return P.EvalResult(request.request_id, request.problem_id, P.CORRECT,
                            speedup_vs_eager=1000 / max(1, len(request.candidate_source)),
                            device=self.device_info["device"], device_kind="none")


@hookimpl
def register_executors(register):
    register(StaticJudge)
