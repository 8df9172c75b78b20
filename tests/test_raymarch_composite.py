"""Compositing over packed samples: closed forms for slabs, gradients, early termination, precision."""

import math

import pytest
import torch

from rwf_render.raymarch import (OccupancyGrid, accumulate_along_rays, composite, exclusive_sum,
                                 render_weight_from_density, volume_render)


def slab_samples(start, end, n, dtype=torch.float64):
    t = torch.linspace(start, end, n + 1, dtype=dtype)
    return t[:-1], t[1:]


@pytest.mark.parametrize("n", [1, 7, 100])
def test_a_homogeneous_slab_has_opacity_one_minus_exp_minus_sigma_length(n):
    sigma, (a, b) = 3.7, (0.4, 1.3)
    ts, te = slab_samples(a, b, n)
    ri = torch.zeros(n, dtype=torch.long)
    rgb = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).expand(n, 3)
    bg = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    colors, opacity, depth, extras = composite(rgb, torch.full((n,), sigma, dtype=torch.float64), ts, te, ri, 1,
                                               background=bg)
    alpha = 1 - math.exp(-sigma * (b - a))
    assert opacity.item() == pytest.approx(alpha, rel=1e-12)
    assert torch.allclose(colors[0], rgb[0] * alpha + bg * (1 - alpha), atol=1e-12)
    assert extras["trans"][0].item() == 1.0
    # with many thin samples the depth approaches the continuous one: int t sigma exp(-sigma (t - a)) dt over [a, b]
    if n == 100:
        continuous = (a + 1 / sigma) * alpha - (b - a) * math.exp(-sigma * (b - a))
        assert depth.item() == pytest.approx(continuous, rel=1e-3)


