"""Behaviour the tests did not pin down (mutation testing of session 28's changes): each test here passes on the
code as committed and fails on the hand-made mutations named in its docstring. Fast: analytic fields stand in for
trained ones where the code under test does not care (ShapeRun, ImageRun, lenses, sweeps); the NeRF checks share
conftest's ``still_life_run``."""

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from rwf_render import UserError
from rwf_render.api import ImageRun, ShapeRun, load_run
from rwf_render.errors import RwfWarning
from rwf_render.mesh import Normalization
from rwf_render.shape_task import SDFConfig


# -- api.ShapeRun / ImageRun on analytic fields ----------------------------------------------------------------------
class _Spheres(torch.nn.Module):
    """Signed distance, in the unit cube, to a sphere of radius 0.25 at the origin and a small one of radius 0.06
    at (0.35, 0.35, 0.35): two pieces, the small one well under a tenth of the faces."""

    def forward(self, x):
        big = x.norm(dim=-1) - 0.25
        small = (x - 0.35).norm(dim=-1) - 0.06
        return torch.minimum(big, small)[:, None]


CENTRE = np.array([5.0, -1.0, 3.0])
SCALE = 0.1  # unit = (x - centre) * 0.1: the big sphere has radius 2.5 in the source's units


@pytest.fixture
def shape_run(tmp_path):
    return ShapeRun(tmp_path, {"kind": "sdf"}, _Spheres().eval(), torch.device("cpu"), SDFConfig(),
                    Normalization(tuple(CENTRE), SCALE))


