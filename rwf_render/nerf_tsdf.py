"""TSDF fusion of a NeRF run's renders: ``rwf export mesh RUN --tsdf`` (nerfstudio's ``ns-export tsdf``).

Data flow, one step per function:
    training cameras (every one, or ``--tsdf-views`` of them evenly spaced) -> undistorted pinhole cameras with each
    camera's focal lengths and principal point (:func:`pinhole_cameras`), at about ``RENDER_SIZE`` pixels across or
    1 / ``--downscale``
    -> the run's colour, expected depth and opacity from each (``NeRFModel.render_camera``)
    -> z-depth maps: the expected depth is a distance along unit rays (``sum_i w_i t_i``, not divided by the
       opacity); divided by the opacity and by the length of the pixel's z-depth-1 direction it is the z-depth
       open3d reads. Pixels of opacity below 0.5, or whose point lies outside the box, are left out (depth 0)
       (:func:`depth_frames`)
    -> a TSDF (Curless & Levoy 1996) in open3d's sparse ``VoxelBlockGrid`` with voxels of ``--tsdf-voxel``
       (default: box diagonal / ``VOXELS_PER_DIAGONAL``) and a truncation of ``TRUNC_VOXELS`` voxels, its
       marching-cubes mesh cropped to the box, coloured by the fused renders (:func:`fuse`)
    -> written atomically in ``--format`` (:func:`export_tsdf`).

open3d integrates pinhole images only, so a distorted (OPENCV) or fisheye camera is rendered as the pinhole camera
with its fx, fy, cx, cy: its view undistorted, as ``--orbit`` renders them; a fisheye gets the pinhole focal length
whose horizontal field of view matches the fisheye's across its width, at most 120 degrees (``orbit_cameras``).

Not open3d's legacy ``ScalableTSDFVolume``: in the installed open3d-cpu 0.20 it extracts an empty mesh even from one
flat depth map of a wall in front of the camera (``UniformTSDFVolume`` and ``VoxelBlockGrid`` find it).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import trimesh

from .cli import option_typed
from .errors import RwfWarning, UserError
from .nerf_export import MIN_OPACITY, stop_distance, trained_pixels
from .signals import import_held

VOXELS_PER_DIAGONAL = 256
"""default voxel: the box diagonal / 256, the detail of the marching-cubes export's default --res 256"""
MAX_VOXELS_PER_DIAGONAL = 2048
"""a finer --tsdf-voxel is refused: the grid's memory grows with the surface area in voxels, 64x the default's"""
MIN_VOXELS_PER_DIAGONAL = 8
"""a coarser --tsdf-voxel is refused: on the still life of tests/test_nerf_render_paths.py, 8 voxels across the
box's diagonal fuse 11 faces and 4 none at all"""
TRUNC_VOXELS = 4.0
"""truncation of the signed distance, in voxels. On the still life of tests/test_nerf_render_paths.py (1000 steps),
Chamfer-L1 to the source mesh 0.0318 at 2 voxels, 0.0320 at 4, 0.0359 at 8 (F-score 0.406, 0.423, 0.426): 4 keeps
the surface as close as 2 with fewer holes"""
RENDER_SIZE = 200
"""without --downscale, training images are rendered at about this many pixels across, as ``--pointcloud`` does"""
MIN_WEIGHT = 1.0
"""a voxel carries surface once one view has integrated it; open3d's default, 3, drops what fewer views saw (the
same fit: Chamfer-L1 0.0325 and 7 % fewer faces)"""
BLOCK_RESOLUTION, BLOCK_COUNT = 16, 4096
"""the sparse grid's blocks of 16^3 voxels, room for 4096 of them to start with (it grows as views add more)"""


def check_options(args) -> None:
    """Refuse option combinations ``--tsdf`` would not use (typed at their default value too), before any work."""
    renders = getattr(args, "pointcloud", False) or getattr(args, "poisson", False)  # they render the cameras too
    if not renders and option_typed(args, "num_points", None):
        raise UserError("--num-points applies to --pointcloud and --poisson (the points where training rays stop)")
    if not getattr(args, "tsdf", False):
        for dest in ("tsdf_voxel", "tsdf_views") + (() if renders else ("downscale",)):
            if option_typed(args, dest, None):
                raise UserError(f"--{dest.replace('_', '-')} applies to --tsdf only" if dest != "downscale" else
                                "--downscale applies to the exports that render the training cameras: --tsdf, "
                                "--pointcloud and --poisson")
        return
    if args.pointcloud or getattr(args, "poisson", False):
        other = "--pointcloud" if args.pointcloud else "--poisson"
        raise UserError(f"--tsdf and {other} are two exports (a surface fused from rendered depths, "
                        f"{'the points where rays stop' if args.pointcloud else 'a Poisson surface through them'}); "
                        "choose one")
    if args.threshold is not None:
        raise UserError("--threshold is the density level of the marching-cubes surface; --tsdf's surface is fused "
                        "from the rendered depths")
    if option_typed(args, "res", 256):
        raise UserError("--res is the marching-cubes grid; the detail of --tsdf is its voxel, --tsdf-voxel")


