import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: 384M fp32 elements, 1.5 GiB in + 1.5 GiB out.
batch_size = 6144
dim = 65536

KFORGE = {
    "name": "SiLU (swish) on a large 2-D tensor",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 6144, "dim": 65536},
        "small": {"batch_size": 128, "dim": 513},
        "heldout": [
            {"batch_size": 3001, "dim": 40009},
            {"batch_size": 9, "dim": 1000003},
        ],
    },
    "flops": "4 * batch_size * dim",
    "bytes": "4 * 2 * batch_size * dim",
}


class Model(nn.Module):
    """Applies SiLU elementwise: x * sigmoid(x)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
