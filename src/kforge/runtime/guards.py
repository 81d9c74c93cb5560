"""The checks after correctness: did forward compute with the reference's own torch ops (op check), and
did the profiler see the candidate launch a kernel it defines (profiler check)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from kforge.runtime import protocol as P
from kforge.runtime.problem import STRUCTURAL_OPS, clone_inputs, compute_ops, draw_inputs
from kforge.runtime.sandbox_client import Sandbox, SandboxProtocolError
from kforge.runtime.wire import dtype_from_name

if TYPE_CHECKING:
    from kforge.runtime.judge import Judge  # the class these methods are mixed into

_CUDA_KERNEL = (r"__global__\s+(?:(?:__launch_bounds__|__maxnreg__)\s*\([^)]*\)\s*|[\w:<>\*]+\s+|\*\s*)*?"
                r"(?!__launch_bounds__|__maxnreg__)(\w+)\s*\(")
_KERNEL_PATTERNS = {
    "triton": None,  # @triton.jit function names, from the AST
    # __global__ [qualifiers, __launch_bounds__(..) in either order, the return type] name(
    "cuda": re.compile(_CUDA_KERNEL),
    "cutlass": re.compile(_CUDA_KERNEL),
}


def _own_kernel_names(source: str, backend: str) -> set[str]:
    """Names of the kernels the candidate defines (what the profiler should see it launch)."""
    names: set[str] = set()
    if backend == "triton":
        import ast

        try:
            tree = ast.parse(source)
        except SyntaxError:
            return names
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for dec in node.decorator_list:
                    d = dec.func if isinstance(dec, ast.Call) else dec
                    if (isinstance(d, ast.Attribute) and d.attr in ("jit", "autotune", "heuristics")) or \
                            (isinstance(d, ast.Name) and d.id == "jit"):
                        names.add(node.name)
        return names
    pattern = _KERNEL_PATTERNS.get(backend)
    if pattern is not None:
        names.update(pattern.findall(source))
    return names


class Guards:
    """Judge methods: the op check and the profiler check."""

    def _ops_check(self: Judge, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any, ref_model: Any) -> bool:  # type: ignore[misc]  # a mixin of Judge
        """Reject a candidate whose forward runs every compute op the reference runs: it computed the
        answer with the library (behind a token kernel, say), whatever else it launched."""
        with self._shared_alloc():
            inputs = draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype_from_name(req.dtype),
                                 self.device)
        ref_ops = compute_ops(ref_model, clone_inputs(inputs))
        if not ref_ops:
            return True
        reply = sb.call({"cmd": "ops"}, timeout=req.run_timeout_s * 2, tensors={"inputs": inputs})
        if not reply.get("ok"):
            self._fail_reply(res, reply)
            return False
        ops = reply.get("ops", [])
        if not isinstance(ops, list):
            raise SandboxProtocolError("the op list is not a list")
        cand_ops = {str(o) for o in ops} - STRUCTURAL_OPS
        if ref_ops <= cand_ops:
            res.status, res.guard = P.REJECTED, "library_op"
            res.error = (f"forward ran every compute op of the reference ({', '.join(sorted(ref_ops))}): the answer "
                         "came from PyTorch, not from the candidate's kernels")
            return False
        return True

    def _profile_check(self: Judge, req: P.EvalRequest, res: P.EvalResult, sb: Sandbox, module: Any) -> bool:  # type: ignore[misc]  # a mixin of Judge
        with self._shared_alloc():
            inputs = draw_inputs(module, self._sysrand.getrandbits(63), "problem", dtype_from_name(req.dtype),
                                 self.device)
        reply = sb.call({"cmd": "profile"}, timeout=req.run_timeout_s * 2, tensors={"inputs": inputs})
        if not reply.get("ok"):
            if reply.get("phase") == "profiler":
                res.flags.append("profiler_unavailable")
                return True
            self._fail_reply(res, reply)
            return False
        kernels = reply.get("kernels", [])
        if not isinstance(kernels, list):
            raise SandboxProtocolError("the profiler's kernel list is not a list")
        names = [str(n) for n in kernels][:200]
        res.kernels = names
        busy = reply.get("device_ms")
        if isinstance(busy, (int, float)) and math.isfinite(busy) and busy >= 0:
            # The device's busy time over one profiled call (kernels, copies; a warm L2): what the
            # launch_bound flag reads when timing falls back to plain calls.
            res.diagnostics["profiled_device_ms"] = round(float(busy), 6)
        own = _own_kernel_names(req.candidate_source, req.backend)
        if own and not any(o in n for n in names for o in own):
            res.status, res.guard = P.REJECTED, "profiler"
            res.error = (f"the profiler saw no kernel defined by the candidate ({', '.join(sorted(own))}) run in "
                         f"forward; it launched: {', '.join(names[:8]) or 'nothing on the GPU'}")
            return False
        return True
