// The CUDA marcher: march.h's per-ray logic, one thread per ray, two passes (count, then fill at offsets).
// Compiles without torch headers (nvcc -c cuda.cu), so CI without a GPU still type-checks the kernel.
#include "march.h"

#include <cuda_runtime.h>

namespace rwf {

namespace {

__global__ void march_count_kernel(GridView G, MarchOptions opt, const float* rays_o, const float* rays_d,
                                   const float* nears, const float* fars, const float* jitter, int64_t n_rays,
                                   int64_t* counts) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rays) return;
    float u = jitter != nullptr ? jitter[i] : 0.0f;
    counts[i] = march_ray(G, opt, rays_o + 3 * i, rays_d + 3 * i, nears[i], fars[i], u, CountSink{});
}

// The fill pass repeats the count pass's march, so it knows each ray's count: a ray without samples is not marched
// again, and a ray stops at its last sample instead of stepping on through empty space to the box's exit (the
// same first counts[i] samples: the march is deterministic).
__global__ void march_fill_kernel(GridView G, MarchOptions opt, const float* rays_o, const float* rays_d,
                                  const float* nears, const float* fars, const float* jitter, int64_t n_rays,
                                  const int64_t* counts, const int64_t* offsets, int64_t* ray_indices,
                                  float* t_starts, float* t_ends) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rays || counts[i] == 0) return;
    float u = jitter != nullptr ? jitter[i] : 0.0f;
    opt.max_samples = counts[i];
    march_ray(G, opt, rays_o + 3 * i, rays_d + 3 * i, nears[i], fars[i], u,
              ArraySink{i, offsets[i], ray_indices, t_starts, t_ends});
}

inline unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

}  // namespace

// Both return the launch error, if any (cudaSuccess otherwise); `stream` is a cudaStream_t; `threads`: threads per
// block, one ray each (the bindings pass 256 unless told otherwise; a multiple of 32, at most 1024).
int march_count_cuda(const GridView& G, const MarchOptions& opt, const float* rays_o, const float* rays_d,
                     const float* nears, const float* fars, const float* jitter, int64_t n_rays, int64_t* counts,
                     int threads, void* stream) {
    if (n_rays == 0) return 0;
    march_count_kernel<<<blocks_for(n_rays, threads), threads, 0, (cudaStream_t)stream>>>(
        G, opt, rays_o, rays_d, nears, fars, jitter, n_rays, counts);
    return (int)cudaGetLastError();
}

int march_fill_cuda(const GridView& G, const MarchOptions& opt, const float* rays_o, const float* rays_d,
                    const float* nears, const float* fars, const float* jitter, int64_t n_rays,
                    const int64_t* counts, const int64_t* offsets, int64_t* ray_indices, float* t_starts,
                    float* t_ends, int threads, void* stream) {
    if (n_rays == 0) return 0;
    march_fill_kernel<<<blocks_for(n_rays, threads), threads, 0, (cudaStream_t)stream>>>(
        G, opt, rays_o, rays_d, nears, fars, jitter, n_rays, counts, offsets, ray_indices, t_starts, t_ends);
    return (int)cudaGetLastError();
}

const char* cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

}  // namespace rwf
