"""Behaviour a mutation run of the 1 Dec changes found unpinned: each test fails for a mutant that survived."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_cli_error
from rwf_render import cli
from rwf_render.nerf_data import read_mask
from rwf_render.nerf_export import occupied_density
from rwf_render.nerf_outputs import resized_cameras
from rwf_render.raymarch import OccupancyGrid
from rwf_render.raymarch.march import _occupied_box
from test_nerf_render_scale import _cams
from test_raymarch import assert_same, cpu_kernel  # noqa: F401 (a fixture)


# -- march.py: the twin's box spans the occupied cells of every level, not of the last one -----------------------------
def test_the_occupied_box_is_the_union_over_levels(cpu_kernel):  # noqa: F811
    grid = OccupancyGrid([0, 0, 0, 1, 1, 1], resolution=8, levels=2)
    grid.occupancy.zero_()
    grid.occupancy[0, 0, 3, 3] = True  # a fine cell at the low x end of the inner box
    grid.occupancy[1, 7, 3, 3] = True  # a coarse cell at the high x end of the outer one
    lo, hi = _occupied_box(grid.occupancy)
    assert lo.tolist() == [0.0, 2.0, 2.0] and hi.tolist() == [12.0, 4.0, 4.0]
    o = torch.tensor([[-2.0, 0.45, 0.45], [-2.0, 0.47, 0.43]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    twin = grid.sampling(o, d, backend="torch", step_size=0.01)
    assert twin.ray_indices.numel() > 20 and float(twin.t_starts.min()) < 2.2  # the fine cell at x = 0..1/8
    assert_same(twin, grid.sampling(o, d, backend="cpu", _skip_empty=False, step_size=0.01), "two levels")


# -- nerf_outputs.py: --scale keeps each axis's own field of view and principal point ----------------------------------
def test_resizing_keeps_the_vertical_field_of_view_and_rounds_sizes():
    cams = _cams(25, 13)
    half = resized_cameras(cams, 0.5)  # 12.5 x 6.5: each axis its own rounding, so sx and sy differ
    assert torch.allclose(half.height / half.fy, cams.height / cams.fy)
    assert torch.allclose(half.cy / half.height, cams.cy / cams.height)
    odd = resized_cameras(cams, 0.7)  # 17.5 x 9.1: rounded, not floored
    assert int(odd.width[0]) == round(17.5) and int(odd.height[0]) == 9


# -- nerf_data.py: 0/1 labels are black and white in a grey + alpha mask and in a mask's alpha ------------------------
@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_labels_in_a_mask_with_alpha_are_black_and_white(tmp_path, mode):
    labels = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    full = np.full_like(labels, 255)
    path = tmp_path / "m.png"
    grey = [labels] if mode == "LA" else [labels] * 3
    Image.fromarray(np.stack([*grey, full], -1), mode).save(path)
    assert np.array_equal(read_mask(path), labels.astype(np.float32))
    white = [full] if mode == "LA" else [full] * 3  # labels in the alpha of a white mask
    Image.fromarray(np.stack([*white, labels], -1), mode).save(path)
    assert np.array_equal(read_mask(path), labels.astype(np.float32))


# -- nerf_export.py: the density quoted is measured at the export's footprint --------------------------------------
def test_occupied_density_is_measured_at_the_given_footprint():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8)
    grid.occupancy.zero_()
    grid.occupancy[0, 4, 4, 4] = True
    field = SimpleNamespace(density=lambda x, cov=None: x[:, 0] * 0 + (1.0 if cov is None else float(cov.sum())),
                            density_scale=1.0)
    model = SimpleNamespace(grid=grid, field=field)
    box = np.array([[-9.0] * 3, [9.0] * 3])
    assert occupied_density(model, box).tolist() == [1.0]
    assert occupied_density(model, box, torch.full((3, 3), 2.0)).tolist() == [18.0]


# -- cli.py: "a command of its own" only for an option named exactly like another command --------------------------------
def test_an_unknown_option_named_like_no_command_gets_no_command_hint(tmp_path, capsys):
    line = one_cli_error(capsys, ["eval", tmp_path, "--checkpoint"])
    assert line == "rwf: error: rwf eval: unrecognized arguments: --checkpoint (see --help)"
    line = one_cli_error(capsys, ["eval", tmp_path, "--data"])  # a group of commands, not one
    assert "command of its own" not in line
