"""Preview renders of a learned shape and of its source mesh, from the same cameras, with normals as colours.

    signed distance   sphere tracing (Hart 1996): step along the ray by the field value until it is below eps
    occupancy logits  first crossing: fixed steps until the value crosses the level, then bisection; steps in
                      cells of a coarse lattice that cannot hold the inside are skipped (``CellGrid``)
    triangle mesh     open3d ray casting (the source shown beside the learned field)

Every function takes a callable ``field_fn(points (N, 3)) -> values (N,)``, never a model. Normals are world-space
unit vectors shown as colour 0.5 + 0.5 n (x red, y green, z blue), turned to face the camera; background white.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .evalchunk import eval_chunk
from .mesh import UNIT_BOX

VIEWS = ((45.0, 25.0), (135.0, 25.0), (225.0, 25.0), (315.0, 25.0))  # (azimuth, elevation) in degrees
RADIUS, FOV = 2.0, 35.0  # camera distance from the origin (unit-cube units) and field of view in degrees


def orbit_rays(res: int, azimuth: float, elevation: float = 25.0, radius: float = RADIUS,
               fov: float = FOV) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole camera on a sphere of ``radius`` looking at the origin, y up: rays_o, rays_d (res * res, 3)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    eye = radius * torch.tensor([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    fwd = -eye / eye.norm()
    right = torch.linalg.cross(fwd, torch.tensor([0.0, 1.0, 0.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, fwd)
    half = math.tan(math.radians(fov) / 2)
    s = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1  # pixel centres in [-1, 1]
    v, u = torch.meshgrid(-s, s, indexing="ij")  # row 0 at the top
    d = fwd + half * (u[..., None] * right + v[..., None] * up)
    d = (d / d.norm(dim=-1, keepdim=True)).reshape(-1, 3)
    return eye.expand_as(d).contiguous(), d


def box_interval(rays_o: torch.Tensor, rays_d: torch.Tensor, box=UNIT_BOX):
    """Slab test: entry and exit distances (N,) and whether the ray meets the box."""
    lo, hi = (torch.tensor(b, dtype=rays_o.dtype, device=rays_o.device) for b in box)
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    a, b = (lo - rays_o) * inv, (hi - rays_o) * inv
    t0 = torch.minimum(a, b).amax(-1).clamp(min=0)
    t1 = torch.maximum(a, b).amin(-1)
    return t0, t1, t1 > t0


class CellGrid:
    """Empty-space skipping for a first-crossing search: the points of a box where a field may be inside.

    The field is sampled on a res^3 lattice over the box (corners included, (res - 1)^3 cells of sides h). With
    g = sign * (value - level) (inside where g > 0) and L_c a bound on |grad g| in cell c, each corner j of the cell
    gives g(x) <= g_j + L_c |x - x_j| for x in the cell; averaged with x's trilinear weights w_j:

        g(x) <= U(x) = sum_j w_j(x) (g_j + L_c |x - x_j|)

    A point is kept where U(x) > 0, a cell where max_j g_j + L_c |h| / 2 > 0 (an upper bound of U over the cell,
    as sum_j w_j |x - x_j| <= |h| / 2, half the cell's diagonal), so dropping a point or a cell is exact wherever
    the slope bound holds. L_c is not known: the default estimates it from the lattice, ``safety`` x the norm of
    (e_x / h_x, e_y / h_y, e_z / h_z) with e_a the largest change of g along an a-edge of the lattice within one
    cell of c (an estimate, not a bound). So a part thinner than a cell, which no lattice sample touches and a
    marching-cubes proxy on the same lattice loses, stays in the search while the field rises toward it.

    Example:
        >>> grid = CellGrid.from_field(lambda x: 20 * (0.3 - x.norm(dim=-1)), res=16)
        >>> grid(torch.tensor([[0.0, 0.0, 0.0], [0.45, 0.45, 0.45]])).tolist()
        [True, False]
    """

    def __init__(self, occupied: torch.Tensor, box=UNIT_BOX, values: torch.Tensor | None = None,
                 slope: torch.Tensor | None = None):
        """occupied: bool (r, r, r), cell [i, j, k] spanning the i-th to (i+1)-th lattice planes along x, y, z.
        values: optional g on the (r + 1)^3 lattice and slope: L_c per cell (r, r, r); with both, a point in an
        occupied cell is kept only where U(x) > 0, else wherever its cell is occupied."""
        self.occupied, self.values, self.slope = occupied, values, slope
        self.lo = torch.tensor(box[0], dtype=torch.float32, device=occupied.device)
        self.hi = torch.tensor(box[1], dtype=torch.float32, device=occupied.device)

    @classmethod
    @torch.no_grad()
    def from_field(cls, field_fn, box=UNIT_BOX, res: int = 64, level: float = 0.0, inside: str = "above",
                   margin: float | None = None, safety: float = 1.0, chunk: int = 2**16,
                   device: str | torch.device = "cpu") -> "CellGrid":
        """Sample ``field_fn`` (points (N, 3) -> values (N,)) on res^3 lattice points (res >= 2) over ``box``.
        margin: instead of the slope estimate, a fixed L_c |h| / 2 for every cell (0: keep where U(x) > 0 with a
        flat field, i.e. where the trilinear interpolation of g is above 0)."""
        axes = [torch.linspace(box[0][i], box[1][i], res, device=device) for i in range(3)]
        pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # (res^3, 3)
        vals = torch.cat([field_fn(c).reshape(-1).float() for c in pts.split(chunk)])
        h = [(box[1][i] - box[0][i]) / (res - 1) for i in range(3)]
        half_diag = 0.5 * math.sqrt(sum(x * x for x in h))

        def pool(v, k, pad=0):
            return torch.nn.functional.max_pool3d(v[None, None], k, stride=1, padding=pad)[0, 0]

        g = (1.0 if inside == "above" else -1.0) * (vals.reshape(res, res, res) - level)
        corner_max = pool(g, 2)  # (res - 1,) * 3 cells: the largest g at each cell's 8 corners
        if margin is None:  # per axis the steepest edge within one cell of each cell, over its length: a slope
            steepest = []
            for dim in range(3):
                edges = (g.narrow(dim, 1, res - 1) - g.narrow(dim, 0, res - 1)).abs()  # along dim, (res - 1 or res)
                per_cell = pool(edges, tuple(1 if i == dim else 2 for i in range(3)))  # the cell's 4 edges: (res - 1)^3
                steepest.append(pool(per_cell, 3, 1) / h[dim])  # within one cell around
            slope = safety * torch.sqrt(sum(s * s for s in steepest))
        else:
            slope = torch.full_like(corner_max, margin / half_diag)
        return cls(corner_max + slope * half_diag > 0, box, g, slope)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Whether the field may be inside at each point (N, 3): bool (N,); False outside the box."""
        dev, (rx, ry, rz) = points.device, self.occupied.shape
        size = (self.hi - self.lo).to(dev)
        q = (points - self.lo.to(dev)) / size  # box -> [0, 1]^3
        inside_box = ((q >= -1e-4) & (q <= 1 + 1e-4)).all(-1)  # rounding at the faces stays in
        q = q.clamp_(0, 1).mul_(torch.tensor([rx, ry, rz], dtype=q.dtype, device=dev))  # in cells
        i = torch.minimum(q.long(), torch.tensor([rx - 1, ry - 1, rz - 1], device=dev))  # upper face: last cell
        cell = (i[:, 0] * ry + i[:, 1]) * rz + i[:, 2]  # (N,) flat cell index
        keep = inside_box & self.occupied.to(dev).reshape(-1)[cell]
        if self.values is None or self.slope is None:
            return keep
        sel = torch.nonzero(keep).squeeze(1)
        i, f = i[sel], (q[sel] - i[sel]).clamp_(0, 1)  # (M, 3) cell and position in it, [0, 1]^3
        h = size / torch.tensor([rx, ry, rz], dtype=size.dtype, device=dev)
        w = (1 - f, f)  # per axis the trilinear weight of the corner at 0 / 1
        d2 = ((f * h) ** 2, ((1 - f) * h) ** 2)  # per axis the squared distance to the corner at 0 / 1
        slope = self.slope.to(dev).reshape(-1)[cell[sel]]  # (M,)
        values = self.values.to(dev).reshape(-1)
        base = (i[:, 0] * (ry + 1) + i[:, 1]) * (rz + 1) + i[:, 2]  # (M,) the cell's lowest lattice corner
        bound = torch.zeros(len(sel), dtype=values.dtype, device=dev)
        for bx in (0, 1):
            for by in (0, 1):
                for bz in (0, 1):
                    g_j = values[base + (bx * (ry + 1) + by) * (rz + 1) + bz]
                    dist = (d2[bx][:, 0] + d2[by][:, 1] + d2[bz][:, 2]).sqrt_()
                    bound += w[bx][:, 0] * w[by][:, 1] * w[bz][:, 2] * (g_j + slope * dist)
        keep[sel] = bound > 0  # U(x) > 0
        return keep

    def fraction(self) -> float:
        """Share of the cells kept in the search (within them, only the points where U(x) > 0 are)."""
        return float(self.occupied.float().mean())


@torch.no_grad()
def sphere_trace(field_fn, rays_o, rays_d, box=UNIT_BOX, steps: int = 96, eps: float = 1e-3,
                 step_scale: float = 0.9) -> torch.Tensor:
    """Distance to the first zero of a signed distance field along each ray: (N,), inf where none is found.

    ``step_scale`` < 1 guards against learned fields whose slope exceeds 1; a step that still lands inside (the
    field below -eps after a point outside) is bisected between the two points to within ``eps``. Without that a
    field of slope 3 oscillated away from its surface (every ray of a sphere missed it), and short fits, whose
    slopes reach 2 to 3, showed holes inside their silhouettes.
    """
    t0, t1, hit = box_interval(rays_o, rays_d, box)
    t, out = t0.clone(), torch.full_like(t0, math.inf)
    prev = torch.full_like(t0, math.nan)  # the last point outside along each ray (none before the first step)
    active = torch.nonzero(hit).squeeze(1)
    for _ in range(steps):
        if active.numel() == 0:
            break
        f = field_fn(rays_o[active] + t[active, None] * rays_d[active]).reshape(-1)
        done = f.abs() < eps
        out[active[done]] = t[active[done]]
        crossed = (f <= -eps) & torch.isfinite(prev[active])
        if crossed.any():
            idx = active[crossed]
            a, b = prev[idx], t[idx]
            refine = min(30, max(1, math.ceil(math.log2(float((b - a).max()) / eps + 1.0))))
            out[idx] = _bisect(field_fn, rays_o, rays_d, idx, a, b, -1.0, 0.0, refine)
        prev[active] = torch.where(f > 0, t[active], prev[active])
        t[active] = t[active] + step_scale * f
        keep = ~done & ~crossed & (t[active] < t1[active]) & (t[active] >= t0[active] - eps)
        active = active[keep]
    return out


def _bisect(field_fn, rays_o, rays_d, idx, a, b, sign, level, refine):
    """Bisection of [a, b] (M,) on rays ``idx`` (M,), a outside and b inside: the final b (M,)."""
    for _ in range(refine):  # keeps a outside, b inside
        m = 0.5 * (a + b)
        gm = sign * (field_fn(rays_o[idx] + m[:, None] * rays_d[idx]).reshape(-1) - level)
        a, b = torch.where(gm > 0, a, m), torch.where(gm > 0, m, b)
    return b


def _kept_steps(skip, rays_o, rays_d, t0, dt, t1, rays, n_steps, chunk=2**20):
    """The steps k = 1 .. n_steps at t0 + k dt <= t1 of ``rays`` (R,) where ``skip`` is True: ray indices (S,) and
    k (S,) as floats, sorted by ray, then k (how ``torch.nonzero`` orders its rows)."""
    ks = torch.arange(1, n_steps + 1, dtype=t0.dtype, device=t0.device)
    out_r, out_k = [rays[:0]], [ks[:0]]
    for r in rays.split(max(1, chunk // n_steps)):
        ts = t0[r, None] + dt[r, None] * ks  # (n, n_steps), as the search without skipping computes them
        x = rays_o[r, None] + ts[..., None] * rays_d[r, None]
        may = skip(x.reshape(-1, 3)).reshape(ts.shape) & (ts <= t1[r, None])
        i, j = torch.nonzero(may, as_tuple=True)
        out_r.append(r[i])
        out_k.append(ks[j])
    return torch.cat(out_r), torch.cat(out_k)


@torch.no_grad()
def first_crossing(field_fn, rays_o, rays_d, box=UNIT_BOX, level: float = 0.0, inside: str = "above",
                   n_steps: int = 256, refine: int = 10, block: int = 16, skip=None) -> torch.Tensor:
    """Distance to the first point where the field enters the inside (value above / below ``level``): (N,).

    Each ray's interval through the box is cut into ``n_steps`` fixed steps, taken ``block`` at a time for the rays still searching; then bisection
    between the last step outside and the first inside.
    skip: optional empty-space skipping, a callable points (M, 3) -> bool (M,) that is False only where the field
        cannot be inside (a ``CellGrid``). Only the steps where it is True are evaluated, per ray in order (first
        block / 4 of them, then twice as many each round, at most 2 x block), so rays that meet no such step cost
        no field evaluation; the others count as outside. The steps (t0 + k dt) and the bisection are those of
        the search without skipping, so a conservative ``skip`` changes no result.
    """
    sign = 1.0 if inside == "above" else -1.0
    t0, t1, hit = box_interval(rays_o, rays_d, box)
    dt = (t1 - t0) / n_steps
    out = torch.full_like(t0, math.inf)
    active, k = torch.nonzero(hit).squeeze(1), 0
    if skip is not None:
        return _first_crossing_skipping(field_fn, rays_o, rays_d, t0, dt, t1, active, sign, level, n_steps,
                                        refine, block, skip, out)
    lo_t = t0.clone()
    while active.numel() and k < n_steps:
        steps = k + torch.arange(1, block + 1, dtype=t0.dtype, device=t0.device)
        ts = t0[active, None] + dt[active, None] * steps  # (n, block)
        x = rays_o[active, None] + ts[..., None] * rays_d[active, None]
        g = sign * (field_fn(x.reshape(-1, 3)).reshape(ts.shape) - level)
        inside_now = (g > 0) & (ts <= t1[active, None])
        found = inside_now.any(1)
        first = inside_now.float().argmax(1)
        a = torch.where(first > 0, ts.gather(1, (first - 1).clamp(min=0)[:, None])[:, 0], lo_t[active])
        b = ts.gather(1, first[:, None])[:, 0]
        idx = active[found]
        out[idx] = _bisect(field_fn, rays_o, rays_d, idx, a[found], b[found], sign, level, refine)
        lo_t[active] = ts[:, -1]
        k += block
        active = active[~found & (ts[:, -1] < t1[active])]
    return out


def _first_crossing_skipping(field_fn, rays_o, rays_d, t0, dt, t1, rays, sign, level, n_steps, refine, block,
                             skip, out):
    """``first_crossing`` over the steps ``skip`` keeps: each round evaluates, for every ray still searching, its
    next ``width`` kept steps (packed, so the field sees only those points)."""
    ray, k = _kept_steps(skip, rays_o, rays_d, t0, dt, t1, rays, n_steps)  # (S,), sorted by ray then k
    counts = torch.bincount(ray, minlength=len(t0))
    rank = torch.arange(len(ray), device=ray.device) - (counts.cumsum(0) - counts)[ray]  # (S,) k's place in its ray
    searching = torch.ones(len(t0), dtype=torch.bool, device=t0.device)
    lo, width, last = 0, max(1, block // 4), int(counts.max()) if len(ray) else 0
    while lo < last:
        sel = (rank >= lo) & (rank < lo + width) & searching[ray]
        r, kk = ray[sel], k[sel]
        ts = t0[r] + dt[r] * kk
        g = sign * (field_fn(rays_o[r] + ts[:, None] * rays_d[r]).reshape(-1) - level) if len(r) else ts
        first = torch.full_like(t0, math.inf).scatter_reduce(0, r[g > 0], kk[g > 0], "amin")  # (N,) per ray
        idx = torch.nonzero(torch.isfinite(first)).squeeze(1)
        if len(idx):
            kf = first[idx]  # the first step inside; the one before it is outside (evaluated or skipped)
            a, b = t0[idx] + dt[idx] * (kf - 1), t0[idx] + dt[idx] * kf
            out[idx] = _bisect(field_fn, rays_o, rays_d, idx, a, b, sign, level, refine)
            searching[idx] = False
        lo, width = lo + width, min(2 * width, 2 * block)
    return out


def field_normals(field_fn, points: torch.Tensor, outward: float = 1.0, h: float = 0.0,
                  chunk: int = 2**16) -> torch.Tensor:
    """Unit gradient of the field, times ``outward`` (+1 for distances, -1 for occupancy logits): (N, 3).

    h = 0: autograd; h > 0: central differences over h, which averages away the tiny flat facets of a ReLU
    network (its exact gradient is piecewise constant and shades as grain). ``chunk`` points at a time: one graph
    over every point held the activations of all (about 3 KB a point with the default field).
    """
    return outward * torch.nn.functional.normalize(field_gradients(field_fn, points, h, chunk), dim=-1)


def field_gradients(field_fn, points: torch.Tensor, h: float = 0.0, chunk: int = 2**16) -> torch.Tensor:
    """The field's gradient at ``points`` (N, 3): autograd (h = 0) or central differences over h (then 2 h times
    the gradient: only its direction is meant), ``chunk`` points at a time."""
    grads = []
    for part in points.split(chunk) if len(points) else [points]:
        if h > 0:
            with torch.no_grad():
                offsets = h * torch.eye(3, dtype=part.dtype, device=part.device)
                grads.append(torch.stack([field_fn(part + o).reshape(-1) - field_fn(part - o).reshape(-1)
                                          for o in offsets], -1))
        else:
            with torch.enable_grad():
                x = part.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(field_fn(x).sum(), x)
                grads.append(grad.detach())
    return torch.cat(grads)


def shade(t: torch.Tensor, normals: torch.Tensor, rays_d: torch.Tensor, res: int) -> np.ndarray:
    """Normal-map colours on white: (res, res, 3) float32 in [0, 1]. ``normals`` (M, 3) for the finite t."""
    img = torch.ones(t.shape[0], 3)
    hit = torch.isfinite(t)
    n = normals.reshape(-1, 3).cpu().float()
    facing = torch.where(((n * rays_d[hit].cpu()).sum(-1, keepdim=True) > 0), -n, n)  # toward the camera
    img[hit] = 0.5 + 0.5 * facing
    return img.reshape(res, res, 3).numpy()


RAY_BLOCK = 2**18
"""rays traced together by :func:`render_field` (each ray's search is its own, so blocks give the same image up to
the float rounding of batched products: a ray grazing the surface may flip, 2 pixels in 1.6 million measured)"""


def field_slope(field_fn, res: int = 24, device: str | torch.device = "cpu", chunk: int = 2**16,
                quantile: float = 0.99) -> float:
    """The ``quantile`` of the field's gradient norm over a ``res``^3 lattice of the unit box (cell centres): how
    much steeper than a distance the field is (1 for an exact SDF). Autograd, ``chunk`` points at a time."""
    ticks = (torch.arange(res, dtype=torch.float32, device=device) + 0.5) / res - 0.5
    pts = torch.stack(torch.meshgrid(ticks, ticks, ticks, indexing="ij"), -1).reshape(-1, 3)
    norms = field_gradients(field_fn, pts, 0.0, chunk).norm(dim=-1)
    norms = norms[torch.isfinite(norms)]
    return float(torch.quantile(norms.float().cpu(), quantile)) if len(norms) else 1.0


def render_field(field_fn, res: int = 128, kind: str = "sdf", level: float = 0.0, views=VIEWS,
                 device: str | torch.device = "cpu", chunk: int = 2**16, normal_h: float | None = None,
                 grid_res: int = 64, n_steps: int = 256, refine: int | None = None) -> list[np.ndarray]:
    """The learned shape from each (azimuth, elevation) view: list of (res, res, 3) images (see
    :class:`FieldRenderer` for the arguments)."""
    renderer = FieldRenderer(field_fn, res, kind, level, device, chunk, normal_h, grid_res, n_steps, refine)
    return [renderer.view(az, el)[0] for az, el in views]


class FieldRenderer:
    """Views of a learned shape from cameras on the orbit sphere (:func:`orbit_rays`), one at a time: the field's
    slope (sdf) or its skipping lattice (occupancy) is measured once for all of them.

    kind: "sdf" (sphere tracing, inside below ``level``) or "occupancy" (first crossing, inside above).
    normal_h: finite-difference step of the normals (0: autograd), see ``field_normals``; None: a pixel's footprint
        at the centre of the scene, what the image resolves (autograd normals of a ReLU field shade as grain: on a
        1000-step bunny the preview's median |cos| to the source's normals was 0.912, 0.982 at the footprint).
    occupancy: the first crossing over ``n_steps`` steps across the box, with empty-space skipping by a
        ``CellGrid`` of the field on ``grid_res``^3 lattice points, built once for all views (0: no skipping, every
        step evaluated). It finds what the search without skipping finds, independent of any mesh resolution.
    refine: occupancy only, bisection steps after the first step inside; None: enough to place the crossing
        within 1/32 of a pixel's footprint at the centre of the scene (a step is at most the box's diagonal /
        ``n_steps``; 5 at 128^2 with 256 steps), at most 10.
    """

    def __init__(self, field_fn, res: int = 128, kind: str = "sdf", level: float = 0.0,
                 device: str | torch.device = "cpu", chunk: int = 2**16, normal_h: float | None = None,
                 grid_res: int = 64, n_steps: int = 256, refine: int | None = None):
        def fn(x):
            return torch.cat([field_fn(c).reshape(-1) for c in x.split(eval_chunk(x.device, chunk))]) if len(x) \
                else x[:, 0]

        self.fn, self.res, self.kind, self.level, self.device, self.chunk = fn, res, kind, level, device, chunk
        self.n_steps = n_steps
        self.footprint = 2 * RADIUS * math.tan(math.radians(FOV) / 2) / res  # a pixel's side at the origin
        self.normal_h = self.footprint if normal_h is None else normal_h
        if refine is None:  # the longest step of the search, halved until it is below footprint / 32
            longest = math.dist(*UNIT_BOX) / n_steps
            refine = min(10, max(1, math.ceil(math.log2(32 * longest / self.footprint))))
        self.refine = refine
        self.grid = None
        if kind != "sdf" and grid_res:
            self.grid = CellGrid.from_field(fn, res=grid_res, level=level, inside="above", chunk=chunk, device=device)
        self.slope = max(1.0, field_slope(fn, device=device, chunk=chunk)) if kind == "sdf" else 1.0

    def view(self, azimuth: float, elevation: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
        """The view from (azimuth, elevation) in degrees: the normal-shaded image (res, res, 3) float32 in [0, 1]
        and the distance along each pixel's ray to the surface (res, res) float32, in unit-box units (inf: no
        surface)."""
        fn, level = self.fn, self.level
        o_all, d_all = (r.to(self.device) for r in orbit_rays(self.res, azimuth, elevation))
        ts, normals = [], []
        for o, d in zip(o_all.split(RAY_BLOCK), d_all.split(RAY_BLOCK)):  # each ray alone: blocks bound the memory
            if self.kind == "sdf":  # converged within a third of a pixel's footprint at the centre of the scene;
                # steps shortened by the field's slope (a learned one is not a distance: slopes of 2 to 3 stepped
                # over thin parts) and as many more of them
                t = sphere_trace(lambda x: fn(x) - level, o, d, eps=0.3 * self.footprint,
                                 step_scale=0.9 / self.slope, steps=math.ceil(96 * self.slope))
            else:
                t = first_crossing(fn, o, d, level=level, inside="above", n_steps=self.n_steps, refine=self.refine,
                                   skip=self.grid)
            hit = torch.isfinite(t)
            pts = o[hit] + t[hit, None] * d[hit]
            normals.append(field_normals(fn, pts, 1.0 if self.kind == "sdf" else -1.0, self.normal_h, self.chunk)
                           .cpu() if hit.any() else torch.zeros(0, 3))
            ts.append(t.cpu())
        t = torch.cat(ts)
        return shade(t, torch.cat(normals), d_all.cpu(), self.res), t.reshape(self.res, self.res).float().numpy()


def render_mesh(query, res: int = 128, views=VIEWS) -> list[np.ndarray]:
    """A triangle mesh (a ``mesh.MeshQuery``) from the same views, by ray casting: list of (res, res, 3)."""
    images = []
    for az, el in views:
        o, d = orbit_rays(res, az, el)
        t, n = query.cast(torch.cat([o, d], 1).numpy())
        t = torch.from_numpy(t)
        t[~torch.isfinite(t)] = math.inf
        images.append(shade(t, torch.from_numpy(n)[torch.isfinite(t)], d, res))
    return images


def preview_image(rows: dict[str, list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Stack rows of equally sized views into one picture with white gaps: (H, W, 3)."""
    out = []
    for views in rows.values():
        h = views[0].shape[0]
        line = []
        for img in views:
            line += [img, np.ones((h, gap, 3), np.float32)]
        out += [np.concatenate(line[:-1], 1), np.ones((gap, sum(v.shape[1] for v in views) + gap * (len(views) - 1),
                                                      3), np.float32)]
    return np.concatenate(out[:-1], 0)