def test_two_colored_slabs_composite_in_order():
    s1, s2 = 1.2, 0.7  # optical thicknesses of the red (near) and blue (far) slab
    red, blue, bg = torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0]), torch.tensor([0, 1.0, 0])
    ts_r, te_r = slab_samples(1.0, 2.0, 5, torch.float32)
    ts_b, te_b = slab_samples(3.0, 4.0, 5, torch.float32)
    # ray 0 meets red then blue; ray 1 travels the other way (blue first)
    ts = torch.cat([ts_r, ts_b, 5.0 - te_b, 5.0 - te_r])
    te = torch.cat([te_r, te_b, 5.0 - ts_b, 5.0 - ts_r])
    sig = torch.cat([torch.full((5,), s1), torch.full((5,), s2), torch.full((5,), s2), torch.full((5,), s1)])
    rgb = torch.cat([red.expand(5, 3), blue.expand(5, 3), blue.expand(5, 3), red.expand(5, 3)])
    ri = torch.cat([torch.zeros(10, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    colors, opacity, _, _ = composite(rgb, sig, ts, te, ri, 2, background=bg)
    a1, a2 = 1 - math.exp(-s1), 1 - math.exp(-s2)
    expect0 = a1 * red + (1 - a1) * a2 * blue + (1 - a1) * (1 - a2) * bg
    expect1 = a2 * blue + (1 - a2) * a1 * red + (1 - a1) * (1 - a2) * bg
    assert torch.allclose(colors[0], expect0, atol=1e-6) and torch.allclose(colors[1], expect1, atol=1e-6)
    assert torch.allclose(opacity, torch.full((2, 1), 1 - (1 - a1) * (1 - a2)), atol=1e-6)


def packed_batch(seed, counts, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.tensor(counts)
    ri = torch.repeat_interleave(torch.arange(len(counts)), counts)
    steps = torch.rand(ri.shape[0], generator=gen, dtype=dtype) * 0.2 + 0.01
    ends = torch.zeros(ri.shape[0], dtype=dtype)
    for r in range(len(counts)):  # t increases within each ray
        m = ri == r
        ends[m] = steps[m].cumsum(0)
    return ri, ends - steps, ends, gen


def test_compositing_passes_gradcheck_in_float64():
    ri, ts, te, gen = packed_batch(0, [3, 0, 5, 1])
    sig = (torch.rand(ts.shape, generator=gen, dtype=torch.float64) * 5).requires_grad_()
    rgb = torch.rand(ts.shape[0], 3, generator=gen, dtype=torch.float64).requires_grad_()
    bg = torch.rand(3, generator=gen, dtype=torch.float64).requires_grad_()
    ts, te = ts.requires_grad_(), te.requires_grad_()

    def f(sig, rgb, bg, ts, te):
        colors, opacity, depth, _ = composite(rgb, sig, ts, te, ri, 4, background=bg)
        return colors, opacity, depth

    assert torch.autograd.gradcheck(f, (sig, rgb, bg, ts, te))


def test_weights_follow_their_definition():
    ri, ts, te, gen = packed_batch(1, [4, 6, 2])
    sig = torch.rand(ts.shape, generator=gen, dtype=torch.float64) * 3
    weights, trans, alphas = render_weight_from_density(ts, te, sig, ri, 3)
    for r in range(3):  # a loop per ray: T_i = prod_{j<i} (1 - alpha_j)
        m = ri == r
        a = 1 - torch.exp(-sig[m] * (te[m] - ts[m]))
        t = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - a, 0)[:-1]])
        assert torch.allclose(alphas[m], a) and torch.allclose(trans[m], t) and torch.allclose(weights[m], t * a)
    acc = accumulate_along_rays(weights, ri, 3)
    assert torch.allclose(acc[:, 0], torch.stack([weights[ri == r].sum() for r in range(3)]))


def test_a_rays_result_does_not_depend_on_how_many_samples_precede_it():
    """The per-ray sum runs as one cumulative sum over the batch: float64 keeps late rays exact."""
    n_before = 1_000_000
    ri_late = torch.zeros(50, dtype=torch.long)
    ts, te = slab_samples(0.0, 1.0, 50, torch.float32)
    sig = torch.full((50,), 4.0)
    alone = exclusive_sum(sig * (te - ts), ri_late, 1)
    big = torch.full((n_before,), 30.0)  # thick, so the batch's running sum gets large
    values = torch.cat([big, sig * (te - ts)])
    ri = torch.cat([torch.zeros(n_before, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    late = exclusive_sum(values, ri, 2)[n_before:]
    assert torch.allclose(late, alone, atol=1e-6)


def test_early_termination_drops_light_only_below_the_threshold():
    ri, ts, te, gen = packed_batch(2, [40, 40, 40])
    sig = torch.full(ts.shape, 20.0, dtype=torch.float64)
    rgb = torch.rand(ts.shape[0], 3, generator=gen, dtype=torch.float64)
    eps = 1e-3
    full = composite(rgb, sig, ts, te, ri, 3)
    cut = composite(rgb, sig, ts, te, ri, 3, early_stop_eps=eps)
    dropped = full[3]["trans"] < eps
    assert dropped.any() and bool((cut[3]["weights"][dropped] == 0).all())
    assert (full[0] - cut[0]).abs().max() <= eps  # what is left behind carries less than eps of the light
    # volume_render, the public wrapper, terminates alike (no caller inside the toolkit passes early_stop_eps)
    wrapped = volume_render(ts, te, ri, 3, lambda *_: (rgb, sig), early_stop_eps=eps)
    assert torch.equal(wrapped[3]["weights"], cut[3]["weights"]) and torch.equal(wrapped[0], cut[0])


def test_volume_render_with_marched_samples_and_a_closed_form_density():
    """A ball of density 2 and radius 1/2 seen through a grid marking it: an analytic rgb_sigma_fn."""
    sigma = 2.0
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=32)
    gen = torch.Generator().manual_seed(0)
    for step in range(256):  # the warm-up: every cell, 16 times at jittered points
        grid.update(step, lambda x: sigma * (x.norm(dim=-1) < 0.5).float(), step_size=0.005, generator=gen)
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.9, -3.0]])  # through the center; past the ball
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    ri, ts, te = grid.sampling(o, d, step_size=0.005, backend="torch")

    def rgb_sigma_fn(t_starts, t_ends, ray_indices):
        x = o[ray_indices] + ((t_starts + t_ends) / 2)[:, None] * d[ray_indices]
        sig = sigma * (x.norm(dim=-1) < 0.5).float()
        return torch.tensor([0.3, 0.6, 0.9]).expand(x.shape[0], 3), sig

    colors, opacity, depth, _ = volume_render(ts, te, ri, 2, rgb_sigma_fn, background=1.0)
    alpha = 1 - math.exp(-sigma)  # the central chord has length 1 (from t = 2.5 to 3.5)
    assert opacity[0].item() == pytest.approx(alpha, abs=2e-3)  # the lattice resolves the chord to a step
    assert torch.allclose(colors[0], torch.tensor([0.3, 0.6, 0.9]) * alpha + (1 - alpha), atol=2e-3)
    assert depth[0].item() == pytest.approx((2.5 + 1 / sigma) * alpha - math.exp(-sigma), rel=1e-2)
    assert opacity[1].item() == 0.0 and torch.allclose(colors[1], torch.ones(3))
    empty = volume_render(ts[:0], te[:0], ri[:0], 2, rgb_sigma_fn, background=0.25)
    assert torch.allclose(empty[0], torch.full((2, 3), 0.25)) and bool((empty[1] == 0).all())