def test_shape_mesh_level_is_a_distance_in_the_source_units(shape_run):
    """Mutation api.py:231 ``field_level = value`` (the level not moved into the unit cube) survived: the tests only
    meshed level 0 and level -5 (empty either way). mesh(level=0.5) must be the sphere of radius 3, not 2.5 + 5."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)  # radius 3 (0.3 in the unit cube) is not capped
        mesh = shape_run.mesh(res=48, level=0.5)
    r = np.linalg.norm(np.asarray(mesh.vertices) - CENTRE, axis=1)
    assert abs(np.median(r) - 3.0) < 0.05


def test_shape_mesh_min_component_drops_the_small_piece(shape_run):
    """Mutation api.py:241 (remove_small_components not called) survived: min_component was never passed."""
    whole = shape_run.mesh(res=48)
    kept = shape_run.mesh(res=48, min_component=0.2)
    assert len(kept.faces) < len(whole.faces)
    r = np.linalg.norm(np.asarray(kept.vertices) - CENTRE, axis=1)
    assert abs(r.max() - 2.5) < 0.1  # only the big sphere is left
    with pytest.raises(UserError, match="min_component"):
        shape_run.mesh(res=8, min_component=1.5)


def test_shape_mesh_warns_when_the_level_reaches_the_box(shape_run):
    """Mutation api.py:238 ``if False:`` (the capped-surface warning dropped) survived: no test asked for it."""
    with pytest.warns(RwfWarning, match="capped flat"):
        shape_run.mesh(res=16, level=3.0)  # radius 5.5 in the source: 0.55 in the unit cube, beyond its faces


def test_numbers_accept_numpy_and_0d_tensors_and_refuse_bools(shape_run):
    """Mutations that survived: _number accepting bools (api.py:32, the bool clause dropped), _number and _whole
    refusing 0-d tensors (api.py:30-31 and 39-41 dropped: the README and the commit promise them), and _whole's upper
    bound made exclusive (api.py:43 ``<= hi`` to ``< hi``)."""
    a = shape_run.mesh(res=torch.tensor(12), level=torch.tensor(0.5))
    b = shape_run.mesh(res=12, level=0.5)
    np.testing.assert_allclose(np.asarray(a.vertices), np.asarray(b.vertices))
    for bad in (True, np.bool_(False), torch.tensor(True)):
        with pytest.raises(UserError, match="level"):
            shape_run.mesh(res=8, level=bad)
        with pytest.raises(UserError, match="min_component"):
            shape_run.mesh(res=8, min_component=bad)
    from rwf_render.api import _whole
    assert _whole(7, "x", 2, 7) == 7 and _whole(2, "x", 2, 7) == 2  # both ends of lo..hi are in


def test_queries_refuse_a_scalar_and_complex_values_as_user_errors(shape_run):
    """Mutations api.py:119 (the ``t.ndim == 0`` clause dropped: an IndexError traceback) and api.py:121 (complex
    tensors let through: their imaginary part silently dropped) survived."""
    for bad in (torch.tensor(1.0), 1.0, np.float64(2.0)):
        with pytest.raises(UserError, match=r"shape \(\.\.\., 3\)"):
            shape_run.query(bad)
    with pytest.raises(UserError, match="real numbers"):
        shape_run.query(torch.zeros(2, 3, dtype=torch.complex64))
    got = shape_run.query(CENTRE + [3.0, 0.0, 0.0])
    assert got.shape == () and abs(float(got) - 0.5) < 1e-6  # 0.5 units outside the big sphere


class _Ramp(torch.nn.Module):
    """Colour = (4 x - 1, 4 y - 1, 0.5) of the normalised position: beyond [0, 1] over much of the image."""

    def forward(self, x):
        return torch.stack([4 * x[:, 0] - 1, 4 * x[:, 1] - 1, torch.full_like(x[:, 0], 0.5)], -1)


def test_image_query_of_a_tall_image_matches_its_render_and_is_clamped(tmp_path):
    """Mutations api.py:161 ``flat / w`` (the tests' image was wider than tall: max(w, h) == w) and api.py:162 (the
    clamp dropped: a trained field stayed in [0, 1] anyway) survived."""
    run = ImageRun(tmp_path, {"kind": "image", "width": 8, "height": 20, "channels": 3}, _Ramp().eval(),
                   torch.device("cpu"))
    ys, xs = np.meshgrid(np.arange(20) + 0.5, np.arange(8) + 0.5, indexing="ij")
    got = run.query(np.stack([xs, ys], -1))
    np.testing.assert_allclose(got, run.render(), atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0


def test_history_steps_are_ints(tmp_path):
    """Mutation api.py:97 (``return rows``: steps as floats, 100.0) survived; the commit promises int steps."""
    (tmp_path / "history.csv").write_text("step,loss,psnr\n100,0.5,20.0\n200,0.25,\n")
    run = ImageRun(tmp_path, {"kind": "image", "width": 4, "height": 4, "channels": 3}, _Ramp(), torch.device("cpu"))
    rows = run.history
    assert [r["step"] for r in rows] == [100, 200] and all(type(r["step"]) is int for r in rows)
    assert rows[0]["loss"] == 0.5 and math.isnan(rows[1]["psnr"])


# -- api.NeRFRun: camera=-1, reflections, directions -------------------------------------------------------------------
@pytest.fixture(scope="module")
def nerf(still_life_run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_run(still_life_run, device="cpu")


def test_nerf_camera_minus_one_is_the_last_camera(nerf):
    """Mutation api.py:317 (``% len(train)`` dropped: camera=-1 rendered nothing useful) survived."""
    last = nerf.render(camera=len(nerf.cameras) - 1)
    np.testing.assert_allclose(nerf.render(camera=-1)["rgb"], last["rgb"], atol=1e-6)
    np.testing.assert_allclose(nerf.render(camera=np.int64(-1))["rgb"], last["rgb"], atol=1e-6)


def test_nerf_refuses_a_mirrored_camera(nerf):
    """Mutation api.py:369 (the determinant check dropped) survived: a reflection (det -1) rendered a mirrored image."""
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirror[2, 3] = 3.0
    with pytest.raises(UserError, match="not a rotation"):
        nerf.render(mirror, 8, 8, fov=40)


def test_nerf_fov_is_vertical_for_a_wide_image(nerf):
    """Mutation api.py:382 ``fx = 0.5 * w / tan(fov / 2)`` (fov taken as horizontal) survived: every view the tests
    rendered by fov was square. fov is the vertical angle (the docstring), so fx = 0.5 h / tan(fov / 2)."""
    cam = nerf.cameras[3]
    c2w = cam.c2w[0]
    by_fov = nerf.render(c2w, 24, 12, fov=40.0)["rgb"]
    by_fx = nerf.render(c2w, 24, 12, fx=0.5 * 12 / math.tan(math.radians(40.0) / 2))["rgb"]
    np.testing.assert_allclose(by_fov, by_fx, atol=1e-6)


# -- raymarch/grid.py: the occupied cells an update re-evaluates -----------------------------------------------------
@pytest.mark.parametrize("share", [0.25, 0.75])
def test_grid_update_re_evaluates_a_quarter_of_all_cells_worth_of_occupied_ones(share):
    """Mutations grid.py:268 ``[: all_cells.numel() // 8]`` and ``occupied[perm]`` (every occupied cell) survived: the
    test's grid had fewer occupied cells than an eighth of all. With exactly a quarter occupied, all of them are
    re-evaluated; with three quarters, a quarter's worth of them (plus those the uniform quarter meets)."""
    from rwf_render.raymarch import OccupancyGrid

    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    n = grid.n_cells
    quarter = n // 4
    gen = torch.Generator().manual_seed(0)
    occ = torch.zeros(n, dtype=torch.bool)
    occ[torch.randperm(n, generator=gen)[: int(share * n)]] = True
    grid.occupancy.view(-1).copy_(occ)
    seen = []
    assert grid.update(256, lambda x: seen.append(x.clone()) or torch.zeros(x.shape[0]), step_size=0.01,
                       generator=gen)
    _, flat = grid.cells_of(torch.cat(seen))
    evaluated = torch.zeros(n, dtype=torch.bool)
    evaluated[flat] = True
    hit = int((evaluated & occ).sum())
    if share == 0.25:
        assert hit == quarter
    else:
        # the occupied pick holds exactly a quarter; the uniform quarter adds about 3/4 of its own
        assert quarter <= hit <= 2 * quarter and hit < int(occ.sum())
        assert flat.numel() < n // 2 + quarter // 4


# -- nerf_outputs.py: a camera path's bounds are measured from the scene box's centre ------------------------------
def test_camera_path_bounds_of_a_scene_off_the_origin(tmp_path, monkeypatch):
    """Mutations nerf_outputs.py:112-114 (the path cameras' distance taken from the origin, or the training cameras'
    from the origin) survived: the test's box was centred at the origin."""
    from types import SimpleNamespace

    import rwf_render.camera_path as camera_path
    from rwf_render.cameras import Cameras, look_at
    from rwf_render.nerf_outputs import _cameras

    centre = torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64)

    def ring(distances):
        phi = np.linspace(0, 2 * np.pi, len(distances), endpoint=False)
        eyes = np.stack([np.cos(phi), np.sin(phi), 0.3 * np.ones_like(phi)], 1)
        eyes = eyes / np.linalg.norm(eyes, axis=1, keepdims=True) * np.asarray(distances)[:, None]
        eyes = torch.tensor(eyes) + centre
        return Cameras.create(look_at(eyes, centre.expand(len(distances), 3)), fx=50.0, width=40, height=30)

    path = ring([4.0, 6.0])
    monkeypatch.setattr(camera_path, "path_cameras", lambda p: (path, 30.0))
    model = SimpleNamespace(train_cameras=ring([10.0, 10.0, 10.0]), aabb=torch.tensor([8.0, -2, -2, 12, 2, 2]),
                            train_near_far=torch.tensor([[8.0, 12.0]] * 3))
    args = SimpleNamespace(split=None, orbit=None, camera_path=str(tmp_path / "p.json"), interpolate=None,
                           spiral=None, fps=24, given_options=frozenset())
    _, _, _, bounds = _cameras(model, args)
    np.testing.assert_allclose(bounds.numpy(), [[0.9 * 0.8 * 4, 1.2 * 4], [0.9 * 0.8 * 6, 1.2 * 6]], rtol=1e-6)


