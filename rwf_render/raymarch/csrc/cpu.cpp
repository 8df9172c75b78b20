// The CPU marcher: march.h's per-ray logic, OpenMP over chunks of rays. Unlike the CUDA version it marches each
// ray once (samples collect in per-chunk buffers, then one copy) instead of counting first and filling after.
#include "cpu.h"

#include <omp.h>
#include <string.h>

namespace rwf {

namespace {

constexpr int64_t kRaysPerChunk = 512;

struct VectorSink {  // host only
    CpuChunk* chunk;
    int64_t ray;
    void operator()(int64_t, float ts, float te) const {
        chunk->ray_indices.push_back(ray);
        chunk->t_starts.push_back(ts);
        chunk->t_ends.push_back(te);
    }
};

}  // namespace

std::vector<CpuChunk> march_cpu(const GridView& G, const MarchOptions& opt, const float* rays_o, const float* rays_d,
                                const float* nears, const float* fars, const float* jitter, int64_t n_rays,
                                int64_t* counts, int n_threads) {
    const int64_t n_chunks = (n_rays + kRaysPerChunk - 1) / kRaysPerChunk;
    std::vector<CpuChunk> chunks(n_chunks);
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (int64_t c = 0; c < n_chunks; ++c) {
        CpuChunk& chunk = chunks[c];
        chunk.first_ray = c * kRaysPerChunk;
        chunk.end_ray = chunk.first_ray + kRaysPerChunk < n_rays ? chunk.first_ray + kRaysPerChunk : n_rays;
        for (int64_t i = chunk.first_ray; i < chunk.end_ray; ++i) {
            float u = jitter != nullptr ? jitter[i] : 0.0f;
            counts[i] = march_ray(G, opt, rays_o + 3 * i, rays_d + 3 * i, nears[i], fars[i], u,
                                  VectorSink{&chunk, i});
        }
    }
    return chunks;
}

void gather_cpu(const std::vector<CpuChunk>& chunks, int64_t* ray_indices, float* t_starts, float* t_ends,
                int n_threads) {
    std::vector<int64_t> offsets(chunks.size() + 1, 0);
    for (size_t c = 0; c < chunks.size(); ++c) offsets[c + 1] = offsets[c] + (int64_t)chunks[c].t_starts.size();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t c = 0; c < (int64_t)chunks.size(); ++c) {
        const CpuChunk& chunk = chunks[c];
        const size_t n = chunk.t_starts.size();
        if (n == 0) continue;
        memcpy(ray_indices + offsets[c], chunk.ray_indices.data(), n * sizeof(int64_t));
        memcpy(t_starts + offsets[c], chunk.t_starts.data(), n * sizeof(float));
        memcpy(t_ends + offsets[c], chunk.t_ends.data(), n * sizeof(float));
    }
}

}  // namespace rwf
