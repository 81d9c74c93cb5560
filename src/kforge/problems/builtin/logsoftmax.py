import torch
import torch.nn as nn

# Main shape: rows of 64K fp32 values (256 KiB a row), 1 GiB in + 1 GiB out.
batch_size = 4096
dim = 65536

KFORGE = {
    "name": "LogSoftmax over a long row",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 4096, "dim": 65536},
        "small": {"batch_size": 5, "dim": 5000},
        "heldout": [
            {"batch_size": 1021, "dim": 50001},
            {"batch_size": 65537, "dim": 777},
        ],
    },
    "flops": "5 * batch_size * dim",
    "bytes": "4 * 2 * batch_size * dim",
}


class Model(nn.Module):
    """log_softmax over dim=1 of a (batch_size, dim) tensor."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x, dim=1)


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
