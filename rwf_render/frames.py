"""One frame of a ``transforms.json``: its image and other paths, its pose and its intrinsics (:func:`parse_frame`),
with the number, size and path readers the dataset loader (:mod:`rwf_render.datasets`) shares.

**Intrinsics, frame over top level**: each of ``fl_x, fl_y, cx, cy, w, h``, the distortion and the model may be
given per frame, overriding the top-level value. The focal length is resolved per axis as a whole, so that a frame's
own focal length wins whichever key either level uses: x: the frame's ``fl_x``, else the frame's ``camera_angle_x``,
else the top level's ``fl_x``, else its ``camera_angle_x``; y likewise with ``fl_y`` / ``camera_angle_y``, and
fl_x when neither level gives one. A frame that gives both ``fl_x`` and ``camera_angle_x`` uses ``fl_x`` (a
focal length in pixels is what calibration tools write; the angle is derived from it). A vertical focal length alone
(``fl_y`` or ``camera_angle_y``) serves both axes, square pixels, as instant-ngp reads it; a file with no focal
length at all is refused.

**Pose**: ``transform_matrix`` 4x4 or 3x4 rows, or 16 numbers in a flat list as some exporters write it, read
row-major when its last four are 0 0 0 1 (a column-major list ends with the translation and 1 instead).

**Depth map**: nerfstudio's ``depth_file_path`` (unit: top-level ``depth_unit_scale_factor``, default 1e-3), or
instant-ngp's ``depth_path`` (unit: top-level ``integer_depth_scale``). Both are z-depth, stored value times the
unit in the dataset's units. instant-ngp loads no depth without a positive ``integer_depth_scale``, and neither does
this reader (:attr:`FrameInfo.depth_key` says so; the dataset loader warns). A frame that gives both keys must name
one file with one unit (nerfstudio's key is then used); two files, or two units, are refused: one of them is wrong.
"""

from __future__ import annotations

import math
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cameras import DIST_NAMES, focal_from_fov
from .errors import UserError

_MODEL_ALIASES = {"SIMPLE_PINHOLE": "PINHOLE", "PINHOLE": "PINHOLE", "OPENCV": "OPENCV",
                  "OPENCV_FISHEYE": "OPENCV_FISHEYE"}


@dataclass
class FrameInfo:
    """One parsed frame: pose, intrinsics and paths (paths absolute; images not opened unless w/h missing)."""

    image: Path
    c2w: np.ndarray  # (4, 4) float64, OpenGL camera-to-world
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    model: str
    dist: tuple  # (k1, k2, k3, k4, p1, p2)
    mask: Path | None = None
    depth: Path | None = None
    near_far: tuple | None = None
    depth_key: str | None = None  # the key that named a depth map ("depth_path" with depth None: ngp's, ignored)
    distortion_as_opencv: bool = False  # camera_model PINHOLE with k1..p2 given: read as OPENCV (PINHOLE_DISTORTED)


PINHOLE_DISTORTED = ("camera_model PINHOLE with distortion coefficients (k1, k2, k3, k4, p1, p2): read as OPENCV, "
                     "as nerfstudio and instant-ngp apply them whatever the model")
"""what the loader and ``rwf data check`` say of frames whose model names no distortion but that give some"""


