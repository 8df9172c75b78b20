"""Inside/outside of a triangle mesh by ray parity, in torch on any device, with nothing else installed.

A point is inside a closed surface when a ray from it crosses the surface an odd number of times. Here the rays
run along +z (other directions: rotate the points and the mesh first, as :func:`inside_points` does), so a
crossing is a triangle whose xy projection holds the point's xy, above the point. Work is per (triangle, column)
pair: the triangles are binned by the xy bounding box they cover, and only the pairs that share a bin are tested.

    inside_lattice   the cell centers of a regular lattice (the occupancy grid's solid marking)
    inside_points    any points, with a majority vote over several ray directions (``mesh.MeshQuery`` without
                     open3d); ``union=True`` counts crossings with their sign instead (the winding number along the
                     ray), so that overlapping closed parts make their union rather than cancel

Exact for a watertight mesh, up to points within float rounding of a triangle (coordinates are float64 here).
A ray through an edge or a vertex would count the triangles that share it twice or not at all; lattice columns
are nudged off such alignments, and for scattered points they have measure zero.
"""

from __future__ import annotations

from typing import Sequence

import torch


def crossings(tri: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether the vertical line through each xy point ``p`` (P, 2) crosses triangle ``tri`` (P, 3 corners, 3), and
    at which z: (hit (P,) bool, z (P,)). Degenerate (zero-area) projections never hit."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]

    def edge(u, w):  # twice the signed xy area of (u, w, p)
        return (w[:, 0] - u[:, 0]) * (p[:, 1] - u[:, 1]) - (w[:, 1] - u[:, 1]) * (p[:, 0] - u[:, 0])

    wa, wb, wc = edge(b, c), edge(c, a), edge(a, b)  # barycentric weights of a, b, c times the area
    area = wa + wb + wc
    hit = (((wa >= 0) & (wb >= 0) & (wc >= 0)) | ((wa <= 0) & (wb <= 0) & (wc <= 0))) & (area != 0)
    z = (wa * a[:, 2] + wb * b[:, 2] + wc * c[:, 2]) / torch.where(area != 0, area, 1.0)
    return hit, z


def _expand(count: torch.Tensor, chunk: int):
    """Yield (owner (P,), k (P,)): every k < count[owner] of every owner 0 .. len(count) - 1, in groups of whole
    owners holding about ``chunk`` pairs (at least one owner per group)."""
    ends = torch.cumsum(count, 0)
    start = 0
    while start < len(count):
        stop = max(int(torch.searchsorted(ends, ends[start] - count[start] + chunk)), start + 1)
        ids = torch.arange(start, min(stop, len(count)), device=count.device)
        start = int(ids[-1]) + 1
        n = count[ids]
        owner = torch.repeat_interleave(ids, n)
        yield owner, torch.arange(len(owner), device=count.device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)


def _pairs(first: torch.Tensor, last: torch.Tensor, chunk: int):
    """Yield (triangle index (P,), i (P,), j (P,)) for every column (i, j) in each triangle's index range
    ``first[t] .. last[t]`` (F, 2) (empty where last < first), in groups of about ``chunk`` pairs."""
    span = (last - first + 1).clamp(min=0)  # (F, 2)
    for t, k in _expand(span[:, 0] * span[:, 1], chunk):
        yield t, first[t, 0] + k // span[t, 1], first[t, 1] + k % span[t, 1]


def inside_lattice(vertices: torch.Tensor, faces: torch.Tensor, box: torch.Tensor, res: Sequence[int],
                   chunk: int = 1 << 22) -> torch.Tensor:
    """Flat indices (x-major: ``(i * ry + j) * rz + k``) of the centers of a ``res`` lattice over ``box`` (6,)
    that lie inside the mesh (vertices (V, 3), faces (F, 3)), on the vertices' device.

    Columns are nudged by about 1e-5 of a cell (irrational fractions in x and y) so that a mesh laid out on the
    lattice never puts an edge exactly on a column."""
    rx, ry, rz = (int(r) for r in res)
    dev = vertices.device
    tri = vertices.to(torch.float64)[faces.to(dev)]  # (F, 3, 3)
    lo = box[:3].to(dev, torch.float64)
    size = (box[3:].to(dev, torch.float64) - lo) / torch.tensor([rx, ry, rz], dtype=torch.float64, device=dev)
    nudge = size[:2] * torch.tensor([2**0.5, 3**0.5], dtype=torch.float64, device=dev) * 1e-5
    # per column, the crossings binned by the centers they lie above: bin k + 1 holds those above centers 0..k
    bins = torch.zeros(rx * ry * (rz + 1), dtype=torch.int32, device=dev)
    first = torch.ceil((tri[..., :2].amin(dim=1) - lo[:2] - nudge) / size[:2] - 0.5).long().clamp(min=0)
    last = torch.floor((tri[..., :2].amax(dim=1) - lo[:2] - nudge) / size[:2] - 0.5).long()
    last = torch.minimum(last, torch.tensor([rx - 1, ry - 1], device=dev))
    for t, i, j in _pairs(first, last, chunk):  # the columns under each triangle's xy bounding box
        p = lo[:2] + (torch.stack([i, j], dim=1) + 0.5) * size[:2] + nudge  # (P, 2)
        hit, z = crossings(tri[t], p)
        above = torch.floor((z - lo[2]) / size[2] - 0.5).clamp(-1, rz - 1).long() + 1
        bins += torch.bincount(((i * ry + j) * (rz + 1) + above)[hit], minlength=len(bins)).to(torch.int32)
    above_counts = bins.view(rx * ry, rz + 1).flip(1).cumsum(1).flip(1)[:, 1:]  # crossings above center k
    return torch.nonzero((above_counts % 2 == 1).reshape(-1)).reshape(-1)


def _upward(points: torch.Tensor, tri: torch.Tensor, chunk: int, signed: bool = False) -> torch.Tensor:
    """Crossings of the +z ray from each point (N, 3) with the triangles (F, 3, 3), all float64: (N,) int64.
    ``signed``: each crossing counts +1 where the triangle faces up (leaving a surface whose normals point out)
    and -1 where it faces down, so the sum is the winding number of the surface around the point."""
    dev = points.device
    if len(tri) == 0:
        return torch.zeros(len(points), dtype=torch.int64, device=dev)
    e1, e2 = tri[:, 1, :2] - tri[:, 0, :2], tri[:, 2, :2] - tri[:, 0, :2]
    facing = torch.sign(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).long()  # sign of the normal's z component
    lo, hi = tri.reshape(-1, 3).amin(0)[:2], tri.reshape(-1, 3).amax(0)[:2]
    nb = int(min(max(len(tri) ** 0.5, 1), 512))  # bins per axis: a few triangles per bin on a closed surface
    size = (hi - lo).clamp(min=1e-12) / nb
    first = ((tri[..., :2].amin(dim=1) - lo) / size).floor().long().clamp(0, nb - 1)  # bins each triangle touches
    last = ((tri[..., :2].amax(dim=1) - lo) / size).floor().long().clamp(0, nb - 1)
    t, i, j = (torch.cat(x) for x in zip(*_pairs(first, last, 1 << 62)))  # one group: a few per triangle
    key, order = torch.sort(i * nb + j)
    tri_of_bin = t[order]  # triangle ids sorted by bin
    edges = torch.searchsorted(key, torch.arange(nb * nb + 1, device=dev))
    start, count = edges[:-1], edges[1:] - edges[:-1]
    cell = ((points[:, :2] - lo) / size).floor().long()
    held = ((cell >= 0) & (cell < nb)).all(1)
    b = cell[:, 0].clamp(0, nb - 1) * nb + cell[:, 1].clamp(0, nb - 1)
    n = torch.where(held, count[b], 0)  # candidate triangles per point
    out = torch.zeros(len(points), dtype=torch.int64, device=dev)
    for pt, k in _expand(n, chunk):  # (point, candidate) pairs, about ``chunk`` at a time
        t = tri_of_bin[start[b[pt]] + k]
        hit, z = crossings(tri[t], points[pt, :2])
        up = hit & (z > points[pt, 2])
        if signed:
            out.index_add_(0, pt[up], facing[t[up]])
        else:
            out += torch.bincount(pt[up], minlength=len(points))
    return out


def rotation_to_z(direction: torch.Tensor) -> torch.Tensor:
    """A rotation matrix R (3, 3), float64, with R @ direction / |direction| = +z."""
    d = direction.to(torch.float64) / direction.norm()
    helper = torch.tensor([1.0, 0.0, 0.0] if abs(float(d[0])) < 0.9 else [0.0, 1.0, 0.0], dtype=torch.float64,
                          device=d.device)
    u = torch.linalg.cross(helper, d)
    u = u / u.norm()
    return torch.stack([u, torch.linalg.cross(d, u), d])  # rows: x', y', z' = d


def inside_points(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                  directions: torch.Tensor | None = None, chunk: int = 1 << 22, union: bool = False) -> torch.Tensor:
    """Whether each point (N, 3) lies inside the mesh (vertices (V, 3), faces (F, 3)): (N,) bool, on the points'
    device. Rays along each of ``directions`` (D, 3) (default: +z only) vote by parity; a strict majority of odd
    counts means inside. ``union``: a ray votes inside when its signed crossings sum to 1 or more (closed parts
    wound outward: inside their union; a cavity's wall wound inward takes its part out)."""
    dev = points.device
    p = points.to(torch.float64)
    tri = vertices.to(dev, torch.float64)[faces.to(dev)]  # (F, 3, 3)
    directions = torch.tensor([[0.0, 0.0, 1.0]]) if directions is None else torch.as_tensor(directions)
    votes = torch.zeros(len(p), dtype=torch.int64, device=dev)
    for d in directions.to(dev, torch.float64):
        r = rotation_to_z(d)
        count = _upward(p @ r.T, tri @ r.T, chunk, signed=union)
        votes += (count >= 1) if union else count % 2
    return 2 * votes > len(directions)
