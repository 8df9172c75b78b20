// Per-ray stepping through an occupancy grid: written once, compiled by g++ (cpu.cpp) and nvcc (cuda.cu).
//
// The sample set (also implemented, brute force, by the pure-torch twin in march.py; keep the two in step):
//   lattice   T(k), k = 0, 1, ...  constant step:  T(k) = near + k * dt
//             cone angle c > 0: T(k) = near + k * dt while T < dt / c (kA steps), then TA * (1 + c)^j (j = k - kA,
//             power by repeated squaring, powi below) up to dt_max / c (jB steps), then TB + (j - jB) * dt_max
//   interval  t_start(k) = T(k) + u * (T(k+1) - T(k)),  t_end(k) = t_start(k+1);  u in [0, 1) is the ray's jitter
//   position  x(k) = o + m * d with m = (t_start + t_end) * 0.5,  cell coordinates q = (x - lo) * scale, g = floor(q)
//   level     the finest cascade whose box holds g; its cell is (g - R/2) >> level + R/2
//   kept      iff that cell is occupied and t_end <= far, for the first max_samples such k (k < kMaxSteps)
// Every quantity is float32 and computed with the operations in the order written here (no FMA contraction:
// -ffp-contract=off / --fmad=false), so all backends produce the same bits.
//
// Empty space is skipped without looking at the lattice points inside it: every axis of g is monotone in k, so
// the lattice points in any axis-aligned box of cells form one contiguous run of k. From an empty cell the marcher
// takes the largest empty block of the mip pyramid around it (2^b cells a side, b = 0 .. mip_levels), estimates
// where the ray leaves that block, and finds the exact first lattice point outside it by testing the points on
// either side of the estimate. At level c >= 1 the cells inside level c - 1's box count as occupied in the
// pyramid, so an empty block holds only points of level c.
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define RWF_HD __host__ __device__ __forceinline__
#else
#define RWF_HD inline
#endif

