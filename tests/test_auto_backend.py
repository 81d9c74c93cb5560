"""The ``auto`` backend: each candidate of a mixed run is checked and judged in its own language."""

from __future__ import annotations

from kforge.backends.auto import AutoBackend, language_of
from kforge.engine import build_request
from kforge.plugins import get_registry
from kforge.problems import SOLUTIONS_DIR, builtin_problems
from kforge.recipe import CORE_OPTIONS

TRITON = (SOLUTIONS_DIR / "triton" / "relu.py").read_text()
CUDA = (SOLUTIONS_DIR / "cuda" / "relu.py").read_text()
CUTLASS = CUDA.replace("#include <torch/extension.h>", "#include <torch/extension.h>\n#include <cutlass/cutlass.h>")


def test_language_is_read_from_the_code() -> None:
    assert language_of(TRITON) == "triton"
    assert language_of(CUDA) == "cuda"
    assert language_of(CUTLASS) == "cutlass"
    # A __global__ in a comment of a Triton file is not a CUDA extension.
    assert language_of("# like a __global__ kernel\n" + TRITON) == "triton"


def test_requests_and_static_checks_are_the_candidates_own() -> None:
    relu = next(p for p in builtin_problems() if p.id == "relu")
    ev = CORE_OPTIONS["eval"].resolve({}, "eval")
    auto = get_registry().get("backends", "auto")()
    assert isinstance(auto, AutoBackend)
    assert build_request(relu, TRITON, "a", auto, "small", ev, 0).backend == "triton"
    assert build_request(relu, CUDA, "b", auto, "small", ev, 0).backend == "cuda"
    cutlass_installed = "cutlass" in get_registry().names("backends")
    assert build_request(relu, CUTLASS, "c", auto, "small", ev, 0).backend == ("cutlass" if cutlass_installed
                                                                              else "cuda")
    # The cuda rules apply to CUDA code: torch compute in forward is rejected as in a cuda run.
    cheat = CUDA.replace("return relu_ext.relu_forward(x)", "return torch.relu(x)")
    assert cheat != CUDA
    cuda = get_registry().get("backends", "cuda")()
    assert auto.static_check(CUDA) == cuda.static_check(CUDA) == []
    assert auto.static_check(cheat) == cuda.static_check(cheat) != []
    assert auto.static_check(TRITON) == []
    assert "Triton" in auto.guidance() and "CUDA C++" in auto.guidance()
