"""camera_path.json: interpolation through the keyframes, file round trip, readable errors, video writing."""

import json
import math

import numpy as np
import pytest
import torch

from rwf_render.cameras import look_at, pixel_rays, rotation_error
from rwf_render.errors import UserError
from rwf_render.camera_path import (camera_path_dict, interpolate, load_camera_path, path_cameras, save_camera_path)


def keyframes(k: int = 3) -> np.ndarray:
    angles = np.linspace(0, 1.5 * math.pi, k)
    eyes = np.stack([3 * np.cos(angles), 3 * np.sin(angles), 1.0 + 0.3 * np.arange(k)], 1)
    c2w = look_at(torch.from_numpy(eyes), torch.zeros(3, dtype=torch.float64))
    out = np.tile(np.eye(4), (k, 1, 1))
    out[:, :3] = c2w.numpy()
    return out


def test_frames_pass_through_keyframes():
    keys, fov = keyframes(3), np.array([40.0, 50.0, 60.0])
    frames, fovs = interpolate(keys, fov, 9)  # s = 0, 0.25, ..., 2: keyframes at frames 0, 4, 8
    for i, k in ((0, 0), (4, 1), (8, 2)):
        np.testing.assert_allclose(frames[i], keys[k], atol=1e-9)
        assert fovs[i] == pytest.approx(fov[k])
    assert float(rotation_error(torch.from_numpy(frames)).max()) < 1e-9
    assert fovs[2] == pytest.approx(45.0)


def test_path_is_smooth_and_cycle_returns():
    keys = keyframes(4)
    frames, _ = interpolate(keys, np.full(4, 50.0), 200)
    steps = np.linalg.norm(np.diff(frames[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 3 * np.median(steps)  # no jumps at the keyframes
    loop, _ = interpolate(keys, np.full(4, 50.0), 200, is_cycle=True)
    np.testing.assert_allclose(loop[0], keys[0], atol=1e-9)
    closing = np.linalg.norm(loop[-1, :3, 3] - loop[0, :3, 3])
    assert closing < 3 * np.median(np.linalg.norm(np.diff(loop[:, :3, 3], axis=0), axis=1))


def test_one_keyframe_is_a_still_shot():
    frames, _ = interpolate(keyframes(1), [50.0], 5)
    np.testing.assert_allclose(frames, np.repeat(keyframes(1), 5, 0), atol=1e-12)


def test_save_and_load_round_trip(tmp_path):
    keys, fov = keyframes(3), np.array([40.0, 50.0, 60.0])
    obj = save_camera_path(tmp_path / "camera_path.json", keys, fov, 64, 48, fps=10, seconds=1.3)
    c2w, fx, fy, cx, cy, w, h, fps = load_camera_path(tmp_path / "camera_path.json")
    assert (w, h, fps) == (64, 48, 10.0) and c2w.shape == (13, 4, 4) == (len(obj["camera_path"]), 4, 4)
    frames, fovs = interpolate(keys, fov, 13)
    np.testing.assert_allclose(c2w.numpy(), frames, atol=1e-6)
    np.testing.assert_allclose(fx.numpy(), 0.5 * 48 / np.tan(np.radians(fovs) / 2), rtol=1e-6)
    assert torch.equal(fx, fy) and float(cx[0]) == 32 and float(cy[0]) == 24
    # the same file without its frames: interpolated again from the keyframes
    del obj["camera_path"]
    (tmp_path / "keys.json").write_text(json.dumps(obj))
    np.testing.assert_allclose(load_camera_path(tmp_path / "keys.json")[0].numpy(), c2w.numpy(), atol=1e-6)


def test_cameras_look_down_minus_z_of_the_pose(tmp_path):
    keys = keyframes(2)
    save_camera_path(tmp_path / "p.json", keys, [50.0, 50.0], 40, 30, fps=2, seconds=1)
    cams, fps = path_cameras(tmp_path / "p.json")
    _, d = pixel_rays(cams[0], torch.tensor([[20.0, 15.0]]))  # principal point
    np.testing.assert_allclose(d[0].numpy(), -keys[0, :3, 2], atol=1e-5)


def test_reads_a_nerfstudio_style_file(tmp_path):
    """Only render size, fps and camera_path frames with nested 4x4 matrices."""
    pose = keyframes(1)[0]
    (tmp_path / "ns.json").write_text(json.dumps({"render_width": 20, "render_height": 10, "fps": 5,
                                                  "camera_path": [{"camera_to_world": pose.tolist(), "fov": 30,
                                                                   "aspect": 2.0}] * 3}))
    c2w, fx, *_ , w, h, fps = load_camera_path(tmp_path / "ns.json")
    assert c2w.shape == (3, 4, 4) and (w, h, fps) == (20, 10, 5.0)
    assert float(fx[0]) == pytest.approx(5 / math.tan(math.radians(15)))


@pytest.mark.parametrize("content, message", [
    (None, "not found"), ("{", "not a readable JSON"), ("[]", "JSON object"),
    ('{"render_height": 10}', "render_width"),
    ('{"render_width": 10, "render_height": 10}', "neither"),
    ('{"render_width": 10, "render_height": 10, "camera_path": [{"camera_to_world": [1, 2]}]}', "16"),
    ('{"render_width": 10, "render_height": 10, "keyframes": [{"camera_to_world": %s, "fov": 200}]}'
     % json.dumps(np.eye(4).reshape(-1).tolist()), "fov"),
])
def test_bad_files_give_one_readable_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_camera_path(path)


def test_dict_rejects_impossible_settings():
    with pytest.raises(ValueError):
        camera_path_dict(keyframes(2), [50, 50], 0, 10, 24, 1)

