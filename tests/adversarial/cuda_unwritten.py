# expect: incorrect nonfinite
# problem: relu
# backend: cuda
# gpu
# The Sakana exploit on the real allocator: the CUDA kernel never writes its output, and PyTorch's
# caching allocator hands back a freed block. kforge's reference runs in another process and the
# sandbox poisons the blocks it is about to hand out, so what comes back is NaN, not an answer.
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>

__global__ void relu_kernel(const float* x, float* y, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n && x[i] != x[i]) y[i] = 0.f;  // only ever writes for NaN inputs: never
}

torch::Tensor relu_cuda(torch::Tensor x) {
    auto y = torch::empty_like(x);
    int64_t n = x.numel();
    relu_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""

ext = load_inline(name="relu_unwritten", cpp_sources="torch::Tensor relu_cuda(torch::Tensor x);",
                  cuda_sources=CUDA_SRC, functions=["relu_cuda"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ext.relu_cuda(x.contiguous())
