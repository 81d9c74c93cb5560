import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: 256M fp32 values, 1 GiB in + 1 GiB out (eager makes three passes).
batch_size = 8192
dim = 32768

KFORGE = {
    "name": "Bias + GELU (erf) + residual: x + gelu(x + bias)",
    "level": 2,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 8192, "dim": 32768},
        "small": {"batch_size": 33, "dim": 1000},
        "heldout": [
            {"batch_size": 3001, "dim": 40009},
            {"batch_size": 100003, "dim": 771},
        ],
    },
    "flops": "11 * batch_size * dim",
    "bytes": "4 * (2 * batch_size * dim + dim)",
}


class Model(nn.Module):
    """y = x + gelu(x + bias), bias of shape (dim,) broadcast over rows, exact (erf) GELU.

    The bias is drawn from the global RNG in __init__; a ModelNew must create it the same way.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(x + self.bias)


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return [dim]
