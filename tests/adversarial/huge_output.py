# expect: incorrect output_shape
# problem: relu
# A flood: megabytes of log on stdout and stderr every call, and a 64 MiB output of the wrong shape.
# The judge must keep only a bounded tail of the log and still reach a verdict.
import sys

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def fill_kernel(y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    tl.store(y_ptr + offs, tl.full([BLOCK_SIZE], 1.0, tl.float32), mask=offs < n_elements)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        line = "x" * 1023 + "\n"
        sys.stdout.write(line * 4096)
        sys.stderr.write(line * 4096)
        y = torch.empty((4096, 4096), dtype=x.dtype, device=x.device)
        fill_kernel[(triton.cdiv(y.numel(), 1 << 16),)](y, y.numel(), BLOCK_SIZE=1 << 16)
        return y
