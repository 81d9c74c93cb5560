import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def max_middle_kernel(x_ptr, y_ptr, R, C, stride_o, stride_r,
                      BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # x viewed as (outer, R, C), contiguous in C; y is (outer, C). Grid: (column blocks, outer).
    pid_c = tl.program_id(0)
    o = tl.program_id(1).to(tl.int64)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_r = tl.arange(0, BLOCK_R)
    base = x_ptr + o * stride_o
    acc = tl.full([BLOCK_R, BLOCK_C], float("-inf"), tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = (r0 + offs_r).to(tl.int64)
        mask = (r[:, None] < R) & (offs_c[None, :] < C)
        x = tl.load(base + r[:, None] * stride_r + offs_c[None, :], mask=mask, other=float("-inf"))
        acc = tl.maximum(acc, x)
    tl.store(y_ptr + o * C + offs_c, tl.max(acc, axis=0), mask=offs_c < C)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        d = self.dim % x.dim()
        outer = 1
        for s in x.shape[:d]:
            outer *= s
        R = x.shape[d]
        C = 1
        for s in x.shape[d + 1:]:
            C *= s
        y = torch.empty(x.shape[:d] + x.shape[d + 1:], dtype=x.dtype, device=x.device)
        BLOCK_C = min(256, triton.next_power_of_2(C))
        BLOCK_R = max(1, min(32, 4096 // BLOCK_C, triton.next_power_of_2(R)))
        grid = (triton.cdiv(C, BLOCK_C), outer)
        max_middle_kernel[grid](x, y, R, C, R * C, C, BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, num_warps=4)
        return y
