import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: 2 * 4096 * 4096 * 4096 = 137 GFLOP in fp32 (TF32 off), then bias + GELU.
batch_size = 4096
in_features = 4096
out_features = 4096

KFORGE = {
    "name": "Linear + bias + GELU (erf)",
    "level": 2,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 4096, "in_features": 4096, "out_features": 4096},
        "small": {"batch_size": 50, "in_features": 96, "out_features": 70},
        "heldout": [
            {"batch_size": 3001, "in_features": 2999, "out_features": 4001},
            {"batch_size": 8191, "in_features": 1025, "out_features": 2047},
        ],
    },
    "flops": "2 * batch_size * in_features * out_features + batch_size * out_features",
    "bytes": "4 * (batch_size * in_features + in_features * out_features + out_features + batch_size * out_features)",
}


class Model(nn.Module):
    """y = gelu(x @ W^T + b), exact (erf) GELU; W, b from nn.Linear's own init."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.linear(x))


def get_inputs():
    x = torch.randn(batch_size, in_features)
    return [x]


def get_init_inputs():
    return [in_features, out_features]
