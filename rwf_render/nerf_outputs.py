"""Frames and videos of a trained NeRF run, on demand (meshes and point clouds: :mod:`rwf_render.nerf_export`).

    rwf render RUN --split test | --orbit N | --camera-path FILE | --interpolate N | --spiral N  [--video]
                   [--opacity] [--rgba] [--out DIR] [--downscale K | --scale S]

Frames: ``rgb_0000.png``, ``depth_0000.exr`` (float32 distance along the ray; 0 where nothing was hit) and
``depth_0000.png`` (the same through the 'turbo' colormap, one fixed range for every frame of a render). With
``--opacity`` also ``opacity_0000.png``: the opacity sum_i w_i (nerfstudio's "accumulation") as a 16-bit grey PNG,
[0, 1] scaled to 65535, so that depth / opacity is the distance where the ray stops. ``rgb_0000.png`` stays RGB,
composited on the run's background (white, black, or for a learned one a colour by direction that is part of the
picture where the opacity is 0 and is saved nowhere else).

With ``--rgba`` also ``rgba_0000.png``, the scene alone, to matte over anything: a 16-bit RGBA PNG with straight
(unassociated) alpha, alpha = the opacity (the same 16-bit values as ``opacity_0000.png``) and colour = the render
on black, sum_i w_i c_i, divided by the opacity (clipped to [0, 1]; 0 where the alpha is 0). The render on black
comes from the same samples and the same composite as the rgb, before the background is added, for every background
mode. Over a background B, colour x alpha + (1 - alpha) x B is the render on B: on the run's own (white, also for
random runs, or black) that is ``rgb_0000.png``. 16 bits, not 8 (about 2.3x the bytes): the alpha holds the very
values of ``opacity_0000.png``, and the matte over the run's background rounds to the rgb's own 8-bit values but at
edges (a real capture: 99.9 % of values; 8-bit colour and alpha: 90 to 99.6 %, and opacities under 1/510 cut to 0).

A render asks for at most :data:`~rwf_render.camera_path.MAX_FRAMES` frames; ``--video`` streams them to ffmpeg as
they come (rgb and depth; no opacity or rgba video).
"""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .camera_path import MAX_RENDER_PIXELS, check_frame_count
from .cameras import Cameras
from .cli import option_typed
from .errors import UserError, out_of_memory
from .imgio import write_image
from .nerf import load_scene_model
from .nerf_render import NeRFModel
from .render_paths import bounds_at_distance, orbit_cameras
from .locks import staging_dir, sweep_stale
from .rundir import read_json, refuse_among_inputs, refuse_dangling_link, temp_prefix, write_json
from .signals import uninterrupted


