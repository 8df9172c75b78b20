"""What a trained NeRF run produces on demand: rendered frames and videos, meshes and point clouds.

    rwf render RUN --split test | --orbit N | --camera-path FILE  [--video] [--out DIR] [--downscale K]
    rwf export mesh RUN [--res N] [--threshold T] [--crop X0 Y0 Z0 X1 Y1 Z1] [--pointcloud] [--out FILE]

Frames: ``rgb_0000.png``, ``depth_0000.exr`` (float32 distance along the ray; 0 where nothing was hit) and
``depth_0000.png`` (the same through the 'turbo' colormap, one fixed range for every frame of a render).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .cameras import Cameras
from .errors import UserError
from .imgio import write_image
from .nerf import load_scene_model
from .nerf_render import NeRFModel, orbit_cameras
from .rundir import atomic_path

DEFAULT_DENSITY_LEVEL = 10.0  # sigma * (box diagonal / 512) ~ 0.1 for a 3-unit box: a surface, not haze


def _scaled(cams: Cameras, k: int) -> Cameras:
    if k == 1:
        return cams
    return replace(cams, fx=cams.fx / k, fy=cams.fy / k, cx=cams.cx / k, cy=cams.cy / k,
                   width=cams.width // k, height=cams.height // k)


def _cameras(model: NeRFModel, args) -> tuple[Cameras, str, int]:
    """The cameras a render asks for, a name for the output folder, and the video frame rate."""
    chosen = [x for x in (args.split, args.orbit, args.camera_path) if x]
    if len(chosen) != 1:
        raise UserError("rwf render of a NeRF run needs exactly one of --split, --orbit N, --camera-path FILE")
    if args.split:
        from .datasets import load_transforms  # noqa: PLC0415

        cams = _scaled(load_transforms(model.cfg.data, args.split).cameras.to(dtype=torch.float32),
                       model.cfg.downscale)
        return cams, args.split, args.fps
    if args.orbit:
        if model.train_cameras is None:
            raise UserError(f"{model.cfg.data}: training cameras unavailable; --orbit needs them")
        center = ((model.aabb[:3] + model.aabb[3:]) / 2).cpu()
        return orbit_cameras(model.train_cameras, center, args.orbit).to(dtype=torch.float32), "orbit", args.fps
    from .camera_path import path_cameras  # noqa: PLC0415

    cams, fps = path_cameras(args.camera_path)
    return cams.to(dtype=torch.float32), Path(args.camera_path).stem, fps


def depth_colors(depth: np.ndarray, opacity: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) turbo colours on [lo, hi]; black where opacity < 0.5."""
    import matplotlib  # noqa: PLC0415

    rgb = matplotlib.colormaps["turbo"](np.clip((depth - lo) / max(hi - lo, 1e-9), 0, 1))[..., :3]
    return np.where(opacity[..., None] >= 0.5, rgb, 0.0).astype(np.float32)


def render_run(run: Path, cfg_dict: dict, args) -> int:
    model = load_scene_model(run, args.device)
    cams, name, fps = _cameras(model, args)
    cams = _scaled(cams, args.downscale or 1)
    out = Path(args.out) if args.out else run / "renders" / name
    out.mkdir(parents=True, exist_ok=True)
    rgb_frames, depth_frames, depth_range = [], [], None
    for i in range(len(cams)):
        res = model.render_camera(cams[i])
        rgb, depth, opacity = (res[k].cpu().numpy() for k in ("rgb", "depth", "opacity"))
        if depth_range is None:  # one range for the whole sequence, so videos do not flicker
            hit = depth[opacity >= 0.5]
            depth_range = (float(np.percentile(hit, 1)), float(np.percentile(hit, 99))) if hit.size else (0.0, 1.0)
        write_image(out / f"rgb_{i:04d}.png", rgb)
        write_image(out / f"depth_{i:04d}.exr", depth[..., None])
        depth_rgb = depth_colors(depth, opacity, *depth_range)
        write_image(out / f"depth_{i:04d}.png", depth_rgb)
        if args.video:
            rgb_frames.append(rgb)
            depth_frames.append(depth_rgb)
        print(f"\r{out}: frame {i + 1}/{len(cams)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if args.video:
        write_video(out / "rgb.mp4", rgb_frames, fps)
        write_video(out / "depth.mp4", depth_frames, fps)
    print(f"{out}: {len(cams)} frames{' and rgb.mp4, depth.mp4' if args.video else ''}")
    return 0


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """H.264 MP4 through imageio-ffmpeg, written atomically; sizes are padded to even numbers for yuv420p."""
    try:
        import imageio.v3 as iio  # noqa: PLC0415
        import imageio_ffmpeg  # noqa: F401, PLC0415
    except ImportError:
        raise UserError("--video needs imageio-ffmpeg (pip install imageio-ffmpeg)") from None
    arr = np.stack([np.round(np.clip(f, 0, 1) * 255).astype(np.uint8) for f in frames])
    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
    arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, arr, extension=".mp4", plugin="FFMPEG", fps=fps, codec="libx264",
                    macro_block_size=1)


