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
    """Empty-space skipping for a first-crossing search: the cells of a box that may hold the inside of a field.

    The field is sampled on a res^3 lattice over the box (corners included, (res - 1)^3 cells of side h). With
    g = sign * (value - level) (inside where g > 0), a cell may hold the inside when the largest g at its 8 corners
    plus ``margin`` exceeds 0. Every point of a cell lies within sqrt(3) h / 2 of a corner, so the cell is marked
    correctly wherever the field's slope there is at most ``margin / (sqrt(3) h / 2)``. The default margin is per
    cell: ``safety`` x sqrt(3) / 2 x the largest change of g along a lattice edge within one cell of it (a local
    slope x h, an estimate, not a bound). So a part thinner than a cell, which no lattice sample touches and a
    marching-cubes proxy on the same lattice loses, keeps its cells in the search while the field rises toward it.

    Example:
        >>> grid = CellGrid.from_field(lambda x: 20 * (0.3 - x.norm(dim=-1)), res=16)
        >>> grid(torch.tensor([[0.0, 0.0, 0.0], [0.45, 0.45, 0.45]])).tolist()
        [True, False]
    """

    def __init__(self, occupied: torch.Tensor, box=UNIT_BOX):
        """occupied: bool (r, r, r), cell [i, j, k] spanning the i-th to (i+1)-th lattice planes along x, y, z."""
        self.occupied = occupied
        self.lo = torch.tensor(box[0], dtype=torch.float32, device=occupied.device)
        self.hi = torch.tensor(box[1], dtype=torch.float32, device=occupied.device)

    @classmethod
    @torch.no_grad()
    def from_field(cls, field_fn, box=UNIT_BOX, res: int = 64, level: float = 0.0, inside: str = "above",
                   margin: float | None = None, safety: float = 1.0, chunk: int = 2**16,
                   device: str | torch.device = "cpu") -> "CellGrid":
        """Sample ``field_fn`` (points (N, 3) -> values (N,)) on res^3 lattice points (res >= 2) over ``box``."""
        axes = [torch.linspace(box[0][i], box[1][i], res, device=device) for i in range(3)]
        pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # (res^3, 3)
        vals = torch.cat([field_fn(c).reshape(-1).float() for c in pts.split(chunk)])

        def pool(v, k, pad=0):
            return torch.nn.functional.max_pool3d(v[None, None], k, stride=1, padding=pad)[0, 0]

        g = (1.0 if inside == "above" else -1.0) * (vals.reshape(res, res, res) - level)
        corner_max = pool(g, 2)  # (res - 1,) * 3 cells: the largest g at each cell's 8 corners
        if margin is None:  # the steepest edge of the lattice within one cell of each cell: a local slope x h
            edges = [pool((g.narrow(dim, 1, res - 1) - g.narrow(dim, 0, res - 1)).abs(), tuple(
                1 if i == dim else 2 for i in range(3))) for dim in range(3)]
            margin = safety * math.sqrt(3) / 2 * pool(torch.maximum(torch.maximum(*edges[:2]), edges[2]), 3, 1)
        return cls(corner_max + margin > 0, box)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Whether each point (N, 3) lies in a cell that may hold the inside: bool (N,); False outside the box."""
        r = torch.tensor(self.occupied.shape, device=points.device)
        u = (points - self.lo.to(points.device)) / (self.hi - self.lo).to(points.device)  # box -> [0, 1]^3
        inside_box = ((u >= -1e-4) & (u <= 1 + 1e-4)).all(-1)  # rounding at the faces stays in
        idx = torch.minimum((u.clamp(0, 1) * r).long(), r - 1)  # the upper face belongs to the last cell
        return inside_box & self.occupied.to(points.device)[idx[:, 0], idx[:, 1], idx[:, 2]]

    def fraction(self) -> float:
        """Share of the cells kept in the search."""
        return float(self.occupied.float().mean())


@torch.no_grad()
def sphere_trace(field_fn, rays_o, rays_d, box=UNIT_BOX, steps: int = 96, eps: float = 1e-3,
                 step_scale: float = 0.9) -> torch.Tensor:
    """Distance to the first zero of a signed distance field along each ray: (N,), inf where none is found.

    ``step_scale`` < 1 guards against learned fields whose slope exceeds 1 (they would step past the surface).
    """
    t0, t1, hit = box_interval(rays_o, rays_d, box)
    t, out = t0.clone(), torch.full_like(t0, math.inf)
    active = torch.nonzero(hit).squeeze(1)
    for _ in range(steps):
        if active.numel() == 0:
            break
        f = field_fn(rays_o[active] + t[active, None] * rays_d[active]).reshape(-1)
        done = f.abs() < eps
        out[active[done]] = t[active[done]]
        t[active] = t[active] + step_scale * f
        keep = ~done & (t[active] < t1[active]) & (t[active] >= t0[active] - eps)
        active = active[keep]
    return out


@torch.no_grad()
def first_crossing(field_fn, rays_o, rays_d, box=UNIT_BOX, level: float = 0.0, inside: str = "above",
                   n_steps: int = 256, refine: int = 10, block: int = 16, t_range=None, skip=None) -> torch.Tensor:
    """Distance to the first point where the field enters the inside (value above / below ``level``): (N,).

    Each ray's search interval (the box, or ``t_range = (t_start, t_end)`` with t_start = inf to skip a ray) is
    cut into ``n_steps`` fixed steps, taken ``block`` at a time for the rays still searching; then bisection.
    skip: optional empty-space skipping, a callable points (M, 3) -> bool (M,) that is False only where the field
        cannot be inside (a ``CellGrid``); such steps count as outside without calling ``field_fn``. The steps and
        the bisection are the same as without it, so a conservative ``skip`` changes no result.
    """
    sign = 1.0 if inside == "above" else -1.0
    if t_range is None:
        t0, t1, hit = box_interval(rays_o, rays_d, box)
    else:
        t0, t1 = t_range
        hit = torch.isfinite(t0) & (t1 > t0)
        t0, t1 = torch.where(hit, t0, 0.0), torch.where(hit, t1, 0.0)
    dt = (t1 - t0) / n_steps
    out = torch.full_like(t0, math.inf)
    active, k = torch.nonzero(hit).squeeze(1), 0
    lo_t = t0.clone()
    while active.numel() and k < n_steps:
        steps = k + torch.arange(1, block + 1, dtype=t0.dtype, device=t0.device)
        ts = t0[active, None] + dt[active, None] * steps  # (n, block)
        x = rays_o[active, None] + ts[..., None] * rays_d[active, None]
        if skip is None:
            g = sign * (field_fn(x.reshape(-1, 3)).reshape(ts.shape) - level)
        else:  # only the steps in cells that may hold the inside are evaluated; the rest stay outside (-1)
            x = x.reshape(-1, 3)
            may = skip(x)
            g = torch.full((x.shape[0],), -1.0, dtype=t0.dtype, device=t0.device)
            if may.any():
                g[may] = sign * (field_fn(x[may]).reshape(-1).to(t0.dtype) - level)
            g = g.reshape(ts.shape)
        inside_now = (g > 0) & (ts <= t1[active, None])
        found = inside_now.any(1)
        first = inside_now.float().argmax(1)
        a = torch.where(first > 0, ts.gather(1, (first - 1).clamp(min=0)[:, None])[:, 0], lo_t[active])
        b = ts.gather(1, first[:, None])[:, 0]
        idx = active[found]
        a, b = a[found], b[found]
        for _ in range(refine):  # bisection keeps a outside, b inside
            m = 0.5 * (a + b)
            gm = sign * (field_fn(rays_o[idx] + m[:, None] * rays_d[idx]).reshape(-1) - level)
            a, b = torch.where(gm > 0, a, m), torch.where(gm > 0, m, b)
        out[idx] = b
        lo_t[active] = ts[:, -1]
        k += block
        active = active[~found & (ts[:, -1] < t1[active])]
    return out


def field_normals(field_fn, points: torch.Tensor, outward: float = 1.0, h: float = 0.0) -> torch.Tensor:
    """Unit gradient of the field, times ``outward`` (+1 for distances, -1 for occupancy logits): (N, 3).

    h = 0: autograd; h > 0: central differences over h, which averages away the tiny flat facets of a ReLU
    network (its exact gradient is piecewise constant and shades as grain).
    """
    if h > 0:
        with torch.no_grad():
            offsets = h * torch.eye(3, dtype=points.dtype, device=points.device)
            grad = torch.stack([field_fn(points + o).reshape(-1) - field_fn(points - o).reshape(-1)
                                for o in offsets], -1)
    else:
        with torch.enable_grad():
            x = points.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(field_fn(x).sum(), x)
    return outward * torch.nn.functional.normalize(grad, dim=-1)


def shade(t: torch.Tensor, normals: torch.Tensor, rays_d: torch.Tensor, res: int) -> np.ndarray:
    """Normal-map colours on white: (res, res, 3) float32 in [0, 1]. ``normals`` (M, 3) for the finite t."""
    img = torch.ones(t.shape[0], 3)
    hit = torch.isfinite(t)
    n = normals.reshape(-1, 3).cpu().float()
    facing = torch.where(((n * rays_d[hit].cpu()).sum(-1, keepdim=True) > 0), -n, n)  # toward the camera
    img[hit] = 0.5 + 0.5 * facing
    return img.reshape(res, res, 3).numpy()


def render_field(field_fn, res: int = 128, kind: str = "sdf", level: float = 0.0, views=VIEWS,
                 device: str | torch.device = "cpu", chunk: int = 2**16, normal_h: float = 0.0, proxy=None,
                 band: float = 0.03, grid_res: int = 64, n_steps: int = 256) -> list[np.ndarray]:
    """The learned shape from each (azimuth, elevation) view: list of (res, res, 3) images.

    kind: "sdf" (sphere tracing, inside below ``level``) or "occupancy" (first crossing, inside above).
    normal_h: finite-difference step of the normals (0: autograd), see ``field_normals``.
    occupancy: the first crossing over ``n_steps`` steps across the box, with empty-space skipping by a
        ``CellGrid`` of the field on ``grid_res``^3 lattice points, built once for all views (0: no skipping, every
        step evaluated). It finds what the search without skipping finds, independent of any mesh resolution.
    proxy: occupancy only, instead of the grid: a ``mesh.MeshQuery`` of the field's own marching-cubes mesh, the
        crossing searched within ``band`` of the proxy's first hit. Rays that miss the proxy show background, so a
        part thinner than the proxy's grid can vanish: use only with a proxy finer than the preview needs.
    """
    def fn(x):
        return torch.cat([field_fn(c).reshape(-1) for c in x.split(chunk)]) if len(x) else x[:, 0]

    grid = None
    if kind != "sdf" and proxy is None and grid_res:
        grid = CellGrid.from_field(fn, res=grid_res, level=level, inside="above", chunk=chunk, device=device)
    images = []
    for az, el in views:
        o, d = (r.to(device) for r in orbit_rays(res, az, el))
        if kind == "sdf":  # converged within a third of a pixel's footprint at the centre of the scene
            eps = 0.3 * 2 * RADIUS * math.tan(math.radians(FOV) / 2) / res
            t = sphere_trace(lambda x: fn(x) - level, o, d, eps=eps)
        elif proxy is not None:
            t_hit = torch.from_numpy(proxy.cast(torch.cat([o, d], 1).cpu().numpy())[0]).to(device)
            t = first_crossing(fn, o, d, level=level, inside="above", n_steps=16, t_range=(t_hit - band, t_hit + band))
        else:
            t = first_crossing(fn, o, d, level=level, inside="above", n_steps=n_steps, skip=grid)
        hit = torch.isfinite(t)
        pts = o[hit] + t[hit, None] * d[hit]
        n = field_normals(fn, pts, 1.0 if kind == "sdf" else -1.0, normal_h) if hit.any() else torch.zeros(0, 3)
        images.append(shade(t.cpu(), n, d.cpu(), res))
    return images


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