namespace rwf {

constexpr int64_t kMaxSteps = int64_t(1) << 24;  // lattice indices k < kMaxSteps (float32 holds them exactly)
constexpr int kMaxLevels = 16;
constexpr int kMaxMip = 10;

struct GridView {
    const uint8_t* occ;  // (levels, res[0], res[1], res[2]), 1 = occupied
    int levels;
    int res[3];          // cells per axis of every level, each even (divisible by 4 when levels > 1)
    float lo[3];         // the level-0 box's lower corner
    float scale[3];      // res / (hi - lo): level-0 cells per unit length
    const uint8_t* mip;  // per level, for b = 1 .. mip_levels: (res >> b) blocks per axis, 1 = not all empty
    int mip_levels;      // 0: no pyramid (skip one cell at a time)
    int64_t mip_offset[kMaxMip + 1];  // start of block size b within one level's pyramid
    int64_t mip_stride;  // size of one level's pyramid
};

struct MarchOptions {
    float step;          // dt, the smallest step
    float cone;          // 0: constant step; else steps grow as t * cone
    float max_step;      // +inf: no upper clamp (cone only)
    int64_t max_samples; // cap per ray
    bool skip_empty;     // false: test every lattice point (for tests; same result)
};

struct Lattice {
    float near, dt, r, dt_max, TA, TB;
    int64_t kA, jB;
    bool cone;
};

// min/max as plain comparisons (libm's fminf/fmaxf are calls on x86-64; NaN never reaches them here)
RWF_HD float min_f(float a, float b) { return b < a ? b : a; }
RWF_HD bool finite_f(float x) { return fabsf(x) <= 3.402823466e38f; }  // false for NaN and +-inf
RWF_HD float max_f(float a, float b) { return b > a ? b : a; }

RWF_HD float powi(float r, int64_t j) {
    float result = 1.0f, base = r;
    while (j > 0) {
        if (j & 1) result = result * base;
        base = base * base;
        j >>= 1;
    }
    return result;
}

// clamp(ceil(x), 0, kMaxSteps), NaN -> 0; exact without libm's ceilf (a call on x86-64)
RWF_HD int64_t ceil_k(float x) {
    if (!(x > 0.0f)) return 0;
    if (x >= (float)kMaxSteps) return kMaxSteps;
    int64_t i = (int64_t)x;
    return (float)i < x ? i + 1 : i;
}

// floor(q) for |q| <= 1e9 (q is clamped first), exact: truncation, then one down for negative non-integers
RWF_HD int floor_i(float q) {
    int i = (int)q;
    return q < (float)i ? i - 1 : i;
}

RWF_HD Lattice make_lattice(float near, const MarchOptions& opt) {
    Lattice L;
    L.near = near;
    L.dt = opt.step;
    L.cone = opt.cone > 0.0f;
    L.r = 1.0f + opt.cone;
    L.dt_max = opt.max_step;
    L.kA = 2 * kMaxSteps;
    L.jB = 2 * kMaxSteps;
    L.TA = INFINITY;
    L.TB = INFINITY;
    if (!L.cone) return L;
    float tA = opt.step / opt.cone;
    L.kA = ceil_k((tA - near) / opt.step);
    L.TA = near + (float)L.kA * opt.step;
    if (isinf(opt.max_step)) return L;
    float tB = opt.max_step / opt.cone;
    int64_t j = 0;
    if (tB > L.TA) {  // estimate with logs, then make exact with powi (the definition)
        j = ceil_k(logf(tB / L.TA) / logf(L.r));
        while (j > 0 && L.TA * powi(L.r, j - 1) >= tB) j--;
        while (j < kMaxSteps && L.TA * powi(L.r, j) < tB) j++;
    }
    L.jB = j;
    L.TB = L.TA * powi(L.r, j);
    return L;
}

RWF_HD float lattice_t(const Lattice& L, int64_t k) {
    if (!L.cone || k <= L.kA) return L.near + (float)k * L.dt;
    int64_t j = k - L.kA;
    if (j <= L.jB) return L.TA * powi(L.r, j);
    return L.TB + (float)(j - L.jB) * L.dt_max;
}

RWF_HD float sample_t(const Lattice& L, int64_t k, float u) {
    float a = lattice_t(L, k);
    if (u == 0.0f) return a;
    float b = lattice_t(L, k + 1);
    return a + u * (b - a);
}

// An estimate of the first k whose midpoint is >= t (exactness comes from the callers' fix-up loops).
RWF_HD int64_t estimate_k(const Lattice& L, float t, float u) {
    float s;
    if (!L.cone || t <= L.TA) s = (t - L.near) / L.dt;
    else if (t <= L.TB) s = (float)L.kA + logf(t / L.TA) / logf(L.r);
    else s = (float)(L.kA + L.jB) + (t - L.TB) / L.dt_max;
    return ceil_k(s - u - 0.5f);
}

struct RayState {
    float o[3], d[3];
    float q0[3], dq[3];  // the ray in level-0 cell coordinates, for estimates only
    float u, near, far;
    Lattice L;
};

RWF_HD void midpoint_cell(const GridView& G, const RayState& R, float m, int g[3]) {
    for (int a = 0; a < 3; ++a) {
        float x = R.o[a] + m * R.d[a];
        float q = (x - G.lo[a]) * G.scale[a];
        if (!(q >= -1.0e9f)) q = -1.0e9f;  // also NaN
        if (q > 1.0e9f) q = 1.0e9f;
        g[a] = floor_i(q);
    }
}

RWF_HD void point_of(const GridView& G, const RayState& R, int64_t k, int g[3], float* ts, float* te) {
    float t0 = sample_t(R.L, k, R.u);
    float t1 = sample_t(R.L, k + 1, R.u);
    float m = (t0 + t1) * 0.5f;
    midpoint_cell(G, R, m, g);
    *ts = t0;
    *te = t1;
}

// The finest level whose box holds g, and the cell there; -1 outside every level.
RWF_HD int level_of(const GridView& G, const int g[3], int cell[3]) {
    for (int c = 0; c < G.levels; ++c) {
        bool inside = true;
        for (int a = 0; a < 3; ++a) {
            int half = G.res[a] / 2;
            int hc = (g[a] - half) >> c;  // arithmetic shift: floor division by 2^c
            cell[a] = hc + half;
            inside = inside && hc >= -half && hc < half;
        }
        if (inside) return c;
    }
    return -1;
}

RWF_HD bool inside_outer(const GridView& G, const int g[3]) {
    int c = G.levels - 1;
    for (int a = 0; a < 3; ++a) {
        int half = G.res[a] / 2;
        int hc = (g[a] - half) >> c;
        if (hc < -half || hc >= half) return false;
    }
    return true;
}

// log2 of the largest empty block (of the mip pyramid) around the empty cell `cell` at level c.
RWF_HD int empty_block(const GridView& G, int c, const int cell[3]) {
    int b = 0;
    while (b < G.mip_levels) {
        int nb = b + 1;
        int64_t i = ((int64_t)(cell[0] >> nb) * (G.res[1] >> nb) + (cell[1] >> nb)) * (G.res[2] >> nb) +
                    (cell[2] >> nb);
        if (G.mip[c * G.mip_stride + G.mip_offset[nb] + i]) break;
        b = nb;
    }
    return b;
}

// g-range [glo, ghi) of the 2^b block holding `cell` at level c, in level-0 cell units.
RWF_HD void region_of(const GridView& G, int c, const int cell[3], int b, int glo[3], int ghi[3]) {
    for (int a = 0; a < 3; ++a) {
        int half = G.res[a] / 2;
        glo[a] = ((cell[a] >> b << b) - half) * (1 << c) + half;
        ghi[a] = glo[a] + (1 << (b + c));
    }
}

RWF_HD bool in_box(const int g[3], const int glo[3], const int ghi[3]) {
    return g[0] >= glo[0] && g[0] < ghi[0] && g[1] >= glo[1] && g[1] < ghi[1] && g[2] >= glo[2] && g[2] < ghi[2];
}

RWF_HD bool k_in_box(const GridView& G, const RayState& R, int64_t k, const int glo[3], const int ghi[3]) {
    int g[3];
    float ts, te;
    point_of(G, R, k, g, &ts, &te);
    return in_box(g, glo, ghi);
}

// First k > k_cur whose midpoint leaves the box [glo, ghi) that holds k_cur's midpoint; g, ts, te are left
// holding that point (when k < kMaxSteps).
RWF_HD int64_t leave_box(const GridView& G, const RayState& R, int64_t k_cur, const int glo[3], const int ghi[3],
                         int g[3], float* ts, float* te) {
    float t_exit = INFINITY;
    for (int a = 0; a < 3; ++a) {
        if (R.dq[a] > 0.0f) t_exit = min_f(t_exit, ((float)ghi[a] - R.q0[a]) / R.dq[a]);
        else if (R.dq[a] < 0.0f) t_exit = min_f(t_exit, ((float)glo[a] - R.q0[a]) / R.dq[a]);
    }
    int64_t k = estimate_k(R.L, t_exit, R.u);
    if (k <= k_cur) k = k_cur + 1;
    while (k - 1 > k_cur && !k_in_box(G, R, k - 1, glo, ghi)) --k;
    for (; k < kMaxSteps; ++k) {
        point_of(G, R, k, g, ts, te);
        if (!in_box(g, glo, ghi)) break;
    }
    return k;
}

// Parameter interval [t0, t1] of the ray inside the outer box grown by a margin, clipped to [near, far].
RWF_HD bool outer_interval(const GridView& G, const RayState& R, float* t0, float* t1) {
    float a0 = R.near, a1 = R.far;
    int c = G.levels - 1;
    for (int a = 0; a < 3; ++a) {
        float half = (float)(G.res[a] / 2);
        float ext = half * (float)(1 << c);
        float margin = 1.0e-3f + 1.0e-5f * (fabsf(R.q0[a]) + ext + fabsf(G.lo[a] * G.scale[a]));
        float qlo = half - ext - margin, qhi = half + ext + margin;
        if (R.dq[a] == 0.0f) {
            if (R.q0[a] < qlo || R.q0[a] > qhi) return false;
            continue;
        }
        float ta = (qlo - R.q0[a]) / R.dq[a], tb = (qhi - R.q0[a]) / R.dq[a];
        a0 = max_f(a0, min_f(ta, tb));
        a1 = min_f(a1, max_f(ta, tb));
    }
    *t0 = a0;
    *t1 = a1;
    return a0 <= a1;
}

RWF_HD RayState make_ray(const GridView& G, const MarchOptions& opt, const float* o, const float* d, float near,
                         float far, float u) {
    RayState R;
    for (int a = 0; a < 3; ++a) {
        R.o[a] = o[a];
        R.d[a] = d[a];
        R.q0[a] = (o[a] - G.lo[a]) * G.scale[a];
        R.dq[a] = d[a] * G.scale[a];
    }
    R.u = u;
    R.near = near;
    R.far = far;
    R.L = make_lattice(near, opt);
    return R;
}

// Where samples go: sink(n, t_start, t_end) for the n-th sample of the ray.
struct CountSink {
    RWF_HD void operator()(int64_t, float, float) const {}
};

struct ArraySink {  // writes sample n of ray `ray` at offset + n
    int64_t ray, offset;
    int64_t* ray_indices;
    float *t_starts, *t_ends;
    RWF_HD void operator()(int64_t n, float ts, float te) const {
        ray_indices[offset + n] = ray;
        t_starts[offset + n] = ts;
        t_ends[offset + n] = te;
    }
};

// March one ray; returns its number of samples, each handed to `sink`.
template <class Sink>
RWF_HD int64_t march_ray(const GridView& G, const MarchOptions& opt, const float* o, const float* d, float near,
                         float far, float u, const Sink& sink) {
    if (d[0] == 0.0f && d[1] == 0.0f && d[2] == 0.0f) return 0;
    // A ray with a NaN or infinite origin or direction, a non-finite near or a NaN far has no samples.
    for (int a = 0; a < 3; ++a)
        if (!finite_f(o[a]) || !finite_f(d[a])) return 0;
    if (!finite_f(near) || far != far) return 0;
    RayState R = make_ray(G, opt, o, d, near, far, u);
    float t0, t1;
    if (!outer_interval(G, R, &t0, &t1)) return 0;

    // The first lattice point inside the outer box: exact, from an estimate (the in-box points are one run of k).
    int64_t k = estimate_k(R.L, t0, u) - 2;
    if (k < 0) k = 0;
    int64_t k_guard = estimate_k(R.L, t1, u) + 2;
    int g[3], cell[3];
    float ts, te;
    while (k > 0) {
        point_of(G, R, k - 1, g, &ts, &te);
        if (!inside_outer(G, g)) break;
        --k;
    }
    while (true) {
        if (k > k_guard || k >= kMaxSteps) return 0;
        point_of(G, R, k, g, &ts, &te);
        if (inside_outer(G, g)) break;
        ++k;
    }

    int64_t n = 0;
    bool have_point = true;  // g, ts, te hold point k
    while (k < kMaxSteps && n < opt.max_samples) {
        if (!have_point) point_of(G, R, k, g, &ts, &te);
        have_point = false;
        if (!(te <= far)) break;
        int c = level_of(G, g, cell);
        if (c < 0) break;  // left the outer box: no lattice point after this one is inside
        int64_t idx = (((int64_t)c * G.res[0] + cell[0]) * G.res[1] + cell[1]) * G.res[2] + cell[2];
        if (G.occ[idx]) {
            sink(n, ts, te);
            ++n;
            ++k;
            // the next point starts where this one ends: sample_t(k) is the te just computed, bit for bit
            float t1 = sample_t(R.L, k + 1, R.u);
            midpoint_cell(G, R, (te + t1) * 0.5f, g);
            ts = te;
            te = t1;
            have_point = true;
        } else if (opt.skip_empty) {
            int glo[3], ghi[3];
            region_of(G, c, cell, empty_block(G, c, cell), glo, ghi);
            k = leave_box(G, R, k, glo, ghi, g, &ts, &te);
            have_point = true;
        } else {
            ++k;
        }
    }
    return n;
}

}  // namespace rwf
