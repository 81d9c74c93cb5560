# expect: rejected no-threads
# problem: rowsum
# Thread injection (DeepReinforce): forward returns at once and a background thread fills the
# output later, outside the timed region.
import threading

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def rowsum_kernel(x_ptr, y_ptr, n_cols, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0)
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + tl.arange(0, BLOCK_SIZE)
        acc += tl.load(x_ptr + row * n_cols + offs, mask=offs < n_cols, other=0.0)
    tl.store(y_ptr + row, tl.sum(acc, axis=0))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty((x.shape[0], 1), dtype=x.dtype, device=x.device)
        worker = threading.Thread(target=lambda: rowsum_kernel[(x.shape[0],)](x, y, x.shape[1], BLOCK_SIZE=1024))
        worker.start()
        return y
