"""The ray marcher's sample set: invariants on every backend, closed forms, and the compiled kernel against its twin.

The sample set is defined in ``rwf_render/raymarch/march.py`` (and ``csrc/march.h``): lattice intervals whose
midpoints fall in occupied cells, up to a cap. The C++ kernel skips empty space; the torch twin tests every
lattice point; both must return identical samples.
"""

import os
import shutil

import pytest
import torch

from rwf_render.raymarch import OccupancyGrid, _backend, march_torch

AABB = [-0.3, 0.1, -1.0, 0.7, 0.6, 0.2]


@pytest.fixture(scope="module")
def cpu_kernel():
    """The compiled CPU marcher (built once into the cache on first use). Where a compiler is present, a failed
    build is a test failure, not a skip."""
    if _backend.load("cpu") is None:
        why = _backend.reason("cpu")
        if shutil.which(os.environ.get("CXX", "c++")) and os.environ.get("RWF_NO_BUILD") != "1":
            pytest.fail(f"the CPU kernel did not build although a compiler is present: {why}")
        pytest.skip(f"no compiled CPU kernel: {why}")
    return "cpu"


@pytest.fixture(params=["torch", "cpu"])
def backend(request):
    if request.param == "cpu":
        request.getfixturevalue("cpu_kernel")
    return request.param


def random_grid(seed, levels=1, resolution=16, fraction=0.3, aabb=AABB):
    gen = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(aabb, resolution=resolution, levels=levels)
    grid.occupancy.copy_(torch.rand(grid.occupancy.shape, generator=gen) < fraction)
    return grid


def blob_grid(seed, levels=1, resolution=32):
    """Sparse structure (a few occupied balls of cells) so that whole blocks of the empty-space pyramid are empty."""
    gen = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(AABB, resolution=resolution, levels=levels)
    centers = grid.cell_points(torch.arange(grid.n_cells))
    lo, hi = grid.level_aabbs()[-1, :3], grid.level_aabbs()[-1, 3:]
    occ = torch.zeros(grid.n_cells, dtype=torch.bool)
    for _ in range(6):
        c = lo + torch.rand(3, generator=gen) * (hi - lo)
        occ |= (centers - c).norm(dim=1) < 0.25 * float((hi - lo).min())
    grid.occupancy.copy_(occ.view_as(grid.occupancy))
    return grid


