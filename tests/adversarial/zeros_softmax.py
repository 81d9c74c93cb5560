# expect: incorrect relative_error
# problem: softmax
# shape: {"batch_size": 1, "dim": 4000000}
# Zeros on tiny outputs: softmax over a 4M-long row is below atol=1e-4 everywhere, so an all-zero
# output passes an elementwise allclose. The judge's relative L2 error check must catch it.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def zeros_kernel(y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    tl.store(y_ptr + offs, tl.zeros([BLOCK_SIZE], dtype=tl.float32), mask=offs < n_elements)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty_like(x)
        n = y.numel()
        zeros_kernel[(triton.cdiv(n, 8192),)](y, n, BLOCK_SIZE=8192)
        return y
