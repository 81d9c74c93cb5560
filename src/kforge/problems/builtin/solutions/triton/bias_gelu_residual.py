import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def bias_gelu_residual_kernel(x_ptr, b_ptr, y_ptr, n_cols, stride_x, stride_y, BLOCK_SIZE: tl.constexpr):
    # Grid: (rows, column blocks). y = x + gelu(x + bias), one read of x, one write of y.
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    h = x + b
    y = x + 0.5 * h * (1.0 + tl.math.erf(h * 0.7071067811865476))
    tl.store(y_ptr + row * stride_y + offs, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # Same parameter, drawn the same way, as Model.
        self.bias = nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n_rows, n_cols = x.shape
        b = self.bias.contiguous()
        y = torch.empty_like(x)
        BLOCK_SIZE = min(2048, triton.next_power_of_2(n_cols))
        grid = (n_rows, triton.cdiv(n_cols, BLOCK_SIZE))
        bias_gelu_residual_kernel[grid](x, b, y, n_cols, x.stride(0), y.stride(0),
                                        BLOCK_SIZE=BLOCK_SIZE, num_warps=4)
        return y
