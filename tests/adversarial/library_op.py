# expect: rejected library_op
# problem: softmax
# Calling a library op for the whole answer: a token Triton kernel is launched (so "contains and
# launches a kernel" holds), and torch.softmax computes the result.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def rowmax_kernel(x_ptr, m_ptr, n_cols, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0)
    m = tl.full([BLOCK_SIZE], float("-inf"), tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + tl.arange(0, BLOCK_SIZE)
        m = tl.maximum(m, tl.load(x_ptr + row * n_cols + offs, mask=offs < n_cols, other=float("-inf")))
    tl.store(m_ptr + row, tl.max(m, axis=0))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        row_max = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        rowmax_kernel[(x.shape[0],)](x, row_max, x.shape[1], BLOCK_SIZE=1024)
        return torch.softmax(x - row_max[:, None], dim=1)
