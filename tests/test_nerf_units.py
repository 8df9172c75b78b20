"""One scene in other units fits, renders and exports alike: the field sees box-normalized positions, so its
density is per a length of the box too (a helper's hunt: a copy of a synthetic scene in units 10 times larger
started opaque, optical depth 49 across the box instead of 5, and reached 6.6 dB where the original reached 21.4;
the export's default density level cut it elsewhere)."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.nerf_field import REFERENCE_DIAGONAL, NeRFField, NeRFFieldConfig, density_scale_of
from rwf_render.nerf_render import NeRFModel, RenderConfig
from rwf_render.rundir import CONFIG

BOX = [-1.0, -0.5, -2.0, 3.0, 1.5, 0.0]


def scaled(box, k, shift):
    return [k * v + shift[i % 3] for i, v in enumerate(box)]


def test_the_reference_box_keeps_its_density():
    # the +-1.515 box of the Blender and built-in scenes (instant-ngp's cube at scale 0.33), as config.json stores it
    side = 0.5 / 0.33
    assert density_scale_of([-side] * 3 + [side] * 3) == 1.0
    assert density_scale_of([-1.5151515007019043] * 3 + [1.5151515007019043] * 3) == 1.0
    assert density_scale_of([0, 0, 0, 1, 1, 1]) == pytest.approx(REFERENCE_DIAGONAL / math.sqrt(3), rel=1e-6)


def test_a_scene_in_other_units_renders_alike():
    k, shift = 10.0, (5.0, -3.0, 2.0)
    cfg = RenderConfig(grid_resolution=16, sampler="dense", steps_per_diagonal=128)
    small = NeRFModel(BOX, NeRFFieldConfig(), cfg, seed=3)
    large = NeRFModel(scaled(BOX, k, shift), NeRFFieldConfig(), cfg, seed=3)
    assert large.field.density_scale == pytest.approx(small.field.density_scale / k, rel=1e-5)
    gen = torch.Generator().manual_seed(0)
    origins = torch.tensor([1.0, 0.5, -1.0]) + torch.randn(256, 3, generator=gen) * 0.3 + torch.tensor([0, 0, 4.0])
    dirs = torch.nn.functional.normalize(torch.tensor([0, 0, -1.0]) + torch.randn(256, 3, generator=gen) * 0.2, dim=1)
    with torch.no_grad():
        a = small.render_rays(origins, dirs)
        b = large.render_rays(origins * k + torch.tensor(shift), dirs)
    assert 0.05 < float(a["opacity"].mean()) < 0.95  # neither empty nor opaque: the comparison means something
    assert torch.allclose(a["opacity"], b["opacity"], atol=1e-4)
    assert torch.allclose(a["rgb"], b["rgb"], atol=1e-4)
    assert torch.allclose(a["depth"] * k, b["depth"], rtol=1e-4, atol=1e-3)


def test_a_config_without_the_factor_is_a_run_fitted_before_it():
    legacy = NeRFFieldConfig.from_dict({"features": 15})
    assert legacy.density_scale == 1.0
    field = NeRFField([0, 0, 0, 10, 10, 10], legacy)  # density_scale_of this box: 0.303
    x = torch.rand(8, 3) * 10
    assert torch.allclose(field.density(x), torch.exp(field.trunk_features(x)[..., 0]))
    with pytest.raises(ValueError, match="density_scale must be a positive number"):
        NeRFField(BOX, NeRFFieldConfig(density_scale=0.0))


def test_a_fit_records_the_factor_and_the_export_level_follows_it(still_life_run, tmp_path):
    cfg = json.loads((still_life_run / CONFIG).read_text())
    box = cfg["aabb"]
    assert cfg["field"]["density_scale"] == density_scale_of(box)
    # The same run with twice the density per scene unit (its config.json's factor doubled): the default export
    # level doubles with it, so the surface is the same one.
    run = tmp_path / "run"
    shutil.copytree(still_life_run, run)
    ref = tmp_path / "ref.ply"
    assert cli.main(["export", "mesh", str(still_life_run), "--res", "48", "--out", str(ref), "--quiet"]) == 0
    cfg["field"]["density_scale"] *= 2
    (run / CONFIG).write_text(json.dumps(cfg))
    doubled = tmp_path / "doubled.ply"
    assert cli.main(["export", "mesh", str(run), "--res", "48", "--out", str(doubled), "--quiet"]) == 0
    import trimesh

    a, b = trimesh.load(ref), trimesh.load(doubled)
    assert len(a.vertices) > 100
    np.testing.assert_allclose(np.sort(a.vertices, axis=0), np.sort(b.vertices, axis=0), atol=1e-4)
