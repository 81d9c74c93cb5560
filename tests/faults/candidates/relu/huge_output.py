# A huge output: forward returns 2 GiB (512 Mi float32) for a reference output of a few hundred KB.
# (The buffer is made once in __init__, so the poisoned allocator does not spend seconds filling it.)
# The judge refuses it from its header, before it is written, read or copied: incorrect, guard
# output_size.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.where(x > 0, x, 0.0), mask=mask)


class ModelNew(nn.Module):
    huge: torch.Tensor

    def __init__(self):
        super().__init__()
        self.register_buffer("huge", torch.empty((1 << 29,), dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, self.huge, x.numel(), BLOCK_SIZE=1024)
        return self.huge
