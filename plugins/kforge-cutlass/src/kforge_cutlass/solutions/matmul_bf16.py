import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.cpp_extension import load_inline

from kforge_cutlass import CUTLASS_NVCC_FLAGS, include_paths

CUDA_SRC = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cutlass/cutlass.h>
#include <cutlass/numeric_types.h>
#include <cutlass/epilogue/thread/linear_combination.h>
#include <cutlass/gemm/device/gemm.h>

// C = A @ B with bf16 inputs on the tensor cores (mma.sync 16x8x16, fp32 accumulation), rounded once
// to bf16: a 128 x 256 x 64 block tile of eight 64 x 64 warp tiles, a 3-stage cp.async pipeline
// (sm_80 and later, Hopper included). Its 16-byte accesses need K and N to be multiples of 8 (the
// Python side pads other shapes with zeros). The epilogue only scales the accumulators
// (OnlyAlphaScaling), so it never reads the uninitialised output.
using Element = cutlass::bfloat16_t;
constexpr int kAlignment = 8;  // bf16 values per 16-byte access

using Epilogue = cutlass::epilogue::thread::LinearCombination<
    Element, kAlignment, float, float, cutlass::epilogue::thread::ScaleType::OnlyAlphaScaling>;

using Gemm = cutlass::gemm::device::Gemm<
    Element, cutlass::layout::RowMajor,   // A (M x K)
    Element, cutlass::layout::RowMajor,   // B (K x N)
    Element, cutlass::layout::RowMajor,   // C (M x N)
    float,                                // accumulator
    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<128, 256, 64>,  // block tile
    cutlass::gemm::GemmShape<64, 64, 64>,    // warp tile
    cutlass::gemm::GemmShape<16, 8, 16>,     // mma.sync bf16 instruction
    Epilogue,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>,
    3,                         // pipeline stages
    kAlignment, kAlignment>;   // alignment of A and B (elements)

torch::Tensor matmul_bf16_forward(torch::Tensor A, torch::Tensor B) {
    TORCH_CHECK(A.is_cuda() && B.is_cuda() && A.dim() == 2 && B.dim() == 2,
                "A and B must be 2-D CUDA tensors");
    TORCH_CHECK(A.scalar_type() == torch::kBFloat16 && B.scalar_type() == torch::kBFloat16, "bfloat16 only");
    TORCH_CHECK(A.size(1) == B.size(0), "inner dimensions differ");
    TORCH_CHECK(A.size(0) <= INT32_MAX && A.size(1) <= INT32_MAX && B.size(1) <= INT32_MAX, "too large");
    const c10::cuda::CUDAGuard guard(A.device());
    A = A.contiguous();
    B = B.contiguous();
    const int M = (int)A.size(0), K = (int)A.size(1), N = (int)B.size(1);
    TORCH_CHECK(K % kAlignment == 0 && N % kAlignment == 0, "K and N must be multiples of 8 (pad first)");
    auto C = torch::empty({M, N}, A.options());
    if (M == 0 || N == 0) return C;
    auto* a = reinterpret_cast<Element const*>(A.data_ptr<at::BFloat16>());
    auto* b = reinterpret_cast<Element const*>(B.data_ptr<at::BFloat16>());
    auto* c = reinterpret_cast<Element*>(C.data_ptr<at::BFloat16>());
    for (const void* p : {static_cast<const void*>(a), static_cast<const void*>(b),
                          static_cast<const void*>(c)})
        TORCH_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, "operands must be 16-byte aligned");

    typename Gemm::Arguments args({M, N, K}, {a, K}, {b, N}, {c, N}, {c, N}, {1.0f, 0.0f});
    Gemm gemm;
    cutlass::Status status = gemm.can_implement(args);
    TORCH_CHECK(status == cutlass::Status::kSuccess, "CUTLASS cannot run this GEMM: ",
                cutlassGetStatusString(status));
    TORCH_CHECK(Gemm::get_workspace_size(args) == 0, "unexpected workspace");
    // Gemm::initialize raises the kernel's shared-memory limit (the 3 stages need 144 KiB) before launching.
    status = gemm(args, nullptr, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(status == cutlass::Status::kSuccess, "CUTLASS GEMM failed: ", cutlassGetStatusString(status));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return C;
}
"""

CPP_SRC = "torch::Tensor matmul_bf16_forward(torch::Tensor A, torch::Tensor B);"

matmul_bf16_ext = load_inline(
    name="kforge_cutlass_matmul_bf16",
    cpp_sources=CPP_SRC,
    cuda_sources=CUDA_SRC,
    functions=["matmul_bf16_forward"],
    extra_include_paths=include_paths(),
    extra_cuda_cflags=CUTLASS_NVCC_FLAGS,
)

ALIGN = 8  # the kernel's 16-byte accesses: K and N in multiples of 8 bf16 values


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        K, N = B.shape
        pad_k, pad_n = -K % ALIGN, -N % ALIGN
        if pad_k == 0 and pad_n == 0:
            return matmul_bf16_ext.matmul_bf16_forward(A, B)
        # Zero rows/columns contribute nothing to the sums: the padded product, cut back to N columns, is
        # exactly A @ B.
        A = F.pad(A, (0, pad_k))
        B = F.pad(B, (0, pad_n, 0, pad_k))
        return matmul_bf16_ext.matmul_bf16_forward(A, B)[:, :N].contiguous()
