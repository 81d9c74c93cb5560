"""The ``auto`` backend: each candidate is checked and judged in the language it is written in.

A run over a mixed set (a replayed folder of Triton and CUDA files, a generator told it may write
either) names ``[backend] name = "auto"``. Each candidate's backend is read from its code: CUTLASS or
CuTe headers make it ``cutlass`` (when that plugin is installed), a ``__global__`` kernel compiled
with ``torch.utils.cpp_extension`` makes it ``cuda``, anything else is ``triton``. Its static checks
and its ``EvalRequest`` are exactly those a run with that backend would make, so the judge and the
compile stage see no difference; what a mixed run gains is that CUDA builds overlap Triton timing.
"""

from __future__ import annotations

import re
from typing import Any

from kforge.api import Backend
from kforge.hookspecs import hookimpl
from kforge.runtime.build import needs_build

_CUTLASS = re.compile(r"#\s*include\s*[<\"](?:cutlass|cute)/|\bkforge_cutlass\b")
_CUDA = re.compile(r"__global__")


def language_of(code: str) -> str:
    """'cutlass', 'cuda' or 'triton': the backend a candidate's code is written for. C++ is what the
    compile stage would build (``needs_build``); anything else is Triton."""
    if not needs_build(code):
        return "triton"
    if _CUTLASS.search(code):
        return "cutlass"
    return "cuda" if _CUDA.search(code) else "triton"


class AutoBackend(Backend):
    name = "auto"
    description = "each candidate in its own language: triton, cuda or cutlass, read from its code"
    language = "triton or cuda"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._real: dict[str, Backend] = {}

    def for_code(self, code: str) -> Backend:
        """The backend that checks and judges ``code``."""
        name = language_of(code)
        if name not in self._real:
            from kforge.plugins import get_registry

            reg = get_registry()
            if name == "cutlass" and "cutlass" not in reg.items.get("backends", {}):
                name = "cuda"  # without the plugin a CUTLASS candidate is CUDA C++ that needs headers
            self._real[name] = reg.get("backends", name)()
        return self._real[name]

    def static_check(self, code: str) -> list[str]:
        return self.for_code(code).static_check(code)

    def guidance(self) -> str:
        from kforge.backends.cuda import GUIDANCE as CUDA
        from kforge.backends.triton import GUIDANCE as TRITON

        return ("You may write the kernel in Triton or in CUDA C++; either is judged in its own language.\n\n"
                f"Triton:\n{TRITON}\nCUDA C++:\n{CUDA}")


@hookimpl
def register_backends(register):
    register(AutoBackend)
