"""`rwf render RUN --spiral N`: the original NeRF's spiral around forward-facing cameras (``render_paths.spiral_path``).

The geometry is checked on constructed camera rigs (closed forms: frame count, focus point, average pose, radii);
one 2-step fit of the tiny_scene still life (conftest) serves the command-line tests, whose renders are 4x4 pixels.
"""

import argparse
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rwf_render import cli, render_paths
from rwf_render.camera_path import MAX_FRAMES
from rwf_render.cameras import Cameras, look_at
from rwf_render.errors import UserError
from rwf_render.render_paths import average_pose, spiral_cameras, spiral_focus, spiral_path

from conftest import one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)

STEPS = ["--steps", "2", "--eval-images", "1", "--quiet", "--grid-resolution", "16", "--steps-per-diagonal", "32",
         "--width", "16", "--features", "8", "--target-samples", "512", "--device", "cpu"]
SMALL = ["--downscale", "8"]


def _rotation(seed: int) -> np.ndarray:
    """A random rotation (3, 3), det +1."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _forward_rig(k: int = 15, seed: int = 0) -> np.ndarray:
    """(K, 3, 4) cameras spread over a slab in a random frame R0, each looking at a jittered point 6 units ahead of
    the slab (along -z of R0), up R0's y: a forward-facing capture."""
    rng = np.random.default_rng(seed)
    rot, centre = _rotation(seed), rng.normal(size=3)
    eyes = centre + (rng.uniform(-1, 1, (k, 3)) * [1.0, 0.6, 0.2]) @ rot.T
    targets = centre - 6 * rot[:, 2] + 0.3 * rng.normal(size=(k, 3))
    return look_at(torch.from_numpy(eyes), torch.from_numpy(targets), torch.from_numpy(rot[:, 1])).numpy()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# -- the path ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 30])
def test_n_frames_each_looking_at_the_focus_point(n):
    """N rotations with every frame's optical axis (-z) through the point ``focus`` ahead of the average camera."""
    c2w = _forward_rig()
    frames, avg, radii = spiral_path(c2w, n, focus=4.0)
    assert frames.shape == (n, 4, 4) and (radii > 0).all()
    rot = frames[:, :3, :3]
    np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    focus_point = avg[:3, 3] - 4.0 * avg[:3, 2]
    np.testing.assert_allclose(_unit(focus_point - frames[:, :3, 3]), -frames[:, :3, 2], atol=1e-12)
    if n > 2:  # the frames move, and their up stays on the average camera's side
        assert np.linalg.norm(np.diff(frames[:, :3, 3], axis=0), axis=1).min() > 1e-3
        assert (frames[:, :3, 1] @ avg[:3, 1] > 0.9).all()


