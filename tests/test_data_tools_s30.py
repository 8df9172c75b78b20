"""A second real-data pass over the data tools (2026-12-01): distortion under camera_model PINHOLE, a depth unit
that rwf fit refuses, the split lists rwf data downscale writes when a frame is left out."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from data_tools.check import check_dataset
from data_tools.downscale import downscale_dataset
from rwf_render.cameras import look_at
from rwf_render.datasets import load_transforms
from rwf_render.errors import RwfWarning
from rwf_render.imgio import write_image


def _dataset(root: Path, n: int, top: dict, depth: bool = False) -> Path:
    """transforms.json of ``n`` 16x12 views around the origin, with ``top``'s keys at the top level."""
    root.mkdir(parents=True)
    frames = []
    for i in range(n):
        write_image(root / f"{i:02d}.png", np.full((12, 16, 3), 0.1 + 0.05 * i, np.float32))
        frame = {"file_path": f"{i:02d}.png", "transform_matrix": look_at(
            [3.0 * np.cos(i), 3.0 * np.sin(i), 1.0], (0.0, 0.0, 0.0)).tolist() + [[0.0, 0.0, 0.0, 1.0]]}
        if depth:
            write_image(root / f"{i:02d}_depth.png", np.full((12, 16, 1), 0.5, np.float32), 16)
            frame["depth_file_path"] = f"{i:02d}_depth.png"
        frames.append(frame)
    (root / "transforms.json").write_text(json.dumps({"fl_x": 14.0, "w": 16, "h": 12, **top, "frames": frames}))
    return root


def test_distortion_under_a_pinhole_model_is_applied_as_opencv_and_said(tmp_path):
    """k1 under camera_model PINHOLE was kept but unused (pinhole rays), where nerfstudio and instant-ngp apply it:
    the same file gave other rays here, without a word."""
    data = _dataset(tmp_path / "d", 3, {"camera_model": "PINHOLE", "k1": 0.3})
    with pytest.warns(RwfWarning, match=r"3 frame\(s\) with camera_model PINHOLE with distortion coefficients"):
        t = load_transforms(data, "all")
    assert set(t.cameras.model_names()) == {"OPENCV"}
    assert t.cameras.dist[:, 0].tolist() == [0.3] * 3
    errors, notes = check_dataset(data, log=lambda *a: None)
    assert errors == [] and sum("camera_model PINHOLE with distortion" in w for w in notes) == 1
    plain = _dataset(tmp_path / "p", 3, {"camera_model": "PINHOLE"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)  # no distortion: no warning, still PINHOLE
        assert set(load_transforms(plain, "all").cameras.model_names()) == {"PINHOLE"}


@pytest.mark.parametrize("unit", [0, -0.001])
def test_check_refuses_a_depth_unit_the_depth_loss_refuses(tmp_path, unit):
    data = _dataset(tmp_path / "d", 3, {"depth_unit_scale_factor": unit}, depth=True)
    errors, _ = check_dataset(data, log=lambda *a: None)
    assert any("depth_unit_scale_factor must be a positive number" in e and "--depth-loss" in e for e in errors)
    good = _dataset(tmp_path / "g", 3, {"depth_unit_scale_factor": 0.001}, depth=True)
    assert check_dataset(good, log=lambda *a: None)[0] == []


def test_downscale_with_a_frame_left_out_names_the_training_frames_too(tmp_path):
    """With a frame's image missing, downscale names the held-out frames in val/test lists (so the every-8th rule
    does not move); nerfstudio refuses such lists without a train list, so that is written too."""
    data = _dataset(tmp_path / "d", 10, {})
    (data / "03.png").unlink()
    with pytest.warns(RwfWarning, match="skipped 1 frame"):
        before = {s: [p.name for p in load_transforms(data, s).image_paths] for s in ("train", "val")}
    with pytest.warns(RwfWarning, match="03.png is missing; frame left out"):
        downscale_dataset(data, tmp_path / "out", 2, log=lambda *a: None)
    top = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert [Path(p).name for p in top["train_filenames"]] == before["train"]
    assert [Path(p).name for p in top["val_filenames"]] == before["val"] == ["00.png", "08.png"]
    assert top["test_filenames"] == top["val_filenames"]
    after = {s: [p.name for p in load_transforms(tmp_path / "out", s).image_paths] for s in ("train", "val")}
    assert after == before and "03.png" not in after["train"]


def test_check_says_how_a_single_file_splits(tmp_path):
    """A single transforms.json was summarised as one "all:" line; the fit splits it (lists, else every 8th)."""
    data = _dataset(tmp_path / "d", 10, {})
    lines = []
    assert check_dataset(data, log=lines.append)[0] == []
    assert "  splits: train 8, val 2, test 2 (every 8th frame from frame 0 held out for val and test)" in lines
    top = json.loads((data / "transforms.json").read_text())
    top.update(train_filenames=["00.png", "01.png", "02.png"], val_filenames=["03.png"])
    (data / "transforms.json").write_text(json.dumps(top))
    lines.clear()
    assert check_dataset(data, log=lines.append)[0] == []
    assert "  splits: train 3, val 1, test 1 (from train_filenames, val_filenames)" in lines
