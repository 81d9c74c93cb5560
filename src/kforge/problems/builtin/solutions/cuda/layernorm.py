import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cstdint>

// LayerNorm over the last dim in two passes over each row: Welford's running (count, mean, M2) per
// thread, merged across lanes and warps with Chan's formula (no E[x^2] - E[x]^2 cancellation), then
// y = (x - mean) * rstd * weight + bias. Rows of up to WARP_MAX_COLS values get one warp each; longer
// rows a block of ROW_THREADS threads, with only as many blocks as keep the rows in flight in L2.

constexpr int WARP_ROWS = 8;
constexpr int WARP_MAX_COLS = 1024;
constexpr int ROW_THREADS = 1024;

struct Welford {
    float n, mean, m2;
};

__device__ __forceinline__ void welford_push(Welford& w, float x) {
    w.n += 1.f;
    const float d = x - w.mean;
    w.mean += d / w.n;
    w.m2 += d * (x - w.mean);
}

__device__ __forceinline__ void welford_push4(Welford& w, float4 v) {
    welford_push(w, v.x);
    welford_push(w, v.y);
    welford_push(w, v.z);
    welford_push(w, v.w);
}

__device__ __forceinline__ void welford_merge(Welford& a, const Welford& b) {
    const float n = a.n + b.n;
    if (n == 0.f) return;
    const float d = b.mean - a.mean;
    const float fb = b.n / n;
    a.mean += d * fb;
    a.m2 += b.m2 + d * d * a.n * fb;
    a.n = n;
}

__device__ __forceinline__ void warp_welford(Welford& w) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        Welford o;
        o.n = __shfl_xor_sync(0xffffffffu, w.n, off);
        o.mean = __shfl_xor_sync(0xffffffffu, w.mean, off);
        o.m2 = __shfl_xor_sync(0xffffffffu, w.m2, off);
        welford_merge(w, o);
    }
}

__device__ __forceinline__ float4 norm4(float4 v, float4 g, float4 b, float mean, float rstd) {
    return make_float4((v.x - mean) * rstd * g.x + b.x, (v.y - mean) * rstd * g.y + b.y,
                       (v.z - mean) * rstd * g.z + b.z, (v.w - mean) * rstd * g.w + b.w);
}

template <bool VEC>
__global__ __launch_bounds__(WARP_ROWS * 32) void layernorm_warp_kernel(
        const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
        float* __restrict__ y, int64_t rows, int cols, float eps) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARP_ROWS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    Welford w = {0.f, 0.f, 0.f};
    if (VEC) {
        const float4* xv = reinterpret_cast<const float4*>(xr);
        for (int i = lane; i < (cols >> 2); i += 32) welford_push4(w, xv[i]);
    } else {
        for (int i = lane; i < cols; i += 32) welford_push(w, xr[i]);
    }
    warp_welford(w);
    const float mean = w.mean;
    const float rstd = rsqrtf(w.m2 / (float)cols + eps);
    if (VEC) {
        const float4* xv = reinterpret_cast<const float4*>(xr);
        const float4* gv = reinterpret_cast<const float4*>(gamma);
        const float4* bv = reinterpret_cast<const float4*>(beta);
        float4* yv = reinterpret_cast<float4*>(yr);
        for (int i = lane; i < (cols >> 2); i += 32) yv[i] = norm4(xv[i], gv[i], bv[i], mean, rstd);
    } else {
        for (int i = lane; i < cols; i += 32) yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
    }
}

