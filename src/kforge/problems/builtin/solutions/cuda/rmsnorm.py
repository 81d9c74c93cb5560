import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cstdint>

// RMSNorm over the last dim in two passes over each row: the sum of squares (fp32, reduced with warp
// shuffles), then y = x * rsqrt(sum / cols + eps) * weight. Rows of up to WARP_MAX_COLS values get one
// warp each; longer rows a block of ROW_THREADS threads, with only as many blocks as keep the rows in
// flight in L2 (the second pass then reads L2, not DRAM).

constexpr int WARP_ROWS = 8;
constexpr int WARP_MAX_COLS = 1024;
constexpr int ROW_THREADS = 1024;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ float sq4(float4 v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }

__device__ __forceinline__ float4 scale4(float4 v, float4 g, float r) {
    return make_float4(v.x * r * g.x, v.y * r * g.y, v.z * r * g.z, v.w * r * g.w);
}

template <bool VEC>
__global__ __launch_bounds__(WARP_ROWS * 32) void rmsnorm_warp_kernel(
        const float* __restrict__ x, const float* __restrict__ gamma, float* __restrict__ y, int64_t rows,
        int cols, float eps) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARP_ROWS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    float ss = 0.f;
    if (VEC) {
        const float4* xv = reinterpret_cast<const float4*>(xr);
        for (int i = lane; i < (cols >> 2); i += 32) ss += sq4(xv[i]);
    } else {
        for (int i = lane; i < cols; i += 32) ss += xr[i] * xr[i];
    }
    const float r = rsqrtf(warp_sum(ss) / (float)cols + eps);
    if (VEC) {
        const float4* xv = reinterpret_cast<const float4*>(xr);
        const float4* gv = reinterpret_cast<const float4*>(gamma);
        float4* yv = reinterpret_cast<float4*>(yr);
        for (int i = lane; i < (cols >> 2); i += 32) yv[i] = scale4(xv[i], gv[i], r);
    } else {
        for (int i = lane; i < cols; i += 32) yr[i] = xr[i] * r * gamma[i];
    }
}

template <bool VEC>
__global__ __launch_bounds__(ROW_THREADS) void rmsnorm_block_kernel(
        const float* __restrict__ x, const float* __restrict__ gamma, float* __restrict__ y, int64_t rows,
        int cols, float eps) {
    constexpr int T = ROW_THREADS;
    constexpr int WARPS = T / 32;
    __shared__ float part[WARPS];
    __shared__ float row_r;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * cols;
        float* yr = y + row * cols;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;  // four chains: loads and adds overlap
        if (VEC) {
            const float4* xv = reinterpret_cast<const float4*>(xr);
            const int nv = cols >> 2;
            int i = tid;
            for (; i + 3 * T < nv; i += 4 * T) {
                const float4 a = xv[i], b = xv[i + T], c = xv[i + 2 * T], d = xv[i + 3 * T];
                s0 += sq4(a);
                s1 += sq4(b);
                s2 += sq4(c);
                s3 += sq4(d);
            }
            for (; i < nv; i += T) s0 += sq4(xv[i]);
        } else {
            int i = tid;
            for (; i + 3 * T < cols; i += 4 * T) {
                const float a = xr[i], b = xr[i + T], c = xr[i + 2 * T], d = xr[i + 3 * T];
                s0 += a * a;
                s1 += b * b;
                s2 += c * c;
                s3 += d * d;
            }
            for (; i < cols; i += T) s0 += xr[i] * xr[i];
        }
        const float ss = warp_sum((s0 + s1) + (s2 + s3));
        if (lane == 0) part[warp] = ss;
        __syncthreads();
        if (warp == 0) {
            const float total = warp_sum(lane < WARPS ? part[lane] : 0.f);
            if (lane == 0) row_r = rsqrtf(total / (float)cols + eps);
        }
        __syncthreads();
        // (rewritten only after the next row's first barrier, which every thread reaches after this)
        const float r = row_r;
        if (VEC) {
            const float4* xv = reinterpret_cast<const float4*>(xr);
            const float4* gv = reinterpret_cast<const float4*>(gamma);
            float4* yv = reinterpret_cast<float4*>(yr);
            const int nv = cols >> 2;
            int i = tid;
            for (; i + T < nv; i += 2 * T) {
                const float4 a = xv[i], b = xv[i + T], ga = gv[i], gb = gv[i + T];
                __stcs(yv + i, scale4(a, ga, r));
                __stcs(yv + i + T, scale4(b, gb, r));
            }
            for (; i < nv; i += T) __stcs(yv + i, scale4(xv[i], gv[i], r));
        } else {
            for (int i = tid; i < cols; i += T) __stcs(yr + i, xr[i] * r * gamma[i]);
        }
    }
}

