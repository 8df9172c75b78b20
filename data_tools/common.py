"""Shared pieces of the data tools: all-or-nothing output folders, scene normalization, PLY and image writing.

Every tool writes its whole output into a hidden staging folder beside OUT and moves it into place in one
``os.replace`` when everything succeeded, so OUT is either absent, the old one, or complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import numpy as np

from rwf_render.scene_box import NGP_HALF, bulk_cube, holding_scale
from rwf_render.errors import UserError
from rwf_render.locks import staging_dir, sweep_stale
from rwf_render.rundir import refuse_dangling_link, temp_prefix
from rwf_render.signals import uninterrupted

READ_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""the photo files a dataset can hold (what ``rwf fit`` reads; its EXR is for rendered data, not photos)"""
IMAGE_EXTS = READ_EXTS + (".bmp", ".webp")
"""what counts as an image in a folder: BMP and WebP too, so that they are refused by name (:func:`check_readable`)
rather than passed over"""


def check_output(out: str | Path, force: bool, inputs: tuple = (), holders: tuple | None = None) -> Path:
    """Validate OUT before any work: it may exist only with ``force``, must not contain or be an input, must not
    lie inside an input folder (a converter writing into the dataset it reads; ``holders``: those folders, when not
    every input), and its nearest existing folder must be writable."""
    refuse_dangling_link(out)
    given, out = out, Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and _mount_point(out):
        raise UserError(f"{given}: is a mount point; the dataset is made beside OUT and moved into place, which a "
                        f"mount point does not allow (choose a folder inside it, e.g. {Path(given) / 'dataset'})")
    # what --force could not change is said first: "pass --force" then named the user's photo folder (OUT and the
    # input swapped), which --force refuses as not a dataset
    for src in inputs:
        src = Path(src).resolve()
        if src == out or out in src.parents:
            raise UserError(f"{out}: the output folder would replace the input {src}")
    for src in inputs if holders is None else holders:
        src = Path(src).resolve()
        if src in out.parents and src.is_dir():
            raise UserError(f"{given}: the output folder lies inside the input folder {src}; choose one outside it")
    if out.is_dir() and any(out.iterdir()) and not is_dataset(out):
        raise UserError(f"{out}: holds files but no transforms.json or transforms_*.json, so it is not a dataset; "
                        f"--force replaces only datasets (choose another OUT)")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out}: exists; pass --force to replace it")
    _check_writable(given, out)
    return out


def _mount_point(path: Path, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether ``path`` (resolved) is a mount point: ``os.path.ismount`` sees another device only, so a bind mount
    of a folder of the same file system is looked up in /proc/self/mountinfo (Linux) too."""
    if os.path.ismount(path):
        return True
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return False
    escaped = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040, a backslash as \134
    points = {escaped.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in lines if len(line.split()) > 4}
    return str(path) in points


def is_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset as these tools write them (a transforms.json, or Blender's
    transforms_train.json and its siblings), the only kind of folder ``--force`` may replace: ``--force`` with OUT
    a slip for a folder of the user's other files must not delete them."""
    return any(f.is_file() for f in folder.glob("transforms*.json"))


def _check_writable(given, out: Path) -> None:
    """UserError naming OUT (as given) when it cannot be made: an existing file on its path, or a folder it would go
    in that this user may not write (``os.access``; root passes it except on read-only mounts, and then the
    mkdir in :func:`staged_output` gives the same message)."""
    holder = next(d for d in (out.parent, *out.parent.parents) if d.exists() or d == d.parent)
    if not holder.is_dir():
        raise UserError(f"{given}: cannot create the output folder ({holder} is not a folder)")
    if not os.access(holder, os.W_OK | os.X_OK):
        raise UserError(f"{given}: cannot create the output folder (no permission to write in {holder})")


def _remove_created(created: list[Path]) -> None:
    """Remove the (empty) folders made to hold OUT, deepest first."""
    for d in created:
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def staged_output(out: str | Path, force: bool, inputs: tuple = (), holders: tuple | None = None):
    """Yield a fresh staging folder; on success it becomes OUT (replacing an old OUT only with ``force``).

    On any exception the staging folder (and any parent folder made for OUT) is removed and OUT is left as it was.
    A folder OUT cannot be made in is a UserError naming OUT (not the hidden staging folder).
    """
    given, out = out, check_output(out, force, inputs, holders)
    created = [d for d in (out.parent, *out.parent.parents) if not d.exists()]  # deepest first
    partial, old_prefix = temp_prefix(out.name) + "partial-", temp_prefix(out.name) + "old-"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for prefix in (partial, old_prefix):  # what a tool killed with -9 left beside OUT
            sweep_stale(out.parent, prefix)
        stage, held = staging_dir(partial, "", out.parent)
    except OSError as e:
        _remove_created(created)
        raise UserError(f"{given}: cannot create the output folder ({e.strerror or e})") from None
    moved = False
    try:
        try:
            yield stage
        except OSError as e:  # name what the user asked for, not the hidden staging folder
            raise _in_out(e, stage, Path(given)) from e
        _umask_permissions(stage)
        check_output(out, force, inputs, holders)  # someone may have created OUT meanwhile
        with uninterrupted():  # a Ctrl+C here waits for the swap (it left OUT gone, or the old one hidden beside it)
            try:
                _swap_in(stage, out, old_prefix)
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(given)) from e
            moved = True
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if held is not None:
            os.close(held)
        if not moved:  # the folders made to hold OUT go too: a failure leaves nothing behind
            _remove_created(created)


