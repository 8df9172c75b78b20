"""The marcher and compositing on edge inputs, used from Python (a helper's hunt; both backends agreed on nearly
everything): one ray's bad density must not spoil the others, a NaN in the grid must not stay for good, and options
either backend would read differently are refused."""

import math

import pytest
import torch

from rwf_render.raymarch import OccupancyGrid, _backend, composite
from rwf_render.raymarch.march import march


def _backends():
    return ["torch"] + (["cpu"] if _backend.load("cpu") is not None else [])


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), -1e20, -3.0, float("inf")])
def test_one_rays_bad_density_leaves_the_others_alone(bad):
    n = 3
    ri = torch.arange(n).repeat_interleave(2)
    ts = torch.tensor([0.0, 1.0] * n)
    te = ts + 1.0
    sigmas = torch.full((2 * n,), 0.5)
    sigmas[0] = bad
    colors, opacity, depth, _ = composite(torch.ones(2 * n, 3), sigmas, ts, te, ri, n)
    assert torch.allclose(opacity[1:, 0], torch.full((2,), 1 - math.exp(-1.0)), atol=1e-6)  # 2 slabs of 0.5 x 1
    assert bool(((opacity >= 0) & (opacity <= 1)).all())
    if math.isnan(bad) or bad == math.inf:  # opaque, as documented: the ray ends there (NaN counted as empty
        assert float(opacity[0, 0]) == pytest.approx(1.0, abs=1e-6)  # would show what a diverged sample hides)
    assert torch.isfinite(colors).all() and torch.isfinite(depth).all()


def test_pruning_with_a_nan_density_keeps_the_other_rays_samples():
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8)
    grid.fill_(True)
    o = torch.tensor([[-1.0, 0.3, 0.3], [-1.0, 0.5, 0.5], [-1.0, 0.7, 0.7]])
    d = torch.tensor([[1.0, 0.0, 0.0]] * 3)

    def sigma_fn(ts, te, ri):
        s = torch.full_like(ts, 0.1)
        s[(ri == 0) & (ts == ts[ri == 0].min())] = float("nan")
        return s
    for backend in _backends():
        ri, *_ = grid.sampling(o, d, step_size=0.25, sigma_fn=sigma_fn, early_stop_eps=1e-4, backend=backend)
        assert torch.bincount(ri, minlength=3).tolist() == [1, 4, 4], backend  # ray 0 ends at its NaN sample


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_bad_density_in_a_grid_update_does_not_stay(bad):
    """A faint field (thickness below occ_thre, above the mean): the adaptive threshold keeps its cells. A NaN sample
    left them 0 for good. An inf counts as the densest a cell can be (finite, so it decays): like any opaque cell
    it raises the mean above occ_thre while it lasts, as the rule min(occ_thre, mean) says."""
    def faint(points):
        return torch.where((points - 0.5).norm(dim=-1) < 0.25, 0.05, 0.0)

    def run(first_bad: bool):
        torch.manual_seed(0)
        grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=16)
        for step in range(30):
            def fn(p, step=step):
                s = faint(p)
                if first_bad and step == 0:
                    s[0] = bad
                return s
            grid.update(step, fn, step_size=0.01, warmup_steps=1, every_n=1)
            assert torch.isfinite(grid.density).all()
        return int(grid.occupancy.sum()), float(grid.density.max())
    clean, _ = run(False)
    occupied, densest = run(True)
    assert clean > 50
    if math.isnan(bad):
        assert abs(occupied - clean) <= 1  # 0 cells before
    else:
        assert occupied >= 1 and densest < 100 / 0.01  # the inf cell, decayed from the cap


def test_density_fn_of_the_wrong_size_is_refused():
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8)
    with pytest.raises(ValueError, match="densities for"):
        grid.update(0, lambda p: torch.tensor(1.0), step_size=0.01)


@pytest.mark.parametrize("kwargs, says", [
    ({"cone_angle": float("nan")}, "cone_angle"), ({"cone_angle": float("inf")}, "cone_angle"),
    ({"step_size": float("inf")}, "step_size"), ({"step_size": float("nan")}, "step_size"),
    ({"max_samples": 2.5}, "integer"), ({"max_samples": float("inf")}, "integer")])
def test_options_the_backends_would_read_differently_are_refused(kwargs, says):
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8)
    grid.fill_(True)
    o, d = torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    for backend in _backends():
        with pytest.raises(ValueError, match=says):
            march(grid.spec(), o, d, **{"step_size": 0.25, **kwargs}, backend=backend)


def test_samples_carry_no_gradient_from_near_or_jitter():
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8)
    grid.fill_(True)
    o, d = torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    near, jitter = torch.tensor([0.5], requires_grad=True), torch.tensor([0.3], requires_grad=True)
    for backend in _backends():
        _, ts, te = march(grid.spec(), o, d, near=near, jitter=jitter, step_size=0.25, backend=backend)
        assert not ts.requires_grad and not te.requires_grad, backend


def test_grid_box_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        OccupancyGrid([0, 0, 0, 1, 1, float("inf")], resolution=8)


def test_composite_shapes():
    ri = torch.zeros(2, dtype=torch.long)
    ts, te = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="rgbs must be"):
        composite(torch.ones(2), torch.ones(2), ts, te, ri, 1)  # (S,): broadcast to (n_rays, S) before
    a = composite(torch.ones(2, 3), torch.ones(2, 1), ts, te, ri, 1)  # a density head's (S, 1)
    b = composite(torch.ones(2, 3), torch.ones(2), ts, te, ri, 1)
    assert all(torch.equal(x, y) for x, y in zip(a[:3], b[:3]))
