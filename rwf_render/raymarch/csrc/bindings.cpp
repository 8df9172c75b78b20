// Python bindings: tensors in, checks, then the plain-pointer CPU (cpu.cpp) or CUDA (cuda.cu) marcher.
#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "cpu.h"
#include "march.h"

#ifdef RWF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#define RWF_CHECK_INPUT(x, dtype)                                                                         \
    TORCH_CHECK((x).is_contiguous(), #x " must be contiguous");                                           \
    TORCH_CHECK((x).scalar_type() == (dtype), #x " has the wrong dtype: ", (x).scalar_type())

namespace rwf {

// hashgrid.cpp: the hash grid encoding's CPU lookup (rwf_render.encodings.HashGrid).
torch::Tensor hashgrid_forward(torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor,
                               torch::Tensor, torch::Tensor, int64_t);
torch::Tensor hashgrid_backward(torch::Tensor, torch::Tensor, int64_t, int64_t, torch::Tensor, torch::Tensor,
                                torch::Tensor, torch::Tensor, torch::Tensor, int64_t);

#ifdef RWF_WITH_CUDA
int march_count_cuda(const GridView&, const MarchOptions&, const float*, const float*, const float*, const float*,
                     const float*, int64_t, int64_t*, int, void*);
int march_fill_cuda(const GridView&, const MarchOptions&, const float*, const float*, const float*, const float*,
                    const float*, int64_t, const int64_t*, const int64_t*, int64_t*, float*, float*, int, void*);
const char* cuda_error_string(int);
#endif

// Returns (ray_indices int64 (S,), t_starts (S,), t_ends (S,), counts int64 (n_rays,)).
// n_threads: on the CPU, OpenMP threads; on a GPU, threads per block (a multiple of 32 up to 1024; else 256).
// mip: per level, for b = 1 .. mip_levels, (r >> b)^3 uint8 blocks (1 = not all empty), concatenated.
std::vector<torch::Tensor> march(torch::Tensor rays_o, torch::Tensor rays_d, torch::Tensor nears,
                                 torch::Tensor fars, torch::Tensor jitter, torch::Tensor occ, torch::Tensor mip,
                                 int64_t mip_levels, std::vector<double> lo, std::vector<double> scale, int64_t levels,
                                 double step, double cone, double max_step, int64_t max_samples, bool skip_empty,
                                 int64_t n_threads) {
    RWF_CHECK_INPUT(rays_o, torch::kFloat32);
    RWF_CHECK_INPUT(rays_d, torch::kFloat32);
    RWF_CHECK_INPUT(nears, torch::kFloat32);
    RWF_CHECK_INPUT(fars, torch::kFloat32);
    RWF_CHECK_INPUT(occ, torch::kUInt8);
    TORCH_CHECK(occ.dim() == 4, "occ must be (levels, rx, ry, rz)");
    TORCH_CHECK(lo.size() == 3 && scale.size() == 3, "lo and scale must have 3 entries");
    const int64_t n_rays = rays_o.size(0);
    TORCH_CHECK(rays_o.dim() == 2 && rays_o.size(1) == 3 && rays_d.sizes() == rays_o.sizes(), "rays must be (N, 3)");
    TORCH_CHECK(nears.numel() == n_rays && fars.numel() == n_rays, "nears and fars must be (N,)");
    const bool has_jitter = jitter.numel() > 0;
    if (has_jitter) {
        RWF_CHECK_INPUT(jitter, torch::kFloat32);
        TORCH_CHECK(jitter.numel() == n_rays, "jitter must be (N,)");
    }
    const auto device = rays_o.device();
    RWF_CHECK_INPUT(mip, torch::kUInt8);
    for (const auto& t : {rays_d, nears, fars, occ, mip}) {
        TORCH_CHECK(t.device() == device, "inputs on different devices");
    }
    TORCH_CHECK(!has_jitter || jitter.device() == device, "jitter is on ", jitter.device(), ", the rays on ", device);
    TORCH_CHECK(occ.size(0) == levels && levels >= 1 && levels <= kMaxLevels, "bad number of levels");

    GridView G;
    G.occ = occ.data_ptr<uint8_t>();
    G.levels = (int)levels;
    for (int a = 0; a < 3; ++a) {
        G.res[a] = (int)occ.size(a + 1);
        G.lo[a] = (float)lo[a];
        G.scale[a] = (float)scale[a];
    }
    TORCH_CHECK(mip_levels >= 0 && mip_levels <= kMaxMip, "bad number of mip levels");
    G.mip = mip.data_ptr<uint8_t>();
    G.mip_levels = (int)mip_levels;
    G.mip_offset[0] = G.mip_offset[1] = 0;
    for (int b = 1; b <= mip_levels; ++b) {
        TORCH_CHECK(G.res[0] % (1 << b) == 0 && G.res[1] % (1 << b) == 0 && G.res[2] % (1 << b) == 0,
                    "resolution not divisible by 2^", b);
        int64_t size = (int64_t)(G.res[0] >> b) * (G.res[1] >> b) * (G.res[2] >> b);
        if (b < kMaxMip) G.mip_offset[b + 1] = G.mip_offset[b] + size;
        G.mip_stride = G.mip_offset[b] + size;
    }
    if (mip_levels == 0) G.mip_stride = 0;
    TORCH_CHECK(mip.numel() == G.mip_stride * levels, "mip has ", mip.numel(), " entries, expected ",
                G.mip_stride * levels);
    MarchOptions opt;
    opt.step = (float)step;
    opt.cone = (float)cone;
    opt.max_step = std::isinf(max_step) ? INFINITY : (float)max_step;
    opt.max_samples = max_samples;
    opt.skip_empty = skip_empty;

    const float* o = rays_o.data_ptr<float>();
    const float* d = rays_d.data_ptr<float>();
    const float* n = nears.data_ptr<float>();
    const float* f = fars.data_ptr<float>();
    const float* u = has_jitter ? jitter.data_ptr<float>() : nullptr;
    auto long_opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
    auto float_opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
    torch::Tensor counts = torch::empty({n_rays}, long_opts);

    if (device.is_cpu()) {
        int threads = (int)std::max<int64_t>(1, n_threads);
        std::vector<CpuChunk> chunks = march_cpu(G, opt, o, d, n, f, u, n_rays, counts.data_ptr<int64_t>(), threads);
        int64_t total = 0;
        for (const auto& chunk : chunks) total += (int64_t)chunk.t_starts.size();
        torch::Tensor ray_indices = torch::empty({total}, long_opts);
        torch::Tensor t_starts = torch::empty({total}, float_opts), t_ends = torch::empty({total}, float_opts);
        gather_cpu(chunks, ray_indices.data_ptr<int64_t>(), t_starts.data_ptr<float>(), t_ends.data_ptr<float>(),
                   threads);
        return {ray_indices, t_starts, t_ends, counts};
    }
#ifdef RWF_WITH_CUDA
    TORCH_CHECK(device.is_cuda(), "unsupported device ", device);
    const c10::cuda::CUDAGuard guard(device);
    void* stream = (void*)c10::cuda::getCurrentCUDAStream().stream();
    const int block = n_threads >= 32 && n_threads <= 1024 && n_threads % 32 == 0 ? (int)n_threads : 256;
    int err = march_count_cuda(G, opt, o, d, n, f, u, n_rays, counts.data_ptr<int64_t>(), block, stream);
    TORCH_CHECK(err == 0, "ray marcher count kernel: ", cuda_error_string(err));
    torch::Tensor offsets = counts.cumsum(0) - counts;
    int64_t total = n_rays > 0 ? counts.sum().item<int64_t>() : 0;
    torch::Tensor ray_indices = torch::empty({total}, long_opts);
    torch::Tensor t_starts = torch::empty({total}, float_opts), t_ends = torch::empty({total}, float_opts);
    err = march_fill_cuda(G, opt, o, d, n, f, u, n_rays, counts.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(),
                          ray_indices.data_ptr<int64_t>(), t_starts.data_ptr<float>(), t_ends.data_ptr<float>(), block,
                          stream);
    TORCH_CHECK(err == 0, "ray marcher fill kernel: ", cuda_error_string(err));
    return {ray_indices, t_starts, t_ends, counts};
#else
    TORCH_CHECK(false, "this build of the ray marcher has no CUDA support; got a tensor on ", device);
#endif
}

}  // namespace rwf

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "rwf_render occupancy-grid ray marcher (see march.h for the sample set)";
    m.def("march", &rwf::march, "March rays through an occupancy grid: (ray_indices, t_starts, t_ends, counts)");
    m.def("hashgrid_forward", &rwf::hashgrid_forward, "Hash grid encoding of CPU points: (N, L * F)");
    m.def("hashgrid_backward", &rwf::hashgrid_backward, "Hash grid encoding: the table's gradient");
#ifdef RWF_WITH_CUDA
    m.attr("with_cuda") = true;
#else
    m.attr("with_cuda") = false;
#endif
}