def check_sizes(cfg_dict: dict, args) -> None:
    """``--tsdf-voxel`` against the box to fuse (``--crop``, else config.json's scene box) and a typed ``--downscale``
    against the smallest training image (the dataset's cameras, at the fit's downscale), before the model loads: a
    bad option costs no checkpoint read. What cannot be read here (a config.json without a box, a malformed
    ``--crop``, a dataset that does not load) is left to the steps that need it, which say why."""
    if not getattr(args, "tsdf", False) and getattr(args, "downscale", None) is None:
        return
    try:
        box = np.asarray(getattr(args, "crop", None) or cfg_dict["aabb"], np.float64).reshape(2, 3)
    except (KeyError, TypeError, ValueError):
        box = None
    if getattr(args, "tsdf", False) and box is not None and np.isfinite(box).all() and (box[1] > box[0]).all():
        voxel_size(box, getattr(args, "tsdf_voxel", None))
    if getattr(args, "downscale", None) is None:
        return  # the default adapts to the images
    from .datasets import load_transforms  # noqa: PLC0415

    try:
        cams = load_transforms(cfg_dict["data"], "train").cameras
        fit_k = int(cfg_dict.get("downscale") or 1)
    except (UserError, KeyError, TypeError, ValueError):
        return
    check_downscale(cams.width // fit_k, cams.height // fit_k, args.downscale)


def check_downscale(width: torch.Tensor, height: torch.Tensor, k: int) -> None:
    """UserError when 1 / ``k`` of the smallest of the images (``width``, ``height``: (N,) pixels) has no pixel."""
    w, h = int(width.min()), int(height.min())
    if w // k < 1 or h // k < 1:
        raise UserError(f"--downscale {k}: the smallest training image ({w} x {h}) would have no pixel left")


def voxel_size(box: np.ndarray, voxel: float | None) -> float:
    """``voxel`` (a length in the scene's units), default the box diagonal / ``VOXELS_PER_DIAGONAL``; UserError when
    the box diagonal would span more than ``MAX_VOXELS_PER_DIAGONAL`` of them or fewer than
    ``MIN_VOXELS_PER_DIAGONAL``."""
    diag = float(np.linalg.norm(np.subtract(box[1], box[0])))
    if voxel is None:
        return diag / VOXELS_PER_DIAGONAL
    if not (math.isfinite(voxel) and voxel > 0):
        raise UserError(f"--tsdf-voxel must be a positive length, got {voxel}")
    if diag / voxel > MAX_VOXELS_PER_DIAGONAL:
        raise UserError(f"--tsdf-voxel {voxel:g}: the box diagonal ({diag:.4g}) would span {diag / voxel:.0f} "
                        f"voxels, more than {MAX_VOXELS_PER_DIAGONAL}; the default is {diag / VOXELS_PER_DIAGONAL:.4g}")
    if diag / voxel < MIN_VOXELS_PER_DIAGONAL:
        raise UserError(f"--tsdf-voxel {voxel:g}: the box diagonal ({diag:.4g}) would span {diag / voxel:.2g} "
                        f"voxels, fewer than {MIN_VOXELS_PER_DIAGONAL}, too coarse for a surface; the default is "
                        f"{diag / VOXELS_PER_DIAGONAL:.4g}")
    return float(voxel)


def pinhole_cameras(cams):
    """``cams`` as PINHOLE cameras without distortion, keeping each one's fx, fy, cx, cy and size; a fisheye's fx
    becomes the pinhole's whose horizontal field of view equals the fisheye's across its width (at most 120
    degrees), fy scaled by the same factor (as ``render_paths.orbit_cameras`` does for camera 0)."""
    from .cameras import MODELS, OPENCV_FISHEYE  # noqa: PLC0415
    from .lenses import fisheye_theta  # noqa: PLC0415

    fx, fy = cams.fx.clone(), cams.fy.clone()
    for i in torch.nonzero(cams.model == MODELS.index(OPENCV_FISHEYE)).reshape(-1).tolist():
        edges = torch.stack([-cams.cx[i], cams.width[i] - cams.cx[i]]).double() / float(cams.fx[i])  # (2,) xd
        theta = torch.sign(edges) * fisheye_theta(edges.abs(), cams.dist[i:i + 1, :4].double())
        fov = min(float(theta[1] - theta[0]), math.radians(120.0))
        new_fx = float(cams.width[i]) / (2 * math.tan(fov / 2))
        fy[i] = fy[i] * new_fx / float(fx[i])
        fx[i] = new_fx
    return replace(cams, fx=fx, fy=fy, model=torch.zeros_like(cams.model), dist=torch.zeros_like(cams.dist))


def view_indices(n: int, views: int | None) -> list[int]:
    """``views`` camera indices evenly spaced over ``n`` (all of them when None or ``views >= n``)."""
    if views is None or views >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, views).round().astype(int).tolist()))


