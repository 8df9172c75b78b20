"""Browser camera -> rwf_render camera: the rays of the converted camera pass through the points its projection
maps to those pixels, and the axes mean what viser says they mean."""

import math

import numpy as np
import pytest
import torch

from rwf_render.cameras import look_at, pixel_rays, project
from viewer.camera import (ViewCamera, c2w_from_viser, frustum_params, image_size, matrix_from_quat,
                           quat_from_matrix, viser_pose)


def random_view(rng: np.random.Generator) -> ViewCamera:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return ViewCamera(tuple(rng.normal(size=3) * 2), tuple(q), fov=float(rng.uniform(0.3, 1.8)),
                      aspect=float(rng.uniform(0.5, 2.2)))


def points_in_front(view: ViewCamera, n: int, rng: np.random.Generator) -> torch.Tensor:
    """World points inside the view's frustum, built in viser's OpenCV camera frame (+z forward, +y down)."""
    z = rng.uniform(0.5, 5.0, n)
    half_h = math.tan(view.fov / 2)
    x = rng.uniform(-0.9, 0.9, n) * half_h * view.aspect * z
    y = rng.uniform(-0.9, 0.9, n) * half_h * z
    p_cv = np.stack([x, y, z], 1)
    R = matrix_from_quat(view.wxyz)
    return torch.from_numpy(p_cv @ R.T + np.asarray(view.position))


@pytest.mark.parametrize("seed", range(5))
def test_rays_through_projected_pixels_hit_the_points(seed):
    rng = np.random.default_rng(seed)
    view = random_view(rng)
    w, h = image_size(int(rng.integers(40, 300)), view.aspect)
    cams = view.cameras(w, h, dtype=torch.float64)
    pts = points_in_front(view, 200, rng)
    pixels, depth = project(pts, cams)
    assert bool((depth > 0).all())
    inside = (pixels[0, :, 0] >= 0) & (pixels[0, :, 0] <= w) & (pixels[0, :, 1] >= 0) & (pixels[0, :, 1] <= h)
    assert bool(inside.all()), "points built inside viser's frustum must project inside the image"
    rays_o, rays_d = pixel_rays(cams, pixels[0], normalize=False)  # z-depth-1 directions
    torch.testing.assert_close(rays_o + depth[0, :, None] * rays_d, pts, atol=1e-9, rtol=1e-9)


def test_axes_follow_viser_conventions():
    """viser: looks along +z of R_world_camera, up is -y, right is +x; fov is vertical."""
    rng = np.random.default_rng(7)
    view = random_view(rng)
    R = matrix_from_quat(view.wxyz)
    w, h = 160, round(160 / view.aspect)
    cams = view.cameras(w, h, dtype=torch.float64)
    centre = torch.tensor([[w / 2, h / 2]], dtype=torch.float64)
    _, d = pixel_rays(cams, centre)
    np.testing.assert_allclose(d[0].numpy(), R[:, 2], atol=1e-12)
    pos = np.asarray(view.position)
    probe = torch.from_numpy(np.stack([pos + R[:, 2] - 0.1 * R[:, 1], pos + R[:, 2] + 0.1 * R[:, 0]]))
    (up_px, right_px), _ = project(probe, cams)[0][0], None
    assert up_px[1] < h / 2 and abs(up_px[0] - w / 2) < 1e-6  # viser's up (-y) is up in the image
    assert right_px[0] > w / 2 and abs(right_px[1] - h / 2) < 1e-6
    top = torch.tensor([[w / 2, 0.0]], dtype=torch.float64)  # the top edge of the image
    _, d_top = pixel_rays(cams, top)
    angle = math.acos(float(d_top[0] @ torch.from_numpy(R[:, 2])))
    assert angle == pytest.approx(view.fov / 2, abs=1e-9)


def test_quaternions_match_viser():
    tf = pytest.importorskip("viser.transforms", reason="viser not installed")
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(matrix_from_quat(q), tf.SO3(q).as_matrix(), atol=1e-12)
        back = quat_from_matrix(matrix_from_quat(q))
        assert min(np.abs(back - q).max(), np.abs(back + q).max()) < 1e-12


def test_pose_round_trip_and_frustum():
    c2w = look_at(torch.tensor([1.0, -2.0, 0.7], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    view = ViewCamera.from_c2w(c2w, fov=0.8, aspect=1.5)
    np.testing.assert_allclose(view.c2w()[:3], c2w.numpy(), atol=1e-12)
    wxyz, pos = viser_pose(view.c2w())
    np.testing.assert_allclose(c2w_from_viser(pos, wxyz), view.c2w(), atol=1e-12)
    cams = view.cameras(300, 200, dtype=torch.float64)
    f = frustum_params(cams, 0)
    assert f["fov"] == pytest.approx(0.8) and f["aspect"] == pytest.approx(1.5)
    np.testing.assert_allclose(f["position"], [1.0, -2.0, 0.7])


def test_image_size_keeps_long_side_and_aspect():
    assert image_size(256, 4 / 3) == (256, 192)
    assert image_size(256, 0.5) == (128, 256)
    assert image_size(64, 1000.0) == (64, 1)


def test_clicking_a_training_frustum_moves_the_browser_camera_there():
    import contextlib
    from types import SimpleNamespace

    from viewer.nerf_source import jump_to

    c2w = look_at(torch.tensor([0.5, 3.0, -1.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    cams = ViewCamera.from_c2w(c2w, fov=0.6, aspect=1.25).cameras(250, 200, dtype=torch.float64)
    camera = SimpleNamespace(position=(0.0, 0.0, 5.0), wxyz=(1.0, 0.0, 0.0, 0.0), fov=1.0, aspect=1.25)
    client = SimpleNamespace(camera=camera, atomic=contextlib.nullcontext)
    jump_to(frustum_params(cams, 0))(SimpleNamespace(client=client))
    np.testing.assert_allclose(ViewCamera.from_client(camera).c2w()[:3], c2w.numpy(), atol=1e-12)
    assert camera.fov == pytest.approx(0.6)
