"""Helpers for the search tests: a known fitness landscape, a pure generator over it, a driver that
runs a search without the engine (results told in any order), and a registry with the new searches.

The landscape: a candidate is a small module of integer knobs ``KNOB_A = 3`` ... The judge scores it
with a known optimum (:data:`OPTIMUM`, fitness :data:`BEST`), fails it to compile when a knob is out
of range, and marks it incorrect when ``KNOB_C`` is 0 (so refine has something to repair).
"""

from __future__ import annotations

import importlib
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kforge.api import Candidate, Generation, Generator, Proposal, RunContext, code_hash
from kforge.runtime import protocol as P
from kforge.searches.features import Feature

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "generators") not in sys.path:  # loopback.py and static_judge.py
    sys.path.insert(0, str(HERE.parent / "generators"))

KNOBS = ("A", "B", "C", "D")
RANGE = range(0, 8)
OPTIMUM = {"A": 6, "B": 2, "C": 5, "D": 3}
BEST = 4.0

_KNOB = re.compile(r"^KNOB_([A-Z]) = (-?\d+)$", re.M)


def knobs_of(code: str) -> dict[str, int]:
    return {k: int(v) for k, v in _KNOB.findall(code)}


KNOB_TEMPLATE = """import torch
import triton
import triton.language as tl

$knobs


@triton.jit
def copy_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


class ModelNew(torch.nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        copy_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y
"""


def knob_module(values: dict[str, int]) -> str:
    """A candidate that passes the Triton backend's static checks, with its knobs as constants."""
    return KNOB_TEMPLATE.replace("$knobs", "\n".join(f"KNOB_{k} = {values[k]}" for k in KNOBS))


def landscape(values: dict[str, int]) -> float:
    """BEST at OPTIMUM, falling off with the squared distance."""
    d = sum((values.get(k, 0) - OPTIMUM[k]) ** 2 for k in KNOBS)
    return round(0.2 + (BEST - 0.2) / (1.0 + 0.25 * d), 6)


def judge(code: str, request_id: str = "r", problem_id: str = "p") -> P.EvalResult:
    values = knobs_of(code)
    if set(values) != set(KNOBS) or any(v not in RANGE for v in values.values()):
        return P.EvalResult(request_id, problem_id, P.COMPILE_ERROR,
                            error=f"NameError: knob out of range in {sorted(values.items())}")
    if values["C"] == 0:
        return P.EvalResult(request_id, problem_id, P.INCORRECT, mismatch="output differs at [0, 3]: 1.5 vs 0.0",
                            max_abs_err=1.5)
    s = landscape(values)
    return P.EvalResult(request_id, problem_id, P.CORRECT, speedup_vs_eager=s, roofline_fraction=s / 8,
                        timing={"median_ms": 1.0 / s}, baseline_eager={"median_ms": 1.0})


def _knob_a(code: str, result: Any) -> int:
    return knobs_of(code).get("A", 0) // 2


def _knob_b(code: str, result: Any) -> int:
    return knobs_of(code).get("B", 0) // 2


knob_a = Feature("knob_a", ("0-1", "2-3", "4-5", "6-7"), _knob_a, "KNOB_A // 2 (a test feature)")
knob_b = Feature("knob_b", ("0-1", "2-3", "4-5", "6-7"), _knob_b, "KNOB_B // 2 (a test feature)")
KNOB_FEATURES = ["search_helpers:knob_a", "search_helpers:knob_b"]


def mutate(proposal: Proposal) -> str:
    """A pure function of the proposal: no parent -> random knobs (sometimes broken); a parent -> one or
    two knobs moved by one; crossover -> knobs taken from either parent."""
    rng = random.Random(proposal.seed)
    parent = proposal.params.get("parent_code")
    if not parent:
        values = {k: rng.randrange(0, 8) for k in KNOBS}
        if rng.random() < 0.25:
            values["C"] = 0  # incorrect
        return knob_module(values)
    values = knobs_of(parent)
    second = proposal.params.get("second_parent_code")
    if second:
        other = knobs_of(second)
        values = {k: (values if rng.random() < 0.5 else other)[k] for k in KNOBS}
    for _ in range(rng.choice((1, 1, 2))):
        k = rng.choice(KNOBS)
        values[k] = values[k] + rng.choice((-1, 1))
    if proposal.params.get("feedback", {}).get("status") in (P.INCORRECT, P.COMPILE_ERROR):
        values = {k: min(max(v, 1), 7) for k, v in values.items()}  # a repair that reads the error
    return knob_module(values)


