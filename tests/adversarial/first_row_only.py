# expect: incorrect nonfinite
# problem: rowsum
# shape: {"batch_size": 65536, "dim": 8}
# Computing only part of the output (Sakana's "147x" kernel computed only the first row): one
# program for the whole grid; the other rows keep whatever the allocator left there.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def rowsum_kernel(x_ptr, y_ptr, n_cols, stride_x, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0)
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + tl.arange(0, BLOCK_SIZE)
        acc += tl.load(x_ptr + row * stride_x + offs, mask=offs < n_cols, other=0.0)
    tl.store(y_ptr + row, tl.sum(acc, axis=0))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty((x.shape[0], 1), dtype=x.dtype, device=x.device)
        rowsum_kernel[(1,)](x, y, x.shape[1], x.stride(0), BLOCK_SIZE=1024)
        return y
