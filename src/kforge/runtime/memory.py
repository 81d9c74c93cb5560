"""The judge's memory plan per problem, and who an out-of-memory failure belongs to
(docs/evaluation.md, "Memory")."""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

import torch

from kforge.runtime import protocol as P
from kforge.runtime.problem import draw_inputs, flatten_outputs
from kforge.runtime.sandbox_client import _tensor_bytes
from kforge.runtime.wire import dtype_from_name

if TYPE_CHECKING:
    from kforge.runtime.judge import Judge  # the class these methods are mixed into

# The memory plan (docs/evaluation.md, "Memory"). Timing rotates TIMING_SETS input sets when they are
# small; past ROTATION_MAX_BYTES of inputs it keeps one set (fresh values are written into it every
# round anyway, so a candidate that caches by pointer is still caught). A problem whose evaluation would
# need more than the GPU's share for one judge (EVAL_FACTOR x its working set: the judge and the
# sandbox each hold about three) is judged holding the GPU alone. Past RELEASE_ABOVE_BYTES of working
# set, the judge returns its cached blocks to the driver between phases, so the sandbox can use them.
TIMING_SETS = 3
ROTATION_MAX_BYTES = 1 << 30
EVAL_FACTOR = 7
RELEASE_ABOVE_BYTES = 1 << 30
# A sandbox that runs out of GPU memory is blamed only when it asked for more than this multiple of the
# problem's working set (plus CANDIDATE_MEMORY_SLACK): the reference's forward needs one; an honest
# kernel with its copies of the inputs, its outputs and scratch needs a few. Less than that, and the
# judge's plan (or another process) left it too little: an infrastructure failure, judged again alone.
CANDIDATE_MEMORY_FACTOR = 4
CANDIDATE_MEMORY_SLACK = 1 << 30
_ALLOC = re.compile(r"Tried to allocate ([0-9.]+) (B|KiB|MiB|GiB|TiB)")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_OOM = re.compile(r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory")


def _out_of_memory(res: P.EvalResult) -> bool:
    """A GPU out-of-memory failure, in the sandbox or in the judge itself."""
    return res.status in (P.RUNTIME_ERROR, P.INFRA_ERROR) and bool(_OOM.search(res.error or ""))


class MemoryPlanning:
    """Judge methods: the plan, its report, releasing memory between phases, blaming an OOM."""

    def _problem_key(self: Judge, req: P.EvalRequest, shape: dict[str, Any]) -> tuple[Any, ...]:  # type: ignore[misc]  # a mixin of Judge
        return (req.problem_id, hashlib.sha256(req.problem_source.encode()).hexdigest(),
                json.dumps(shape, sort_keys=True, default=str), req.dtype)

    def _memory_plan(self: Judge, req: P.EvalRequest, module: Any, ref_model: Any, alone: bool, lean: bool) -> dict[str, Any]:  # type: ignore[misc]  # a mixin of Judge
        """What this problem needs and how the judge will hold it (docs/evaluation.md, "Memory"): the
        working set of one reference forward (its inputs, outputs and temporaries), measured once per
        problem and shape by a forward of the reference before any candidate code runs, then how many
        timing sets, whether to hold the GPU alone and whether to release cached memory between phases."""
        key = self._problem_key(req, req.shape)
        measured = self._plans.get(key)
        if measured is None:
            dev, dtype = self.device, dtype_from_name(req.dtype)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                self._peak_floor = max(self._peak_floor, torch.cuda.max_memory_reserved(dev))
            with self._shared_alloc():
                inputs = draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype, dev)
            in_bytes = _tensor_bytes(inputs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                before = torch.cuda.memory_allocated(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            with torch.no_grad():
                out = ref_model(*inputs)  # on throwaway inputs: a reference that writes them harms nothing
            out_bytes = _tensor_bytes(flatten_outputs(out))
            forward = out_bytes
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                forward = max(out_bytes, torch.cuda.max_memory_allocated(dev) - before)
                self._peak_floor = max(self._peak_floor, torch.cuda.max_memory_reserved(dev))
            del out, inputs
            measured = {"input_bytes": in_bytes, "output_bytes": out_bytes, "working_set": in_bytes + forward}
            self._plans[key] = measured
        working = measured["working_set"]
        total = free = 0
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
        big = self.device.type == "cuda" and self.sharing > 1 and EVAL_FACTOR * working * self.sharing > 0.9 * total
        plan = {
            "working_set_bytes": int(working),
            "working_set_gib": round(working / 2**30, 4),
            "input_gib": round(measured["input_bytes"] / 2**30, 4),
            "output_gib": round(measured["output_bytes"] / 2**30, 4),
            "timing_sets": 1 if lean or TIMING_SETS * measured["input_bytes"] > ROTATION_MAX_BYTES else TIMING_SETS,
            "alone": bool(alone or big),
            "release_between_phases": bool(lean or working > RELEASE_ABOVE_BYTES),
            "judges_on_gpu": self.sharing,
        }
        if total:
            plan["device_free_gib"] = round(free / 2**30, 2)
            plan["device_total_gib"] = round(total / 2**30, 2)
        if lean:
            plan["lean"] = True
        return plan

    def _memory_report(self: Judge, res: P.EvalResult) -> dict[str, Any]:  # type: ignore[misc]  # a mixin of Judge
        """The plan with what it came to: the judge's and the sandbox's peaks against the working set."""
        plan = dict(self._plan)
        working = plan.get("working_set_gib") or 0.0
        judge = res.diagnostics.get("judge_peak_gib")
        sandbox = res.diagnostics.get("sandbox_peak_gib")
        report: dict[str, Any] = {"working_set_gib": working, "judge_peak_gib": judge, "sandbox_peak_gib": sandbox,
                                  "plan": plan}
        if working > 0 and "judge_held_gib" in plan:
            report["judge_held_over_working_set"] = round(plan["judge_held_gib"] / working, 3)
        if working > 0 and isinstance(judge, (int, float)):
            report["peak_over_working_set"] = round((judge + (sandbox or 0.0)) / working, 3)
        return report

    def _release(self: Judge) -> None:  # type: ignore[misc]  # a mixin of Judge
        """Between phases of a large problem: cached blocks back to the driver, for the sandbox."""
        if self.device.type == "cuda" and self._plan.get("release_between_phases"):
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def _candidate_oom(self: Judge, res: P.EvalResult) -> bool:  # type: ignore[misc]  # a mixin of Judge
        """Whether an out-of-memory failure is the candidate's own: it happened in its sandbox, and the
        sandbox asked for more than CANDIDATE_MEMORY_FACTOR x the working set (what it held at its peak
        plus the allocation that failed). Otherwise it is the judge's plan's, or the machine's."""
        if res.status != P.RUNTIME_ERROR:
            return False  # out of memory in the judge itself
        plan = (res.diagnostics.get("memory") or {}).get("plan") or {}
        working = float(plan.get("working_set_bytes") or 0)
        held = float(res.diagnostics.get("sandbox_peak_gib") or 0.0) * 2**30
        m = _ALLOC.search(res.error or "")
        asked = float(m.group(1)) * _UNITS[m.group(2)] if m else 0.0
        allowance = CANDIDATE_MEMORY_FACTOR * working + CANDIDATE_MEMORY_SLACK
        if working > 0 and held + asked > allowance:
            res.error = (f"the candidate ran out of GPU memory asking for {(held + asked) / 2**30:.2f} GiB (it held "
                         f"{held / 2**30:.2f} GiB and asked for {asked / 2**30:.2f} GiB more), over the "
                         f"{allowance / 2**30:.2f} GiB a kernel for this problem may use ({CANDIDATE_MEMORY_FACTOR}x "
                         f"its working set of {working / 2**30:.2f} GiB, plus {CANDIDATE_MEMORY_SLACK >> 30} GiB): "
                         f"{res.error or ''}")[:4000]
            return True
        return False