template <bool VEC>
__global__ __launch_bounds__(ROW_THREADS) void layernorm_block_kernel(
        const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
        float* __restrict__ y, int64_t rows, int cols, float eps) {
    constexpr int T = ROW_THREADS;
    constexpr int WARPS = T / 32;
    __shared__ Welford part[WARPS];
    __shared__ float row_mean, row_rstd;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * cols;
        float* yr = y + row * cols;
        Welford w = {0.f, 0.f, 0.f};
        if (VEC) {
            const float4* xv = reinterpret_cast<const float4*>(xr);
            const int nv = cols >> 2;
            int i = tid;
            for (; i + 3 * T < nv; i += 4 * T) {  // four 16-byte loads in flight per thread
                const float4 a = xv[i], b = xv[i + T], c = xv[i + 2 * T], d = xv[i + 3 * T];
                welford_push4(w, a);
                welford_push4(w, b);
                welford_push4(w, c);
                welford_push4(w, d);
            }
            for (; i < nv; i += T) welford_push4(w, xv[i]);
        } else {
            int i = tid;
            for (; i + 3 * T < cols; i += 4 * T) {
                const float a = xr[i], b = xr[i + T], c = xr[i + 2 * T], d = xr[i + 3 * T];
                welford_push(w, a);
                welford_push(w, b);
                welford_push(w, c);
                welford_push(w, d);
            }
            for (; i < cols; i += T) welford_push(w, xr[i]);
        }
        warp_welford(w);
        if (lane == 0) part[warp] = w;
        __syncthreads();
        if (warp == 0) {
            if (lane < WARPS) {
                w = part[lane];
            } else {
                w.n = 0.f;
                w.mean = 0.f;
                w.m2 = 0.f;
            }
            warp_welford(w);
            if (lane == 0) {
                row_mean = w.mean;
                row_rstd = rsqrtf(w.m2 / (float)cols + eps);
            }
        }
        __syncthreads();
        // (rewritten only after the next row's first barrier, which every thread reaches after this)
        const float mean = row_mean, rstd = row_rstd;
        if (VEC) {
            const float4* xv = reinterpret_cast<const float4*>(xr);
            const float4* gv = reinterpret_cast<const float4*>(gamma);
            const float4* bv = reinterpret_cast<const float4*>(beta);
            float4* yv = reinterpret_cast<float4*>(yr);
            const int nv = cols >> 2;
            int i = tid;
            for (; i + T < nv; i += 2 * T) {
                const float4 a = xv[i], b = xv[i + T];
                const float4 ga = gv[i], gb = gv[i + T], ba = bv[i], bb = bv[i + T];
                __stcs(yv + i, norm4(a, ga, ba, mean, rstd));
                __stcs(yv + i + T, norm4(b, gb, bb, mean, rstd));
            }
            for (; i < nv; i += T) __stcs(yv + i, norm4(xv[i], gv[i], bv[i], mean, rstd));
        } else {
            for (int i = tid; i < cols; i += T) __stcs(yr + i, (xr[i] - mean) * rstd * gamma[i] + beta[i]);
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

torch::Tensor layernorm_forward(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, double eps) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 2, "x must be a 2-D CUDA tensor");
    TORCH_CHECK(x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 &&
                bias.scalar_type() == torch::kFloat32, "float32 only");
    TORCH_CHECK(weight.numel() == x.size(1) && bias.numel() == x.size(1), "weight/bias must have dim values");
    TORCH_CHECK(x.size(1) <= INT32_MAX, "rows too long");
    const c10::cuda::CUDAGuard guard(x.device());
    x = x.contiguous();
    weight = weight.contiguous();
    bias = bias.contiguous();
    auto y = torch::empty_like(x);
    const int64_t rows = x.size(0);
    const int cols = (int)x.size(1);
    if (rows == 0 || cols == 0) return y;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const float* xp = x.data_ptr<float>();
    const float* gp = weight.data_ptr<float>();
    const float* bp = bias.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const bool vec = cols % 4 == 0 && aligned16(xp) && aligned16(yp) && aligned16(gp) && aligned16(bp);
    const float e = (float)eps;
    if (cols <= WARP_MAX_COLS) {
        const int64_t blocks = (rows + WARP_ROWS - 1) / WARP_ROWS;
        TORCH_CHECK(blocks <= 2147483647LL, "too many rows");
        if (vec)
            layernorm_warp_kernel<true><<<(unsigned)blocks, WARP_ROWS * 32, 0, stream>>>(xp, gp, bp, yp, rows, cols, e);
        else
            layernorm_warp_kernel<false><<<(unsigned)blocks, WARP_ROWS * 32, 0, stream>>>(xp, gp, bp, yp, rows, cols, e);
    } else {
        auto kernel = vec ? layernorm_block_kernel<true> : layernorm_block_kernel<false>;
        const int64_t blocks = persistent_blocks(kernel, x.get_device(), rows, cols);
        kernel<<<(unsigned)blocks, ROW_THREADS, 0, stream>>>(xp, gp, bp, yp, rows, cols, e);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
"""

CPP_SRC = "torch::Tensor layernorm_forward(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, double eps);"

layernorm_ext = load_inline(
    name="kforge_cuda_layernorm",
    cpp_sources=CPP_SRC,
    cuda_sources=CUDA_SRC,
    functions=["layernorm_forward"],
    extra_cuda_cflags=["-O3"],
)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # Same parameters, created in the same order, as Model.
        self.ln = nn.LayerNorm(normalized_shape=(dim,))
        with torch.no_grad():
            self.ln.weight.copy_(1.0 + 0.5 * torch.randn(dim))
            self.ln.bias.copy_(0.5 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layernorm_ext.layernorm_forward(x, self.ln.weight, self.ln.bias, self.ln.eps)
