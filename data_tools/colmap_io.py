"""Read and write COLMAP sparse models (cameras, images, points3D) in COLMAP's binary and text formats.

Poses are as COLMAP stores them: world-to-camera, OpenCV convention, ``x_cam = R(qvec) x_world + tvec``.
Only what the converters need is kept; everything a model holds is read, so a model read and written again is
the same model (tests use this to make the text twin of a binary model).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rwf_render.errors import UserError

# model name -> (COLMAP model id, number of parameters), from COLMAP's src/colmap/sensor/models.h
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5), "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12), "FOV": (7, 5), "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5), "THIN_PRISM_FISHEYE": (10, 12), "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16),
}
_BY_ID = {mid: (name, n) for name, (mid, n) in CAMERA_MODELS.items()}
# models whose parameters start with fx, fy (the others with a single f)
TWO_FOCALS = ("PINHOLE", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV", "FOV", "THIN_PRISM_FISHEYE",
              "RAD_TAN_THIN_PRISM_FISHEYE")


@dataclass
class Camera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # (n_params,) float64, in COLMAP's order for the model


@dataclass
class Image:
    id: int
    qvec: np.ndarray  # (4,) w, x, y, z: world-to-camera rotation
    tvec: np.ndarray  # (3,)
    camera_id: int
    name: str
    xys: np.ndarray  # (K, 2) keypoint pixels
    point3D_ids: np.ndarray  # (K,) int64, -1 where not triangulated

    def world_to_camera(self) -> np.ndarray:
        """(4, 4) OpenCV world-to-camera."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = qvec_to_rotation(self.qvec), self.tvec
        return m


@dataclass
class Model:
    cameras: dict[int, Camera]
    images: dict[int, Image]
    point_ids: np.ndarray  # (M,) int64
    xyz: np.ndarray  # (M, 3)
    rgb: np.ndarray  # (M, 3) uint8
    errors: np.ndarray  # (M,) mean reprojection error of each point, pixels
    tracks: list[np.ndarray] = field(default_factory=list)  # M arrays (L, 2) of (image_id, point2D_idx)


