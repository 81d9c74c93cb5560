import torch
import torch.nn as nn

# Main shape: rows of 32K fp32 values; two 1 GiB inputs, one 1 GiB output.
batch_size = 8192
dim = 32768

KFORGE = {
    "name": "Residual add + RMSNorm (with weight)",
    "level": 2,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 8192, "dim": 32768},
        "small": {"batch_size": 6, "dim": 5000},
        "heldout": [
            {"batch_size": 2047, "dim": 50001},
            {"batch_size": 100003, "dim": 1000},
        ],
    },
    "flops": "5 * batch_size * dim",
    "bytes": "4 * (3 * batch_size * dim + dim)",
}


class Model(nn.Module):
    """y = RMSNorm(x + residual) * weight over the last dim, eps = 1e-6.

    The weight is drawn from the global RNG in __init__ (nn.RMSNorm's default is all ones); a
    ModelNew must create it the same way.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        with torch.no_grad():
            self.norm.weight.copy_(1.0 + 0.5 * torch.randn(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.norm(x + residual)


def get_inputs():
    x = torch.randn(batch_size, dim)
    residual = torch.randn(batch_size, dim)
    return [x, residual]


def get_init_inputs():
    return [dim]
