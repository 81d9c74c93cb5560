import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def residual_rmsnorm_kernel(x_ptr, r_ptr, w_ptr, y_ptr, n_cols, stride_x, stride_r, stride_y, eps,
                            BLOCK_SIZE: tl.constexpr):
    # One program per row: s = x + residual (never written out), sum of squares of s, then
    # s * rsqrt(mean + eps) * weight; the second pass re-reads x and residual.
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    r_row = r_ptr + row * stride_r
    y_row = y_ptr + row * stride_y
    cols = tl.arange(0, BLOCK_SIZE)
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + cols
        mask = offs < n_cols
        s = (tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
             + tl.load(r_row + offs, mask=mask, other=0.0).to(tl.float32))
        acc += s * s
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + cols
        mask = offs < n_cols
        s = (tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
             + tl.load(r_row + offs, mask=mask, other=0.0).to(tl.float32))
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + offs, s * rstd * w, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # Same parameter, created and drawn the same way, as Model.
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        with torch.no_grad():
            self.norm.weight.copy_(1.0 + 0.5 * torch.randn(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        residual = residual.contiguous()
        n_rows, n_cols = x.shape
        w = self.norm.weight.contiguous()
        y = torch.empty_like(x)
        BLOCK_SIZE = min(4096, triton.next_power_of_2(n_cols))
        num_warps = 8 if BLOCK_SIZE >= 2048 else 4
        residual_rmsnorm_kernel[(n_rows,)](
            x, residual, w, y, n_cols, x.stride(0), residual.stride(0), y.stride(0), self.norm.eps,
            BLOCK_SIZE=BLOCK_SIZE, num_warps=num_warps,
        )
        return y
