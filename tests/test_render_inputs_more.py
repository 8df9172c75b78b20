"""A bug hunt of the newer render inputs: a camera path whose fps reached ffmpeg as 0 (rgb.mp4 reported, none
written), whose pose was not a rotation (a blank frame), whose fov or is_cycle had the wrong type (read loosely);
--scale with --downscale on a NeRF run; `rwf data photos --fps` without --video; a spiral around one camera."""

import json
import warnings

import numpy as np
import pytest
import torch

from rwf_render import nerf_outputs
from rwf_render.camera_path import MIN_FPS, load_camera_path
from rwf_render.cameras import Cameras
from rwf_render.errors import RwfWarning, UserError
from rwf_render.render_paths import spiral_cameras

from conftest import one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)

POSE = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 4, 0, 0, 0, 1]


def _path(tmp_path, frames=None, **top):
    obj = {"render_width": 16, "render_height": 12, "fps": 24,
           "camera_path": frames or [{"camera_to_world": POSE, "fov": 50}], **top}
    path = tmp_path / "path.json"
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("fps", [1e-9, 0.004])
def test_a_frame_rate_ffmpeg_would_read_as_zero_is_refused(tmp_path, fps):
    with pytest.raises(UserError, match=f"'fps' must be from {MIN_FPS} to 1000"):
        load_camera_path(_path(tmp_path, fps=fps))
    assert load_camera_path(_path(tmp_path, fps=MIN_FPS))[-1] == MIN_FPS


@pytest.mark.parametrize("matrix", [[0] * 16, [2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 4, 0, 0, 0, 1],
                                    [-1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 4, 0, 0, 0, 1]],
                         ids=["zeros", "scaled", "mirrored"])
def test_a_pose_that_is_no_rotation_is_refused_naming_the_frame(tmp_path, matrix):
    frames = [{"camera_to_world": POSE, "fov": 50}, {"camera_to_world": matrix, "fov": 50}]
    with pytest.raises(UserError, match=r"camera_path\[1\]: 'camera_to_world' needs a rotation"):
        load_camera_path(_path(tmp_path, frames))


@pytest.mark.parametrize("matrix, says", [
    (np.asarray(POSE, float).reshape(4, 4).T.reshape(-1).tolist(), r"last row is 0 0 0 1, got \[0.0, 0.0, 4.0, 1.0\]"),
    (POSE[:12] + [5, 5, 5, 9], "last row is 0 0 0 1"),
    (["1"] + POSE[1:], "a list of 16 numbers"), ([True] + POSE[1:], "a list of 16 numbers"),
    ("1 0 0 0", "a list of 16 numbers")], ids=["column-major", "bottom-row", "string", "boolean", "text"])
def test_a_pose_not_written_as_a_row_major_matrix_of_numbers_is_refused(tmp_path, matrix, says):
    """A column-major list was read as a camera at the world origin (a fuzzing hunt: a frame 23.6 levels off, exit
    0); a bottom row other than 0 0 0 1 was dropped and strings or booleans read as numbers. The nested 4 x 4 and
    the 12 numbers of its top rows are read as the flat 16."""
    with pytest.raises(UserError, match=says):
        load_camera_path(_path(tmp_path, [{"camera_to_world": matrix, "fov": 50}]))
    flat = load_camera_path(_path(tmp_path))[0]
    for same in (np.asarray(POSE).reshape(4, 4).tolist(), POSE[:12], POSE[:12] + [1e-9, 0, 0, 1 - 1e-12]):
        assert torch.equal(load_camera_path(_path(tmp_path, [{"camera_to_world": same, "fov": 50}]))[0], flat)


def test_fov_and_is_cycle_of_the_wrong_type_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"'fov' must be a vertical field of view"):
        load_camera_path(_path(tmp_path, [{"camera_to_world": POSE, "fov": True}]))
    keys = {"keyframes": [{"camera_to_world": POSE, "fov": 50}] * 2, "seconds": 1, "camera_path": None}
    with pytest.raises(UserError, match="'is_cycle' must be true or false, got 'false'"):
        load_camera_path(_path(tmp_path, **keys, is_cycle="false"))
    assert len(load_camera_path(_path(tmp_path, **keys, is_cycle=False))[0]) == 24


@pytest.mark.parametrize("kind", ["equirectangular", "fisheye", "omnidirectional", None])
def test_a_nerfstudio_path_of_another_camera_type_is_refused(tmp_path, kind):
    # nerfstudio's camera_path.json names its camera type; a 360-degree path rendered as perspective frames,
    # without a word, was what the file did not ask for (a helper's hunt)
    with pytest.raises(UserError, match=f"camera_type {kind!r}: only perspective camera paths are rendered"):
        load_camera_path(_path(tmp_path, camera_type=kind))
    assert len(load_camera_path(_path(tmp_path, camera_type="perspective"))[0]) == 1


def test_fps_takes_a_decimal_rate(still_life_run, tmp_path, capsys):
    from rwf_render.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["render", "RUN", "--fps", "29.97"]).fps == 29.97  # refused as not an integer before
    assert "must be from 0.01 to 1000" in one_cli_error(capsys, ["render", still_life_run, "--orbit", "2", "--video",
                                                                 "--fps", "nan", "--out", tmp_path / "o"])


def test_a_video_ffmpeg_did_not_write_is_an_error_not_a_success(tmp_path, monkeypatch):
    import imageio_ffmpeg  # noqa: PLC0415

    def writes_nothing(path, size, **kwargs):  # ffmpeg refusing its options: the generator ends, no file
        while (yield) is not None:
            pass
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", writes_nothing)
    video = nerf_outputs.VideoWriter(tmp_path / "rgb.mp4", 16, 12, 24)
    video.append(np.zeros((12, 16, 3)))
    with pytest.raises(OSError, match="ffmpeg wrote no video"):
        video.close()
    nerf_outputs.VideoWriter(tmp_path / "x.mp4", 16, 12, 24).close(ignore_errors=True)  # being discarded: silent


def test_scale_and_downscale_together_are_refused(still_life_run, tmp_path, capsys):
    line = one_cli_error(capsys, ["render", still_life_run, "--scale", "1", "--downscale", "2", "--orbit", "2",
                                  "--out", tmp_path / "o"])
    assert "give --scale S or --downscale K, not both" in line and not (tmp_path / "o").exists()


def test_photos_refuses_fps_without_a_video(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    line = one_cli_error(capsys, ["data", "photos", tmp_path / "photos", tmp_path / "out", "--fps", "2"])
    assert "--fps is the rate frames are taken from --video" in line and not (tmp_path / "out").exists()


def test_a_spiral_around_cameras_at_one_place_warns_that_its_frames_are_one_view():
    one = Cameras.create(torch.eye(4, dtype=torch.float64)[None], fx=10.0, width=8, height=8)
    with pytest.warns(RwfWarning, match="no radius and its frames are all the same view"):
        spiral_cameras(one, 4, aabb=[-1, -1, -5, 1, 1, -3])
    with warnings.catch_warnings():  # one frame is one view anyway
        warnings.simplefilter("error")
        spiral_cameras(one, 1, aabb=[-1, -1, -5, 1, 1, -3])
