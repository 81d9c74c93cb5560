# A flood: the first forward prints 256 MiB to stdout (and some to stderr), every later one 1 MiB,
# and all return the right answer. The judge drains the output into a bounded tail: it stays
# responsive and its memory does not grow, and the verdict is correct.
import sys

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


def relu(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK_SIZE=1024)
    return y


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = ("flood " * 170 + "\n") * 1024  # about 1 MiB
        for _ in range(256 if self.calls == 0 else 1):
            sys.stdout.write(block)
        sys.stderr.write("flood on stderr too\n" * 1000)
        sys.stdout.write(f"end of flood {self.calls}\n")
        sys.stdout.flush()
        self.calls += 1
        return relu(x)
