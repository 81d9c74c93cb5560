import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: 8192 tokens, width 1024, hidden 4096: two products, 2 * 2 * 8192 * 1024 * 4096 =
# 137 GFLOP in fp32 (TF32 off).
batch_size = 8192
dim = 1024
hidden_dim = 4096

KFORGE = {
    "name": "MLP block with residual: x + fc2(gelu(fc1(x)))",
    "level": 3,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 8192, "dim": 1024, "hidden_dim": 4096},
        "small": {"batch_size": 40, "dim": 48, "hidden_dim": 96},
        "heldout": [
            {"batch_size": 3001, "dim": 1023, "hidden_dim": 4001},
            {"batch_size": 16383, "dim": 257, "hidden_dim": 1025},
        ],
    },
    "flops": "4 * batch_size * dim * hidden_dim + 10 * batch_size * hidden_dim + 2 * batch_size * dim",
    "bytes": "4 * (2 * batch_size * dim + 2 * dim * hidden_dim + hidden_dim + dim)",
}


class Model(nn.Module):
    """y = x + fc2(gelu(fc1(x))): fc1 = nn.Linear(dim, hidden_dim), fc2 = nn.Linear(hidden_dim, dim),
    exact (erf) GELU; weights and biases from nn.Linear's own init, fc1 first."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(x)))


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return [dim, hidden_dim]
