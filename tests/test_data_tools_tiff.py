"""``rwf data downscale`` of TIFF photos and masks: the output means what the input meant to ``rwf fit``. The tool
read a TIFF's raw samples and wrote them back under another photometric interpretation, so a 1-bit mask came out
inverted (the fit trained on the pixels the user had left out), a 1-bit block of 3/4 became 1, and a min-is-white
grey photo came out as its negative."""

import json

import numpy as np
import pytest
import tifffile

from data_tools.cli import main
from data_tools.common import load_image
from rwf_render.cameras import look_at
from rwf_render.imgio import read_image
from rwf_render.nerf_data import read_mask


def _dataset(root, image_name, mask_name=None):
    """Two frames showing ROOT/IMAGE_NAME (and its mask), camera_angle_x only."""
    frames = []
    for i in range(2):
        frame = {"file_path": image_name,
                 "transform_matrix": look_at([3.0 * (1 - 2 * i), 0.0, 1.0], (0.0, 0.0, 0.0)).tolist() + [[0, 0, 0, 1]]}
        if mask_name:
            frame["mask_path"] = mask_name
        frames.append(frame)
    (root / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    return root


def _block_means(x, k):
    h, w = x.shape[0] // k * k, x.shape[1] // k * k
    return x[:h, :w].reshape(h // k, k, w // k, k, *x.shape[2:]).mean(axis=(1, 3))


def test_a_one_bit_tiff_mask_keeps_its_meaning_and_becomes_grey_block_means(tmp_path):
    src = tmp_path / "ds"
    src.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(src / "a.tif", (rng.random((16, 16, 3)) * 255).astype(np.uint8))
    mask = np.zeros((16, 16), bool)
    mask[:, :8] = True  # left half used, right half left out
    mask[0, 8] = True  # one block of the right half 1/4 used
    tifffile.imwrite(src / "mask.tif", mask, photometric="minisblack")  # 1-bit (as Pillow writes mode "1")
    assert np.array_equal(read_mask(src / "mask.tif") > 0.5, mask)  # the source reads as written
    assert main(["data", "downscale", str(_dataset(src, "a.tif", "mask.tif")), str(tmp_path / "half"), "-k", "2"]) == 0
    out = read_mask(tmp_path / "half" / "mask.tif")
    assert np.allclose(out, _block_means(mask.astype(np.float64), 2), atol=0.5 / 255)
    assert out[:, :4].min() == 1.0 and out[0, 4] == pytest.approx(64 / 255)  # not 0 (inverted), not 1 (any-true)


@pytest.mark.parametrize("photometric", ["miniswhite", "minisblack"])
def test_a_grey_tiff_photo_downscales_to_the_block_means_of_what_the_fit_reads(tmp_path, photometric):
    src = tmp_path / "ds"
    src.mkdir()
    grey = (np.random.default_rng(1).random((12, 16)) * 255).astype(np.uint8)
    tifffile.imwrite(src / "a.tif", grey, photometric=photometric)
    seen, _ = read_image(src / "a.tif")  # min-is-white: the fit reads 255 - sample
    assert main(["data", "downscale", str(_dataset(src, "a.tif")), str(tmp_path / "half"), "-k", "2"]) == 0
    out, _ = read_image(tmp_path / "half" / "a.tif")
    assert np.abs(out - _block_means(seen, 2)).max() <= 0.5 / 255 + 1e-6


def test_tiff_samples_keep_their_depth_and_floats_stay_floats(tmp_path):
    rng = np.random.default_rng(2)
    deep = (rng.random((6, 5, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", deep)
    got = load_image(tmp_path / "deep.tif")
    assert got.dtype == np.uint16 and np.array_equal(got, deep)
    wide = (rng.random((6, 5)) * 4 - 1).astype(np.float32)  # floats outside [0, 1] are kept as stored
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    got = load_image(tmp_path / "wide.tif")
    assert got.dtype == np.float32 and np.array_equal(got, wide)
    half = wide.astype(np.float16)  # 16-bit floats are not 16-bit integers
    tifffile.imwrite(tmp_path / "half.tif", half)
    got = load_image(tmp_path / "half.tif")
    assert got.dtype == np.float32 and np.array_equal(got, half.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint32, np.int16, np.int32, np.uint16, np.float32])
def test_tiff_depth_maps_of_any_sample_type_keep_their_depths(tmp_path, dtype):
    """rwf fit reads a TIFF depth map by its stored values, any integer type; downscale read it as a photo (32-bit
    and signed integers as fractions of their range) and wrote 3.5e-7 for 1500 mm (uint32), 34268 for 1500 (int16),
    and rwf data check found nothing wrong."""
    from rwf_render.nerf_depth import read_depth_map

    src = tmp_path / "ds"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", (np.random.default_rng(3).random((16, 16, 3)) * 255).astype(np.uint8))
    z = np.full((16, 16), 1500, dtype=dtype)
    z[:, 8:] = 2500
    tifffile.imwrite(src / "d.tif", z)
    root = _dataset(src, "a.tif")
    meta = json.loads((root / "transforms.json").read_text())
    meta["depth_unit_scale_factor"] = 0.001
    for frame in meta["frames"]:
        frame["depth_file_path"] = "d.tif"
    (root / "transforms.json").write_text(json.dumps(meta))
    assert main(["data", "downscale", str(root), str(tmp_path / "half"), "-k", "2"]) == 0
    got = read_depth_map(tmp_path / "half" / "d.tif", 0.001, 8, 8)
    np.testing.assert_allclose(got[:, :4], 1.5, rtol=1e-6)
    np.testing.assert_allclose(got[:, 4:], 2.5, rtol=1e-6)


def test_a_grey_and_alpha_tiff_photo_stays_one_image(tmp_path):
    """A grey + alpha TIFF came out as a stack of 8 pages of 8x2 (two samples written as an image of two columns),
    which rwf fit and rwf data check refuse."""
    from data_tools.check import check_dataset

    src = tmp_path / "ds"
    src.mkdir()
    rng = np.random.default_rng(4)
    la = (rng.random((16, 16, 2)) * 255).astype(np.uint8)
    la[..., 1] = 255  # opaque: the block means of the grey are the colour's
    tifffile.imwrite(src / "a.tif", la, photometric="minisblack", extrasamples=["unassalpha"])
    seen, _ = read_image(src / "a.tif")
    assert seen.shape == (16, 16, 4)
    assert main(["data", "downscale", str(_dataset(src, "a.tif")), str(tmp_path / "half"), "-k", "2"]) == 0
    out, _ = read_image(tmp_path / "half" / "a.tif")
    assert out.shape == (8, 8, 4) and np.abs(out - _block_means(seen, 2)).max() <= 0.5 / 255 + 1e-6
    assert check_dataset(tmp_path / "half", log=lambda *a: None)[0] == []