def random_rays(seed, n, grid):
    """Half the rays aim at the grid's box, half go anywhere; origins inside and outside; unit directions."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = grid.level_aabbs()[-1, :3], grid.level_aabbs()[-1, 3:]
    center, size = (lo + hi) / 2, float((hi - lo).max())
    o = center + (torch.rand(n, 3, generator=gen) - 0.5) * 3 * size
    d = torch.randn(n, 3, generator=gen)
    target = lo + torch.rand(n, 3, generator=gen) * (hi - lo)
    d[: n // 2] = target[: n // 2] - o[: n // 2]
    return o, d / d.norm(dim=1, keepdim=True)


def assert_same(a, b, what=""):
    assert a.ray_indices.shape == b.ray_indices.shape, f"{what}: {a.ray_indices.numel()} vs {b.ray_indices.numel()}"
    assert torch.equal(a.ray_indices, b.ray_indices), what
    assert (a.t_starts - b.t_starts).abs().max().item() <= 1e-6 if a.t_starts.numel() else True, what
    assert (a.t_ends - b.t_ends).abs().max().item() <= 1e-6 if a.t_ends.numel() else True, what


def midpoints(o, d, s):
    m = (s.t_starts + s.t_ends) * 0.5
    return o[s.ray_indices] + m[:, None] * d[s.ray_indices]  # the marcher's float32 arithmetic


# -- invariants, on every backend ---------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [1, 2])
def test_every_sample_is_inside_the_box_and_in_an_occupied_cell(backend, levels):
    grid = random_grid(1, levels=levels)
    o, d = random_rays(2, 2000, grid)
    s = grid.sampling(o, d, step_size=0.011, backend=backend)
    assert s.ray_indices.numel() > 1000
    x = midpoints(o, d, s)
    assert bool(grid.query(x)[0].all())  # the cell the marcher saw is occupied
    box = grid.level_aabbs()[-1]
    x64 = o[s.ray_indices].double() + ((s.t_starts + s.t_ends).double() / 2)[:, None] * d[s.ray_indices].double()
    tol = 1e-5
    assert bool(((x64 >= box[:3].double() - tol) & (x64 <= box[3:].double() + tol)).all())


def test_t_increases_strictly_within_each_ray(backend):
    grid = random_grid(3, levels=2)
    o, d = random_rays(4, 2000, grid)
    s = grid.sampling(o, d, step_size=0.007, cone_angle=0.01, stratified=True, seed=0, backend=backend)
    ri, ts, te = s
    assert bool((te > ts).all())
    same_ray = ri[1:] == ri[:-1]
    assert bool((ri[1:] >= ri[:-1]).all()), "samples are grouped by ray in order"
    assert bool((ts[1:][same_ray] > ts[:-1][same_ray]).all())
    assert bool((ts[1:][same_ray] >= te[:-1][same_ray]).all()), "intervals of one ray do not overlap"


@pytest.mark.parametrize("levels", [1, 3])
def test_an_empty_grid_yields_no_samples(backend, levels):
    grid = OccupancyGrid(AABB, resolution=16, levels=levels)
    o, d = random_rays(5, 1000, grid)
    s = grid.sampling(o, d, step_size=0.01, stratified=True, backend=backend)
    assert s.ray_indices.numel() == 0 and s.t_starts.numel() == 0


def test_rays_with_nan_or_inf_have_no_samples_and_leave_the_others_alone(backend):
    """A NaN pose or a zero focal length makes NaN rays; they get no samples (the kernel once crawled through
    them for 0.1 s each), and every finite ray keeps exactly its samples."""
    grid = random_grid(7, levels=2)
    o, d = random_rays(8, 400, grid)
    near, far = torch.full((400,), 0.1), torch.full((400,), 9.0)
    clean = grid.sampling(o, d, near=near, far=far, step_size=0.01, backend=backend)
    bad_o, bad_d, bad_near, bad_far = o.clone(), d.clone(), near.clone(), far.clone()
    nan, inf = float("nan"), float("inf")
    bad_o[0, 0], bad_o[1, 2], bad_d[2, 1], bad_d[3] = nan, inf, -inf, nan
    bad_near[4], bad_near[5], bad_far[6] = nan, inf, nan
    bad_far[7] = inf  # no far limit: a valid ray
    s = grid.sampling(bad_o, bad_d, near=bad_near, far=bad_far, step_size=0.01, backend=backend)
    assert not bool((s.ray_indices < 7).any())
    keep = clean.ray_indices >= 7
    assert (clean.ray_indices < 7).sum() > 0  # the spoiled rays had samples before
    assert torch.equal(s.ray_indices, clean.ray_indices[keep])
    assert torch.equal(s.t_starts, clean.t_starts[keep]) and torch.equal(s.t_ends, clean.t_ends[keep])


def test_a_full_grid_yields_exactly_the_uniform_lattice(backend):
    """Expected (float64): k >= 0 with near + (k + 1/2) dt inside the box's [t_enter, t_exit]."""
    grid = OccupancyGrid(AABB, resolution=16).fill_(True)
    o, d = random_rays(6, 1500, grid)
    near, dt = 0.05, 0.0173
    s = grid.sampling(o, d, near=near, step_size=dt, backend=backend)
    lo, hi = grid.aabb[:3].double(), grid.aabb[3:].double()
    inv = 1.0 / d.double()
    t_a, t_b = (lo - o.double()) * inv, (hi - o.double()) * inv
    t_enter = torch.minimum(t_a, t_b).amax(dim=1).clamp(min=near)
    t_exit = torch.maximum(t_a, t_b).amin(dim=1)
    k = torch.arange(0, 1000, dtype=torch.float64)
    mid = near + (k + 0.5) * dt  # (K,)
    inside = (mid[None] > t_enter[:, None]) & (mid[None] < t_exit[:, None])  # (N, K)
    # rays with a midpoint within 1e-5 of the box's boundary could go either way in float32: leave them out
    close = ((mid[None] - t_enter[:, None]).abs() < 1e-5) | ((mid[None] - t_exit[:, None]).abs() < 1e-5)
    clear = ~close.any(dim=1)
    counts = torch.bincount(s.ray_indices, minlength=o.shape[0])
    assert clear.sum() > 1400 and inside.sum() > 20000
    assert torch.equal(counts[clear], inside.sum(dim=1)[clear])
    k_of = (s.t_starts.double() - near) / dt
    assert (k_of - k_of.round()).abs().max() < 1e-3, "t_starts sit on the lattice near + k dt"
    assert torch.allclose(s.t_ends.double() - s.t_starts.double(), torch.full_like(k_of, dt), atol=1e-6)
    first_k = torch.where(inside, k[None], 1e9).amin(dim=1)
    got_first = torch.full((o.shape[0],), 1e9, dtype=torch.float64).scatter_reduce(0, s.ray_indices, k_of.round(),
                                                                                  "amin")
    hit = clear & inside.any(dim=1)
    assert torch.equal(first_k[hit], got_first[hit])


