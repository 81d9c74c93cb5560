# A kernel that writes 2**40 elements (4 TiB) past its output. On the CPU, Triton's interpreter
# stores through the raw pointer: SIGSEGV (runtime_error, crash). On a GPU: an illegal memory
# access, a sticky CUDA error that poisons the candidate's context, never the judge's.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_oob_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    # Bug: the index is scaled by 2**40.
    tl.store(y_ptr + offs * 1099511627776, tl.where(x > 0, x, 0.0), mask=mask & (offs > 0))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        relu_oob_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK_SIZE=1024)
        return y
