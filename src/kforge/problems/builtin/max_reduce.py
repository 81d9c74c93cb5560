import torch
import torch.nn as nn

# Main shape: (128, 4096, 1024) fp32 = 2 GiB read, reduced over the middle (strided) dimension.
batch_size = 128
dim1 = 4096
dim2 = 1024
reduce_dim = 1

KFORGE = {
    "name": "Max over a middle dimension",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 128, "dim1": 4096, "dim2": 1024},
        "small": {"batch_size": 3, "dim1": 300, "dim2": 70},
        "heldout": [
            {"batch_size": 61, "dim1": 8191, "dim2": 1021},
            {"batch_size": 1001, "dim1": 7, "dim2": 40009},
        ],
    },
    "flops": "batch_size * dim1 * dim2",
    "bytes": "4 * (batch_size * dim1 * dim2 + batch_size * dim2)",
}


class Model(nn.Module):
    """torch.max(x, dim).values of a (batch_size, dim1, dim2) tensor; dim is 1 here."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.max(x, dim=self.dim)[0]


def get_inputs():
    x = torch.randn(batch_size, dim1, dim2)
    return [x]


def get_init_inputs():
    return [reduce_dim]
