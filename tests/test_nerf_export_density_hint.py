"""``rwf export mesh`` of a NeRF run says the field's density at its occupied cells, so that a user can choose
--threshold (after 77 steps on lego the default 10 gave a mesh of 660 faces and no word; 3 gave 14,642)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import one_cli_error
from rwf_render import cli
from rwf_render.nerf_export import occupied_density
from rwf_render.raymarch import OccupancyGrid


def _ball_model(levels):
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16, levels=levels)
    inside = lambda x: (x.norm(dim=-1) < 0.5).float()  # noqa: E731
    grid.update(0, lambda x: 100.0 * inside(x), step_size=0.01)
    grid.occupancy[-1, 0, 0, 0] = True  # an occupied corner cell of the outermost level, where the density is 0
    field = SimpleNamespace(density=lambda x, cov=None: 100.0 * inside(x) + 0.0 * x[:, 0], density_scale=4.0)
    return SimpleNamespace(grid=grid, field=field)


@pytest.mark.parametrize("levels", [1, 3])
def test_the_density_at_occupied_cells_in_threshold_units(levels):
    model = _ball_model(levels)
    big = np.array([[-99.0] * 3, [99.0] * 3])
    dens = occupied_density(model, big)
    centres = model.grid.cell_points(torch.nonzero((model.grid.occupancy & model.grid.visible()).reshape(-1))[:, 0])
    # every occupied cell a ray can reach, once (not those under a finer level), at its centre: 100 per reference
    # length inside the ball, over the field's scale 4
    assert np.array_equal(dens, 25.0 * (centres.norm(dim=-1) < 0.5).numpy())
    assert (dens == 0).sum() >= 1 and (dens == 25).sum() > 10
    half = occupied_density(model, np.array([[0.0, -99, -99], [99, 99, 99]]))  # cells with centres at x >= 0
    assert len(half) == int((centres[:, 0] >= 0).sum()) < len(dens)
    assert len(occupied_density(model, big, max_cells=5)) == 5
    assert len(occupied_density(model, np.array([[50.0] * 3, [60.0] * 3]))) == 0


def test_the_export_says_the_density_beside_its_level(still_life_run, tmp_path, capsys):
    assert cli.main(["export", "mesh", str(still_life_run), "--res", "24", "--out", str(tmp_path / "m.ply"),
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "faces (density 10; the field's density at its occupied cells there: median " in out and "max " in out
    line = one_cli_error(capsys, ["export", "mesh", still_life_run, "--res", "16", "--threshold", "1e30", "--out",
                                  tmp_path / "n.ply", "--quiet"])
    assert "no surface at density 1e+30 inside the scene box (the field's density at its occupied cells" in line
    assert not (tmp_path / "n.ply").exists()
