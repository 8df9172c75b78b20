"""Wide fisheyes (180 degrees and more), orbit cameras, lens errors naming their frame, per-frame focal lengths.

References are written here from the formats' definitions (OpenCV's fisheye model, OpenGL camera-to-world), not
from rwf_render.cameras: the fisheye's angle is found by bisection, not by the library's Newton iteration."""

import json
import math

import numpy as np
import pytest
import torch

from rwf_render.cameras import Cameras, look_at, pixel_grid, pixel_rays, project
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.render_paths import orbit_cameras

K_WIDE = [0.03, -0.002, 0.0, 0.0, 0.0, 0.0]  # theta_d rises up to theta ~ 3.9 rad, beyond pi
SIZE = 64  # square image, principal point at the centre


def theta_d_ref(theta, k):
    k1, k2, k3, k4 = k[:4]
    return theta * (1 + k1 * theta ** 2 + k2 * theta ** 4 + k3 * theta ** 6 + k4 * theta ** 8)


def theta_ref(rd, k, lo=0.0, hi=math.pi):
    """Angle from the optical axis of a distorted radius: bisection on theta_d(theta) = rd in [lo, hi]."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if theta_d_ref(mid, k) < rd else (lo, mid)
    return 0.5 * (lo + hi)


def wide_fisheye(fov_deg=200.0, k=K_WIDE, c2w=None, dtype=torch.float64):
    """A SIZE x SIZE fisheye whose rays through the left and right image edges are fov_deg / 2 off axis."""
    f = (SIZE / 2) / theta_d_ref(math.radians(fov_deg / 2), k)
    c2w = look_at(torch.tensor([0.3, -2.0, 0.5], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)) \
        if c2w is None else c2w
    return Cameras.create(c2w, fx=f, fy=f, width=SIZE, height=SIZE, model="OPENCV_FISHEYE", dist=k).to(dtype=dtype)


def ref_ray(u, v, cam):
    """Unit world direction of pixel (u, v) from the fisheye's definition: theta from theta_d, direction
    (sin theta x / r, sin theta y / r, cos theta) in OpenCV axes, then OpenGL (y, z flipped) and the pose."""
    fx, fy, cx, cy = (float(getattr(cam, a)[0]) for a in ("fx", "fy", "cx", "cy"))
    xd, yd = (u - cx) / fx, (v - cy) / fy
    rd = math.hypot(xd, yd)
    th = theta_ref(rd, cam.dist[0].tolist())
    d_cv = np.array([math.sin(th) * xd / rd, math.sin(th) * yd / rd, math.cos(th)]) if rd > 0 else np.array([0, 0, 1.0])
    return cam.c2w[0, :, :3].numpy() @ (d_cv * [1, -1, -1])


def test_200_degree_fisheye_loads_and_its_rays_match_the_model_definition():
    """Such a lens used to be refused (its border lies beyond 90 degrees off axis, past what X / Z can hold)."""
    cam = wide_fisheye()
    pix = [(0.0, 32.0), (64.0, 32.0), (0.5, 0.5), (63.5, 63.5), (32.0, 32.0), (40.25, 10.5), (5.0, 50.0)]
    o, d = pixel_rays(cam, torch.tensor(pix, dtype=torch.float64))
    ref = np.stack([ref_ray(u, v, cam) for u, v in pix])
    assert np.abs(d.numpy() - ref).max() < 1e-9
    assert torch.allclose(o, cam.c2w[0, :, 3].expand(len(pix), 3))
    forward = -cam.c2w[0, :, 2].numpy()
    angles = np.degrees(np.arccos(np.clip(ref @ forward, -1, 1)))
    assert angles[0] == pytest.approx(100.0, abs=0.1) and angles[2] > 130  # the edges see behind the camera
    # the training precision: float32 rays within 1e-5 of the reference
    _, d32 = pixel_rays(wide_fisheye(dtype=torch.float32), torch.tensor(pix))
    assert np.abs(d32.double().numpy() - ref).max() < 1e-5
    # every pixel's ray (the corners see 140 degrees off axis) projects back onto that pixel
    o, d = pixel_rays(cam)
    uv, _ = project((o + 2.0 * d).reshape(-1, 3), cam)
    assert (uv[0] - pixel_grid(SIZE, SIZE, torch.float64).reshape(-1, 2)).abs().max() < 1e-9


@pytest.mark.parametrize("fov_deg", [200.0, 120.0])
def test_points_95_degrees_off_axis_project_to_the_pixel_whose_ray_points_at_them(fov_deg):
    """X / Z flipped such points through the centre; the fisheye projects them by their angle, atan2(r, z) (in the
    image of the 200-degree lens, outside that of the 120-degree one, which always loaded)."""
    cam = wide_fisheye(fov_deg)
    phi = np.linspace(0, 2 * math.pi, 7, endpoint=False)
    th = math.radians(95.0)
    d_cv = np.stack([math.sin(th) * np.cos(phi), math.sin(th) * np.sin(phi), np.full_like(phi, math.cos(th))], -1)
    dist = np.linspace(0.5, 3.0, len(phi))[:, None]
    R, t = cam.c2w[0, :, :3].numpy(), cam.c2w[0, :, 3].numpy()
    pts = torch.from_numpy(t + (dist * d_cv * [1, -1, -1]) @ R.T)
    pix, depth = project(pts, cam)
    assert (depth < 0).all()  # behind the camera's image plane
    rd = theta_d_ref(th, K_WIDE)  # the model: pixel = f theta_d (cos phi, sin phi) + c
    f, c = float(cam.fx[0]), SIZE / 2
    assert np.abs(pix[0].numpy() - (f * rd * np.stack([np.cos(phi), np.sin(phi)], -1) + c)).max() < 1e-9
    assert ((pix[0] > 0) & (pix[0] < SIZE)).all() == (fov_deg > 190)
    o, d = pixel_rays(cam, pix[0])
    to_pt = torch.nn.functional.normalize(pts - o, dim=-1)
    assert (d - to_pt).abs().max() < 1e-9
    with pytest.raises(ValueError, match="z-depth"):  # no z-depth-1 direction at 95 degrees
        pixel_rays(cam, pix[0], normalize=False)


@pytest.mark.parametrize("model, dist", [("PINHOLE", [0] * 6), ("OPENCV", [-0.1, 0.02, 0.0, 0.01, 0.001, -0.002])])
def test_pinhole_and_opencv_project_points_behind_as_before(model, dist):
    """Only the fisheye projects by angle; the other models keep x = X / Z, y = Y / Z, points behind included."""
    c2w = look_at(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    cam = Cameras.create(c2w, fx=40.0, fy=42.0, cx=31.3, cy=24.9, width=64, height=48, model=model, dist=dist)
    pts = torch.tensor([[2.0, 4.0, 6.5], [1.5, 2.5, 3.6], [0.0, 0.0, 0.0]], dtype=torch.float64)  # 2 behind
    pix, depth = project(pts, cam)
    p = (pts.numpy() - c2w[:, 3].numpy()) @ c2w[:, :3].numpy()
    X, Y, Z = p[:, 0], -p[:, 1], -p[:, 2]
    x, y = X / Z, Y / Z
    k1, k2, k3, k4, p1, p2 = dist
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3 + k4 * r2 ** 4
    xd, yd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    assert (depth[0, :2] < 0).all() and depth[0, 2] > 0
    assert np.abs(pix[0].numpy() - np.stack([40 * xd + 31.3, 42 * yd + 24.9], -1)).max() < 1e-9


@pytest.mark.parametrize("k, fx, message", [
    ([0.0, -0.01, 0, 0, 0, 0], 32 / 1.8, "not monotonic"),  # theta_d peaks at 1.69 (121 deg); the edges need 1.8
    ([0.0] * 6, 32 / 3.3, "more than 180 degrees"),  # theta_d = theta: the edges need 3.3 rad, beyond pi
])
def test_wide_fisheye_that_folds_back_or_needs_more_than_180_degrees_is_refused(k, fx, message):
    with pytest.raises(UserError, match=message) as e:
        Cameras.create(torch.eye(4), fx=fx, width=SIZE, height=SIZE, model="OPENCV_FISHEYE", dist=k)
    assert "\n" not in str(e.value) and str(e.value).startswith("camera 0 (OPENCV_FISHEYE")


# ------------------------------------------------------------------------------------------------ orbit cameras
def _train(model, dist, fx=30.0, n=4):
    eyes = torch.tensor([[3.0 * math.cos(a), 3.0 * math.sin(a), 1.0] for a in np.linspace(0, 5, n)])
    c2w = look_at(eyes.double(), torch.zeros(3, dtype=torch.float64))
    return Cameras.create(c2w, fx=fx, fy=1.1 * fx, cx=33.0, cy=31.0, width=SIZE, height=SIZE, model=model,
                          dist=dist)


def test_orbit_cameras_of_a_distorted_dataset_are_plain_pinhole_with_camera_0s_intrinsics():
    """They used to copy camera 0's distortion, so the orbit video of an OPENCV dataset came out distorted."""
    train = _train("OPENCV", [-0.2, 0.05, 0.0, 0.0, 0.001, 0.0])
    orbit = orbit_cameras(train, torch.zeros(3), 5)
    assert len(orbit) == 5 and orbit.model_names() == ["PINHOLE"] * 5 and not orbit.dist.any()
    for a in ("fx", "fy", "cx", "cy", "width", "height"):
        assert (getattr(orbit, a) == getattr(train, a)[0]).all(), a