def _num(value, what: str) -> float:
    """A JSON number: ``true`` is not 1 and ``"60"`` is not 60 (a writer that meant them wrote something else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f"{what}: expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise UserError(f"{what}: not finite ({value!r})")
    return out


def _positive(value, what: str) -> float:
    out = _num(value, what)
    if out <= 0:
        raise UserError(f"{what}: must be positive, got {value!r}")
    return out


MAX_SIZE = 2**31 - 1  # the largest width or height any supported image format can store (PNG's limit)


def _size(value, what: str) -> int:
    """An image width or height: a positive whole number (16 or 16.0, not 16.5), at most MAX_SIZE."""
    out = _positive(value, what)
    if out != int(out):
        raise UserError(f"{what}: must be a whole number of pixels, got {value!r}")
    if out > MAX_SIZE:
        raise UserError(f"{what}: {value!r} pixels is more than any image holds (at most {MAX_SIZE})")
    return int(out)


def _flag(value, what: str) -> bool:
    """A JSON boolean (also 0/1 and the strings "true"/"false", as some exporters write them)."""
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise UserError(f"{what}: expected true or false, got {value!r}")


def native_path(base: Path, value: str) -> Path:
    """``value`` relative to ``base`` (unless absolute). A path written on Windows (``images\\0001.jpg``, as
    colmap2nerf writes there) names the same file here: its backslashes are read as folder separators when the
    path as written does not exist. So does a name with accents whose file was made on macOS, which stores
    ``é`` decomposed (NFD) while JSON writers compose it (NFC), or the other way round: the other form is
    tried when the path as written does not exist."""
    if "\\" in value and os.sep == "/" and not _joined(base, value).exists():
        value = value.replace("\\", "/")
    p = _joined(base, value)
    if not p.exists() and not value.isascii():
        for form in ("NFC", "NFD"):
            q = _joined(base, unicodedata.normalize(form, value))
            if q.exists():
                return q
    return p


def _joined(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _rel_path(base: Path, value, what: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{what}: expected a file path (a non-empty string), got {value!r}")
    return native_path(base, value)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff")  # the formats read_image reads, by name


def resolve_image(base: Path, file_path: str) -> Path:
    """The image a ``file_path`` names: relative to ``base``; Blender's extension-less paths (``./train/r_0``) get
    the first of ``IMAGE_SUFFIXES`` (lower case, then upper case: ``r_0.EXR``) whose file exists, else ``.png``."""
    p = native_path(base, file_path)
    if not p.exists() and p.suffix.lower() not in IMAGE_SUFFIXES:
        for ext in (*IMAGE_SUFFIXES, *(e.upper() for e in IMAGE_SUFFIXES)):
            q = native_path(base, file_path + ext)
            if q.exists():
                return q
        return p.with_name(p.name + ".png")
    return p


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header (decodes nothing), or from the decoded image for the formats Pillow
    does not read (EXR, float TIFF)."""
    from PIL import Image  # noqa: PLC0415  (Pillow comes with imageio)

    if path.exists() and not path.is_file():  # a named pipe would block the read for ever
        raise UserError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # noqa: BLE001  (any decoder error is the user's file)
        why = e
    from .imgio import read_image, sniff_format  # noqa: PLC0415

    if path.is_file() and sniff_format(path) is not None:  # EXR and float TIFF, which Pillow cannot open
        info = read_image(path)[1]
        return info["width"], info["height"]
    raise UserError(f"{path}: cannot read the image size ({type(why).__name__}: {why})") from None


def pose_matrix(value, where: str) -> np.ndarray:
    """A ``transform_matrix`` as a (4, 4) or (3, 4) float64 array: nested rows, or 16 numbers read row-major when
    the last four are 0 0 0 1 (module docstring). UserError naming ``where`` for anything else."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where}: transform_matrix is not a numeric matrix") from None
    if m.shape == (16,) and np.array_equal(m[12:], [0.0, 0.0, 0.0, 1.0]):
        m = m.reshape(4, 4)
    if m.shape not in ((4, 4), (3, 4)):
        flat = (" (a flat list of 16 is read as a row-major 4x4 only when its last four are 0 0 0 1)"
                if m.shape == (16,) else "")
        raise UserError(f"{where}: transform_matrix has shape {m.shape}, expected 4x4 or 3x4{flat}")
    if not np.isfinite(m).all():
        raise UserError(f"{where}: transform_matrix has non-finite entries")
    return m


DEFAULT_DEPTH_UNIT = 1e-3
"""``depth_unit_scale_factor`` when a dataset does not give one (nerfstudio's: depth maps in millimetres)"""


def depth_units(top: dict) -> tuple:
    """The depth unit of each depth key of a file's top level ``top``: (nerfstudio's, instant-ngp's), the latter None
    when it loads no depth (no positive ``integer_depth_scale``). Values as given (checked where used)."""
    ngp = top.get("integer_depth_scale")
    ok = isinstance(ngp, (int, float)) and not isinstance(ngp, bool) and math.isfinite(ngp) and ngp > 0
    return top.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT), ngp if ok else None


def _depth_map(frame: dict, top: dict, base: Path, where: str, ns) -> tuple[Path | None, str | None]:
    """A frame's depth map and the key that names it (module docstring); ``ns``: its ``depth_file_path`` (its own,
    else the top level's). instant-ngp's ``depth_path`` is a frame key only, as instant-ngp reads it."""
    ngp = frame.get("depth_path")
    ns = None if ns is None else _rel_path(base, ns, f"{where}: depth_file_path")
    if ngp is None:
        return ns, None if ns is None else "depth_file_path"
    ngp = _rel_path(base, ngp, f"{where}: depth_path")
    ns_unit, ngp_unit = depth_units(top)
    if ns is None:
        return (ngp if ngp_unit is not None else None), "depth_path"
    if ngp_unit is not None:  # instant-ngp would read its map too: both must say the same
        if os.path.normpath(ns) != os.path.normpath(ngp):
            raise UserError(f"{where}: depth_file_path ({frame.get('depth_file_path', top.get('depth_file_path'))})"
                            f" and depth_path ({frame['depth_path']}) name different depth maps; give one of them")
        if ns_unit != ngp_unit:
            raise UserError(f"{where}: gives depth_file_path and depth_path, whose units differ: "
                            f"depth_unit_scale_factor {ns_unit!r} (nerfstudio's default 1e-3 when absent) and "
                            f"integer_depth_scale {ngp_unit!r}; give one key, or equal units")
    return ns, "depth_file_path"


