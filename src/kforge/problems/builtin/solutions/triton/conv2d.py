import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def conv3x3_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, C_in, H, W, C_out, QH, QW,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Implicit GEMM for a 3x3 conv, stride 1, padding 1, NCHW, all contiguous. Rows are 2x2 quads
    # of output pixels m = (n, qh, qw), whose four pixels (2qh + dy, 2qw + dx) each have their own
    # accumulator and share the weight tile; columns are output channels; k = (ci, kh, kw):
    #   A[pixel, k] = x[n, ci, oh + kh - 1, ow + kw - 1] (0 outside the image), B[k, co] = w[co, k].
    # A quad's pixels past an odd last row/column are computed but not stored.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    HW = H * W
    QHW = QH * QW
    M = N * QHW
    K = C_in * 9
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n_idx = offs_m // QHW
    q = offs_m % QHW
    oh0 = (q // QW) * 2
    ow0 = (q % QW) * 2
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
        b = tl.load(w_ptr + offs_n[None, :] * K + k[:, None],
                    mask=(k[:, None] < K) & (offs_n[None, :] < C_out), other=0.0)
        ih0 = oh0[:, None] + kh[None, :] - 1  # input row for dy = 0; dy = 1 reads ih0 + 1
        iw0 = ow0[:, None] + kw[None, :] - 1
        base = x_ptr + x_base[:, None] + ci[None, :].to(tl.int64) * HW
        row_ok0 = (ih0 >= 0) & (ih0 < H)
        row_ok1 = (ih0 + 1 >= 0) & (ih0 + 1 < H)
        col_ok0 = (iw0 >= 0) & (iw0 < W)
        col_ok1 = (iw0 + 1 >= 0) & (iw0 + 1 < W)
        ok = m_ok[:, None] & (k[None, :] < K)
        a00 = tl.load(base + ih0 * W + iw0, mask=ok & row_ok0 & col_ok0, other=0.0)
        a01 = tl.load(base + ih0 * W + iw0 + 1, mask=ok & row_ok0 & col_ok1, other=0.0)
        a10 = tl.load(base + (ih0 + 1) * W + iw0, mask=ok & row_ok1 & col_ok0, other=0.0)
        a11 = tl.load(base + (ih0 + 1) * W + iw0 + 1, mask=ok & row_ok1 & col_ok1, other=0.0)
        acc00 = tl.dot(a00, b, acc00, input_precision="ieee")
        acc01 = tl.dot(a01, b, acc01, input_precision="ieee")
        acc10 = tl.dot(a10, b, acc10, input_precision="ieee")
        acc11 = tl.dot(a11, b, acc11, input_precision="ieee")
    bias = tl.load(b_ptr + offs_n, mask=offs_n < C_out, other=0.0)[None, :]
    n_ok = offs_n[None, :] < C_out
    y_base = y_ptr + (n_idx * C_out * HW)[:, None] + offs_n[None, :].to(tl.int64) * HW
    h0_ok = m_ok[:, None] & n_ok
    h1_ok = h0_ok & (oh0[:, None] + 1 < H)
    w1_ok = ow0[:, None] + 1 < W
    p00 = y_base + (oh0 * W + ow0)[:, None]
    tl.store(p00, acc00 + bias, mask=h0_ok)
    tl.store(p00 + 1, acc01 + bias, mask=h0_ok & w1_ok)
    tl.store(p00 + W, acc10 + bias, mask=h1_ok)
    tl.store(p00 + W + 1, acc11 + bias, mask=h1_ok & w1_ok)


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
        QH, QW = triton.cdiv(H, 2), triton.cdiv(W, 2)
        y = torch.empty((N, C_out, H, W), dtype=x.dtype, device=x.device)
        BLOCK_M, BLOCK_N, BLOCK_K = 32, 64, 32
        grid = (triton.cdiv(N * QH * QW, BLOCK_M), triton.cdiv(C_out, BLOCK_N))
        conv3x3_kernel[grid](x, w, b, y, N, C_in, H, W, C_out, QH, QW,
                             BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4, num_stages=2)
        return y