# -- mesh.py remove_small_components: the boundary and the fallback --------------------------------------------------
def _two_pieces(big_subdiv=2, small_subdiv=1):
    big = trimesh.creation.icosphere(subdivisions=big_subdiv)
    small = trimesh.creation.icosphere(subdivisions=small_subdiv, radius=0.2)
    small.apply_translation([3.0, 0, 0])
    both = trimesh.util.concatenate([big, small])
    return trimesh.Trimesh(both.vertices, both.faces, process=False), len(big.faces), len(small.faces)


def test_remove_small_components_keeps_a_piece_of_exactly_the_fraction_and_the_largest_when_all_are_small():
    """Mutations mesh.py:329 ``>`` for ``>=`` (a piece of exactly min_fraction dropped: the docstring and README drop
    pieces with *fewer*) and mesh.py:330-331 dropped (no piece reaches the fraction: an empty mesh instead of the
    largest piece) survived."""
    from rwf_render.mesh import remove_small_components

    mesh, n_big, n_small = _two_pieces()
    exact = remove_small_components(mesh, n_small / len(mesh.faces))
    assert len(exact.faces) == len(mesh.faces)
    largest = remove_small_components(mesh, 0.99)
    assert len(largest.faces) == n_big and len(largest.vertices) == len(mesh.vertices) - 42


