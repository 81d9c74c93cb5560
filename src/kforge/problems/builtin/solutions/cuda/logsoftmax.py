import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cstdint>

// LogSoftmax over the last dim in two passes over each row: an online pass keeps a running maximum m
// and the sum s of exp(x - m) (rescaled whenever m grows), then a pass writes (x - m) - log(s).
// Rows of up to WARP_MAX_COLS values get one warp each; longer rows get a block of ROW_THREADS
// threads, and only as many blocks run as keep the rows in flight inside L2, so the second pass
// reads from L2, not DRAM.

constexpr int WARP_ROWS = 8;  // rows (warps) per block in the warp kernel
constexpr int WARP_MAX_COLS = 1024;
constexpr int ROW_THREADS = 1024;

__device__ __forceinline__ void ms_push(float& m, float& s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.f;  // m == -inf at first: 0 * exp(-inf) = 0
        m = x;
    } else {
        s += expf(x - m);
    }
}

__device__ __forceinline__ void ms_push4(float& m, float& s, float4 v) {
    const float mx = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
    if (mx > m) {
        s *= expf(m - mx);
        m = mx;
    }
    s += expf(v.x - m) + expf(v.y - m) + expf(v.z - m) + expf(v.w - m);
}

// (m, s) of two disjoint parts of a row. An empty part has m == -inf and s == 0.
__device__ __forceinline__ void ms_merge(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;  // both empty: exp(-inf - -inf) would be NaN
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

__device__ __forceinline__ void warp_ms(float& m, float& s) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
        ms_merge(m, s, m2, s2);
    }
}

__device__ __forceinline__ float4 logsoftmax4(float4 v, float m, float log_s) {
    return make_float4((v.x - m) - log_s, (v.y - m) - log_s, (v.z - m) - log_s, (v.w - m) - log_s);
}

template <bool VEC>
__global__ __launch_bounds__(WARP_ROWS * 32) void logsoftmax_warp_kernel(const float* __restrict__ x,
                                                                       float* __restrict__ y, int64_t rows,
                                                                       int cols) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARP_ROWS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    float m = -INFINITY, s = 0.f;
    if (VEC) {
        const float4* xv = reinterpret_cast<const float4*>(xr);
        for (int i = lane; i < (cols >> 2); i += 32) ms_push4(m, s, xv[i]);
    } else {
        for (int i = lane; i < cols; i += 32) ms_push(m, s, xr[i]);
    }
    warp_ms(m, s);
    const float log_s = logf(s);
    if (VEC) {
        const float4* xv = reinterpret_cast<const float4*>(xr);
        float4* yv = reinterpret_cast<float4*>(yr);
        for (int i = lane; i < (cols >> 2); i += 32) yv[i] = logsoftmax4(xv[i], m, log_s);
    } else {
        for (int i = lane; i < cols; i += 32) yr[i] = (xr[i] - m) - log_s;
    }
}

