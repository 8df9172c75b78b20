"""The scene box of a posed-image dataset (:func:`scene_box`), and whether cameras see it (:func:`box_coverage`).

An explicit ``"aabb": [[x0, y0, z0], [x1, y1, z1]]`` if present; otherwise instant-ngp's rule: ngp maps file
coordinates p to p * scale + offset (defaults 0.33 and 0.5); its finest occupancy grid spans the unit cube centred
at 0.5 and ``aabb_scale`` (a power of two) sets how far the scene reaches beyond it: 1 + log2(aabb_scale)
cascades, each doubling the cube (Müller et al. 2022, section 5.1). So in file coordinates the scene box is that
unit cube, center (0.5 - offset) / scale and half-width 0.5 / scale (about +-1.5 for the Blender scenes, which fits
them), and :func:`box_cascades` says how many cascades the file asks for; the fit's occupancy grid takes at least
that many (``--grid-levels``), so the grid resolves the cube while it reaches the whole scene (one box of side
aabb_scale instead spread one 128^3 grid over 16 times the object's width for aabb_scale 16), and the field's
encoding spans the whole reach (:func:`rwf_render.nerf_options.cascade_profile`). An ``aabb_scale`` under 1 shrinks
the box itself. A file written by nerfstudio's
``ns-process-data`` (it records ``applied_transform``) that gives none of those keys is in the capture's own units,
which nerfstudio's loader normalizes: its box comes from the sparse points it names (``ply_file_path``) by the rule
``rwf data colmap`` normalizes scenes with (:func:`sparse_points_box`: the bulk of the points, :func:`bulk_cube`,
in instant-ngp's box for the aabb_scale that holds 95 % of them, :func:`holding_scale`), else it is centred on the
mean camera position with half-width the cameras' largest distance from it (:func:`camera_box`, over every frame of
the file, so all splits share it), as nerfstudio's box [-1, 1]^3 after its centring and scaling. A box that float32
positions cannot resolve (a diagonal beyond 1e12, a side under 1e-6 or 1e-5 of its distance from the origin) is
refused.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from .cameras import Cameras, pixel_grid, pixel_rays
from .errors import RwfWarning, UserError
from .frames import _num, pose_matrix


MAX_CASCADES = 16
"""most occupancy cascades (``--grid-levels``), so the largest ``aabb_scale`` is 2^15 (instant-ngp's: 128)"""
MAX_BOX = 1e12  # largest scene box diagonal: the field works in float32, whose squares overflow near 1.8e19
MIN_BOX = 1e-6  # smallest side of the scene box, and 1e-5 of its distance from the origin (float32 resolution)


def _renderable(box: np.ndarray, source: str) -> torch.Tensor:
    """``box`` (2, 3) as a tensor, or UserError when float32 positions cannot resolve it: a box so large that the
    marcher's step and near plane overflow, so small or so far from the origin that its sides round to nothing
    (training then ran on no samples, or stopped with a traceback)."""
    side, reach = box[1] - box[0], float(np.abs(box).max())
    diagonal = float(np.linalg.norm(side))
    if diagonal > MAX_BOX:
        raise UserError(f"the scene box ({source}) is {diagonal:.3g} units across, more than {MAX_BOX:g}: "
                        "check the dataset's units")
    if side.min() < max(MIN_BOX, 1e-5 * reach):
        raise UserError(f"the scene box ({source}) is {side.min():.3g} units on its shortest side at {reach:.3g} "
                        f"from the origin: too small for float32 positions (at least {MIN_BOX:g}, and 1e-5 of its "
                        "distance from the origin); check the dataset's units, or centre the scene")
    return torch.from_numpy(box)


BOX_KEYS = ("aabb", "aabb_scale", "scale", "offset")
"""top-level keys that place the scene box; a nerfstudio file without any of them gets its box from the cameras"""


def camera_box(frames) -> np.ndarray | None:
    """(2, 3) box of nerfstudio's dataparser for the cameras of ``frames`` (a transforms.json's list): centred on
    their mean position, half-width their largest distance from it (nerfstudio centres the poses on their mean and
    scales the largest coordinate to 1, then uses the box [-1, 1]^3; a distance rather than a coordinate here, as its
    rotation of the poses is not applied). None where fewer than two cameras have distinct positions."""
    positions = []
    for frame in frames:
        try:
            positions.append(pose_matrix(frame["transform_matrix"], "")[:3, 3])
        except (UserError, TypeError, KeyError):
            continue  # the frame's own parse names the problem
    if len(positions) < 2:
        return None
    p = np.stack(positions)
    center = p.mean(0)
    half = float(np.linalg.norm(p - center, axis=-1).max())
    return np.stack([center - half, center + half]) if half > 0 else None


NGP_HALF = 0.5 / 0.33
"""half-width of instant-ngp's scene box per unit of ``aabb_scale`` at its default scale (0.33) and offset (0.5)"""


def bulk_cube(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and half-width of the bulk of ``points`` (M, 3): per axis their 2nd to 98th percentile, as a
    cube (half-width 0 for points that do not spread)."""
    lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
    return (lo + hi) / 2, float(np.max(hi - lo) / 2)


def holding_scale(r: np.ndarray, keep: float = 0.95, max_scale: int = 128) -> int:
    """The smallest power of two ``aabb_scale`` (at most ``max_scale``) whose instant-ngp box, half-width
    ``NGP_HALF * aabb_scale``, holds the fraction ``keep`` of points at Chebyshev distances ``r`` from its centre."""
    aabb_scale = 1
    while aabb_scale < max_scale and (r <= NGP_HALF * aabb_scale).mean() < keep:
        aabb_scale *= 2
    return aabb_scale


MIN_BOX_POINTS = 8
"""fewer points in a nerfstudio file's ``ply_file_path`` than this: its box comes from the cameras"""


def sparse_points_box(meta: dict, folder: Path | None) -> np.ndarray | None:
    """(2, 3) box of the sparse points of a nerfstudio file (``ply_file_path``, relative to ``folder``, as
    ``ns-process-data`` and ``rwf data colmap`` write it), by the rule ``rwf data colmap`` normalizes a scene with
    (:func:`data_tools.common.normalize_scene`): about the centre of their bulk (:func:`bulk_cube`, half-width h),
    instant-ngp's box for the aabb_scale that holds 95 % of them (:func:`holding_scale`), half-width
    NGP_HALF x aabb_scale x h. None where the file names no points; a warning and None where they cannot be read
    or are too few (the cameras' box then)."""
    name = meta.get("ply_file_path")
    if not isinstance(name, str) or not name or folder is None:
        return None
    path = Path(folder) / name
    try:
        import trimesh  # noqa: PLC0415

        with open(path, "rb") as f:
            points = np.asarray(trimesh.load(f, file_type="ply", process=False).vertices, dtype=np.float64)
    except Exception as e:  # missing, unreadable, not a PLY: the box from the cameras still works
        warnings.warn(f"{path}: the sparse points (ply_file_path) cannot be read ({type(e).__name__}: {e}); the "
                      "scene box comes from the cameras", RwfWarning, stacklevel=3)
        return None
    points = points[np.isfinite(points).all(axis=1)] if points.ndim == 2 and points.shape[1:] == (3,) else points[:0]
    center, half = bulk_cube(points) if len(points) >= MIN_BOX_POINTS else (None, 0.0)
    if not half > 1e-12:
        warnings.warn(f"{path}: {len(points)} sparse points that span no volume; the scene box comes from the "
                      "cameras", RwfWarning, stacklevel=3)
        return None
    r = NGP_HALF * holding_scale(np.abs(points - center).max(axis=1) / half) * half
    return np.stack([center - r, center + r])


def box_from_cameras(meta: dict) -> bool:
    """Whether a transforms.json's box comes from its cameras: a file written by nerfstudio's ``ns-process-data``
    (it records ``applied_transform``) that places no box (none of BOX_KEYS). Its poses are in the capture's own
    units (COLMAP's), which nerfstudio's loader normalizes; instant-ngp's default box (+-1.5) would miss most of
    the scene."""
    return "applied_transform" in meta and not any(k in meta for k in BOX_KEYS)


def scene_box(meta: dict, frames=None, folder: Path | None = None) -> torch.Tensor:
    """(2, 3) float64 scene box of a dataset's top-level metadata and, for a nerfstudio file without box keys, its
    sparse points (``ply_file_path`` relative to ``folder``) or else its ``frames`` (rule in the module
    docstring)."""
    if frames is not None and box_from_cameras(meta):
        box = sparse_points_box(meta, folder)
        if box is not None:
            return _renderable(box, "from the sparse points (ply_file_path)")
        box = camera_box(frames)
        if box is not None:
            return _renderable(box, "from the cameras, as nerfstudio's loader")
    if "aabb" in meta:
        try:
            box = np.asarray(meta["aabb"], dtype=np.float64)
        except (TypeError, ValueError):
            box = np.zeros(0)
        if box.shape != (2, 3) or not np.isfinite(box).all() or not (box[1] > box[0]).all():
            raise UserError(f"aabb must be [[x0, y0, z0], [x1, y1, z1]] with x1 > x0 etc., got {meta['aabb']}")
        return _renderable(box, "aabb")
    scale = _num(meta.get("scale", 0.33), "scale")
    try:
        offset = np.broadcast_to(np.asarray(meta.get("offset", 0.5), dtype=np.float64), (3,))
    except (TypeError, ValueError):
        offset = np.full(3, np.nan)
    if not np.isfinite(offset).all():
        raise UserError(f"offset must be a number or [x, y, z], got {meta.get('offset')!r}")
    aabb_scale = _aabb_scale(meta)
    if scale <= 0:
        raise UserError("scale must be positive")
    center, half = (0.5 - offset) / scale, 0.5 * min(aabb_scale, 1.0) / scale
    source = "instant-ngp's unit cube, from scale and offset" if aabb_scale >= 1 else \
        "from aabb_scale, scale and offset"
    box = _renderable(np.stack([center - half, center + half]), source)
    _renderable(outer_box(box, box_cascades(meta)).numpy(), "reached by aabb_scale's cascades")
    return box


def _aabb_scale(meta: dict) -> float:
    aabb_scale = _num(meta.get("aabb_scale", 1), "aabb_scale")
    if not aabb_scale > 0:
        raise UserError("aabb_scale must be positive")
    if aabb_scale > 2 ** (MAX_CASCADES - 1):
        raise UserError(f"aabb_scale {aabb_scale:g} reaches beyond {MAX_CASCADES} cascades (at most "
                        f"{2 ** (MAX_CASCADES - 1)}; instant-ngp's largest is 128): check the dataset's units")
    return aabb_scale


def box_cascades(meta: dict) -> int:
    """The occupancy cascades a transforms.json's ``aabb_scale`` asks for (instant-ngp's rule, module docstring):
    1 + ceil(log2(aabb_scale)) when the box is instant-ngp's unit cube and aabb_scale exceeds 1, else 1 (an explicit
    ``aabb``, a nerfstudio file whose box comes from its points or cameras)."""
    if "aabb" in meta or box_from_cameras(meta):
        return 1
    aabb_scale = _aabb_scale(meta)
    return 1 if aabb_scale <= 1 else 1 + math.ceil(math.log2(aabb_scale) - 1e-9)


def outer_box(box: torch.Tensor, levels: int) -> torch.Tensor:
    """(2, 3) the box (2, 3) grown about its centre by 2^(levels - 1): what an occupancy grid of ``levels``
    cascades over ``box`` reaches."""
    box = torch.as_tensor(box).reshape(2, 3)
    center, half = box.mean(0), (box[1] - box[0]) / 2 * 2.0 ** (levels - 1)
    return torch.stack([center - half, center + half])


BOX_GRID = 9  # rays per image side used to test whether a camera sees the scene box


def ray_box_hits(rays_o: torch.Tensor, rays_d: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """(R,) bool: does the ray (t > 0) meet the axis-aligned box (2, 3)? Slab method."""
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0, t1 = (box[0] - rays_o) * inv, (box[1] - rays_o) * inv
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    return (far >= near.clamp_min(0)) & (far > 0)


def box_coverage(cams: Cameras, box: torch.Tensor, grid: int = BOX_GRID) -> torch.Tensor:
    """(N,) float64 fraction of a ``grid`` x ``grid`` lattice of each camera's pixels whose rays meet ``box``
    (2, 3): 0 for a camera that sees none of the scene (its rays would train nothing)."""
    cams = cams.to(dtype=torch.float64)
    frac = pixel_grid(grid, grid, torch.float64).reshape(-1, 2) / grid  # (G*G, 2) fractions of width and height
    pix = frac[None] * torch.stack([cams.width, cams.height], -1)[:, None].double()  # (N, G*G, 2)
    o, d = pixel_rays(cams, pix.reshape(-1, 2), torch.arange(len(cams)).repeat_interleave(grid * grid))
    return ray_box_hits(o, d, box.to(torch.float64)).reshape(len(cams), -1).double().mean(-1)
