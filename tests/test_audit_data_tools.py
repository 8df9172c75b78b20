"""Audit of the data tools: downscale of sizes the factor does not divide, unreadable poses_bounds.npy files, image
names with runs of spaces in COLMAP text models."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from data_tools.cli import main
from data_tools.colmap_io import read_model, write_model
from data_tools.common import load_image, save_image
from rwf_render.cameras import look_at, project
from rwf_render.datasets import load_transforms

from test_data_tools_bad_input_more import _fails_cleanly, _llff  # noqa: E402  (tests/ is on sys.path under pytest)
from test_data_tools_colmap import _synthetic_model  # noqa: E402


# -- downscale -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("top", [
    {"camera_angle_x": 0.9},  # Blender: focal from the angle and the image width, principal point at the center
    {"fl_x": 40.0, "fl_y": 41.0},  # instant-ngp without cx, cy: the center of the image
])
def test_downscale_by_a_factor_that_does_not_divide_the_size_keeps_projections_exact(tmp_path, top):
    """A 50x35 image downscaled by 3 is cropped to 48x33, then 16x11: the camera is the old one divided by 3.
    Intrinsics left to the loader (camera_angle_x, cx = w / 2) used to be derived from the new size instead:
    cx 8 instead of 8.33 and a focal 4 % short, so every pixel moved (up to half a pixel at this size)."""
    n, (w, h), k = 2, (50, 35), 3
    (tmp_path / "ds" / "train").mkdir(parents=True)
    eyes = torch.tensor([[3.0, 0.5 * i, 1.0] for i in range(n)], dtype=torch.float64)
    c2w = look_at(eyes, torch.zeros(3, dtype=torch.float64))
    frames = []
    for i in range(n):
        save_image(tmp_path / "ds" / "train" / f"r_{i}.png", np.zeros((h, w, 3), np.uint8))
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w[i].tolist() + [[0, 0, 0, 1]]})
    (tmp_path / "ds" / "transforms_train.json").write_text(json.dumps({**top, "frames": frames}))
    assert main(["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "small"), "-k", str(k)]) == 0
    before, after = load_transforms(tmp_path / "ds", "train"), load_transforms(tmp_path / "small", "train")
    assert (after.cameras.width == w // k).all() and (after.cameras.height == h // k).all()
    for name in ("fx", "fy", "cx", "cy"):
        torch.testing.assert_close(getattr(after.cameras, name), getattr(before.cameras, name) / k)
    pts = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (20, 3)))
    for i in range(n):  # the crop keeps the origin: a point's pixel is its old pixel divided by k
        old, _ = project(pts, before.cameras[i])
        new, _ = project(pts, after.cameras[i])
        torch.testing.assert_close(new, old / k)


def test_downscale_by_a_dividing_factor_leaves_the_json_as_it_was(tmp_path):
    """Sizes that the factor divides keep their implicit intrinsics (camera_angle_x): nothing is added."""
    (tmp_path / "ds" / "train").mkdir(parents=True)
    save_image(tmp_path / "ds" / "train" / "r_0.png", np.zeros((24, 36, 3), np.uint8))
    frame = {"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}
    (tmp_path / "ds" / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.9, "frames": [frame]}))
    assert main(["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "half"), "-k", "2"]) == 0
    meta = json.loads((tmp_path / "half" / "transforms_train.json").read_text())
    assert set(meta["frames"][0]) == {"file_path", "transform_matrix"}


# -- llff ----------------------------------------------------------------------------------------------------------
def _huge_header(path):
    """A .npy header claiming 10^11 rows over a file of a few bytes (a corrupt or foreign file)."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 17), }"
    header += " " * (118 - 10 - len(header) - 1) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64)


@pytest.mark.parametrize("write", [
    lambda p: p.write_bytes(b""),  # was EOFError, a traceback
    lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),  # was zipfile.BadZipFile, a traceback
    _huge_header,  # was "out of memory" (exit 1): np.load allocated 12 TiB for it
], ids=["empty", "bad-zip", "huge-header"])
def test_llff_unreadable_poses_bounds_is_one_line(tmp_path, capsys, write):
    _llff(tmp_path)
    write(tmp_path / "poses_bounds.npy")
    _fails_cleanly(capsys, ["data", "llff", str(tmp_path), str(tmp_path / "out")], "not a .npy array", tmp_path)


