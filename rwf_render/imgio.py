"""Reading and writing images: PNG, JPEG, TIFF and EXR; grey, RGB and RGBA; 8-bit, 16-bit and float.

Every reader returns float32 (H, W, C) with C in {1, 3, 4}, integer formats scaled to [0, 1] by their full range.
PNG goes through pypng because imageio's Pillow plugin silently reduces 16-bit RGB PNGs to 8 bits.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .errors import UserError
from .rundir import atomic_path, atomic_write_bytes

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff", b"MM\x00*": "tiff", b"II+\x00": "tiff", b"MM\x00+": "tiff",
    b"v/1\x01": "exr",
}


def sniff_format(path: Path) -> str | None:
    """The image format from the file's first bytes (not its name), or None."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    return None


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == bool:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return ((a.astype(np.float64) - info.min) / (info.max - info.min)).astype(np.float32)
    raise ValueError(f"unsupported pixel type {a.dtype}")


def _read_png(path: Path) -> tuple[np.ndarray, int]:
    with open(path, "rb") as f:
        header = f.read(26)
    if len(header) == 26 and header[12:16] == b"IHDR" and header[24] == 8 and header[25] in (0, 2, 4, 6):
        # 8-bit grey/RGB/RGBA: Pillow's C decoder (pypng is pure Python and ~50x slower); it rejects truncated data
        import imageio.v3 as iio  # noqa: PLC0415

        return _to_float(np.asarray(iio.imread(path, plugin="pillow"))), 8
    import png  # noqa: PLC0415

    reader = png.Reader(filename=str(path))
    width, height, rows, info = reader.asDirect()  # expands palettes and low bit depths
    planes, depth = info["planes"], info["bitdepth"]
    data = np.vstack([np.asarray(r, dtype=np.uint16 if depth > 8 else np.uint8) for r in rows])
    data = data.reshape(height, width, planes)
    if depth not in (8, 16):  # 1, 2, 4-bit greys kept at their own range
        return data.astype(np.float32) / (2**depth - 1), depth
    return _to_float(data), depth


def _read_exr(path: Path) -> tuple[np.ndarray, int]:
    import OpenEXR  # noqa: PLC0415

    with OpenEXR.File(str(path)) as f:
        channels = {name: np.asarray(c.pixels) for name, c in f.channels().items()}
    for key in ("RGBA", "RGB"):
        if key in channels:
            return channels[key].astype(np.float32), 32
    for key in ("Y", "L", "R"):
        if key in channels:
            return channels[key].astype(np.float32)[..., None], 32
    raise ValueError(f"no RGB, RGBA or Y channels (has {', '.join(channels)})")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read an image file.

    Returns:
        pixels: float32 (H, W, C), C in {1, 3, 4}; integer formats in [0, 1], float formats as stored.
        info: {"format", "bit_depth", "channels", "height", "width"}.
    Raises:
        UserError: missing path, not an image, truncated or corrupt file, zero-size image.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    fmt = sniff_format(path)
    if fmt is None:
        raise UserError(f"{path}: not a PNG, JPEG, TIFF or EXR image")
    try:
        if fmt == "png":
            pixels, depth = _read_png(path)
        elif fmt == "exr":
            pixels, depth = _read_exr(path)
        else:
            import imageio.v3 as iio  # noqa: PLC0415

            raw = np.asarray(iio.imread(path, plugin="tifffile" if fmt == "tiff" else "pillow"))
            depth = raw.dtype.itemsize * 8
            pixels = _to_float(raw)
    except UserError:
        raise
    except Exception as e:  # decoders raise many types for corrupt data
        raise UserError(f"{path}: cannot decode {fmt.upper()} image ({type(e).__name__}: {e})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim == 4 and pixels.shape[0] == 1:  # single-page stack
        pixels = pixels[0]
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise UserError(f"{path}: zero-size or unsupported image shape {pixels.shape}")
    if pixels.shape[2] == 2:  # grey + alpha: keep grey
        pixels = pixels[..., :1]
    if pixels.shape[2] not in (1, 3, 4):
        raise UserError(f"{path}: unsupported number of channels {pixels.shape[2]}")
    if not np.isfinite(pixels).all():
        raise UserError(f"{path}: image holds NaN or infinite values")
    info = {"format": fmt, "bit_depth": depth, "channels": int(pixels.shape[2]),
            "height": int(pixels.shape[0]), "width": int(pixels.shape[1])}
    return np.ascontiguousarray(pixels, dtype=np.float32), info


def write_png(path: str | os.PathLike, pixels: np.ndarray, bits: int = 8) -> None:
    """Write float (H, W, C) in [0, 1] (clipped) as an 8- or 16-bit PNG, atomically."""
    import png  # noqa: PLC0415

    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    h, w, c = pixels.shape
    scale = 2**bits - 1
    q = np.round(np.clip(pixels, 0.0, 1.0) * scale).astype(np.uint16 if bits == 16 else np.uint8)
    writer = png.Writer(width=w, height=h, greyscale=c in (1, 2), alpha=c in (2, 4), bitdepth=bits,
                        compression=6)
    buf = io.BytesIO()
    writer.write(buf, q.reshape(h, w * c))
    atomic_write_bytes(path, buf.getvalue())


def write_image(path: str | os.PathLike, pixels: np.ndarray, bits: int = 8) -> None:
    """Write by extension: .png (8/16-bit), .exr (float32), .tif/.tiff (16-bit or float), .jpg (8-bit)."""
    path = Path(path)
    ext = path.suffix.lower()
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if ext == ".png":
        return write_png(path, pixels, bits)
    if ext == ".exr":
        import OpenEXR  # noqa: PLC0415

        name = {1: "Y", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
        data = pixels[..., 0] if name == "Y" else pixels
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with atomic_path(path) as tmp:
            OpenEXR.File(header, {name: np.ascontiguousarray(data)}).write(tmp)
        return None
    import imageio.v3 as iio  # noqa: PLC0415

    if ext in (".tif", ".tiff"):
        arr = pixels if bits == 32 else np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
        return atomic_write_bytes(path, iio.imwrite("<bytes>", arr, extension=".tif"))
    if ext in (".jpg", ".jpeg"):
        arr = np.round(np.clip(pixels[..., :3], 0, 1) * 255).astype(np.uint8)
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
        return atomic_write_bytes(path, iio.imwrite("<bytes>", arr, extension=".jpg", quality=95))
    raise ValueError(f"unsupported image extension {ext!r}")
