"""Multi-turn refinement: each candidate's verdict goes back to the generator for up to k turns.

Per problem, ``chains`` independent chains run side by side. A chain starts from a fresh sample (or,
with ``start = "example"``, from the problem's example solution as the parent); each later turn asks
for a new candidate with ``params["parent_code"]`` (the latest candidate, or the chain's best with
``parent = "best"``), ``params["feedback"]`` (that candidate's compile error, mismatch, timings,
speedup and roofline fraction) and ``params["history"]`` (one short line per earlier turn, the last
``history_turns`` only), so the prompt stays bounded however long the chain runs: only the latest
parent's code is ever sent, never the whole conversation.

A chain stops after ``turns`` candidates, when the generator has nothing more, or early once it has
a correct candidate and ``patience`` turns in a row have not improved its best speedup by
``min_improvement``.

Each chain is sequential (one proposal in flight) and depends only on its own verdicts, so the same
recipe and generation cache give the same proposals whatever order results arrive in.

The helpers :func:`feedback_from_result`, :func:`feedback_from_failure`, :func:`history_entry` and
:func:`refine_params` are what the ``evolution`` search uses for its ``refine`` edit type.
"""

from __future__ import annotations

from typing import Any

from kforge.api import Candidate, Proposal, RunContext, Search, derive_seed
from kforge.hookspecs import hookimpl
from kforge.options import Option
from kforge.runtime import protocol as P

FEEDBACK_MAX_CHARS = 2000
SUMMARY_CHARS = 160


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-(limit - head):]}"


def _as_dict(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, dict):
        return result
    return dict(result.to_dict())


def feedback_from_result(result: Any, max_chars: int = FEEDBACK_MAX_CHARS) -> dict[str, Any]:
    """The judge's verdict on a candidate as the ``feedback`` dict the prompt builder renders:
    ``status``, and where they apply ``compile_error``, ``error``, ``mismatch``, ``time_ms``,
    ``baseline_ms``, ``speedup`` and ``roofline_fraction``. Long texts are cut to ``max_chars``."""
    r = _as_dict(result)
    status = r.get("status")
    fb: dict[str, Any] = {"status": status}
    error = r.get("error")
    if status == P.COMPILE_ERROR:
        text = str(error or "")
        tail = r.get("log_tail")
        if tail and str(tail).strip() and str(tail).strip() not in text:
            text = f"{text}\n{str(tail).strip()}" if text else str(tail)
        fb["compile_error"] = _cut(text or "the candidate failed to compile", max_chars)
    elif error and status != P.CORRECT:
        guard = r.get("guard")
        fb["error"] = _cut(f"{error} (check: {guard})" if guard and status == P.REJECTED else str(error), max_chars)
    if r.get("mismatch"):
        fb["mismatch"] = _cut(str(r["mismatch"]), max_chars)
    elif status == P.INCORRECT and r.get("max_abs_err") is not None:
        fb["mismatch"] = f"max abs error {r['max_abs_err']:.3g}, max rel error {r.get('max_rel_err') or 0:.3g}"
    timing = r.get("timing") or {}
    base = r.get("baseline_eager") or {}
    if timing.get("median_ms") is not None:
        fb["time_ms"] = timing["median_ms"]
    if base.get("median_ms") is not None:
        fb["baseline_ms"] = base["median_ms"]
    speedup = r.get("speedup_vs_eager") if status == P.CORRECT else None
    if speedup is not None:
        fb["speedup"] = speedup
    if r.get("roofline_fraction") is not None and status == P.CORRECT:
        fb["roofline_fraction"] = r["roofline_fraction"]
    return fb


def feedback_from_failure(error: str | None, edit: bool = False, max_chars: int = FEEDBACK_MAX_CHARS) -> dict[str, Any]:
    """Feedback on an answer that gave no code (no code block, cut off, an edit that did not apply)."""
    text = _cut(error or "the answer contained no code", max_chars)
    return {"status": "no code", "edit_error" if edit else "error": text}


def feedback_duplicate(turn: int, verdict: dict[str, Any] | None) -> dict[str, Any]:
    """Feedback on an answer that repeated the code of an earlier turn (``turn``) of the same chain."""
    fb: dict[str, Any] = {"status": "duplicate",
                          "error": f"the answer is the same code as turn {turn}, judged before: change something"}
    if verdict:
        fb["earlier_verdict"] = history_line(verdict)
    return fb


def history_line(feedback: dict[str, Any]) -> str:
    """One line about a verdict: status, speedup or the first line of the error."""
    status = str(feedback.get("status") or "unknown")
    if feedback.get("speedup") is not None:
        return f"{status}, {float(feedback['speedup']):.3g}x over PyTorch eager"
    for key in ("compile_error", "edit_error", "error", "mismatch"):
        if feedback.get(key):
            first = str(feedback[key]).strip().splitlines()[0] if str(feedback[key]).strip() else ""
            return _cut(f"{status}: {first}", SUMMARY_CHARS)
    return status


