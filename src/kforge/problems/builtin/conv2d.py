import torch
import torch.nn as nn

# Main shape: 2 * 32 * 128 * 128 * 128 * 64 * 9 = 77 GFLOP in fp32 (TF32 off);
# 128 MiB input, 256 MiB output.
batch_size = 32
in_channels = 64
out_channels = 128
height = 128
width = 128

KFORGE = {
    "name": "2-D convolution, 3x3, stride 1, padding 1 (NCHW, fp32)",
    "level": 1,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 32, "in_channels": 64, "out_channels": 128, "height": 128, "width": 128},
        "small": {"batch_size": 2, "in_channels": 5, "out_channels": 7, "height": 9, "width": 11},
        "heldout": [
            {"batch_size": 7, "in_channels": 61, "out_channels": 127, "height": 131, "width": 97},
            {"batch_size": 64, "in_channels": 3, "out_channels": 64, "height": 224, "width": 223},
        ],
    },
    "flops": "2 * batch_size * out_channels * height * width * in_channels * 9",
    "bytes": "4 * (batch_size * in_channels * height * width + out_channels * in_channels * 9"
             " + out_channels + batch_size * out_channels * height * width)",
}


class Model(nn.Module):
    """nn.Conv2d(in_channels, out_channels, 3, padding=1) with bias, on (N, C, H, W) input."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 means IEEE fp32 here: cuDNN convolutions default to TF32 on Ampere and later
        # (torch.backends.cudnn.allow_tf32 is True by default), about 1e-3 relative error.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return self.conv(x)


def get_inputs():
    x = torch.randn(batch_size, in_channels, height, width)
    return [x]


def get_init_inputs():
    return [in_channels, out_channels]
