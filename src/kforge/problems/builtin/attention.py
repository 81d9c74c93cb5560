import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: 16 sequences of 4096 tokens, head dim 128, fp32: QK^T and PV over the causal half,
# 2 * 2 * 16 * 4096^2 * 128 / 2 = 69 GFLOP; q, k, v and the output are 32 MiB each.
batch_size = 16
seq_len = 4096
head_dim = 128

KFORGE = {
    "name": "Causal scaled dot-product attention (single head, fp32)",
    "level": 3,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 16, "seq_len": 4096, "head_dim": 128},
        "small": {"batch_size": 2, "seq_len": 50, "head_dim": 16},
        "heldout": [
            {"batch_size": 3, "seq_len": 3001, "head_dim": 64},
            {"batch_size": 61, "seq_len": 1023, "head_dim": 128},
        ],
    },
    # On the judge's wide-range inputs the logits reach ~1e4, where fp32 rounding alone moves the
    # softmax weights of near-tied keys; correct kernels (SDPA vs the example's flash kernel) then
    # differ by up to 0.08 at outputs of magnitude ~1e2 (measured on an H100, 6 trials; 2e-6 on normal
    # inputs), so atol 0.5. The relative L2 error, 1.6e-5 at worst measured, must stay under
    # rtol = 1e-4, which a TF32/bf16 QK^T, a missing causal mask, a wrong scale or a skipped block fails.
    "atol": 5e-1,
    "rtol": 1e-4,
    "flops": "2 * batch_size * seq_len * seq_len * head_dim",
    "bytes": "4 * 4 * batch_size * seq_len * head_dim",
}


class Model(nn.Module):
    """softmax(q k^T / sqrt(head_dim) + causal mask) v for q, k, v of shape (batch_size, seq_len, head_dim)."""

    def __init__(self):
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def get_inputs():
    q = torch.randn(batch_size, seq_len, head_dim)
    k = torch.randn(batch_size, seq_len, head_dim)
    v = torch.randn(batch_size, seq_len, head_dim)
    return [q, k, v]


def get_init_inputs():
    return []
