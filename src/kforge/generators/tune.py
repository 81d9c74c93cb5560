"""The ``tune`` generator: variants of a parent candidate with its tunable constants changed. No model.

Tunable constants (block sizes, ``num_warps``, ``num_stages``, upper-case module constants, CUDA
``#define``/``constexpr`` constants and launch block sizes) are found with the AST, never by running
the code: :mod:`kforge.tunables` says which.

Each constant gets a range: the recipe's (``ranges``, by name or glob) or an inferred one (powers of
two around the current value, 1-6 stages, 1-32 warps, at most 1024 CUDA threads). A proposal's seed
picks which constants change (up to ``max_changes``) and to what, so a run is deterministic; a
variant whose code was proposed before for the problem is never proposed again. The parent is
``Proposal.params["parent_code"]`` or, without one, the problem's example solution in the run's
backend (proposed itself first, unchanged, when ``include_parent`` is on).
"""

from __future__ import annotations

import ast
import fnmatch
import itertools
import random
from typing import Any

from kforge.api import Generation, Generator, Proposal, RunContext, code_hash
from kforge.hookspecs import hookimpl
from kforge.options import Option, RecipeError
from kforge.tunables import TUNABLE, Site, apply_changes, describe, find_sites, infer_range

__all__ = ["TUNABLE", "Site", "TuneGenerator", "apply_changes", "describe", "find_sites", "infer_range"]


class TuneGenerator(Generator):
    name = "tune"
    description = "variants of a parent candidate with its block sizes, num_warps, num_stages and constants changed"
    options = (
        Option("ranges", dict, None, "values to try by constant name or glob, e.g. {BLOCK_M = [64, 128], "
               "num_warps = [4, 8]} (default: inferred around each current value)"),
        Option("include", list, None, "tune only constants whose name matches one of these globs", item_type=str),
        Option("exclude", list, None, "never tune constants whose name matches one of these globs", item_type=str),
        Option("max_changes", int, 2, "most constants changed in one variant", minimum=1),
        Option("include_parent", bool, True, "without a parent candidate, propose the example solution itself "
               "first (the tuning baseline)"),
        Option("module_constants", bool, True, "also tune module-level upper-case int constants"),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.ranges: dict[str, list[int]] = {}
        for name, values in dict(self.opts.ranges or {}).items():
            if not isinstance(values, list) or not values or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in values):
                raise RecipeError(f"generator.ranges.{name} must be a non-empty list of positive integers, "
                                  f"not {values!r}")
            self.ranges[str(name)] = list(values)
        self.seen: dict[str, set[str]] = {}

    def wanted(self, site: Site) -> bool:
        include, exclude = self.opts.include, self.opts.exclude
        if include and not any(fnmatch.fnmatchcase(site.name, g) for g in include):
            return False
        return not (exclude and any(fnmatch.fnmatchcase(site.name, g) for g in exclude))

    def domain(self, site: Site) -> list[int]:
        for pattern, values in self.ranges.items():
            if fnmatch.fnmatchcase(site.name, pattern):
                return [v for v in values if v != site.value]
        return infer_range(site)

    def parent_for(self, proposal: Proposal, ctx: RunContext) -> tuple[str | None, str]:
        code = proposal.params.get("parent_code")
        if code:
            return str(code), f"parent {proposal.parent_id or 'candidate'}"
        problem = ctx.problems_by_id.get(proposal.problem_id)
        path = problem.solutions().get(ctx.backend.name) if problem is not None else None
        if path is None:
            return None, ""
        return path.read_text(), "example solution"

    async def generate(self, proposals: list[Proposal], ctx: RunContext) -> list[Generation]:
        return [self.propose(p, ctx) for p in proposals]

    def propose(self, proposal: Proposal, ctx: RunContext) -> Generation:
        parent, origin = self.parent_for(proposal, ctx)
        if parent is None:
            return Generation(proposal.id, None, self.name, meta={"exhausted": True}, error=(
                f"tune: no parent for problem {proposal.problem_id!r}: the proposal carries no parent_code and "
                f"the problem has no {ctx.backend.name} example solution"))
        seen = self.seen.setdefault(proposal.problem_id, set())
        parent_hash = code_hash(parent)
        if (origin == "example solution" and self.opts.include_parent
                and parent_hash not in seen):
            seen.add(parent_hash)
            return Generation(proposal.id, parent, self.name, label="parent (unchanged)",
                              meta={"parent": origin, "changes": {}})
        seen.add(parent_hash)
        sites = [s for s in find_sites(parent, self.opts.module_constants) if self.wanted(s)]
        domains = {s: self.domain(s) for s in sites}
        sites = [s for s in sites if domains[s]]
        if not sites:
            return Generation(proposal.id, None, self.name, meta={"exhausted": True}, error=(
                f"tune: the {origin} of problem {proposal.problem_id!r} has no tunable constants (launch keywords "
                f"like BLOCK_SIZE/num_warps/num_stages, upper-case int constants, CUDA block sizes)"))
        rng = random.Random(proposal.seed)
        for changes in self._choices(sites, domains, rng):
            code = apply_changes(parent, changes)
            try:
                ast.parse(code)
            except SyntaxError:
                continue
            h = code_hash(code)
            if h in seen:
                continue
            seen.add(h)
            return Generation(proposal.id, code, self.name, label=describe(changes), meta={
                "parent": origin, "changes": {f"{s.name} ({s.detail})": [s.value, v] for s, v in changes.items()},
                "sites": len(sites)})
        return Generation(proposal.id, None, self.name, meta={"exhausted": True}, error=(
            f"tune: every variant of the {origin} of problem {proposal.problem_id!r} within the ranges has been "
            f"proposed"))

    def _choices(self, sites: list[Site], domains: dict[Site, list[int]], rng: random.Random) -> Any:
        """Random picks first (1 to max_changes constants), then every single change and every pair in a
        seeded order, so a variant is always found while one is left."""
        most = min(int(self.opts.max_changes), len(sites))
        for _ in range(64):
            k = rng.choices(range(1, most + 1), weights=[2 ** -i for i in range(most)])[0]
            chosen = rng.sample(sites, k)
            yield {s: rng.choice(domains[s]) for s in chosen}
        singles = [(s, v) for s in sites for v in domains[s]]
        rng.shuffle(singles)
        for s, v in singles:
            yield {s: v}
        if most >= 2:
            pairs = [((a, va), (b, vb)) for a, b in itertools.combinations(sites, 2)
                     for va in domains[a] for vb in domains[b]]
            rng.shuffle(pairs)
            for (a, va), (b, vb) in pairs[:20000]:
                yield {a: va, b: vb}


@hookimpl
def register_generators(register):
    register(TuneGenerator)
