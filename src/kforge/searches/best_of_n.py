"""Best-of-n: n independent samples per problem; the best correct one wins."""

from __future__ import annotations

from typing import Any

from kforge.api import Candidate, Proposal, RunContext, Search, derive_seed
from kforge.hookspecs import hookimpl
from kforge.options import Option


class BestOfN(Search):
    name = "best-of-n"
    description = "n independent samples per problem, each with its own seed"
    options = (
        Option("n", int, 4, "samples per problem", minimum=1),
        Option("temperature", float, None, "sampling temperature passed to the generator (if it samples)"),
    )

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.n = int(self.config.get("n") or 4)
        self.asked: dict[str, int] = {p.id: 0 for p in ctx.problems}
        self.told: dict[str, int] = {p.id: 0 for p in ctx.problems}
        self.exhausted: set[str] = set()
        self.order = [p.id for p in ctx.problems]

    def ask(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        # round-robin over problems so every problem gets results early
        while len(out) < n:
            progressed = False
            for pid in self.order:
                if len(out) >= n:
                    break
                k = self.asked[pid]
                if k >= self.n or pid in self.exhausted:
                    continue
                self.asked[pid] = k + 1
                params: dict[str, Any] = {"sample": k}
                if self.config.get("temperature") is not None:
                    params["temperature"] = self.config["temperature"]
                seed = derive_seed(self.ctx.seed, self.name, pid, k)
                out.append(Proposal(id=f"{pid}:s{k}", problem_id=pid, step=k, seed=seed, params=params))
                progressed = True
            if not progressed:
                break
        return out

    def tell(self, candidate: Candidate | None, proposal: Proposal, result: Any) -> None:
        self.told[proposal.problem_id] += 1
        if candidate is None and result is None:
            self.exhausted.add(proposal.problem_id)  # the generator has nothing more for this problem
        # a candidate but no result: a duplicate of an earlier one, not judged again;
        # no candidate but a result: the sample failed before judging (e.g. no code in the answer)

    def done(self) -> bool:
        return all(self.asked[p] >= self.n or p in self.exhausted for p in self.order)

    def state_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "told": self.told, "exhausted": sorted(self.exhausted)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.asked.update(state.get("asked", {}))
        self.told.update(state.get("told", {}))
        self.exhausted = set(state.get("exhausted", []))

    def metrics(self) -> dict[str, Any]:
        return {"asked": sum(self.asked.values()), "told": sum(self.told.values())}


@hookimpl
def register_searches(register):
    register(BestOfN)
