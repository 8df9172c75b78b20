"""``rwf_render.load_run``: a run's field in Python, in the coordinates and units of the fit's input. Checked against
closed forms (a sphere's signed distance, a two-colour image's halves), against what the commands write from the same
run (reconstruction.png, ``rwf export mesh``), and against a scene's held-out photos rendered from their own poses."""

import json
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from rwf_render import ImageRun, NeRFRun, ShapeRun, UserError, cli, load_run

SDF_TINY = ["--steps", "300", "--width", "64", "--features", "32", "--sigma", "1", "--eval-every", "300",
            "--mesh-res", "32",
            "--preview-res", "16", "--eval-points", "4096", "--metric-points", "5000", "--pool", "8192",
            "--batch", "1024", "--refresh-every", "100", "--quiet"]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A 24 x 16 image: red on the left half, blue on the right, a green bar along the top rows."""
    root = tmp_path_factory.mktemp("api_image")
    img = np.zeros((16, 24, 3), np.uint8)
    img[:, :12, 0] = 255
    img[:, 12:, 2] = 255
    img[:3, :, :] = (0, 255, 0)
    iio.imwrite(root / "two.png", img)
    assert cli.main(["fit", "image", str(root / "two.png"), "--steps", "300", "--features", "64", "--width", "64",
                     "--split", "all", "--quiet", "--out", str(root / "run")]) == 0
    return root / "run", img.astype(np.float32) / 255


@pytest.fixture(scope="module")
def sphere_run(tmp_path_factory):
    """A sphere of radius 2 centred at (5, -1, 3): its signed distance is |p - c| - 2 in those units."""
    root = tmp_path_factory.mktemp("api_sdf")
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=2.0)
    sphere.apply_translation([5.0, -1.0, 3.0])
    sphere.export(root / "sphere.ply")
    assert cli.main(["fit", "sdf", str(root / "sphere.ply"), "--out", str(root / "run"), *SDF_TINY]) == 0
    return root / "run"


def test_image_query_follows_the_image_pixels(image_run):
    run_dir, img = image_run
    run = load_run(run_dir, device="cpu")
    assert isinstance(run, ImageRun) and run.kind == "image" and run.size == (24, 16) and run.channels == 3
    # pixel centres, x right and y down: the red half, the blue half, the green top rows (between the centres a 24 px
    # image leaves a field of this bandwidth free)
    got = run.query(np.array([[3.5, 10.5], [20.5, 10.5], [12.5, 1.5]]))
    assert got.shape == (3, 3) and isinstance(got, np.ndarray)
    assert got[0].argmax() == 0 and got[1].argmax() == 2 and got[2].argmax() == 1
    assert got.min() >= 0 and got.max() <= 1
    # every pixel centre: the render, and close to the image itself after 300 steps
    ys, xs = np.meshgrid(np.arange(16) + 0.5, np.arange(24) + 0.5, indexing="ij")
    centres = run.query(torch.tensor(np.stack([xs, ys], -1)))
    assert isinstance(centres, torch.Tensor) and centres.shape == (16, 24, 3)
    rendered = run.render()
    np.testing.assert_allclose(centres.numpy(), rendered, atol=1e-6)
    assert np.abs(rendered - img).mean() < 0.05
    # what the fit wrote as its reconstruction (8-bit)
    rec = iio.imread(run_dir / "reconstruction.png").astype(np.float32) / 255
    assert np.abs(rendered - rec[..., :3]).max() <= 1 / 255 + 1e-6
    assert run.render(2.0).shape == (32, 48, 3)
    assert run.metrics["psnr"] > 20 and len(run.history) > 0


def test_sdf_query_is_the_sphere_distance_in_the_source_units(sphere_run):
    run = load_run(sphere_run, device="cpu")
    assert isinstance(run, ShapeRun) and run.target == "sdf"
    rng = np.random.default_rng(0)
    d = rng.normal(size=(400, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    radius = rng.uniform(1.0, 2.6, size=(400, 1))  # inside and outside, within the box the field was fitted in
    centre = np.array([5.0, -1.0, 3.0])
    points = centre + d * radius
    got = run.query(points)
    want = radius[:, 0] - 2.0
    assert got.shape == (400,)
    assert np.median(np.abs(got - want)) < 0.05  # 1.2 % of the 4-unit diameter
    assert np.sign(got[np.abs(want) > 0.3]).tolist() == np.sign(want[np.abs(want) > 0.3]).tolist()
    assert run.query(centre[None])[0] < -1.0  # deep inside: negative, in units (not the unit cube's)


def test_sdf_mesh_is_what_export_writes(sphere_run, tmp_path):
    run = load_run(sphere_run, device="cpu")
    mesh = run.mesh(res=48)
    assert cli.main(["export", "mesh", str(sphere_run), "--res", "48", "--quiet", "--out",
                     str(tmp_path / "m.ply")]) == 0
    written = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_allclose(np.asarray(mesh.vertices), np.asarray(written.vertices), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mesh.faces), np.asarray(written.faces))
    r = np.linalg.norm(np.asarray(mesh.vertices) - [5.0, -1.0, 3.0], axis=1)
    assert abs(np.median(r) - 2.0) < 0.1 and mesh.volume > 0  # outward faces
    assert len(run.mesh(res=16, level=-5.0).faces) == 0  # no point lies 5 units inside a sphere of radius 2


def _test_frames(scene):
    meta = json.loads((scene / "transforms_test.json").read_text())
    return meta, [(np.asarray(f["transform_matrix"], np.float64),
                   iio.imread(scene / f["file_path"]).astype(np.float32) / 255) for f in meta["frames"]]


def test_nerf_renders_held_out_views_from_their_poses(still_life_run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = load_run(still_life_run, device="cpu")
    assert isinstance(run, NeRFRun) and run.kind == "nerf" and len(run.cameras) == 24
    meta, frames = _test_frames(still_life_run.parent / "scene")
    psnrs = []
    for c2w, img in frames:
        h, w = img.shape[:2]
        fov = np.degrees(2 * np.arctan(np.tan(meta["camera_angle_x"] / 2) * h / w))  # vertical, from the horizontal
        out = run.render(c2w, w, h, fov=fov)
        assert out["rgb"].shape == (h, w, 3) and out["depth"].shape == (h, w) and out["opacity"].shape == (h, w)
        a = img[..., 3:4]
        target = img[..., :3] * a + (1 - a)  # the run renders on white (its random training backgrounds aside)
        psnrs.append(-10 * np.log10(np.mean((out["rgb"] - target) ** 2)))
    assert min(psnrs) > 20, psnrs
    # fov and fx name the same camera; camera=i is training camera i
    c2w, img = frames[0]
    h, w = img.shape[:2]
    fx = 0.5 * w / np.tan(meta["camera_angle_x"] / 2)
    fov = np.degrees(2 * np.arctan(h / (2 * fx)))
    np.testing.assert_allclose(run.render(c2w, w, h, fx=fx)["rgb"], run.render(c2w, w, h, fov=fov)["rgb"], atol=1e-5)
    cam = run.cameras[3]
    own = run.render(camera=3)
    free = run.render(cam.c2w[0], int(cam.width[0]), int(cam.height[0]), fx=float(cam.fx[0]), fy=float(cam.fy[0]),
                      cx=float(cam.cx[0]), cy=float(cam.cy[0]))
    np.testing.assert_allclose(own["rgb"], free["rgb"], atol=1e-6)
    near = run.render(camera=3, near=100.0, far=200.0)  # every ray starts beyond the scene: background only
    assert near["opacity"].max() < 1e-3


def test_nerf_query_and_mesh(still_life_run, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = load_run(still_life_run, device="cpu")
        mesh = run.mesh(res=40)
        assert cli.main(["export", "mesh", str(still_life_run), "--res", "40", "--quiet", "--out",
                         str(tmp_path / "m.ply")]) == 0
    written = trimesh.load(tmp_path / "m.ply", process=False)
    assert len(mesh.faces) > 100
    np.testing.assert_allclose(np.asarray(mesh.vertices), np.asarray(written.vertices), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mesh.visual.vertex_colors)[:, :3],
                                  np.asarray(written.visual.vertex_colors)[:, :3])
    # the mesh's faces point outward, so half a voxel behind each vertex the density is above the export's level and
    # half a voxel ahead below it (for most vertices: the grid's linear interpolation cuts a curved field); well
    # outside the object, near nothing
    level = 10.0 * run.model.field.density_scale
    v, n = np.asarray(mesh.vertices[:500]), np.asarray(mesh.vertex_normals[:500])
    half = 0.5 * (run.aabb[1] - run.aabb[0]).max() / 39
    rgb, behind = run.query(v - half * n)
    _, ahead = run.query(v + half * n)
    assert rgb.shape == (500, 3) and behind.shape == (500,)
    assert np.mean(behind > level) > 0.8 and np.mean(ahead < level) > 0.8
    corner = run.aabb[0] + 0.02 * (run.aabb[1] - run.aabb[0])
    assert run.query(np.tile(corner, (4, 1)))[1].max() < level
    sigma = run.query(v[:2])[1]
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rgb2, sigma2 = run.query(torch.tensor(mesh.vertices[:2], dtype=torch.float32), d)
    assert isinstance(rgb2, torch.Tensor) and rgb2.shape == (2, 3)
    np.testing.assert_allclose(sigma2.numpy(), sigma[:2], rtol=1e-5)  # the density does not depend on the view


@pytest.mark.parametrize("call, message", [
    (lambda r: r.query(np.zeros((4, 3))), r"expected shape \(\.\.\., 2\)"),
    (lambda r: r.query([[np.nan, 1.0]]), "NaN"),
    (lambda r: r.query("abc"), "expected"),
    (lambda r: r.render(0), "positive"),
    (lambda r: r.render(1e4), "pixels"),
])
def test_bad_image_queries_are_user_errors(image_run, call, message):
    run = load_run(image_run[0], device="cpu")
    with pytest.raises(UserError, match=message):
        call(run)


def test_bad_nerf_cameras_are_user_errors(still_life_run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = load_run(still_life_run, device="cpu")
    eye = np.eye(4)
    for kwargs, message in [({}, "needs a camera"), ({"camera": 24}, r"-24\.\.23, got 24"),
                            ({"camera": 0, "width": 8}, "give no c2w"),
                            ({"c2w": eye, "width": 8, "height": 8}, "fov .* or fx"),
                            ({"c2w": eye, "width": 8, "height": 8, "fov": 30, "fx": 5}, "one of them"),
                            ({"c2w": eye[:2], "width": 8, "height": 8, "fov": 30}, "camera-to-world"),
                            ({"c2w": eye, "width": 0, "height": 8, "fov": 30}, "width"),
                            ({"c2w": eye, "width": 8, "height": 8, "fov": 180}, "fov"),
                            ({"camera": 0, "near": 2.0, "far": 1.0}, "must exceed near")]:
        with pytest.raises(UserError, match=message):
            run.render(**kwargs)
    with pytest.raises(UserError, match="one per point"):
        run.query(np.zeros((3, 3)), np.zeros((2, 3)))
    with pytest.raises(UserError, match="threshold"):
        run.mesh(threshold=0)


def test_load_run_refuses_what_is_not_a_run(tmp_path, image_run):
    with pytest.raises(UserError, match="no such run directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        load_run(tmp_path / "empty")
    with pytest.raises(UserError, match="device"):
        load_run(image_run[0], device="gpu")


# -- an API review: what a notebook user met -------------------------------------------------------------------------
def test_one_point_empty_inputs_and_numpy_numbers(image_run, sphere_run):
    img = load_run(image_run[0], device="cpu")
    assert img.query([5.5, 5.5]).shape == (3,) and img.query(np.zeros((0, 2))).shape == (0, 3)
    shape = load_run(sphere_run, device="cpu")
    assert shape.query([5.0, -1.0, 3.0]).shape == () and shape.query(torch.zeros(3)).shape == ()
    assert img.render(np.float32(0.5)).shape == (8, 12, 3)
    assert len(shape.mesh(res=np.int64(16), level=np.float32(0.0)).faces) > 0
    for bad in (True, "64", 3.5):
        with pytest.raises(UserError, match="res"):
            shape.mesh(res=bad)
    with pytest.raises(UserError, match="masked"):
        shape.query(np.ma.masked_array(np.zeros((2, 3)), mask=[[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(UserError, match="real numbers"):
        shape.query(np.zeros((2, 3), dtype=bool))


def test_sdf_queries_far_from_the_origin_keep_their_precision(sphere_run):
    """The same field with its source moved 500000 units along x: float32 points snapped to a 1/32 lattice there
    (distances in steps of 0.03); the points are moved into the unit cube in float64."""
    from rwf_render.mesh import Normalization

    run = load_run(sphere_run, device="cpu")
    near = np.array([5.0, -1.0, 3.0]) + np.linspace(0, 0.19, 20)[:, None] * [1.0, 0.0, 0.0] + [2.0, 0, 0]
    here = run.query(near)
    norm = run.normalization
    run.normalization = Normalization((norm.center[0] + 5e5, *norm.center[1:]), norm.scale)
    far = run.query(near + [5e5, 0.0, 0.0])
    np.testing.assert_allclose(far, here, atol=1e-5)
    assert np.all(np.diff(here) > 0)  # outward along the radius: distances grow at every step


def test_nerf_render_bounds_win_over_the_runs_and_the_view_gets_its_appearance(still_life_run, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = load_run(still_life_run, device="cpu")
    cfg = run.model.render_cfg
    before = (cfg.near, cfg.far, cfg.far_bounds)
    cfg.near, cfg.far_bounds = 0.01, False  # as a fit with --near and --no-far-bounds
    try:
        assert run.render(camera=3, near=100.0, far=200.0)["opacity"].max() < 1e-3  # beyond the scene: empty
        assert run.render(camera=3, far=0.5)["opacity"].max() < run.render(camera=3)["opacity"].max()
        assert (cfg.near, cfg.far_bounds) == (0.01, False)  # the run's own settings are back
        with pytest.raises(UserError, match="must exceed near"):
            run.render(camera=3, far=0.005)
    finally:
        cfg.near, cfg.far, cfg.far_bounds = before
    seen = []
    real = run.model.render_camera
    monkeypatch.setattr(run.model, "render_camera", lambda cam, **kw: seen.append(kw) or real(cam, **kw))
    run.render(camera=np.int64(5))
    assert seen[-1].get("image_idx") == 5  # its own appearance code, as rwf render --split train
    run.render(np.eye(4)[:3] + [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3.0]], 8, 8, fov=np.float32(40))
    assert "image_idx" not in seen[-1]
    for kwargs, message in [({"camera": True}, "whole number"),
                            ({"c2w": np.zeros((4, 4)), "width": 8, "height": 8, "fov": 30}, "last row"),
                            ({"c2w": 2 * np.eye(4)[:3], "width": 8, "height": 8, "fov": 30}, "not a rotation"),
                            ({"c2w": "eye", "width": 8, "height": 8, "fov": 30}, "camera-to-world")]:
        with pytest.raises(UserError, match=message):
            run.render(**kwargs)


def test_loading_and_querying_leave_the_notebooks_float_settings(image_run):
    """The loaders flush denormal floats to zero for speed (a process-wide switch): a notebook's own arithmetic
    changed after load_run."""
    torch.set_flush_denormal(False)
    try:
        run = load_run(image_run[0], device="cpu")
        run.query([[1.5, 1.5]])
        run.render()
        assert float(torch.tensor([1e-40]) * 1.0) > 0
    finally:
        torch.set_flush_denormal(True)


def test_sdf_normals_point_away_from_the_sphere_centre(sphere_run):
    run = load_run(sphere_run, device="cpu")
    rng = np.random.default_rng(1)
    d = rng.normal(size=(200, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    n = run.normals(np.array([5.0, -1.0, 3.0]) + 2.0 * d)  # on the surface, in the mesh's units
    assert n.shape == (200, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    cos = (n * d).sum(1)  # a 300-step fit: measured median 0.92 (a flipped sign or swapped axes: about -1 or 0)
    assert np.median(cos) > 0.85 and (cos > 0).mean() > 0.95


def test_nerf_rays_render_as_the_camera_does_and_other_splits_have_cameras(still_life_run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = load_run(still_life_run, device="cpu")
    from rwf_render.cameras import pixel_rays

    cam = run.cameras[2]
    view = run.render(cam.c2w[0], int(cam.width[0]), int(cam.height[0]), fx=float(cam.fx[0]), fy=float(cam.fy[0]),
                      cx=float(cam.cx[0]), cy=float(cam.cy[0]))
    o, d = pixel_rays(cam)
    rays = run.render_rays(o.reshape(-1, 3).numpy(), 3.0 * d.reshape(-1, 3).numpy())  # directions normalized
    np.testing.assert_allclose(rays["rgb"].reshape(view["rgb"].shape), view["rgb"], atol=1e-4)
    np.testing.assert_allclose(rays["depth"].reshape(view["depth"].shape), view["depth"], atol=1e-4)
    test = run.cameras_of("test")
    assert len(test) == 2 and int(test.width[0]) == 32
    assert len(run.cameras_of("train")) == 24
    with pytest.raises(UserError, match="split"):
        run.cameras_of("all")
    with pytest.raises(UserError, match="zero vector"):
        run.render_rays(np.zeros((1, 3)), np.zeros((1, 3)))


# -- a second API review ----------------------------------------------------------------------------------------------
def test_normals_work_inside_a_notebooks_inference_mode(sphere_run):
    """normals() raised torch's "does not require grad" inside torch.inference_mode(), and a run loaded inside it
    had inference-tensor parameters that autograd refused afterwards."""
    outside = load_run(sphere_run, device="cpu")
    p = np.array([[7.0, -1.0, 3.0], [5.0, 1.0, 3.0]])
    want = outside.normals(p)
    with torch.inference_mode():
        inside = load_run(sphere_run, device="cpu")
        np.testing.assert_allclose(outside.normals(p), want, atol=1e-6)
        np.testing.assert_allclose(inside.normals(p), want, atol=1e-6)
    np.testing.assert_allclose(inside.normals(p), want, atol=1e-6)


def test_read_only_and_overflowing_inputs(image_run, sphere_run):
    img, shape = load_run(image_run[0], device="cpu"), load_run(sphere_run, device="cpu")
    grid = np.broadcast_to(np.array([5.5, 5.5], np.float32), (4, 2))  # read-only: torch warned about it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(img.query(grid), np.repeat(img.query([[5.5, 5.5]]), 4, axis=0), atol=1e-6)
    with pytest.raises(UserError, match="float32's range"):  # the float64 points overflowed float32: NaN came back
        shape.query([[1e300, 0.0, 0.0]])
    with pytest.raises(UserError, match="float32's range"):  # said to hold NaN or infinite values
        img.query(np.array([[1e39, 0.0]]))
    with pytest.raises(UserError, match="NaN or infinite"):
        img.query(np.array([[np.inf, 0.0]]))


def test_checkpoint_step_and_a_run_without_checkpoint(image_run, sphere_run, still_life_run, tmp_path):
    import shutil

    for run, steps in ((image_run[0], 300), (sphere_run, 300), (still_life_run, 1000)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = load_run(run, device="cpu")
        assert loaded.step == steps == loaded.metrics["steps"] and loaded.seconds > 0
    young = tmp_path / "young"
    young.mkdir()
    shutil.copy(image_run[0] / "config.json", young / "config.json")  # a fit that has not saved yet
    with pytest.raises(UserError, match="no checkpoint yet"):
        load_run(young, device="cpu")


def test_nerf_refuses_zero_directions_and_fy_beside_fov(still_life_run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = load_run(still_life_run, device="cpu")
    with pytest.raises(UserError, match="zero vector"):  # query gave SH colours of a zero direction
        run.query(np.zeros((2, 3)), np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(UserError, match="fy goes with fx"):  # fy silently changed the vertical fov asked for
        run.render(np.eye(4), 8, 6, fov=40, fy=5.0)


def test_nerf_directions_of_any_scale_and_points_too_far_for_float32(still_life_run):
    """A direction of length 1e20 overflowed float32's norm (normalized to a zero vector: another colour), one of
    1e-25 underflowed (refused as a zero vector); points at 1e38 gave NaN colours and densities."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = load_run(still_life_run, device="cpu")
    p = np.array([[0.1, 0.2, 0.3]] * 3)
    unit = np.array([[0.6, 0.0, 0.8]])
    rgb, _ = run.query(p, np.concatenate([unit, unit * 1e20, unit * 1e-25]))
    np.testing.assert_allclose(rgb[1:], rgb[:1].repeat(2, axis=0), atol=1e-6)
    with pytest.raises(UserError, match="no finite value"):
        run.query(np.array([[1e38, 0.0, 0.0]]))


def test_a_finished_run_whose_checkpoint_is_gone_is_not_called_young(image_run, tmp_path):
    import shutil

    lost = tmp_path / "lost"
    shutil.copytree(image_run[0], lost)
    (lost / "checkpoint.pt").unlink()
    with pytest.raises(UserError, match="missing, though the fit finished"):
        load_run(lost, device="cpu")
