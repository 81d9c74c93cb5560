import torch
import torch.nn as nn

# Main shape: 2 * 128 * 512 * 1024 * 1024 = 137 GFLOP in fp32 (TF32 off); 256 MiB A, 512 MiB B.
batch_size = 128
M = 512
K = 1024
N = 1024

KFORGE = {
    "name": "Batched matrix multiplication (fp32)",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 128, "M": 512, "K": 1024, "N": 1024},
        "small": {"batch_size": 3, "M": 37, "K": 50, "N": 45},
        "heldout": [
            {"batch_size": 77, "M": 511, "K": 1023, "N": 1001},
            {"batch_size": 1023, "M": 129, "K": 65, "N": 257},
        ],
    },
    # As matmul: fp32 sums over K = 1024 of the judge's wide-range inputs (outputs of rms 1.4e4)
    # differ between correct summation orders by up to ~1e-2 where an output cancels to near zero
    # (1.3e-2 measured for fp32 vs fp64 on the CPU; cuBLAS and the example agreed bit for bit on an
    # H100), so atol 5e-2. TF32 (errors ~10 at that scale) or bf16 still fail, and the relative L2
    # error must stay under rtol = 1e-4.
    "atol": 5e-2,
    "rtol": 1e-4,
    "flops": "2 * batch_size * M * N * K",
    "bytes": "4 * batch_size * (M * K + K * N + M * N)",
}


class Model(nn.Module):
    """C = torch.bmm(A, B) with A (batch_size, M, K) and B (batch_size, K, N)."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.bmm(A, B)


def get_inputs():
    A = torch.randn(batch_size, M, K)
    B = torch.randn(batch_size, K, N)
    return [A, B]


def get_init_inputs():
    return []
