"""Integrated position encoding (``--mip``): closed forms against Monte Carlo, the frustum moments, the field and
renderer plumbing, and a fit with mesh export."""

import json
import math

import pytest
import torch

from rwf_render import cli
from rwf_render.encodings import GaussianFourierFeatures, PositionalEncoding
from rwf_render.nerf_field import NeRFField, NeRFFieldConfig
from rwf_render.nerf_render import NeRFModel, RenderConfig, frustum_cov, pixel_radius


def _random_cov(n, scale, gen):
    a = torch.randn(n, 3, 3, generator=gen, dtype=torch.float64) * scale
    return a @ a.transpose(1, 2)


@pytest.mark.parametrize("make", [lambda: GaussianFourierFeatures(3, 24, 2.0, include_input=True,
                                                                  generator=torch.Generator().manual_seed(1)),
                                  lambda: PositionalEncoding(3, 4, include_input=True)])
def test_integrated_encoding_is_the_expected_encoding_of_a_gaussian(make):
    """enc(mean, cov) equals the mean of enc over 400k draws from N(mean, cov), to Monte Carlo error."""
    enc = make().double()
    gen = torch.Generator().manual_seed(0)
    mean, cov = torch.rand(6, 3, generator=gen, dtype=torch.float64), _random_cov(6, 0.06, gen)
    draws = mean + (torch.linalg.cholesky(cov) @ torch.randn(400_000, 6, 3, 1, generator=gen,
                                                              dtype=torch.float64)).squeeze(-1)
    mc = enc(draws.reshape(-1, 3)).reshape(400_000, 6, -1).mean(0)
    exact = enc(mean, cov)
    assert (mc - exact).abs().max() < 0.006  # 5 standard errors of a mean of 400k values in [-1, 1]
    damped = (enc(mean) - exact).abs().max()
    assert damped > 0.2  # the covariance is wide enough for the check to mean something
    # zero covariance: the point encoding exactly; a huge one: only the raw input survives
    assert torch.equal(enc(mean, torch.zeros(6, 3, 3, dtype=torch.float64)), enc(mean))
    assert torch.allclose(enc(mean, cov[0]), enc(mean, cov[0].expand(6, 3, 3)))  # one covariance for all points
    wide = enc(mean, torch.eye(3, dtype=torch.float64).expand(6, 3, 3) * 100.0)
    assert torch.equal(wide[:, :3], mean) and wide[:, 3:].abs().max() < 1e-12


def test_frustum_moments_match_uniform_points_in_the_cone():
    """frustum_cov: the covariance of points uniform in a conical frustum (density ~ t^2 along the ray, uniform
    over each disc of radius radius * t), along and across the ray, for a short far frustum and a long near one."""
    gen = torch.Generator().manual_seed(3)
    d = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64), dim=1)
    e1 = torch.nn.functional.normalize(torch.linalg.cross(d, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)),
                                       dim=1)
    e2 = torch.linalg.cross(d, e1)
    for t0, t1, radius in [(10.0, 10.4, 0.004), (0.5, 2.0, 0.05)]:
        n = 2_000_000
        u, v, phi = (torch.rand(n, generator=gen, dtype=torch.float64) for _ in range(3))
        t = (t0**3 + u * (t1**3 - t0**3)) ** (1 / 3)
        rho = radius * t * v.sqrt()
        pts = t[:, None] * d + rho[:, None] * (torch.cos(2 * math.pi * phi)[:, None] * e1
                                               + torch.sin(2 * math.pi * phi)[:, None] * e2)
        centred = pts - pts.mean(0)
        mc = centred.T @ centred / n
        exact = frustum_cov(d, torch.tensor([t0], dtype=torch.float64), torch.tensor([t1], dtype=torch.float64),
                            torch.tensor([radius], dtype=torch.float64))[0]
        along = (d @ exact @ d.T).item()
        assert (d @ mc @ d.T).item() == pytest.approx(along, rel=0.01)
        for e in (e1, e2):
            assert (e @ mc @ e.T).item() == pytest.approx((e @ exact @ e.T).item(), rel=0.01)
        # lines (no radius): only the spread along the ray
        line = frustum_cov(d, torch.tensor([t0], dtype=torch.float64), torch.tensor([t1], dtype=torch.float64),
                           None)[0]
        assert (d @ line @ d.T).item() == pytest.approx(along) and (e1 @ line @ e1.T).abs().item() < 1e-15


