"""What a trained NeRF run produces on demand: rendered frames and videos, meshes and point clouds.

    rwf render RUN --split test | --orbit N | --camera-path FILE | --interpolate N  [--video] [--out DIR]
                   [--downscale K]
    rwf export mesh RUN [--res N] [--threshold T] [--crop X0 Y0 Z0 X1 Y1 Z1] [--pointcloud | --poisson] [--out FILE]

Frames: ``rgb_0000.png``, ``depth_0000.exr`` (float32 distance along the ray; 0 where nothing was hit) and
``depth_0000.png`` (the same through the 'turbo' colormap, one fixed range for every frame of a render). A render
asks for at most :data:`~rwf_render.camera_path.MAX_FRAMES` frames; ``--video`` streams them to ffmpeg as they come.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .camera_path import check_frame_count
from .cameras import Cameras
from .cli import option_typed
from .errors import UserError, out_of_memory
from .imgio import write_image
from .nerf import load_scene_model
from .nerf_render import NeRFModel, orbit_cameras
from .rundir import atomic_path, read_json, temp_prefix, write_json

DEFAULT_DENSITY_LEVEL = 10.0  # sigma * (box diagonal / 512) ~ 0.1 for a 3-unit box: a surface, not haze


def _scaled(cams: Cameras, k: int) -> Cameras:
    if k == 1:
        return cams
    return replace(cams, fx=cams.fx / k, fy=cams.fy / k, cx=cams.cx / k, cy=cams.cy / k,
                   width=cams.width // k, height=cams.height // k)


def _cameras(model: NeRFModel, args) -> tuple[Cameras, str, float, torch.Tensor | None]:
    """The cameras a render asks for, a name for the output folder, the video frame rate (``--fps``; for a camera
    path the file's own rate unless ``--fps`` was typed), and per-camera (near, far) (N, 2) where the dataset gives
    them (``--split``: the bounds ``rwf eval`` renders with)."""
    chosen = [x for x in (args.split, args.orbit, args.camera_path, getattr(args, "interpolate", None)) if x]
    if len(chosen) != 1:
        raise UserError("rwf render of a NeRF run needs exactly one of --split, --orbit N, --camera-path FILE, "
                        "--interpolate N")
    if args.split:
        from .datasets import load_transforms  # noqa: PLC0415

        tf = load_transforms(model.cfg.data, args.split)
        cams = _scaled(tf.cameras.to(dtype=torch.float32), model.cfg.downscale)
        refined = getattr(model, "pose_correction", None) is not None and model.train_cameras is not None
        if args.split == "train" and refined and len(model.train_cameras) == len(cams):
            cams = model.train_cameras  # the training views where the fit saw them (--optimize-cameras)
        return cams, args.split, args.fps, tf.near_far
    if args.orbit:
        if model.train_cameras is None:
            raise UserError(f"{model.cfg.data}: training cameras unavailable; --orbit needs them")
        check_frame_count(args.orbit, f"--orbit {args.orbit}")  # before the cameras: N of them are made at once
        center = ((model.aabb[:3] + model.aabb[3:]) / 2).cpu()
        return (orbit_cameras(model.train_cameras, center, args.orbit).to(dtype=torch.float32), "orbit", args.fps,
                None)
    if getattr(args, "interpolate", None):
        from .camera_path import training_path_cameras  # noqa: PLC0415

        if model.train_cameras is None:
            raise UserError(f"{model.cfg.data}: training cameras unavailable; --interpolate needs them")
        k = len(model.train_cameras)
        check_frame_count(args.interpolate * (k - 1) + 1, f"--interpolate {args.interpolate} ({k} training cameras: "
                          f"N * {k - 1} + 1 frames)")
        cams, near_far, _ = training_path_cameras(model.train_cameras, args.interpolate,
                                                  getattr(model, "train_near_far", None))
        return cams.to(dtype=torch.float32), "interpolate", args.fps, near_far
    from .camera_path import path_cameras  # noqa: PLC0415

    cams, fps = path_cameras(args.camera_path)
    fps = args.fps if option_typed(args, "fps", 24) else fps  # a typed --fps wins over the file's rate
    return cams.to(dtype=torch.float32), Path(args.camera_path).stem, fps, None


def _bounds(near_far: torch.Tensor | None, i: int) -> dict:
    return {} if near_far is None else {"near": float(near_far[i, 0]), "far": float(near_far[i, 1])}


def depth_colors(depth: np.ndarray, opacity: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) turbo colours on [lo, hi]; black where opacity < 0.5."""
    import matplotlib  # noqa: PLC0415

    rgb = matplotlib.colormaps["turbo"](np.clip((depth - lo) / max(hi - lo, 1e-9), 0, 1))[..., :3]
    return np.where(opacity[..., None] >= 0.5, rgb, 0.0).astype(np.float32)


def _check_cameras(cams: Cameras, what: str) -> None:
    """Refuse cameras that cannot be rendered: no pixels, non-finite poses, zero or negative focal lengths."""
    if len(cams) == 0:
        raise UserError(f"{what}: no camera to render")
    if bool((cams.width < 1).any() or (cams.height < 1).any()):
        i = int(torch.nonzero((cams.width < 1) | (cams.height < 1))[0])
        raise UserError(f"{what}: camera {i} has no pixels left ({int(cams.width[i])}x{int(cams.height[i])}); "
                        "use a smaller --downscale")
    finite = torch.isfinite(cams.c2w).flatten(1).all(1) & torch.isfinite(torch.stack([cams.cx, cams.cy], 1)).all(1)
    if not bool((finite & (cams.fx > 0) & (cams.fy > 0) & torch.isfinite(cams.fx * cams.fy)).all()):
        raise UserError(f"{what}: a camera has a non-finite pose or a focal length that is not positive")


FRAME_PATTERNS = ("rgb_[0-9][0-9][0-9][0-9].png", "depth_[0-9][0-9][0-9][0-9].exr", "depth_[0-9][0-9][0-9][0-9].png",
                  "rgb.mp4", "depth.mp4")
MANIFEST = ".rwf_render.json"
"""the names a render wrote into its folder: the next render there removes those it does not write again, and
nothing else (a folder of the user's own files named like frames keeps them)"""


def render_run(run: Path, cfg_dict: dict, args) -> int:
    """Render the asked cameras into a folder beside ``out`` (or above it, while ``out`` does not exist), then move
    the frames in: a render that fails half-way leaves ``out`` as it was (absent, if it was), and frames of an
    earlier, longer render there (listed in its MANIFEST) do not linger beside the new ones."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    if getattr(args, "scale", 1.0) != 1.0:
        raise UserError("--scale is for image runs; a NeRF render takes --downscale K")
    if not args.video and option_typed(args, "fps", 24):
        raise UserError("--fps is the frame rate of --video; without --video no video is written")
    model = load_scene_model(run, args.device)
    cams, name, fps, near_far = _cameras(model, args)
    cams = _scaled(cams, args.downscale or 1)
    _check_cameras(cams, args.camera_path or ("--split " + args.split if args.split else "--orbit" if args.orbit
                                              else "--interpolate"))
    out = Path(args.out) if args.out else run / "renders" / name
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--out names the folder of the frames)")
    if args.video:
        _need_ffmpeg()
        sizes = sorted({(int(w), int(h)) for w, h in zip(cams.width, cams.height)})
        if len(sizes) > 1:
            raise UserError(f"--video needs frames of one size; these cameras have {len(sizes)} sizes "
                            f"({sizes[0][0]}x{sizes[0][1]}, {sizes[1][0]}x{sizes[1][1]}, ...)")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):  # e.g. on a read-only file system, even for root
        raise UserError(f"{out}: cannot write the frames there (folder not writable)")
    # staging goes in the nearest existing folder above ``out``; ``out`` and the missing folders above it are made
    # only once every frame is rendered, so an interrupted render leaves no empty folder behind either
    parent = out.parent
    while not parent.is_dir() and parent != parent.parent:
        if parent.exists():
            raise UserError(f"{out}: {parent} exists and is not a folder")
        parent = parent.parent
    try:
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=parent))
    except OSError as e:  # a folder the user cannot write to, as fit's --out (the staging name would only confuse)
        raise UserError(f"{out}: cannot write the frames there ({e.strerror or e})") from None
    videos = {}
    try:
        depth_range = None
        from tqdm import tqdm  # noqa: PLC0415

        for i in tqdm(range(len(cams)), desc=f"{out}", unit="frame", disable=getattr(args, "quiet", False),
                      dynamic_ncols=True):
            res = model.render_camera(cams[i], **_bounds(near_far, i))
            rgb, depth, opacity = (res[k].cpu().numpy() for k in ("rgb", "depth", "opacity"))
            if depth_range is None:  # one range for the whole sequence, so videos do not flicker
                hit = depth[opacity >= 0.5]
                depth_range = (float(np.percentile(hit, 1)), float(np.percentile(hit, 99))) if hit.size else (0.0, 1.0)
            depth_rgb = depth_colors(depth, opacity, *depth_range)
            for file, pixels in ((f"rgb_{i:04d}.png", rgb), (f"depth_{i:04d}.exr", depth[..., None]),
                                 (f"depth_{i:04d}.png", depth_rgb)):
                with _writing(out / file):
                    write_image(staging / file, pixels)
            if args.video:  # streamed to ffmpeg: memory holds one frame, whatever the length of the video
                for file, pixels in (("rgb.mp4", rgb), ("depth.mp4", depth_rgb)):
                    with _writing(out / file):
                        if file not in videos:
                            videos[file] = VideoWriter(staging / file, pixels.shape[1], pixels.shape[0], fps)
                        videos[file].append(pixels)
        for file in list(videos):
            with _writing(out / file):
                videos.pop(file).close()
        new = {p.name for p in staging.iterdir()}
        with _writing(out):
            out.mkdir(parents=True, exist_ok=True)
        for old in _earlier_render(out) - new:  # an earlier render's frames and videos that this one does not replace
            (out / old).unlink(missing_ok=True)
        for name_ in sorted(new):
            with _writing(out / name_):
                (staging / name_).replace(out / name_)
        with _writing(out / MANIFEST):
            write_json(out / MANIFEST, {"files": sorted(new)})
    finally:
        for video in videos.values():  # a render that failed or was interrupted: its partial videos are dropped
            video.close(ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{out}: {len(cams)} frames{f' and rgb.mp4, depth.mp4 at {fps:g} fps' if args.video else ''}")
    return 0


class _writing:  # noqa: N801  (a context manager, used as ``with _writing(target):``)
    """Report a failure to write ``target`` (an output the user named, not the staging file written first) as an
    OSError naming it: ``rwf`` says it in one line, exit 1, as every failure to write an output (cli.dispatch).
    OpenEXR says a full disk as ``RuntimeError: Failed to write pixel data ... No space left on device``."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror or str(e), str(self.target)) from e
        if isinstance(e, RuntimeError) and not out_of_memory(e):  # the writer's (an allocator's is said as such)
            text = " ".join(str(e).split()) or type(e).__name__
            code = errno.ENOSPC if "No space left" in text else errno.EIO
            raise OSError(code, os.strerror(code) if code == errno.ENOSPC else f"cannot write ({text[:200]})",
                          str(self.target)) from e
        return False


def _earlier_render(out: Path) -> set[str]:
    """The frame and video names an earlier render wrote into ``out`` (its MANIFEST; none if it is unreadable)."""
    import fnmatch  # noqa: PLC0415

    try:
        names = read_json(out / MANIFEST)["files"] if (out / MANIFEST).is_file() else []
    except (UserError, KeyError, TypeError):
        return set()
    return {n for n in names if isinstance(n, str) and any(fnmatch.fnmatchcase(n, p) for p in FRAME_PATTERNS)}


def _need_ffmpeg() -> None:
    try:
        import imageio.v3  # noqa: F401, PLC0415
        import imageio_ffmpeg  # noqa: F401, PLC0415
    except ImportError:
        raise UserError("--video needs imageio-ffmpeg (pip install imageio-ffmpeg)") from None


class VideoWriter:
    """H.264 MP4 (yuv420p, imageio's settings) through imageio-ffmpeg, fed one frame at a time, so a long video
    needs the memory of one frame (the frames were kept for one write: 24 bytes a pixel for rgb and depth, 1.5 GB for
    a thousand 250x250 frames). Sizes are padded to even numbers for yuv420p; the file is complete after
    :meth:`close`.

    Args:
        path: the .mp4 to write (replaced).
        width, height: the frames' size in pixels.
        fps: frames per second.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float):
        _need_ffmpeg()
        import imageio_ffmpeg  # noqa: PLC0415

        self.pad = (height % 2, width % 2)
        self._gen = imageio_ffmpeg.write_frames(str(path), (width + self.pad[1], height + self.pad[0]), fps=fps,
                                                codec="libx264", quality=5, macro_block_size=1)
        self._gen.send(None)  # starts ffmpeg

    def append(self, frame: np.ndarray) -> None:
        """One frame (H, W, 3) float in [0, 1] (clipped)."""
        arr = np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)
        arr = np.pad(arr, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(arr))

    def close(self, ignore_errors: bool = False) -> None:
        """Finish the file (ffmpeg writes its index); ``ignore_errors`` for a file about to be discarded."""
        gen, self._gen = self._gen, None
        if gen is None:
            return
        try:
            gen.close()
        except Exception:  # noqa: BLE001
            if not ignore_errors:
                raise


def voxel_cov(model: NeRFModel, spacing) -> torch.Tensor | None:
    """(3, 3) covariance of a uniform point in a voxel of ``spacing`` (3,) world units, the scale at which a
    ``mip`` field is read on an export grid; None for a point-sampled field."""
    if not model.field.cfg.mip:
        return None
    return torch.diag(torch.as_tensor(np.asarray(spacing, np.float64) ** 2 / 12.0, dtype=torch.float32,
                                      device=model.aabb.device))


@torch.no_grad()
def vertex_colors(model: NeRFModel, mesh, chunk: int = 1 << 16, cov: torch.Tensor | None = None) -> np.ndarray:
    """Colour of the radiance field at each vertex, seen from outside along the vertex normal: (V, 4) uint8.
    ``cov`` (3, 3): the footprint of a ``mip`` field's reading (:func:`voxel_cov`)."""
    device = model.aabb.device
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    n = torch.as_tensor(np.array(mesh.vertex_normals, dtype=np.float32), device=device)
    cols = [model.field(v[i:i + chunk], -n[i:i + chunk], None, cov)[0] for i in range(0, v.shape[0], chunk)]
    rgb = torch.cat(cols).clamp(0, 1).cpu().numpy() if cols else np.zeros((0, 3))
    return np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)


