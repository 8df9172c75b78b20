"""Audit of the viewer (session 17): a scene larger than viser's depth range keeps its nodes visible and composited,
"reload checkpoint" moves the training cameras the view starts from along with their frustums, and what the audit
of ``rwf view`` / ``rwf fit --view`` found.

viser 1.1.1 sends the composited depth as 24-bit fixed point, 1e-5 per step: the browser reads any depth beyond
(2^24 - 1) / 1e5 = 167.77 as 167.77, so a scene node farther than that from the camera was behind the whole frame.
``viser_encoded`` below is that encoding (``SceneApi.set_background_image``) and its decoding (the client's
``readDepth``), so the tests check what the browser compares with its nodes' depths.
"""

import shutil
import threading
import time
import types

import numpy as np
import pytest
import torch

from rwf_render.cameras import Cameras, look_at, pixel_rays
from viewer.camera import ViewCamera, frustum_params, matrix_from_quat
from viewer.nerf_source import NeRFSource
from viewer.render_loop import ClientRenderer, DutyCycle, RenderSettings
from viewer.sources import FAR, render_view

from test_audit5_viewer import FakeScene, assert_drawn_at  # noqa: E402  (tests/ is on sys.path under pytest)
from test_audit5_viewer_depth import correct, edit_checkpoint, tiny_runs  # noqa: F401  (a fixture)
from test_viewer_live import Watching

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")


def viser_encoded(depth: np.ndarray) -> np.ndarray:
    """What the browser reads of a depth given to viser 1.1.1's set_background_image: 24-bit fixed point."""
    return np.clip(np.asarray(depth, np.float64) * 100_000, 0, 2**24 - 1).astype(np.uint32) / 100_000


# -- 1. a scene larger than viser's depth range -----------------------------------------------------------------------
class GroundScene(torch.nn.Module):
    """A real capture in its own units: a box of half-size ``half``, six training cameras on a ring of radius
    ``ring`` at height ``ring / 2``, looking at the origin."""

    def __init__(self, half: float, ring: float):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([-half, -half, -half, half, half, half]))
        angles = torch.arange(6) * (2 * torch.pi / 6)
        eyes = torch.stack([ring * angles.cos(), ring * angles.sin(), torch.full_like(angles, ring / 2)], -1)
        self.train_cameras = Cameras.create(look_at(eyes, torch.zeros(3), up=(0.0, 0.0, 1.0)), fx=40.0, fy=40.0,
                                            width=48, height=40)
        self.train_image_paths = []