template <bool VEC>
__global__ __launch_bounds__(ROW_THREADS) void logsoftmax_block_kernel(const float* __restrict__ x,
                                                                     float* __restrict__ y, int64_t rows,
                                                                     int cols) {
    constexpr int T = ROW_THREADS;
    constexpr int WARPS = T / 32;
    __shared__ float part_m[WARPS], part_s[WARPS];
    __shared__ float row_m, row_s;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * cols;
        float* yr = y + row * cols;
        float m = -INFINITY, s = 0.f;
        if (VEC) {
            const float4* xv = reinterpret_cast<const float4*>(xr);
            const int nv = cols >> 2;
            int i = tid;
            for (; i + 3 * T < nv; i += 4 * T) {  // four 16-byte loads in flight per thread
                const float4 a = xv[i], b = xv[i + T], c = xv[i + 2 * T], d = xv[i + 3 * T];
                ms_push4(m, s, a);
                ms_push4(m, s, b);
                ms_push4(m, s, c);
                ms_push4(m, s, d);
            }
            for (; i < nv; i += T) ms_push4(m, s, xv[i]);
        } else {
            int i = tid;
            for (; i + 3 * T < cols; i += 4 * T) {
                const float a = xr[i], b = xr[i + T], c = xr[i + 2 * T], d = xr[i + 3 * T];
                ms_push(m, s, a);
                ms_push(m, s, b);
                ms_push(m, s, c);
                ms_push(m, s, d);
            }
            for (; i < cols; i += T) ms_push(m, s, xr[i]);
        }
        warp_ms(m, s);
        if (lane == 0) {
            part_m[warp] = m;
            part_s[warp] = s;
        }
        __syncthreads();
        if (warp == 0) {
            m = lane < WARPS ? part_m[lane] : -INFINITY;
            s = lane < WARPS ? part_s[lane] : 0.f;
            warp_ms(m, s);
            if (lane == 0) {
                row_m = m;
                row_s = s;
            }
        }
        __syncthreads();
        // (row_m/row_s are rewritten only after the next row's first barrier, which every thread
        // reaches after reading them here.)
        m = row_m;
        const float log_s = logf(row_s);
        if (VEC) {
            const float4* xv = reinterpret_cast<const float4*>(xr);
            float4* yv = reinterpret_cast<float4*>(yr);
            const int nv = cols >> 2;
            int i = tid;
            for (; i + 3 * T < nv; i += 4 * T) {
                const float4 a = xv[i], b = xv[i + T], c = xv[i + 2 * T], d = xv[i + 3 * T];
                __stcs(yv + i, logsoftmax4(a, m, log_s));
                __stcs(yv + i + T, logsoftmax4(b, m, log_s));
                __stcs(yv + i + 2 * T, logsoftmax4(c, m, log_s));
                __stcs(yv + i + 3 * T, logsoftmax4(d, m, log_s));
            }
            for (; i < nv; i += T) __stcs(yv + i, logsoftmax4(xv[i], m, log_s));
        } else {
            for (int i = tid; i < cols; i += T) __stcs(yr + i, (xr[i] - m) - log_s);
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

torch::Tensor logsoftmax_forward(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 2, "x must be a 2-D CUDA tensor");
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "x must be float32");
    TORCH_CHECK(x.size(1) <= INT32_MAX, "rows too long");
    const c10::cuda::CUDAGuard guard(x.device());
    x = x.contiguous();
    auto y = torch::empty_like(x);
    const int64_t rows = x.size(0);
    const int cols = (int)x.size(1);
    if (rows == 0 || cols == 0) return y;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const bool vec = cols % 4 == 0 &&
                     ((reinterpret_cast<uintptr_t>(xp) | reinterpret_cast<uintptr_t>(yp)) & 15) == 0;
    if (cols <= WARP_MAX_COLS) {
        const int64_t blocks = (rows + WARP_ROWS - 1) / WARP_ROWS;
        TORCH_CHECK(blocks <= 2147483647LL, "too many rows");
        if (vec)
            logsoftmax_warp_kernel<true><<<(unsigned)blocks, WARP_ROWS * 32, 0, stream>>>(xp, yp, rows, cols);
        else
            logsoftmax_warp_kernel<false><<<(unsigned)blocks, WARP_ROWS * 32, 0, stream>>>(xp, yp, rows, cols);
    } else {
        auto kernel = vec ? logsoftmax_block_kernel<true> : logsoftmax_block_kernel<false>;
        const int64_t blocks = persistent_blocks(kernel, x.get_device(), rows, cols);
        kernel<<<(unsigned)blocks, ROW_THREADS, 0, stream>>>(xp, yp, rows, cols);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
"""

CPP_SRC = "torch::Tensor logsoftmax_forward(torch::Tensor x);"

logsoftmax_ext = load_inline(
    name="kforge_cuda_logsoftmax",
    cpp_sources=CPP_SRC,
    cuda_sources=CUDA_SRC,
    functions=["logsoftmax_forward"],
    extra_cuda_cflags=["-O3"],
)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logsoftmax_ext.logsoftmax_forward(x)
