"""Occupancy previews: the first crossing with empty-space skipping finds what the search without skipping finds,
whatever the run's --mesh-res, and thin parts no coarse grid sample touches stay in the picture."""

import numpy as np
import pytest
import torch

from rwf_render.spheretrace import CellGrid, first_crossing, orbit_rays, render_field

BODY, ROD = 0.25, 0.02  # a ball and a rod of this radius up (+y) from the ball to y = 0.45


def body_and_rod(x: torch.Tensor) -> torch.Tensor:
    """Signed distance (N,) of the union of the ball and the rod (its axis x = z = 0, off every coarse lattice)."""
    ball = x.norm(dim=-1) - BODY
    along = x[:, 1].clamp(0.0, 0.45)
    rod = torch.stack([x[:, 0], x[:, 1] - along, x[:, 2]], -1).norm(dim=-1) - ROD
    return torch.minimum(ball, rod)


def logits(x: torch.Tensor) -> torch.Tensor:
    return -40.0 * body_and_rod(x)  # occupancy logits: inside above 0


class Logits(torch.nn.Module):
    """The closed-form field as a model (N, 3) -> (N, 1), as ``sdf.field_views`` takes it."""

    def forward(self, x):
        return logits(x)[:, None]


def foreground(images) -> np.ndarray:
    return np.stack([(img != 1).any(-1) for img in images])


def rod_pixels(res: int) -> np.ndarray:
    """Per view, the pixels whose rays first meet the rod (not the ball): bool (views, res, res)."""
    out = []
    for az, el in ((45.0, 25.0), (135.0, 25.0), (225.0, 25.0), (315.0, 25.0)):
        o, d = orbit_rays(res, az, el)
        t = first_crossing(logits, o, d)
        p = o + torch.where(torch.isfinite(t), t, 0.0)[:, None] * d
        out.append((torch.isfinite(t) & (p[:, 1] > BODY * 1.02)).reshape(res, res).numpy())
    return np.stack(out)


def test_a_coarse_lattice_misses_the_rod():
    """The premise: no sample of a 16^3 lattice lies inside the rod, so a mesh extracted there has no rod."""
    from rwf_render.mesh import extract_mesh

    mesh = extract_mesh(logits, res=16, inside="above")
    assert len(mesh.faces) and mesh.vertices[:, 1].max() < BODY + 0.02
    assert rod_pixels(64).sum(axis=(1, 2)).min() >= 10  # yet every view shows the rod


@pytest.mark.parametrize("grid_res", [16, 64])
def test_skipping_finds_the_same_crossings_as_the_whole_box_search(grid_res):
    """Twin agreement: with a CellGrid the crossings equal those of the search without one (same steps), also
    where the grid's lattice (16: spacing 0.067, the rod's radius 0.02) has no sample inside the thin part."""
    grid = CellGrid.from_field(logits, res=grid_res)
    assert grid.fraction() < 0.6  # it does skip: most of the box is far from the shape
    for az, el in ((45.0, 25.0), (135.0, 25.0)):
        o, d = orbit_rays(48, az, el)
        ref, got = first_crossing(logits, o, d), first_crossing(logits, o, d, skip=grid)
        assert torch.equal(torch.isfinite(ref), torch.isfinite(got))
        hit = torch.isfinite(ref)
        assert torch.allclose(ref[hit], got[hit])


def test_cell_grid_keeps_every_cell_holding_the_inside():
    """Conservative: dense points inside the shape (ball and rod) all lie in kept cells; far corners do not."""
    grid = CellGrid.from_field(logits, res=16)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200_000, 3, generator=g) - 0.5
    inside = x[logits(x) > 0]
    assert (inside[:, 1] > BODY).sum() > 20  # some of them in the rod
    assert grid(inside).all()
    assert not grid(torch.tensor([[-0.49, -0.49, -0.49], [0.49, 0.49, -0.49]])).any()


@pytest.mark.parametrize("mesh_res", [16, 64])
def test_occupancy_preview_shows_the_thin_rod_at_any_mesh_res(mesh_res):
    """The run's preview (``sdf.field_views``) matches the whole-box first crossing within a few pixels, rod
    included, at --mesh-res 16 as at 64 (a proxy mesh at 16 has no rod, so its rays showed background)."""
    from rwf_render.sdf import field_views
    from rwf_render.shape_task import SDFConfig

    cfg = SDFConfig(target="occupancy", mesh_res=mesh_res)
    res = 64
    views = field_views(Logits(), cfg, res, "cpu")
    reference = render_field(logits, res, "occupancy", grid_res=0)  # every step evaluated, no skipping
    got, ref = foreground(views), foreground(reference)
    rod = rod_pixels(res)
    assert (got & rod).sum() >= 0.95 * rod.sum()
    assert (got != ref).sum(axis=(1, 2)).max() <= 3
    both = got & ref
    assert np.abs(np.stack(views) - np.stack(reference))[both].max() < 0.05