class GroundAPI:
    """Renders the ground z = 0 inside the box, opaque on the left half of each frame and empty on the right."""

    half, ring = 1.0, 3.0

    @classmethod
    def load_scene_model(cls, run, device):
        return GroundScene(cls.half, cls.ring)

    @staticmethod
    def render_camera(model, cam, max_samples=None, chunk=None):
        o, d = pixel_rays(cam)  # (h, w, 3) unit directions
        t = -o[..., 2] / d[..., 2]  # distance to z = 0
        hit = o + t[..., None] * d
        opacity = ((t > 0) & (hit[..., :2].abs() <= model.aabb[3]).all(-1)).float()
        opacity[:, t.shape[1] // 2:] = 0.0
        return {"rgb": torch.full((*t.shape, 3), 0.5), "depth": opacity * t, "opacity": opacity}


def ground_source(half: float, ring: float) -> NeRFSource:
    api = type("API", (GroundAPI,), {"half": half, "ring": ring})
    source = NeRFSource.from_run(None, {"kind": "nerf"}, CPU, api=api)
    source.setup_scene(types.SimpleNamespace(scene=FakeScene()))
    return source


class Recorder:
    """A viser client for ClientRenderer: its camera where a frustum is drawn (what a click does), and the
    background images it is sent."""

    def __init__(self, frustum):
        self.client_id = 0
        self.camera = types.SimpleNamespace(position=np.asarray(frustum.position), wxyz=np.asarray(frustum.wxyz),
                                            fov=frustum.fov, aspect=frustum.aspect)
        self.sent = []
        self.scene = types.SimpleNamespace(set_background_image=lambda img, **kw: self.sent.append(kw["depth"]))


def view_z(camera, points: np.ndarray) -> np.ndarray:
    """Z-depth (N,) of points (N, 3) in viewer units as the browser's camera sees them (OpenCV: looks along +z)."""
    forward = matrix_from_quat(camera.wxyz)[:, 2]
    return (points - np.asarray(camera.position)) @ forward


@pytest.mark.parametrize("half, ring", [(300.0, 400.0), (3.0, 4.0)])
def test_nodes_beyond_visers_depth_range_stay_visible_and_composited(half, ring):
    """A browser at training camera 0 sees the ground (opaque on the left, nothing on the right) and the other
    frustums, the farthest about 2 x ring away. As the browser decodes it, the depth sent puts every other frustum
    in front of the empty pixels, and the opaque pixels at the ground's z-depth in viewer units, so a node is
    hidden exactly when the ground is in front of it. A unit scene is shown as before (scale 1)."""
    source = ground_source(half, ring)
    s = source.view_scale
    assert s == 1.0 if ring < 20 else s < 1.0
    frustums = source._frustums
    client = Recorder(frustums[0])
    renderer = ClientRenderer(client, source, RenderSettings("rgb"), DutyCycle())
    view = ViewCamera.from_client(client.camera, s)
    np.testing.assert_allclose(view.position, source.cameras.c2w[0, :3, 3].numpy(), rtol=1e-5)  # scene units
    frame = render_view(source, view, 48)
    renderer._send(frame)
    shown = viser_encoded(client.sent[-1])
    h, w = shown.shape
    others = np.stack([f.position for f in frustums[1:]])
    node_z = view_z(client.camera, others)
    assert node_z.max() > 1.5 * ring * s  # the far side of the ring
    cams = view.cameras(w, h)
    o, d = pixel_rays(cams)
    t = -o[..., 2] / d[..., 2]
    inside = ((t > 0) & ((o + t[..., None] * d)[..., :2].abs() <= half).all(-1)).numpy()
    inside[:, w // 2:] = False
    assert inside.mean() > 0.3
    ground = (t[..., None] * d) @ -cams.c2w[0, :, 2]  # z-depth (OpenGL: the camera looks down -z)
    np.testing.assert_allclose(shown[inside], ground.numpy()[inside] * s, rtol=1e-5, atol=2e-5)
    assert (shown[~inside] > node_z.max()).all()  # nothing there: behind every node
    # the opaque ground hides a node behind it and not one in front of it, where the browser compares them
    row, col = h // 2, w // 4
    hit = (o[row, col] + d[row, col] * (-o[row, col, 2] / d[row, col, 2])).numpy() * s
    before, behind = view_z(client.camera, np.stack([hit * 0.9 + client.camera.position * 0.1,
                                                     hit * 1.1 - client.camera.position * 0.1]))
    assert before < shown[row, col] < behind


def test_view_scale_is_a_power_of_ten_and_applies_to_every_node():
    """Box, frustums and their clicks are placed at scene position x view_scale, and the frustums keep their size
    relative to the box."""
    big, small = ground_source(300.0, 400.0), ground_source(3.0, 4.0)
    assert big.view_scale == pytest.approx(0.01) and small.view_scale == 1.0
    for source in (big, small):
        s = source.view_scale
        for i, f in enumerate(source._frustums):
            params = frustum_params(source.cameras, i)
            np.testing.assert_allclose(f.position, params["position"] * s, rtol=1e-6)
            assert f.scale == pytest.approx(0.06 * source.scene_radius() * s)


# -- 2. "reload checkpoint" moves the cameras the view starts from -----------------------------------------------------
def test_reload_moves_the_cameras_the_view_starts_from(tiny_runs, tmp_path):  # noqa: F811
    """After "reload checkpoint" the source's training cameras (initial view, up direction, frustums) are where
    load_scene_model of the new checkpoint puts them, and so is the "reset view" of the page."""
    from rwf_render.nerf import load_scene_model
    from viewer import panels
    from viewer.app import ViewerApp
    from viewer.sources import open_run

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["cameras"], run)
    app = ViewerApp(open_run(run, CPU), port=0)
    app.start()
    try:
        source = app.source
        at_load = source.cameras.c2w.clone()
        start = np.array(app.server.initial_camera.position)
        app.renderers[99] = Watching()  # someone watches: the panel thread refreshes after a new model
        edit_checkpoint(run, correct({0: [0.0, 0.2, 0.0, 0.1, -0.3, 0.2]}))  # the fit moved camera 0
        version = source.version
        panels.reload_run(app)
        deadline = time.monotonic() + 30.0
        while (source.version == version or np.array_equal(app.server.initial_camera.position, start)) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        reloaded = load_scene_model(run, CPU).train_cameras
        torch.testing.assert_close(source.cameras.c2w.double(), reloaded.c2w.double(), atol=1e-5, rtol=0)
        assert (source.cameras.c2w[0] - at_load[0]).abs().max() > 0.1  # it did move
        eye, target = source.initial_view()
        c0 = reloaded.c2w[0].double().numpy()  # the view starts near camera 0, looking at what it looks at
        np.testing.assert_allclose(target, c0[:, 3] - c0[:, 2] * np.linalg.norm(c0[:, 3] - source.center),
                                   atol=1e-5)
        np.testing.assert_allclose(app.server.initial_camera.position, eye * source.view_scale, atol=1e-5)
        np.testing.assert_allclose(app.server.initial_camera.look_at, target * source.view_scale, atol=1e-5)
        up = reloaded.c2w[:, :3, 1].double().mean(0).numpy()
        np.testing.assert_allclose(source.up, up / np.linalg.norm(up), atol=1e-6)
        for i, f in enumerate(source._frustums):
            assert_drawn_at(f, frustum_params(reloaded, i, source.view_scale))
    finally:
        app.stop()


# -- 3. audit ------------------------------------------------------------------------------------------------------
class AppClient:
    """What ViewerApp and its ClientRenderer use of a viser ClientHandle."""

    def __init__(self, view: ViewCamera):
        self.client_id = 7
        self.camera = types.SimpleNamespace(position=view.position, wxyz=view.wxyz, fov=view.fov,
                                            aspect=view.aspect, on_update=self._on_update)
        self.sent = []
        self.scene = types.SimpleNamespace(set_background_image=lambda *a, **kw: self.sent.append(a))

    def _on_update(self, callback):
        self.moved = callback


def test_stop_waits_for_the_frame_of_a_browser_that_left():
    """A browser closes while its frame renders (a NeRF strip takes seconds on a CPU), then the viewer stops: stop()
    waits for that frame too, which is not sent (viser would warn of a closed connection). Before, the thread of a
    browser gone was not waited for, and ``rwf view`` of a NeRF run aborted at exit ("terminate called without an
    active exception", exit 134) with a thread inside torch."""
    import asyncio

    from test_viewer_app import tiny_image_source
    from viewer.app import ViewerApp

    source = tiny_image_source()
    entered, release, render = threading.Event(), threading.Event(), source.render

    def slow_render(cams, mode):
        entered.set()
        release.wait(5.0)
        return render(cams, mode)

    source.render = slow_render
    app = ViewerApp(source, port=0)
    app.start()
    try:
        position, target = source.initial_view()
        client = AppClient(ViewCamera.from_c2w(look_at(torch.tensor(position)[None], torch.tensor(target),
                                                       up=(0.0, 1.0, 0.0))[0], 0.9, 1.5))
        asyncio.run(app._connect(client))
        renderer = app.renderers[client.client_id]
        asyncio.run(client.moved(None))
        assert entered.wait(30.0)
        asyncio.run(app._disconnect(client))
        assert client.client_id not in app.renderers
        threading.Timer(0.5, release.set).start()
    finally:
        app.stop()
    assert not renderer._thread.is_alive()
    assert client.sent == []


def test_reload_of_a_deleted_run_says_so(tmp_path, capsys):
    """The run directory is deleted while the page shows it: "reload checkpoint" says why nothing changed (it did
    nothing, without a word) and the page keeps the model it shows."""
    from rwf_render import cli
    from viewer import panels
    from viewer.app import ViewerApp
    from viewer.sources import open_run

    run = tmp_path / "image"
    assert cli.main(["fit", "image", "--out", str(run), "--size", "16", "--steps", "2", "--width", "16",
                     "--features", "16", "--quiet", "--device", "cpu"]) == 0
    app = ViewerApp(open_run(run, CPU), port=0)
    app.start()
    try:
        shutil.rmtree(run)
        version = app.source.version
        panels.reload_run(app)
        assert "no checkpoint.pt" in app.frame_status.content and str(run) in app.frame_status.content
        assert "checkpoint not reloaded" in capsys.readouterr().err
        assert app.source.version == version and app.source.sync() is False
    finally:
        app.stop()


class NodeScene:
    """The part of viser's scene API that SDFSource.setup_scene uses: the keyword arguments of each node."""

    def __init__(self):
        self.nodes = {}

    def _add(self, name, *args, **kw):
        self.nodes[name] = (args, kw)
        return types.SimpleNamespace(**{"visible": True, **kw})

    add_box = add_image = add_mesh_simple = add_point_cloud = _add


@pytest.mark.parametrize("scale, shown", [(1 / 400, 0.01), (1.0, 1.0), (400.0, 100.0)])
def test_an_sdf_in_millimetres_is_shown_scaled_with_its_slice_and_box(scale, shown):
    """A mesh 800 units across (millimetres) is shown at 1:100, one 0.005 across (metres, of a thing millimetres
    across) at 100:1, clear of viser's near plane: its box and slice in viewer units, and the depth of a frame seen
    from its initial view within viser's range, at the sphere's z-depth x view_scale."""
    from rwf_render.mesh import Normalization
    from viewer.sdf_source import SDFSource
    from test_viewer_sources import Sphere

    center = np.array([2000.0, 0.0, 500.0])
    source = SDFSource(Sphere(0.3), "sdf", Normalization(tuple(center), scale), CPU)
    assert source.view_scale == pytest.approx(shown)
    scene = NodeScene()
    source.setup_scene(types.SimpleNamespace(scene=scene))
    box = scene.nodes["/sdf/unit_cube"][1]
    np.testing.assert_allclose(box["dimensions"], [shown / scale] * 3, rtol=1e-6)
    np.testing.assert_allclose(box["position"], center * shown, rtol=1e-6)
    args, kw = scene.nodes["/sdf/slice"]
    assert args[1] == pytest.approx(shown / scale)  # render width
    np.testing.assert_allclose(kw["position"], center * shown, rtol=1e-6)
    eye, target = source.initial_view()
    assert 0.1 < np.linalg.norm(eye - target) * shown < 100.0  # viser's near plane is 0.01 viewer units
    view = ViewCamera.from_c2w(look_at(torch.tensor(eye)[None], torch.tensor(target), up=(0.0, 1.0, 0.0))[0],
                               0.3, 1.0)
    client = types.SimpleNamespace(sent=[], client_id=0)
    client.scene = types.SimpleNamespace(set_background_image=lambda img, **kw: client.sent.append(kw["depth"]))
    renderer = ClientRenderer(client, source, RenderSettings("shaded"), DutyCycle())
    frame = render_view(source, view, 24)
    renderer._send(frame)
    shown_depth = viser_encoded(client.sent[-1])
    surface = frame.depth < FAR
    assert surface.mean() > 0.1
    np.testing.assert_allclose(shown_depth[surface], frame.depth[surface] * shown, rtol=1e-5, atol=2e-5)
    assert (shown_depth[~surface] >= 167.0).all()
