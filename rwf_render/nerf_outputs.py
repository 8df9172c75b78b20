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

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .camera_path import MAX_RENDER_PIXELS, check_frame_count
from .cameras import Cameras
from .cli import option_typed
from .errors import UserError
from .frame_folder import (FRAME_KINDS, MANIFEST, VideoWriter, check_out_option,  # noqa: F401 (the callers')
                           depth_colors, depth_span, frame_names, write_frames)
from .nerf import load_scene_model
from .nerf_render import NeRFModel
from .render_paths import bounds_at_distance, orbit_cameras


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


def render_run(run: Path, cfg_dict: dict, args) -> int:
    """Render the asked cameras into the folder ``out``, whole or not at all (:func:`frame_folder.write_frames`)."""
    scale = args.scale if option_typed(args, "scale", 1.0) else None
    if scale is not None and args.downscale:
        raise UserError("give --scale S or --downscale K, not both (--downscale K is --scale 1/K, cropped as the "
                        "fit's --downscale crops)")
    if not args.video and option_typed(args, "fps", 24):
        raise UserError("--fps is the frame rate of --video; without --video no video is written")
    check_out_option(args.out, cfg_dict.get("data"), "a NeRF render")
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
    if args.video:
        sizes = sorted({(int(w), int(h)) for w, h in zip(cams.width, cams.height)})
        if len(sizes) > 1:
            raise UserError(f"--video needs frames of one size; these cameras have {len(sizes)} sizes "
                            f"({sizes[0][0]}x{sizes[0][1]}, {sizes[1][0]}x{sizes[1][1]}, ...)")
    rgba = getattr(args, "rgba", False)
    extra = {"premultiplied": True} if rgba else {}  # asked only when wanted: the call stays as before without it
    depth_range = None

    def frame(i):
        nonlocal depth_range
        own = {"image_idx": i} if args.split == "train" else {}  # a training view: its own appearance code
        res = model.render_camera(cams[i], **frame_bounds(near_far, i), **own, **extra)
        rgb, depth, opacity = (res[k].cpu().numpy() for k in ("rgb", "depth", "opacity"))
        stop = preview_depth(depth, opacity)
        if depth_range is None:  # one range for the whole sequence, so videos do not flicker
            depth_range = depth_span(stop, opacity >= 0.5)
        depth_rgb = depth_colors(stop, opacity, *depth_range)
        files = [(f"rgb_{i:04d}.png", rgb, 8), (f"depth_{i:04d}.exr", depth[..., None], 8),
                 (f"depth_{i:04d}.png", depth_rgb, 8)]
        if getattr(args, "opacity", False):  # 16 bits: depth / opacity keeps about 4 digits down to opacity 0.1
            files.append((f"opacity_{i:04d}.png", opacity[..., None], 16))
        if rgba:  # the same samples composited on black, before the background was added: no second march
            straight = rgba_pixels(res["premultiplied"].cpu().numpy(), opacity)
            files.append((f"rgba_{i:04d}.png", straight, RGBA_BITS))
        return files, {"rgb.mp4": rgb, "depth.mp4": depth_rgb}

    write_frames(out, len(cams), frame, _frame_names(len(cams), args), fps if args.video else None,
                 getattr(args, "force", False), getattr(args, "quiet", False))
    also = " and ".join(n for n, on in (("opacity", getattr(args, "opacity", False)), ("rgba", rgba)) if on)
    also = f" with {also}" if also else ""
    print(f"{out}: {len(cams)} frames{also}{f' and rgb.mp4, depth.mp4 at {fps:g} fps' if args.video else ''}")
    return 0


def _frame_names(count: int, args) -> set[str]:
    """The files a render of ``count`` cameras with ``args`` writes."""
    kinds = list(FRAME_KINDS)
    kinds += ["opacity_{:04d}.png"] * bool(getattr(args, "opacity", False))
    kinds += ["rgba_{:04d}.png"] * bool(getattr(args, "rgba", False))
    return frame_names(count, kinds, args.video)
