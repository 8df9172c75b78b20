"""Camera handling against references written here from the formats' definitions (not from rwf_render.cameras):
OpenCV's distortion with nerfstudio's k4 (r^8) term, OpenCV's fisheye model, OpenGL camera-to-world, pixel centres
at +0.5, box downscaling; and the refusal, at load, of lenses that have no ray for some of their pixels."""

import json
import math

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.cameras import Cameras, look_at, pixel_rays, project
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.imgio import write_image
from rwf_render.nerf_data import load_split


def ref_project(points, c2w, fx, fy, cx, cy, model, dist):
    """World points (P, 3) -> pixels (P, 2), z-depth (P,): OpenGL c2w (looks down -z, +y up) -> OpenCV camera
    (x right, y down, z forward) -> OpenCV / nerfstudio distortion -> u = fx xd + cx (pixel centres at +0.5)."""
    c2w = np.asarray(c2w, np.float64)
    p = (np.asarray(points, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    X, Y, Z = p[:, 0], -p[:, 1], -p[:, 2]
    x, y = X / Z, Y / Z
    k1, k2, k3, k4, p1, p2 = dist
    if model == "OPENCV":  # nerfstudio: radial = 1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3 + k4 * r2 ** 4
        x, y = (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
    elif model == "OPENCV_FISHEYE":  # OpenCV fisheye: theta = atan(r), theta_d = theta (1 + k1 theta^2 + ...)
        r = np.hypot(x, y)
        th = np.arctan(r)
        thd = th * (1 + k1 * th ** 2 + k2 * th ** 4 + k3 * th ** 6 + k4 * th ** 8)
        scale = np.where(r > 0, thd / np.maximum(r, 1e-300), 1.0)
        x, y = x * scale, y * scale
    return np.stack([fx * x + cx, fy * y + cy], -1), Z


C2W = look_at(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
INTR = dict(fx=40.0, fy=42.0, cx=31.3, cy=24.9)


def _grid_error(model, dist, width=64, height=48, dtype=torch.float64):
    """Largest distance (pixels) between each pixel centre and the reference projection of a point on its ray."""
    cams = Cameras.create(C2W, width=width, height=height, model=model, dist=dist, **INTR).to(dtype=dtype)
    o, d = pixel_rays(cams, normalize=False)
    pts = (o + 2.5 * d).reshape(-1, 3).double().numpy()
    uv, z = ref_project(pts, C2W.numpy(), model=model, dist=dist, **INTR)
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    assert (z > 0).all()
    return float(np.hypot(uv[:, 0] - u.ravel(), uv[:, 1] - v.ravel()).max())


@pytest.mark.parametrize("model, dist", [
    ("PINHOLE", [0, 0, 0, 0, 0, 0]),
    ("OPENCV", [0.2, 0.05, 0.01, 0.0, 0.01, 0.01]),
    ("OPENCV", [-0.5, 0.5, 0.0, 0.0, 0.0, 0.0]),  # strong barrel, still monotonic to the corners
    ("OPENCV_FISHEYE", [0.1, -0.05, 0.01, -0.002, 0, 0]),
])
def test_every_pixel_ray_projects_back_to_its_pixel_corners_included(model, dist):
    assert _grid_error(model, dist) < 1e-9
    assert _grid_error(model, dist, dtype=torch.float32) < 1e-3


@pytest.mark.parametrize("dist", [[0, 0, 0, 0.05, 0, 0], [-0.1, 0.02, 0.0, 0.01, 0.001, -0.002]])
def test_opencv_k4_is_nerfstudios_r8_term(dist):
    """nerfstudio's OPENCV reads k1 k2 k3 k4 p1 p2 and distorts with 1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8; k4 used to
    be ignored (rays off by up to 1.9 pixels at the corners of this 64x48 image)."""
    assert _grid_error("OPENCV", dist) < 1e-9
    cams = Cameras.create(C2W, width=64, height=48, model="OPENCV", dist=dist, **INTR)
    pts = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    pix, depth = project(pts, cams)
    ref, z = ref_project(pts.numpy(), C2W.numpy(), model="OPENCV", dist=dist, **INTR)
    assert np.allclose(pix[0].numpy(), ref, atol=1e-9) and np.allclose(depth[0].numpy(), z, atol=1e-12)


@pytest.mark.parametrize("eye, up", [((0.0, 3.0, 0.0), (0.0, 1.0, 0.0)), ((0.0, -2.0, 0.0), (0.0, 1.0, 0.0)),
                                     ((0.0, 2.0, 0.0), (0.0, -1.0, 0.0)), ((0.0, 0.0, 2.0), (0.0, 0.0, 1.0))])
def test_look_at_straight_along_up_is_still_a_rotation_looking_at_the_target(eye, up):
    """Viewing along the up vector leaves the roll free; with up = +-y the fallback axis was y itself and the pose
    came out with zero columns."""
    target = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    c2w = look_at(torch.tensor(eye, dtype=torch.float64) + target, target, up)
    R = c2w[:, :3]
    assert torch.allclose(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.det(R).item() == pytest.approx(1.0)
    forward = -R[:, 2]  # OpenGL: the camera looks down -z
    assert torch.allclose(forward, torch.nn.functional.normalize(target - c2w[:, 3], dim=0), atol=1e-12)


def _write_dataset(root, frames_intr, top=None, size=(16, 12)):
    root.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, intr in enumerate(frames_intr):
        w, h = intr.get("w", size[0]), intr.get("h", size[1])
        write_image(root / f"im{i}.png", np.random.default_rng(i).random((h, w, 3)).astype(np.float32))
        c2w = np.eye(4)
        c2w[:3] = look_at(torch.tensor([3.0 * math.cos(i), 3.0 * math.sin(i), 1.0], dtype=torch.float64),
                          torch.zeros(3, dtype=torch.float64)).numpy()
        frames.append({"file_path": f"im{i}.png", "transform_matrix": c2w.tolist(), **intr})
    meta = {"fl_x": 14.0, "fl_y": 15.0, "cx": 8.3, "cy": 5.9, "w": size[0], "h": size[1], **(top or {}),
            "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_per_frame_intrinsics_and_downscale_match_the_reference(tmp_path):
    """Per-frame keys override the top-level ones; with --downscale K, the ray through the centre of downscaled pixel
    (i, j) is the full-resolution ray through the centre of its K x K block, ((i + 0.5) K, (j + 0.5) K): cx / K."""
    frames = [{},  # the top level: OPENCV with k4
              {"fl_x": 11.0, "cx": 9.1, "k1": -0.05, "k4": 0.0},
              {"camera_model": "OPENCV_FISHEYE", "k1": 0.03, "k2": -0.01, "k3": 0.0, "k4": 0.001, "p1": 0.0,
               "p2": 0.0, "w": 20, "h": 14, "cy": 7.4}]
    top = {"camera_model": "OPENCV", "k1": -0.1, "k2": 0.02, "k4": 0.01, "p1": 0.002, "p2": -0.001}
    root = _write_dataset(tmp_path / "ds", frames, top)
    meta = json.loads((root / "transforms.json").read_text())
    for k in (1, 2):
        data = load_split(root, "all", downscale=k)
        for n, frame in enumerate(meta["frames"]):
            get = lambda key, d=0.0: frame.get(key, meta.get(key, d))  # noqa: E731
            w, h = data.size(n)
            assert (w, h) == (get("w") // k, get("h") // k)
            v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
            uv = torch.tensor(np.stack([u.ravel(), v.ravel()], -1), dtype=torch.float32)
            o, d = pixel_rays(data.cameras, uv, torch.full((len(uv),), n))
            pts = (o + 2.0 * d).double().numpy()
            ref, z = ref_project(pts, frame["transform_matrix"], get("fl_x"), get("fl_y"), get("cx"), get("cy"),
                                 get("camera_model"), [get(key) for key in ("k1", "k2", "k3", "k4", "p1", "p2")])
            assert (z > 0).all()
            assert np.abs(ref - uv.numpy() * k).max() < 2e-3 * k


SMALL = {"fl_x": 40.0, "fl_y": 40.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48}  # corners at |xy_d| = 1
BAD_LENSES = [
    ({"camera_model": "OPENCV", "k1": -1e20, **SMALL}, "cannot be inverted"),  # folds 6e-11 off axis: no ray
    ({"camera_model": "OPENCV", "k1": -0.35, **SMALL}, "cannot be inverted"),  # corners beyond the fold: no ray
    ({"camera_model": "OPENCV", "k1": -0.7, "k2": 0.2, **SMALL, "cx": 50.0, "cy": 50.0, "w": 100, "h": 100},
     "not monotonic"),  # the corners invert (outer branch) but the image folds between them and the axis
    # a fisheye whose corners lie 236 degrees off axis
    ({"camera_model": "OPENCV_FISHEYE", **SMALL, "fl_x": 9.7, "fl_y": 9.7}, "more than 180 degrees"),
    ({"camera_model": "OPENCV_FISHEYE", "k2": -1.2, "k3": 0.7, **SMALL, "cx": 60.0, "cy": 60.0, "w": 120, "h": 120},
     "not monotonic"),
]


@pytest.mark.parametrize("lens, message", BAD_LENSES)
def test_a_lens_without_rays_for_its_pixels_is_refused_at_load(tmp_path, lens, message):
    """Such lenses used to load and give NaN rays (or wrong ones, silently) for some pixels; training ran on them."""
    root = _write_dataset(tmp_path / "ds", [{}, {}], lens, size=(lens["w"], lens["h"]))
    with pytest.raises(UserError, match=message) as e:
        load_transforms(root, "all")
    assert "\n" not in str(e.value) and str(e.value).startswith("transforms.json: frame 0, im0.png (")


def test_cli_refuses_nan_rays_with_one_line_and_exit_2(tmp_path, capsys):
    root = _write_dataset(tmp_path / "ds", [{}, {}, {}], {"camera_model": "OPENCV", "k1": -1e20})
    out = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(root), "--out", str(out), "--steps", "2", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be inverted" in err
    assert not (out / "checkpoint.pt").exists()


def test_valid_distorted_lenses_still_load_and_pinhole_is_not_checked():
    ok = Cameras.create(torch.eye(4).expand(3, 4, 4), fx=900.0, width=1000, height=800,
                        model=["OPENCV", "OPENCV_FISHEYE", "PINHOLE"],
                        dist=[[-0.1, 0.02, 0.001, 0.0, 0.001, 0.001], [-0.01, 0.02, 0.001, 0.0, 0, 0], [0] * 6])
    assert len(ok) == 3
    # a pinhole camera never fails the check, whatever (unused) distortion numbers it carries
    Cameras.create(torch.eye(4), fx=10.0, width=100, height=100, model="PINHOLE", dist=[1e20, 0, 0, 0, 0, 0])