def _swap_in(stage: Path, out: Path, old_prefix: str) -> None:
    """Move ``stage`` to ``out``; an existing ``out`` goes only once the new one is in place (a failed move puts it
    back, and leaves no hidden folder)."""
    if not out.exists():
        os.replace(stage, out)
        return
    old, held = staging_dir(old_prefix, "", out.parent)
    try:
        os.replace(out, old / "x")
        try:
            os.replace(stage, out)
        except OSError:
            os.replace(old / "x", out)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
        if held is not None:
            os.close(held)


def _in_out(e: OSError, stage: Path, out: Path) -> OSError:
    """``e`` with the paths inside ``stage`` said as the same paths inside ``out`` (and OUT where it names none)."""
    def mapped(name):
        if name is None:
            return None
        path = Path(os.fsdecode(name))
        try:
            return str(out / path.relative_to(stage))
        except ValueError:
            return os.fsdecode(name)
    first, second = mapped(e.filename), mapped(e.filename2)
    if e.errno is None:
        return e
    if first is None:
        return OSError(e.errno, e.strerror, str(out))
    return OSError(e.errno, e.strerror, first, None, second)


def _umask_permissions(root: Path) -> None:
    """mkdtemp / mkstemp create owner-only entries: give the output the permissions a plain mkdir/open would."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, 0o777 & ~umask)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o666 & ~umask)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; UserError when there are none. Hidden files are not
    images: macOS writes ``._IMG_0001.JPG`` (a resource fork) beside every photo copied to a FAT or exFAT drive."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(READ_EXTS)})")
    return files


def check_readable(paths, where) -> None:
    """UserError, before anything is written, when an image is of a format ``rwf fit`` does not read
    (:func:`rwf_render.imgio.sniff_format`: PNG, JPEG, TIFF, EXR), e.g. the BMP and WebP files ``list_images``
    also finds: a dataset made of them would fail only when fitted. ``where`` names their folder or model."""
    from rwf_render.imgio import sniff_format  # noqa: PLC0415

    bad = [Path(p) for p in paths if sniff_format(Path(p)) is None]
    if bad:
        raise UserError(f"{where}: {len(bad)} image(s) are not PNG, JPEG, TIFF or EXR (first: {bad[0].name}), the "
                        "formats rwf fit reads; convert them (e.g. to PNG) first")


def rotation_between(a, b) -> np.ndarray:
    """(3, 3) rotation taking unit direction a to unit direction b (Rodrigues; a 180-degree turn if opposite)."""
    a, b = np.asarray(a, float) / np.linalg.norm(a), np.asarray(b, float) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-10:  # opposite: rotate by pi about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def normalize_scene(c2w: np.ndarray, points: np.ndarray, orient: bool = True, keep: float = 0.95,
                    max_aabb_scale: int = 128) -> tuple[np.ndarray, int, dict]:
    """Similarity that centers and scales a scene, and the aabb_scale that holds it.

    The bulk of the points (per axis, the 2nd to 98th percentile) is centered at the origin and scaled to fill
    [-1, 1]^3; with ``orient``, the cameras' mean up vector becomes +Z first. ``aabb_scale`` is the smallest power
    of two whose instant-ngp box (half-width ``NGP_HALF * aabb_scale``) holds a fraction ``keep`` of the points (of
    the cameras when there are no points): distant background beyond it is left out, cameras may be outside.

    Args:
        c2w: (N, 4, 4) OpenGL camera-to-world in the input frame.
        points: (M, 3) scene points in the input frame (may be empty: the cameras are used instead).
    Returns:
        S: (4, 4) similarity, world_out = S @ world_in (apply to points; poses: S @ c2w with the rotation
            block divided by the scale), aabb_scale, and a dict of numbers for the report.
    """
    R = rotation_between(c2w[:, :3, 1].mean(0), [0, 0, 1]) if orient else np.eye(3)
    centers = c2w[:, :3, 3] @ R.T
    pts = points @ R.T if len(points) >= 8 else centers
    center, half = bulk_cube(pts)
    if not half > 1e-12:
        half = float(np.max(np.linalg.norm(centers - center, axis=1))) or 1.0
    s = 1.0 / half
    S = np.eye(4)
    S[:3, :3], S[:3, 3] = s * R, -s * center
    cam_r = np.abs(s * (centers - center)).max(axis=1)
    pt_r = np.abs(s * (pts - center)).max(axis=1) if len(points) else np.zeros(0)
    aabb_scale = holding_scale(pt_r if len(pt_r) else cam_r, keep, max_aabb_scale)  # no points: the cameras
    box = NGP_HALF * aabb_scale
    stats = {"scale": s, "aabb_scale": aabb_scale, "cameras_in_box": int((cam_r <= box).sum()),
             "points_in_box": float((pt_r <= box).mean()) if len(pt_r) else float("nan"),
             "camera_distance": (float(np.linalg.norm(s * (centers - center), axis=1).min()),
                                 float(np.linalg.norm(s * (centers - center), axis=1).max()))}
    return S, aabb_scale, stats


def apply_similarity_to_poses(S: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(N, 4, 4) poses moved by similarity S (rotation block kept orthonormal)."""
    out = S[None] @ c2w
    out[:, :3, :3] /= np.cbrt(np.linalg.det(S[:3, :3]))
    return out


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """Binary little-endian PLY point cloud: (M, 3) float32 positions and optional (M, 3) uint8 colors."""
    xyz = np.asarray(xyz, dtype=np.float32)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    data = np.zeros(len(xyz), dtype=fields)
    data["x"], data["y"], data["z"] = xyz.T
    if rgb is not None:
        data["red"], data["green"], data["blue"] = np.asarray(rgb, dtype=np.uint8).T
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {n}\n" for n, t in fields)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(xyz)}\n{props}end_header\n"
    Path(path).write_bytes(header.encode() + data.tobytes())


