"""instant-ngp's ``aabb_scale``: the scene box is its unit cube and aabb_scale asks for 1 + log2(aabb_scale)
occupancy cascades around it, as instant-ngp reads the key (its finest grid spans the unit cube, each cascade
doubles it). Read before as one box of side aabb_scale, a colmap2nerf capture (aabb_scale 16 or 32) spread one grid
and the field's detail over 16 to 32 times the object's width."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render import datasets as datasets_module
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.imgio import write_image
from rwf_render.nerf_options import REAL_CAPTURE, cascade_profile, config_from_args, real_capture_config
from rwf_render.scene_box import box_cascades, outer_box, scene_box

from test_audit_nerf_input import _dataset  # noqa: E402  (tests/ is on sys.path under pytest)
from test_nerf_real_capture_defaults import TINY, _args  # noqa: E402

UNIT = 0.5 / 0.33  # half-width of instant-ngp's unit cube in file units at its default scale


@pytest.mark.parametrize("aabb_scale, cascades, half", [
    (1, 1, UNIT), (2, 2, UNIT), (4, 3, UNIT), (16, 5, UNIT), (128, 8, UNIT), (3, 3, UNIT), (0.5, 1, 0.5 * UNIT),
])
def test_aabb_scale_gives_instant_ngps_cascades_around_its_unit_cube(aabb_scale, cascades, half):
    meta = {"aabb_scale": aabb_scale}
    assert box_cascades(meta) == cascades
    box = scene_box(meta).numpy()
    np.testing.assert_allclose(box, [[-half] * 3, [half] * 3], rtol=1e-12)
    reach = outer_box(torch.from_numpy(box), cascades).numpy()
    np.testing.assert_allclose(reach[1], [half * 2 ** (cascades - 1)] * 3, rtol=1e-12)
    if aabb_scale >= 1 and aabb_scale & (aabb_scale - 1) == 0:  # a power of two: exactly instant-ngp's box
        np.testing.assert_allclose(reach[1], [UNIT * aabb_scale] * 3, rtol=1e-12)


def test_a_scale_and_offset_move_the_cube_and_an_explicit_aabb_asks_for_no_cascades():
    meta = {"aabb_scale": 8, "scale": 0.5, "offset": [0.5, 0.0, 1.0]}
    np.testing.assert_allclose(scene_box(meta).numpy(), [[-1, 0, -2], [1, 2, 0]], rtol=1e-12)
    assert box_cascades(meta) == 4
    assert box_cascades({"aabb_scale": 16, "aabb": [[-1, -1, -1], [1, 1, 1]]}) == 1
    assert box_cascades({"aabb_scale": 16, "applied_transform": [[1, 0, 0, 0]] * 3}) == 5  # a box key: ngp's rule


def _look_away(meta: dict) -> None:
    """Turn every camera of ``meta`` to look away from the origin, 5 units out: the unit cube leaves every view,
    while the cameras stand inside the outer cascades, which fill it."""
    for frame in meta["frames"]:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
        m[:3, 3] *= 5.0 / np.linalg.norm(m[:3, 3])
        m[:3, 0], m[:3, 2] = -m[:3, 0], -m[:3, 2]  # a half turn about the camera's y axis (still a rotation)
        frame["transform_matrix"] = m.tolist()


def test_the_loader_checks_cameras_against_the_whole_cascaded_scene(tmp_path):
    """A camera that sees the outer cascades but not the unit cube is a camera of the scene: no warning."""
    root = _dataset(tmp_path / "d", n=6, aabb_scale=16)
    meta = json.loads((root / "transforms.json").read_text())
    _look_away(meta)
    (root / "transforms.json").write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tf = load_transforms(root, "train")
    assert tf.cascades == 5 and float(tf.aabb.abs().max()) == pytest.approx(UNIT)
    meta["aabb_scale"] = 1  # the unit cube alone: no camera sees it
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="sees none of the scene box"):
        load_transforms(root, "train")


def _transparent(root: Path) -> Path:
    """``root``'s images again with an alpha channel (a synthetic scene: no real capture's settings)."""
    rng = np.random.default_rng(1)
    for path in root.glob("img*.png"):
        write_image(path, rng.random((12, 16, 4)).astype(np.float32))
    return root


def test_rwf_data_check_judges_the_cameras_as_the_loader_does(tmp_path):
    """The check names the cascades and, like the loader, counts a camera that sees only them as seeing the scene;
    one that sees nothing of them still fails."""
    from data_tools.check import check_dataset

    root = _dataset(tmp_path / "d", n=6, aabb_scale=16)
    meta = json.loads((root / "transforms.json").read_text())
    _look_away(meta)
    (root / "transforms.json").write_text(json.dumps(meta))
    lines = []
    errors, warnings_ = check_dataset(root, decode=False, log=lines.append)
    assert errors == [] and not any("sees none" in w for w in warnings_)
    assert any("5 cascades (aabb_scale) to [-24.24, -24.24, -24.24] - [24.24, 24.24, 24.24]" in line for line in lines)
    meta["aabb_scale"] = 1
    (root / "transforms.json").write_text(json.dumps(meta))
    errors, _ = check_dataset(root, decode=False, log=lambda *a: None)
    assert any("sees none of the scene box" in e for e in errors)


def test_a_fit_takes_the_cascades_and_instant_ngps_cone_angle(tmp_path, capsys):
    root = _transparent(_dataset(tmp_path / "d", aabb_scale=4))
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(root), "--out", str(run), *TINY]) == 0
    err = capsys.readouterr().err
    assert "aabb_scale asks for 3 occupancy cascades: --grid-levels 3 --cone-angle 1/256; the field's fourier " \
        "encoding spans their reach, 4 times the cube" in err
    assert "3 cascades to [-6.06 -6.06 -6.06] - [6.06 6.06 6.06]" in err
    with warnings.catch_warnings():  # a hash grid: the cascades, said as options, and no --field-extent (no such
        warnings.simplefilter("ignore")  # option: it was printed as one)
        assert cli.main(["fit", "nerf", str(root), "--out", str(tmp_path / "hash"), "--steps", "1", "--eval-images",
                         "1", "--width", "16", "--target-samples", "512", "--quiet", "--encoding", "hashgrid",
                         "--hash-levels", "4", "--hash-log2-size", "10"]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "aabb_scale asks for" in x)
    assert "asks for 3 occupancy cascades: --grid-levels 3 --cone-angle 1/256 (instant-ngp's" in line, line
    saved = json.loads((run / "config.json").read_text())
    assert saved["render"]["grid_levels"] == 3 and saved["render"]["cone_angle"] == 1 / 256
    # the Fourier field normalizes over the cascaded scene (+-6.06), as it did while aabb_scale meant that one box
    assert saved["field"]["pos_extent"] == 4.0
    from rwf_render.nerf import load_scene_model  # noqa: PLC0415

    field = load_scene_model(run).field
    corners = torch.tensor([[-4 * UNIT] * 3, [4 * UNIT] * 3])
    torch.testing.assert_close(field.normalize(corners), torch.tensor([[0.0] * 3, [1.0] * 3]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(saved["aabb"], [-UNIT] * 3 + [UNIT] * 3, rtol=1e-6)
    # opaque photos: the real capture's own cone angle stays, its 3 levels give way to more cascades
    cfg, taken = real_capture_config(_args(str(root)), config_from_args(_args(str(root))), True, False, cascades=5)
    assert cfg.render.grid_levels == 5 and taken["cone_angle"] == REAL_CAPTURE["cone_angle"]
    cfg, taken = real_capture_config(_args(str(root)), config_from_args(_args(str(root))), True, False, cascades=2)
    assert cfg.render.grid_levels == REAL_CAPTURE["grid_levels"] == 3 and cfg.field.pos_extent == 2.0


def test_typed_options_win_over_the_cascades(tmp_path):
    args = _args(str(tmp_path), "--grid-levels", "1", "--cone-angle", "0")
    cfg, taken = real_capture_config(args, config_from_args(args), False, False, cascades=5)
    assert (cfg.render.grid_levels, cfg.render.cone_angle, cfg.field.pos_extent) == (1, 0.0, 16.0)
    assert set(taken) == {"field_extent"}  # the field spans aabb_scale's reach whatever grid was typed
    args = _args(str(tmp_path), "--grid-levels", "2", "--encoding", "hashgrid")
    cfg, taken = real_capture_config(args, config_from_args(args), False, False, cascades=5)
    assert (cfg.render.grid_levels, cfg.field.pos_extent, cfg.render.cone_angle) == (2, 2.0, 1 / 256)  # the grid's
    assert cascade_profile(1) == {}


def test_a_run_resumes_in_the_box_it_was_fitted_in(tmp_path, monkeypatch, capsys):
    """A run fitted while aabb_scale meant one box of that side keeps that box (and its one grid) on --resume."""
    root = _dataset(tmp_path / "d", aabb_scale=4)
    run = tmp_path / "run"
    def old(meta, frames=None, folder=None):
        return torch.tensor([[-4 * UNIT] * 3, [4 * UNIT] * 3], dtype=torch.float64)

    with monkeypatch.context() as m:  # the earlier reading of aabb_scale
        m.setattr(datasets_module, "scene_box", old)
        m.setattr(datasets_module, "box_cascades", lambda meta: 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert cli.main(["fit", "nerf", str(root), "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    before = json.loads((run / "config.json").read_text())
    assert before["render"]["grid_levels"] == 3  # the real capture's (opaque photos), over the old 4 x unit box
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(root), "--out", str(run), "--resume", *TINY, "--steps", "4"]) == 0
    after = json.loads((run / "config.json").read_text())
    err = capsys.readouterr().err
    assert "aabb_scale asks for" not in err and "box [-6.06 -6.06 -6.06] - [6.06 6.06 6.06], 3 cascades" in err
    np.testing.assert_allclose(after["aabb"], before["aabb"])
    assert after["render"]["grid_levels"] == 3 and json.loads((run / "metrics.json").read_text())["steps"] == 4
