"""A test double that judges a candidate differently the second time: for the re-timing of winners.

A candidate is a small Triton module (it passes the backend's static checks) with three constants:
``FIRST`` (its speedup at its first judging; 0 means incorrect), ``AGAIN`` (its speedup when judged
again; 0 means incorrect on the fresh inputs) and ``TAG`` (to tell files apart). A re-timing is a
request whose id is ``<candidate>-r<k>`` (what best-of-n asks), so the verdicts do not depend on the
order of evaluations, and a resumed run gets the same ones.

Every request is logged in :data:`LOG` (id, problem, trials, seeds). With ``KFORGE_TEST_HANG_DIR``
set, the first re-timing writes ``hanging`` into that folder and never returns (a test kills the
process there).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from pathlib import Path
from typing import Any

from kforge.api import Executor
from kforge.hookspecs import hookimpl
from kforge.runtime import protocol as P

LOG: list[dict[str, Any]] = []
_CONST = re.compile(r"^(FIRST|AGAIN|TAG) = (\S+)$", re.M)

TEMPLATE = """import torch
import triton
import triton.language as tl

FIRST = {first}
AGAIN = {again}
TAG = {tag}


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


def module(first: float, again: float, tag: int) -> str:
    return TEMPLATE.format(first=first, again=again, tag=tag)


def write_candidates(root: Path, spec: dict[str, list[tuple[float, float]]]) -> Path:
    """``<root>/<problem>/<k>.py`` for each (first, again) pair; replay proposes them in this order."""
    for pid, pairs in spec.items():
        folder = root / pid
        folder.mkdir(parents=True, exist_ok=True)
        for k, (first, again) in enumerate(pairs):
            (folder / f"{k}.py").write_text(module(first, again, k))
    return root


def constants(code: str) -> dict[str, float]:
    return {k: float(v) for k, v in _CONST.findall(code)}


def is_retime(request_id: str) -> bool:
    return re.search(r"-r\d+$", request_id) is not None


class RetimeJudge(Executor):
    name = "retime-judge"
    description = "test double: FIRST speedup at the first judging, AGAIN when judged again"
    capacity = 2

    async def start(self, log_dir: Any = None) -> None:
        self.device_info = {"device": "retime (test double)", "device_kind": "none"}
        self.rng = random.SystemRandom()

    async def evaluate(self, request: P.EvalRequest) -> P.EvalResult:
        retime = is_retime(request.request_id)
        seeds = [self.rng.getrandbits(63) for _ in range(request.trials)]  # as the real judge: from the OS
        LOG.append({"id": request.request_id, "problem": request.problem_id, "trials": request.trials,
                    "retime": retime, "seeds": seeds})
        hang = os.environ.get("KFORGE_TEST_HANG_DIR")
        if retime and hang:
            (Path(hang) / "hanging").write_text(request.request_id)
            await asyncio.sleep(3600)
        await asyncio.sleep(0.01)  # let results arrive in some order
        s = constants(request.candidate_source)["AGAIN" if retime else "FIRST"]
        if s <= 0:
            return P.EvalResult(request.request_id, request.problem_id, P.INCORRECT, guard="tolerance",
                                error="trial 3 (wide inputs): output differs", seeds=seeds, trials_run=3,
                                device="retime", device_kind="none")
        return P.EvalResult(request.request_id, request.problem_id, P.CORRECT, speedup_vs_eager=s,
                            timing={"median_ms": 1.0 / s}, baseline_eager={"median_ms": 1.0}, seeds=seeds,
                            trials_run=request.trials, trials_passed=request.trials, device="retime",
                            device_kind="none")


@hookimpl
def register_executors(register):
    register(RetimeJudge)
