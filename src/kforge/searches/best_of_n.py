"""Best-of-n: n independent samples per problem; the best correct one wins, re-timed before it is reported.

Once a problem's samples are all judged (or generation stopped: the generator ran out, a budget), its
winner, the correct candidate with the highest speedup, is judged again as a :class:`Retime`: a
fresh evaluation, whose inputs the judge draws from new seeds. The re-timing is *accepted* when it is
correct again and its speedup is at most ``retime_tolerance`` below the first; the report then uses
the re-timed speedup. Otherwise the winner is flagged (``incorrect`` on the fresh inputs, ``slower``,
or ``not_retimed`` when the machine failed) and the next best correct candidate is re-timed in turn,
until one is accepted or none is left (:func:`kforge.metrics.apply_retimes` says what is reported).
"""

from __future__ import annotations

from typing import Any

from kforge.api import Candidate, Proposal, Retime, RunContext, Search, derive_seed
from kforge.hookspecs import hookimpl
from kforge.metrics import ACCEPTED, retime_verdict
from kforge.options import Option
from kforge.runtime import protocol as P


class BestOfN(Search):
    name = "best-of-n"
    description = "n independent samples per problem, each with its own seed; the winner re-timed"
    options = (
        Option("n", int, 4, "samples per problem", minimum=1),
        Option("temperature", float, None, "sampling temperature passed to the generator (if it samples)"),
        Option("retime_winner", bool, True, "judge each problem's winner again with fresh input seeds and report "
               "that re-timing (the next best is re-timed when it is incorrect or much slower)"),
        Option("retime_trials", int, None, "correctness trials of a re-timing, each on fresh inputs (default: "
               "[eval] trials)", minimum=5),
        Option("retime_tolerance", float, 0.25, "flag a re-timing whose speedup is more than this fraction below "
               "the first judging's (then the next best is re-timed)", minimum=0),
    )

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.n = int(self.opts.n)
        self.retime = bool(self.opts.retime_winner)
        self.tolerance = float(self.opts.retime_tolerance)
        self.asked: dict[str, int] = {p.id: 0 for p in ctx.problems}
        self.told: dict[str, int] = {p.id: 0 for p in ctx.problems}
        self.exhausted: set[str] = set()
        self.order = [p.id for p in ctx.problems]
        # per problem: the first judging's speedup of each correct, timed candidate; and the re-timings
        self.correct: dict[str, dict[str, float]] = {p.id: {} for p in ctx.problems}
        self.retimes: dict[str, dict[str, Any]] = {p.id: self._no_retimes() for p in ctx.problems}

    @staticmethod
    def _no_retimes() -> dict[str, Any]:
        return {"asked": 0, "pending": {}, "verdicts": {}, "done": False}

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
                if self.opts.temperature is not None:
                    params["temperature"] = self.opts.temperature
                seed = derive_seed(self.ctx.seed, self.name, pid, k)
                out.append(Proposal(id=f"{pid}:s{k}", problem_id=pid, step=k, seed=seed, params=params))
                progressed = True
            if not progressed:
                break
        return out

    def tell(self, candidate: Candidate | None, proposal: Proposal, result: Any) -> None:
        pid = proposal.problem_id
        self.told[pid] += 1
        if candidate is None and result is None:
            self.exhausted.add(pid)  # the generator has nothing more for this problem
        elif candidate is not None and result is not None:
            data = result if isinstance(result, dict) else result.to_dict()
            s = data.get("speedup_vs_eager")
            if data.get("status") == P.CORRECT and isinstance(s, (int, float)):
                self.correct[pid][candidate.id] = float(s)
        # a candidate but no result: a duplicate of an earlier one, not judged again;
        # no candidate but a result: the sample failed before judging (e.g. no code in the answer)

    def done(self) -> bool:
        return all(self.asked[p] >= self.n or p in self.exhausted for p in self.order)

    # -- re-timing the winner -----------------------------------------------------------------------
    def _sampled(self, pid: str, final: bool) -> bool:
        """Every sample asked is told, and no more will be asked."""
        if self.told[pid] < self.asked[pid]:
            return False
        return final or self.asked[pid] >= self.n or pid in self.exhausted

    def ask_retimes(self, n: int, final: bool) -> list[Retime]:
        out: list[Retime] = []
        if not self.retime:
            return out
        for pid in self.order:
            if len(out) >= n:
                break
            rs = self.retimes[pid]
            if rs["done"] or rs["pending"] or not self._sampled(pid, final):
                continue
            left = sorted((c for c in self.correct[pid] if c not in rs["verdicts"]),
                          key=lambda c: (-self.correct[pid][c], c))
            if not left:
                rs["done"] = True  # no correct candidate, or every one was re-timed and flagged
                continue
            cid = left[0]
            rid = f"{cid}-r{rs['asked']}"
            rs["asked"] += 1
            rs["pending"][rid] = cid
            out.append(Retime(id=rid, problem_id=pid, candidate_id=cid, first_speedup=self.correct[pid][cid],
                              trials=self.opts.retime_trials))
        return out

    def tell_retime(self, retime: Retime, result: Any) -> dict[str, Any]:
        rs = self.retimes[retime.problem_id]
        cid = rs["pending"].pop(retime.id, None)
        if cid is None:
            return {}  # not ours, or told twice
        data = result if isinstance(result, dict) else result.to_dict()
        first = self.correct[retime.problem_id].get(cid)
        status = str(data.get("status"))
        speedup = data["speedup"] if "speedup" in data else data.get("speedup_vs_eager") if status == P.CORRECT else None
        verdict = retime_verdict(first, status, speedup, self.tolerance)
        rs["verdicts"][cid] = verdict
        if verdict == ACCEPTED:
            rs["done"] = True
        return {"verdict": verdict, "first_speedup": first}

    def state_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "told": self.told, "exhausted": sorted(self.exhausted), "correct": self.correct,
                "retimes": self.retimes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.asked.update(state.get("asked", {}))
        self.told.update(state.get("told", {}))
        self.exhausted = set(state.get("exhausted", []))
        for pid, correct in (state.get("correct") or {}).items():
            if pid in self.correct:
                self.correct[pid] = {c: float(s) for c, s in correct.items()}
        for pid, rs in (state.get("retimes") or {}).items():
            if pid in self.retimes:
                self.retimes[pid] = {**self._no_retimes(), **rs}

    def metrics(self) -> dict[str, Any]:
        problems: dict[str, Any] = {}
        for pid in self.order:
            rs = self.retimes[pid]
            accepted = [c for c, v in rs["verdicts"].items() if v == ACCEPTED]
            problems[pid] = {"asked": self.asked[pid], "told": self.told[pid], "correct": len(self.correct[pid]),
                             "retimed": len(rs["verdicts"]), "winner": accepted[0] if accepted else None,
                             "flagged": {c: v for c, v in rs["verdicts"].items() if v != ACCEPTED},
                             "retiming": sorted(rs["pending"].values())}
        return {"asked": sum(self.asked.values()), "told": sum(self.told.values()), "problems": problems}


@hookimpl
def register_searches(register):
    register(BestOfN)
