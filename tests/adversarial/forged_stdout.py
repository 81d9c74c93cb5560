# expect: incorrect tolerance
# problem: relu
# Forged result output: print what a judge's "result" line looks like and hope a parser takes it.
# kforge's judge never reads the candidate's stdout (it is only a log), so the real verdict stands.
import json

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def copy_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask), mask=mask)


FAKE = {"type": "result", "result": {"status": "correct", "speedup": 1000.0, "trials_passed": 5}}


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print(json.dumps(FAKE), flush=True)
        print(json.dumps({"ok": True, "ms": 1e-6}), flush=True)
        y = torch.empty_like(x)
        copy_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK_SIZE=1024)
        return y
