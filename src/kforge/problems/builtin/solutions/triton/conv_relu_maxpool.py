import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def conv3x3_relu_pool_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, C_in, H, W, C_out, PH, PW,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Implicit GEMM over pooled output pixels m = (n, ph, pw): four accumulators hold the 3x3 conv
    # (stride 1, padding 1) at the 2x2 window's positions (2ph + dy, 2pw + dx); the output is
    # relu(max of the four + bias), which equals maxpool(relu(conv + bias)). NCHW, all contiguous.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    HW = H * W
    PHW = PH * PW
    M = N * PHW
    K = C_in * 9
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n_idx = offs_m // PHW
    phw = offs_m % PHW
    oh0 = (phw // PW) * 2
    ow0 = (phw % PW) * 2
    m_ok = offs_m < M
    x_base = n_idx * C_in * HW
    acc00 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc01 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc10 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc11 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        ci = k // 9
        r = k % 9
        kh = r // 3
        kw = r % 3
        k_ok = k[None, :] < K
        b = tl.load(w_ptr + offs_n[None, :] * K + k[:, None],
                    mask=(k[:, None] < K) & (offs_n[None, :] < C_out), other=0.0)
        ih0 = oh0[:, None] + kh[None, :] - 1  # input row for dy = 0; dy = 1 is ih0 + 1
        iw0 = ow0[:, None] + kw[None, :] - 1
        base = x_ptr + x_base[:, None] + ci[None, :].to(tl.int64) * HW
        row_ok0 = (ih0 >= 0) & (ih0 < H)
        row_ok1 = (ih0 + 1 >= 0) & (ih0 + 1 < H)
        col_ok0 = (iw0 >= 0) & (iw0 < W)
        col_ok1 = (iw0 + 1 >= 0) & (iw0 + 1 < W)
        ok = m_ok[:, None] & k_ok
        a00 = tl.load(base + ih0 * W + iw0, mask=ok & row_ok0 & col_ok0, other=0.0)
        a01 = tl.load(base + ih0 * W + iw0 + 1, mask=ok & row_ok0 & col_ok1, other=0.0)
        a10 = tl.load(base + (ih0 + 1) * W + iw0, mask=ok & row_ok1 & col_ok0, other=0.0)
        a11 = tl.load(base + (ih0 + 1) * W + iw0 + 1, mask=ok & row_ok1 & col_ok1, other=0.0)
        acc00 = tl.dot(a00, b, acc00, input_precision="ieee")
        acc01 = tl.dot(a01, b, acc01, input_precision="ieee")
        acc10 = tl.dot(a10, b, acc10, input_precision="ieee")
        acc11 = tl.dot(a11, b, acc11, input_precision="ieee")
    best = tl.maximum(tl.maximum(acc00, acc01), tl.maximum(acc10, acc11))
    best = best + tl.load(b_ptr + offs_n, mask=offs_n < C_out, other=0.0)[None, :]
    best = tl.maximum(best, 0.0)
    y_ptrs = y_ptr + (n_idx * C_out * PHW + phw)[:, None] + offs_n[None, :].to(tl.int64) * PHW
    tl.store(y_ptrs, best, mask=m_ok[:, None] & (offs_n[None, :] < C_out))


class ModelNew(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # Same submodule as Model, so the weights match after the same seed.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        w = self.conv.weight.contiguous()
        b = self.conv.bias.contiguous()
        N, C_in, H, W = x.shape
        C_out = w.shape[0]
        PH, PW = H // 2, W // 2  # max_pool2d(kernel_size=2) floors: an odd last row/column is dropped
        y = torch.empty((N, C_out, PH, PW), dtype=x.dtype, device=x.device)
        BLOCK_M, BLOCK_N, BLOCK_K = 32, 64, 32
        grid = (triton.cdiv(N * PH * PW, BLOCK_M), triton.cdiv(C_out, BLOCK_N))
        conv3x3_relu_pool_kernel[grid](x, w, b, y, N, C_in, H, W, C_out, PH, PW,
                                       BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                                       num_warps=4, num_stages=2)
        return y
