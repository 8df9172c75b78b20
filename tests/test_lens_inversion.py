"""OPENCV undistortion of wide-angle lenses (a camera review): plain 2-D Newton from the distorted point overshot
where the radial polynomial flattens towards the corners, landing on the root beyond the lens's turning point or
diverging, and valid calibrations were refused as folding or not invertible. The inversion now takes the root on the
polynomial's first rising stretch, as COLMAP does."""

import numpy as np
import pytest
import torch

from rwf_render.cameras import Cameras
from rwf_render.lenses import _radial_turn, distort, undistort

WIDE = dict(k1=-0.36, k2=0.10, k3=-0.008)  # 320 x 240, f 160: corners at r_d 1.2456, reached at r 1.953 < turn
BARREL = dict(k1=-0.450125, k2=0.116627, k3=-0.00577989, p1=-0.00949783, p2=-0.00688162)  # with tangential terms
BARREL_K = dict(fx=184.254, fy=187.34, cx=156.336, cy=118.733)


def _border(w: int, h: int) -> np.ndarray:
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    return np.concatenate([np.stack([xs, np.full(w, 0.5)], 1), np.stack([xs, np.full(w, h - 0.5)], 1),
                           np.stack([np.full(h, 0.5), ys], 1), np.stack([np.full(h, w - 0.5), ys], 1)])


def _dist(d: dict) -> torch.Tensor:
    return torch.tensor([[d.get(k, 0.0) for k in ("k1", "k2", "k3", "k4", "p1", "p2")]], dtype=torch.float64)


def test_a_wide_radial_lens_inverts_on_its_rising_stretch():
    # the first crossing of r (1 + k1 r^2 + k2 r^4 + k3 r^6) = r_d on a fine grid: the reference
    r = np.linspace(0, 3.0, 3_000_001)
    g = r * (1 + WIDE["k1"] * r**2 + WIDE["k2"] * r**4 + WIDE["k3"] * r**6)
    i_turn = int(np.argmax(np.diff(g) <= 0))
    turn = r[i_turn]
    assert 0 < i_turn
    assert abs(float(_radial_turn(_dist(WIDE)[:, :4])[0]) - turn) < 1e-5
    xy_d = torch.tensor((_border(320, 240) - [160, 120]) / 160.0)
    got = undistort(xy_d, torch.tensor(1), _dist(WIDE))
    rd = xy_d.norm(dim=-1).numpy()
    want = r[np.searchsorted(g[:i_turn], rd)]  # the first grid radius at or past each r_d
    np.testing.assert_allclose(got.norm(dim=-1).numpy(), want, atol=2e-6)
    assert (got.norm(dim=-1).numpy() < turn).all()
    back = distort(got, torch.tensor(1), _dist(WIDE))
    assert float((back - xy_d).abs().max()) * 160 < 1e-9
    Cameras.create(torch.eye(4), fx=160.0, width=320, height=240, model="OPENCV", dist=WIDE)  # accepted


@pytest.mark.parametrize("dtype, tol_px", [(torch.float64, 1e-8), (torch.float32, 2e-3)])
def test_a_barrel_lens_with_tangential_terms_inverts_at_every_border_pixel(dtype, tol_px):
    pix = _border(320, 240)
    f = np.array([BARREL_K["fx"], BARREL_K["fy"]])
    xy_d = torch.tensor((pix - [BARREL_K["cx"], BARREL_K["cy"]]) / f, dtype=dtype)
    got = undistort(xy_d, torch.tensor(1), _dist(BARREL).to(dtype)).double()
    back = distort(got, torch.tensor(1), _dist(BARREL)).numpy() * f + [BARREL_K["cx"], BARREL_K["cy"]]
    assert np.isfinite(got.numpy()).all() and np.abs(back - pix).max() < tol_px
    # on the rising stretch: no border ray beyond the radial polynomial's turning point
    assert float(got.norm(dim=-1).max()) < float(_radial_turn(_dist(BARREL)[:, :4])[0])
    Cameras.create(torch.eye(4), **BARREL_K, width=320, height=240, model="OPENCV", dist=BARREL)  # accepted


def test_agrees_with_colmap():
    pycolmap = pytest.importorskip("pycolmap")
    cam = pycolmap.Camera(model="FULL_OPENCV", width=320, height=240,
                          params=[*BARREL_K.values(), BARREL["k1"], BARREL["k2"], BARREL["p1"], BARREL["p2"],
                                  BARREL["k3"], 0, 0, 0])
    pix = _border(320, 240)
    want = np.asarray(cam.cam_from_img(pix))
    f = np.array([BARREL_K["fx"], BARREL_K["fy"]])
    got = undistort(torch.tensor((pix - [BARREL_K["cx"], BARREL_K["cy"]]) / f), torch.tensor(1), _dist(BARREL))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-7)


def test_ordinary_lenses_are_unchanged_and_a_batch_of_lenses_inverts_each():
    """Two lenses in one batch (rays of several cameras): each takes its own turning point."""
    torch.manual_seed(0)
    xy_d = (torch.rand(2000, 2, dtype=torch.float64) - 0.5) * 1.6
    dist = torch.tensor([[-0.1, 0.02, 0.001, 0.0, 0.001, 0.001], [-0.36, 0.10, -0.008, 0.0, 0.0, 0.0]],
                        dtype=torch.float64)[torch.arange(2000) % 2]
    got = undistort(xy_d, torch.tensor(1), dist)
    assert float((distort(got, torch.tensor(1), dist) - xy_d).abs().max()) < 1e-12
    turns = _radial_turn(dist[:, :4])
    assert torch.isinf(turns[0]) and float(turns[1]) == pytest.approx(2.5152, abs=1e-3)



def test_rays_of_many_lenses_take_each_cameras_own_turning_point():
    """pixel_rays finds each camera's turning point once (a sort of every ray's lens made a batch of 30 lenses 2.4x
    slower than before); rays of two cameras in one batch are those of each camera alone."""
    from rwf_render.cameras import pixel_rays

    cams = Cameras.create(torch.eye(4).expand(2, 4, 4), fx=160.0, width=320, height=240, model="OPENCV",
                          dist=[[WIDE["k1"], WIDE["k2"], WIDE["k3"], 0, 0, 0], [-0.1, 0.02, 0.0, 0, 0.001, 0.001]])
    pix = torch.tensor(_border(320, 240), dtype=torch.float32)
    idx = torch.arange(len(pix)) % 2
    _, both = pixel_rays(cams, pix, idx)
    for k in (0, 1):
        _, alone = pixel_rays(cams[k], pix[idx == k])
        torch.testing.assert_close(both[idx == k], alone)
