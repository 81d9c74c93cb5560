import torch
import torch.nn as nn

# Main shape: rows of 32K fp32 values, 1 GiB in + 1 GiB out.
batch_size = 8192
dim = 32768

KFORGE = {
    "name": "LayerNorm over the last dimension",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 8192, "dim": 32768},
        "small": {"batch_size": 6, "dim": 5000},
        "heldout": [
            {"batch_size": 2047, "dim": 50001},
            {"batch_size": 100003, "dim": 1000},
        ],
    },
    "flops": "8 * batch_size * dim",
    "bytes": "4 * (2 * batch_size * dim + 2 * dim)",
}


class Model(nn.Module):
    """nn.LayerNorm(dim) with elementwise affine over the last dim of (batch_size, dim).

    The affine parameters are drawn from the global RNG in __init__ (so a kernel
    that ignores weight or bias is caught); a ModelNew must create them the same way,
    in the same order.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(normalized_shape=(dim,))
        with torch.no_grad():
            self.ln.weight.copy_(1.0 + 0.5 * torch.randn(dim))
            self.ln.bias.copy_(0.5 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x)


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return [dim]
