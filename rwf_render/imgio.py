"""Reading and writing images: PNG, JPEG, TIFF and EXR; grey, RGB and RGBA; 8-bit, 16-bit and float.

Every reader returns float32 (H, W, C) with C in {1, 3, 4}, integer formats scaled to [0, 1] by their full range.
PNG goes through pypng because imageio's Pillow plugin silently reduces 16-bit RGB PNGs to 8 bits. CMYK (JPEG,
TIFF) becomes RGB, palette and min-is-white TIFFs their colours; transparency becomes straight alpha (a PNG's
transparent colour, an EXR's grey + alpha, a TIFF's or an EXR's premultiplied alpha divided out); animations,
multi-page TIFFs, volumes and multi-part EXRs are refused rather than read as channels or in part. Writers take
straight alpha too; an EXR stores it premultiplied, as OpenEXR defines RGBA.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from .errors import UserError
from .rundir import atomic_path, atomic_write_bytes, check_output_folder

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff", b"MM\x00*": "tiff", b"II+\x00": "tiff", b"MM\x00+": "tiff",
    b"v/1\x01": "exr",
}


def sniff_format(path: Path) -> str | None:
    """The image format from the file's first bytes (not its name), or None."""
    with open(path, "rb") as f:
        return format_of(f.read(8))


def format_of(head: bytes) -> str | None:
    """The image format of a file whose first bytes are ``head`` (at least 8 of them), or None."""
    return next((fmt for magic, fmt in _MAGIC.items() if head.startswith(magic)), None)


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


def _png_chunks(path: Path) -> dict[bytes, bytes]:
    """The chunks before the image data: name -> the first one's payload (IHDR, PLTE, tRNS, acTL, ...)."""
    chunks: dict[bytes, bytes] = {}
    with open(path, "rb") as f:
        f.seek(8)
        while len(head := f.read(8)) == 8:
            length, name = int.from_bytes(head[:4], "big"), head[4:]
            if name == b"IDAT":
                break
            payload = f.read(min(length, 64))  # enough for every header chunk this reader looks at
            chunks.setdefault(name, payload)
            f.seek(length - len(payload) + 4, 1)  # the rest of the payload and the CRC
    return chunks


def _read_png(path: Path) -> tuple[np.ndarray, int]:
    with open(path, "rb") as f:
        header = f.read(26)
    chunks = _png_chunks(path)
    frames = int.from_bytes(chunks[b"acTL"][:4], "big") if len(chunks.get(b"acTL", b"")) >= 4 else 1
    if frames > 1:  # pypng reads only the default image of an APNG: refused at every bit depth, as below
        raise UserError(f"{path}: an animated PNG ({frames} frames); save the frame to fit as a still PNG")
    if (len(header) == 26 and header[12:16] == b"IHDR" and header[24] == 8 and header[25] in (0, 2, 4, 6)
            and b"tRNS" not in chunks):
        # 8-bit grey/RGB/RGBA: Pillow's C decoder (pypng is pure Python and ~50x slower); it rejects truncated data.
        # A tRNS chunk (a transparent colour) goes to pypng, which turns it into alpha (imageio drops it)
        import imageio.v3 as iio  # noqa: PLC0415

        try:
            raw = np.asarray(iio.imread(path, plugin="pillow"))
        except Exception:
            import png  # noqa: PLC0415

            with open(path, "rb") as f:  # Pillow says only "can not handle the given uri"; pypng's walk over
                for _ in png.Reader(file=f).chunks():  # the chunks (nothing decoded) names a bad checksum or chunk
                    pass
            raise
        if raw.ndim == 4 or (raw.ndim == 3 and header[25] == 0):  # every frame of an animated PNG (APNG)
            raise UserError(f"{path}: an animated PNG ({raw.shape[0]} frames); save the frame to fit as a still PNG")
        return _to_float(raw), 8
    import png  # noqa: PLC0415

    with open(path, "rb") as f:  # pypng given a file name leaves the file open (a ResourceWarning per image)
        reader = png.Reader(file=f)
        width, height, rows, info = reader.asDirect()  # expands palettes and low bit depths
        planes, depth = info["planes"], info["bitdepth"]
        try:
            data = np.vstack([np.asarray(r, dtype=np.uint16 if depth > 8 else np.uint8) for r in rows])
        except IndexError:  # pypng looks each pixel's index up in the palette (PLTE) and says only "IndexError"
            if reader.plte is None:
                raise
            raise UserError(f"{path}: corrupt PNG: a pixel's palette index is beyond its {len(reader.plte) // 3}-"
                            "colour palette (PLTE chunk); re-save the image from its source") from None
    data = data.reshape(height, width, planes)
    if depth not in (8, 16):  # 1, 2, 4-bit greys kept at their own range
        return data.astype(np.float32) / (2**depth - 1), depth
    return _to_float(data), depth