@pytest.mark.parametrize("fov_deg", [100.0, 200.0])
def test_orbit_cameras_of_a_fisheye_keep_its_field_of_view_capped_at_120_degrees(fov_deg):
    cam = wide_fisheye(fov_deg)
    k = cam.dist[0].tolist()
    # the fisheye's horizontal field of view: the angles of the left and right image edges, by bisection
    want = min(2 * math.degrees(theta_ref(SIZE / 2 / float(cam.fx[0]), k)), 120.0)
    orbit = orbit_cameras(Cameras.cat([cam, cam.with_c2w(look_at(torch.tensor([[2.0, 0.5, 0.3]], dtype=torch.float64),
                                                                     torch.zeros(3, dtype=torch.float64)))]),
                          torch.zeros(3), 3)
    assert orbit.model_names() == ["PINHOLE"] * 3 and not orbit.dist.any()
    assert math.degrees(2 * math.atan(SIZE / 2 / float(orbit.fx[0]))) == pytest.approx(want, abs=1e-6)
    assert float(orbit.fy[0] / orbit.fx[0]) == pytest.approx(float(cam.fy[0] / cam.fx[0]))
    assert (orbit.cx == cam.cx).all() and (orbit.width == SIZE).all()
    assert want == (120.0 if fov_deg > 120 else pytest.approx(fov_deg, abs=1e-6))