def point_cloud(model: NeRFModel, max_points: int = 1_000_000, size: int = 200, progress: bool = True):
    """Points where training rays stop (expected depth, opacity >= 0.5), with their rendered colours; ``progress``
    shows a bar over the training cameras on stderr (each is rendered: minutes on a 100-view scene)."""
    import trimesh  # noqa: PLC0415

    pts, cols, _ = depth_points(model, max_points, size, progress)
    colors = np.concatenate([np.round(cols * 255), np.full((len(cols), 1), 255)], 1).astype(np.uint8)
    return trimesh.PointCloud(pts, colors=colors)


@torch.no_grad()
def depth_points(model: NeRFModel, max_points: int = 1_000_000, size: int = 200, progress: bool = True):
    """The points of :func:`point_cloud` as arrays: positions (P, 3), colours (P, 3) in [0, 1] and the centre of the
    camera that saw each (P, 3), at most ``max_points`` (a fixed-seed sample); training images are rendered at about
    ``size`` pixels across."""
    from tqdm import tqdm  # noqa: PLC0415

    from .cameras import pixel_rays  # noqa: PLC0415

    if model.train_cameras is None:
        raise UserError("--pointcloud and --poisson need the run's training cameras (dataset not found)")
    cams = model.train_cameras
    k = max(1, int(cams.width.max()) // size)
    cams = _scaled(cams, k)
    pts, cols, origins = [], [], []
    near_far = getattr(model, "train_near_far", None)
    for i in tqdm(range(len(cams)), desc="point cloud", unit="camera", disable=not progress, dynamic_ncols=True,
                  file=sys.stderr):
        res = model.render_camera(cams[i], **_bounds(near_far, i))
        o, d = pixel_rays(cams[i].to(device=model.aabb.device))
        keep = res["opacity"] >= 0.5
        pts.append((o + d * res["depth"][..., None])[keep].cpu())
        cols.append(res["rgb"][keep].cpu())
        origins.append(o[keep].cpu())
    pts, cols, origins = (torch.cat(x).numpy() for x in (pts, cols, origins))
    if len(pts) > max_points:
        pick = np.random.default_rng(0).choice(len(pts), max_points, replace=False)
        pts, cols, origins = pts[pick], cols[pick], origins[pick]
    return pts, cols, origins


def painted_background(model: NeRFModel) -> str | None:
    """Why the points of ``--pointcloud`` and ``--poisson`` will be poor, or None: a fit on a fixed white or black
    background of transparent images (README: the field paints that colour into the scene where the images are
    see-through, and those rays stop on it). config.json does not record the alpha, so the first training image
    tells (one image read; the fit refuses ``learned`` on such images, and ``random`` is the cure)."""
    from .imgio import read_image  # noqa: PLC0415

    background = model.cfg.background
    if background not in ("white", "black") or not model.train_image_paths:
        return None
    first = model.train_image_paths[0]
    try:
        pixels, _ = read_image(first)
    except UserError:
        return None  # the export reads no image: an unreadable one is not its error
    if pixels.shape[2] != 4 or not bool((pixels[..., 3] < 1).any()):
        return None
    return (f"{model.cfg.data}: transparent training images ({first.name}) fitted on a {background} background: the "
            f"field paints {background} into the scene where rays see through, so the points lie off the surface; "
            "refit with --background random")


def _crop_box(model: NeRFModel, args) -> np.ndarray:
    """(2, 3) box to export: ``--crop`` (finite, max > min per axis, overlapping the scene box) or the scene box.
    The field is fitted inside the scene box only (rays are marched there): a crop box wholly outside it would hold
    the field's extrapolation, no surface of the scene."""
    scene = model.aabb.cpu().numpy().astype(np.float64).reshape(2, 3)
    if not args.crop:
        return scene
    box = np.asarray(args.crop, np.float64).reshape(2, 3)
    if not np.isfinite(box).all() or not (box[1] > box[0]).all():
        raise UserError(f"--crop: six finite numbers X0 Y0 Z0 X1 Y1 Z1 with each max above its min, "
                        f"got {box.reshape(-1).tolist()}")
    if not ((box[0] < scene[1]) & (box[1] > scene[0])).all():
        raise UserError(f"--crop {_box_text(box)} lies outside the scene box {_box_text(scene)}: it holds none of "
                        "the scene's surface")
    return box


def _box_text(box: np.ndarray) -> str:
    return " ".join(f"{v:.4g}" for v in np.asarray(box).reshape(-1))


def _out_file(out: Path) -> Path:
    """``out``, or UserError before any work when it cannot be written: a folder, or in a folder that does not
    exist (the point cloud's atomic write failed there as a failure of the machine, exit 1, after rendering)."""
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the file to write")
    if not out.parent.is_dir():
        raise UserError(f"{out}: folder {out.parent} does not exist")
    return out


def export_mesh_run(run: Path, cfg_dict: dict, args) -> int:
    from .mesh import check_grid_res, extract_mesh, remove_small_components  # noqa: PLC0415
    from .mesh_io import save_mesh  # noqa: PLC0415
    from .nerf_poisson import check_options, export_poisson  # noqa: PLC0415

    poisson = getattr(args, "poisson", False)
    check_options(args)
    if not (args.pointcloud or poisson):
        check_grid_res(args.res)  # before the model loads, as for sdf runs (--res 1 also divided by zero)
    suffix = Path(args.out).suffix.lstrip(".").lower() if args.out else ""
    fmt = args.format or suffix or "ply"
    if args.format and suffix in ("ply", "obj", "glb") and suffix != args.format:
        raise UserError(f"--format {args.format} but --out {args.out} names a .{suffix} file")
    if args.threshold is not None and not (np.isfinite(args.threshold) and args.threshold > 0):
        raise UserError(f"--threshold must be a positive density, got {args.threshold}")
    if args.pointcloud and args.threshold is not None:
        raise UserError("--pointcloud keeps points where rays become opaque; --threshold applies to meshes only")
    for dest, default in (("res", 256), ("min_component", 0.0)):
        if args.pointcloud and option_typed(args, dest, default):
            raise UserError(f"--{dest.replace('_', '-')} applies to meshes; --pointcloud keeps points where training "
                            "rays become opaque")
    if args.pointcloud and fmt != "ply":
        raise UserError("--pointcloud writes PLY only")
    out = _out_file(Path(args.out) if args.out else run / ("pointcloud.ply" if args.pointcloud else f"mesh.{fmt}"))
    if poisson:
        from .mesh import require_open3d  # noqa: PLC0415

        require_open3d("--poisson")
    model = load_scene_model(run, args.device)
    box = _crop_box(model, args)
    if args.pointcloud or poisson:
        note = painted_background(model)
        if note:
            print(f"rwf: warning: {note}", file=sys.stderr)
    if poisson:
        return export_poisson(model, box, out, fmt, args)
    if args.pointcloud:
        cloud = point_cloud(model, progress=not getattr(args, "quiet", False))
        if args.crop:
            import trimesh  # noqa: PLC0415

            inside = ((cloud.vertices >= box[0]) & (cloud.vertices <= box[1])).all(1)
            cloud = trimesh.PointCloud(cloud.vertices[inside], colors=np.asarray(cloud.colors)[inside])
        if len(cloud.vertices) == 0:
            raise UserError("no training ray reaches an opaque surface" + (" inside --crop" if args.crop else "")
                            + ": nothing to export")
        with atomic_path(out) as tmp:
            cloud.export(tmp, file_type="ply")
        print(f"{out}: {len(cloud.vertices)} points")
        return 0
    level = DEFAULT_DENSITY_LEVEL if args.threshold is None else args.threshold
    cov = voxel_cov(model, (np.asarray(box[1], np.float64) - np.asarray(box[0], np.float64)) / (args.res - 1))
    mesh = extract_mesh(lambda x: model.field.density(x, cov), box, res=args.res, level=level, inside="above",
                        device=model.aabb.device, progress=not getattr(args, "quiet", False))
    if len(mesh.faces) == 0:
        if args.crop:
            raise UserError(f"no surface at density {level:g} inside --crop {_box_text(box)}: the crop box holds none "
                            "of the surface; try a larger --crop (the scene box: no --crop) or a lower --threshold")
        raise UserError(f"no surface at density {level:g} inside the scene box; try a lower --threshold")
    mesh = remove_small_components(mesh, getattr(args, "min_component", 0.0) or 0.0)
    mesh.visual.vertex_colors = vertex_colors(model, mesh, cov=cov)
    save_mesh(mesh, out, fmt)
    print(f"{out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces (density {level:g})")
    return 0
