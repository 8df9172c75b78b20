"""Camera paths: the ``camera_path.json`` format, its reader and keyframe interpolation, and the frame limits every
``rwf render`` path obeys.

Written by the viewer (``viewer/panels.py``), read by ``rwf render RUN --camera-path FILE`` (``nerf_outputs.py``);
needs neither viser nor the viewer package. The paths ``rwf render`` makes from the training cameras are elsewhere:
``--interpolate N`` and ``--spiral N`` in :mod:`rwf_render.render_paths`, ``--orbit N`` in
:func:`rwf_render.render_paths.orbit_cameras`.

Format (close to nerfstudio's ``camera_path.json``, whose readers only need ``camera_path`` and the render size)::

    {
      "format": "rwf-camera-path", "version": 1,
      "convention": "OpenGL camera-to-world, row-major 4x4, world units of the run",
      "render_width": 640, "render_height": 480,   # pixels
      "fps": 24, "seconds": 4.0,                    # len(camera_path) == round(fps * seconds)
      "interpolation": "catmull-rom", "is_cycle": false,
      "keyframes":   [{"camera_to_world": [16 floats], "fov": 50.0}, ...],
      "camera_path": [{"camera_to_world": [16 floats], "fov": 50.0, "aspect": 1.3333}, ...]
    }

* ``camera_to_world``: OpenGL convention (looks down -z, +y up), as ``transforms.json`` and
  :mod:`rwf_render.cameras`; 16 numbers, row-major (a 4x4 nested list is read too).
* ``fov``: *vertical* field of view in degrees. Focal lengths follow from it and ``render_height``:
  fx = fy = 0.5 * render_height / tan(fov / 2), principal point at the image centre (``aspect`` is informative;
  the image is render_width x render_height).
* Limits, each refused with one line: ``fps`` and ``seconds`` finite positive numbers, fps from :data:`MIN_FPS`
  to :data:`MAX_FPS`; at most :data:`MAX_FRAMES` frames (``camera_path`` entries, or ``round(fps * seconds)``); at
  most :data:`MAX_RENDER_PIXELS` pixels a frame; a rotation in each ``camera_to_world``; ``is_cycle`` a boolean.
* ``camera_path`` holds every frame to render. When it is absent, the frames are interpolated from
  ``keyframes``: positions along a uniform Catmull-Rom spline through the keyframes, rotations by slerp between
  consecutive keyframes, fov linearly; frame i of N sits at s = i / (N - 1) * (K - 1) keyframe intervals (a cycle:
  s = i / N * K, returning to the first keyframe).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras, rotation_error
from rwf_render.errors import UserError

FORMAT, VERSION = "rwf-camera-path", 1
CONVENTION = "OpenGL camera-to-world, row-major 4x4, world units of the run"
MAX_FRAMES = 100_000
"""frames one render may ask for (``--orbit``, ``--interpolate``, a camera path): over an hour of video at 24 fps.
More is a slip (``--orbit 1000000000`` grew to 24 GB before the kernel killed it), refused before anything is
allocated."""
MAX_FPS = 1000
"""a camera path's or ``--fps``'s frame rate at most (video players and ffmpeg's H.264 levels stop far below)"""
MIN_FPS = 0.01
"""a camera path's or ``--fps``'s frame rate at least: earlier imageio-ffmpeg versions passed it with two
decimals, so less reached ffmpeg as 0 and no video was written (0.8 passes an exact fraction)"""
MAX_RENDER_PIXELS = 2**26
"""a camera path's render_width x render_height at most: about 8192 x 8192, the limit of ``rwf render --scale`` for
image runs (a NeRF frame of 8000 x 8000 peaked at 3.8 GB: its outputs, the depth colours and the PNG writes, about 55
bytes a pixel)"""


def check_frame_count(n: float, what: str) -> None:
    """UserError naming ``what`` when ``n`` frames are more than MAX_FRAMES (before any camera is made)."""
    if not n <= MAX_FRAMES:
        raise UserError(f"{what}: {n:,.0f} frames is more than {MAX_FRAMES:,} (over an hour at 24 fps); ask for fewer")


# -- rotations (w, x, y, z quaternions, Hamilton convention as viser's; kept here so this module stands alone) --------
def quat_from_matrix(R) -> np.ndarray:
    """Quaternion (4,) (w, x, y, z) with w >= 0 of a rotation matrix (3, 3) (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def matrix_from_quat(wxyz) -> np.ndarray:
    """Rotation matrix (3, 3) float64 of a quaternion (w, x, y, z) (normalized first)."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def slerp(q0, q1, u: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (4,) at u in [0, 1], along the shorter arc."""
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear interpolation, no division by sin(~0)
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    return (math.sin((1 - u) * theta) * q0 + math.sin(u * theta) * q1) / math.sin(theta)


# -- interpolation --------------------------------------------------------------------------------------------------
def interpolate(c2w, fov, n_frames: int, is_cycle: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Frames along keyframes.

    Args:
        c2w: (K, 4, 4) or (K, 3, 4) OpenGL camera-to-world keyframes, K >= 1.
        fov: (K,) vertical fov (any unit; interpolated linearly).
        n_frames: N >= 1.
        is_cycle: close the loop (the last frame comes back towards the first keyframe).
    Returns:
        c2w (N, 4, 4) float64 and fov (N,) float64. With ``is_cycle=False`` frame 0 is keyframe 0 and frame N - 1 is
        keyframe K - 1; a frame at an integer s equals keyframe s exactly.
    """
    c2w = np.asarray(c2w, np.float64)[:, :3, :4]
    fov = np.asarray(fov, np.float64).reshape(-1)
    k = len(c2w)
    if k == 0 or len(fov) != k:
        raise ValueError(f"need K >= 1 keyframes with one fov each, got {k} poses and {len(fov)} fovs")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    pos = c2w[:, :, 3]
    quats = [quat_from_matrix(R) for R in c2w[:, :, :3]]
    out, out_fov = np.tile(np.eye(4), (n_frames, 1, 1)), np.empty(n_frames)
    segments = k if is_cycle else k - 1

    def idx(j: int) -> int:
        return j % k if is_cycle else min(max(j, 0), k - 1)

    for i in range(n_frames):
        if segments == 0:
            s = 0.0
        elif is_cycle:
            s = i / n_frames * segments
        else:
            s = i / max(n_frames - 1, 1) * segments
        j = min(int(math.floor(s)), max(segments - 1, 0))
        u = s - j
        p0, p1, p2, p3 = pos[idx(j - 1)], pos[idx(j)], pos[idx(j + 1)], pos[idx(j + 2)]
        out[i, :3, 3] = 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2
                               + (3 * p1 - p0 - 3 * p2 + p3) * u ** 3)
        out[i, :3, :3] = matrix_from_quat(slerp(quats[idx(j)], quats[idx(j + 1)], u))
        out_fov[i] = (1 - u) * fov[idx(j)] + u * fov[idx(j + 1)]
    return out, out_fov


# -- files ----------------------------------------------------------------------------------------------------------
def _flat(c2w) -> list[float]:
    m = np.eye(4)
    m[:3, :4] = np.asarray(c2w, np.float64)[:3, :4]
    return [round(float(v), 9) for v in m.reshape(-1)]


def camera_path_dict(keyframes_c2w, keyframes_fov, width: int, height: int, fps: float, seconds: float,
                     is_cycle: bool = False) -> dict:
    """The JSON object for keyframes (K, 4, 4) OpenGL c2w with vertical fov (K,) in degrees; frames included."""
    if width < 1 or height < 1 or not 0 < fps <= MAX_FPS or not 0 < seconds < math.inf:
        raise ValueError(f"render size and seconds must be positive, fps in (0, {MAX_FPS}]")
    if width * height > MAX_RENDER_PIXELS or fps * seconds > MAX_FRAMES:
        raise ValueError(f"at most {MAX_RENDER_PIXELS} pixels a frame and {MAX_FRAMES} frames")
    n = max(1, round(fps * seconds))
    frames, fovs = interpolate(keyframes_c2w, keyframes_fov, n, is_cycle)
    return {"format": FORMAT, "version": VERSION, "convention": CONVENTION,
            "render_width": int(width), "render_height": int(height), "fps": fps, "seconds": seconds,
            "interpolation": "catmull-rom", "is_cycle": bool(is_cycle),
            "keyframes": [{"camera_to_world": _flat(c), "fov": float(f)}
                          for c, f in zip(np.asarray(keyframes_c2w), np.asarray(keyframes_fov).reshape(-1))],
            "camera_path": [{"camera_to_world": _flat(c), "fov": float(f), "aspect": width / height}
                            for c, f in zip(frames, fovs)]}


def save_camera_path(path: str | os.PathLike, keyframes_c2w, keyframes_fov, width: int, height: int, fps: float,
                     seconds: float, is_cycle: bool = False) -> dict:
    """Write ``camera_path.json`` atomically (see the module docstring); returns the written object."""
    from rwf_render.rundir import write_json  # noqa: PLC0415

    obj = camera_path_dict(keyframes_c2w, keyframes_fov, width, height, fps, seconds, is_cycle)
    write_json(path, obj)
    return obj


def _matrix_of(entry, where: str) -> np.ndarray:
    """A frame's camera-to-world matrix: 16 numbers, a row-major 4 x 4 whose last row is 0 0 0 1 (nerfstudio's
    flattening), or its top 12. A column-major list (the last four its translation and 1) was read as a camera at
    the world origin, and strings or booleans as numbers; both are refused."""
    values = entry.get("camera_to_world") if isinstance(entry, dict) else None
    flat = [v for row in values for v in (row if isinstance(row, list) else [row])] if isinstance(values, list) else None
    if flat is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise UserError(f"{where}: needs 'camera_to_world', a list of 16 numbers")
    m = np.asarray(flat, np.float64)
    if m.size not in (12, 16) or not np.isfinite(m).all():
        raise UserError(f"{where}: 'camera_to_world' must hold 16 (or 12) finite numbers, got {m.size}")
    bottom = m[12:].tolist()
    m = m.reshape(-1, 4)
    out = np.eye(4)
    out[:3] = m[:3]
    err = float(rotation_error(torch.from_numpy(out)))
    if err > 1e-3 or np.linalg.det(out[:3, :3]) < 0:  # a zero, scaled or mirrored matrix: a blank or wrong frame
        raise UserError(f"{where}: 'camera_to_world' needs a rotation (orthonormal, determinant +1) in its 3 x 3 "
                        f"block, got max |R^T R - I| = {err:.3g}")
    if bottom and not np.allclose(bottom, [0.0, 0.0, 0.0, 1.0], rtol=0, atol=1e-6):  # a transposed rotation is a
        # rotation too: the last row tells (float noise there is fine, as in a transforms.json)
        raise UserError(f"{where}: 'camera_to_world' is read as a row-major 4 x 4 whose last row is 0 0 0 1, got "
                        f"{bottom} (a column-major list? its translation would be there)")
    return out


def _fov_of(entry, where: str) -> float:
    fov = entry.get("fov") if isinstance(entry, dict) else None
    if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 0 < fov < 180:
        raise UserError(f"{where}: 'fov' must be a vertical field of view in degrees in (0, 180), got {fov!r}")
    return float(fov)


def _number(value, what: str) -> float:
    """A finite positive JSON number (not a string, a boolean or NaN / Infinity, which Python's json reads)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{what} must be a finite positive number, got {value!r}")
    return float(value)


def frame_rate(text: str) -> float:
    """An argparse type: a frame rate from MIN_FPS to MAX_FPS, decimals too (29.97 is written as 2997/100, not
    NTSC's 30000/1001), else one line."""
    import argparse  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame rate (frames per second), got {text!r}") from None
    if not MIN_FPS <= value <= MAX_FPS:  # NaN too
        raise argparse.ArgumentTypeError(f"must be from {MIN_FPS:g} to {MAX_FPS} frames per second, got {text}")
    return value


def load_camera_path(path: str | os.PathLike):
    """Read a camera path file.

    Returns:
        c2w (N, 4, 4) float32 OpenGL camera-to-world; fx, fy, cx, cy (N,) float32 in pixels; width, height (int);
        fps (float). Frames come from ``camera_path``, else are interpolated from ``keyframes`` (module docstring).
    Raises:
        UserError with one readable line for a missing, malformed or inconsistent file.
    Example:
        >>> c2w, fx, fy, cx, cy, w, h, fps = load_camera_path("runs/lego/camera_path.json")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: camera path not found") from None
    except (OSError, ValueError) as e:  # a decoding error, malformed JSON, an integer of over 4300 digits
        raise UserError(f"{path}: not a readable JSON camera path ({e})") from None
    except RecursionError:
        raise UserError(f"{path}: not a readable JSON camera path (nested too deeply to read)") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: a camera path is a JSON object")
    size = [obj.get("render_width"), obj.get("render_height")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v == int(v)
               for v in size):  # 640.7 was cut to 640, true read as 1, "640" parsed
        raise UserError(f"{path}: needs integer 'render_width' and 'render_height', got {size[0]!r} x {size[1]!r}")
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise UserError(f"{path}: render size must be positive, got {width}x{height}")
    if width * height > MAX_RENDER_PIXELS:
        raise UserError(f"{path}: render size {width}x{height} is more than {MAX_RENDER_PIXELS} pixels (about 8192 x "
                        "8192); use a smaller render_width and render_height")
    fps = _number(obj.get("fps", 24), f"{path}: 'fps'")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise UserError(f"{path}: 'fps' must be from {MIN_FPS} to {MAX_FPS} frames per second, got {obj['fps']!r}")
    kind = obj.get("camera_type", "perspective")  # nerfstudio's key; its other kinds need other ray models
    if kind != "perspective":
        raise UserError(f"{path}: camera_type {kind!r}: only perspective camera paths are rendered (nerfstudio's "
                        "fisheye, equirectangular and omnidirectional kinds are not)")
    is_cycle = obj.get("is_cycle", False)
    if not isinstance(is_cycle, bool):
        raise UserError(f"{path}: 'is_cycle' must be true or false, got {is_cycle!r}")
    frames = obj.get("camera_path")
    if isinstance(frames, list) and frames:
        check_frame_count(len(frames), f"{path}: camera_path")
        c2w = np.stack([_matrix_of(f, f"{path}: camera_path[{i}]") for i, f in enumerate(frames)])
        fov = np.array([_fov_of(f, f"{path}: camera_path[{i}]") for i, f in enumerate(frames)])
    else:
        keys = obj.get("keyframes")
        if not isinstance(keys, list) or not keys:
            raise UserError(f"{path}: holds neither 'camera_path' frames nor 'keyframes'")
        c2w = np.stack([_matrix_of(k, f"{path}: keyframes[{i}]") for i, k in enumerate(keys)])
        fov = np.array([_fov_of(k, f"{path}: keyframes[{i}]") for i, k in enumerate(keys)])
        seconds = _number(obj.get("seconds", len(keys)), f"{path}: 'seconds'")
        check_frame_count(fps * seconds, f"{path}: fps {fps:g} x seconds {seconds:g}")
        c2w, fov = interpolate(c2w, fov, max(1, round(fps * seconds)), is_cycle)
    focal = 0.5 * height / np.tan(np.radians(fov) / 2)
    n = len(c2w)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float64), dtype=torch.float32)  # noqa: E731
    return (f32(c2w), f32(focal), f32(focal), f32(np.full(n, width / 2)), f32(np.full(n, height / 2)),
            width, height, fps)


def load_keyframes(path: str | os.PathLike) -> dict:
    """The keyframes of a camera path file and its settings, for editing it again (the viewer's "load"): a dict of
    ``c2w`` (K, 4, 4) float64, ``fov`` (K,) degrees, ``width``, ``height``, ``fps``, ``seconds``, ``is_cycle``.
    The whole file is checked as :func:`load_camera_path` checks it; UserError for one without ``keyframes`` (a
    list of frames alone has nothing to edit)."""
    _, _, _, _, _, width, height, fps = load_camera_path(path)
    obj = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    keys = obj.get("keyframes")
    if not isinstance(keys, list) or not keys:
        raise UserError(f"{path}: holds frames but no 'keyframes' to edit (rwf render renders it as it is)")
    c2w = np.stack([_matrix_of(k, f"{path}: keyframes[{i}]") for i, k in enumerate(keys)])
    fov = np.array([_fov_of(k, f"{path}: keyframes[{i}]") for i, k in enumerate(keys)])
    frames = obj.get("camera_path")
    default = len(frames) / fps if isinstance(frames, list) and frames else len(keys)
    seconds = _number(obj.get("seconds", default), f"{path}: 'seconds'")
    return {"c2w": c2w, "fov": fov, "width": width, "height": height, "fps": fps, "seconds": seconds,
            "is_cycle": bool(obj.get("is_cycle", False))}


def path_cameras(path: str | os.PathLike) -> tuple[Cameras, float]:
    """The frames of a camera path file as N PINHOLE :class:`Cameras`, and the fps."""
    c2w, fx, fy, cx, cy, width, height, fps = load_camera_path(path)
    return Cameras.create(c2w, fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height), fps