static int device_attr(cudaDeviceAttr attr, int device) {
    int value = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
    return value;
}

// Blocks for a persistent block-per-row kernel: as many as can be resident, but no more rows in flight
// (one per block) than fit in half of L2, so the second pass over a row reads L2, not DRAM.
template <typename Kernel>
static int64_t persistent_blocks(Kernel kernel, int device, int64_t rows, int cols) {
    const int64_t sms = device_attr(cudaDevAttrMultiProcessorCount, device);
    const int64_t l2 = device_attr(cudaDevAttrL2CacheSize, device);
    int resident = 1;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, ROW_THREADS, 0));
    const int64_t fit = (l2 / 2) / (sms * (int64_t)cols * 4);
    const int64_t per_sm = std::max<int64_t>(1, std::min<int64_t>(std::max(resident, 1), fit));
    return std::min<int64_t>(rows, sms * per_sm);
}

static bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

torch::Tensor rmsnorm_forward(torch::Tensor x, torch::Tensor weight, double eps) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 2, "x must be a 2-D CUDA tensor");
    TORCH_CHECK(x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32, "float32 only");
    TORCH_CHECK(weight.numel() == x.size(1), "weight must have dim values");
    TORCH_CHECK(x.size(1) <= INT32_MAX, "rows too long");
    const c10::cuda::CUDAGuard guard(x.device());
    x = x.contiguous();
    weight = weight.contiguous();
    auto y = torch::empty_like(x);
    const int64_t rows = x.size(0);
    const int cols = (int)x.size(1);
    if (rows == 0 || cols == 0) return y;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const float* xp = x.data_ptr<float>();
    const float* gp = weight.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const bool vec = cols % 4 == 0 && aligned16(xp) && aligned16(yp) && aligned16(gp);
    const float e = (float)eps;
    if (cols <= WARP_MAX_COLS) {
        const int64_t blocks = (rows + WARP_ROWS - 1) / WARP_ROWS;
        TORCH_CHECK(blocks <= 2147483647LL, "too many rows");
        if (vec)
            rmsnorm_warp_kernel<true><<<(unsigned)blocks, WARP_ROWS * 32, 0, stream>>>(xp, gp, yp, rows, cols, e);
        else
            rmsnorm_warp_kernel<false><<<(unsigned)blocks, WARP_ROWS * 32, 0, stream>>>(xp, gp, yp, rows, cols, e);
    } else {
        auto kernel = vec ? rmsnorm_block_kernel<true> : rmsnorm_block_kernel<false>;
        const int64_t blocks = persistent_blocks(kernel, x.get_device(), rows, cols);
        kernel<<<(unsigned)blocks, ROW_THREADS, 0, stream>>>(xp, gp, yp, rows, cols, e);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
"""

CPP_SRC = "torch::Tensor rmsnorm_forward(torch::Tensor x, torch::Tensor weight, double eps);"

rmsnorm_ext = load_inline(
    name="kforge_cuda_rmsnorm",
    cpp_sources=CPP_SRC,
    cuda_sources=CUDA_SRC,
    functions=["rmsnorm_forward"],
    extra_cuda_cflags=["-O3"],
)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # Same parameter, created the same way, as Model.
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        with torch.no_grad():
            self.norm.weight.copy_(1.0 + 0.5 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm_ext.rmsnorm_forward(x, self.norm.weight, self.norm.eps)
