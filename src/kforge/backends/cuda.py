"""The CUDA C++ backend: candidates compile ``__global__`` kernels with ``torch.utils.cpp_extension.load_inline``."""

from __future__ import annotations

import ast

from kforge.api import Backend
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
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return []
        problems = []
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        if not any("__global__" in s for s in strings):
            problems.append("backend: no __global__ CUDA kernel found in the candidate's source strings")
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                 for n in ast.walk(tree) if isinstance(n, ast.Call)}
        if not calls & {"load_inline", "load"}:
            problems.append("backend: the CUDA source is never compiled (no load_inline call)")
        if not any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body):
            problems.append("interface: no class ModelNew defined at module level")
        return problems

    def guidance(self) -> str:
        return GUIDANCE


@hookimpl
def register_backends(register):
    register(CudaBackend)
