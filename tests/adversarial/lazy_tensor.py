# expect: rejected no-tensor-subclass
# problem: relu
# Lazy output (DeepReinforce, GPU MODE #162): return a Tensor subclass that does its work only when
# the checker first touches it, after the timer has stopped.
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


class LazyResult(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for a in args:
            if isinstance(a, LazyResult) and not getattr(a, "_done", False):
                n = a.numel()
                relu_kernel[(triton.cdiv(n, 1024),)](a._src, a, n, BLOCK_SIZE=1024)
                a._done = True
        return super().__torch_function__(func, types, args, kwargs or {})


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty_like(x).as_subclass(LazyResult)
        y._src = x
        return y