def test_min_component_is_a_fraction_of_all_faces_not_of_the_largest_piece():
    """Mutation mesh.py:329 ``min_fraction * sizes.max()`` survived (and nerf_export.density_mesh's docstring says
    "of the largest", the --min-component help "of the faces"): 80 of 400 faces is under 0.22 of all faces (88) but
    over 0.22 of the largest piece's 320 (70.4)."""
    from rwf_render.mesh import remove_small_components

    mesh, n_big, _ = _two_pieces()
    assert len(remove_small_components(mesh, 0.22).faces) == n_big


# -- evalchunk: the CPU cap reaches the image predictor and the NeRF renderer -----------------------------------------
def test_image_predict_and_nerf_renders_call_the_field_on_capped_chunks_on_the_cpu(nerf, monkeypatch):
    """Mutations image.py:233 (the cap dropped from image.predict: one 65536-point call) and nerf_render.py:199
    (``step = SAMPLE_CHUNK``: 2^18-sample calls on the CPU, the page faults the commit measured) survived: the tests
    compared the values only, which chunking does not change."""
    from rwf_render import image
    from rwf_render.evalchunk import CPU_EVAL_CHUNK
    from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField

    flat = NeuralField(2, 3, EncodingConfig(kind="fourier", m=8, sigma=2.0), MLPConfig(depth=1, width=16), seed=0)
    sizes = []
    flat.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    image.predict(flat, torch.rand(3 * CPU_EVAL_CHUNK, 2))
    assert max(sizes) == CPU_EVAL_CHUNK and sum(sizes) == 3 * CPU_EVAL_CHUNK

    field = nerf.model.field
    calls = []
    for name in ("trunk_features", "density"):
        real = getattr(field, name)
        monkeypatch.setattr(field, name, lambda x, *a, real=real, **k: calls.append(x.shape[0]) or real(x, *a, **k))
    cam = nerf.cameras[3]
    nerf.render(cam.c2w[0], 96, 96, fx=3 * float(cam.fx[0]))
    assert sum(calls) > CPU_EVAL_CHUNK and max(calls) <= CPU_EVAL_CHUNK


# -- lenses.py: one batch of several lenses ----------------------------------------------------------------------------
def test_radial_turn_of_lenses_that_share_k1():
    """Mutation lenses.py:101 (the one-lens shortcut deciding on k1 alone) survived: the batch test's two lenses
    differed in k1. Rays of two cameras whose k1 agree and k2 differ took the first camera's turning point (2.52
    for both, where the second lens turns at 1.07)."""
    from rwf_render.lenses import _radial_turn, distort, undistort

    dist = torch.tensor([[-0.36, 0.10, -0.008, 0.0, 0.0, 0.0], [-0.36, 0.05, 0.0, 0.0, 0.0, 0.0]],
                        dtype=torch.float64)
    each = torch.stack([_radial_turn(dist[i:i + 1, :4])[0] for i in range(2)])
    assert float((each[0] - each[1]).abs()) > 0.1
    torch.testing.assert_close(_radial_turn(dist[:, :4]), each)
    xy_d = torch.tensor([[0.5, 0.3], [0.5, 0.3]], dtype=torch.float64)
    got = undistort(xy_d, torch.tensor(1), dist)
    assert float((distort(got, torch.tensor(1), dist) - xy_d).abs().max()) < 1e-12