class MissingImage(UserError):
    """A frame whose image does not exist and whose size is not given either (Blender files never give w/h): the
    loader skips such a frame with a warning, as any frame whose image is missing."""


def parse_frame(frame: dict, top: dict, base: Path, where: str = "frame") -> FrameInfo:
    """Parse one frame of a transforms JSON (frame keys override ``top``). Raises UserError naming ``where``
    (:class:`MissingImage` when the image is missing and w/h are not given, so its size is unknown)."""
    if not isinstance(frame, dict):
        raise UserError(f"{where}: expected an object, got {type(frame).__name__}")
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise UserError(f"{where}: missing '{key}'")
    _rel_path(base, frame["file_path"], f"{where}: file_path")
    image = resolve_image(base, frame["file_path"])
    m = pose_matrix(frame["transform_matrix"], where)
    c2w = np.eye(4)
    c2w[:3] = m[:3]
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-6:
        raise UserError(f"{where}: transform_matrix is singular (rotation block has determinant ~0)")
    if m.shape == (4, 4) and not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], rtol=0, atol=1e-6):
        # the row was dropped and the pose used as it was (a fuzzing hunt)
        raise UserError(f"{where}: transform_matrix's last row is {m[3].tolist()}, not 0 0 0 1: not a camera-to-world "
                        "pose (a projective or column-major matrix?)")

    def get(key, default=None):  # the frame's own value, else the top level's (null counts as not given)
        for source in (frame, top):
            if source.get(key) is not None:
                return source[key]
        return default

    w, h = get("w"), get("h")
    if w is None or h is None:
        if not image.exists():
            raise MissingImage(f"{where}: no w/h given and image {image} not found")
        size = image_size(image)
        w, h = size[0] if w is None else w, size[1] if h is None else h
    w, h = _size(w, f"{where}: w"), _size(h, f"{where}: h")

    def focal(fl_key: str, angle_key: str, size: int) -> float | None:
        """The frame's own focal length (``fl_key``, else ``angle_key``), else the top level's (module docstring)."""
        for source in (frame, top):
            if source.get(fl_key) is not None:
                return _positive(source[fl_key], f"{where}: {fl_key}")
            if source.get(angle_key) is not None:  # a field of view strictly between 0 and 180 degrees, in radians
                angle = _num(source[angle_key], f"{where}: {angle_key}")
                if not 0 < angle < math.pi:
                    raise UserError(f"{where}: {angle_key} must be in (0, pi) radians, got {source[angle_key]!r}")
                return focal_from_fov(angle, size)
        return None

    fx, fy = focal("fl_x", "camera_angle_x", w), focal("fl_y", "camera_angle_y", h)
    if fx is None and fy is None:
        raise UserError(f"{where}: no focal length (fl_x, fl_y, camera_angle_x or camera_angle_y)")
    fx, fy = fx or fy, fy or fx  # one axis given: square pixels, as instant-ngp reads either alone
    cx, cy = _num(get("cx", w / 2), f"{where}: cx"), _num(get("cy", h / 2), f"{where}: cy")
    dist = tuple(_num(get(k, 0.0), f"{where}: {k}") for k in DIST_NAMES)
    model = get("camera_model")
    if model is None:
        fisheye = _flag(get("is_fisheye", False), f"{where}: is_fisheye")
        model = "OPENCV_FISHEYE" if fisheye else ("OPENCV" if any(dist) else "PINHOLE")
    if str(model).upper() not in _MODEL_ALIASES:
        raise UserError(f"{where}: unsupported camera_model {model!r} (supported: {', '.join(_MODEL_ALIASES)})")
    model = _MODEL_ALIASES[str(model).upper()]
    as_opencv = model == "PINHOLE" and any(dist)
    model = "OPENCV" if as_opencv else model
    mask = get("mask_path")
    mask = None if mask is None else _rel_path(base, mask, f"{where}: mask_path")
    depth, depth_key = _depth_map(frame, top, base, where, get("depth_file_path"))
    near_far = None
    if frame.get("near") is not None and frame.get("far") is not None:
        near_far = (_num(frame["near"], f"{where}: near"), _num(frame["far"], f"{where}: far"))
        if not 0 <= near_far[0] < near_far[1]:
            raise UserError(f"{where}: near and far must satisfy 0 <= near < far, got {near_far[0]:g}, "
                            f"{near_far[1]:g}")
    return FrameInfo(image, c2w, fx, fy, cx, cy, w, h, model, dist, mask=mask, depth=depth, near_far=near_far,
                     depth_key=depth_key, distortion_as_opencv=as_opencv)