def save_image(path: str | Path, img: np.ndarray) -> None:
    """Write an (H, W[, C]) uint8 or uint16 image; PNG via pypng for 16 bits (imageio would reduce it to 8); an
    .exr (float, as :func:`load_image` reads one) by :func:`rwf_render.imgio.write_image`."""
    path = Path(path)
    if path.suffix.lower() == ".exr":
        from rwf_render.imgio import write_image  # noqa: PLC0415

        write_image(path, img)
        return
    if img.dtype == np.uint16 and path.suffix.lower() == ".png":
        import png  # noqa: PLC0415

        h, w = img.shape[:2]
        c = 1 if img.ndim == 2 else img.shape[2]
        writer = png.Writer(w, h, greyscale=c == 1, alpha=c in (2, 4), bitdepth=16)
        with open(path, "wb") as f:
            writer.write(f, img.reshape(h, w * c).tolist())
        return
    import imageio.v3 as iio  # noqa: PLC0415

    jpeg = path.suffix.lower() in (".jpg", ".jpeg")  # Pillow's default quality (75) blurs what was just averaged
    iio.imwrite(path, img, **({"quality": 95} if jpeg else {}))


def load_depth_samples(path: str | Path) -> np.ndarray:
    """A depth map's samples as stored: a TIFF's of any integer type (32-bit, signed) or float, as
    :func:`rwf_render.nerf_depth.read_depth_map` reads them (not :func:`load_image`'s photo reading, whose 32-bit and
    signed integers become floats in [0, 1]); other formats as :func:`load_image` gives them (PNG integers, EXR)."""
    from rwf_render.imgio import read_image, sniff_format, tiff_samples  # noqa: PLC0415

    path = Path(path)
    try:
        tiff = sniff_format(path) == "tiff"
    except OSError:
        tiff = False  # load_image says why
    if not tiff:
        return load_image(path)

    read_image(path)  # its checks and messages: a corrupt or multi-page file is refused as rwf fit refuses it
    return tiff_samples(path)[0]


