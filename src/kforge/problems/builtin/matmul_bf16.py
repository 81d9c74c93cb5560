import torch
import torch.nn as nn

# Main shape: 2 * 8192^3 = 1.1 TFLOP on bf16 tensor cores; 128 MiB per operand.
M = 8192
K = 8192
N = 8192

KFORGE = {
    "name": "Matrix multiplication (bf16 in, fp32 accumulate, bf16 out)",
    "level": 1,
    "dtype": "bfloat16",
    "shapes": {
        "main": {"M": 8192, "K": 8192, "N": 8192},
        "small": {"M": 97, "K": 80, "N": 113},
        "heldout": [
            {"M": 3001, "K": 2999, "N": 1999},
            {"M": 8191, "K": 257, "N": 4097},
        ],
    },
    # bf16's own rtol (1e-2, one or two bf16 ulps). atol: the two fp32 accumulations (cuBLAS and a
    # kernel's own K order) differ by up to 0.11 on the judge's wide-range inputs where an output of
    # rms 2.4e4 cancels to near zero (measured on an H100 at the held-out 3001x2999x1999; 1.6e-4 on
    # normal inputs), so atol 0.5. A bf16 accumulator, a dropped K tile or fp16 (overflows on wide
    # inputs) still fail; the relative L2 error (<= 1.3e-4 measured) must stay under rtol.
    "atol": 5e-1,
    "rtol": 1e-2,
    "flops": "2 * M * N * K",
    "bytes": "2 * (M * K + K * N + M * N)",
}


class Model(nn.Module):
    """C = A @ B with A (M, K) and B (K, N), all bf16 (the judge casts the inputs to bf16)."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        # One fp32 accumulation, one rounding to bf16: cuBLAS may otherwise split K and add the
        # partial sums in bf16 (torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction is
        # True by default), which was seen on an H100 to err by several bf16 ulps at odd shapes.
        matmul_flags = torch.backends.cuda.matmul
        reduced = matmul_flags.allow_bf16_reduced_precision_reduction
        matmul_flags.allow_bf16_reduced_precision_reduction = False
        try:
            return torch.matmul(A, B)
        finally:
            matmul_flags.allow_bf16_reduced_precision_reduction = reduced


def get_inputs():
    A = torch.randn(M, K, dtype=torch.bfloat16)
    B = torch.randn(K, N, dtype=torch.bfloat16)
    return [A, B]


def get_init_inputs():
    return []
