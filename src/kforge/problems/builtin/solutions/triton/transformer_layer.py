import math

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def layernorm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, n_cols, stride_x, stride_y, eps,
                     BLOCK_SIZE: tl.constexpr):
    # One program per row; the whole row (the model width) fits in one block.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    d = tl.where(mask, x - mean, 0.0)
    var = tl.sum(d * d, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0)
    tl.store(y_ptr + row * stride_y + cols, d * rstd * w + b, mask=mask)


@triton.jit
def linear_kernel(x_ptr, w_ptr, bias_ptr, res_ptr, y_ptr, M, N, K,
                  stride_xm, stride_xk, stride_wn, stride_wk, stride_rm, stride_rn, stride_ym, stride_yn,
                  GELU: tl.constexpr, RESIDUAL: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr):
    # y = [gelu](x @ W^T + bias) [+ res]; W is (N, K) as nn.Linear stores it.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (k[None, :] < K), other=0.0)
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + k[None, :] * stride_wk,
                    mask=(offs_n[:, None] < N) & (k[None, :] < K), other=0.0)
        acc = tl.dot(a, tl.trans(w), acc, input_precision="ieee")
    acc = acc + tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
    if GELU:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if RESIDUAL:
        acc = acc + tl.load(res_ptr + offs_m[:, None] * stride_rm + offs_n[None, :] * stride_rn,
                            mask=out_mask, other=0.0)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, acc, mask=out_mask)


@triton.jit
def causal_flash_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, S, D, sm_scale,
                                  stride_qb, stride_qs, stride_kb, stride_ks,
                                  stride_vb, stride_vs, stride_ob, stride_os,
                                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    # One program per (query block, sequence); online softmax over key blocks up to the diagonal.
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q = tl.load(q_ptr + b * stride_qb + offs_m[:, None].to(tl.int64) * stride_qs + offs_d[None, :],
                mask=(offs_m[:, None] < S) & d_ok[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    hi = tl.minimum((pid_m + 1) * BLOCK_M, S)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < S) & d_ok[None, :]
        k = tl.load(k_ptr + b * stride_kb + offs_n[:, None].to(tl.int64) * stride_ks + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + b * stride_vb + offs_n[:, None].to(tl.int64) * stride_vs + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * sm_scale
        allowed = (offs_m[:, None] >= offs_n[None, :]) & (offs_n[None, :] < S)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + b * stride_ob + offs_m[:, None].to(tl.int64) * stride_os + offs_d[None, :], out,
             mask=(offs_m[:, None] < S) & d_ok[None, :])


def layernorm(x, ln):
    y = torch.empty_like(x)
    n_rows, n_cols = x.shape
    BLOCK_SIZE = triton.next_power_of_2(n_cols)
    layernorm_kernel[(n_rows,)](x, ln.weight, ln.bias, y, n_cols, x.stride(0), y.stride(0), ln.eps,
                                BLOCK_SIZE=BLOCK_SIZE, num_warps=4)
    return y


def linear(x, lin, gelu=False, residual=None):
    M, K = x.shape
    weight, bias = lin.weight, lin.bias
    N = weight.shape[0]
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    res = residual if residual is not None else y  # not read when RESIDUAL is False
    BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
    linear_kernel[grid](
        x, weight, bias, res, y, M, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), res.stride(0), res.stride(1),
        y.stride(0), y.stride(1),
        GELU=gelu, RESIDUAL=residual is not None,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=8, num_warps=4, num_stages=3,
    )
    return y


def causal_attention(qkv, B, S, D):
    # qkv: (B * S, 3 * D) with q, k, v side by side in each row; read in place through strides.
    o = torch.empty((B, S, D), dtype=qkv.dtype, device=qkv.device)
    q, k, v = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]
    row = qkv.stride(0)
    BLOCK_D = max(16, triton.next_power_of_2(D))
    BLOCK_M = 64 if BLOCK_D <= 64 else 32
    BLOCK_N = 32 if BLOCK_D <= 128 else 16
    grid = (triton.cdiv(S, BLOCK_M), B)
    causal_flash_attention_kernel[grid](
        q, k, v, o, S, D, 1.0 / math.sqrt(D),
        S * row, row, S * row, row, S * row, row, o.stride(0), o.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, num_warps=4 if BLOCK_D <= 128 else 8,
        num_stages=2,
    )
    return o.view(B * S, D)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # Same submodules, created in the same order and redrawn the same way, as Model.
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        with torch.no_grad():
            for ln in (self.ln1, self.ln2):
                ln.weight.copy_(1.0 + 0.5 * torch.randn(dim))
                ln.bias.copy_(0.5 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        x2 = x.contiguous().view(B * S, D)
        qkv = linear(layernorm(x2, self.ln1), self.qkv)
        h = linear(causal_attention(qkv, B, S, D), self.out, residual=x2)
        f = linear(layernorm(h, self.ln2), self.fc1, gelu=True)
        y = linear(f, self.fc2, residual=h)
        return y.view(B, S, D)
