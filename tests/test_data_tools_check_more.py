"""`rwf data check` on lenses: wide fisheyes and lenses without a ray for every pixel."""

import json
import math

import numpy as np
import pytest

from data_tools.check import check_dataset
from rwf_render.cameras import look_at
from rwf_render.datasets import load_transforms
from rwf_render.imgio import write_image
from tests.test_cameras_more import _dataset, theta_d_ref


def test_check_reports_a_fisheyes_own_field_of_view_beyond_180_degrees(tmp_path):
    """The summary used the pinhole formula 2 atan(w / 2f) for fisheyes too: it could never show 180 or more."""
    k = [0.03, -0.002, 0.0, 0.0, 0.0, 0.0]
    f = 8.0 / theta_d_ref(math.radians(100.0), k)  # 16 px wide: the edges 100 degrees off axis
    lens = {"camera_model": "OPENCV_FISHEYE", "fl_x": f, "fl_y": f, "w": 16, "h": 12,
            **dict(zip(("k1", "k2", "k3", "k4"), k[:4]))}
    root = _dataset(tmp_path / "ds", [{}, {}, {}], lens)
    lines = []
    errors, _ = check_dataset(root, log=lines.append)
    assert errors == []
    summary = next(line for line in lines if "fov" in line)
    assert "fov 200.0-200.0 deg" in summary, summary


def test_check_reports_a_lens_without_rays_as_an_error_naming_its_frame(tmp_path):
    """Such a lens made `rwf data check` stop on the first one (an exception out of the box test) and name it by
    its position among the usable frames; it is now an error in the report, named by JSON frame and file."""
    bad = {"camera_model": "OPENCV", "k1": -1e20}
    root = _dataset(tmp_path / "ds", [{}, {"_missing": True}, {}, bad], {"fl_x": 14.0, "w": 16, "h": 12})
    errors, _ = check_dataset(root, log=lambda *a: None)
    lens = [e for e in errors if "cannot be inverted" in e]
    assert len(lens) == 1 and lens[0].startswith("transforms.json frame 3 (images/im3.png) (OPENCV k1=-1e+20"), errors


@pytest.mark.parametrize("where, camera", [("frame", {"camera_angle_x": 0.7}), ("top", {"camera_angle_x": 0.7}),
                                           ("top", {"fl_x": 50.0})])
def test_check_agrees_with_the_loader_on_images_of_two_sizes(tmp_path, where, camera):
    """Without w/h, two images of different sizes were an error ("frames share one camera") though the loader, and
    `rwf fit nerf`, take each image's size: a field of view fits every size (no message); one focal length in pixels
    is right for crops, wrong for a resized copy (a warning, not an error)."""
    root = tmp_path / "ds"
    root.mkdir()
    frames = []
    for i, (w, h) in enumerate([(40, 40), (60, 30)]):
        write_image(root / f"{i}.png", np.full((h, w, 3), 0.5, np.float32))
        frames.append({"file_path": f"{i}.png", **(camera if where == "frame" else {}),
                       "transform_matrix": look_at([4.0, 2.0 * i, 1.0], (0.0, 0.0, 0.0)).tolist() + [[0, 0, 0, 1]]})
    (root / "transforms.json").write_text(json.dumps({**(camera if where == "top" else {}), "frames": frames}))
    loaded = [load_transforms(root, split).cameras for split in ("train", "test")]  # one frame each
    assert sorted((int(c.width[0]), int(c.height[0])) for c in loaded) == [(40, 40), (60, 30)]
    errors, warnings = check_dataset(root, log=lambda *a: None)
    assert errors == []
    sizes = [w for w in warnings if "sizes" in w]
    if "fl_x" in camera:
        assert len(sizes) == 1 and "40x40, 60x30" in sizes[0] and "resized" in sizes[0], warnings
    else:
        assert sizes == [], warnings


def test_the_shared_focal_warning_counts_only_the_frames_under_it(tmp_path):
    """A third frame with its own camera_angle_x turned the warning off for the two that still share fl_x."""
    root = tmp_path / "ds"
    root.mkdir()
    frames = []
    for i, (w, h) in enumerate([(24, 24), (32, 24), (40, 40)]):
        write_image(root / f"{i}.png", np.full((h, w, 3), 0.5, np.float32))
        frames.append({"file_path": f"{i}.png", **({"camera_angle_x": 0.7} if i == 2 else {}),
                       "transform_matrix": look_at([4.0, 2.0 * i, 1.0], (0.0, 0.0, 0.0)).tolist() + [[0, 0, 0, 1]]})
    (root / "transforms.json").write_text(json.dumps({"fl_x": 30.0, "frames": frames}))
    errors, warnings = check_dataset(root, log=lambda *a: None)
    sizes = [w for w in warnings if "sizes" in w]
    assert errors == [] and len(sizes) == 1 and "(24x24, 32x24)" in sizes[0], warnings
