# expect: rejected no-files
# problem: relu
# Forged result output on the judge's own channel: the sandbox gets its pipe descriptors on its
# command line; write a fake reply there (and a fake result line on fd 1).
import json
import os
import sys

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fake = json.dumps({"ok": True, "ms": 1e-6}).encode()
        os.write(int(sys.argv[2]), len(fake).to_bytes(4, "big") + fake)
        os.write(1, b'{"type": "result", "result": {"status": "correct"}}\n')
        y = torch.empty_like(x)
        n = x.numel()
        relu_kernel[(triton.cdiv(n, 1024),)](x, y, n, BLOCK_SIZE=1024)
        return y
