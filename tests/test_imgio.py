"""Image reading: every format, channel count and bit depth round-trips; corrupt input is a UserError."""

import struct
import zlib

import numpy as np
import pytest

from rwf_render.errors import UserError
from rwf_render.imgio import read_image, write_image


def _smooth(h, w, c):
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [0.5 + 0.4 * np.sin(3 * x + k) * np.cos(2 * y - k) for k in range(c)]
    return np.stack(chans, axis=-1).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("ext,bits,tol", [(".png", 8, 0.5 / 255), (".png", 16, 0.5 / 65535), (".exr", 32, 0),
                                          (".tif", 16, 0.5 / 65535), (".tif", 32, 0), (".jpg", 8, 0.06)])
def test_round_trip(tmp_path, channels, ext, bits, tol):
    if ext == ".jpg" and channels == 4:
        pytest.skip("JPEG has no alpha")
    img = _smooth(20, 30, channels)
    path = tmp_path / f"img{ext}"
    write_image(path, img, bits)
    back, info = read_image(path)
    assert back.shape == img.shape and back.dtype == np.float32
    assert info["channels"] == channels and info["bit_depth"] == bits
    assert np.abs(back - img).max() <= tol + 1e-7


def test_16_bit_png_keeps_16_bits(tmp_path):
    """Levels 1/65535 apart stay apart (imageio's Pillow path would merge them into one 8-bit level)."""
    img = (np.arange(2 * 3 * 3).reshape(2, 3, 3) + 30000).astype(np.float32) / 65535
    write_image(tmp_path / "a.png", img, 16)
    back, _ = read_image(tmp_path / "a.png")
    assert len(np.unique(np.round(back * 65535))) == 18


def test_format_is_sniffed_not_guessed_from_the_name(tmp_path):
    img = _smooth(8, 8, 3)
    write_image(tmp_path / "a.png", img)
    (tmp_path / "a.png").rename(tmp_path / "really_png.jpg")
    back, info = read_image(tmp_path / "really_png.jpg")
    assert info["format"] == "png" and np.abs(back - img).max() < 1 / 255


def _png_with_header(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated", "zero_size", "nan_exr"])
def test_bad_files_are_user_errors(tmp_path, case):
    path = tmp_path / "bad.png"
    if case == "directory":
        path = tmp_path
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not an image\n")
    elif case == "truncated":
        write_image(path, _smooth(64, 64, 3))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "zero_size":
        path.write_bytes(_png_with_header(0, 0))
    elif case == "nan_exr":
        path = tmp_path / "nan.exr"
        img = _smooth(4, 4, 3)
        img[1, 1, 1] = np.nan
        write_image(path, img)
    with pytest.raises(UserError) as err:
        read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_grey_with_alpha_keeps_its_alpha(tmp_path):
    """A grey + alpha PNG reads as RGBA: grey in each colour channel, alpha kept (it was dropped, so transparent
    pixels trained as their hidden grey)."""
    import imageio.v3 as iio

    la = np.zeros((4, 5, 2), np.uint8)
    la[..., 0] = np.arange(20).reshape(4, 5) * 10
    la[..., 1] = np.arange(20).reshape(4, 5)[:, ::-1] * 12
    iio.imwrite(tmp_path / "la.png", la)
    pixels, info = read_image(tmp_path / "la.png")
    assert pixels.shape == (4, 5, 4) and info["channels"] == 4
    for c in range(3):
        assert np.array_equal(np.round(pixels[..., c] * 255), la[..., 0])
    assert np.array_equal(np.round(pixels[..., 3] * 255), la[..., 1])


def test_a_tiff_stack_of_one_image_is_that_image(tmp_path):
    """A single image saved with a leading axis of length 1 (axes QYXS) is not a multi-page TIFF."""
    import tifffile

    rgb = (np.random.default_rng(1).random((6, 7, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "one.tif", rgb[None])
    pixels, info = read_image(tmp_path / "one.tif")
    assert pixels.shape == (6, 7, 3) and np.array_equal(np.round(pixels * 255).astype(np.uint8), rgb)
    tifffile.imwrite(tmp_path / "two.tif", np.stack([rgb, rgb]))
    with pytest.raises(UserError, match="multi-page"):
        read_image(tmp_path / "two.tif")