@pytest.mark.parametrize("n", [3, 7, 12])
def test_the_spiral_is_centred_on_the_average_pose(n):
    """The frames' mean position is the cameras' mean position (two full turns, one full swing); the average camera
    looks along the cameras' mean viewing direction, its y the mean up made orthogonal to that."""
    c2w = _forward_rig(seed=3)
    frames, avg, _ = spiral_path(c2w, n, focus=5.0)
    mean_position = c2w[:, :, 3].mean(0)
    np.testing.assert_allclose(frames[:, :3, 3].mean(0), mean_position, atol=1e-12)
    np.testing.assert_allclose(avg[:3, 3], mean_position, atol=1e-12)
    np.testing.assert_allclose(-avg[:3, 2], _unit(-c2w[:, :, 2].mean(0)), atol=1e-12)
    np.testing.assert_allclose(avg[:3, 0], _unit(np.cross(c2w[:, :, 1].mean(0), avg[:3, 2])), atol=1e-12)
    np.testing.assert_allclose(avg[:3, :3].T @ avg[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(average_pose(c2w), avg)


def test_the_radii_are_the_90th_percentile_of_the_offsets_in_the_average_frame():
    """Cameras sharing one random rotation R0 (so it is the average camera's), offset from their mean by R0 @ (x, y, z)
    with |x| = 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 9: its 90th percentile (linear, at rank 9 of 0..10) is 5, not the maximum
    9; y and z are the same values shuffled and scaled by 0.5 and 0.2. Frame 0 sits at +rx along R0's x."""
    base = np.array([-9.0, 1, 2, 3, -1, -2, 4, -3, 5, -4, 4])  # mean 0
    rng = np.random.default_rng(7)
    local = np.stack([base, 0.5 * rng.permutation(base), 0.2 * rng.permutation(base)], 1)
    rot, centre = _rotation(11), np.array([0.3, -2.0, 1.5])
    c2w = np.tile(np.eye(4)[:3], (len(base), 1, 1))
    c2w[:, :, :3], c2w[:, :, 3] = rot, centre + local @ rot.T
    frames, avg, radii = spiral_path(c2w, 8, focus=3.0)
    np.testing.assert_allclose(radii, [5.0, 2.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(avg[:3, :3], rot, atol=1e-12)
    np.testing.assert_allclose(frames[0, :3, 3], centre + 5.0 * rot[:, 0], atol=1e-12)
    offsets = (frames[:, :3, 3] - centre) @ rot  # (N, 3) in the average camera's frame: within the radii
    assert (np.abs(offsets) <= radii + 1e-12).all()


def test_identical_cameras_give_radius_zero_and_frames_at_the_camera():
    cam = _forward_rig(k=1, seed=5)[0]
    frames, avg, radii = spiral_path(np.stack([cam] * 6), 9, focus=2.0)
    np.testing.assert_array_equal(radii, 0.0)
    np.testing.assert_allclose(frames[:, :3], np.broadcast_to(cam, (9, 3, 4)), atol=1e-12)
    np.testing.assert_allclose(avg[:3], cam, atol=1e-12)


def test_focus_depth_is_nerfs():
    """1 / focus = 0.25 / near + 0.75 / far: equal bounds give that depth; it lies between near and far."""
    assert spiral_focus(2.0, 2.0) == pytest.approx(2.0)
    assert 1 / spiral_focus(1.0, 10.0) == pytest.approx(0.25 + 0.075)
    assert 1.0 < spiral_focus(1.0, 10.0) < 10.0


def test_a_ring_of_cameras_warns_and_a_forward_rig_does_not():
    """The mean angle between the cameras' viewing directions and their mean one: 45 degrees on a ring of cameras
    looking down at its centre (as the bartoszek capture), under 30 on the forward rig."""
    from rwf_render.errors import RwfWarning

    angle = np.arange(12) * 2 * math.pi / 12
    eyes = torch.tensor(np.stack([5 * np.cos(angle), 5 * np.sin(angle), np.full(12, 5.0)], 1))
    ring = Cameras.create(look_at(eyes, torch.zeros(3, dtype=torch.float64)), fx=10.0, width=8, height=8)
    with pytest.warns(RwfWarning, match="look 45 degrees away"):
        spiral_cameras(ring, 4, aabb=[-1, -1, -1, 1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spiral_cameras(_rig_cameras(), 4, aabb=[-1, -1, -1, 1, 1, 1])


def test_cameras_looking_in_all_directions_are_refused():
    eyes = torch.tensor([[0.0, 0, 2], [0.0, 0, -2]], dtype=torch.float64)
    c2w = look_at(eyes, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64))
    with pytest.raises(ValueError, match="all directions"):
        spiral_path(c2w.numpy(), 4, focus=1.0)
    cams = Cameras.create(c2w, fx=10.0, width=8, height=8)
    with pytest.raises(UserError, match="--spiral"):
        spiral_cameras(cams, 4, aabb=[-1, -1, -1, 1, 1, 1])


# -- the cameras ---------------------------------------------------------------------------------------------------
def _rig_cameras(k: int = 6, model="PINHOLE") -> Cameras:
    c2w = torch.from_numpy(_forward_rig(k, seed=2))
    w = torch.tensor([40.0] * k)
    return Cameras.create(c2w, fx=30 + torch.arange(k, dtype=torch.float64), fy=33.0, cx=19.5, cy=14.0, width=w,
                          height=30, model=model, dist=[0.05, 0.01, 0, 0, 0, 0] if model != "PINHOLE" else None)


def _focus_of(frames: Cameras, avg: np.ndarray) -> float:
    """The depth ahead of ``avg`` where the first two frames' optical axes meet (their closest points' mean)."""
    o, d = frames.c2w[:2, :3, 3].numpy(), -frames.c2w[:2, :3, 2].numpy()
    a = np.stack([d[0], -d[1]], 1)
    s, t = np.linalg.lstsq(a, o[1] - o[0], rcond=None)[0]
    meet = 0.5 * (o[0] + s * d[0] + o[1] + t * d[1])
    return float((meet - avg[:3, 3]) @ -avg[:3, 2])


def test_spiral_cameras_with_per_image_bounds():
    """Bounds (K, 2): the focus is NeRF's from 0.9 x the smallest near and 5 x the largest far, every frame renders
    with (smallest near, largest far); the frames are PINHOLE with camera 0's intrinsics and size."""
    train = _rig_cameras()
    near_far = torch.tensor([[1.0, 8.0], [0.5, 9.0], [2.0, 7.0], [1.0, 12.0], [0.8, 6.0], [1.5, 5.0]])
    cams, bounds, focus = spiral_cameras(train, 10, near_far, aabb=[-9, -9, -9, 9, 9, 9])
    assert len(cams) == 10 and cams.model_names() == ["PINHOLE"] * 10
    assert focus == pytest.approx(1 / (0.25 / 0.45 + 0.75 / 60.0))
    np.testing.assert_allclose(bounds.numpy(), np.broadcast_to([0.5, 12.0], (10, 2)))
    assert _focus_of(cams, average_pose(train.c2w.numpy())) == pytest.approx(focus, rel=1e-6)
    for key in ("fx", "fy", "cx", "cy", "width", "height"):
        np.testing.assert_allclose(getattr(cams, key).numpy(), float(getattr(train, key)[0]))


def test_spiral_cameras_without_bounds_focus_at_the_box_centre_distance():
    train = _rig_cameras()
    box = np.array([-1.0, 0.5, -2.0, 3.0, 2.5, 0.0])
    cams, bounds, focus = spiral_cameras(train, 5, None, aabb=box)
    want = float(np.median(np.linalg.norm(train.c2w[:, :3, 3].numpy() - [1.0, 1.5, -1.0], axis=1)))
    assert bounds is None and focus == pytest.approx(want)
    assert _focus_of(cams, average_pose(train.c2w.numpy())) == pytest.approx(focus, rel=1e-6)


def test_a_fisheye_camera_0_gives_orbits_pinhole():
    from rwf_render.render_paths import orbit_cameras

    train = _rig_cameras(model="OPENCV_FISHEYE")
    cams, _, _ = spiral_cameras(train, 3, aabb=[-1, -1, -1, 1, 1, 1])
    orbit = orbit_cameras(train, torch.zeros(3), 1)
    assert float(orbit.fx[0]) != pytest.approx(float(train.fx[0]))  # the fisheye's pinhole is another focal length
    np.testing.assert_allclose(cams.fx.numpy(), float(orbit.fx[0]), rtol=1e-9)
    np.testing.assert_allclose(cams.fy.numpy(), float(orbit.fy[0]), rtol=1e-9)
    assert cams.model_names() == ["PINHOLE"] * 3


def test_render_passes_the_bounds_and_names_the_folder_spiral():
    from rwf_render.nerf_outputs import _cameras

    train = _rig_cameras()
    model = SimpleNamespace(train_cameras=train, train_near_far=torch.tensor([[1.0, 4.0]] * 6),
                            aabb=torch.tensor([-9.0, -9, -9, 9, 9, 9]))
    args = argparse.Namespace(split=None, orbit=None, camera_path=None, interpolate=None, spiral=7, fps=24)
    cams, name, fps, near_far = _cameras(model, args)
    assert (len(cams), name, fps) == (7, "spiral", 24) and cams.c2w.dtype == torch.float32
    np.testing.assert_allclose(near_far.numpy(), np.broadcast_to([1.0, 4.0], (7, 2)))


# -- rwf render --spiral -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tiny_scene, tmp_path_factory):
    run = tmp_path_factory.mktemp("spiral") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(run), *STEPS]) == 0
    return run




def test_spiral_renders_n_frames_and_videos(fitted):
    """RUN/renders/spiral holds N frames and the videos; the still life's cameras on a hemisphere around it are no
    forward-facing capture, which is said in a warning (the command prints it as one 'rwf: warning:' line)."""
    import imageio.v3 as iio

    from rwf_render.errors import RwfWarning
    from rwf_render.imgio import read_image

    with pytest.warns(RwfWarning, match="--spiral: the training cameras look"):
        assert cli.main(["render", str(fitted), "--spiral", "4", "--video", "--quiet", *SMALL]) == 0
    out = fitted / "renders" / "spiral"
    for pattern in ("rgb_*.png", "depth_*.exr", "depth_*.png"):
        assert [p.name[-8:-4] for p in sorted(out.glob(pattern))] == ["0000", "0001", "0002", "0003"]
    assert read_image(out / "rgb_0003.png")[0].shape == (4, 4, 3)  # camera 0's 32x32, downscaled 8x
    assert iio.imread(out / "rgb.mp4").shape[0] == 4 and (out / "depth.mp4").stat().st_size > 0


@pytest.mark.parametrize("extra, says", [(["--orbit", "3"], "exactly one"), (["--split", "test"], "exactly one"),
                                         (["--interpolate", "2"], "exactly one"),
                                         (["--camera-path", "path.json"], "exactly one"),
                                         (["--fps", "12"], "--fps")])
def test_spiral_refuses_other_paths_and_options_it_would_not_use(fitted, tmp_path, capsys, extra, says):
    argv = ["render", fitted, "--out", tmp_path / "r", *SMALL, "--spiral", "4", *extra]
    assert says in one_cli_error(capsys, argv)
    assert not (tmp_path / "r").exists()


def test_spiral_refuses_zero_and_absurd_frame_counts_before_any_camera_is_made(fitted, tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.setattr(render_paths, "spiral_cameras", lambda *a: pytest.fail("spiral cameras made"))
    out = tmp_path / "r"
    assert "--spiral" in one_cli_error(capsys, ["render", fitted, "--spiral", "0", "--out", out])
    for n in (10**9, MAX_FRAMES + 1):
        line = one_cli_error(capsys, ["render", fitted, "--spiral", n, "--out", out])
        assert "--spiral" in line and f"{MAX_FRAMES:,}" in line, line
    assert sorted(tmp_path.iterdir()) == []


def test_help_states_the_spiral(capsys):
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--spiral N" in text and "90th percentile" in text and "near/far bounds" in text
