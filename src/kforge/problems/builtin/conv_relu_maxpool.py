import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: a 77 GFLOP fp32 3x3 conv (TF32 off) on 128 MiB of input, then ReLU and a 2x2 max pool
# (64 MiB out).
batch_size = 32
in_channels = 64
out_channels = 128
height = 128
width = 128

KFORGE = {
    "name": "Conv2d 3x3 (padding 1) + ReLU + 2x2 max pool",
    "level": 2,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 32, "in_channels": 64, "out_channels": 128, "height": 128, "width": 128},
        "small": {"batch_size": 2, "in_channels": 5, "out_channels": 7, "height": 9, "width": 11},
        "heldout": [
            {"batch_size": 7, "in_channels": 61, "out_channels": 127, "height": 131, "width": 97},
            {"batch_size": 64, "in_channels": 3, "out_channels": 64, "height": 224, "width": 223},
        ],
    },
    "flops": "2 * batch_size * out_channels * height * width * in_channels * 9"
             " + 2 * batch_size * out_channels * height * width",
    "bytes": "4 * (batch_size * in_channels * height * width + out_channels * in_channels * 9"
             " + out_channels + batch_size * out_channels * height * width / 4)",
}


class Model(nn.Module):
    """maxpool2d(relu(conv3x3(x) + b), 2): nn.Conv2d(in, out, 3, padding=1) then F.max_pool2d(., 2)
    (floor mode: an odd last row/column is dropped)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 means IEEE fp32 here: cuDNN convolutions default to TF32 on Ampere and later
        # (torch.backends.cudnn.allow_tf32 is True by default), about 1e-3 relative error.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return F.max_pool2d(torch.relu(self.conv(x)), kernel_size=2)


def get_inputs():
    x = torch.randn(batch_size, in_channels, height, width)
    return [x]


def get_init_inputs():
    return [in_channels, out_channels]