def history_entry(turn: int, candidate_id: str | None, feedback: dict[str, Any]) -> dict[str, Any]:
    """A history item for ``params["history"]``: the turn, the candidate, its status and speedup, and
    ``summary``, one line a prompt can print as is. The summary names no candidate id: ids follow the
    order results arrive in, and a prompt must not (it is the generation cache's key)."""
    return {"turn": turn, "candidate": candidate_id, "status": feedback.get("status"),
            "speedup": feedback.get("speedup"), "summary": f"turn {turn}: {history_line(feedback)}"}


def refine_params(parent_code: str | None, feedback: dict[str, Any] | None, history: list[dict[str, Any]],
                  *, edit_format: str = "full", history_turns: int = 3) -> dict[str, Any]:
    """The Proposal.params of one refinement turn: the parent, its feedback and the recent history."""
    params: dict[str, Any] = {}
    if parent_code:
        params["parent_code"] = parent_code
        params["edit_format"] = edit_format
    if feedback:
        params["feedback"] = dict(feedback)
    if history and history_turns > 0:
        params["history"] = [dict(h) for h in history[-history_turns:]]
    return params


class Refine(Search):
    name = "refine"
    description = "multi-turn refinement: each candidate's compile errors, mismatches and timings go back to the " \
                  "generator for up to k turns"
    options = (
        Option("chains", int, 1, "independent refinement chains per problem, run side by side", minimum=1),
        Option("turns", int, 4, "most candidates in one chain (the first sample included)", minimum=1),
        Option("start", str, "sample", "how a chain starts: a fresh 'sample', or the problem's 'example' solution "
               "as the first parent", choices=("sample", "example")),
        Option("parent", str, "latest", "what the next turn improves: the 'latest' candidate whatever its verdict, "
               "or the chain's 'best' correct one (the latest until one is correct)", choices=("latest", "best")),
        Option("patience", int, 1, "stop a chain once it has a correct candidate and this many turns in a row have "
               "not improved its best speedup", minimum=1),
        Option("min_improvement", float, 0.01, "relative speedup gain that counts as improving (0.01: 1%)",
               minimum=0),
        Option("history_turns", int, 3, "earlier turns summarised in params['history'] (one line each)", minimum=0),
        Option("edit_format", str, "full", "what later turns ask for: the full module or SEARCH/REPLACE edits",
               choices=("full", "diff")),
        Option("temperature", float, None, "sampling temperature passed to the generator"),
    )

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.chains: dict[str, dict[str, Any]] = {}
        for p in ctx.problems:
            for c in range(int(self.opts.chains)):
                self.chains[f"{p.id}:c{c}"] = {
                    "problem": p.id, "chain": c, "turn": 0, "in_flight": None, "done": False, "reason": None,
                    "parent": None, "feedback": None, "best": None, "history": [], "stale": 0, "failing": False,
                    "fixes": 0, "own": {}, "waiting": None}
        self.order = list(self.chains)
        self.cursor = 0
        self.verdicts: dict[str, dict[str, Any]] = {}  # candidate id -> feedback, for duplicate messages
        self.in_flight: dict[str, str] = {}  # proposal id -> chain key

    # -- ask ----------------------------------------------------------------------------------------
    def ask(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        k = len(self.order)
        for i in range(k):
            if len(out) >= n:
                break
            key = self.order[(self.cursor + i) % k]
            ch = self.chains[key]
            if ch["done"] or ch["in_flight"] is not None or ch["waiting"] is not None:
                continue
            out.append(self._propose(key, ch))
        if k:
            self.cursor = (self.cursor + max(1, len(out))) % k
        return out

    def _propose(self, key: str, ch: dict[str, Any]) -> Proposal:
        pid, c, t = ch["problem"], ch["chain"], ch["turn"]
        turns = int(self.opts.turns)
        parent = ch["parent"]
        params: dict[str, Any]
        parent_id = None
        if parent is None and t == 0 and self.opts.start == "example":
            problem = self.ctx.problems_by_id[pid]
            path = problem.solutions().get(self.ctx.backend.name)
            params = {"parent_code": path.read_text(), "edit_format": self.opts.edit_format} if path else {}
        else:
            params = refine_params(parent["code"] if parent else None, ch["feedback"], ch["history"],
                                   edit_format=str(self.opts.edit_format),
                                   history_turns=int(self.opts.history_turns))
            parent_id = parent["id"] if parent else None
        params.update(chain=c, turn=t, sample=c * turns + t)
        if self.opts.temperature is not None:
            params["temperature"] = self.opts.temperature
        proposal = Proposal(id=f"{pid}:c{c}t{t}", problem_id=pid, step=c * turns + t,
                            seed=derive_seed(self.ctx.seed, self.name, pid, c, t), parent_id=parent_id,
                            params=params)
        ch["in_flight"] = proposal.id
        self.in_flight[proposal.id] = key
        return proposal

    # -- tell ---------------------------------------------------------------------------------------
    def tell(self, candidate: Candidate | None, proposal: Proposal, result: Any) -> None:
        key = self.in_flight.pop(proposal.id, None)
        if key is None:
            return  # not ours (or told twice)
        ch = self.chains[key]
        ch["in_flight"] = None
        t = ch["turn"]
        if candidate is None and result is None:  # the generator has nothing more for this chain
            ch["done"], ch["reason"] = True, "generator exhausted"
            return
        if candidate is None:  # no code in the answer: the parent stays, the error goes back
            edit = proposal.params.get("edit_format") == "diff" and bool(proposal.params.get("parent_code"))
            fb = feedback_from_failure(_as_dict(result).get("error"), edit=edit)
            self._remember(ch, t, None, fb)
            ch["feedback"] = fb
            self._not_improved(ch)
            self._next_turn(ch)
        elif result is None and candidate.id in ch["own"]:  # repeated one of its own earlier turns
            fb = feedback_duplicate(int(ch["own"][candidate.id]), self.verdicts.get(candidate.id))
            self._remember(ch, t, candidate.id, fb)
            ch["feedback"] = fb
            self._not_improved(ch)
            self._next_turn(ch)
        elif result is None:
            # the same code as another chain's candidate: it counts as that candidate's verdict, so the
            # chain goes the same way whichever of the two was judged first
            if candidate.id in self.verdicts:
                self._judged(ch, candidate.id, candidate.code, self.verdicts[candidate.id])
            else:
                ch["waiting"] = {"id": candidate.id, "code": candidate.code}
        else:
            fb = feedback_from_result(result)
            self.verdicts[candidate.id] = fb
            self._judged(ch, candidate.id, candidate.code, fb)
            for other in self.chains.values():
                if other.get("waiting") and other["waiting"]["id"] == candidate.id:
                    other["waiting"] = None
                    self._judged(other, candidate.id, candidate.code, fb)

    def _judged(self, ch: dict[str, Any], cid: str, code: str, fb: dict[str, Any]) -> None:
        t = ch["turn"]
        ch["own"][cid] = t
        self._remember(ch, t, cid, fb)
        me = {"id": cid, "code": code, "feedback": fb}
        correct = fb.get("status") == P.CORRECT
        if correct:
            if ch["failing"]:
                ch["fixes"] += 1
            speedup = float(fb.get("speedup") or 0.0)
            best = ch["best"]
            if best is None or speedup > float(best["speedup"]) * (1 + float(self.opts.min_improvement)):
                ch["best"] = {**me, "speedup": speedup, "turn": t}
                ch["stale"] = 0
            else:
                ch["stale"] += 1
        else:
            self._not_improved(ch)
        ch["failing"] = not correct
        if self.opts.parent == "best" and ch["best"] is not None:
            ch["parent"] = {k: ch["best"][k] for k in ("id", "code", "feedback")}
        else:
            ch["parent"] = me
        ch["feedback"] = ch["parent"]["feedback"]
        self._next_turn(ch)

    def _next_turn(self, ch: dict[str, Any]) -> None:
        ch["turn"] += 1
        if ch["turn"] >= int(self.opts.turns):
            ch["done"], ch["reason"] = True, "turns"
        elif ch["best"] is not None and ch["stale"] >= int(self.opts.patience):
            ch["done"], ch["reason"] = True, "not improving"

    def _remember(self, ch: dict[str, Any], turn: int, cid: str | None, fb: dict[str, Any]) -> None:
        ch["history"].append(history_entry(turn, cid, fb))
        keep = max(int(self.opts.history_turns), 1)
        ch["history"] = ch["history"][-keep:]

    @staticmethod
    def _not_improved(ch: dict[str, Any]) -> None:
        if ch["best"] is not None:
            ch["stale"] += 1

    # -- state --------------------------------------------------------------------------------------
    def done(self) -> bool:
        return all(ch["done"] for ch in self.chains.values())

    def state_dict(self) -> dict[str, Any]:
        return {"chains": self.chains, "cursor": self.cursor, "verdicts": self.verdicts,
                "in_flight": self.in_flight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, ch in (state.get("chains") or {}).items():
            if key in self.chains:
                self.chains[key] = ch
        self.cursor = int(state.get("cursor", 0))
        self.verdicts = dict(state.get("verdicts") or {})
        self.in_flight = dict(state.get("in_flight") or {})

    def metrics(self) -> dict[str, Any]:
        best: dict[str, dict[str, Any]] = {}
        for ch in self.chains.values():
            b = ch["best"]
            if b is not None and b["speedup"] > best.get(ch["problem"], {}).get("speedup", -1.0):
                best[ch["problem"]] = {"speedup": b["speedup"], "candidate": b["id"], "chain": ch["chain"],
                                       "turn": b["turn"]}
        return {"chains": len(self.chains), "active": sum(not ch["done"] for ch in self.chains.values()),
                "turns": sum(ch["turn"] for ch in self.chains.values()),
                "fixes": sum(ch["fixes"] for ch in self.chains.values()), "best": best,
                "stopped": {k: ch["reason"] for k, ch in self.chains.items() if ch["done"]}}


@hookimpl
def register_searches(register):
    register(Refine)
