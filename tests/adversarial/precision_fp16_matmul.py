# expect: incorrect tolerance
# problem: matmul
# shape: {"M": 64, "K": 1024, "N": 64}
# Precision downgrade: store the fp32 inputs as fp16 (half the bytes to read), compute in fp32 and
# hand back fp32, so dtype and shape look right. fp16 rounding errs ~3e-4 relative per input; over
# K=1024 terms that is far outside the fp32 matmul's tolerance (atol 1e-2).
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def matmul_fp16_kernel(a_ptr, b_ptr, c_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * K + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K), other=0.0)
        b = tl.load(b_ptr + k[:, None] * N + rn[None, :], mask=(k[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        A16 = A.contiguous().half()
        B16 = B.contiguous().half()
        M, K = A16.shape
        N = B16.shape[1]
        C = torch.empty((M, N), dtype=torch.float32, device=A.device)
        grid = (triton.cdiv(M, 32), triton.cdiv(N, 32))
        matmul_fp16_kernel[grid](A16, B16, C, M, N, K, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32)
        return C.to(A.dtype)