@pytest.mark.parametrize("huge", [1e30, float("inf")])
def test_a_huge_density_on_one_ray_leaves_the_other_rays_alone(huge):
    """The transmittance comes from one cumulative sum over the whole batch: one ray's optical thickness of 1e30
    (or an overflowed exp, inf) swamped the sums of the rays packed after it (opacity 1.18, then NaN for all)."""
    ts = torch.tensor([0.0, 1.0, 0.0, 1.0, 2.0])
    te, ri = ts + 1, torch.tensor([0, 0, 1, 1, 1])
    sigmas = torch.tensor([huge, 1.0, 0.5, 0.5, 0.5], requires_grad=True)
    rgbs = torch.rand(5, 3, generator=torch.Generator().manual_seed(0))
    colors, opacity, depth, extras = composite(rgbs, sigmas, ts, te, ri, 2, background=1.0)
    alone = composite(rgbs[2:], sigmas[2:].detach(), ts[2:], te[2:], torch.zeros(3, dtype=torch.long), 1, 1.0)
    torch.testing.assert_close(colors[1:], alone[0])
    torch.testing.assert_close(opacity[1:], alone[1])
    torch.testing.assert_close(extras["trans"][2:], alone[3]["trans"])
    assert float(opacity[0].detach()) == 1.0 and torch.equal(extras["weights"][:2].detach(), torch.tensor([1.0, 0.0]))
    colors.sum().backward()
    assert torch.isfinite(sigmas.grad).all()


def test_an_infinite_density_on_a_sample_of_no_width_leaves_the_other_rays_alone():
    """Far along a ray with a fine step float32 cannot part t_start from t_end: inf x 0 was NaN, and the batch-wide
    cumulative sum carried it into every ray packed after it. A sample of no width holds nothing, whatever its
    density."""
    ts = torch.tensor([1.0, 1.0, 0.0, 0.5])
    te, ri = torch.tensor([1.0, 1.5, 0.5, 1.0]), torch.tensor([0, 0, 1, 1])
    sigmas = torch.tensor([float("inf"), 1.0, 1.0, 1.0], requires_grad=True)
    rgbs = torch.rand(4, 3, generator=torch.Generator().manual_seed(0))
    colors, opacity, depth, extras = composite(rgbs, sigmas, ts, te, ri, 2, background=1.0)
    assert torch.isfinite(opacity).all() and torch.isfinite(colors).all()
    assert opacity.detach().flatten().tolist() == pytest.approx([1 - math.exp(-0.5), 1 - math.exp(-1.0)], rel=1e-6)
    assert float(extras["weights"][0].detach()) == 0.0
    colors.sum().backward()
    assert torch.isfinite(sigmas.grad).all()


def test_pruning_by_transmittance_is_not_spoiled_by_another_ray():
    """The marcher's early-stop pruning sums the same thickness: a huge density on ray 0 must not drop ray 1's."""
    from rwf_render.raymarch.march import RaySamples, _prune  # noqa: PLC0415

    ts = torch.arange(8.0).repeat(2)
    ri = torch.arange(2).repeat_interleave(8)
    dens = torch.where(ri == 0, torch.tensor(1e30), torch.tensor(1.0))
    kept = _prune(RaySamples(ri, ts, ts + 1), 2, lambda t0, t1, r: dens[r * 8 + t0.long()], 0.0, 1e-2)
    alone = _prune(RaySamples(ri[8:] * 0, ts[8:], ts[8:] + 1), 1, lambda t0, t1, r: dens[8 + t0.long()], 0.0, 1e-2)
    assert kept.t_starts[kept.ray_indices == 1].tolist() == alone.t_starts.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert kept.t_starts[kept.ray_indices == 0].tolist() == [0.0]  # the opaque sample hides the rest of ray 0


def test_rays_packed_in_any_order_composite_as_when_sorted():
    """Samples grouped by ray, the rays not in index order (a caller's own packing): each ray's start was taken as
    if the rays came sorted, and sigma 1 on unit intervals gave transmittances above 1 and an opacity of 4.7."""
    t0 = torch.tensor([0.0, 0.0, 1.0])
    t1 = t0 + 1.0
    sigma = torch.ones(3)
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    shuffled = composite(rgb, sigma, t0, t1, torch.tensor([1, 0, 0]), 2)
    order = torch.tensor([1, 2, 0])  # the same samples with ray 0 first
    sorted_ = composite(rgb[order], sigma[order], t0[order], t1[order], torch.tensor([0, 0, 1]), 2)
    for a, b in zip(shuffled[:3], sorted_[:3]):
        assert torch.allclose(a, b)
    assert torch.allclose(shuffled[3]["weights"][order], sorted_[3]["weights"])
    opacity = shuffled[1].reshape(-1)
    assert torch.allclose(opacity, torch.tensor([1 - math.exp(-2.0), 1 - math.exp(-1.0)]))
    assert torch.equal(exclusive_sum(torch.tensor([5.0, 1.0, 2.0, 3.0]), torch.tensor([2, 2, 0, 1]), 3),
                       torch.tensor([0.0, 5.0, 0.0, 0.0]))