class KnobGenerator(Generator):
    """Engine-usable version of :func:`mutate`."""

    name = "knobs"
    description = "test double: mutates KNOB_* constants"

    async def generate(self, proposals: list[Proposal], ctx: RunContext) -> list[Generation]:
        return [Generation(p.id, mutate(p), self.name, label=p.params.get("edit")) for p in proposals]


def context(problem_ids: tuple[str, ...] = ("relu",), seed: int = 0) -> RunContext:
    from kforge.backends.triton import TritonBackend
    from kforge.problems import builtin_problems

    problems = [p for p in builtin_problems() if p.id in problem_ids]
    return RunContext(seed=seed, problems=problems, backend=TritonBackend(), recipe={})


class Driver:
    """Runs a search in-process: ask up to ``batch``, generate with ``gen``, judge with :func:`judge`,
    dedup by code hash per problem like the engine, and tell the results in an order shuffled by
    ``order_seed`` (arrival order must not matter)."""

    def __init__(self, search: Any, gen: Callable[[Proposal], str | None] = mutate, batch: int = 6,
                 order_seed: int = 0) -> None:
        self.search = search
        self.gen = gen
        self.batch = batch
        self.rng = random.Random(order_seed)
        self.proposals: list[Proposal] = []
        self.pending: list[Proposal] = []
        self.hashes: dict[tuple[str, str], Candidate] = {}
        self.judged: list[str] = []  # code hashes, in judging order
        self.results: dict[str, P.EvalResult] = {}
        self.produced: dict[str, str] = {}  # proposal id -> hash of the code its generation gave
        self.seq = 0

    def step(self) -> bool:
        """One round: ask, then tell a random part of what is in flight. False when nothing is left."""
        asked = self.search.ask(self.batch) if not self.search.done() else []
        self.proposals.extend(asked)
        self.pending.extend(asked)
        if not self.pending:
            return False
        self.rng.shuffle(self.pending)
        k = self.rng.randint(1, len(self.pending))
        for proposal in self.pending[:k]:
            self.tell_one(proposal)
        self.pending = self.pending[k:]
        return True

    def tell_one(self, proposal: Proposal) -> None:
        code = self.gen(proposal)
        if code is None:
            self.search.tell(None, proposal, None)
            return
        h = code_hash(code)
        self.produced[proposal.id] = h
        dup = self.hashes.get((proposal.problem_id, h))
        if dup is not None:
            self.search.tell(dup, proposal, None)
            return
        self.seq += 1
        cand = Candidate(id=f"c{self.seq:04d}", problem_id=proposal.problem_id, proposal_id=proposal.id, code=code,
                         code_hash=h, generator="knobs", parent_id=proposal.parent_id)
        self.hashes[(proposal.problem_id, h)] = cand
        result = judge(code, cand.id, proposal.problem_id)
        self.judged.append(h)
        self.results[cand.id] = result
        self.search.tell(cand, proposal, result)

    def run(self, max_rounds: int = 10_000) -> Driver:
        for _ in range(max_rounds):
            if not self.step():
                break
        return self

    def signature(self) -> dict[str, str]:
        """Proposal id -> its seed, parent and params (what the generator sees), as JSON. Candidate ids
        follow arrival order (the engine numbers candidates as they come), so they are replaced by the
        hash of their code."""
        by_id = {c.id: c.code_hash for c in self.hashes.values()}

        def norm(x: Any) -> Any:
            if isinstance(x, str):
                return by_id.get(x, x)
            if isinstance(x, list):
                return [norm(v) for v in x]
            if isinstance(x, dict):
                return {k: norm(v) for k, v in x.items()}
            return x

        return {p.id: json.dumps(norm([p.seed, p.parent_id, p.step, p.params]), sort_keys=True)
                for p in self.proposals}


def make_registry(*extra_modules: Any) -> Any:
    """The built-in plugins, the generators, the new searches and ``extra_modules``; no entry points."""
    import pluggy

    from kforge import hookspecs
    from kforge.plugins import DEFAULT_PLUGINS, build_registry

    wanted = [*DEFAULT_PLUGINS, "kforge.generators.tune", "kforge.searches.evolution", "kforge.searches.refine"]
    pm = pluggy.PluginManager("kforge")
    pm.add_hookspecs(hookspecs)
    for name in dict.fromkeys(wanted):
        pm.register(importlib.import_module(name), name=name)
    for module in extra_modules:
        pm.register(module, name=getattr(module, "__name__", repr(module)))
    return build_registry(pm)
