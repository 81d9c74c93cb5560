"""kforge-example: a generator that proposes each built-in problem's hand-written example solution.

A complete kforge plugin, small enough to copy: one class with a ``name``, a ``description`` and
declared ``options``, and one hook that registers it. Use it in a recipe with::

    [generator]
    name = "solutions"
"""

from __future__ import annotations

import kforge
from kforge.api import Generation, Generator, Proposal, RunContext
from kforge.options import Option


class SolutionsGenerator(Generator):
    name = "solutions"
    description = "proposes each built-in problem's hand-written example solution (no model needed)"
    options = (
        Option("backend", str, None, "use this backend's solutions (default: the run's backend)"),
    )

    async def generate(self, proposals: list[Proposal], ctx: RunContext) -> list[Generation]:
        backend = self.opts.backend or ctx.backend.name
        out = []
        for p in proposals:
            problem = ctx.problems_by_id.get(p.problem_id)
            path = problem.solutions().get(backend) if problem is not None else None
            if path is None:
                # code=None tells the search there is nothing (more) to offer for this problem.
                out.append(Generation(p.id, None, self.name,
                                      error=f"no {backend} example solution for problem {p.problem_id!r}"))
                continue
            out.append(Generation(p.id, path.read_text(), self.name, label=path.name,
                                  meta={"file": str(path)}))
        return out


@kforge.hookimpl
def register_generators(register):
    register(SolutionsGenerator)
