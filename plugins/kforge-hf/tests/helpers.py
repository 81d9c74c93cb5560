"""Driving a search and a generator the way the engine does, with a judge that is a Python function."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kforge.api import Candidate, Proposal, code_hash
from kforge.runtime import protocol as P


def verdict(code: str, request_id: str, problem_id: str, target: str) -> P.EvalResult:
    """Correct with speedup 1.0 when the answer starts with ``target``, else a mismatch."""
    if code.startswith(target):
        return P.EvalResult(request_id, problem_id, P.CORRECT, speedup_vs_eager=1.0,
                            timing={"median_ms": 1.0}, baseline_eager={"median_ms": 1.0})
    return P.EvalResult(request_id, problem_id, P.INCORRECT, mismatch="not the target")


class Driver:
    """ask -> generate -> dedupe -> judge -> tell, in the engine's order, one step at a time."""

    def __init__(self, search: Any, generator: Any, ctx: Any, judge: Callable[[str, str, str], P.EvalResult]) -> None:
        self.search, self.generator, self.ctx, self.judge = search, generator, ctx, judge
        self.by_hash: dict[tuple[str, str], Candidate] = {}
        self.seq = 0

    def ask_all(self) -> list[Proposal]:
        return self.search.ask(10_000)

    def generate(self, proposals: list[Proposal]) -> list[Any]:
        return asyncio.run(self.generator.generate(proposals, self.ctx))

    def tell(self, proposal: Proposal, gen: Any) -> None:
        if gen.code is None:
            self.search.tell(None, proposal, P.EvalResult(proposal.id, proposal.problem_id, P.COMPILE_ERROR,
                                                          guard="no_code", error=gen.error))
            return
        h = code_hash(gen.code)
        dup = self.by_hash.get((proposal.problem_id, h))
        if dup is not None:
            self.search.tell(dup, proposal, None)
            return
        self.seq += 1
        cand = Candidate(id=f"c{self.seq:04d}", problem_id=proposal.problem_id, proposal_id=proposal.id,
                         code=gen.code, code_hash=h, generator=gen.generator, parent_id=proposal.parent_id)
        self.by_hash[(proposal.problem_id, h)] = cand
        self.search.tell(cand, proposal, self.judge(gen.code, cand.id, proposal.problem_id))

    def step(self) -> dict[str, Any]:
        proposals = self.ask_all()
        for p, g in zip(proposals, self.generate(proposals)):
            self.tell(p, g)
        return self.search.history[-1]
