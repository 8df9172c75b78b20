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