def _read_jpeg(path: Path) -> tuple[np.ndarray, int]:
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as im:
        im.load()  # raises on truncated data
        if im.mode not in ("L", "RGB"):  # CMYK (Adobe's inverted flavour included), YCCK, 12-bit: to RGB
            im = im.convert("RGB")
        return _to_float(np.asarray(im)), 8


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation of an image file (1..8; 1: upright as stored), 1 when it has none or Pillow cannot
    open it. Phones store a portrait photo sideways and tag it 6 (rotate 90 degrees clockwise to view)."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001  (no EXIF to read: as stored)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` (H, W, C) as a viewer shows them under EXIF ``orientation`` (the transform Pillow's
    ``ImageOps.exif_transpose`` applies): 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise."""
    ops = {1: lambda p: p, 2: lambda p: p[:, ::-1], 3: lambda p: p[::-1, ::-1], 4: lambda p: p[::-1],
           5: lambda p: p.transpose(1, 0, 2), 6: lambda p: np.rot90(p, -1), 7: lambda p: p[::-1, ::-1].transpose(1, 0, 2),
           8: lambda p: np.rot90(p, 1)}
    return np.ascontiguousarray(ops[orientation](pixels))


def tiff_samples(path: str | os.PathLike) -> tuple[np.ndarray, int, object, tuple]:
    """The stored samples of a single-image TIFF, (H, W) or (H, W, S) in their own type (what depth maps need:
    32-bit and signed integers as stored), its photometric interpretation, colormap and extra samples (1:
    associated, premultiplied alpha; 2: unassociated alpha)."""
    import tifffile  # noqa: PLC0415

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        try:
            raw, axes = np.asarray(series.asarray()), series.axes
        except ValueError as e:  # LZW, deflate, ...: codecs tifffile takes from imagecodecs, not installed here
            if "imagecodecs" not in str(e) or len(tif.pages) != 1:
                raise
            raw = _pillow_samples(path, int(page.bitspersample), e)
            axes = "YX" if raw.ndim == 2 else "YXS"
        photometric, colormap = int(page.photometric), page.colormap
        extrasamples = tuple(int(e) for e in page.extrasamples)
    single = [i for i, a in enumerate(axes) if a not in "YXS" and raw.shape[i] == 1]  # a stack of one image
    raw, axes = raw.squeeze(axis=tuple(single)), "".join(a for i, a in enumerate(axes) if i not in single)
    if set(axes) - {"Y", "X", "S"}:
        raise UserError(f"{path}: a multi-page TIFF or volume (axes {axes}, shape {raw.shape}); only single images "
                        "are supported")
    if axes == "SYX":  # planar configuration "separate": one plane per sample
        raw = np.moveaxis(raw, 0, -1)
    return raw, photometric, colormap, extrasamples


def _pillow_samples(path, bits: int, why: Exception) -> np.ndarray:
    """A single-image TIFF that tifffile cannot decode without imagecodecs (LZW, photo software's usual), by
    Pillow; tifffile's error ``why`` when Pillow cannot give the samples at their stored ``bits``."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            raw = np.asarray(im)
    except (OSError, ValueError):
        raise why from None
    if raw.dtype == bool or raw.dtype.itemsize * 8 != bits:
        raise why
    return raw


def _read_tiff(path: Path) -> tuple[np.ndarray, int]:
    raw, photometric, colormap, extrasamples = tiff_samples(path)
    depth = raw.dtype.itemsize * 8
    if photometric == 3 and colormap is not None and raw.ndim == 2:  # palette: indices into 16-bit colours
        return (np.asarray(colormap).T[raw].astype(np.float32) / 65535.0), 16
    pixels = _to_float(raw)
    colours = {0: 1, 1: 1, 2: 3}.get(photometric)
    if colours and pixels.ndim == 3 and 1 in extrasamples and colours + extrasamples.index(1) < pixels.shape[2]:
        # associated alpha: the colours are stored multiplied by it; straight colour, as every other reader gives
        alpha = pixels[..., colours + extrasamples.index(1)][..., None]
        straight = pixels[..., :colours] / np.where(alpha > 0, alpha, 1)
        pixels = np.concatenate([straight if raw.dtype.kind == "f" else np.clip(straight, 0, 1),
                                 pixels[..., colours:]], -1)
    if photometric == 0:  # min-is-white grey: the grey sample only, an alpha stays as it is
        grey = pixels[..., :1] if pixels.ndim == 3 else pixels
        grey = (grey.max() if raw.dtype.kind == "f" else 1.0) - grey
        pixels = np.concatenate([grey, pixels[..., 1:]], -1) if pixels.ndim == 3 else grey
    if photometric == 5:  # separated: CMYK ink (naive conversion), alpha kept
        if pixels.ndim != 3 or pixels.shape[2] not in (4, 5):
            raise UserError(f"{path}: a separated (ink) TIFF with {pixels.shape[-1]} inks; only CMYK is supported")
        rgb = (1 - pixels[..., :3]) * (1 - pixels[..., 3:4])
        pixels = np.concatenate([rgb, pixels[..., 4:]], -1)
    return pixels, depth


@contextlib.contextmanager
def _quiet_output(messages: list):
    """Collect in ``messages`` what is printed on stdout and stderr (the Python streams, and file descriptors 1
    and 2 for C libraries) instead of showing it: OpenEXR prints its own lines about a corrupt file before
    raising, and the rule is one line per error."""
    if threading.current_thread() is not threading.main_thread():
        yield  # file descriptors belong to the whole process: a reader thread (the viewer's) leaves them alone
        return
    streams = io.StringIO()
    with tempfile.TemporaryFile() as tmp:
        saved = []
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            stream.flush()
            saved.append(os.dup(fd))
            os.dup2(tmp.fileno(), fd)
        try:
            with contextlib.redirect_stdout(streams), contextlib.redirect_stderr(streams):
                yield
        finally:
            for stream, fd, old in ((sys.stdout, 1, saved[0]), (sys.stderr, 2, saved[1])):
                stream.flush()
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            text = streams.getvalue() + tmp.read().decode("utf-8", "replace")
            messages += [line for line in text.splitlines() if line.strip()]


def _unpremultiply(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour from OpenEXR's associated (premultiplied) colour: colour / alpha where alpha > 0, not
    clipped (HDR values stay above 1). Where alpha <= 0 the straight colour is undefined and returned as 0 (black):
    the light an EXR may store there (an emitting, uncovering pixel) has no straight-alpha form.

    Args:
        colour: (H, W, C) premultiplied colour.
        alpha: (H, W, 1).
    Returns:
        float32 (H, W, C).
    """
    a = alpha.astype(np.float64)
    straight = np.divide(colour.astype(np.float64), a, out=np.zeros(colour.shape), where=a > 0)
    return straight.astype(np.float32)


def _read_exr(path: Path) -> tuple[np.ndarray, int]:
    """RGBA, RGB, Y (or L, or a lone R) with its A: float32 (H, W, C), straight colour (see ``_unpremultiply``)."""
    import OpenEXR  # noqa: PLC0415

    printed: list[str] = []
    try:
        with _quiet_output(printed), OpenEXR.File(str(path)) as f:
            parts = [p.name() or str(i) for i, p in enumerate(f.parts)]
            channels = {name: np.asarray(c.pixels) for name, c in f.channels().items()}
    except Exception as e:
        found = [line for line in printed if "EXR_ERR" in line] or printed
        why = found[0].split(": ", 1)[-1] if found else f"{type(e).__name__}: {e}"
        raise UserError(f"{path}: cannot decode EXR image ({why})") from None
    if len(parts) > 1:  # a stereo pair, render layers: the first alone is not the image, as a TIFF's first page
        raise UserError(f"{path}: a multi-part EXR ({len(parts)} parts: {', '.join(parts[:4])}"
                        f"{', ...' if len(parts) > 4 else ''}); save the part to fit as an EXR of its own")
    if "RGBA" in channels:  # OpenEXR's colour is premultiplied by its alpha: straight colour, as PNG gives
        rgba = channels["RGBA"].astype(np.float32)
        return np.concatenate([_unpremultiply(rgba[..., :3], rgba[..., 3:]), rgba[..., 3:]], axis=-1), 32
    if "RGB" in channels:
        return channels["RGB"].astype(np.float32), 32
    grey = next((key for key in ("Y", "L") if key in channels), None)
    if grey is None and "R" in channels and not {"G", "B"} & channels.keys():
        grey = "R"
    if grey is not None and "A" in channels:  # grey + alpha (read_image makes it RGBA), premultiplied like RGBA
        alpha = channels["A"].astype(np.float32)[..., None]
        return np.concatenate([_unpremultiply(channels[grey][..., None], alpha), alpha], axis=-1), 32
    if grey is not None:
        return channels[grey].astype(np.float32)[..., None], 32
    raise ValueError(f"no RGB, RGBA or Y channels (has {', '.join(channels)})")


def read_image(path: str | os.PathLike, grey_alpha: bool = False) -> tuple[np.ndarray, dict]:
    """Read an image file.

    Args:
        grey_alpha: keep grey + alpha as two channels (the image fit's: a grey image is fitted and written grey);
            else (the NeRF loader, data tools) it becomes RGBA, the grey repeated.
    Returns:
        pixels: float32 (H, W, C), C in {1, 3, 4} (2 with ``grey_alpha``); integer formats in [0, 1], float formats
            as stored.
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
        reader = {"png": _read_png, "exr": _read_exr, "jpeg": _read_jpeg, "tiff": _read_tiff}[fmt]
        pixels, depth = reader(path)
    except UserError:
        raise
    except Exception as e:  # decoders raise many types for corrupt data; imageio wraps the decoder's in its own
        while (e.__cause__ or e.__context__) is not None and "unknown error" in str(e):
            e = e.__cause__ or e.__context__
        why = " ".join(str(e).split())
        why = why.removeprefix(f"{type(e).__name__}: ")[:300]  # pypng's messages repeat their type
        raise UserError(f"{path}: cannot decode {fmt.upper()} image ({type(e).__name__}: {why})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim == 4 and pixels.shape[0] == 1:  # single-page stack
        pixels = pixels[0]
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise UserError(f"{path}: zero-size or unsupported image shape {pixels.shape}")
    if pixels.shape[2] == 2 and not grey_alpha:  # grey + alpha: RGBA, so the transparency reaches the NeRF loader
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
    if pixels.shape[2] not in ((1, 2, 3, 4) if grey_alpha else (1, 3, 4)):
        raise UserError(f"{path}: unsupported number of channels {pixels.shape[2]}")
    if not np.isfinite(pixels).all():
        raise UserError(f"{path}: image holds NaN or infinite values")
    info = {"format": fmt, "bit_depth": depth, "channels": int(pixels.shape[2]),
            "height": int(pixels.shape[0]), "width": int(pixels.shape[1])}
    return np.ascontiguousarray(pixels, dtype=np.float32), info


WRITE_SUFFIXES = (".png", ".exr", ".tif", ".tiff", ".jpg", ".jpeg")


def output_image_path(out: str | os.PathLike | None, default: Path) -> Path:
    """Where a render goes: ``out`` (a file, or an existing folder that receives ``default``'s name), else
    ``default``; UserError, before any rendering, for a suffix ``write_image`` cannot write or a missing folder."""
    path = Path(out) if out else Path(default)
    if path.is_dir():
        path = path / Path(default).name
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise UserError(f"{path}: cannot tell the image format from the suffix; use one of "
                        f"{', '.join(WRITE_SUFFIXES)}")
    check_output_folder(path)
    return path


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
    """Write by extension: .png (8/16-bit), .exr (float32), .tif/.tiff (16-bit or float), .jpg (8-bit).

    ``pixels`` (H, W, C) with C in {1, 2, 3, 4}; two and four channels are grey or colour and straight alpha, as
    ``read_image`` returns them. An EXR stores the colour multiplied by alpha (OpenEXR's RGBA, and Y with A, are
    premultiplied), so ``read_image`` gives back the straight colour (to float32 rounding) where alpha > 0, and 0
    where alpha is 0. A JPEG has no alpha: the grey or colour alone is written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if ext == ".png":
        return write_png(path, pixels, bits)
    if ext == ".exr":
        import OpenEXR  # noqa: PLC0415

        c = pixels.shape[2]
        if c in (2, 4):  # straight colour -> premultiplied (associated) colour, the meaning OpenEXR gives alpha
            colour = pixels[..., :-1].astype(np.float64) * pixels[..., -1:].astype(np.float64)
            pixels = np.concatenate([colour.astype(np.float32), pixels[..., -1:]], axis=-1)
        if c == 2:
            channels = {"Y": pixels[..., 0], "A": pixels[..., 1]}
        else:
            channels = {{1: "Y", 3: "RGB", 4: "RGBA"}[c]: pixels[..., 0] if c == 1 else pixels}
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with atomic_path(path) as tmp:
            OpenEXR.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(tmp)
        return None
    import imageio.v3 as iio  # noqa: PLC0415

    if ext in (".tif", ".tiff"):
        arr = pixels if bits == 32 else np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
        # grey + alpha: two samples per pixel, the second straight alpha (else it reads as a volume of 2 planes)
        extra = ({"photometric": "minisblack", "planarconfig": "contig", "extrasamples": ["unassalpha"]}
                 if arr.ndim == 3 and arr.shape[2] == 2 else {})
        return atomic_write_bytes(path, iio.imwrite("<bytes>", arr, extension=".tif", **extra))
    if ext in (".jpg", ".jpeg"):
        arr = np.round(np.clip(pixels[..., :1] if pixels.shape[2] < 3 else pixels[..., :3], 0, 1) * 255)
        arr = arr.astype(np.uint8)
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
        return atomic_write_bytes(path, iio.imwrite("<bytes>", arr, extension=".jpg", quality=95))
    raise ValueError(f"unsupported image extension {ext!r}")