def test_points_of_kept_cells_are_dropped_where_the_slope_bound_rules_out_the_inside():
    """Within kept cells a point is kept only where U(x) = sum_j w_j (g_j + L |x - x_j|) > 0: every inside point
    (rod included) stays, yet far fewer points than the cells alone keep (each such point is in a kept cell)."""
    grid = CellGrid.from_field(logits, res=16)
    cells_only = CellGrid(grid.occupied)  # no lattice values: the cell test alone
    g = torch.Generator().manual_seed(1)
    x = torch.rand(200_000, 3, generator=g) - 0.5
    kept, in_cells = grid(x), cells_only(x)
    assert not (kept & ~in_cells).any()
    assert kept.sum() < 0.6 * in_cells.sum()
    inside = logits(x) > 0
    assert (inside & (x[:, 1] > BODY)).sum() > 20 and kept[inside].all()


def test_the_point_bound_holds_for_a_linear_field_and_is_tight_to_half_a_cell_diagonal():
    """Closed form: for g = a.x + c the lattice's slope estimate is |a| exactly, so U(x) >= g(x) (kept wherever
    g > 0) and U(x) <= g(x) + |a| |h| / 2 (dropped wherever g < -|a| |h| / 2)."""
    a, c, res = torch.tensor([3.0, -2.0, 1.0]), 0.1, 11
    grid = CellGrid.from_field(lambda x: x @ a + c, res=res)
    x = torch.rand(100_000, 3, generator=torch.Generator().manual_seed(2)) - 0.5
    gx, half_diag = x @ a + c, a.norm() * 3**0.5 / (res - 1) / 2
    assert grid(x)[gx > 0].all()
    assert not grid(x)[gx < -half_diag * 1.001].any()
    assert grid(x)[gx < 0].any()  # within half a diagonal of the inside the bound keeps some outside points


class _Counting:
    """A field that records every point it is evaluated at."""

    def __init__(self, fn):
        self.fn, self.points = fn, []

    def __call__(self, x):
        self.points.append(x.clone())
        return self.fn(x)


def test_skipping_evaluates_only_kept_steps_and_nothing_on_rays_that_meet_none():
    """Packed search: the field sees only steps the skip keeps (no bisection with refine=0), at most as many as
    there are; with a skip that keeps nothing, nothing is evaluated and nothing is hit."""
    grid = CellGrid.from_field(logits, res=32)
    o, d = orbit_rays(32, 45.0, 25.0)
    field = _Counting(logits)
    t = first_crossing(field, o, d, refine=0, skip=grid)
    seen = torch.cat(field.points)
    assert grid(seen).all() and torch.isfinite(t).sum() > 100
    ts = torch.linspace(0, 1, 257)[1:]  # every step of every ray, to count the kept ones (box: t0 + k dt)
    from rwf_render.spheretrace import box_interval
    t0, t1, hit = box_interval(o, d)
    steps = o[hit, None] + (t0[hit, None] + (t1 - t0)[hit, None] * ts)[..., None] * d[hit, None]
    assert len(seen) <= int(grid(steps.reshape(-1, 3)).sum())
    field = _Counting(logits)
    t = first_crossing(field, o, d, skip=lambda x: torch.zeros(len(x), dtype=torch.bool))
    assert sum(map(len, field.points)) == 0 and not torch.isfinite(t).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_any_conservative_skip_gives_exactly_the_unskipped_crossings(seed):
    """Twin agreement, bit for bit, with an irregular conservative skip (every inside point kept, a random half of
    the others): the first inside step often follows skipped steps, whose start the bisection must still use."""
    g = torch.Generator().manual_seed(seed)
    lookup = torch.rand(2**16, generator=g) < 0.5

    def skip(x):  # True wherever the field is inside, else by a hash of the point's 1/200 lattice cell
        cell = ((x + 0.5) * 200).long()
        key = (cell[:, 0] * 73856093 ^ cell[:, 1] * 19349663 ^ cell[:, 2] * 83492791) % 2**16
        return (logits(x) > 0) | lookup[key]

    for az, el in ((45.0, 25.0), (200.0, -30.0)):
        o, d = orbit_rays(40, az, el)
        ref, got = first_crossing(logits, o, d), first_crossing(logits, o, d, skip=skip)
        assert torch.isfinite(ref).sum() > 200 and torch.equal(ref, got)


def test_default_bisection_stops_at_a_fraction_of_a_pixel():
    """render_field's default refine places the crossing within 1/32 of a pixel's footprint: at 32^2 a step (at
    most 0.0068) takes 3 halvings to fall below footprint / 32 = 0.0012, so each hit costs 7 evaluations fewer
    than with refine=10, and the picture is the same to within a colour step of 0.02."""
    field = _Counting(logits)
    fine = render_field(field, 32, "occupancy", grid_res=16, refine=10)
    n_fine, field.points = sum(map(len, field.points)), []
    coarse = render_field(field, 32, "occupancy", grid_res=16)
    assert n_fine - sum(map(len, field.points)) == 7 * foreground(fine).sum()
    assert np.array_equal(foreground(coarse), foreground(fine))
    assert np.abs(np.stack(coarse) - np.stack(fine)).max() < 0.02
