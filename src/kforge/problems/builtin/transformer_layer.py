import torch
import torch.nn as nn
import torch.nn.functional as F

# Main shape: 16 sequences of 2048 tokens, width 256, single head, MLP hidden 4 * 256, fp32:
# projections 24 * 32768 * 256^2 = 52 GFLOP plus causal attention 2 * 16 * 2048^2 * 256 = 34 GFLOP.
batch_size = 16
seq_len = 2048
dim = 256

KFORGE = {
    "name": "Pre-norm transformer layer (causal single-head attention + GELU MLP)",
    "level": 3,
    "dtype": "float32",
    "shapes": {
        "main": {"batch_size": 16, "seq_len": 2048, "dim": 256},
        "small": {"batch_size": 2, "seq_len": 40, "dim": 32},
        "heldout": [
            {"batch_size": 3, "seq_len": 3001, "dim": 128},
            {"batch_size": 33, "seq_len": 1023, "dim": 256},
        ],
    },
    "flops": "24 * batch_size * seq_len * dim * dim + 2 * batch_size * seq_len * seq_len * dim",
    "bytes": "4 * (2 * batch_size * seq_len * dim + 12 * dim * dim + 13 * dim)",
}


class Model(nn.Module):
    """Pre-norm transformer layer on x of shape (batch_size, seq_len, dim):

        h = x + out(attn(ln1(x)))   with q, k, v = split(qkv(ln1(x))), causal, one head of size dim
        y = h + fc2(gelu(fc1(ln2(h))))   with fc1: dim -> 4 dim, exact (erf) GELU

    Submodules are created in the order ln1, qkv, out, ln2, fc1, fc2 (nn defaults), then the
    LayerNorm affine parameters (all ones/zeros by default, which a kernel could ignore) are redrawn
    from the global RNG: ln1.weight, ln1.bias, ln2.weight, ln2.bias. A ModelNew must do the same.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        with torch.no_grad():
            for ln in (self.ln1, self.ln2):
                ln.weight.copy_(1.0 + 0.5 * torch.randn(dim))
                ln.bias.copy_(0.5 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        h = x + self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


def get_inputs():
    x = torch.randn(batch_size, seq_len, dim)
    return [x]


def get_init_inputs():
    return [dim]