def test_axis_aligned_example(backend):
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8).fill_(True)
    s = grid.sampling(torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]]), step_size=0.25,
                      backend=backend)
    assert s.t_starts.tolist() == [1.0, 1.25, 1.5, 1.75] and s.t_ends.tolist() == [1.25, 1.5, 1.75, 2.0]
    # a far bound on the lattice keeps the sample that ends there (t_end <= far), on every backend alike
    s = grid.sampling(torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]]), step_size=0.25, far=1.75,
                      backend=backend)
    assert s.t_ends.tolist() == [1.25, 1.5, 1.75]


def test_the_cap_keeps_the_first_samples_of_each_ray(backend):
    grid = random_grid(7, fraction=0.6)
    o, d = random_rays(8, 1000, grid)
    full = grid.sampling(o, d, step_size=0.01, backend=backend)
    capped = grid.sampling(o, d, step_size=0.01, max_samples=7, backend=backend)
    counts_full = torch.bincount(full.ray_indices, minlength=1000)
    counts = torch.bincount(capped.ray_indices, minlength=1000)
    assert counts.max() == 7 and bool((counts == counts_full.clamp(max=7)).all())
    rank = torch.arange(full.ray_indices.numel()) - (counts_full.cumsum(0) - counts_full)[full.ray_indices]
    keep = rank < 7
    assert torch.equal(capped.t_starts, full.t_starts[keep]) and torch.equal(capped.ray_indices,
                                                                              full.ray_indices[keep])


def test_near_and_far_bound_the_samples(backend):
    grid = OccupancyGrid(AABB, resolution=16).fill_(True)
    o, d = random_rays(9, 1000, grid)
    gen = torch.Generator().manual_seed(0)
    near, far = torch.rand(1000, generator=gen), 0.5 + 2 * torch.rand(1000, generator=gen)
    s = grid.sampling(o, d, near=near, far=far, step_size=0.01, stratified=True, seed=1, backend=backend)
    assert s.ray_indices.numel() > 1000
    assert bool((s.t_starts >= near[s.ray_indices]).all() and (s.t_ends <= far[s.ray_indices]).all())


def test_cone_angle_steps_grow_with_distance(backend):
    grid = OccupancyGrid([-50, -50, -50, 50, 50, 50], resolution=16).fill_(True)
    o = torch.zeros(1, 3)
    d = torch.tensor([[0.6, 0.0, 0.8]])
    dt, cone, max_step = 0.01, 0.02, 0.5
    _, ts, te = grid.sampling(o, d, step_size=dt, cone_angle=cone, max_step_size=max_step, max_samples=100000,
                              backend=backend)
    steps = te - ts
    expected = (ts * cone).clamp(dt, max_step)
    assert torch.allclose(steps, expected, rtol=1e-3, atol=1e-6)
    assert steps[0] == pytest.approx(dt) and steps[-1] == pytest.approx(max_step)
    assert (steps > dt * 1.5).any() and (steps < max_step * 0.9).any()


