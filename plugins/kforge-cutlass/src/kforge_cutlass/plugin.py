"""The ``cutlass`` backend: CUDA C++ candidates built on CUTLASS/CuTe headers, compiled with ``load_inline``.

Registered through kforge's ``register_backends`` hook (entry point ``cutlass`` in the group ``kforge``).
Its static checks are kforge's ``cutlass`` rules: the ``cuda`` rules, where a kernel may also be a
``#include <cutlass/...>`` or ``<cute/...>`` in a source string compiled with ``load_inline`` (CUTLASS's
own ``__global__`` kernels live in its headers), or a CuTe DSL ``@cute.kernel``.
"""

from __future__ import annotations

from pathlib import Path

import kforge
from kforge.api import Backend
from kforge.checks import check_candidate

SOLUTIONS_DIR = Path(__file__).parent / "solutions"

GUIDANCE = """\
Write the kernel in CUDA C++ using NVIDIA CUTLASS (cutlass::gemm::device::Gemm and friends) or CuTe, and
compile it with `torch.utils.cpp_extension.load_inline` at module level. The CUTLASS headers come from
the `kforge_cutlass` package: pass `extra_include_paths=include_paths()` and
`extra_cuda_cflags=CUTLASS_NVCC_FLAGS` (-O3, -DNDEBUG to drop CUTLASS's device asserts,
--expt-relaxed-constexpr, and -U flags that undo torch's __CUDA_NO_HALF_OPERATORS__/
__CUDA_NO_BFLOAT16_CONVERSIONS__ defines so __half/__nv_bfloat16 arithmetic compiles). torch already
compiles as C++17 or later (CUTLASS needs 17), for the GPU's arch (TORCH_CUDA_ARCH_LIST, e.g. 9.0a on
an H100, so sm_90a features such as wgmma/TMA are available; CUTLASS 2.x `arch::Sm80` kernels also run
there). The shape of it:

```python
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline
from kforge_cutlass import CUTLASS_NVCC_FLAGS, include_paths

CUDA_SRC = r'''
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <cutlass/gemm/device/gemm.h>
using Gemm = cutlass::gemm::device::Gemm<float, cutlass::layout::RowMajor, float, cutlass::layout::RowMajor,
                                         float, cutlass::layout::RowMajor, float,
                                         cutlass::arch::OpClassSimt, cutlass::arch::Sm80>;
torch::Tensor cutlass_mm(torch::Tensor A, torch::Tensor B) {
    int M = A.size(0), K = A.size(1), N = B.size(1);
    auto C = torch::empty({M, N}, A.options());
    typename Gemm::Arguments args({M, N, K}, {A.data_ptr<float>(), K}, {B.data_ptr<float>(), N},
                                  {C.data_ptr<float>(), N}, {C.data_ptr<float>(), N}, {1.f, 0.f});
    TORCH_CHECK(Gemm()(args, nullptr, c10::cuda::getCurrentCUDAStream()) == cutlass::Status::kSuccess);
    return C;
}
'''
ext = load_inline(name="my_cutlass_mm",
                  cpp_sources="torch::Tensor cutlass_mm(torch::Tensor A, torch::Tensor B);",
                  cuda_sources=CUDA_SRC, functions=["cutlass_mm"], extra_include_paths=include_paths(),
                  extra_cuda_cflags=CUTLASS_NVCC_FLAGS)

class ModelNew(nn.Module):
    def forward(self, A, B):
        return ext.cutlass_mm(A.contiguous(), B.contiguous())
```

Check `can_implement` and each `cutlass::Status`, launch on the current stream, and mind each kernel's
alignment: a tensor-core kernel with 16-byte accesses (8 bf16/fp16 values) needs the contiguous
dimensions (K and N for row-major A and B) to be multiples of 8, so pad odd shapes with zeros or use a
narrower alignment. The output of torch::empty is uninitialised: use an epilogue that never reads C
(`ScaleType::OnlyAlphaScaling`) or beta = 0. Your own `__global__` kernels (fused epilogues, layout
changes) are welcome next to CUTLASS's. Define `class ModelNew(nn.Module)` with the same `__init__` and
`forward` signatures as `Model`; `forward` calls the compiled function. Do not compute the result with
torch operators or call `Model`.
"""


class CutlassBackend(Backend):
    name = "cutlass"
    description = "CUDA C++ on CUTLASS/CuTe headers (the nvidia-cutlass wheel's), compiled with load_inline"
    language = "cuda"

    def static_check(self, code: str) -> list[str]:
        return [str(v) for v in check_candidate(code, self.name)]

    def guidance(self) -> str:
        return GUIDANCE


def solutions() -> dict[str, Path]:
    """The plugin's hand-written example solutions, by built-in problem id."""
    return {p.stem: p for p in sorted(SOLUTIONS_DIR.glob("*.py")) if not p.name.startswith("_")}


@kforge.hookimpl
def register_backends(register):
    register(CutlassBackend)
