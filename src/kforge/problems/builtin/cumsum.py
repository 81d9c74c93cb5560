import torch
import torch.nn as nn

# Main shape: 384M fp32 values, 1.5 GiB in + 1.5 GiB out; rows of 8192 scanned independently.
batch_size = 49152
dim = 8192

KFORGE = {
    "name": "Cumulative sum along rows (inclusive scan)",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 49152, "dim": 8192},
        "small": {"batch_size": 7, "dim": 3000},
        "heldout": [
            {"batch_size": 20011, "dim": 10007},
            {"batch_size": 3, "dim": 1000003},
        ],
    },
    # Correct fp32 scans differ where the running sum crosses zero: with the judge's wide-range
    # inputs (magnitudes up to 1e2) the running sum reaches ~1e4, whose fp32 ulp is ~1e-3. Measured on
    # an H100 (torch.cumsum vs the example's blocked tree scan): needing atol 6e-3 at rows of 8192 and
    # 2.7e-2 at rows of 1M (held-out), 4e-4 on normal inputs; so atol 0.1. A strictly sequential fp32
    # scan errs by ~0.5 on 1M-long wide rows and fails: carry per block. An exclusive scan (off by x_i),
    # a dropped carry or a bf16/fp16 accumulator (ulp 0.25 at a running sum of 64) still fail, and the
    # relative L2 error (6e-7 measured) must stay under rtol.
    "atol": 1e-1,
    "rtol": 1e-4,
    "flops": "batch_size * dim",
    "bytes": "4 * 2 * batch_size * dim",
}


class Model(nn.Module):
    """torch.cumsum over dim=1 of a (batch_size, dim) tensor."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
