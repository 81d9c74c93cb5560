# expect: rejected no-reference
# problem: matmul
# Subclassing the reference with `pass` (learned by Kevin-32B): ModelNew inherits Model.forward; a
# Triton kernel is defined so that a naive "does it contain a kernel" check passes.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def unused_kernel(a_ptr, BLOCK: tl.constexpr):
    pass


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


class ModelNew(Model):
    pass
