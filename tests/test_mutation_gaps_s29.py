"""Tests for behaviour a mutation run (s29) of the last two days' changes found unpinned: each fails on one mutant
of the code and passes on the code as it is."""

import numpy as np
import pytest
import torch

from rwf_render.cameras import Cameras, pixel_rays
from rwf_render.lenses import _radial_turn, distort, undistort

OPENCV = torch.tensor(1)


def _d(*k):
    return torch.tensor([[*k, *[0.0] * (6 - len(k))]], dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------- lenses
def test_radial_turn_is_the_first_of_two_turning_points():
    """d/dr r (1 - 0.5 r^2 + 0.1 r^4) = 1 - 1.5 s + 0.5 s^2 (s = r^2) vanishes at s = 1 and s = 2: the polynomial
    stops rising at r = 1 (a local maximum), not at sqrt 2 (its local minimum)."""
    assert float(_radial_turn(_d(-0.5, 0.1)[:, :4])[0]) == pytest.approx(1.0, abs=1e-12)
    # and 1 + 3 k1 s = 0 alone: s = -1 / (3 k1)
    assert float(_radial_turn(_d(-0.2)[:, :4])[0]) == pytest.approx((1 / 0.6) ** 0.5, abs=1e-12)


@pytest.mark.parametrize("k", [(-0.36, 0.10, -0.008), (0.5, -0.3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_distorted_radius_up_to_the_turn_inverts_on_the_rising_stretch(k, dtype):
    """Radii up to the polynomial's value at its turning point (the edge of what the lens can image) invert to the
    root before the turn: Newton steps that leave the bracket, or a start past the turn (a pincushion lens whose
    turn lies inside the distorted range, k1 > 0 > k2), landed on the second root beyond it."""
    d = _d(*k)
    turn = float(_radial_turn(d[:, :4])[0])
    edge = float(distort(torch.tensor([[turn, 0.0]], dtype=torch.float64), OPENCV, d)[0, 0])
    rd = torch.linspace(0.0, edge * (1 - 1e-9), 4001, dtype=torch.float64)
    ang = torch.linspace(0, 6.0, 4001, dtype=torch.float64)
    xy_d = torch.stack([rd * torch.cos(ang), rd * torch.sin(ang)], -1)
    got = undistort(xy_d.to(dtype), OPENCV, d.to(dtype)).double()
    assert float(got.norm(dim=-1).max()) <= turn * (1 + 1e-5)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert float((distort(got, OPENCV, d) - xy_d).abs().max()) < tol


def test_rays_of_two_cameras_take_each_cameras_own_turn_when_one_reaches_past_the_others():
    """pixel_rays of a batch of two cameras equals each camera's rays alone, where camera 1's rays reach past camera
    0's turning point (a wide lens without distortion beside a barrel lens)."""
    cams = Cameras.create(torch.eye(4).expand(2, 4, 4), fx=[160.0, 60.0], width=320, height=240, model="OPENCV",
                          dist=[[-0.36, 0.10, -0.008, 0, 0, 0], [0.0, 0.0, 0.0, 0, 0, 0]])
    xs, ys = np.arange(320) + 0.5, np.arange(240) + 0.5
    pix = torch.tensor(np.concatenate([np.stack([xs, np.full(320, 0.5)], 1), np.stack([np.full(240, 0.5), ys], 1)]),
                       dtype=torch.float32)
    idx = torch.arange(len(pix)) % 2
    _, both = pixel_rays(cams, pix, idx)
    for k in (0, 1):
        _, alone = pixel_rays(cams[k], pix[idx == k])
        torch.testing.assert_close(both[idx == k], alone)


@pytest.mark.parametrize("dtype, tol_px", [(torch.float64, 1e-6), (torch.float32, 1e-2)])
def test_every_pixel_of_an_accepted_pincushion_lens_round_trips(dtype, tol_px):
    """A lens Cameras.create accepts: every pixel's undistorted point distorts back onto the pixel. Four pixels of
    this one came back 60 px off: the bracketed Newton bounced between r = 0.0016 and 1.1687 for all 60 iterations
    (each step inside the bracket, none shrinking it); it now bisects when a step is not under half the one before
    last."""
    dist = [1.0, -0.5, 0, 0, 0, 0]
    Cameras.create(torch.eye(4), fx=120.0, width=320, height=240, model="OPENCV", dist=dist)  # accepted
    ys, xs = torch.meshgrid(torch.arange(240) + 0.5, torch.arange(320) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).double()
    xy_d = (pix - torch.tensor([160.0, 120.0], dtype=torch.float64)) / 120.0
    got = undistort(xy_d.to(dtype), OPENCV, _d(*dist).to(dtype)).double()
    assert float((distort(got, OPENCV, _d(*dist)) - xy_d).norm(dim=-1).max()) * 120.0 < tol_px


# ------------------------------------------------------------------------------------------------ temporaries
def _stale(path):
    import os
    import time

    from rwf_render import locks
    path.write_bytes(b"half a file")
    past = time.time() - 2 * locks.STALE_AFTER_S
    os.utime(path, (past, past))
    return path


def test_a_write_leaves_the_temporaries_of_a_file_whose_name_extends_its_own(tmp_path, monkeypatch):
    """``.m.ply.bak.abcd1234.tmp`` is m.ply.bak's temporary, not m.ply's: a write of m.ply leaves it (only the
    file's own temporaries go), while m.ply's own stale one goes."""
    from rwf_render import rundir
    monkeypatch.setattr(rundir, "_FOUND", {})
    theirs = _stale(tmp_path / ".m.ply.bak.abcd1234.tmp")
    own = _stale(tmp_path / ".m.ply.abcd1234.tmp")
    rundir.atomic_write_text(tmp_path / "m.ply", "ply")
    assert theirs.exists() and not own.exists()


def test_atomic_write_sweeps_only_its_own_files_temporaries(tmp_path, monkeypatch):
    """atomic_write (not only atomic_path) leaves another file's stale temporary alone."""
    from rwf_render import rundir
    monkeypatch.setattr(rundir, "_FOUND", {})
    other = _stale(tmp_path / ".thesis.docx.k3j9x_2a.tmp")
    own = _stale(tmp_path / ".x.json.abcd1234.tmp")
    rundir.atomic_write_text(tmp_path / "x.json", "{}")
    assert other.exists() and not own.exists()


def test_atomic_path_leaves_no_descriptor_open(tmp_path):
    """The temporary's locked descriptor is closed once the file is published (or on failure): a render writing
    thousands of frames through atomic_path ran out of descriptors otherwise."""
    import os

    from rwf_render import rundir
    before = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        with rundir.atomic_path(tmp_path / f"f{i}.txt") as tmp:
            with open(tmp, "w") as f:
                f.write("x")
    with pytest.raises(RuntimeError):
        with rundir.atomic_path(tmp_path / "bad.txt"):
            raise RuntimeError("the writer failed")
    assert len(os.listdir("/proc/self/fd")) == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp") or ".tmp." in p]


# ----------------------------------------------------------------------------------------------- occupancy grid
def test_grid_update_calls_the_field_on_capped_chunks_on_the_cpu():
    """Occupancy-grid updates are one of the evaluations without training whose CPU calls are capped at
    CPU_EVAL_CHUNK points (evalchunk.py names them): a 32^3 grid's warm-up update of 32768 cells came as one call."""
    from rwf_render.evalchunk import CPU_EVAL_CHUNK
    from rwf_render.raymarch import OccupancyGrid

    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=32)
    sizes = []
    assert grid.update(0, lambda x: sizes.append(x.shape[0]) or torch.zeros(x.shape[0]), step_size=0.01,
                       generator=torch.Generator().manual_seed(0))
    assert sum(sizes) == grid.n_cells and max(sizes) <= CPU_EVAL_CHUNK


def test_grid_update_evaluates_each_cell_at_one_point():
    """A cell both random picks choose (the uniform quarter and the occupied ones) is evaluated once, at one jittered
    point, as the docstring says."""
    from rwf_render.raymarch import OccupancyGrid

    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    gen = torch.Generator().manual_seed(0)
    grid.occupancy.view(-1).copy_(torch.rand(grid.n_cells, generator=gen) < 0.75)
    seen = []
    assert grid.update(256, lambda x: seen.append(x.clone()) or torch.zeros(x.shape[0]), step_size=0.01,
                       generator=gen)
    _, flat = grid.cells_of(torch.cat(seen))
    assert flat.numel() == torch.unique(flat).numel()


# ------------------------------------------------------------------------------------------- image feature cache
def test_cached_features_follow_the_models_encoding():
    """The cache holds one encoding's features: a task given another model (another fixed Fourier B: another sigma)
    encodes the pixels with that model's encoding, not the first's."""
    from rwf_render import image
    from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField

    img = np.random.default_rng(1).random((8, 10, 3)).astype(np.float32)
    task = image.ImageTask(img, image.ImageConfig(size=10), image.resolve_device("cpu"))
    a = NeuralField(2, 3, EncodingConfig(kind="fourier", m=8, sigma=2.0), MLPConfig(depth=2, width=16))
    b = NeuralField(2, 3, EncodingConfig(kind="fourier", m=8, sigma=5.0), MLPConfig(depth=2, width=16))
    task._fixed_features(a)
    with torch.no_grad():
        torch.testing.assert_close(task._fixed_features(b), b.encoding(task.train_x))
        # and the loss is the model's own on the coordinates
        torch.testing.assert_close(task.loss(b, None)[0]["mse"], torch.mean((b(task.train_x) - task.train_y) ** 2))


def test_the_feature_cache_cap_counts_float32_bytes(monkeypatch):
    """FEATURE_CACHE_BYTES is a size in bytes of the float32 features (N pixels x out_dim x 4): one byte under it
    the model is called on the coordinates (None), at it the features are cached."""
    from rwf_render import image
    from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField

    img = np.random.default_rng(1).random((8, 10, 3)).astype(np.float32)
    task = image.ImageTask(img, image.ImageConfig(size=10), image.resolve_device("cpu"))
    model = NeuralField(2, 3, EncodingConfig(kind="fourier", m=8, sigma=2.0), MLPConfig(depth=2, width=16))
    size = task.train_x.shape[0] * model.encoding.out_dim * torch.finfo(torch.float32).bits // 8
    monkeypatch.setattr(image, "FEATURE_CACHE_BYTES", size - 1)
    assert task._fixed_features(model) is None
    monkeypatch.setattr(image, "FEATURE_CACHE_BYTES", size)
    got = task._fixed_features(model)
    assert got is not None and got.dtype == torch.float32 and got.numel() * got.element_size() == size


# --------------------------------------------------------------------------------------------------- Python API
# Runs built around stand-in models (a closed-form field), so that each property is checked in milliseconds.
class _Sphere(torch.nn.Module):
    """A field of a sphere of radius 0.5 with slope 2: sdf 2 (|x| - 0.5), or the logit 2 (0.5 - |x|) (grows in)."""

    def __init__(self, sign):
        super().__init__()
        self.sign = sign

    def forward(self, x):
        return (self.sign * 2.0 * (x.norm(dim=-1, keepdim=True) - 0.5))


def _shape_run(target):
    from types import SimpleNamespace

    from rwf_render.api import ShapeRun
    return ShapeRun(None, {}, _Sphere(1.0 if target == "sdf" else -1.0), torch.device("cpu"),
                    SimpleNamespace(target=target, inside="negative" if target == "sdf" else "positive"),
                    SimpleNamespace(center=np.zeros(3), scale=1.0))


@pytest.mark.parametrize("target", ["sdf", "occupancy"])
def test_shape_normals_are_unit_and_outward_for_both_targets(target):
    """Outward unit normals of a sphere are x / |x|, whether the field is a distance (grows outward) or an
    occupancy logit (grows inward), and whatever the field's slope."""
    pts = np.random.default_rng(0).normal(size=(50, 3))
    n = _shape_run(target).normals(pts)
    np.testing.assert_allclose(n, pts / np.linalg.norm(pts, axis=1, keepdims=True), atol=1e-5)


def test_shape_mesh_refuses_a_min_component_above_one():
    from rwf_render.errors import UserError
    with pytest.raises(UserError, match="min_component"):
        _shape_run("sdf").mesh(res=8, min_component=2.0)


class _NeRFStub(torch.nn.Module):
    """field(x, d) -> (rgb = d or 0, density = |x|), recording each call's size; render_rays: the distance to the
    plane z = 1 along d, cut to [near, far] as the run's settings give them."""

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace
        self.render_cfg = SimpleNamespace(chunk=4096, near=None, far=None, far_bounds=False)
        self.sizes = []

    def field(self, x, d):
        self.sizes.append(x.shape[0])
        return (torch.zeros_like(x) if d is None else d), x.norm(dim=-1)

    def default_near(self):
        return 0.0

    def render_rays(self, o, d):
        t = (1.0 - o[:, 2]) / d[:, 2]
        far = self.render_cfg.far if self.render_cfg.far_bounds and self.render_cfg.far is not None else np.inf
        t = t.clamp(max=far)
        return {"rgb": d.clone(), "depth": t, "opacity": torch.ones_like(t)}


def _nerf_run():
    from rwf_render.api import NeRFRun
    return NeRFRun(None, {}, _NeRFStub(), torch.device("cpu"))


def test_nerf_query_calls_the_field_on_capped_chunks_on_the_cpu():
    """NeRFRun.query evaluates the field in the CPU-sized chunks every other evaluation uses (evalchunk.py)."""
    from rwf_render.evalchunk import CPU_EVAL_CHUNK
    run = _nerf_run()
    pts = np.random.default_rng(0).normal(size=(20000, 3)).astype(np.float32)
    rgb, sigma = run.query(pts)
    assert max(run.model.sizes) <= CPU_EVAL_CHUNK and sum(run.model.sizes) == 20000
    np.testing.assert_allclose(sigma, np.linalg.norm(pts, axis=1), rtol=1e-6)


def test_nerf_query_and_render_rays_take_directions_of_any_length():
    """Directions are normalized: a direction three times as long is the same direction (query's colours, which
    the stand-in sets to the direction; render_rays' depth along the unit direction)."""
    run = _nerf_run()
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(64, 3)).astype(np.float32)
    d = rng.normal(size=(64, 3)).astype(np.float32)
    d[:, 2] = np.abs(d[:, 2]) + 0.5
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(run.query(pts, 3 * d)[0], unit, atol=1e-6)
    o = np.zeros((64, 3), np.float32)
    np.testing.assert_allclose(run.render_rays(o, 3 * d)["depth"], 1.0 / unit[:, 2], rtol=1e-5)


def test_nerf_far_given_wins_over_no_far_bounds_and_must_exceed_near():
    """render_rays(far=) ends the rays there even when the run was fitted with --no-far-bounds, and a far equal to
    the near is refused (the rays would be empty)."""
    from rwf_render.errors import UserError
    run = _nerf_run()
    o = np.zeros((4, 3), np.float32)
    d = np.tile(np.array([[0, 0, 1]], np.float32), (4, 1))
    np.testing.assert_allclose(run.render_rays(o, d, far=0.25)["depth"], 0.25)
    assert run.model.render_cfg.far is None and run.model.render_cfg.far_bounds is False  # the run's settings back
    with pytest.raises(UserError, match="must exceed"):
        run.render_rays(o, d, near=0.5, far=0.5)


def test_nerf_render_refuses_more_than_64_million_pixels():
    from rwf_render.errors import UserError
    with pytest.raises(UserError, match="64 million"):
        _nerf_run().render(np.eye(4), 8001, 8001, fov=60)
    with pytest.raises(UserError, match="64 million"):
        _nerf_run().render(np.eye(4), 16000, 4001, fov=60)


# ------------------------------------------------------------------------------------------------- depth loss
def test_the_fit_weighs_its_depth_rays_by_their_opacity(tmp_path, monkeypatch):
    """The training step passes the depth rays' opacities to depth_loss (o |expected depth - t| / t + (1 - o));
    without them it scored the old |sum w t - t| / t, least behind the surface for a half-transparent ray."""
    from data_tools.synth import demo_mesh, render_dataset

    from rwf_render import cli, nerf_depth, nerf_task

    data = tmp_path / "depth"
    render_dataset(demo_mesh(), data, res=24, n_views=3, n_val=1, n_test=1, depth=True, log=lambda *a, **k: None)
    seen = []

    def spy(t_pred, t_target, opacity=None):
        seen.append(opacity is not None and opacity.shape == t_pred.shape
                    and bool(((opacity >= 0) & (opacity <= 1 + 1e-5)).all()))
        return nerf_depth.depth_loss(t_pred, t_target, opacity)
    monkeypatch.setattr(nerf_task, "depth_loss", spy)
    assert cli.main(["fit", "nerf", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--quiet",
                     "--depth-loss", "1", "--grid-resolution", "16", "--width", "16", "--features", "16",
                     "--target-samples", "512", "--eval-images", "1", "--eval-every", "2"]) == 0
    assert seen and all(seen)


def test_image_features_of_more_than_one_encoding_chunk_cover_every_pixel():
    """The cached features are computed 65536 pixels at a time: an image with 72000 training pixels has all its
    rows, each the encoding of its own pixel."""
    from rwf_render import image
    from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField

    img = np.random.default_rng(2).random((480, 600, 3)).astype(np.float32)
    task = image.ImageTask(img, image.ImageConfig(size=600), image.resolve_device("cpu"))
    model = NeuralField(2, 3, EncodingConfig(kind="fourier", m=2, sigma=2.0), MLPConfig(depth=1, width=8))
    got = task._fixed_features(model)
    assert task.train_x.shape[0] > 65536
    with torch.no_grad():
        torch.testing.assert_close(got, model.encoding(task.train_x))


def test_image_predict_of_no_points_is_empty():
    """predict on no coordinates gives (0, C), as ImageRun.query of an empty array does."""
    from rwf_render import image
    from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField

    model = NeuralField(2, 3, EncodingConfig(kind="fourier", m=4, sigma=2.0), MLPConfig(depth=1, width=8))
    assert tuple(image.predict(model, torch.zeros(0, 2)).shape) == (0, 3)


# ------------------------------------------------------------------------------------------ Poisson face filter
def _poisson_of(monkeypatch, v, faces, scale=1.0):
    o3d = pytest.importorskip("open3d")
    from rwf_render.nerf_poisson import poisson_mesh

    made = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(faces))
    monkeypatch.setattr(o3d.geometry.TriangleMesh, "create_from_point_cloud_poisson",
                        staticmethod(lambda *a, **k: (made, o3d.utility.DoubleVector(np.ones(len(v))))))
    return poisson_mesh(v, v, np.array([[-2.0 * scale] * 3, [2.0 * scale] * 3]), trim=0.0)


def test_poisson_filter_tells_windings_apart_by_permutation_parity(monkeypatch):
    """A face listed again rotated, (b, c, a), is the same face with the same winding: one copy stays; listed
    again as (a, c, b) or (c, b, a), an odd permutation, it is wound the other way: the pair goes."""
    import trimesh
    sphere = trimesh.creation.icosphere(subdivisions=1)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    out = _poisson_of(monkeypatch, v, np.vstack([f, f[:1][:, [1, 2, 0]], f[1:2][:, [2, 0, 1]]]))
    assert len(out.faces) == len(f) and out.is_watertight
    out = _poisson_of(monkeypatch, v, np.vstack([f, f[:1][:, [0, 2, 1]], f[1:2][:, [1, 0, 2]]]))
    assert len(out.faces) == len(f) - 2


@pytest.mark.parametrize("scale", [1e-9, 1.0, 1e6])
def test_poisson_filter_keeps_thin_faces_in_any_units(monkeypatch, scale):
    """Only faces without area go, relative to the surface's size: a sphere keeps every face at any scale, and so
    does a thin (but not degenerate) sliver, one millionth of the sphere's size wide."""
    import trimesh
    sphere = trimesh.creation.icosphere(subdivisions=2)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    # split face 0 at a point one millionth of the way from its first edge's midpoint towards its third vertex
    a, b, c = f[0]
    p = (v[a] + v[b]) / 2 + 1e-6 * (v[c] - (v[a] + v[b]) / 2)
    v2 = np.vstack([v, p]) * scale
    n = len(v)
    faces = np.vstack([f[1:], [[a, b, n], [b, c, n], [c, a, n]]])  # the first is the sliver
    out = _poisson_of(monkeypatch, v2, faces, scale)
    assert len(out.faces) == len(faces) and out.is_watertight


@pytest.mark.parametrize("dtype, tol_px", [(torch.float64, 1e-6), (torch.float32, 2e-2)])
def test_a_lens_with_strong_tangential_terms_inverts_at_every_pixel(dtype, tol_px):
    """An accepted lens with p1 = -0.8: from the radial solution, the 2-D Newton steps stalled at two pixels (2.6 and
    17.6 px off); the tangential terms are now brought in by quarters there (a homotopy)."""
    dist = [1.44113, 0.0, 12.78619, -7.86791, -0.79619, 0.0]
    fx, w, h, cx, cy = 68.05, 120, 90, 54.43, 38.28
    Cameras.create(torch.eye(4), fx=fx, width=w, height=h, cx=cx, cy=cy, model="OPENCV", dist=dist)  # accepted
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).double()
    xy_d = (pix - torch.tensor([cx, cy], dtype=torch.float64)) / fx
    got = undistort(xy_d.to(dtype), OPENCV, _d(*dist).to(dtype)).double()
    assert float((distort(got, OPENCV, _d(*dist)) - xy_d).norm(dim=-1).max()) * fx < tol_px


def test_resume_sweeps_the_validation_renders_folder_too(tmp_path, monkeypatch):
    """A kill during a NeRF's val/step_000040.png left its temporary there for good: --resume swept only the run's
    top folder, and the resumed fit writes step 40's render once (a sweep at write time spares temporaries under
    30 s old). Another program's hidden file stays."""
    from rwf_render import rundir

    monkeypatch.setattr(rundir, "_FOUND", {})
    (tmp_path / "val").mkdir()
    left = [tmp_path / "val" / ".step_000040.png.gt7188wp.tmp", tmp_path / "val" / ".step_000020.png.abcd1234.tmp.png"]
    for path in left:
        path.write_bytes(b"half a png")
    other = tmp_path / "val" / ".notes.txt"
    other.write_text("mine")
    rundir._remove_temporaries(tmp_path)
    assert not any(p.exists() for p in left) and other.exists()
