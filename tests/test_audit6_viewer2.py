"""Audit of the viewer (session 17, second part): an SDF run fitted to an oriented point cloud shows its source as
points (it crashed reading a mesh's ``.vertices``), and the NeRF view starts outside training camera 0's frustum,
so its thumbnail does not cover the render."""

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from rwf_render.cameras import Cameras, look_at
from rwf_render.point_cloud import PointCloud
from viewer.camera import ViewCamera
from viewer.sources import open_run, render_view

from test_audit6_viewer import NodeScene  # noqa: E402  (tests/ is on sys.path under pytest)

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")


# -- 1. a point-cloud SDF run -----------------------------------------------------------------------------------------
def sphere_cloud_ply(path, n, center, radius, seed=0):
    """An ASCII PLY of n points on a sphere with their outward normals, no faces; returns the points (n, 3)."""
    d = np.random.default_rng(seed).standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    points = center + radius * d
    header = ["ply", "format ascii 1.0", f"element vertex {n}",
              *[f"property float {c}" for c in ("x", "y", "z", "nx", "ny", "nz")], "end_header"]
    rows = [" ".join(f"{v:.7g}" for v in row) for row in np.hstack([points, d])]
    path.write_text("\n".join(header + rows) + "\n")
    return np.asarray(points, np.float32).astype(np.float64)  # as the file holds them


