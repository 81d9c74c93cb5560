"""The CUDA C++ backend: candidates compile ``__global__`` kernels with ``torch.utils.cpp_extension.load_inline``."""

from __future__ import annotations

from kforge.api import Backend
from kforge.checks import check_candidate
from kforge.hookspecs import hookimpl

GUIDANCE = """\
Write the kernel in CUDA C++ and compile it with `torch.utils.cpp_extension.load_inline` at module level:
a CUDA source string with one or more `__global__` kernels and a host function that launches them, a C++
declaration of that host function, and `load_inline(name=..., cpp_sources=..., cuda_sources=..., functions=[...])`.
Define `class ModelNew(nn.Module)` with the same `__init__` and `forward` signatures as `Model`; `forward` calls
the compiled function. Do not compute the result with torch operators or call `Model`.
"""


class CudaBackend(Backend):
    name = "cuda"
    description = "CUDA C++ kernels compiled with torch.utils.cpp_extension.load_inline"
    language = "cuda"

    def static_check(self, code: str) -> list[str]:
        return [str(v) for v in check_candidate(code, self.name)]

    def guidance(self) -> str:
        return GUIDANCE


@hookimpl
def register_backends(register):
    register(CudaBackend)
