"""Test doubles that judge without a GPU, as plugins the engine can load.

- ``landscape-judge``: scores a Triton matmul by its launch constants (BLOCK_M/N/K, GROUP_M,
  num_warps, num_stages, as the ``tune`` generator finds them) on a landscape with a known optimum
  (:data:`MATMUL_OPTIMUM`, speedup :data:`MATMUL_BEST`); tiles over the "shared memory" limit fail
  to compile. Real code, real tune variants, a fake but deterministic clock.
- ``knob-judge`` and the ``knobs`` generator: the KNOB_* landscape of :mod:`search_helpers`.
"""

from __future__ import annotations

import math
from typing import Any

import search_helpers

from kforge.api import Executor
from kforge.hookspecs import hookimpl
from kforge.runtime import protocol as P
from kforge.tunables import find_sites

MATMUL_OPTIMUM = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4}
MATMUL_BEST = 4.0


def matmul_constants(code: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for site in find_sites(code):
        out.setdefault(site.name, site.value)
    return out


def matmul_speedup(values: dict[str, int]) -> float | None:
    """None: does not compile (the tile needs more shared memory than there is)."""
    bm, bn, bk = values.get("BLOCK_M", 64), values.get("BLOCK_N", 64), values.get("BLOCK_K", 32)
    if (bm * bk + bk * bn) * 4 * max(values.get("num_stages", 3), 1) > 512 * 1024:
        return None
    d = 0.0
    for name, best in MATMUL_OPTIMUM.items():
        v = values.get(name, best)
        d += (v - best) ** 2 / 4 if name == "num_stages" else (math.log2(v) - math.log2(best)) ** 2
    return round(0.3 + (MATMUL_BEST - 0.3) / (1.0 + 0.4 * d), 6)


class LandscapeJudge(Executor):
    name = "landscape-judge"
    description = "test double: a matmul's speedup from its launch constants"
    capacity = 4

    async def start(self, log_dir: Any = None) -> None:
        self.device_info = {"device": "landscape (test double)", "device_kind": "none"}

    async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
        s = matmul_speedup(matmul_constants(request.candidate_source))
        if s is None:
            return P.EvalResult(request.request_id, request.problem_id, P.COMPILE_ERROR,
                                error="triton.runtime.errors.OutOfResources: out of resource: shared memory")
        return P.EvalResult(request.request_id, request.problem_id, P.CORRECT, speedup_vs_eager=s,
                            roofline_fraction=s / 5, timing={"median_ms": 1 / s}, baseline_eager={"median_ms": 1.0},
                            device="landscape", device_kind="none")


class KnobJudge(Executor):
    name = "knob-judge"
    description = "test double: the KNOB_* landscape"
    capacity = 3

    async def start(self, log_dir: Any = None) -> None:
        self.device_info = {"device": "knobs (test double)", "device_kind": "none"}

    async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
        return search_helpers.judge(request.candidate_source, request.request_id, request.problem_id)


@hookimpl
def register_executors(register):
    register(LandscapeJudge)
    register(KnobJudge)


@hookimpl
def register_generators(register):
    register(search_helpers.KnobGenerator)