# -- rundir.py: temporaries ---------------------------------------------------------------------------------------
def test_atomic_paths_temporary_is_locked_while_it_is_written(tmp_path):
    """Mutation rundir.py:189 (``_hold(fd)`` dropped from atomic_path) survived: only atomic_write's lock was tested.
    atomic_path writes meshes, PNGs, plots and videos: a writer slower than 30 s lost its file to another command's
    sweep."""
    from rwf_render import rundir
    from test_filesystem_edges import aged_and_held

    with rundir.atomic_path(tmp_path / "m.ply") as tmp:
        Path(tmp).write_text("ply")
        aged_and_held(Path(tmp))
        rundir.sweep_temporaries(tmp_path, fresh=True)
        assert Path(tmp).exists()
    assert (tmp_path / "m.ply").read_text() == "ply"


def test_resume_sweeps_a_fresh_temporary_even_after_a_sweep_of_its_folder(tmp_path, monkeypatch):
    """Mutations rundir.py:441 (``fresh=True`` ignored, or ``min_age=0.0`` dropped) survived: --resume removes every
    unlocked temporary of its run, fresh ones too, whether or not the folder was listed before in this process."""
    from rwf_render import rundir

    monkeypatch.setattr(rundir, "_FOUND", {})
    rundir.sweep_temporaries(tmp_path)
    fresh = tmp_path / ".checkpoint.pt.abcd1234.tmp"
    fresh.write_bytes(b"half a checkpoint")
    rundir._remove_temporaries(tmp_path)
    assert not fresh.exists()


def test_atomic_write_sweeps_a_killed_writers_temporaries(tmp_path, monkeypatch):
    """Mutation rundir.py:150 (``sweep_temporaries`` dropped from atomic_write) survived: the sweep was tested through
    atomic_path only; checkpoints, point clouds and JSON files go through atomic_write."""
    from rwf_render import rundir
    from rwf_render.locks import STALE_AFTER_S

    monkeypatch.setattr(rundir, "_FOUND", {})
    dead = tmp_path / ".metrics.json.abcd1234.tmp"
    dead.write_bytes(b"{")
    past = time.time() - 2 * STALE_AFTER_S
    os.utime(dead, (past, past))
    rundir.atomic_write_text(tmp_path / "metrics.json", "{}")
    assert not dead.exists() and (tmp_path / "metrics.json").read_text() == "{}"


# -- check_output_folder before the work: sdf and NeRF mesh exports --------------------------------------------------
def test_mesh_exports_into_an_output_under_a_file_are_refused_before_the_work(tmp_path, capsys, monkeypatch,
                                                                            still_life_run):
    """Mutations sdf.py:302 and nerf_export.py:214 (check_output_folder dropped from the two mesh exports) survived:
    only the image render's check was tested. An sdf export then ran marching cubes and failed at the write; a NeRF
    one said "folder ... does not exist" of a path under a file."""
    from conftest import one_cli_error

    from rwf_render import cli, nerf_export, sdf

    run = tmp_path / "shape"
    assert cli.main(["fit", "sdf", "--out", str(run), "--steps", "5", "--width", "16", "--features", "8",
                     "--mesh-res", "16", "--preview-res", "16", "--eval-points", "512", "--metric-points", "500",
                     "--pool", "1024", "--batch", "256", "--refresh-every", "5", "--eval-every", "5", "--quiet"]) == 0
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(sdf, "extract_mesh", lambda *a, **k: pytest.fail("marching cubes before the check"))
    line = one_cli_error(capsys, ["export", "mesh", run, "--res", "16", "--out", tmp_path / "afile" / "m.ply"])
    assert "afile is a file, not a folder" in line
    monkeypatch.setattr(nerf_export, "density_mesh", lambda *a, **k: pytest.fail("marching cubes before the check"))
    line = one_cli_error(capsys, ["export", "mesh", still_life_run, "--res", "16", "--out",
                                  tmp_path / "afile" / "n.ply"])
    assert "afile is a file, not a folder" in line
