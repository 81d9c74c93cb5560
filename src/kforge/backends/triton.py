"""The Triton backend: candidates are Python modules with ``@triton.jit`` kernels."""

from __future__ import annotations

import ast

from kforge.api import Backend
from kforge.hookspecs import hookimpl

GUIDANCE = """\
Write the kernel in Triton. Define one or more `@triton.jit` functions and a `class ModelNew(nn.Module)`
with the same `__init__` and `forward` signatures as `Model`. `forward` must launch your Triton kernel(s)
to compute the result (allocating outputs with `torch.empty` is fine); do not compute the result with
torch operators or call `Model`. Use masks for out-of-range offsets and `tl.constexpr` block sizes.
"""


def _decorator_names(fn: ast.FunctionDef) -> set[str]:
    names = set()
    for dec in fn.decorator_list:
        node = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
    return names


class TritonBackend(Backend):
    name = "triton"
    description = "Triton kernels (@triton.jit) called from ModelNew.forward"
    language = "triton"

    def static_check(self, code: str) -> list[str]:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return []  # the sandbox reports it as a compile error with the line
        problems = []
        jitted = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and
                  _decorator_names(n) & {"jit", "autotune", "heuristics"}]
        if not jitted:
            problems.append("backend: no @triton.jit kernel found (rule: the candidate must contain a kernel "
                            "in the backend's language)")
        if not any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body):
            problems.append("interface: no class ModelNew defined at module level")
        return problems

    def guidance(self) -> str:
        return GUIDANCE


@hookimpl
def register_backends(register):
    register(TritonBackend)