@torch.no_grad()
def depth_frames(model, cams, indices, box: np.ndarray, progress: bool = True, k: int = 1):
    """Render pinhole ``cams[i]`` for i in ``indices``; yield (camera (1 camera), rgb (H, W, 3) uint8, z-depth
    (H, W) float32, 0 where there is no surface: opacity below ``MIN_OPACITY``, not finite, the point outside
    ``box`` (2, 3), or a pixel the image's mask leaves out (``cams`` are the training cameras ``k`` times smaller).

    ``model.render_camera`` returns ``depth = sum_i w_i t_i`` along unit rays and ``opacity = sum_i w_i``: the
    ray stops at depth / opacity, whose z-depth is that over the length of the pixel's z-depth-1 direction."""
    from tqdm import tqdm  # noqa: PLC0415

    from .cameras import pixel_rays  # noqa: PLC0415
    from .nerf_outputs import frame_bounds  # noqa: PLC0415

    near_far = getattr(model, "train_near_far", None)
    lo, hi = (torch.as_tensor(np.asarray(b, np.float32)) for b in box)
    for i in tqdm(indices, desc="tsdf", unit="camera", disable=not progress, dynamic_ncols=True, file=sys.stderr):
        cam = cams[i].to(dtype=torch.float32)
        res = model.render_camera(cam, **frame_bounds(near_far, i))
        t, surface = (x.cpu() for x in stop_distance({k: res[k].float() for k in ("depth", "opacity")}))
        o, d = pixel_rays(cam.to(device="cpu"))  # (H, W, 3) unit directions
        _, d1 = pixel_rays(cam.to(device="cpu"), normalize=False)  # z-depth-1 directions
        z = t / d1.norm(dim=-1)
        x = o + d * t[..., None]
        keep = surface & torch.isfinite(z) & (z > 0) & ((x >= lo) & (x <= hi)).all(-1)
        trained = trained_pixels(model, i, k, keep.shape)
        keep = keep if trained is None else keep & trained
        rgb = np.round(res["rgb"].float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        yield cam, rgb, torch.where(keep, z, torch.zeros_like(z)).numpy().astype(np.float32)


def fuse(frames, box: np.ndarray, voxel: float, trunc_voxels: float = TRUNC_VOXELS,
         weight_threshold: float = MIN_WEIGHT) -> trimesh.Trimesh:
    """Fuse RGB-D frames into a TSDF (open3d's sparse ``VoxelBlockGrid``) and extract its mesh, cropped to ``box``.

    Args:
        frames: iterable of (camera: one PINHOLE ``Cameras``, rgb (H, W, 3) uint8, z-depth (H, W) float32, 0: none).
        box: (2, 3) the box to keep; faces with a vertex outside it go.
        voxel: voxel length in scene units; the truncation is ``trunc_voxels`` of them.
        weight_threshold: voxels integrated fewer times than this carry no surface.
    Returns:
        the mesh with (V, 4) uint8 vertex colours (the fused renders); empty when nothing was seen.
    """
    o3d = import_held("open3d")

    from .cameras import pixel_rays  # noqa: PLC0415

    core, geometry = o3d.core, o3d.t.geometry
    grid = geometry.VoxelBlockGrid(attr_names=("tsdf", "weight", "color"),
                                   attr_dtypes=(core.float32, core.float32, core.float32), attr_channels=(1, 1, 3),
                                   voxel_size=voxel, block_resolution=BLOCK_RESOLUTION, block_count=BLOCK_COUNT,
                                   device=core.Device("CPU:0"))
    flip = np.diag([1.0, -1.0, -1.0])  # OpenGL camera axes -> OpenCV's (open3d looks down +z, y down)
    # open3d's voxels sit on a lattice through its origin, in float32: fuse in coordinates whose origin is the box's
    # corner, so the lattice moves with the scene (the same mesh, moved, for a moved scene) and a scene far from the
    # world origin keeps its float32 precision
    box = np.asarray(box, np.float64).reshape(2, 3)
    origin = box[0]
    fused = 0
    for cam, rgb, z in frames:
        if not (z > 0).any():
            continue
        fused += 1
        c2w = cam.c2w[0].double().cpu().numpy()
        rot = c2w[:, :3] @ flip
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = rot.T, -rot.T @ (c2w[:, 3] - origin)
        # cx, cy as they are: open3d's pixel (i, j) spans [i, i + 1) x [j, j + 1), as cameras.py's does
        k = np.array([[float(cam.fx[0]), 0.0, float(cam.cx[0])], [0.0, float(cam.fy[0]), float(cam.cy[0])],
                      [0.0, 0.0, 1.0]])
        k, w2c = core.Tensor(k), core.Tensor(w2c)
        depth = geometry.Image(core.Tensor(np.ascontiguousarray(z, np.float32)))
        color = geometry.Image(core.Tensor(np.ascontiguousarray(rgb, np.float32) / 255))
        # the blocks around every depth pixel's point (from the depth image, open3d reads only every 4th pixel and
        # finds none in a small one)
        o, d = pixel_rays(cam.to(device="cpu", dtype=torch.float64), normalize=False)  # z-depth-1 directions
        points = (o + d * torch.from_numpy(z.astype(np.float64))[..., None])[torch.from_numpy(z > 0)]  # (P, 3)
        cloud = geometry.PointCloud(core.Tensor((points.numpy() - origin).astype(np.float32)))
        blocks = grid.compute_unique_block_coordinates(cloud, trunc_voxels)
        grid.integrate(blocks, depth, color, k, w2c, 1.0, float(z.max()) * 1.01 + voxel, trunc_voxels)
    if not fused:  # no voxel block was made: open3d refuses to extract from an empty grid (a traceback)
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    mesh = grid.extract_triangle_mesh(weight_threshold=weight_threshold).to_legacy()
    v, f = np.asarray(mesh.vertices) + origin, np.asarray(mesh.triangles)
    colors = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else np.ones((len(v), 3))
    inside = ((v >= box[0]) & (v <= box[1])).all(1) if len(v) else np.zeros(0, bool)
    rgba = np.concatenate([np.round(np.clip(colors, 0, 1) * 255), np.full((len(v), 1), 255)], 1).astype(np.uint8)
    out = trimesh.Trimesh(v, f[inside[f].all(1)] if len(f) else np.zeros((0, 3), np.int64), vertex_colors=rgba,
                          process=False)
    out.remove_unreferenced_vertices()
    return out


def tsdf_mesh(model, box: np.ndarray, voxel: float | None = None, views: int | None = None,
              downscale: int | None = None, progress: bool = True) -> tuple[trimesh.Trimesh, int, float]:
    """The fused mesh of ``model``'s training cameras (the module docstring's steps); returns it, the number of
    cameras fused and the voxel length. UserError when it holds no face, saying whether any view saw surface in the
    box."""
    from .nerf_outputs import cameras_missing, scaled_cameras  # noqa: PLC0415

    if model.train_cameras is None:
        raise UserError(f"--tsdf needs the run's training cameras ({cameras_missing(model)})")
    cams = model.train_cameras
    k = downscale or max(1, int(cams.width.max()) // RENDER_SIZE)
    check_downscale(cams.width, cams.height, k)  # check_sizes saw it before the model loaded; the dataset may differ
    cams = pinhole_cameras(scaled_cameras(cams, k))
    voxel = voxel_size(box, voxel)
    if views is not None and views > len(cams):
        warnings.warn(f"--tsdf-views {views}: the run has {len(cams)} training cameras; fusing all of them",
                      RwfWarning, stacklevel=2)
    indices = view_indices(len(cams), views)
    seen = 0  # the views with surface pixels inside the box

    def counted(frames):
        nonlocal seen
        for frame in frames:
            seen += bool((frame[2] > 0).any())
            yield frame

    mesh = fuse(counted(depth_frames(model, cams, indices, box, progress, k)), box, voxel)
    if len(mesh.faces) == 0:
        why = (f"{seen} of the {len(indices)} views see surface there, fused with voxels of {voxel:.4g}: a "
               "smaller --tsdf-voxel may find it" if seen else
               f"no training view has pixels of opacity >= {MIN_OPACITY} there")
        raise UserError(f"the TSDF holds no surface inside the box: {why}")
    return mesh, len(indices), voxel


def export_tsdf(model, box: np.ndarray, out: Path, fmt: str, args) -> int:
    """``rwf export mesh RUN --tsdf``: the steps of the module docstring, written to ``out`` in ``fmt``."""
    from .mesh import remove_small_components  # noqa: PLC0415
    from .mesh_io import save_mesh  # noqa: PLC0415

    mesh, n_views, voxel = tsdf_mesh(model, box, getattr(args, "tsdf_voxel", None), getattr(args, "tsdf_views", None),
                                     getattr(args, "downscale", None), progress=not getattr(args, "quiet", False))
    mesh = remove_small_components(mesh, getattr(args, "min_component", 0.0) or 0.0)
    save_mesh(mesh, out, fmt)
    print(f"{out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces (TSDF of {n_views} views, voxel "
          f"{voxel:.4g}, truncation {TRUNC_VOXELS:g} voxels)")
    return 0