def test_a_max_step_the_cone_never_reaches_gives_the_samples_of_no_limit(backend):
    """max_step / cone_angle beyond float32: the kernels searched 2^24 lattice points one by one for the distance
    where the step would reach max_step (1.6 s a ray on the CPU kernel; the twin hung). The lattice never gets
    there, so the samples are those of no limit."""
    grid = OccupancyGrid(AABB, resolution=16).fill_(True)
    o, d = random_rays(12, 50, grid)
    kw = dict(step_size=0.01, cone_angle=0.01, stratified=True, seed=2, backend=backend)
    capped = grid.sampling(o, d, max_step_size=1e37, **kw)
    assert capped.ray_indices.numel() > 500
    assert_same(capped, grid.sampling(o, d, max_step_size=None, **kw))


def test_stratified_jitter_is_seeded_and_shifts_within_one_step(backend):
    grid = OccupancyGrid(AABB, resolution=16).fill_(True)
    o, d = random_rays(10, 500, grid)
    a = grid.sampling(o, d, step_size=0.02, stratified=True, seed=3, backend=backend)
    b = grid.sampling(o, d, step_size=0.02, stratified=True, seed=3, backend=backend)
    c = grid.sampling(o, d, step_size=0.02, stratified=True, seed=4, backend=backend)
    assert_same(a, b)
    assert not torch.equal(a.t_starts[:100], c.t_starts[:100])
    u = torch.rand(500, generator=torch.Generator().manual_seed(3))  # what seed=3 draws
    frac = a.t_starts / 0.02 - u[a.ray_indices]
    assert (frac - frac.round()).abs().max() < 1e-3, "t_start = (k + u) dt"


def test_sigma_fn_drops_samples_behind_opaque_matter(backend):
    grid = OccupancyGrid(AABB, resolution=16).fill_(True)
    o, d = random_rays(11, 300, grid)

    def sigma_fn(t_starts, t_ends, ray_indices):
        return torch.full_like(t_starts, 50.0)

    full = grid.sampling(o, d, step_size=0.01, backend=backend)
    pruned = grid.sampling(o, d, step_size=0.01, sigma_fn=sigma_fn, early_stop_eps=1e-3, backend=backend)
    assert 0 < pruned.ray_indices.numel() < full.ray_indices.numel()
    # kept: transmittance exp(-50 * distance travelled) >= 1e-3, i.e. at most ln(1000)/50 into the medium
    first = torch.zeros(300).scatter_reduce(0, full.ray_indices, full.t_starts, "amin", include_self=False)
    depth_in = pruned.t_starts - first[pruned.ray_indices]
    assert depth_in.max() <= torch.log(torch.tensor(1000.0)) / 50 + 1e-4


def test_bad_arguments_are_rejected():
    grid = OccupancyGrid(AABB, resolution=8)
    o = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="rays_o and rays_d"):
        grid.sampling(o, torch.zeros(4, 2), backend="torch")
    with pytest.raises(ValueError, match="step_size"):
        grid.sampling(o, o, step_size=0.0, backend="torch")
    with pytest.raises(ValueError, match="unknown backend"):
        grid.sampling(o, o, backend="metal")
    with pytest.raises(ValueError, match="max_step_size"):
        grid.sampling(o, o, step_size=0.1, cone_angle=0.1, max_step_size=0.01, backend="torch")
    with pytest.raises(ValueError, match="near"):
        grid.sampling(o, o, near=torch.zeros(3), backend="torch")
    for near in (-0.5, torch.full((4,), -0.5)):  # a number and one per ray: the lattice would start behind the eye
        with pytest.raises(ValueError, match="near must be >= 0"):
            grid.sampling(o, o, near=near, backend="torch")


# -- the compiled CPU kernel against the torch twin ---------------------------------------------------------------

CASES = [  # (levels, resolution, cone, max_step, stratified, per-ray near/far)
    (1, 16, 0.0, None, False, False),
    (1, 16, 0.0, None, True, True),
    (1, (12, 20, 8), 0.0, None, True, False),
    (1, 16, 0.02, None, False, True),
    (1, (12, 20, 8), 0.05, 0.1, True, True),
    (3, 16, 0.0, None, False, False),
    (3, 16, 0.02, None, True, True),
    (2, (8, 16, 12), 0.05, 0.1, True, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x) for x in c))