def test_pixel_radius_is_a_pixel_width_over_root_three():
    from rwf_render.cameras import Cameras

    cams = Cameras.create(torch.eye(4)[None, :3].repeat(2, 1, 1), fx=[100.0, 400.0], fy=[100.0, 100.0],
                          width=[64, 64], height=[48, 48])
    assert torch.allclose(pixel_radius(cams), torch.tensor([1 / (100 * math.sqrt(3)), 1 / (200 * math.sqrt(3))]))


def test_mip_field_reads_the_covariance_and_only_then():
    """A mip field equals the point field at zero covariance and differs under a wide one; a point field ignores
    the covariance. The box normalization scales the covariance: a box twice as large halves the spread (and
    halves the density per scene unit, as the field's density is per a length of its box)."""
    aabb = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    x, d = torch.rand(50, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(50, 3), dim=1)
    cov = torch.eye(3).expand(50, 3, 3) * 0.01
    mip = NeRFField(aabb, NeRFFieldConfig(mip=True), seed=0)
    plain = NeRFField(aabb, NeRFFieldConfig(), seed=0)
    with torch.no_grad():
        assert torch.equal(mip(x, d)[0], plain(x, d)[0])
        assert torch.allclose(mip(x, d, None, torch.zeros(50, 3, 3))[1], plain(x, d)[1], rtol=1e-5, atol=1e-6)
        assert (mip(x, d, None, cov)[1] - plain(x, d)[1]).abs().max() > 1e-3
        assert torch.equal(plain(x, d, None, cov)[1], plain(x, d)[1])
        big = NeRFField([2 * v for v in aabb], NeRFFieldConfig(mip=True), seed=0)
        assert torch.allclose(2 * big.density(2 * x, 4 * cov), mip.density(x, cov), rtol=1e-4, atol=1e-5)


def test_mip_rendering_converges_to_point_rendering_as_the_footprint_shrinks():
    """The same weights rendered with and without mip: the difference falls as the steps and pixels shrink (the
    Gaussians tend to points), and grid updates ask the density at each cell's own scale."""
    torch.manual_seed(0)
    aabb = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    rays_o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(64, 1) + torch.randn(64, 3) * 0.05
    rays_d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0]]) + torch.randn(64, 3) * 0.1, dim=1)
    gaps = []
    for steps in (64, 1024):
        rc = RenderConfig(grid_resolution=16, steps_per_diagonal=steps, sampler="dense")
        models = [NeRFModel(aabb, NeRFFieldConfig(mip=m), rc, seed=0) for m in (False, True)]
        with torch.no_grad():
            out = [m.render_rays(rays_o, rays_d, radii=torch.full((64,), 1e-3 * 64 / steps)) for m in models]
        gaps.append((out[0]["rgb"] - out[1]["rgb"]).abs().mean().item())
    assert gaps[1] < gaps[0] / 4, gaps
    m = NeRFModel(aabb, NeRFFieldConfig(mip=True), RenderConfig(grid_resolution=16, grid_levels=2), seed=0)
    pts = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    size = torch.diagonal(m.cell_cov(pts), dim1=1, dim2=2).mul(12).sqrt()
    assert torch.allclose(size, torch.tensor([[0.125] * 3, [0.25] * 3]))


def test_mip_fit_exports_and_resumes(tmp_path, capsys):
    """A few steps of ``--mip`` on the built-in scene: config.json records it, mesh export reads the field at the
    voxel's scale, and --resume continues the run but refuses --no-mip."""
    run = tmp_path / "run"
    fit = ["fit", "nerf", "--eval-every", "4", "--eval-images", "1", "--grid-resolution", "32", "--mip", "--out",
           str(run), "--quiet"]
    assert cli.main(fit + ["--steps", "4"]) == 0
    assert json.loads((run / "config.json").read_text())["field"]["mip"] is True
    assert cli.main(["export", "mesh", str(run), "--res", "32", "--threshold", "0.01", "--out",
                     str(tmp_path / "m.ply")]) == 0
    assert (tmp_path / "m.ply").stat().st_size > 0
    capsys.readouterr()
    assert cli.main(["fit", "nerf", "--steps", "6", "--no-mip", "--resume", "--out", str(run), "--quiet"]) == 2
    assert "--mip (run: True, given: False)" in capsys.readouterr().err
    assert cli.main(fit + ["--steps", "6", "--resume"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 6
