"""Marching rays through an occupancy grid: backend dispatch and the pure-torch twin of ``csrc/march.h``.

The sample set (identical for every backend; ``csrc/march.h`` holds the compiled version):

    lattice   T(k), k = 0, 1, ...   constant step:  T(k) = near + k * dt
              cone angle c > 0: T(k) = near + k * dt while T < dt / c, then geometric, T(k+1) = T(k) * (1 + c)
              (powers by repeated squaring), and once the step reaches max_step, T(k+1) = T(k) + max_step
    interval  t_start(k) = T(k) + u * (T(k+1) - T(k)),  t_end(k) = t_start(k+1),  u in [0, 1) the ray's jitter
    kept      iff the interval's midpoint o + (t_start + t_end) / 2 * d lies in an occupied cell of the finest
              cascade holding it, and t_end <= far; the first ``max_samples`` such k of each ray. A ray whose
              origin or direction holds a NaN or an infinity, or whose near is not finite or far is NaN, has none.

All arithmetic is float32 in one fixed order, so the compiled kernels and this twin agree bit for bit. The twin
tests every lattice point between the ray's entry into and exit from the box around the occupied cells (brute
force, vectorized over rays and steps); the kernels skip empty cells and find the same points.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Callable, NamedTuple

import torch

from ..errors import UserError
from . import _backend

K_MAX = 1 << 24  # lattice indices k < K_MAX, as in march.h
BACKENDS = ("auto", "cuda", "cpu", "torch")
_CHUNK = 1 << 22  # lattice points per chunk in the twin


class RaySamples(NamedTuple):
    """Packed samples, sorted by ray and, within a ray, by t. Unpacks as ``ray_indices, t_starts, t_ends``."""

    ray_indices: torch.Tensor  # (S,) int64
    t_starts: torch.Tensor  # (S,) float32
    t_ends: torch.Tensor  # (S,) float32


class GridSpec(NamedTuple):
    """What the marcher needs from a grid: occupancy (levels, rx, ry, rz) uint8, level-0 corner, cells per unit,
    and optionally the compiled marchers' :func:`mip_pyramid` of ``occ`` (computed per call when None)."""

    occ: torch.Tensor
    lo: torch.Tensor  # (3,) float32
    scale: torch.Tensor  # (3,) float32
    mip: tuple[torch.Tensor, int] | None = None
    host: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (lo, scale) as floats; None: read back


# ----------------------------------------------------------------------------------------------------------------
# The lattice (march.h: make_lattice, lattice_t, sample_t, estimate_k), vectorized over rays or samples
# ----------------------------------------------------------------------------------------------------------------