def test_cpu_kernel_returns_the_twins_samples(cpu_kernel, case):
    levels, res, cone, max_step, stratified, per_ray = case
    for seed, grid in enumerate([random_grid(20, levels, res), blob_grid(21, levels)]):
        o, d = random_rays(30 + seed, 3000, grid)
        gen = torch.Generator().manual_seed(seed)
        near = torch.rand(3000, generator=gen) * 0.5 if per_ray else 0.0
        far = 1.0 + torch.rand(3000, generator=gen) * 5 if per_ray else None
        kw = dict(near=near, far=far, step_size=0.013, cone_angle=cone, max_step_size=max_step, max_samples=200,
                  stratified=stratified, seed=seed)
        twin = grid.sampling(o, d, backend="torch", **kw)
        assert twin.ray_indices.numel() > 300  # not a trivial comparison
        assert_same(grid.sampling(o, d, backend="cpu", **kw), twin, f"grid {seed}")


def test_skipping_empty_space_finds_the_brute_force_samples(cpu_kernel):
    """The kernel's empty-space skipping against its own point-by-point mode and the twin, on sparse grids and on
    rays that run along cell faces, through cell corners, or start far away."""
    rays = []
    vals = torch.arange(0, 9) / 8.0
    for a in range(3):
        for v1 in vals:
            for v2 in vals:
                o = torch.zeros(3)
                o[a], o[(a + 1) % 3], o[(a + 2) % 3] = -0.5, v1, v2
                dvec = torch.zeros(3)
                dvec[a] = 1.0
                rays += [(o, dvec), (o + 1.5 * dvec, -dvec), (o + 0.75 * dvec, dvec)]
    for s in torch.linspace(-0.5, 0.5, 17):
        rays += [(torch.tensor([-1.0, -1.0 + s, -1.0]), torch.tensor([1.0, 1.0, 1.0]) / 3 ** 0.5),
                 (torch.tensor([2.0, -1.0, 0.5 + s]), torch.tensor([-1.0, 1.0, 0.0]) / 2 ** 0.5)]
    rays.append((torch.tensor([0.5, 0.5, 0.5]), torch.zeros(3)))  # no direction: no samples
    o = torch.stack([r[0] for r in rays])
    d = torch.stack([r[1] for r in rays])
    far_o = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) * 1e3
    far_d = (0.5 - far_o) / (0.5 - far_o).norm(dim=1, keepdim=True)
    o, d = torch.cat([o, far_o]), torch.cat([d, far_d])
    for levels in (1, 2):
        for grid in (random_grid(40, levels, 8, 0.5, [0, 0, 0, 1, 1, 1]), blob_grid(41, levels, 32)):
            for kw in (dict(step_size=1 / 64), dict(step_size=1 / 16, stratified=True, seed=3),
                       dict(step_size=0.01, cone_angle=0.01), dict(step_size=1 / 64, near=0.3, far=1.7)):
                fast = grid.sampling(o, d, backend="cpu", **kw)
                assert_same(fast, grid.sampling(o, d, backend="cpu", _skip_empty=False, **kw), f"{levels} {kw}")
                assert_same(fast, grid.sampling(o, d, backend="torch", **kw), f"{levels} {kw}")
                assert fast.ray_indices.numel() > 0


def test_twin_is_callable_directly():
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8).fill_(True)
    o, d = torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    s = march_torch(grid.spec(), o, d, torch.zeros(1), torch.full((1,), float("inf")), None, 0.25, 0.0,
                    float("inf"), 1024)
    assert s.t_starts.tolist() == [1.0, 1.25, 1.5, 1.75]


