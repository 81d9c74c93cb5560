import torch
import torch.nn as nn

# Main shape: 512M fp32 values read (2 GiB), a tiny output.
batch_size = 8192
dim = 65536

KFORGE = {
    "name": "Sum over rows (keepdim)",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 8192, "dim": 65536},
        "small": {"batch_size": 9, "dim": 5000},
        "heldout": [
            {"batch_size": 4099, "dim": 65521},
            {"batch_size": 1000003, "dim": 97},
        ],
    },
    # fp32 sums of 64K values differ between correct summation orders by up to ~4e-3 on the judge's
    # wide-range inputs (magnitudes up to 1e2, measured on an H100); a dropped tail or a bf16
    # accumulator errs by far more, and zeros still fail the relative-L2 check.
    "atol": 1e-2,
    "rtol": 1e-4,
    "flops": "batch_size * dim",
    "bytes": "4 * (batch_size * dim + batch_size)",
}


class Model(nn.Module):
    """Sum over dim=1 of (batch_size, dim), keeping dims: output (batch_size, 1)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(x, dim=1, keepdim=True)


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