def test_llff_still_reads_a_good_file(tmp_path):
    (tmp_path / "scene").mkdir()
    _llff(tmp_path / "scene")
    assert main(["data", "llff", str(tmp_path / "scene"), str(tmp_path / "out")]) == 0  # OUT not inside DIR
    assert len(load_transforms(tmp_path / "out", "all")) == 3


# -- colmap text models --------------------------------------------------------------------------------------------
def test_text_model_keeps_image_names_with_runs_of_spaces(tmp_path):
    """COLMAP writes the name as the rest of the pose line; splitting it on whitespace and joining the words with
    one space turned "a  b.png" into "a b.png", so the text twin of a binary model that converts could not be
    converted (the image was "missing")."""
    model = _synthetic_model(tmp_path, {"PINHOLE": [70.0, 71.0, 32, 23], "SIMPLE_PINHOLE": [70.0, 32, 23]})
    names = {1: "two  spaces.png", 2: "sub dir/a  b  c.png"}
    for iid, name in names.items():
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp_path / "images" / model.images[iid].name, tmp_path / "images" / name)
        model.images[iid].name = name
    write_model(model, tmp_path / "txt", "txt")
    write_model(model, tmp_path / "bin", "bin")
    assert {im.name for im in read_model(tmp_path / "txt").images.values()} == set(names.values())
    for ext in ("txt", "bin"):
        assert main(["data", "colmap", str(tmp_path / ext), str(tmp_path / "images"), str(tmp_path / f"o_{ext}")]) == 0
    frames = [json.loads((tmp_path / f"o_{ext}" / "transforms.json").read_text())["frames"] for ext in ("txt", "bin")]
    assert frames[0] == frames[1]
    assert sorted(f["file_path"] for f in frames[0]) == sorted(f"images/{n}" for n in names.values())
    assert not math.isnan(frames[0][0]["transform_matrix"][0][0])


def test_downscale_of_grey_and_alpha_images_does_not_bleed_transparent_pixels(tmp_path):
    """RGBA images were averaged with premultiplied alpha, grey + alpha (LA) ones were not: the colour of
    transparent pixels bled into the edges (a white object on a transparent black background came out grey)."""

    img = np.zeros((4, 4, 2), np.uint8)
    img[:, :2] = (255, 255)  # left half: opaque white; right half: transparent (colour 0)
    (tmp_path / "ds").mkdir()
    save_image(tmp_path / "ds" / "a.png", img)
    meta = {"fl_x": 4.0, "fl_y": 4.0, "cx": 2.0, "cy": 2.0, "w": 4, "h": 4,
            "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "ds" / "transforms.json").write_text(json.dumps(meta))
    assert load_image(tmp_path / "ds" / "a.png").shape == (4, 4, 2)
    assert main(["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "q"), "-k", "4"]) == 0
    out = load_image(tmp_path / "q" / "a.png")
    assert out.shape == (1, 1, 2) and out[0, 0, 1] == 128  # half covered
    assert out[0, 0, 0] == 255  # the covered half is white (was 128: half the black of the transparent half)


def test_downscale_finds_masks_named_with_windows_separators(tmp_path):
    """A mask_path written on Windows (masks\\m_0.png) was joined literally: 'missing' here."""
    (tmp_path / "ds" / "train").mkdir(parents=True)
    (tmp_path / "ds" / "masks").mkdir()
    save_image(tmp_path / "ds" / "train" / "r_0.png", np.zeros((24, 36, 3), np.uint8))
    save_image(tmp_path / "ds" / "masks" / "m_0.png", np.full((24, 36), 255, np.uint8))
    frame = {"file_path": "train\\r_0.png", "mask_path": "masks\\m_0.png", "transform_matrix": np.eye(4).tolist()}
    (tmp_path / "ds" / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.9, "frames": [frame]}))
    assert main(["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "half"), "-k", "2"]) == 0
    meta = json.loads((tmp_path / "half" / "transforms_train.json").read_text())
    assert meta["frames"][0]["mask_path"] == "masks/m_0.png"
    assert load_image(tmp_path / "half" / "masks" / "m_0.png").shape[:2] == (12, 18)