def _powi(r: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """r ** j by repeated squaring, in march.h's order of multiplications (so the float32 bits match)."""
    result = torch.ones_like(r).expand(j.shape).clone()
    base = r.expand(j.shape).clone()
    j = j.clone()
    while bool((j > 0).any()):
        odd = (j & 1) == 1
        result = torch.where(odd, result * base, result)
        base = base * base
        j = j >> 1
    return result


def _clamp_k(kf: torch.Tensor) -> torch.Tensor:
    kf = torch.nan_to_num(kf, nan=0.0, posinf=float(K_MAX), neginf=0.0)
    return kf.clamp(0.0, float(K_MAX)).long()


class _Lattice(NamedTuple):
    near: torch.Tensor
    kA: torch.Tensor
    TA: torch.Tensor
    jB: torch.Tensor
    TB: torch.Tensor


def _f32(x: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32, device=like.device)


def _never_reached(max_step: float, cone: float) -> bool:
    """Whether the distance where a cone's step would reach ``max_step`` (max_step / cone in float32, the kernels'
    arithmetic) overflows float32: the lattice never gets there, so the samples are those of no limit, while the
    kernels would search 2^24 lattice points one by one for the switch (a second a ray; the twin hung)."""
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return not bool(torch.isfinite(f32(max_step) / f32(cone)))


def _make_lattice(near: torch.Tensor, step: float, cone: float, max_step: float) -> _Lattice:
    big = torch.full_like(near, 2 * K_MAX, dtype=torch.long)
    inf = torch.full_like(near, float("inf"))
    if cone <= 0:
        return _Lattice(near, big, inf, big, inf)
    dt, c, r = _f32(step, near), _f32(cone, near), _f32(1.0, near) + _f32(cone, near)
    tA = dt / c
    kA = _clamp_k(torch.ceil((tA - near) / dt))
    TA = near + kA.float() * dt
    if max_step == float("inf"):
        return _Lattice(near, kA, TA, big, inf)
    tB = _f32(max_step, near) / c
    has = tB > TA
    j = torch.where(has, _clamp_k(torch.ceil(torch.log(tB / TA) / torch.log(r))), torch.zeros_like(kA))
    while True:  # make the log estimate exact, as march.h does
        down = has & (j > 0) & (TA * _powi(r, (j - 1).clamp(min=0)) >= tB)
        up = has & ~down & (j < K_MAX) & (TA * _powi(r, j) < tB)
        if not bool((down | up).any()):
            break
        j = j - down.long() + up.long()
    return _Lattice(near, kA, TA, j, TA * _powi(r, j))


def _lattice_t(L: _Lattice, k: torch.Tensor, step: float, cone: float, max_step: float) -> torch.Tensor:
    """T(k); the lattice fields are per sample (already gathered)."""
    dt = _f32(step, L.near)
    lin = L.near + k.float() * dt
    if cone <= 0:
        return lin
    j = k - L.kA
    geo = L.TA * _powi(_f32(1.0, L.near) + _f32(cone, L.near), j.clamp(0, None).minimum(L.jB))
    out = torch.where(j <= L.jB, geo, L.TB + (j - L.jB).float() * _f32(max_step, L.near))
    return torch.where(k <= L.kA, lin, out)


def _sample_t(L: _Lattice, k, u, step, cone, max_step) -> torch.Tensor:
    a = _lattice_t(L, k, step, cone, max_step)
    b = _lattice_t(L, k + 1, step, cone, max_step)
    return torch.where(u == 0, a, a + u * (b - a))


def _estimate_k(L: _Lattice, t, u, step, cone, max_step) -> torch.Tensor:
    s = (t - L.near) / _f32(step, t)
    if cone > 0:
        r = _f32(1.0, t) + _f32(cone, t)
        geo = L.kA.float() + torch.log(t / L.TA) / torch.log(r)
        tail = (L.kA + L.jB).float() + (t - L.TB) / _f32(max_step, t)
        s = torch.where(t <= L.TA, s, torch.where(t <= L.TB, geo, tail))
    return _clamp_k(torch.ceil(s - u - 0.5))


# ----------------------------------------------------------------------------------------------------------------
# Cells (march.h: midpoint_cell, level_of) and the outer box (outer_interval)
# ----------------------------------------------------------------------------------------------------------------

def _cells_of_points(grid: GridSpec, x: torch.Tensor):
    """Points (S, 3) -> (level (S,) int64, -1 outside every level; flat occupancy index (S,))."""
    q = (x - grid.lo) * grid.scale
    q = torch.where(q >= -1.0e9, q, -1.0e9).clamp(max=1.0e9)  # NaN -> -1e9, as in march.h
    g = torch.floor(q).long()  # (S, 3) level-0 cell coordinates
    levels, res = grid.occ.shape[0], torch.tensor(grid.occ.shape[1:], device=x.device)
    half = res // 2
    level = torch.full(x.shape[:1], -1, dtype=torch.long, device=x.device)
    flat = torch.zeros_like(level)
    for c in reversed(range(levels)):  # the finest level that holds the point wins
        cell = torch.div(g - half, 2 ** c, rounding_mode="floor") + half
        inside = ((cell >= 0) & (cell < res)).all(dim=1)
        idx = ((c * res[0] + cell[:, 0]) * res[1] + cell[:, 1]) * res[2] + cell[:, 2]
        level = torch.where(inside, c, level)
        flat = torch.where(inside, idx, flat)
    return level, flat


def _occupied_box(occ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The box, in level-0 cell coordinates, around every occupied cell of every level (None: none is occupied)."""
    res = torch.tensor(occ.shape[1:], device=occ.device)
    half = res // 2
    lo, hi = None, None
    for c in range(occ.shape[0]):
        ends = []
        for axis in range(3):
            used = occ[c].any(dim=tuple(a for a in range(3) if a != axis)).nonzero().reshape(-1)
            if used.numel() == 0:
                break
            ends.append((used[0], used[-1] + 1))
        else:
            first = torch.stack([e[0] for e in ends]) - half
            last = torch.stack([e[1] for e in ends]) - half
            clo, chi = (first * 2 ** c + half).float(), (last * 2 ** c + half).float()
            lo = clo if lo is None else torch.minimum(lo, clo)
            hi = chi if hi is None else torch.maximum(hi, chi)
    return None if lo is None else (lo, hi)


def _outer_interval(grid: GridSpec, o, d, near, far, box: tuple[torch.Tensor, torch.Tensor] | None = None):
    """march.h's outer_interval: (t0, t1, hit) for the outer box grown by a margin, clipped to [near, far].
    ``box``: a smaller box (level-0 cell coordinates, :func:`_occupied_box`) to use instead, with the same margin."""
    res = torch.tensor(grid.occ.shape[1:], device=o.device)
    ext = (res // 2).float() * float(2 ** (grid.occ.shape[0] - 1))
    half = (res // 2).float()
    q0 = (o - grid.lo) * grid.scale
    dq = d * grid.scale
    margin = 1.0e-3 + 1.0e-5 * (q0.abs() + ext + (grid.lo * grid.scale).abs())
    qlo, qhi = (half - ext, half + ext) if box is None else box
    qlo, qhi = qlo - margin, qhi + margin
    parallel = dq == 0
    ta = (qlo - q0) / torch.where(parallel, 1.0, dq)
    tb = (qhi - q0) / torch.where(parallel, 1.0, dq)
    lo_t = torch.where(parallel, -float("inf"), torch.minimum(ta, tb))
    hi_t = torch.where(parallel, float("inf"), torch.maximum(ta, tb))
    t0 = torch.maximum(near, lo_t.amax(dim=1))
    t1 = torch.minimum(far, hi_t.amin(dim=1))
    outside = (parallel & ((q0 < qlo) | (q0 > qhi))).any(dim=1)
    moving = (d != 0).any(dim=1)
    finite = torch.isfinite(o).all(dim=1) & torch.isfinite(d).all(dim=1) & torch.isfinite(near) & ~far.isnan()
    return t0, t1, (t0 <= t1) & ~outside & moving & finite


def mip_pyramid(occ: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The compiled marchers' empty-space pyramid: per level, for b = 1 .. B, (res >> b) blocks per axis, each 1
    unless all its cells are empty; at level c >= 1 the cells inside level c - 1's box count as occupied.
    Returns (flat uint8, B) with B the most halvings every axis of the resolution allows (at most 10)."""
    levels, res = occ.shape[0], occ.shape[1:]
    n_mip = 0
    while n_mip < 10 and all(r % (2 ** (n_mip + 1)) == 0 for r in res):
        n_mip += 1
    occ = occ.bool().clone()
    if levels > 1:  # the inner quarter-to-three-quarters of levels >= 1 belongs to the finer level
        rx, ry, rz = res
        occ[1:, rx // 4: 3 * rx // 4, ry // 4: 3 * ry // 4, rz // 4: 3 * rz // 4] = True
    parts, x = [], occ
    for _ in range(n_mip):
        l_, a, b, c = x.shape
        x = x.view(l_, a // 2, 2, b // 2, 2, c // 2, 2).any(dim=6).any(dim=4).any(dim=2)  # (L, a/2, b/2, c/2)
        parts.append(x.reshape(levels, -1))
    flat = torch.cat(parts, dim=1) if parts else occ.new_zeros(levels, 0)
    return flat.to(torch.uint8).reshape(-1).contiguous(), n_mip


def march_torch(grid: GridSpec, rays_o, rays_d, near, far, jitter, step: float, cone: float, max_step: float,
                max_samples: int) -> RaySamples:
    """The pure-torch marcher (brute force over each ray's lattice inside the box around the occupied cells); same
    arguments as the kernels."""
    n_rays, device = rays_o.shape[0], rays_o.device
    u = jitter if jitter is not None else torch.zeros_like(near)
    box = _occupied_box(grid.occ)  # no lattice point outside it can be kept: test only those inside
    if box is None:
        empty = torch.zeros(0, device=device)
        return RaySamples(torch.zeros(0, dtype=torch.long, device=device), empty, empty.clone())
    t0, t1, hit = _outer_interval(grid, rays_o, rays_d, near, far, box)
    L = _make_lattice(near, step, cone, max_step)
    k_first = (_estimate_k(L, t0, u, step, cone, max_step) - 2).clamp(min=0)
    k_last = (_estimate_k(L, t1, u, step, cone, max_step) + 2).clamp(max=K_MAX - 1)
    n_pts = torch.where(hit, (k_last - k_first + 1).clamp(min=0), 0)  # (N,) lattice points to test

    occ = grid.occ.reshape(-1).bool()
    out_rays, out_ts, out_te = [], [], []
    ends = n_pts.cumsum(0).cpu()
    start = 0
    while start < n_rays:  # chunks of whole rays, about _CHUNK lattice points each
        base = int(ends[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(ends, base + _CHUNK, right=True))
        stop = min(max(stop, start + 1), n_rays)
        rays = torch.arange(start, stop, device=device)
        counts = n_pts[start:stop]
        ri = torch.repeat_interleave(rays, counts)  # (P,) ray of each lattice point
        first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        k = k_first[ri] + (torch.arange(ri.shape[0], device=device) - first)  # (P,) lattice index
        Lr = _Lattice(*(f[ri] for f in L))
        ts = _sample_t(Lr, k, u[ri], step, cone, max_step)
        te = _sample_t(Lr, k + 1, u[ri], step, cone, max_step)
        m = (ts + te) * 0.5  # (P,) midpoints
        level, flat = _cells_of_points(grid, rays_o[ri] + m[:, None] * rays_d[ri])
        keep = (level >= 0) & (te <= far[ri]) & occ[flat]
        out_rays.append(ri[keep])
        out_ts.append(ts[keep])
        out_te.append(te[keep])
        start = stop
    ri = torch.cat(out_rays) if out_rays else torch.zeros(0, dtype=torch.long, device=device)
    ts = torch.cat(out_ts) if out_ts else torch.zeros(0, device=device)
    te = torch.cat(out_te) if out_te else torch.zeros(0, device=device)
    # the cap: rank of each sample within its ray (samples are grouped by ray, in k order)
    counts = torch.bincount(ri, minlength=n_rays)
    rank = torch.arange(ri.shape[0], device=device) - (counts.cumsum(0) - counts)[ri]
    keep = rank < max_samples
    return RaySamples(ri[keep], ts[keep], te[keep])


# ----------------------------------------------------------------------------------------------------------------
# The public entry point
# ----------------------------------------------------------------------------------------------------------------

def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run: "auto" picks the compiled kernel for ``device``, else torch (one warning)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch"
    kind = "cuda" if device.type == "cuda" else "cpu"
    if backend != "auto" and backend != kind:
        raise ValueError(f"backend={backend!r} cannot march tensors on {device}")
    if _backend.load(kind) is not None:
        return kind
    if backend == "auto":
        _backend.warn_fallback(kind)
        return "torch"
    raise RuntimeError(f"backend={backend!r} is unavailable: {_backend.reason(kind)}")


def cuda_block() -> int:
    """Threads per block of the CUDA marcher (one ray each): ``$RWF_CUDA_BLOCK``, else 256. A tuning knob for
    benchmarks/raymarch.py (``--cuda-blocks``); the samples do not depend on it."""
    text = os.environ.get("RWF_CUDA_BLOCK", "").strip()
    if not text:
        return 256
    try:
        block = int(text)
    except ValueError:
        block = 0
    if not (32 <= block <= 1024 and block % 32 == 0):
        raise UserError(f"RWF_CUDA_BLOCK={text!r}: threads per block must be a multiple of 32 from 32 to 1024")
    return block


def _per_ray(value, n: int, like: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device).detach()  # samples carry no gradient
    if t.dim() == 0:
        return t.expand(n).contiguous()
    t = t.reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"{name} must be a number or have one entry per ray ({n}), got shape {tuple(t.shape)}")
    return t.contiguous()


def march(grid: GridSpec, rays_o: torch.Tensor, rays_d: torch.Tensor, near=0.0, far=None, step_size: float = 1e-2,
          cone_angle: float = 0.0, max_step_size: float | None = None, max_samples: int = 1024,
          stratified: bool = False, seed: int | None = None, jitter: torch.Tensor | None = None,
          sigma_fn: Callable | None = None, alpha_thre: float = 0.0, early_stop_eps: float = 0.0,
          backend: str = "auto", _skip_empty: bool = True) -> RaySamples:
    """March rays through an occupancy grid; see the module docstring for the exact sample set.

    Args:
        grid: a :class:`GridSpec` (``OccupancyGrid.spec()``).
        rays_o, rays_d: (N, 3) origins and directions; t is measured in units of ``|rays_d|``.
        near, far: numbers or (N,) tensors; ``far=None`` means no limit (the grid's outer box still ends rays).
        step_size: the lattice step (the smallest step with a cone angle).
        cone_angle: 0 for constant steps, else steps grow as t * cone_angle (instant-ngp's 1/256 for big scenes).
        max_step_size: the largest step with a cone angle (None: unbounded).
        max_samples: cap on samples per ray.
        stratified: jitter each ray's lattice by u ~ U[0, 1) steps, drawn from ``seed`` (on the CPU, so the
            same on every device; None: torch's RNG); ``jitter`` (N,) gives u directly.
        sigma_fn: optional ``sigma_fn(t_starts, t_ends, ray_indices) -> sigmas (S,)``, evaluated without grad to
            drop samples with alpha < ``alpha_thre`` or transmittance < ``early_stop_eps`` (for rendering).
        backend: "auto" | "cuda" | "cpu" | "torch".
    Returns:
        :class:`RaySamples` ``(ray_indices (S,) int64, t_starts (S,), t_ends (S,))``.

    Example:
        >>> grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8); grid.fill_(True)
        >>> ray_indices, t_starts, t_ends = grid.sampling(torch.tensor([[-1., .5, .5]]), torch.tensor([[1., 0, 0]]),
        ...                                               step_size=0.25, backend="torch")
        >>> t_starts.tolist()
        [1.0, 1.25, 1.5, 1.75]
    """
    if rays_o.dim() != 2 or rays_o.shape[-1] != 3 or rays_d.shape != rays_o.shape:
        raise ValueError(f"rays_o and rays_d must both be (N, 3), got {tuple(rays_o.shape)} and {tuple(rays_d.shape)}")
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be finite and > 0, got {step_size}")
    if not (cone_angle >= 0 and math.isfinite(cone_angle)):  # NaN: the two backends read it differently
        raise ValueError(f"cone_angle must be finite and >= 0, got {cone_angle}")
    try:
        max_samples = operator.index(max_samples)  # 2.5 gave 3 samples in one backend and 2 in the other
    except TypeError:
        raise ValueError(f"max_samples must be an integer, got {max_samples!r}") from None
    if max_samples < 0:
        raise ValueError("max_samples must be >= 0")
    max_step = float("inf") if max_step_size is None else float(max_step_size)
    if max_step < step_size:
        raise ValueError(f"max_step_size ({max_step}) must be >= step_size ({step_size})")
    if cone_angle > 0 and _never_reached(max_step, cone_angle):
        max_step = float("inf")
    n = rays_o.shape[0]
    rays_o = rays_o.detach().float().contiguous()
    rays_d = rays_d.detach().float().contiguous()
    if near < 0 if isinstance(near, (int, float)) else bool((torch.as_tensor(near) < 0).any()):  # a number: no sync
        raise ValueError("near must be >= 0 (the lattice starts at near)")
    nears = _per_ray(near, n, rays_o, "near")
    fars = _per_ray(float("inf") if far is None else far, n, rays_o, "far")
    if jitter is None and stratified:  # drawn on the CPU from a seed, so every device gets the same samples
        if seed is None:
            jitter = torch.rand(n, device=rays_o.device)
        else:
            jitter = torch.rand(n, generator=torch.Generator().manual_seed(seed)).to(rays_o.device)
    if jitter is not None:
        jitter = _per_ray(jitter, n, rays_o, "jitter")
    if rays_o.device.type == "cpu":
        torch.set_flush_denormal(True)

    name = resolve_backend(backend, rays_o.device)
    occ = grid.occ.to(device=rays_o.device, dtype=torch.uint8).contiguous()
    if name == "torch":
        samples = march_torch(GridSpec(occ, grid.lo.to(rays_o.device), grid.scale.to(rays_o.device)), rays_o,
                              rays_d, nears, fars, jitter, step_size, cone_angle, max_step, max_samples)
    else:
        ext = _backend.load(name)
        empty = torch.zeros(0, device=rays_o.device)
        mip, n_mip = grid.mip if grid.mip is not None and grid.mip[0].device == occ.device else mip_pyramid(occ)
        threads = cuda_block() if name == "cuda" else torch.get_num_threads()  # per block, or OpenMP threads
        lo, scale = grid.host if grid.host is not None else (grid.lo.tolist(), grid.scale.tolist())
        ri, ts, te, _ = ext.march(rays_o, rays_d, nears, fars, empty if jitter is None else jitter, occ, mip, n_mip,
                                  list(lo), list(scale), occ.shape[0], float(step_size),
                                  float(cone_angle), max_step, int(max_samples), _skip_empty, threads)
        samples = RaySamples(ri, ts, te)
    if sigma_fn is not None and (alpha_thre > 0 or early_stop_eps > 0):
        samples = _prune(samples, n, sigma_fn, alpha_thre, early_stop_eps)
    return samples


PRUNE_ROUND = 16  # samples per ray evaluated per round of _prune


def _prune(samples: RaySamples, n_rays: int, sigma_fn, alpha_thre: float, early_stop_eps: float,
           round_size: int = PRUNE_ROUND) -> RaySamples:
    """Keep the samples with alpha >= ``alpha_thre`` and transmittance >= ``early_stop_eps`` (:func:`prune_keep`)."""
    if samples.ray_indices.numel() == 0:
        return samples
    keep = prune_keep(samples, n_rays, sigma_fn, alpha_thre, early_stop_eps, round_size)
    return RaySamples(*(v[keep] for v in samples))


@torch.no_grad()
def prune_keep(samples: RaySamples, n_rays: int, sigma_fn, alpha_thre: float, early_stop_eps: float,
               round_size: int = PRUNE_ROUND, with_index: bool = False) -> torch.Tensor:
    """Which samples have alpha >= ``alpha_thre`` and transmittance >= ``early_stop_eps``: (S,) bool.

    Densities are evaluated in rounds of ``round_size`` samples per ray, front to back, and a ray whose
    transmittance has fallen below ``early_stop_eps`` is not evaluated further: its later samples would be dropped
    anyway (transmittance only decreases), so the result equals one pass over every sample, at the cost of the
    samples in front of each ray's termination only. ``with_index``: ``sigma_fn`` also receives the positions of
    the samples it is asked for in ``samples`` (S',) int64, every kept sample among them, so that a caller can keep
    what it computed for them (a NeRF render keeps the trunk's features for the colour pass).
    """
    from .composite import exclusive_sum, optical_thickness  # noqa: PLC0415  (composite imports nothing from here)

    ri, ts, te = samples
    n = ri.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=ri.device)
    counts = torch.bincount(ri, minlength=n_rays)
    longest = int(counts.max())
    if early_stop_eps <= 0:
        round_size = longest  # nothing terminates: one pass
    rank = torch.arange(n, device=ri.device) - (counts.cumsum(0) - counts)[ri]  # position of a sample in its ray
    by_rank = torch.argsort(rank, stable=True)  # samples of rank 0 first, then rank 1, ...
    rank_end = torch.bincount(rank, minlength=longest).cumsum(0).tolist()  # end of each rank's block in by_rank
    optical = torch.zeros(n_rays, dtype=torch.float64, device=ri.device)  # thickness in front of the next round
    keep = torch.zeros(n, dtype=torch.bool, device=ri.device)
    limit = -math.log(early_stop_eps) if early_stop_eps > 0 else math.inf
    for r0 in range(0, longest, round_size):
        block = by_rank[(rank_end[r0 - 1] if r0 else 0):rank_end[min(r0 + round_size, longest) - 1]]
        idx = block[optical[ri[block]] <= limit].sort().values  # live rays only, back in packed (ray, t) order
        if idx.numel() == 0:
            break  # every ray has terminated
        r = ri[idx]
        sigmas = sigma_fn(ts[idx], te[idx], r, idx) if with_index else sigma_fn(ts[idx], te[idx], r)
        tau = optical_thickness(sigmas.reshape(-1), ts[idx], te[idx]).double()
        trans = torch.exp(-(optical[r] + exclusive_sum(tau, r, n_rays)))
        alphas = 1.0 - torch.exp(-tau)
        keep[idx] = (alphas >= alpha_thre) & (trans >= early_stop_eps)
        optical.index_add_(0, r, tau)
    return keep
