"""EXR alpha: OpenEXR defines RGBA (and grey + A) as premultiplied (associated) colour; ``read_image`` returns
straight colour, as for PNG, and ``write_image`` takes straight colour and stores it premultiplied. References are
built with the OpenEXR library directly, from the format's definition: stored colour = straight colour * alpha, and
"over" a background is stored colour + (1 - alpha) * background."""

import numpy as np
import pytest

from rwf_render.imgio import read_image, write_image

OpenEXR = pytest.importorskip("OpenEXR")


def _write_exr(path, channels):
    """An EXR written by the OpenEXR library itself (a fresh header each time: OpenEXR.File fills it in)."""
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(str(path))


def _straight_rgba(h=5, w=6, seed=0):
    """Straight colour with HDR values up to 8 (beyond white), alpha in (0, 1] plus one fully opaque pixel."""
    rng = np.random.default_rng(seed)
    rgb = (rng.random((h, w, 3)) * 8.0).astype(np.float32)
    alpha = rng.uniform(0.05, 1.0, (h, w, 1)).astype(np.float32)
    alpha[0, 0] = 1.0
    return rgb, alpha


def _exr_channels(path):
    with OpenEXR.File(str(path)) as f:
        return {name: np.asarray(c.pixels) for name, c in f.channels().items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_premultiplied_exr_reads_as_straight_colour_that_composites_correctly(tmp_path, dtype):
    """A premultiplied EXR written by another tool was read as straight colour: every translucent pixel came out
    darker by its alpha, and compositing it over a background darkened it twice."""
    rgb, alpha = _straight_rgba()
    stored = np.concatenate([rgb * alpha, alpha], axis=-1).astype(dtype)  # premultiplied by hand
    _write_exr(tmp_path / "premult.exr", {"RGBA": stored})
    pixels, info = read_image(tmp_path / "premult.exr")
    assert pixels.shape == (5, 6, 4) and info["channels"] == 4 and pixels.dtype == np.float32
    a = stored[..., 3:].astype(np.float64)
    expected = stored[..., :3].astype(np.float64) / a  # the straight colour the file encodes
    assert np.allclose(pixels[..., :3], expected, rtol=1e-6, atol=0)
    assert pixels[..., :3].max() > 4.0  # HDR values kept, not clipped to 1
    assert np.array_equal(pixels[..., 3:], stored[..., 3:].astype(np.float32))
    # the pipeline's straight "over" reproduces OpenEXR's premultiplied "over"
    background = np.array([0.2, 0.7, 0.4])
    ours = pixels[..., 3:] * pixels[..., :3] + (1 - pixels[..., 3:]) * background
    reference = stored[..., :3].astype(np.float64) + (1 - a) * background
    assert np.allclose(ours, reference, rtol=1e-6, atol=1e-6)


def test_written_rgba_exr_is_premultiplied_and_round_trips(tmp_path):
    """``write_image`` stored straight colour under the RGBA name, which other EXR readers take as premultiplied
    (brighter than meant wherever alpha < 1); straight colour round-trips through write + read."""
    rgb, alpha = _straight_rgba(seed=1)
    straight = np.concatenate([rgb, alpha], axis=-1)
    path = tmp_path / "out.exr"
    write_image(path, straight)
    on_disk = _exr_channels(path)["RGBA"]
    assert np.allclose(on_disk[..., :3], rgb * alpha, rtol=1e-6, atol=0)
    assert np.array_equal(on_disk[..., 3:], alpha)
    back, info = read_image(path)
    assert back.shape == straight.shape and info["channels"] == 4
    assert np.allclose(back[..., :3], rgb, rtol=3e-7, atol=0)  # two float32 roundings: (c * a) / a
    assert np.array_equal(back[..., 3:], alpha)


def test_alpha_zero_pixels_read_as_black_not_nan(tmp_path):
    """Where alpha is 0 the straight colour is undefined: read as 0 (no division by zero, no NaN), whether the file
    stores 0 there or light (an emitting, uncovering pixel); a colour written under alpha 0 is not kept."""
    rgb, alpha = _straight_rgba(3, 4, seed=2)
    alpha[1, 1] = alpha[2, 3] = 0.0
    stored = np.concatenate([rgb * alpha, alpha], axis=-1)
    stored[2, 3, :3] = (3.0, 0.5, 0.0)  # light at alpha 0
    _write_exr(tmp_path / "zero.exr", {"RGBA": stored})
    pixels, _ = read_image(tmp_path / "zero.exr")
    assert np.isfinite(pixels).all()
    assert np.array_equal(pixels[1, 1], np.zeros(4, np.float32)) and np.array_equal(pixels[2, 3], np.zeros(4))
    keep = alpha[..., 0] > 0
    assert np.allclose(pixels[keep, :3], rgb[keep], rtol=3e-7, atol=0)

    write_image(tmp_path / "written.exr", np.concatenate([rgb, alpha], axis=-1))
    back, _ = read_image(tmp_path / "written.exr")
    assert np.array_equal(back[~keep], np.zeros((2, 4), np.float32))
    assert np.allclose(back[keep, :3], rgb[keep], rtol=3e-7, atol=0)


def test_premultiplied_grey_and_alpha_exr_reads_as_straight_grey(tmp_path):
    """OpenEXR premultiplies every colour channel, the luminance Y of a grey + alpha file included."""
    rgb, alpha = _straight_rgba(4, 3, seed=3)
    y = rgb[..., 0]
    _write_exr(tmp_path / "ya.exr", {"Y": y * alpha[..., 0], "A": alpha[..., 0]})
    pixels, info = read_image(tmp_path / "ya.exr")
    assert pixels.shape == (4, 3, 4) and info["channels"] == 4
    for c in range(3):
        assert np.allclose(pixels[..., c], y, rtol=3e-7, atol=0)
    assert np.array_equal(pixels[..., 3], alpha[..., 0])


def test_exr_without_alpha_is_unchanged(tmp_path):
    """RGB and Y files hold no alpha: their HDR values are read exactly as stored."""
    rgb, _ = _straight_rgba(seed=4)
    _write_exr(tmp_path / "rgb.exr", {"RGB": rgb})
    _write_exr(tmp_path / "y.exr", {"Y": rgb[..., 1]})
    assert np.array_equal(read_image(tmp_path / "rgb.exr")[0], rgb)
    assert np.array_equal(read_image(tmp_path / "y.exr")[0], rgb[..., 1:2])


@pytest.mark.parametrize("kind", ["rgb8", "rgba8", "grey16", "float32"])
def test_lzw_tiffs_decode_without_imagecodecs(tmp_path, kind):
    """LZW is the compression photo software writes most; tifffile needs imagecodecs for it (not a dependency),
    so such a TIFF failed to load. Pillow decodes it, at the stored bit depth."""
    from PIL import Image

    rng = np.random.default_rng(0)
    data = {"rgb8": (rng.random((6, 9, 3)) * 255).astype(np.uint8),
            "rgba8": (rng.random((6, 9, 4)) * 255).astype(np.uint8),
            "grey16": (rng.random((6, 9)) * 65535).astype(np.uint16),
            "float32": rng.random((6, 9)).astype(np.float32)}[kind]
    path = tmp_path / "x.tif"
    Image.fromarray(data).save(path, compression="tiff_lzw")
    pixels, info = read_image(path)
    scale = {np.uint8: 255.0, np.uint16: 65535.0, np.float32: 1.0}[data.dtype.type]
    want = data.reshape(6, 9, -1).astype(np.float64) / scale
    assert info["bit_depth"] == data.dtype.itemsize * 8 and pixels.shape == want.shape
    assert np.abs(pixels - want).max() < 1e-6
