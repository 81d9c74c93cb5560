import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

from kforge_cutlass import CUTLASS_NVCC_FLAGS, include_paths

CUDA_SRC = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cutlass/cutlass.h>
#include <cutlass/epilogue/thread/linear_combination.h>
#include <cutlass/gemm/device/gemm.h>

// C = A @ B in exact fp32 (no TF32) with CUTLASS's SIMT GEMM: FFMA on the CUDA cores, a 128 x 128 x 8
// block tile, 32 x 64 warp tiles, a 4-stage cp.async pipeline (sm_80 and later). Alignment 1 (one
// float per access) for A, B and C, so any M, N and K work without padding. The epilogue only scales
// the accumulators (OnlyAlphaScaling): it never reads C, which torch::empty leaves uninitialised.
using Epilogue = cutlass::epilogue::thread::LinearCombination<
    float, 1, float, float, cutlass::epilogue::thread::ScaleType::OnlyAlphaScaling>;

using Gemm = cutlass::gemm::device::Gemm<
    float, cutlass::layout::RowMajor,   // A (M x K)
    float, cutlass::layout::RowMajor,   // B (K x N)
    float, cutlass::layout::RowMajor,   // C (M x N)
    float,                              // accumulator
    cutlass::arch::OpClassSimt, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<128, 128, 8>,  // block tile
    cutlass::gemm::GemmShape<32, 64, 8>,    // warp tile
    cutlass::gemm::GemmShape<1, 1, 1>,      // one FFMA
    Epilogue,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<4>,
    4,        // pipeline stages
    1, 1>;    // alignment of A and B (elements)

torch::Tensor matmul_forward(torch::Tensor A, torch::Tensor B) {
    TORCH_CHECK(A.is_cuda() && B.is_cuda() && A.dim() == 2 && B.dim() == 2,
                "A and B must be 2-D CUDA tensors");
    TORCH_CHECK(A.scalar_type() == torch::kFloat32 && B.scalar_type() == torch::kFloat32, "float32 only");
    TORCH_CHECK(A.size(1) == B.size(0), "inner dimensions differ");
    TORCH_CHECK(A.size(0) <= INT32_MAX && A.size(1) <= INT32_MAX && B.size(1) <= INT32_MAX, "too large");
    const c10::cuda::CUDAGuard guard(A.device());
    A = A.contiguous();
    B = B.contiguous();
    const int M = (int)A.size(0), K = (int)A.size(1), N = (int)B.size(1);
    auto C = torch::empty({M, N}, A.options());
    if (M == 0 || N == 0) return C;

    typename Gemm::Arguments args(
        {M, N, K},
        {A.data_ptr<float>(), K},   // (pointer, leading dimension)
        {B.data_ptr<float>(), N},
        {C.data_ptr<float>(), N},   // source C: never read (OnlyAlphaScaling)
        {C.data_ptr<float>(), N},   // destination D
        {1.0f, 0.0f});              // alpha, beta
    Gemm gemm;
    cutlass::Status status = gemm.can_implement(args);
    TORCH_CHECK(status == cutlass::Status::kSuccess, "CUTLASS cannot run this GEMM: ",
                cutlassGetStatusString(status));
    TORCH_CHECK(Gemm::get_workspace_size(args) == 0, "unexpected workspace");
    status = gemm(args, nullptr, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(status == cutlass::Status::kSuccess, "CUTLASS GEMM failed: ", cutlassGetStatusString(status));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return C;
}
"""

CPP_SRC = "torch::Tensor matmul_forward(torch::Tensor A, torch::Tensor B);"

matmul_ext = load_inline(
    name="kforge_cutlass_matmul",
    cpp_sources=CPP_SRC,
    cuda_sources=CUDA_SRC,
    functions=["matmul_forward"],
    extra_include_paths=include_paths(),
    extra_cuda_cflags=CUTLASS_NVCC_FLAGS,
)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return matmul_ext.matmul_forward(A, B)