@pytest.fixture(scope="module")
def cloud_run(tmp_path_factory):
    """A 20-step fit of a sphere cloud in millimetres (radius 400 at (2000, 0, 500)): shown at 1:100."""
    tmp = tmp_path_factory.mktemp("cloud")
    points = sphere_cloud_ply(tmp / "cloud.ply", 2000, np.array([2000.0, 0.0, 500.0]), 400.0)
    run = tmp / "run"
    done = subprocess.run([sys.executable, "-m", "rwf_render", "fit", "sdf", str(tmp / "cloud.ply"), "--steps", "20",
                           "--mesh-res", "32", "--preview-res", "32", "--eval-points", "4096", "--metric-points",
                           "2000", "--pool", "8192", "--batch", "1024", "--quiet", "--out", str(run)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return run, points


def test_point_cloud_source_is_shown_as_its_points(cloud_run):
    """The scene holds the cloud's points in viewer units (view_scale 0.01 here) coloured by their normals, next to
    the extracted mesh and the slice; a frame from the initial view renders the field."""
    run, points = cloud_run
    source = open_run(run, CPU)
    assert isinstance(source.source_mesh, PointCloud)
    assert source.view_scale == pytest.approx(0.01)
    scene = NodeScene()
    source.setup_scene(types.SimpleNamespace(scene=scene))
    assert {"/sdf/source", "/sdf/extracted", "/sdf/slice", "/sdf/unit_cube"} <= set(scene.nodes)
    (shown, colors), kw = scene.nodes["/sdf/source"]
    assert shown.dtype == np.float32 and shown.shape == (2000, 3)
    np.testing.assert_allclose(shown, points * 0.01, rtol=1e-6)  # every point, in file order, scaled
    assert kw.get("precision") == "float32"  # float16 steps are 0.016 at 20 viewer units: more than the spacing
    radial = (points - [2000.0, 0.0, 500.0]) / 400.0
    np.testing.assert_allclose(colors / 255.0, 0.5 + 0.5 * radial, atol=1 / 255)
    assert 0 < kw["point_size"] < 0.1 * 800 * 0.01  # a dot, not a blob: under a tenth of the sphere, viewer units
    assert kw.get("visible") is False  # on demand, like a source mesh

    eye, target = source.initial_view()
    view = ViewCamera.from_c2w(look_at(torch.tensor(eye)[None], torch.tensor(target), up=source.up)[0], 0.6, 1.0)
    for mode in ("shaded", "depth"):
        frame = render_view(source, view, 24, mode)
        assert frame.rgb.shape == (24, 24, 3) and np.isfinite(frame.rgb).all()
    assert source.slice_image("z", 0.0, "RdBu", res=8).shape == (8, 8, 3)


def test_point_cloud_run_opens_in_the_viewer_app(cloud_run):
    """viser itself takes the node and the panels: the point cloud node holds the scaled points, the GUI builds."""
    from viewer.app import ViewerApp

    run, points = cloud_run
    app = ViewerApp(open_run(run, CPU), port=0)
    app.start()
    try:
        handle = app.server.scene.get_handle_by_name("/sdf/source")
        assert handle is not None
        np.testing.assert_allclose(np.asarray(handle.points, np.float64), points * 0.01, rtol=1e-6)
        assert app.server.scene.get_handle_by_name("/sdf/extracted") is not None
    finally:
        app.stop()


def test_a_large_cloud_is_subsampled_without_repeats():
    """Over MAX_CLOUD_POINTS: that many distinct points of the cloud, the same on every call, in file order."""
    from viewer.sdf_source import shown_cloud

    rng = np.random.default_rng(1)
    points, normals = rng.standard_normal((5000, 3)), rng.standard_normal((5000, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    shown, colors = shown_cloud(points, normals, n_max=1000)
    assert shown.shape == (1000, 3) and colors.shape == (1000, 3) and colors.dtype == np.uint8
    rows = {tuple(p) for p in points}
    assert all(tuple(p) in rows for p in shown) and len({tuple(p) for p in shown}) == 1000
    order = [np.flatnonzero((points == p).all(1))[0] for p in shown]
    assert order == sorted(order)
    np.testing.assert_array_equal(shown, shown_cloud(points, normals, n_max=1000)[0])
    small, _ = shown_cloud(points[:500], normals[:500], n_max=1000)
    np.testing.assert_array_equal(small, points[:500])


# -- 2. the first NeRF view ---------------------------------------------------------------------------------------
class FrustumScene(NodeScene):
    """NodeScene that also takes frustums (whose clicks it ignores)."""

    def add_camera_frustum(self, name, **kw):
        handle = self._add(name, **kw)
        handle.on_click = lambda callback: None
        return handle


class Box(torch.nn.Module):
    def __init__(self, half=1.0):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([-half, -half, -half, half, half, half]))


def ring_cameras(n=24):
    """A 360-degree capture as the Blender scenes: n cameras on a ring of radius 4 at height 1.5 around the box."""
    a = torch.arange(n) * (2 * torch.pi / n) + 1.6
    eyes = torch.stack([4 * a.cos(), 4 * a.sin(), torch.full_like(a, 1.5)], -1)
    return Cameras.create(look_at(eyes, torch.zeros(3), up=(0.0, 0.0, 1.0)), fx=55.0, fy=55.0, width=80, height=80)


def grid_cameras(spacing):
    """A forward-facing capture as LLFF's: a 5 x 5 grid of parallel cameras on the plane z = 3 looking down -z (y
    up), camera 0 in the middle, so neighbours sit above it, where the view backs off to."""
    cells = [(0, 0)] + [(i, j) for i in range(-2, 3) for j in range(-2, 3) if (i, j) != (0, 0)]
    eyes = torch.tensor([[i * spacing, j * spacing, 3.0] for i, j in cells])
    c2w = look_at(eyes, eyes - torch.tensor([0.0, 0.0, 1.0]), up=(0.0, 1.0, 0.0))
    return Cameras.create(c2w, fx=50.0, fy=50.0, width=64, height=48)


def frustum_image(kw) -> np.ndarray:
    """Corners (4, 3) of the image of a frustum drawn by viser 1.1.1 with these add_camera_frustum arguments: its
    client (CameraFrustumVariants.tsx) scales the half-extents (tan(fov/2) aspect, tan(fov/2), 1) to the volume of
    a unit one, times ``scale``; the image fills the far end, +z forward (OpenCV)."""
    from rwf_render.camera_path import matrix_from_quat

    y = np.tan(kw["fov"] / 2)
    x = y * kw["aspect"]
    v = np.cbrt(x * y / 3)
    x, y, z = (c * kw["scale"] / v for c in (x, y, 1.0))
    local = np.array([[-x, -y, z], [x, -y, z], [x, y, z], [-x, y, z]])
    return local @ matrix_from_quat(kw["wxyz"]).T + np.asarray(kw["position"])


def in_view(points, eye, target, up, fov=np.radians(50.0)):
    """(x, y, z) of points (..., 3) seen from a browser at eye looking at target: x, y in units of tan(fov/2) (the
    view's top edge at y = 1), z the depth."""
    c2w = look_at(torch.tensor(eye)[None], torch.tensor(target), up=tuple(up))[0].double().numpy()
    d = np.asarray(points) - eye
    z = -d @ c2w[:, 2]
    return d @ c2w[:, 0] / z / np.tan(fov / 2), d @ c2w[:, 1] / z / np.tan(fov / 2), z


@pytest.mark.parametrize("cameras", [ring_cameras(), grid_cameras(0.5), grid_cameras(0.05)],
                         ids=["ring", "grid", "dense-grid"])
def test_first_view_is_outside_camera_0s_frustum(cameras):
    """The first view looks at what camera 0 looks at, from a little behind and above it: camera 0's frustum image
    (the training photo) is below the middle half of the view instead of filling it, and the frustums' images
    together cover at most 5 % of that middle square (bounding boxes), so the render is what the user sees."""
    from viewer.nerf_source import NeRFSource

    source = NeRFSource(Box(), CPU, None, cameras=cameras, thumbnail=lambda i: None)
    scene = FrustumScene()
    source.setup_scene(types.SimpleNamespace(scene=scene))
    start, target = (np.asarray(v, np.float64) for v in source.initial_view())
    frustums = [kw for name, (_, kw) in sorted(scene.nodes.items()) if name.startswith("/nerf/cameras/")]
    assert len(frustums) == len(cameras)
    covered = 0.0
    for k, kw in enumerate(frustums):
        x, y, z = in_view(frustum_image(kw), start, target, source.up)
        assert (z > 0).all() or (z <= 0).all()  # no image reaching behind the browser
        if (z <= 0).all():
            continue
        w = np.clip(np.minimum(x.max(), 0.5) - np.maximum(x.min(), -0.5), 0, None)
        h = np.clip(np.minimum(y.max(), 0.5) - np.maximum(y.min(), -0.5), 0, None)
        covered += w * h
        if k == 0:
            assert y.max() < -0.5 and (z > 0).all(), (x, y)  # camera 0's photo: below the middle, in sight
    assert covered <= 0.05

    c2w = cameras.c2w[0].double().numpy()
    eye, forward = c2w[:, 3], -c2w[:, 2]
    dist = np.linalg.norm(eye - source.center)
    np.testing.assert_allclose(target, eye + dist * forward, atol=1e-6)  # camera 0's look point: same orbit
    assert 0 < np.linalg.norm(start - eye) <= 0.5 * dist  # a little off camera 0 ...
    assert np.dot(start - eye, forward) < 0 < np.dot(start - eye, source.up)  # ... behind and above it
    axis = (target - start) / np.linalg.norm(target - start)
    assert np.degrees(np.arccos(np.clip(axis @ forward, -1, 1))) < 20  # much as camera 0 sees the scene


def test_first_view_past_a_crowded_grid_keeps_camera_0_clear():
    """Neighbours everywhere (a 0.3 grid): no step clears the middle; the view taken covers least of it, and never
    with camera 0's own photo."""
    from viewer.nerf_source import NeRFSource

    cameras = grid_cameras(0.3)
    source = NeRFSource(Box(), CPU, None, cameras=cameras, thumbnail=lambda i: None)
    scene = FrustumScene()
    source.setup_scene(types.SimpleNamespace(scene=scene))
    start, target = source.initial_view()
    x, y, z = in_view(frustum_image(scene.nodes["/nerf/cameras/0000"][1]), start, target, source.up)
    assert (z > 0).all() and y.max() < -0.5