def qvec_to_rotation(q) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rotation_to_qvec(R) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix (eigenvector method, robust near 180 deg)."""
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(R, dtype=np.float64)
    K = np.array([[a - e - i, d + b, g + c, h - f], [d + b, e - a - i, h + f, c - g],
                  [g + c, h + f, i - a - e, d - b], [h - f, c - g, d - b, a + e + i]]) / 3.0
    vals, vecs = np.linalg.eigh(K)
    x, y, z, w = vecs[:, np.argmax(vals)]
    q = np.array([w, x, y, z])
    return -q if w < 0 else q


# ------------------------------------------------------------------------------------------------- reading
class _Reader:
    def __init__(self, path: Path):
        self.path, self.buf, self.pos = path, path.read_bytes(), 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise UserError(f"{self.path}: truncated or not a COLMAP binary file")
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def array(self, dtype, count: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        if count < 0 or self.pos + dtype.itemsize * count > len(self.buf):
            raise UserError(f"{self.path}: truncated or not a COLMAP binary file")
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += dtype.itemsize * count
        return out

    def count(self, min_bytes_each: int) -> int:
        """A uint64 element count, checked against the bytes left (each element takes at least ``min_bytes_each``),
        so a corrupt count is reported as such instead of allocating for it."""
        n = self.take("<Q")[0]
        if n * min_bytes_each > len(self.buf) - self.pos:
            raise UserError(f"{self.path}: truncated or not a COLMAP binary file (it claims {n} entries)")
        return n

    def cstring(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise UserError(f"{self.path}: truncated or not a COLMAP binary file")
        out = self.buf[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return out


def _read_cameras_bin(path: Path) -> dict[int, Camera]:
    r, cams = _Reader(path), {}
    for _ in range(r.count(24)):
        cid, mid, w, h = r.take("<iiQQ")
        if mid not in _BY_ID:
            raise UserError(f"{path}: unknown camera model id {mid}")
        name, n = _BY_ID[mid]
        cams[cid] = Camera(cid, name, int(w), int(h), np.array(r.take(f"<{n}d")))
    return cams


def _read_images_bin(path: Path) -> dict[int, Image]:
    r, images = _Reader(path), {}
    point_dtype = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
    for _ in range(r.count(73)):
        iid, *qt, cid = r.take("<I7dI")
        name = r.cstring()
        pts = r.array(point_dtype, r.count(24))
        images[iid] = Image(iid, np.array(qt[:4]), np.array(qt[4:]), cid, name,
                            np.stack([pts["x"], pts["y"]], -1), pts["id"].astype(np.int64))
    return images


def _read_points_bin(path: Path) -> tuple:
    r = _Reader(path)
    n = r.count(51)
    ids, xyz, rgb, err, tracks = np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros((n, 3), np.uint8), \
        np.zeros(n), []
    for k in range(n):
        pid, x, y, z, cr, cg, cb, e = r.take("<Q3d3Bd")
        ids[k], xyz[k], rgb[k], err[k] = pid, (x, y, z), (cr, cg, cb), e
        tracks.append(r.array("<u4", 2 * r.count(8)).reshape(-1, 2).astype(np.int64))
    return ids, xyz, rgb, err, tracks


def _text(path: Path) -> str:
    """A text model file as COLMAP writes it, UTF-8 whatever the locale; a byte-order mark (a model edited in a
    Windows editor) is dropped, not read into the first id."""
    return path.read_text(encoding="utf-8-sig")


def _lines(path: Path):
    for line in _text(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _read_cameras_txt(path: Path) -> dict[int, Camera]:
    cams = {}
    for line in _lines(path):
        f = line.split()
        if f[1] not in CAMERA_MODELS or len(f) != 4 + CAMERA_MODELS[f[1]][1]:
            raise UserError(f"{path}: bad camera line {line!r}")
        cams[int(f[0])] = Camera(int(f[0]), f[1], int(f[2]), int(f[3]), np.array([float(v) for v in f[4:]]))
    return cams


def _read_images_txt(path: Path) -> dict[int, Image]:
    images = {}
    # images.txt alternates pose lines and point lines; the point line may be empty, so keep blank lines here
    lines = [ln for ln in _text(path).splitlines() if not ln.startswith("#")]
    while lines and not lines[-1].strip():
        lines.pop()
    for k in range(0, len(lines), 2):
        f = lines[k].split(None, 9)  # the name is the rest of the line: it may hold spaces, even two in a row
        if len(f) < 10:
            raise UserError(f"{path}: bad image line {lines[k]!r}")
        pts = np.array(lines[k + 1].split() if k + 1 < len(lines) else [], dtype=np.float64).reshape(-1, 3)
        vals = [float(v) for v in f[1:8]]
        images[int(f[0])] = Image(int(f[0]), np.array(vals[:4]), np.array(vals[4:]), int(f[8]),
                                  f[9].rstrip(), pts[:, :2], pts[:, 2].astype(np.int64))
    return images


def _read_points_txt(path: Path) -> tuple:
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    for line in _lines(path):
        f = line.split()
        ids.append(int(f[0]))
        xyz.append([float(v) for v in f[1:4]])
        rgb.append([int(v) for v in f[4:7]])
        err.append(float(f[7]))
        tracks.append(np.array(f[8:], dtype=np.int64).reshape(-1, 2))
    return (np.array(ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3), np.array(rgb, np.uint8).reshape(-1, 3),
            np.array(err, np.float64), tracks)


def find_model_format(sparse_dir: str | Path) -> str:
    """"bin" or "txt" for a folder holding a COLMAP model; UserError when it holds neither."""
    d = Path(sparse_dir)
    if not d.is_dir():
        raise UserError(f"{d}: no such folder")
    for ext in ("bin", "txt"):
        if all((d / f"{n}.{ext}").is_file() for n in ("cameras", "images", "points3D")):
            return ext
    hint = " (it holds sub-models; pass e.g. its 0/ folder)" if (d / "0").is_dir() else ""
    raise UserError(f"{d}: not a COLMAP model: expected cameras, images and points3D (.bin or .txt){hint}")


def read_model(sparse_dir: str | Path) -> Model:
    """Read a COLMAP model folder (binary preferred when both forms are present)."""
    d = Path(sparse_dir)
    ext = find_model_format(d)
    try:
        if ext == "bin":
            cams, images = _read_cameras_bin(d / "cameras.bin"), _read_images_bin(d / "images.bin")
            pts = _read_points_bin(d / "points3D.bin")
        else:
            cams, images = _read_cameras_txt(d / "cameras.txt"), _read_images_txt(d / "images.txt")
            pts = _read_points_txt(d / "points3D.txt")
    except (ValueError, IndexError, OverflowError, UnicodeDecodeError) as e:
        raise UserError(f"{d}: malformed COLMAP {ext} model ({e})") from None
    for im in images.values():
        if im.camera_id not in cams:
            raise UserError(f"{d}: image {im.name} refers to missing camera {im.camera_id}")
    model = Model(cams, images, *pts)
    _check_values(model, d)
    return model


def _check_values(model: Model, d: Path) -> None:
    """UserError naming the first camera, image or point whose numbers cannot be a COLMAP model's (a non-positive
    size or focal length, a non-finite or zero quaternion, non-finite positions): they would poison every pose."""
    for c in model.cameras.values():
        if c.width <= 0 or c.height <= 0 or not np.isfinite(c.params).all() or c.params[0] <= 0 \
                or (c.model in TWO_FOCALS and c.params[1] <= 0):
            raise UserError(f"{d}: camera {c.id} ({c.model} {c.width}x{c.height}, params "
                            f"{np.round(c.params, 4).tolist()}) needs a positive size and focal length and finite "
                            "parameters")
    for im in model.images.values():
        q = np.asarray(im.qvec, np.float64)
        if not (np.isfinite(q).all() and np.isfinite(im.tvec).all() and np.linalg.norm(q) > 1e-8):
            raise UserError(f"{d}: image {im.name} has a non-finite or zero pose (qvec {q.tolist()}, "
                            f"tvec {np.asarray(im.tvec).tolist()})")
    bad = ~np.isfinite(model.xyz).all(axis=1)
    if bad.any():
        raise UserError(f"{d}: {int(bad.sum())} 3D point(s) have non-finite coordinates (first: id "
                        f"{int(model.point_ids[bad][0])})")


# ------------------------------------------------------------------------------------------------- writing
def write_model(model: Model, out_dir: str | Path, ext: str = "txt") -> None:
    """Write a model in COLMAP's text (``ext="txt"``) or binary (``"bin"``) format into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cams = sorted(model.cameras.values(), key=lambda c: c.id)
    images = sorted(model.images.values(), key=lambda i: i.id)
    if ext == "txt":
        (out / "cameras.txt").write_text("".join(
            f"{c.id} {c.model} {c.width} {c.height} {' '.join(repr(float(p)) for p in c.params)}\n" for c in cams),
            encoding="utf-8")
        lines = []
        for im in images:
            lines.append(" ".join([str(im.id), *(repr(float(v)) for v in (*im.qvec, *im.tvec)),
                                   str(im.camera_id), im.name]))
            lines.append(" ".join(f"{x!r} {y!r} {int(p)}" for (x, y), p in
                                  zip(im.xys.tolist(), im.point3D_ids)))
        (out / "images.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (out / "points3D.txt").write_text("".join(
            f"{pid} {' '.join(repr(float(v)) for v in x)} {' '.join(str(int(v)) for v in c)} {float(e)!r} "
            f"{' '.join(str(int(v)) for v in t.ravel())}\n"
            for pid, x, c, e, t in zip(model.point_ids, model.xyz, model.rgb, model.errors, model.tracks)),
            encoding="utf-8")
        return
    if ext != "bin":
        raise ValueError(f"ext must be 'txt' or 'bin', got {ext!r}")
    buf = [struct.pack("<Q", len(cams))]
    for c in cams:
        buf += [struct.pack("<iiQQ", c.id, CAMERA_MODELS[c.model][0], c.width, c.height),
                np.asarray(c.params, "<f8").tobytes()]
    (out / "cameras.bin").write_bytes(b"".join(buf))
    buf = [struct.pack("<Q", len(images))]
    for im in images:
        pts = np.zeros(len(im.xys), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
        pts["x"], pts["y"], pts["id"] = im.xys[:, 0], im.xys[:, 1], im.point3D_ids
        buf += [struct.pack("<I7dI", im.id, *im.qvec, *im.tvec, im.camera_id), im.name.encode() + b"\0",
                struct.pack("<Q", len(pts)), pts.tobytes()]
    (out / "images.bin").write_bytes(b"".join(buf))
    buf = [struct.pack("<Q", len(model.point_ids))]
    for pid, x, c, e, t in zip(model.point_ids, model.xyz, model.rgb, model.errors, model.tracks):
        buf += [struct.pack("<Q3d3Bd", pid, *x, *c, e), struct.pack("<Q", len(t)), np.asarray(t, "<u4").tobytes()]
    (out / "points3D.bin").write_bytes(b"".join(buf))
