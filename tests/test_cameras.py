"""Camera model: projection and pixel rays agree with brute force, distortion round-trips, conventions flip."""

import math

import numpy as np
import pytest
import torch

from rwf_render.cameras import (MODELS, Cameras, distort, look_at, opencv_to_opengl, pixel_grid, pixel_rays,
                                project, rotation_error, undistort)

DIST = {"PINHOLE": [0, 0, 0, 0, 0, 0],
        "OPENCV": [-0.12, 0.03, -0.004, 0.0, 0.0015, -0.001],
        "OPENCV_FISHEYE": [0.05, -0.01, 0.002, -0.0005, 0, 0]}


def _cams(model: str, n: int = 3) -> Cameras:
    g = torch.Generator().manual_seed(0)
    eyes = torch.randn(n, 3, generator=g, dtype=torch.float64)
    eyes = 3 * eyes / eyes.norm(dim=-1, keepdim=True)
    c2w = look_at(eyes, torch.zeros(3, dtype=torch.float64))
    return Cameras.create(c2w, fx=[80.0, 95.0, 70.0][:n], fy=[82.0, 90.0, 71.0][:n], cx=[61.0, 58.5, 64.0][:n],
                          cy=[47.0, 50.0, 44.5][:n], width=120, height=96, model=model, dist=DIST[model])


def _brute_force_pixel(point_cam_cv, cam: Cameras):
    """Pinhole + distortion written out with Python floats, straight from the documented formulas."""
    X, Y, Z = point_cam_cv
    x, y = X / Z, Y / Z
    k1, k2, k3, k4, p1, p2 = cam.dist[0].tolist()
    model = MODELS[int(cam.model[0])]
    if model == "OPENCV":
        r2 = x * x + y * y
        rad = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
        x, y = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    elif model == "OPENCV_FISHEYE":
        r = math.hypot(x, y)
        th = math.atan(r)
        thd = th * (1 + k1 * th ** 2 + k2 * th ** 4 + k3 * th ** 6 + k4 * th ** 8)
        x, y = x * thd / r, y * thd / r
    return cam.fx.item() * x + cam.cx.item(), cam.fy.item() * y + cam.cy.item()


@pytest.mark.parametrize("model", MODELS)
def test_project_matches_brute_force_opencv_and_opengl(model):
    cams = _cams(model)
    pts = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.6
    pix, depth = project(pts, cams)
    for i in range(len(cams)):
        c2w_cv = opencv_to_opengl(cams.c2w[i].numpy())  # the same pose in OpenCV convention
        R, t = c2w_cv[:, :3], c2w_cv[:, 3]
        for p in range(0, 50, 7):
            pc = R.T @ (pts[p].numpy() - t)  # OpenCV camera coords: +Z in front
            assert depth[i, p].item() == pytest.approx(pc[2], abs=1e-12)
            assert pix[i, p].tolist() == pytest.approx(_brute_force_pixel(pc, cams[i]), abs=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_rays_through_predicted_pixels_hit_the_points(model):
    cams = _cams(model)
    pts = torch.randn(200, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5
    pix, depth = project(pts, cams)
    n, p = pix.shape[:2]
    cam_idx = torch.arange(n).repeat_interleave(p)
    o, d = pixel_rays(cams, pix.reshape(-1, 2), cam_idx, normalize=False)
    hit = o + depth.reshape(-1, 1) * d  # z-depth-1 directions: the point is at t = its depth
    assert torch.allclose(hit, pts.repeat(n, 1), atol=1e-9)
    o, d = pixel_rays(cams, pix.reshape(-1, 2), cam_idx)
    assert torch.allclose(d.norm(dim=-1), torch.ones(n * p, dtype=torch.float64))
    # the unit ray points at the point: cross product vanishes and the point is in front
    to_pt = pts.repeat(n, 1) - o
    assert torch.allclose(torch.linalg.cross(d, to_pt, dim=-1), torch.zeros_like(d), atol=1e-9)
    assert ((to_pt * d).sum(-1) > 0).all()


@pytest.mark.parametrize("model", MODELS)
def test_distortion_round_trip(model):
    g = torch.Generator().manual_seed(3)
    xy = (torch.rand(1000, 2, generator=g, dtype=torch.float64) - 0.5) * 1.4  # up to ~45 deg off axis
    dist = torch.tensor(DIST[model], dtype=torch.float64)
    m = torch.full((1000,), MODELS.index(model))
    xd = distort(xy, m, dist)
    assert torch.allclose(undistort(xd, m, dist), xy, atol=1e-10)
    if model != "PINHOLE":
        assert (xd - xy).abs().max() > 1e-3  # the distortion is not a no-op
    assert torch.allclose(distort(undistort(xy, m, dist), m, dist), xy, atol=1e-10)


def test_full_grid_rays_center_pixel_and_shapes():
    cam = Cameras.create(look_at([0.0, -4.0, 0.0], [0.0, 0.0, 0.0]), fx=50.0, width=8, height=6,
                         dtype=torch.float64)
    o, d = pixel_rays(cam)
    assert o.shape == d.shape == (6, 8, 3)
    grid = pixel_grid(8, 6)
    assert grid[0, 0].tolist() == [0.5, 0.5] and grid[5, 7].tolist() == [7.5, 5.5]
    # the image center (4, 3) lies between the four central pixels: their mean ray is the optical axis (+y)
    mean_d = d[2:4, 3:5].reshape(-1, 3).mean(0)
    assert torch.allclose(mean_d / mean_d.norm(), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-12)
    # image up (row 0) is world up (+z); image right (last column) is world +x for a camera looking along +y
    assert d[0, 4, 2] > 0 and d[5, 4, 2] < 0 and d[3, 7, 0] > 0


def test_conventions_and_helpers():
    c2w = look_at(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert rotation_error(c2w).item() < 1e-12 and torch.linalg.det(c2w[0, :, :3]).item() == pytest.approx(1.0)
    assert torch.equal(opencv_to_opengl(opencv_to_opengl(c2w)), c2w)
    np.testing.assert_allclose(opencv_to_opengl(c2w.numpy()), opencv_to_opengl(c2w).numpy())
    # OpenGL: -Z looks at the target
    fwd = -c2w[0, :, 2]
    assert torch.allclose(fwd, -torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) / math.sqrt(14))
    cams = Cameras.create(np.eye(4)[None].repeat(2, 0), fx=10.0, width=20, height=10, model=["PINHOLE", "OPENCV"])
    assert cams.model_names() == ["PINHOLE", "OPENCV"] and cams.K[0, 0, 2] == 10.0 and len(cams[1]) == 1
    assert Cameras.cat([cams, cams[0]]).c2w.shape == (3, 3, 4)
    with pytest.raises(ValueError):
        Cameras.create(np.eye(4), fx=1.0, width=2, height=2, model="EQUIRECT")
