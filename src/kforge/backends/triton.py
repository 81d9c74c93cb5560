"""The Triton backend: candidates are Python modules with ``@triton.jit`` kernels."""

from __future__ import annotations

from kforge.api import Backend
from kforge.checks import check_candidate
from kforge.hookspecs import hookimpl

GUIDANCE = """\
Write the kernel in Triton. Define one or more `@triton.jit` functions and a `class ModelNew(nn.Module)`
with the same `__init__` and `forward` signatures as `Model`. `forward` must launch your Triton kernel(s)
to compute the result (allocating outputs with `torch.empty` is fine); do not compute the result with
torch operators or call `Model`. Use masks for out-of-range offsets and `tl.constexpr` block sizes.
"""


class TritonBackend(Backend):
    name = "triton"
    description = "Triton kernels (@triton.jit) called from ModelNew.forward"
    language = "triton"

    def static_check(self, code: str) -> list[str]:
        return [str(v) for v in check_candidate(code, self.name)]

    def guidance(self) -> str:
        return GUIDANCE


@hookimpl
def register_backends(register):
    register(TritonBackend)
