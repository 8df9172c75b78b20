"""One frame of a ``transforms.json``: its image and other paths, its pose and its intrinsics (:func:`parse_frame`),
with the number, size and path readers the dataset loader (:mod:`rwf_render.datasets`) shares.

**Intrinsics, frame over top level**: each of ``fl_x, fl_y, cx, cy, w, h``, the distortion and the model may be
given per frame, overriding the top-level value. The focal length is resolved per axis as a whole, so that a frame's
own focal length wins whichever key either level uses: x: the frame's ``fl_x``, else the frame's ``camera_angle_x``,
else the top level's ``fl_x``, else its ``camera_angle_x``; y likewise with ``fl_y`` / ``camera_angle_y``, and
fl_x when neither level gives one. A frame that gives both ``fl_x`` and ``camera_angle_x`` uses ``fl_x`` (a
focal length in pixels is what calibration tools write; the angle is derived from it). x is required: a vertical
focal length alone is refused, with a message that says so.
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
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where}: transform_matrix is not a numeric matrix") from None
    if m.shape not in ((4, 4), (3, 4)):
        raise UserError(f"{where}: transform_matrix has shape {m.shape}, expected 4x4 or 3x4")
    if not np.isfinite(m).all():
        raise UserError(f"{where}: transform_matrix has non-finite entries")
    c2w = np.eye(4)
    c2w[:3] = m[:3]
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-6:
        raise UserError(f"{where}: transform_matrix is singular (rotation block has determinant ~0)")

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
    if fx is None:  # required, as Blender's and nerfstudio's loaders require it; say what is there instead
        given = [k for k in ("fl_y", "camera_angle_y") if get(k) is not None]
        hint = (f"; only {given[0]} is given: add fl_x (equal to fl_y for square pixels) or camera_angle_x"
                if given else "")
        raise UserError(f"{where}: no focal length (fl_x or camera_angle_x){hint}")
    fy = fy or fx
    cx, cy = _num(get("cx", w / 2), f"{where}: cx"), _num(get("cy", h / 2), f"{where}: cy")
    dist = tuple(_num(get(k, 0.0), f"{where}: {k}") for k in DIST_NAMES)
    model = get("camera_model")
    if model is None:
        fisheye = _flag(get("is_fisheye", False), f"{where}: is_fisheye")
        model = "OPENCV_FISHEYE" if fisheye else ("OPENCV" if any(dist) else "PINHOLE")
    if str(model).upper() not in _MODEL_ALIASES:
        raise UserError(f"{where}: unsupported camera_model {model!r} (supported: {', '.join(_MODEL_ALIASES)})")
    model = _MODEL_ALIASES[str(model).upper()]
    mask, depth = get("mask_path"), get("depth_file_path")
    mask = None if mask is None else _rel_path(base, mask, f"{where}: mask_path")
    depth = None if depth is None else _rel_path(base, depth, f"{where}: depth_file_path")
    near_far = None
    if frame.get("near") is not None and frame.get("far") is not None:
        near_far = (_num(frame["near"], f"{where}: near"), _num(frame["far"], f"{where}: far"))
        if not 0 <= near_far[0] < near_far[1]:
            raise UserError(f"{where}: near and far must satisfy 0 <= near < far, got {near_far[0]:g}, "
                            f"{near_far[1]:g}")
    return FrameInfo(image, c2w, fx, fy, cx, cy, w, h, model, dist, mask=mask, depth=depth, near_far=near_far)

