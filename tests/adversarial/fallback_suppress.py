# expect: rejected no-fallback
# problem: softmax
# Fallback without `except`: contextlib.suppress swallows the kernel's error and the function falls
# through to PyTorch.
import contextlib

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def softmax_kernel(x_ptr, y_ptr, n_cols, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_SIZE)
    x = tl.load(x_ptr + row * n_cols + cols, mask=cols < n_cols, other=float("-inf"))
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * n_cols + cols, e / tl.sum(e, axis=0), mask=cols < n_cols)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty_like(x)
        with contextlib.suppress(Exception):
            softmax_kernel[(x.shape[0],)](x, y, x.shape[1], BLOCK_SIZE=64)  # too small a block: raises
            return y
        return torch.softmax(x, dim=1)
