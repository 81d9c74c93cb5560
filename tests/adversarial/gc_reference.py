# expect: rejected no-gc
# problem: softmax
# Reading the expected answer through the garbage collector (pygpubench's exploits): find a live
# tensor of the output's shape and return a copy of it.
import gc

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def copy_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty_like(x)
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and obj is not x and obj.shape == x.shape:
                if torch.allclose(obj.sum(dim=1), torch.ones(x.shape[0])):
                    copy_kernel[(triton.cdiv(y.numel(), 1024),)](obj, y, y.numel(), BLOCK_SIZE=1024)
                    return y
        copy_kernel[(triton.cdiv(y.numel(), 1024),)](x, y, y.numel(), BLOCK_SIZE=1024)
        return y
