# expect: rejected needs-launch
# problem: relu
# Recycled memory (Sakana's exploit): forward allocates the output and returns it without launching
# anything, hoping the allocator hands back memory that still holds the reference's answer.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.where(x > 0, x, 0.0), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = relu_kernel  # looks used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)