@pytest.mark.parametrize("alpha_thre, eps", [(0.0, 1e-3), (0.05, 1e-4), (0.02, 0.0)])
def test_pruning_in_rounds_keeps_exactly_what_one_pass_keeps(alpha_thre, eps):
    """Rounds stop evaluating terminated rays; the kept set equals the one-pass definition on every sample."""
    from rwf_render.raymarch.composite import render_weight_from_density
    from rwf_render.raymarch.march import _prune

    grid = OccupancyGrid(AABB, resolution=16).fill_(True)
    o, d = random_rays(5, 400, grid)
    samples = grid.sampling(o, d, step_size=0.01, backend="torch")
    field = torch.Generator().manual_seed(1)
    blobs = torch.rand(6, 3, generator=field) * 2 - 1

    def sigma_fn(t_starts, t_ends, ray_indices):
        x = o[ray_indices] + d[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
        return 40 * torch.exp(-((x[:, None] - blobs) ** 2).sum(-1) / 0.05).sum(-1)

    ri, ts, te = samples
    _, trans, alphas = render_weight_from_density(ts, te, sigma_fn(ts, te, ri), ri, 400)
    expected = (alphas >= alpha_thre) & (trans >= eps)
    assert 0 < int(expected.sum()) < ri.numel()
    calls = []
    counted = lambda *a: calls.append(a[0].numel()) or sigma_fn(*a)  # noqa: E731
    for round_size in (1, 7, 16, 10**6):
        calls.clear()
        got = _prune(samples, 400, counted, alpha_thre, eps, round_size=round_size)
        assert torch.equal(got.ray_indices, ri[expected]) and torch.equal(got.t_starts, ts[expected])
        if eps > 0 and round_size == 7:
            assert sum(calls) < ri.numel()  # terminated rays were not evaluated to their end


def test_the_twin_tests_only_the_box_around_occupied_cells_and_misses_none(cpu_kernel):
    """The twin clips each ray to the box around the occupied cells (``_occupied_box``): one occupied cell, at
    the finest and at a coarse level, with rays along its faces, through its corners and from inside it, gives the
    kernel's point-by-point samples; and the box is the exact hull of the occupied cells."""
    from rwf_render.raymarch.march import _occupied_box

    gen = torch.Generator().manual_seed(5)
    for levels, res in ((1, 8), (3, 8), (2, (8, 12, 16))):
        grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=res, levels=levels)
        for level, cell in ((0, (1, 2, 3)), (levels - 1, (0, 5, 7)), (levels - 1, (3, 2, 1))):
            grid.occupancy.zero_()
            grid.occupancy[(level,) + cell] = True
            lo, hi = _occupied_box(grid.occupancy)
            half = torch.tensor(grid.resolution) // 2
            want_lo = (torch.tensor(cell) - half) * 2 ** level + half
            assert lo.tolist() == want_lo.float().tolist() and hi.tolist() == (want_lo + 2 ** level).float().tolist()
            box = grid.level_aabbs()[level]
            size = (box[3:] - box[:3]) / torch.tensor(grid.resolution)
            c_lo = box[:3] + torch.tensor(cell) * size
            corners = c_lo + torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * size
            inside = c_lo + torch.rand(200, 3, generator=gen) * size
            targets = torch.cat([corners, inside, c_lo + 0.5 * size + 0 * inside[:50]])
            o = torch.cat([targets[:208] + torch.randn(208, 3, generator=gen) * 3, inside[:100]])
            t = torch.cat([targets[:208], inside[100:200] + 0.0])
            d = torch.nn.functional.normalize(t - o + (o == t).all(dim=1, keepdim=True).float(), dim=1)
            for a in range(3):  # along the faces: the cell's lower face on each axis
                fo = c_lo + 0.5 * size
                fo[a] = c_lo[a]
                fo = fo.expand(3, 3).clone()
                fo[torch.arange(3), (torch.arange(3) + a + 1) % 3] -= 4.0 * float(size.max())
                o = torch.cat([o, fo])
                d = torch.cat([d, torch.eye(3)[(torch.arange(3) + a + 1) % 3]])
            for kw in (dict(step_size=float(size.min()) / 7), dict(step_size=0.011, cone_angle=0.02),
                       dict(step_size=0.013, stratified=True, seed=1)):
                twin = grid.sampling(o, d, backend="torch", **kw)
                assert twin.ray_indices.numel() > 100, (levels, level, cell, kw)
                assert_same(twin, grid.sampling(o, d, backend="cpu", _skip_empty=False, **kw), f"{level} {cell}")
    assert _occupied_box(torch.zeros(2, 4, 4, 4, dtype=torch.uint8)) is None
