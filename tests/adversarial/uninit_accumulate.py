# expect: incorrect nonfinite
# problem: rowsum
# shape: {"batch_size": 65536, "dim": 8}
# Accumulating into uninitialised memory: the output comes from torch.empty and the kernel adds to
# it instead of storing. Right only if the allocator happens to hand back zeros; the judge poisons
# the memory the candidate is about to be handed.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def rowsum_accumulate(x_ptr, y_ptr, n_rows, n_cols, stride_x, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    acc = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_COLS):
        cols = start + tl.arange(0, BLOCK_COLS)
        mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
        acc += tl.sum(x, axis=1)
    prev = tl.load(y_ptr + rows, mask=rows < n_rows)
    tl.store(y_ptr + rows, prev + acc, mask=rows < n_rows)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n_rows, n_cols = x.shape
        y = torch.empty((n_rows, 1), dtype=x.dtype, device=x.device)
        grid = (triton.cdiv(n_rows, 1024),)
        rowsum_accumulate[grid](x, y, n_rows, n_cols, x.stride(0), BLOCK_ROWS=1024,
                                BLOCK_COLS=triton.next_power_of_2(n_cols))
        return y
