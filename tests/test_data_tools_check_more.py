"""`rwf data check` on lenses: wide fisheyes and lenses without a ray for every pixel."""

import math

from data_tools.check import check_dataset
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
