# expect: incorrect tolerance|timed_output
# problem: relu
# Memoisation by pointer (reported of CUDA-L1): cache outputs keyed on the input's address, which
# a caching allocator hands out again for the next input of the same size. Caught by whichever
# comes first: a fresh correctness input at a recycled address (tolerance), or the timed rounds'
# fresh values written into the same buffers (timed_output); which one depends on the allocator.
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
        self.cache = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.data_ptr(), tuple(x.shape))
        if key not in self.cache:
            y = torch.empty_like(x)
            n = x.numel()
            relu_kernel[(triton.cdiv(n, 1024),)](x, y, n, BLOCK_SIZE=1024)
            self.cache[key] = y
        return self.cache[key]
