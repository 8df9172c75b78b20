"""The occupancy grid: which cells of an axis-aligned box (and of its cascades) may hold anything.

Level c of ``levels`` cascades covers the box scaled by 2^c about its center, with the same number of cells, so
each level doubles the reach and the cell size. A point belongs to the finest level that holds it. Per cell the grid
keeps a float ``density`` (a running max of the field's density, decayed on every update) and a boolean
``occupancy`` that the marcher reads; ``allowed`` marks cells that may ever be occupied (see
:meth:`OccupancyGrid.restrict_to_frusta`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..evalchunk import eval_chunk
from ..parity import inside_lattice
from ..signals import import_held
from . import _backend
from .composite import MAX_THICKNESS as _MAX_CELL_THICKNESS
from .march import GridSpec, RaySamples, _cells_of_points, march, mip_pyramid

_EVAL_CHUNK = 1 << 18


class OccupancyGrid(nn.Module):
    """Occupancy over ``aabb`` with ``levels`` cascades of ``resolution`` cells per axis each.

    Args:
        aabb: (xmin, ymin, zmin, xmax, ymax, zmax) of level 0.
        resolution: cells per axis, an int or 3 ints; even, and divisible by 4 when ``levels > 1`` (so every
            coarse cell lies entirely inside or outside the next finer level's box).
        levels: number of cascades (1: the box only).
        backend: default marcher backend for :meth:`sampling`: "auto" | "cuda" | "cpu" | "torch".
    Buffers (saved in ``state_dict``): ``aabb`` (6,), ``density`` and ``occupancy`` and ``allowed``, each
    (levels, rx, ry, rz).

    Example:
        >>> grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=64)
        >>> grid.update(0, lambda x: 10.0 * (x.norm(dim=-1) < 0.5).float(), step_size=0.01)
        True
        >>> grid.query(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]]))[0].tolist()
        [True, False]
    """

    def __init__(self, aabb: Sequence[float] | torch.Tensor, resolution: int | Sequence[int] = 128, levels: int = 1,
                 backend: str = "auto"):
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(-1)
        res = (resolution,) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
        if aabb.shape[0] != 6 or not bool((aabb[3:] > aabb[:3]).all()) or not bool(torch.isfinite(aabb).all()):
            raise ValueError(f"aabb must be (xmin, ymin, zmin, xmax, ymax, zmax), finite, with max > min, got "
                             f"{aabb.tolist()}")
        if len(res) != 3 or any(r < 2 or r % 2 for r in res):
            raise ValueError(f"resolution must be even and >= 2 per axis, got {resolution}")
        if levels < 1 or levels > 16 or (levels > 1 and any(r % 4 for r in res)):
            raise ValueError(f"levels must be 1..16, and with levels > 1 the resolution divisible by 4 "
                             f"(got levels={levels}, resolution={resolution})")
        self.resolution, self.levels, self.backend = res, levels, backend
        self.register_buffer("aabb", aabb)
        self.register_buffer("density", torch.zeros(levels, *res))
        self.register_buffer("occupancy", torch.zeros(levels, *res, dtype=torch.bool))
        self.register_buffer("allowed", torch.ones(levels, *res, dtype=torch.bool))

    # -- geometry -----------------------------------------------------------------------------------------------

    @property
    def n_cells(self) -> int:
        return self.occupancy.numel()

    def spec(self) -> GridSpec:
        """What the marcher reads: occupancy as uint8, level-0 corner, cells per unit length (float32) and the
        empty-space pyramid (cached until the occupancy changes), and the box also as Python floats (cached until
        the box changes), so that a march on a GPU does not wait to read them back."""
        box_key = (self.aabb._version, self.aabb.data_ptr(), self.aabb.device)
        if getattr(self, "_box_cache", (None,))[0] != box_key:
            lo, hi = self.aabb[:3].clone(), self.aabb[3:]
            scale = torch.tensor(self.resolution, dtype=torch.float32, device=lo.device) / (hi - lo)
            self._box_cache = (box_key, lo, scale, (tuple(lo.tolist()), tuple(scale.tolist())))
        key = (self.occupancy._version, self.occupancy.data_ptr(), self.occupancy.device)
        if getattr(self, "_spec_cache", (None,))[0] != key:
            occ = self.occupancy.to(torch.uint8)
            self._spec_cache = (key, occ, mip_pyramid(occ))
        _, lo, scale, host = self._box_cache
        return GridSpec(self._spec_cache[1], lo, scale, self._spec_cache[2], host)

    def _apply(self, fn, *args, **kwargs):
        """A move (``.to``, ``.cuda``) makes new buffers: the cached spec is dropped, as its key (version, address)
        could match a new tensor at a reused address (CUDA's allocator hands freed blocks back)."""
        self.__dict__.pop("_spec_cache", None)
        self.__dict__.pop("_box_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def level_aabbs(self) -> torch.Tensor:
        """(levels, 6) boxes of the cascades."""
        center, half = (self.aabb[:3] + self.aabb[3:]) / 2, (self.aabb[3:] - self.aabb[:3]) / 2
        grow = 2.0 ** torch.arange(self.levels, dtype=torch.float32, device=self.aabb.device)[:, None]
        return torch.cat([center - half * grow, center + half * grow], dim=1)

    def cell_points(self, flat: torch.Tensor, jitter: torch.Tensor | None = None) -> torch.Tensor:
        """World positions in cells ``flat`` (M,) (indices into ``occupancy.view(-1)``): centers, or at
        ``jitter`` (M, 3) in [0, 1)^3 within the cell."""
        rx, ry, rz = self.resolution
        idx = torch.stack([flat // (rx * ry * rz), flat // (ry * rz) % rx, flat // rz % ry, flat % rz], dim=1)
        boxes = self.level_aabbs()[idx[:, 0]]  # (M, 6)
        res = torch.tensor(self.resolution, dtype=torch.float32, device=flat.device)
        frac = idx[:, 1:].float() + (0.5 if jitter is None else jitter)  # (M, 3) in cell units
        return boxes[:, :3] + frac * (boxes[:, 3:] - boxes[:, :3]) / res

    def cells_of(self, points: torch.Tensor):
        """(level (N,) int64, -1 outside every level; flat cell index (N,)) of each point, as the marcher sees it."""
        return _cells_of_points(self.spec(), points.float())

    # -- queries and marking ------------------------------------------------------------------------------------

    def query(self, points: torch.Tensor):
        """``occupied (N,) bool, density (N,)`` at points (N, 3); False / 0 outside the grid."""
        level, flat = self.cells_of(points)
        inside = level >= 0
        return self.occupancy.view(-1)[flat] & inside, torch.where(inside, self.density.view(-1)[flat], 0.0)

    def visible(self) -> torch.Tensor:
        """(levels, rx, ry, rz) bool: the cells a marcher can reach. Level c > 0 holds level c - 1's box in the
        middle half of each axis; those cells are never marched (a point belongs to the finest level holding it)."""
        vis = torch.ones_like(self.occupancy)
        vis[(slice(1, None),) + tuple(slice(r // 4, 3 * r // 4) for r in self.resolution)] = False
        return vis

    @property
    def occupied_fraction(self) -> float:
        """Occupied cells over the cells a marcher can reach (:meth:`visible`): with cascades, a coarse level's
        cells inside the finer levels are not counted, marked or not."""
        if self.levels == 1:
            return float(self.occupancy.float().mean())
        vis = self.visible()
        return float((self.occupancy & vis).sum()) / max(int(vis.sum()), 1)

    @torch.no_grad()
    def fill_(self, occupied: bool = True) -> "OccupancyGrid":
        """Mark every allowed cell occupied (or every cell empty)."""
        self.occupancy.copy_(self.allowed if occupied else torch.zeros_like(self.occupancy))
        return self

    @torch.no_grad()
    def mark_points(self, points: torch.Tensor, density: float | None = None) -> int:
        """Mark the cells holding ``points`` (N, 3) occupied (and raise their density to ``density``, if given, so
        later updates keep them). Returns how many cells are newly occupied."""
        level, flat = self.cells_of(points.to(self.aabb.device))
        flat = flat[level >= 0]
        return self._mark(flat, density)

    def _mark(self, flat: torch.Tensor, density: float | None) -> int:
        occ = self.occupancy.view(-1)
        flat = flat[self.allowed.view(-1)[flat]]
        before = int(occ.sum())
        occ[flat] = True
        if density is not None:
            self.density.view(-1)[flat] = self.density.view(-1)[flat].clamp(min=density)
        return int(occ.sum()) - before

    @torch.no_grad()
    def mark_mesh(self, vertices: torch.Tensor, faces: torch.Tensor, solid: bool = False,
                  density: float | None = None, inside_method: str = "auto") -> int:
        """Mark the cells a triangle mesh passes through, and with ``solid`` also the cells whose centers lie inside
        it (the mesh should be watertight). Returns how many cells are newly occupied.

        The surface is sampled on a barycentric lattice at most a quarter of a finest cell apart, so a cell that
        the surface only grazes (less than about that much) may stay empty. Inside is decided by open3d's
        occupancy query (a vote of 3 rays) when open3d is installed, else by ``parity.inside_lattice`` (one ray
        per cell center along +z, in torch on the grid's device); ``inside_method`` = "open3d" | "parity" picks one.
        """
        v = torch.as_tensor(vertices, dtype=torch.float32, device=self.aabb.device)
        f = torch.as_tensor(faces, dtype=torch.long, device=self.aabb.device)
        spacing = float(((self.aabb[3:] - self.aabb[:3]) / torch.tensor(self.resolution, device=v.device)).min()) / 4
        added = self.mark_points(_surface_points(v, f, spacing), density)
        if solid:
            added += self._mark(self._inside_mesh(v, f, inside_method), density)
        return added

    def _inside_mesh(self, v: torch.Tensor, f: torch.Tensor, method: str = "auto") -> torch.Tensor:
        """Flat indices of the cells whose centers lie inside the mesh (v, f)."""
        if method not in ("auto", "open3d", "parity"):
            raise ValueError(f"inside_method must be 'auto', 'open3d' or 'parity', got {method!r}")
        try:
            o3d = import_held("open3d")  # optional: the parity test below needs nothing
        except ImportError as e:
            if method == "open3d":
                raise ImportError(f"inside_method='open3d' needs open3d ({e}); pip install open3d-cpu") from None
            method = "parity"
        if method == "parity":
            boxes = self.level_aabbs()
            per_level = self.occupancy[0].numel()
            return torch.cat([level * per_level + inside_lattice(v, f, boxes[level], self.resolution)
                              for level in range(self.levels)])
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(v.cpu().numpy()), o3d.core.Tensor(f.cpu().numpy().astype("uint32")))
        inside = []
        for chunk in torch.arange(self.n_cells, device=v.device).split(1 << 20):
            centers = self.cell_points(chunk).cpu().numpy()
            occ = scene.compute_occupancy(o3d.core.Tensor(centers), nsamples=3).numpy()
            inside.append(chunk[torch.from_numpy(occ).to(v.device) > 0.5])
        return torch.cat(inside)

    @torch.no_grad()
    def cells_in_frusta(self, c2w: torch.Tensor, intrinsics, near: float, far: float) -> torch.Tensor:
        """Cells whose centers some camera sees at a depth in [near, far]: (levels, rx, ry, rz) bool.

        Args:
            c2w: (N, 4, 4) or (N, 3, 4) camera-to-world, OpenGL convention (the camera looks down -Z, +Y up).
            intrinsics: (fx, fy, cx, cy, width, height), or (N, 6) per camera; pixel (0, 0) is the top-left
                corner of the image.
        """
        c2w = torch.as_tensor(c2w, dtype=torch.float32, device=self.aabb.device)[:, :3, :4]
        K = torch.as_tensor(intrinsics, dtype=torch.float32, device=c2w.device).reshape(-1, 6)
        K = K.expand(c2w.shape[0], 6)
        rot_t, eye = c2w[:, :3, :3].transpose(1, 2), c2w[:, :3, 3]  # world -> camera: R^T (x - eye)
        seen = torch.zeros(self.n_cells, dtype=torch.bool, device=c2w.device)
        for chunk in torch.arange(self.n_cells, device=c2w.device).split(1 << 16):
            x = self.cell_points(chunk)  # (M, 3)
            p = torch.einsum("nij,nmj->nmi", rot_t, x[None] - eye[:, None])  # (N, M, 3) camera coordinates
            depth = -p[..., 2]
            safe = depth.clamp(min=1e-9)
            u = K[:, None, 0] * p[..., 0] / safe + K[:, None, 2]
            v = -K[:, None, 1] * p[..., 1] / safe + K[:, None, 3]
            ok = (depth >= near) & (depth <= far) & (u >= 0) & (u < K[:, None, 4]) & (v >= 0) & (v < K[:, None, 5])
            seen[chunk] = ok.any(dim=0)
        return seen.view_as(self.occupancy)

    @torch.no_grad()
    def mark_frusta(self, c2w: torch.Tensor, intrinsics, near: float, far: float) -> int:
        """Mark every cell some camera sees (see :meth:`cells_in_frusta`) occupied; returns how many are new."""
        return self._mark(self.cells_in_frusta(c2w, intrinsics, near, far).view(-1).nonzero()[:, 0], None)

    @torch.no_grad()
    def restrict_to_frusta(self, c2w: torch.Tensor, intrinsics, near: float, far: float) -> None:
        """Cells no camera sees become empty for good: updates skip them and never mark them."""
        self.allowed &= self.cells_in_frusta(c2w, intrinsics, near, far)
        self.occupancy &= self.allowed
        self.density[~self.allowed] = 0.0

    # -- updates from a density field ---------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[torch.Tensor], torch.Tensor], step_size: float,
               occ_thre: float = 0.01, ema_decay: float = 0.95, warmup_steps: int = 256, every_n: int = 16,
               generator: torch.Generator | None = None) -> bool:
        """Refresh the grid from ``density_fn(points (M, 3)) -> densities (M,)`` (instant-ngp's schedule, as in
        nerfacc's ``OccGridEstimator``). Call it every training step; it acts every ``every_n`` steps.

        Which cells: all of them while ``step < warmup_steps``; afterwards a random quarter of all cells plus as
        many of the occupied ones (all of them when fewer: each occupied cell of a sparse grid decays at every
        update, so a floater the field dropped empties after 90 updates, as in nerfacc and instant-ngp). Each is
        evaluated at one uniformly jittered point; its density becomes max(density * ema_decay, new). A cell is
        occupied when its optical thickness density * step_size exceeds min(occ_thre, mean thickness over the
        allowed cells).

        Returns whether the grid was updated.
        """
        if step % every_n != 0:
            return False
        allowed = self.allowed.view(-1)
        if step < warmup_steps:
            cells = allowed.nonzero()[:, 0]
        else:
            all_cells = allowed.nonzero()[:, 0]
            occupied = self.occupancy.view(-1).nonzero()[:, 0]
            pick = [all_cells[_randperm(all_cells.numel(), generator, all_cells.device)[: all_cells.numel() // 4]],
                    occupied[_randperm(occupied.numel(), generator, occupied.device)[: all_cells.numel() // 4]]]
            cells = torch.unique(torch.cat(pick))
        density = self.density.view(-1)
        # a NaN kept by maximum (or an inf, which never decays) stayed for good, and its mean switched the adaptive
        # threshold off for the whole grid: NaN counts as empty, an inf as the most a cell can hold
        cap = _MAX_CELL_THICKNESS / step_size
        for chunk in cells.split(eval_chunk(density.device, _EVAL_CHUNK)):
            jitter = _rand((chunk.numel(), 3), generator, chunk.device)
            sigmas = density_fn(self.cell_points(chunk, jitter)).reshape(-1).to(density.dtype)
            if sigmas.numel() != chunk.numel():
                raise ValueError(f"density_fn returned {sigmas.numel()} densities for {chunk.numel()} points")
            sigmas = torch.nan_to_num(sigmas, nan=0.0, posinf=cap, neginf=0.0).clamp(0.0, cap)
            density[chunk] = torch.maximum(density[chunk] * ema_decay, sigmas)
        thickness = self.density * step_size
        threshold = min(occ_thre, float(thickness[self.allowed].mean())) if bool(self.allowed.any()) else occ_thre
        self.occupancy.copy_((thickness > threshold) & self.allowed)
        return True

    # -- marching -----------------------------------------------------------------------------------------------

    def sampling(self, rays_o: torch.Tensor, rays_d: torch.Tensor, backend: str | None = None, **kwargs) -> RaySamples:
        """March rays through this grid: :func:`rwf_render.raymarch.march` (same keyword arguments)."""
        return march(self.spec(), rays_o, rays_d, backend=self.backend if backend is None else backend, **kwargs)

    def extra_repr(self) -> str:
        loaded = [k for k in _backend.KINDS if _backend._loaded.get(k) is not None]
        return (f"aabb={[round(float(a), 4) for a in self.aabb]}, resolution={self.resolution}, "
                f"levels={self.levels}, backend={self.backend}, compiled={loaded or 'none loaded yet'}, "
                f"occupied={self.occupied_fraction:.4f}")


def _randperm(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    if generator is not None and generator.device.type != torch.device(device).type:  # e.g. a CPU generator
        return torch.randperm(n, generator=generator).to(device)
    return torch.randperm(n, generator=generator, device=device)


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    if generator is not None and generator.device.type != torch.device(device).type:
        return torch.rand(shape, generator=generator).to(device)
    return torch.rand(shape, generator=generator, device=device)


def _surface_points(v: torch.Tensor, f: torch.Tensor, spacing: float) -> torch.Tensor:
    """Points on every triangle of (v, f) on a barycentric lattice with spacing <= ``spacing``: (P, 3)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]  # (F, 3) each
    longest = torch.stack([(b - a).norm(dim=1), (c - b).norm(dim=1), (a - c).norm(dim=1)], dim=1).amax(dim=1)
    splits = torch.ceil(longest / spacing).clamp(min=1).long()  # (F,) lattice divisions per triangle
    out = []
    for n in torch.unique(splits).tolist():  # triangles with the same lattice, together
        tri = (splits == n).nonzero()[:, 0]
        i, j = torch.meshgrid(torch.arange(n + 1, device=v.device), torch.arange(n + 1, device=v.device),
                              indexing="ij")
        ij = torch.stack([i.reshape(-1), j.reshape(-1)], dim=1)
        ij = ij[ij.sum(dim=1) <= n].float() / n  # (B, 2) barycentric (s, t), s + t <= 1
        for part in tri.split(max(1, (1 << 22) // ij.shape[0])):
            pa, e1, e2 = a[part, None], (b - a)[part, None], (c - a)[part, None]  # (T, 1, 3)
            out.append((pa + ij[None, :, :1] * e1 + ij[None, :, 1:] * e2).reshape(-1, 3))
    return torch.cat(out) if out else v.new_zeros(0, 3)