def scaled_cameras(cams: Cameras, k: int) -> Cameras:
    """``cams`` for images ``k`` times smaller per side (focal lengths, principal points and sizes divided)."""
    if k == 1:
        return cams
    return replace(cams, fx=cams.fx / k, fy=cams.fy / k, cx=cams.cx / k, cy=cams.cy / k,
                   width=cams.width // k, height=cams.height // k)


def resized_cameras(cams: Cameras, factor: float) -> Cameras:
    """``cams`` rendering ``factor`` times as many pixels per side (2: twice the resolution, 0.5: half) over the same
    field of view: each size rounded, focal lengths and principal points scaled by the size's exact ratio."""
    if factor == 1:
        return cams
    width = torch.clamp(torch.round(cams.width.double() * factor), min=1).to(cams.width.dtype)
    height = torch.clamp(torch.round(cams.height.double() * factor), min=1).to(cams.height.dtype)
    sx, sy = (width.double() / cams.width.double()).to(cams.fx.dtype), (height.double() / cams.height.double()).to(
        cams.fy.dtype)
    return replace(cams, fx=cams.fx * sx, fy=cams.fy * sy, cx=cams.cx * sx, cy=cams.cy * sy, width=width,
                   height=height)


def _cameras(model: NeRFModel, args) -> tuple[Cameras, str, float, torch.Tensor | None]:
    """The cameras a render asks for, a name for the output folder, the video frame rate (``--fps``; for a camera
    path the file's own rate unless ``--fps`` was typed), and per-camera (near, far) (N, 2) where the dataset gives
    them (``--split``: the bounds ``rwf eval`` renders with)."""
    chosen = [x for x in (args.split, args.orbit, args.camera_path, getattr(args, "interpolate", None),
                          getattr(args, "spiral", None)) if x]
    if len(chosen) != 1:
        raise UserError("rwf render of a NeRF run needs exactly one of --split, --orbit N, --camera-path FILE, "
                        "--interpolate N, --spiral N")
    if args.split:
        from .datasets import load_transforms  # noqa: PLC0415

        tf = load_transforms(model.cfg.data, args.split)
        cams = scaled_cameras(tf.cameras.to(dtype=torch.float32), model.cfg.downscale)
        refined = getattr(model, "pose_correction", None) is not None and model.train_cameras is not None
        if args.split == "train" and refined and len(model.train_cameras) == len(cams):
            cams = model.train_cameras  # the training views where the fit saw them (--optimize-cameras)
        return cams, args.split, args.fps, tf.near_far
    if args.orbit:
        if model.train_cameras is None:
            raise UserError(f"training cameras unavailable ({cameras_missing(model)}); --orbit needs them")
        check_frame_count(args.orbit, f"--orbit {args.orbit}")  # before the cameras: N of them are made at once
        center = ((model.aabb[:3] + model.aabb[3:]) / 2).cpu()
        cams = orbit_cameras(model.train_cameras, center, args.orbit)
        # a real capture's per-image bounds, carried to the orbit's distance: without them the frames near the
        # training cameras looked through what the field paints in front of each photo's near bound
        near_far = bounds_at_distance(model.train_cameras, center, getattr(model, "train_near_far", None),
                                      (cams.c2w[:, :3, 3].double().cpu() - center.double()).norm(dim=1))
        return cams.to(dtype=torch.float32), "orbit", args.fps, near_far
    if getattr(args, "interpolate", None):
        from .render_paths import training_path_cameras  # noqa: PLC0415

        if model.train_cameras is None:
            raise UserError(f"training cameras unavailable ({cameras_missing(model)}); --interpolate needs them")
        k = len(model.train_cameras)
        check_frame_count(args.interpolate * (k - 1) + 1, f"--interpolate {args.interpolate} ({k} training cameras: "
                          f"N * {k - 1} + 1 frames)")
        cams, near_far, _ = training_path_cameras(model.train_cameras, args.interpolate,
                                                  getattr(model, "train_near_far", None))
        return cams.to(dtype=torch.float32), "interpolate", args.fps, near_far
    if getattr(args, "spiral", None):
        from .render_paths import spiral_cameras  # noqa: PLC0415

        if model.train_cameras is None:
            raise UserError(f"training cameras unavailable ({cameras_missing(model)}); --spiral needs them")
        check_frame_count(args.spiral, f"--spiral {args.spiral}")
        cams, near_far, _ = spiral_cameras(model.train_cameras, args.spiral, getattr(model, "train_near_far", None),
                                           model.aabb.cpu())
        return cams.to(dtype=torch.float32), "spiral", args.fps, near_far
    from .camera_path import path_cameras  # noqa: PLC0415

    cams, fps = path_cameras(args.camera_path)
    fps = args.fps if option_typed(args, "fps", 24) else fps  # a typed --fps wins over the file's rate
    near_far = None
    if getattr(model, "train_cameras", None) is not None:  # a real capture's bounds, as for --orbit and the viewer
        center = ((model.aabb[:3] + model.aabb[3:]) / 2).cpu()
        near_far = bounds_at_distance(model.train_cameras, center, getattr(model, "train_near_far", None),
                                      (cams.c2w[:, :3, 3].double().cpu() - center.double()).norm(dim=1))
    return cams.to(dtype=torch.float32), Path(args.camera_path).stem, fps, near_far


def cameras_missing(model: NeRFModel) -> str:
    """Why a loaded run has no training cameras (its dataset moved, or no longer loads)."""
    return getattr(model, "train_cameras_missing", None) or f"{model.cfg.data}: dataset not found"


def frame_bounds(near_far: torch.Tensor | None, i: int) -> dict:
    """The ``near`` / ``far`` keywords of ``render_camera`` for frame ``i`` (none without per-frame bounds)."""
    return {} if near_far is None else {"near": float(near_far[i, 0]), "far": float(near_far[i, 1])}


def preview_depth(depth: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """What the depth preview colours: the distance where the ray stops, ``depth`` (sum_i w_i t_i, as the EXR holds
    it) over the opacity, where the opacity is at least 0.5 (0 elsewhere, drawn black). Coloured undivided, an edge
    pixel of opacity 0.5 read as half its distance: it took the near colours and set the low end of the range (a
    quality hunt: 44 % of the colour map coded no surface)."""
    solid = opacity >= 0.5
    return np.where(solid, depth / np.where(solid, opacity, 1.0), 0.0).astype(np.float32)


def depth_colors(depth: np.ndarray, opacity: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) float32 turbo colours on [lo, hi]; black where opacity < 0.5. Turbo is a table of
    256 colours, looked up here block by block of rows (matplotlib's call made float64 RGBA copies of the frame: 70
    bytes a pixel)."""
    import matplotlib  # noqa: PLC0415

    turbo = matplotlib.colormaps["turbo"]
    lut = turbo(np.arange(turbo.N))[:, :3].astype(np.float32)
    out = np.empty((*depth.shape, 3), np.float32)
    rows = max(1, (1 << 18) // max(depth.shape[1], 1))
    for r in range(0, depth.shape[0], rows):
        x = np.clip(np.nan_to_num((depth[r:r + rows].astype(np.float64) - lo) / max(hi - lo, 1e-9)), 0, 1)
        index = np.minimum((x * turbo.N).astype(np.int64), turbo.N - 1)  # matplotlib's rule for a float in [0, 1]
        out[r:r + rows] = np.where(opacity[r:r + rows, :, None] >= 0.5, lut[index], 0.0)
    return out


RGBA_BITS = 16
EMPTY = 0.5 / (2**RGBA_BITS - 1)
"""opacity below which an RGBA PNG stores alpha 0: the colour there is written as 0"""


def rgba_pixels(premultiplied: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """The render on black (H, W, 3) and the opacity (H, W) -> (H, W, 4) straight colour and alpha: colour =
    premultiplied / opacity, clipped to [0, 1] (a weighted mean of the samples' colours, so clipping only trims float
    error), and 0 where the opacity rounds to alpha 0."""
    a = opacity[..., None].astype(np.float64)
    colour = np.where(a >= EMPTY, np.clip(premultiplied / np.maximum(a, EMPTY), 0.0, 1.0), 0.0)
    return np.concatenate([colour, np.clip(a, 0.0, 1.0)], axis=-1).astype(np.float32)


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
                  "opacity_[0-9][0-9][0-9][0-9].png", "rgba_[0-9][0-9][0-9][0-9].png", "rgb.mp4", "depth.mp4")
MANIFEST = ".rwf_render.json"
"""the names a render wrote into its folder: the next render there removes those it does not write again, and
nothing else (a folder of the user's own files named like frames keeps them)"""


MEDIA_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".png", ".jpg", ".jpeg", ".exr", ".tif",
                            ".tiff"})
"""an ``--out`` ending so is taken for a file, which a NeRF render (a folder of frames) would not write"""


def render_run(run: Path, cfg_dict: dict, args) -> int:
    """Render the asked cameras into a hidden folder inside ``out`` (above it, while ``out`` does not exist), then
    move the frames in: a render that fails half-way leaves ``out`` as it was (absent, if it was), and frames of an
    earlier, longer render there (listed in its MANIFEST) do not linger beside the new ones."""
    import shutil  # noqa: PLC0415

    scale = args.scale if option_typed(args, "scale", 1.0) else None
    if scale is not None and args.downscale:
        raise UserError("give --scale S or --downscale K, not both (--downscale K is --scale 1/K, cropped as the "
                        "fit's --downscale crops)")
    if not args.video and option_typed(args, "fps", 24):
        raise UserError("--fps is the frame rate of --video; without --video no video is written")
    if args.out:
        refuse_among_inputs(Path(args.out), cfg_dict.get("data"))
        suffix = Path(args.out).suffix.lower()
        if suffix in MEDIA_SUFFIXES and not Path(args.out).is_dir():  # it would become a folder of that name
            raise UserError(f"{args.out}: --out names the folder of a NeRF render's frames (and of rgb.mp4 and "
                            f"depth.mp4 with --video), not a {suffix} file; give a folder")
    path = getattr(args, "camera_path", None)
    if path and not os.path.isabs(path) and not Path(path).exists() and (run / path).is_file():
        args.camera_path = str(run / path)  # a name the viewer saved inside the run ("a relative name is inside it")
    model = load_scene_model(run, args.device)
    cams, name, fps, near_far = _cameras(model, args)
    cams = scaled_cameras(cams, args.downscale or 1) if scale is None else resized_cameras(cams, scale)
    if scale is not None and bool((cams.width * cams.height > MAX_RENDER_PIXELS).any()):
        i = int(torch.nonzero(cams.width * cams.height > MAX_RENDER_PIXELS)[0])
        raise UserError(f"--scale {scale:g}: {int(cams.width[i])}x{int(cams.height[i])} pixels a frame is more than "
                        f"{MAX_RENDER_PIXELS}; use a smaller --scale")
    _check_cameras(cams, args.camera_path or ("--split " + args.split if args.split else "--orbit" if args.orbit
                                              else "--spiral" if getattr(args, "spiral", None) else "--interpolate"))
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
    if out.is_dir() and not getattr(args, "force", False):
        _refuse_others_files(out, _frame_names(len(cams), args))
    refuse_dangling_link(out)
    # staging goes in ``out`` when it exists (it may be a mount point: frames moved in from the folder above would
    # cross file systems), else in the nearest existing folder above it; ``out`` and the missing folders above it
    # are made only once every frame is rendered, so an interrupted render leaves no empty folder behind either
    parent = out if out.is_dir() else out.parent
    while not parent.is_dir() and parent != parent.parent:
        if parent.exists():
            raise UserError(f"{out}: {parent} exists and is not a folder")
        parent = parent.parent
    sweep_stale(parent, temp_prefix(out.name), ".tmp")  # what a render killed with -9 left
    if parent == out and out.parent.is_dir():  # ... also beside ``out``, where it staged before ``out`` existed
        sweep_stale(out.parent, temp_prefix(out.name), ".tmp")
    try:
        staging, held = staging_dir(temp_prefix(out.name), ".tmp", parent)
    except OSError as e:  # a folder the user cannot write to, as fit's --out (the staging name would only confuse)
        raise UserError(f"{out}: cannot write the frames there ({e.strerror or e})") from None
    videos = {}
    rgba = getattr(args, "rgba", False)
    extra = {"premultiplied": True} if rgba else {}  # asked only when wanted: the call stays as before without it
    try:
        depth_range = None
        from tqdm import tqdm  # noqa: PLC0415

        for i in tqdm(range(len(cams)), desc=f"{out}", unit="frame", disable=getattr(args, "quiet", False),
                      dynamic_ncols=True):
            own = {"image_idx": i} if args.split == "train" else {}  # a training view: its own appearance code
            res = model.render_camera(cams[i], **frame_bounds(near_far, i), **own, **extra)
            rgb, depth, opacity = (res[k].cpu().numpy() for k in ("rgb", "depth", "opacity"))
            stop = preview_depth(depth, opacity)
            if depth_range is None:  # one range for the whole sequence, so videos do not flicker
                hit = stop[opacity >= 0.5]
                depth_range = (float(np.percentile(hit, 1)), float(np.percentile(hit, 99))) if hit.size else (0.0, 1.0)
            depth_rgb = depth_colors(stop, opacity, *depth_range)
            frames = [(f"rgb_{i:04d}.png", rgb, 8), (f"depth_{i:04d}.exr", depth[..., None], 8),
                      (f"depth_{i:04d}.png", depth_rgb, 8)]
            if getattr(args, "opacity", False):  # 16 bits: depth / opacity keeps about 4 digits down to opacity 0.1
                frames.append((f"opacity_{i:04d}.png", opacity[..., None], 16))
            if rgba:  # the same samples composited on black, before the background was added: no second march
                straight = rgba_pixels(res["premultiplied"].cpu().numpy(), opacity)
                frames.append((f"rgba_{i:04d}.png", straight, RGBA_BITS))
            for file, pixels, bits in frames:
                with _writing(out / file):
                    write_image(staging / file, pixels, bits)
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
        with uninterrupted():  # a Ctrl+C here waits for the frames to be in place (half of them, unlisted, lingered)
            with _writing(out):
                out.mkdir(parents=True, exist_ok=True)
            for name_ in sorted(new):
                with _writing(out / name_):
                    (staging / name_).replace(out / name_)
            for old in _earlier_render(out) - new:  # an earlier render's frames and videos not replaced by this one
                (out / old).unlink(missing_ok=True)  # only now: a move that failed leaves them as they were
            with _writing(out / MANIFEST):
                write_json(out / MANIFEST, {"files": sorted(new)})
    finally:
        for video in videos.values():  # a render that failed or was interrupted: its partial videos are dropped
            video.close(ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        if held is not None:
            os.close(held)
    also = " and ".join(n for n, on in (("opacity", getattr(args, "opacity", False)), ("rgba", rgba)) if on)
    also = f" with {also}" if also else ""
    print(f"{out}: {len(cams)} frames{also}{f' and rgb.mp4, depth.mp4 at {fps:g} fps' if args.video else ''}")
    return 0


def _frame_names(count: int, args) -> set[str]:
    """The files a render of ``count`` cameras with ``args`` writes."""
    kinds = ["rgb_{:04d}.png", "depth_{:04d}.exr", "depth_{:04d}.png"]
    kinds += ["opacity_{:04d}.png"] * bool(getattr(args, "opacity", False))
    kinds += ["rgba_{:04d}.png"] * bool(getattr(args, "rgba", False))
    names = {kind.format(i) for i in range(count) for kind in kinds}
    return names | ({"rgb.mp4", "depth.mp4"} if args.video else set())


def _refuse_others_files(out: Path, names: set[str]) -> None:
    """UserError when the folder ``out`` holds a file this render would replace that no earlier render there wrote
    (not in its MANIFEST): the user's own rgb_0000.png was replaced without a word. An earlier render's frames are
    replaced freely, as re-rendering into one folder is the point of it."""
    theirs = sorted(n for n in names - _earlier_render(out) if (out / n).exists() or (out / n).is_symlink())
    if theirs:
        more = f", ... ({len(theirs)} files)" if len(theirs) > 1 else ""
        them = "them" if len(theirs) > 1 else "it"
        raise UserError(f"{out}: holds {theirs[0]}{more} that no earlier render there wrote; --force replaces {them} "
                        "(or choose another --out)")


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

        self.path, self.pad = Path(path), (height % 2, width % 2)
        self._gen = imageio_ffmpeg.write_frames(str(path), (width + self.pad[1], height + self.pad[0]), fps=fps,
                                                codec="libx264", quality=5, macro_block_size=1,
                                                ffmpeg_log_level="quiet")  # its failures are said by rwf, once
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
        if not ignore_errors and not (self.path.is_file() and self.path.stat().st_size > 0):
            raise OSError(f"{self.path}: ffmpeg wrote no video (its messages are above)")
