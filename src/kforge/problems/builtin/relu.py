import torch
import torch.nn as nn

# Main shape: 256M fp32 elements, 1 GiB in + 1 GiB out.
batch_size = 4096
dim = 65536

KFORGE = {
    "name": "ReLU on a large 2-D tensor",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 4096, "dim": 65536},
        "small": {"batch_size": 256, "dim": 257},
        "heldout": [
            {"batch_size": 3001, "dim": 40009},
            {"batch_size": 7, "dim": 1000003},
        ],
    },
    "flops": "batch_size * dim",
    "bytes": "4 * 2 * batch_size * dim",
}


class Model(nn.Module):
    """Applies ReLU elementwise."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
