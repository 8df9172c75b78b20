// The hash grid encoding's lookup on the CPU (rwf_render.encodings.HashGrid; the torch version there is the
// reference and defines the arithmetic). Forward: OpenMP over points. Backward into the table: OpenMP over levels,
// whose table rows are disjoint, so no two threads add to one row and the sums come out in the same order each run.
#include <torch/extension.h>

#include <math.h>
#include <stdint.h>

namespace rwf {

namespace {

constexpr uint32_t kPrimes[7] = {1u, 2654435761u, 805459861u, 3674653429u, 2097192037u, 1434869437u, 2165219737u};

struct Levels {
    const float* scales;
    const int64_t* res;
    const int64_t* sizes;
    const int64_t* offsets;
    const uint8_t* hashed;
};

// The table row and weight of each of the 2^D vertices around x at level l.
template <int D>
inline void vertices(const float* x, const Levels& lv, int l, int64_t* rows, float* weights) {
    const float scale = lv.scales[l];
    uint32_t cell[D];
    float frac[D];
    for (int i = 0; i < D; ++i) {
        const float pos = x[i] * scale + 0.5f;
        const float c = floorf(pos);
        cell[i] = (uint32_t)c;
        frac[i] = pos - c;
    }
    const uint32_t size = (uint32_t)lv.sizes[l], res = (uint32_t)lv.res[l];
    const bool hashed = lv.hashed[l] != 0;
    for (int c = 0; c < (1 << D); ++c) {
        uint32_t index = 0, stride = 1;
        float w = 1.0f;
        for (int i = 0; i < D; ++i) {
            const uint32_t bit = (c >> i) & 1u;
            const uint32_t v = cell[i] + bit;
            w *= bit ? frac[i] : 1.0f - frac[i];
            if (hashed) {
                index ^= v * kPrimes[i];
            } else {
                index += v * stride;
                stride *= res;
            }
        }
        // a hashed level's size is a power of two; a dense level's vertex index exceeds its size only on the
        // cube's far faces (the vertex past the last one), where it wraps as in tiny-cuda-nn
        const uint32_t row = hashed ? (index & (size - 1)) : (index < size ? index : index % size);
        rows[c] = lv.offsets[l] + (int64_t)row;
        weights[c] = w;
    }
}

template <int D>
void forward_impl(const float* x, const float* table, float* out, int64_t n, int levels, int F, const Levels& lv,
                  int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < n; ++p) {
        int64_t rows[1 << D];
        float weights[1 << D];
        for (int l = 0; l < levels; ++l) {
            vertices<D>(x + p * D, lv, l, rows, weights);
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int c = 0; c < (1 << D); ++c) {
                const float* row = table + rows[c] * F;
                for (int f = 0; f < F; ++f) acc[f] += weights[c] * row[f];
            }
            float* o = out + (p * levels + l) * F;
            for (int f = 0; f < F; ++f) o[f] = acc[f];
        }
    }
}

template <int D>
void backward_impl(const float* x, const float* grad, float* g_table, int64_t n, int levels, int F,
                   const Levels& lv, int threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int l = 0; l < levels; ++l) {
        int64_t rows[1 << D];
        float weights[1 << D];
        for (int64_t p = 0; p < n; ++p) {
            const float* g = grad + (p * levels + l) * F;
            vertices<D>(x + p * D, lv, l, rows, weights);
            for (int c = 0; c < (1 << D); ++c) {
                float* row = g_table + rows[c] * F;
                for (int f = 0; f < F; ++f) row[f] += weights[c] * g[f];
            }
        }
    }
}

Levels levels_of(const torch::Tensor& scales, const torch::Tensor& res, const torch::Tensor& sizes,
                 const torch::Tensor& offsets, const torch::Tensor& hashed) {
    const int64_t L = scales.numel();
    TORCH_CHECK(scales.scalar_type() == torch::kFloat32 && scales.is_contiguous(), "scales: float32");
    for (const auto& t : {res, sizes, offsets}) {
        TORCH_CHECK(t.scalar_type() == torch::kInt64 && t.is_contiguous() && t.numel() == L, "levels: int64 (L,)");
    }
    TORCH_CHECK(hashed.scalar_type() == torch::kUInt8 && hashed.is_contiguous() && hashed.numel() == L,
                "hashed: uint8 (L,)");
    return {scales.data_ptr<float>(), res.data_ptr<int64_t>(), sizes.data_ptr<int64_t>(),
            offsets.data_ptr<int64_t>(), hashed.data_ptr<uint8_t>()};
}

#define RWF_HASHGRID_DISPATCH(D, CALL) \
    switch (D) {                       \
        case 1: CALL(1); break;        \
        case 2: CALL(2); break;        \
        case 3: CALL(3); break;        \
        case 4: CALL(4); break;        \
        case 5: CALL(5); break;        \
        case 6: CALL(6); break;        \
        case 7: CALL(7); break;        \
        default: TORCH_CHECK(false, "hash grid: 1..7 input dimensions, got ", D); \
    }

}  // namespace

// x (N, D) float32 in [0, 1], table (P, F) -> features (N, L * F).
torch::Tensor hashgrid_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor res,
                               torch::Tensor sizes, torch::Tensor offsets, torch::Tensor hashed, int64_t threads) {
    TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu(), "hash grid kernel: CPU tensors only");
    TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "x: float32 (N, D)");
    TORCH_CHECK(table.dim() == 2 && table.scalar_type() == torch::kFloat32 && table.is_contiguous(),
                "table: float32 (P, F)");
    const int F = (int)table.size(1);
    TORCH_CHECK(F >= 1 && F <= 8, "hash grid: 1..8 features per level");
    const Levels lv = levels_of(scales, res, sizes, offsets, hashed);
    const int L = (int)scales.numel();
    const int64_t n = x.size(0);
    torch::Tensor out = torch::empty({n, (int64_t)L * F}, x.options());
    const int th = (int)std::max<int64_t>(threads, 1);
#define RWF_FWD(DIM) \
    forward_impl<DIM>(x.data_ptr<float>(), table.data_ptr<float>(), out.data_ptr<float>(), n, L, F, lv, th)
    RWF_HASHGRID_DISPATCH(x.size(1), RWF_FWD)
#undef RWF_FWD
    return out;
}

// The gradient of sum(grad * forward(x, table)) with respect to the table: (n_params, F).
torch::Tensor hashgrid_backward(torch::Tensor x, torch::Tensor grad, int64_t n_params, int64_t F,
                                torch::Tensor scales, torch::Tensor res, torch::Tensor sizes, torch::Tensor offsets,
                                torch::Tensor hashed, int64_t threads) {
    TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "x: float32 (N, D)");
    const Levels lv = levels_of(scales, res, sizes, offsets, hashed);
    const int L = (int)scales.numel();
    const int64_t n = x.size(0);
    TORCH_CHECK(grad.scalar_type() == torch::kFloat32 && grad.is_contiguous() && grad.dim() == 2 &&
                    grad.size(0) == n && grad.size(1) == L * F,
                "grad: float32 (N, L * F)");
    torch::Tensor g_table = torch::zeros({n_params, F}, x.options());
    const int th = (int)std::max<int64_t>(threads, 1);
#define RWF_BWD(DIM)                                                                                        \
    backward_impl<DIM>(x.data_ptr<float>(), grad.data_ptr<float>(), g_table.data_ptr<float>(), n, L, (int)F, \
                       lv, th)
    RWF_HASHGRID_DISPATCH(x.size(1), RWF_BWD)
#undef RWF_BWD
    return g_table;
}

}  // namespace rwf
