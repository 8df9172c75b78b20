"""Screened Poisson surface of a NeRF run: ``rwf export mesh RUN --poisson`` (nerfstudio's ``ns-export poisson``).

Data flow, one step per function:
    training rays -> points where they stop, with colours and the camera that saw each (``--pointcloud``'s points,
    :func:`~rwf_render.nerf_export.depth_points`)
    -> statistical outliers dropped (:func:`inliers`), a normal per point from the field (:func:`density_normals`)
    -> open3d's screened Poisson reconstruction (Kazhdan & Hoppe 2013) at octree depth ``--poisson-depth``, then the
       vertices of lowest Poisson density trimmed (``--poisson-trim``) and the mesh cropped to the box
       (:func:`poisson_mesh`)
    -> vertex colours from the radiance field, as the marching-cubes export (:func:`export_poisson`).

Unlike marching cubes on density, the surface does not depend on a density level (``--threshold``): it passes
through the depths the renders show, and the grid is the solver's octree, not ``--res``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import trimesh

from .cli import option_typed
from .errors import UserError
from .signals import import_held

GRAD_FLOOR = 1e-3
"""a density gradient shorter than this fraction of the median one is noise (empty space, outside the box where the
encoding clamps): its point takes the direction towards its camera instead. On the tiny_scene fit of
tests/test_nerf_render_paths.py, -grad sigma agreed with the reference normal better than the camera direction did
above this floor (mean cosine 0.67 against 0.27 between 1e-3 and 1e-2 of the median) and no better below it (0.47
against 0.45 between 1e-6 and 1e-3). Measured on points at sum_i w_i t_i, before they were divided by the opacity;
on a fit of the same settings, 11 of 5626 points fall below the floor since (575 of 5444 before): a point short of
the surface lay in empty space"""
OUTLIER_NEIGHBOURS, OUTLIER_STD = 20, 2.0
"""a point whose mean distance to its 20 nearest points exceeds the mean of that over all points by more than 2
standard deviations is dropped (a floater, or a depth averaged between two surfaces) before the solver sees it"""


def check_options(args) -> None:
    """Refuse option combinations ``--poisson`` would not use (typed at their default value too), before any work."""
    poisson = getattr(args, "poisson", False)
    if not poisson:
        for dest, default in (("poisson_depth", 8), ("poisson_trim", 0.1)):
            if option_typed(args, dest, default):
                raise UserError(f"--{dest.replace('_', '-')} applies to --poisson only")
        return
    if args.pointcloud:
        raise UserError("--poisson and --pointcloud are two exports (a mesh through the points, the points "
                        "themselves); choose one")
    if args.threshold is not None:
        raise UserError("--threshold is the density level of the marching-cubes surface; --poisson's surface passes "
                        "through the rendered depths (--poisson-trim removes what it invents)")
    if option_typed(args, "res", 256):
        raise UserError("--res is the marching-cubes grid; the detail of --poisson is its octree depth, "
                        "--poisson-depth")


def density_normals(density, points: np.ndarray, origins: np.ndarray, chunk: int = 1 << 15,
                    device=None) -> tuple[np.ndarray, int]:
    """Unit normals at points from a density field: n = -grad sigma / |grad sigma|, pointing out of the object (the
    density rises into it). Where the gradient is noise (not finite, or shorter than ``GRAD_FLOOR`` x the median
    length: empty space, where a ray's expected depth fell between two surfaces) the normal is the direction
    towards the camera that saw the point.

    A sound gradient's normal is kept even where it faces away from the camera: on the tiny_scene fit of
    tests/test_nerf_render_paths.py, -grad sigma lay on the side of the reference mesh's normal at 93 % of the
    points; turning those facing away from their camera towards it lowered that to 88 % (Chamfer-L1 of the Poisson
    mesh 0.041 instead of 0.035; measured before the points were divided by the opacity, after which the kept
    normals give 0.032).

    Args:
        density: callable x (M, 3) -> sigma (M,), differentiable in x (``model.field.density``).
        points, origins: (P, 3) the points and the centre of the camera that saw each.
    Returns:
        normals (P, 3) float64 and how many of them are the direction towards the camera.
    """
    grads = []
    with torch.enable_grad():
        for i in range(0, len(points), chunk):
            x = torch.as_tensor(points[i:i + chunk], dtype=torch.float32, device=device).requires_grad_(True)
            (g,) = torch.autograd.grad(density(x).float().sum(), x)
            grads.append(g.detach().double().cpu())
    grad = torch.cat(grads).numpy() if grads else np.zeros((0, 3))
    length = np.linalg.norm(grad, axis=1)
    finite = np.isfinite(length)
    floor = GRAD_FLOOR * float(np.median(length[finite])) if finite.any() else np.inf
    noise = ~finite | (length <= floor) | (length == 0)
    view = np.asarray(origins, np.float64) - np.asarray(points, np.float64)
    view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
    normals = np.where(noise[:, None], view, -np.nan_to_num(grad) / np.where(noise, 1.0, length)[:, None])
    return normals, int(noise.sum())


def inliers(points: np.ndarray) -> np.ndarray:
    """Indices of the points that are not statistical outliers (``OUTLIER_NEIGHBOURS``, ``OUTLIER_STD``; open3d)."""
    o3d = import_held("open3d")

    if len(points) <= OUTLIER_NEIGHBOURS:
        return np.arange(len(points))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    return np.asarray(pcd.remove_statistical_outlier(OUTLIER_NEIGHBOURS, OUTLIER_STD)[1], dtype=np.int64)


def poisson_mesh(points: np.ndarray, normals: np.ndarray, box, depth: int = 8, trim: float = 0.1,
                 threads: int = 1) -> trimesh.Trimesh:
    """Screened Poisson reconstruction (open3d) of oriented points, trimmed and cropped.

    Args:
        points, normals: (P, 3) positions and outward unit normals.
        box: (2, 3) the box to keep; faces with a vertex outside it go.
        depth: octree depth (the finest cell is about the points' extent / 2^depth).
        trim: the fraction of vertices with the lowest Poisson density (the fewest points nearby) to remove: the
            surface the solver invents to close the shape where nothing was seen.
        threads: open3d's solver threads; with more than one its result varies from run to run.
    Returns:
        the mesh (faces wound so that their normals point outwards); empty when nothing is left.
    """
    o3d = import_held("open3d")

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    pcd.normals = o3d.utility.Vector3dVector(np.asarray(normals, np.float64))
    try:  # one thread: with more, open3d's result varies from run to run (8000 to 8002 faces on the tests' scene)
        mesh, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth, n_threads=threads)
    except RuntimeError as e:
        raise UserError(f"open3d's Poisson reconstruction failed at depth {depth}: {e}") from None
    v, f, dens = np.asarray(mesh.vertices), np.asarray(mesh.triangles), np.asarray(dens)
    box = np.asarray(box, np.float64).reshape(2, 3)
    keep = ((v >= box[0]) & (v <= box[1])).all(1)
    if trim > 0 and len(dens):
        keep &= dens >= np.quantile(dens, trim)
    f = f[keep[f].all(1)]
    # open3d leaves a few faces without area and pairs of faces over the same three vertices wound both ways (23 and
    # 2 of 245k on a real export): neither is surface
    if len(f):
        tri = v[f]
        area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        extent = float(np.ptp(v[np.unique(f)], 0).max())  # relative to the surface's size: the same in any units
        f = f[area2 > 1e-12 * extent ** 2]
    if len(f):  # a face listed twice keeps one copy; a pair wound both ways goes (no side of it is outside)
        key = np.sort(f, axis=1)
        parity = ((f[:, 0] > f[:, 1]).astype(int) + (f[:, 0] > f[:, 2]) + (f[:, 1] > f[:, 2])) % 2
        _, first, which = np.unique(key, axis=0, return_index=True, return_inverse=True)
        which = which.reshape(-1)
        ways = np.bincount(np.unique(np.stack([which, parity], 1), axis=0)[:, 0], minlength=len(first))
        f = f[np.sort(first[ways == 1])]
    out = trimesh.Trimesh(v, f, process=False)
    out.remove_unreferenced_vertices()
    return out


def export_poisson(model, box: np.ndarray, out: Path, fmt: str, args) -> int:
    """``rwf export mesh RUN --poisson``: the steps of the module docstring, written to ``out`` in ``fmt``."""
    from .mesh import remove_small_components  # noqa: PLC0415
    from .mesh_io import save_mesh  # noqa: PLC0415
    from .nerf_export import depth_points, vertex_colors, voxel_cov  # noqa: PLC0415

    # 1. where the training rays stop, and who saw each point; floaters out
    points, _, origins = depth_points(model, getattr(args, "num_points", None) or 1_000_000,
                                      progress=not getattr(args, "quiet", False), k=getattr(args, "downscale", None),
                                      box=box)
    keep = inliers(points)
    points, origins = points[keep], origins[keep]
    if len(points) < 16:
        raise UserError(f"{len(points)} points where training rays reach an opaque surface inside the box: too few "
                        "for a Poisson surface")
    # 2. normals from the density field
    normals, from_camera = density_normals(model.field.density, points, origins, device=model.aabb.device)
    # 3. the Poisson surface, trimmed and cropped
    mesh = poisson_mesh(points, normals, box, args.poisson_depth, args.poisson_trim)
    if len(mesh.faces) == 0:
        raise UserError("the Poisson surface has no face left inside the box; try a lower --poisson-trim")
    mesh = remove_small_components(mesh, getattr(args, "min_component", 0.0) or 0.0)
    # 4. colours from the radiance field, read at the octree's finest cell
    cov = voxel_cov(model, (box[1] - box[0]) / 2 ** args.poisson_depth)
    mesh.visual.vertex_colors = vertex_colors(model, mesh, cov=cov)
    save_mesh(mesh, out, fmt)
    print(f"{out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces (Poisson depth {args.poisson_depth} "
          f"from {len(points)} points, {from_camera} of them with the normal towards their camera)")
    return 0