@torch.no_grad()
def vertex_colors(model: NeRFModel, mesh, chunk: int = 1 << 16) -> np.ndarray:
    """Colour of the radiance field at each vertex, seen from outside along the vertex normal: (V, 4) uint8."""
    device = model.aabb.device
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    n = torch.as_tensor(np.array(mesh.vertex_normals, dtype=np.float32), device=device)
    cols = [model.field(v[i:i + chunk], -n[i:i + chunk])[0] for i in range(0, v.shape[0], chunk)]
    rgb = torch.cat(cols).clamp(0, 1).cpu().numpy() if cols else np.zeros((0, 3))
    return np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)


@torch.no_grad()
def point_cloud(model: NeRFModel, max_points: int = 1_000_000, size: int = 200):
    """Points where training rays stop (expected depth, opacity >= 0.5), with their rendered colours."""
    import trimesh  # noqa: PLC0415

    from .cameras import pixel_rays  # noqa: PLC0415

    if model.train_cameras is None:
        raise UserError("--pointcloud needs the run's training cameras (dataset not found)")
    cams = model.train_cameras
    k = max(1, int(cams.width.max()) // size)
    cams = _scaled(cams, k)
    pts, cols = [], []
    for i in range(len(cams)):
        res = model.render_camera(cams[i])
        o, d = pixel_rays(cams[i].to(device=model.aabb.device))
        keep = res["opacity"] >= 0.5
        pts.append((o + d * res["depth"][..., None])[keep].cpu())
        cols.append(res["rgb"][keep].cpu())
    pts, cols = torch.cat(pts).numpy(), torch.cat(cols).numpy()
    if len(pts) > max_points:
        pick = np.random.default_rng(0).choice(len(pts), max_points, replace=False)
        pts, cols = pts[pick], cols[pick]
    colors = np.concatenate([np.round(cols * 255), np.full((len(cols), 1), 255)], 1).astype(np.uint8)
    return trimesh.PointCloud(pts, colors=colors)


def export_mesh_run(run: Path, cfg_dict: dict, args) -> int:
    from .mesh import extract_mesh, remove_small_components, save_mesh  # noqa: PLC0415

    model = load_scene_model(run, args.device)
    fmt = args.format or (Path(args.out).suffix.lstrip(".") if args.out else "ply")
    if args.pointcloud:
        if fmt != "ply":
            raise UserError("--pointcloud writes PLY only")
        out = Path(args.out) if args.out else run / "pointcloud.ply"
        cloud = point_cloud(model)
        if len(cloud.vertices) == 0:
            raise UserError("no training ray reaches an opaque surface: nothing to export")
        with atomic_path(out) as tmp:
            cloud.export(tmp, file_type="ply")
        print(f"{out}: {len(cloud.vertices)} points")
        return 0
    box = np.asarray(args.crop, np.float64).reshape(2, 3) if args.crop else model.aabb.cpu().numpy().reshape(2, 3)
    if not (box[1] > box[0]).all():
        raise UserError(f"--crop: each max must exceed its min, got {box.reshape(-1).tolist()}")
    level = DEFAULT_DENSITY_LEVEL if args.threshold is None else args.threshold
    mesh = extract_mesh(model.field.density, box, res=args.res, level=level, inside="above",
                        device=model.aabb.device)
    if len(mesh.faces) == 0:
        raise UserError(f"no surface at density {level} inside the box; try a lower --threshold")
    mesh = remove_small_components(mesh, getattr(args, "min_component", 0.0) or 0.0)
    mesh.visual.vertex_colors = vertex_colors(model, mesh)
    out = Path(args.out) if args.out else run / f"mesh.{fmt}"
    save_mesh(mesh, out, fmt)
    print(f"{out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces (density {level:g})")
    return 0