def _load_tiff(path: Path) -> np.ndarray:
    """A TIFF's pixels as ``rwf fit`` reads them (min-is-white grey, palettes, premultiplied alpha and 1-bit samples
    resolved), at the integer depth stored (8 or 16 bits; 1-bit: 8), else float32. Its raw samples would be written
    back under another photometric interpretation: a 1-bit mask came out inverted."""
    import tifffile  # noqa: PLC0415

    from rwf_render.imgio import read_image  # noqa: PLC0415

    pixels, info = read_image(path)  # grey + alpha as RGBA: written back as two samples, it became a page stack
    with tifffile.TiffFile(path) as tif:
        floating = int(tif.pages[0].sampleformat) == 3  # IEEE float samples: kept as stored
    if not floating and info["bit_depth"] in (8, 16):  # (a palette's colours are 16-bit)
        scale, dtype = (65535, np.uint16) if info["bit_depth"] == 16 else (255, np.uint8)
        pixels = np.round(pixels * scale).astype(dtype)
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def _plain_png(path: Path, head: bytes) -> bool:
    """An 8-bit grey, RGB, grey + alpha or RGBA PNG without a transparent colour (tRNS): what Pillow decodes as
    stored. Palettes, a tRNS colour (Pillow drops the transparency), 16 bits and 1, 2, 4-bit greys go to
    :func:`rwf_render.imgio.read_image`, which the NeRF loader reads them with."""
    from rwf_render.imgio import _png_chunks  # noqa: PLC0415

    return head[24] == 8 and head[25] in (0, 2, 4, 6) and b"tRNS" not in _png_chunks(path)


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image to a numpy array: uint8, uint16 for 16-bit PNGs (all bits kept), float32 for EXR; a palette
    or transparent-colour PNG becomes RGB(A) with its transparency as alpha, a 1, 2 or 4-bit grey 8-bit grey, a
    CMYK JPEG RGB, a TIFF's samples what they mean (:func:`_load_tiff`), as ``rwf fit`` reads them. UserError when
    it does not decode."""
    from rwf_render.imgio import format_of  # noqa: PLC0415

    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(26)
        png_head = head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26
        if format_of(head) == "tiff":
            return _load_tiff(path)
        if head[:4] == b"v/1\x01" or head[:3] == b"\xff\xd8\xff" or (png_head and not _plain_png(path, head)):
            from rwf_render.imgio import read_image  # noqa: PLC0415

            pixels, info = read_image(path)  # (a CMYK JPEG: RGB, as rwf fit reads it, not four channels as RGBA)
            if info["format"] in ("png", "jpeg"):  # back to integers of the stored depth: exact (x / 65535 in float32)
                scale, dtype = (65535, np.uint16) if info["bit_depth"] == 16 else (255, np.uint8)
                pixels = np.round(pixels * scale).astype(dtype)
            return pixels[..., 0] if pixels.shape[2] == 1 else pixels
        import imageio.v3 as iio  # noqa: PLC0415

        pillow = path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp")
        return np.asarray(iio.imread(path, plugin="pillow") if pillow else iio.imread(path))
    except FileNotFoundError:
        raise UserError(f"{path}: image not found") from None
    except UserError as e:  # read_image's: "PATH: cannot decode PNG image (why)" -> "PATH: cannot decode image (why)"
        why = str(e).removeprefix(f"{path}: ")
        found = re.fullmatch(r"cannot decode \w+ image \((.*)\)", why, flags=re.S)
        raise UserError(f"{path}: cannot decode image ({found.group(1) if found else why})") from None
    except Exception as e:  # noqa: BLE001  (decoder errors differ per format)
        raise UserError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
