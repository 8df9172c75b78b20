// The CPU marcher's interface (cpu.cpp), for bindings.cpp. No torch types.
#pragma once

#include <stdint.h>

#include <vector>

#include "march.h"

namespace rwf {

struct CpuChunk {  // the samples of rays [first_ray, end_ray), in order
    int64_t first_ray = 0, end_ray = 0;
    std::vector<int64_t> ray_indices;
    std::vector<float> t_starts, t_ends;
};

// March every ray once (one pass: each chunk of rays collects its samples); counts (n_rays,) is filled.
std::vector<CpuChunk> march_cpu(const GridView& G, const MarchOptions& opt, const float* rays_o, const float* rays_d,
                                const float* nears, const float* fars, const float* jitter, int64_t n_rays,
                                int64_t* counts, int n_threads);

// Concatenate the chunks into arrays of their total length.
void gather_cpu(const std::vector<CpuChunk>& chunks, int64_t* ray_indices, float* t_starts, float* t_ends,
                int n_threads);

}  // namespace rwf
