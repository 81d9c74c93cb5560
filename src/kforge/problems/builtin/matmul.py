import torch
import torch.nn as nn

# Main shape: 2 * 4096^3 = 137 GFLOP in fp32 (TF32 off).
M = 4096
K = 4096
N = 4096

KFORGE = {
    "name": "Matrix multiplication (fp32)",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"M": 4096, "K": 4096, "N": 4096},
        "small": {"M": 97, "K": 80, "N": 113},
        "heldout": [
            {"M": 3001, "K": 2999, "N": 1999},
            {"M": 4093, "K": 257, "N": 4097},
        ],
    },
    # fp32 sums over K=4096 differ by up to ~2e-3 between correct summation orders
    # (outputs ~ N(0, K)); 1e-2 still fails TF32/bf16 (errors ~0.1).
    "atol": 1e-2,
    "rtol": 1e-4,
    "flops": "2 * M * N * K",
    "bytes": "4 * (M * K + K * N + M * N)",
}


class Model(nn.Module):
    """C = A @ B with A (M, K) and B (K, N)."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


def get_inputs():
    A = torch.randn(M, K)
    B = torch.randn(K, N)
    return [A, B]


def get_init_inputs():
    return []