# ------------------------------------------------------------------------------------------------ datasets
def _dataset(root, frames, top):
    """transforms.json with one image per frame dict; a frame with "_missing" gets no image file."""
    from rwf_render.imgio import write_image  # noqa: PLC0415

    (root / "images").mkdir(parents=True)
    out = []
    for i, extra in enumerate(frames):
        c2w = np.eye(4)
        c2w[:3] = look_at(torch.tensor([3.0 * math.cos(i), 3.0 * math.sin(i), 1.0], dtype=torch.float64),
                          torch.zeros(3, dtype=torch.float64)).numpy()
        if not extra.pop("_missing", False):
            write_image(root / "images" / f"im{i}.png", np.zeros((12, 16, 3), np.float32))
        out.append({"file_path": f"images/im{i}.png", "transform_matrix": c2w.tolist(), **extra})
    (root / "transforms.json").write_text(json.dumps({**top, "frames": out}))
    return root


def test_lens_error_names_the_json_frame_and_its_file_not_the_loaded_position(tmp_path):
    """Frame 1's image is missing, so frame 3 is the third camera loaded: the error used to say "camera 2"."""
    bad = {"camera_model": "OPENCV", "k1": -1e20}
    root = _dataset(tmp_path / "ds", [{}, {"_missing": True}, {}, bad, {}], {"fl_x": 14.0, "w": 16, "h": 12})
    with pytest.warns(UserWarning, match="skipped 1 frame"), pytest.raises(UserError, match="cannot be inverted") as e:
        load_transforms(root, "all")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("transforms.json: frame 3, images/im3.png (OPENCV k1=-1e+20")
    assert "camera 2" not in msg


def test_a_frames_own_focal_length_beats_the_top_levels_whichever_key_each_uses(tmp_path):
    w, h = 16, 12
    frames = [{},  # the top level's fl_x, fl_y
              {"camera_angle_x": 1.2},  # its own angle beats the top's fl_x (was ignored); fl_y still the top's
              {"fl_x": 11.0, "camera_angle_x": 1.2},  # both: fl_x wins
              {"camera_angle_y": 0.9},  # its own vertical angle beats the top's fl_y
              {"fl_y": None, "cx": 7.0}]  # null is not given: the top's fl_y; its own cx
    root = _dataset(tmp_path / "ds", frames, {"fl_x": 14.0, "fl_y": 15.0, "w": w, "h": h})
    cams = load_transforms(root, "all").cameras
    fx = [14.0, 0.5 * w / math.tan(0.6), 11.0, 14.0, 14.0]
    fy = [15.0, 15.0, 15.0, 0.5 * h / math.tan(0.45), 15.0]
    assert cams.fx.tolist() == pytest.approx(fx, rel=1e-12) and cams.fy.tolist() == pytest.approx(fy, rel=1e-12)
    assert cams.cx.tolist() == [8.0, 8.0, 8.0, 8.0, 7.0]
    # Blender style: only angles; the frame's angle beats the top's, fy defaults to fx
    root = _dataset(tmp_path / "blender", [{}, {"camera_angle_x": 0.5}], {"camera_angle_x": 0.7})
    cams = load_transforms(root, "all").cameras
    assert cams.fx.tolist() == pytest.approx([8 / math.tan(0.35), 8 / math.tan(0.25)], rel=1e-12)
    assert torch.equal(cams.fy, cams.fx)


@pytest.mark.parametrize("index", [2, np.int64(2), torch.tensor(2), -1, np.int32(-1)])
def test_one_camera_by_any_integer_keeps_the_batch_axis(index):
    """A numpy integer or a 0-d tensor selected rows of c2w instead (len 3, a (3, 4) c2w): a library-API trap."""
    cams = Cameras.create(torch.eye(4).expand(5, 4, 4), fx=torch.arange(5.0) + 10, width=20, height=10)
    one = cams[index]
    assert len(one) == 1 and one.c2w.shape == (1, 3, 4)
    assert float(one.fx[0]) == 10 + (int(index) % 5)
