"""Data tools chained with each other and with the loader (a helper's hunt, 30 Nov 2026).

- `rwf data downscale` of a single-file dataset without split lists whose photo is missing left that frame out, so
  the every-8th-frame hold-out moved to other photos (former val views trained on, training views scored): the
  frames held out are now named in val_filenames / test_filenames; lists the source has lose the missing frame.
- A split list naming a file no frame has silently lost the split (val and test gone; a fit scored the training
  views): refused as nerfstudio refuses it, by the loader and by `rwf data check`.
- A frame's own camera_angle_x under a top-level fl_x, on an image whose size is no multiple of the factor: the
  loader reads the frame's angle, downscale took the top's fl_x as explicit, and the focal came out 4 % off.
- `rwf data check` passed depth maps in two units, which every fit refuses, and said nothing of ignored depth_path.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from data_tools.check import check_dataset
from data_tools.downscale import downscale_dataset
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.imgio import write_image

from test_nerf_bad_input_more import _pose  # noqa: E402  (tests/ is on sys.path under pytest)


def _dataset(root: Path, n: int = 12, size=(16, 12), **top) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        write_image(root / "images" / f"img{i:02d}.png", rng.random((size[1], size[0], 3)).astype(np.float32))
        frames.append({"file_path": f"images/img{i:02d}.png", "transform_matrix": _pose(i, n)})
    meta = {"fl_x": 14.0, "fl_y": 14.0, "w": size[0], "h": size[1], **top, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def _names(data, split):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [p.name for p in load_transforms(data, split).image_paths]


def _quiet(*_a, **_k):
    return None


def test_downscale_keeps_the_held_out_frames_when_a_photo_is_missing(tmp_path):
    src = _dataset(tmp_path / "src", n=20)
    (src / "images" / "img03.png").unlink()
    held = _names(src, "val")
    assert held == ["img00.png", "img08.png", "img16.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        downscale_dataset(src, tmp_path / "out", 2, log=_quiet)
    assert _names(tmp_path / "out", "val") == _names(tmp_path / "out", "test") == held
    assert _names(tmp_path / "out", "train") == _names(src, "train")
    errors, _ = check_dataset(tmp_path / "out", log=_quiet)
    assert errors == []


def test_downscale_drops_a_missing_photo_from_the_split_lists(tmp_path):
    names = [f"images/img{i:02d}.png" for i in range(12)]
    src = _dataset(tmp_path / "src", val_filenames=names[:3], test_filenames=names[3:5])
    (src / "images" / "img01.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        downscale_dataset(src, tmp_path / "out", 2, log=_quiet)
    top = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert top["val_filenames"] == ["images/img00.png", "images/img02.png"]
    assert _names(tmp_path / "out", "val") == ["img00.png", "img02.png"]
    assert _names(tmp_path / "out", "test") == ["img03.png", "img04.png"]


@pytest.mark.parametrize("stray", ["images/IMG00.png", "images/nothere.png", 7])
def test_a_split_list_naming_no_frame_is_refused_by_the_loader_and_by_check(tmp_path, stray):
    data = _dataset(tmp_path / "d", val_filenames=["images/img00.png", stray])
    for split in ("train", "val", "test"):
        with pytest.raises(UserError, match=r"val_filenames: 1 of its 2 name\(s\) match no frame's file_path"):
            load_transforms(data, split)
    errors, _ = check_dataset(data, log=_quiet)
    assert any("match no frame" in e for e in errors), errors


def test_downscale_of_a_frames_own_camera_angle_under_a_top_level_focal_is_exact(tmp_path):
    src = _dataset(tmp_path / "src", n=3, size=(50, 50), cx=25.0, cy=25.0)  # every key but the frame's angle
    top = json.loads((src / "transforms.json").read_text())
    top["frames"][0]["camera_angle_x"] = 0.7  # the frame's own: it beats the top's fl_x
    (src / "transforms.json").write_text(json.dumps(top))
    downscale_dataset(src, tmp_path / "out", 3, log=_quiet)
    a, b = (load_transforms(d, "all").cameras for d in (src, tmp_path / "out"))
    np.testing.assert_allclose((a.fx / b.fx).numpy(), 3.0, rtol=1e-12)
    np.testing.assert_allclose((a.fy / b.fy).numpy(), 3.0, rtol=1e-12)
    np.testing.assert_allclose((a.cx / b.cx).numpy(), 3.0, rtol=1e-12)


def test_check_reports_depth_maps_in_two_units_and_ignored_depth_paths(tmp_path):
    data = _dataset(tmp_path / "d", n=4, integer_depth_scale=0.002)  # nerfstudio's default: 1e-3
    (data / "depth").mkdir()
    top = json.loads((data / "transforms.json").read_text())
    for i, f in enumerate(top["frames"]):
        write_image(data / "depth" / f"d{i}.png", np.full((12, 16, 1), 0.5, np.float32))
        f["depth_file_path" if i < 2 else "depth_path"] = f"depth/d{i}.png"
    (data / "transforms.json").write_text(json.dumps(top))
    with pytest.raises(UserError, match="depth maps in different units"):
        load_transforms(data, "all")
    errors, _ = check_dataset(data, log=_quiet)
    assert any("depth maps in different units" in e for e in errors), errors
    del top["integer_depth_scale"]
    (data / "transforms.json").write_text(json.dumps(top))
    errors, warns = check_dataset(data, log=_quiet)
    assert not any("units" in e for e in errors)
    assert any("depth_path but no positive integer_depth_scale" in w for w in warns), warns
