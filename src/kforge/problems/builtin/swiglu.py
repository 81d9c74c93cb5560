import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: two 4096 x 4096 x 4096 products, 275 GFLOP in fp32 (TF32 off), then silu(a) * b.
batch_size = 4096
in_features = 4096
hidden_features = 4096

KFORGE = {
    "name": "SwiGLU gate: silu(x @ W1^T) * (x @ W3^T)",
    "level": 2,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 4096, "in_features": 4096, "hidden_features": 4096},
        "small": {"batch_size": 50, "in_features": 96, "hidden_features": 70},
        "heldout": [
            {"batch_size": 3001, "in_features": 2999, "hidden_features": 4001},
            {"batch_size": 8191, "in_features": 1025, "hidden_features": 2047},
        ],
    },
    # silu(g) * u multiplies two fp32 sums over K = 4096: with the judge's wide-range inputs g and u
    # reach ~1e2 and an output near zero (g or u near zero) inherits the other factor times the
    # first's rounding error; fp32 vs fp64 needs atol 2e-4 there (CPU), 6e-5 was the largest
    # difference on an H100, so atol 2e-3. TF32 or bf16 still fail (relative L2 under rtol = 1e-4).
    "atol": 2e-3,
    "rtol": 1e-4,
    "flops": "4 * batch_size * in_features * hidden_features + 5 * batch_size * hidden_features",
    "bytes": "4 * (batch_size * in_features + 2 * in_features * hidden_features + batch_size * hidden_features)",
}


class Model(nn.Module):
    """y = silu(x @ W1^T) * (x @ W3^T); W1, W3 from nn.Linear(bias=False)'s own init, w1 first."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.w1 = nn.Linear(in_features, hidden_features, bias=False)
        self.w3 = nn.Linear(in_features, hidden_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.w1(x)) * self.w3(x)


def get_inputs():
    x = torch.randn(batch_size, in_features)
    return [x]


def get_init_inputs():
    return [in_features, hidden_features]
