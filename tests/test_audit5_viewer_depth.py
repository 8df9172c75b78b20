"""Audit of the NeRF viewer: the depth it gives viser to composite meshes and frustums with the rendered frame is
where the rays stop (depth / opacity, as the point-cloud export places its points), and ``rwf view RUN`` of a fit
with ``--optimize-cameras`` moves the training frustums with the corrections of a reloaded checkpoint.

``render_camera`` returns ``depth = sum_i w_i t_i`` and ``opacity = sum_i w_i``; a stub whose renders see a plane
with opacity 0.8 (a closed form: no fit) tells whether the composited depth is the plane's z-depth or a fifth short.
"""

import shutil
import time
import types

import numpy as np
import pytest
import torch

from rwf_render.cameras import Cameras, look_at, pixel_rays
from viewer.camera import frustum_params
from viewer.nerf_source import NeRFSource
from viewer.sources import FAR, render_cameras

from test_audit5_viewer import assert_drawn_at  # noqa: E402  (tests/ is on sys.path under pytest)
from test_viewer_live import Watching

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")
PLANE_Z = 0.25  # the surface: the plane z = 0.25
W, H = 12, 10


class PlaneScene(torch.nn.Module):
    """A loaded run as the viewer reads it, without training cameras; what PlaneAPI renders of it."""

    def __init__(self, opacity=0.8, edge=0.3):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([-2.0, -2.0, -2.0, 2.0, 2.0, 2.0]))
        self.train_cameras, self.opacity, self.edge = None, opacity, edge


class PlaneAPI:
    """The NeRF pipeline's two functions for a model whose renders see the plane z = PLANE_Z with opacity
    ``model.opacity`` on the left half of the image and ``model.edge`` on the right (depth = opacity x distance
    along the unit ray, as a compositor gives for weights bunched at the plane)."""

    @staticmethod
    def load_scene_model(run, device):
        return PlaneScene()

    @staticmethod
    def render_camera(model, cam, max_samples=None, chunk=None):
        o, d = pixel_rays(cam)  # (h, W, 3) unit directions; a strip of the frame: its rows only
        t = (PLANE_Z - o[..., 2]) / d[..., 2]  # (h, W) distance to the plane
        opacity = torch.full_like(t, model.opacity)
        opacity[:, W // 2:] = model.edge
        return {"rgb": torch.full((*t.shape, 3), 0.5), "depth": opacity * t, "opacity": opacity}


def oblique_camera() -> Cameras:
    c2w = look_at(torch.tensor([[0.4, -0.3, 2.0]]), torch.tensor([0.1, 0.0, PLANE_Z]), up=(0.0, 1.0, 0.0))
    return Cameras.create(c2w, fx=11.0, fy=10.0, cx=W / 2 - 0.3, cy=H / 2 + 0.2, width=W, height=H,
                          dtype=torch.float32)


def plane_z_depth(cams: Cameras) -> np.ndarray:
    """(H, W) the plane's z-depth at each pixel: its hit point's distance along the camera's viewing axis."""
    o, d = pixel_rays(cams)
    hit = o + d * ((PLANE_Z - o[..., 2]) / d[..., 2])[..., None]
    forward = -cams.c2w[0, :, 2]  # OpenGL: the camera looks down its -z
    return ((hit - o) @ forward).numpy()


def plane_source(opacity: float = 0.8) -> NeRFSource:
    source = NeRFSource.from_run(None, {"kind": "nerf"}, CPU, api=PlaneAPI)
    source.model.opacity = opacity
    return source


def test_partly_opaque_pixels_are_composited_at_the_surface():
    """Opacity 0.8: the depth viser gets is the plane's z-depth, not 0.8 of it; opacity 0.3 is background, at FAR
    (behind every scene node; viser would read 0 as at the camera). Rendered in strips of three rows, as frames are."""
    cams = oblique_camera()
    frame = render_cameras(plane_source(), cams, "rgb", strip_pixels=3 * W)
    want = plane_z_depth(cams)
    assert want.min() > 1.0  # a fifth short would be off by more than 0.2
    np.testing.assert_allclose(frame.depth[:, : W // 2], want[:, : W // 2], rtol=1e-5)
    assert (frame.depth[:, W // 2:] == FAR).all()


def test_opacity_does_not_move_the_depth_shown():
    """The same plane at opacity 0.8 and 1: the same composited depth and the same colours in the depth mode."""
    cams = oblique_camera()
    faint, opaque = plane_source(0.8), plane_source(1.0)
    for mode in ("rgb", "depth"):
        a, b = render_cameras(faint, cams, mode), render_cameras(opaque, cams, mode)
        np.testing.assert_allclose(a.depth[:, : W // 2], b.depth[:, : W // 2], rtol=1e-6)
        if mode == "depth":
            np.testing.assert_allclose(a.rgb[:, : W // 2], b.rgb[:, : W // 2], atol=1e-6)
            assert (a.rgb[:, W // 2:] == 1.0).all()  # background: white
            assert np.ptp(a.rgb[:, : W // 2].reshape(-1, 3), axis=0).max() > 0.01  # a colour ramp, not one colour


# -- "reload checkpoint" of rwf view RUN moves the frustums with the reloaded corrections ------------------------------
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two 2-step fits of a 6-camera scene: with --optimize-cameras and without."""
    from rwf_render import cli
    from rwf_render.errors import UserError
    from viewer.nerf_source import nerf_api

    try:
        nerf_api()
    except UserError as e:
        pytest.skip(f"NeRF pipeline not available ({e})")
    from data_tools.cli import main as data_main

    root = tmp_path_factory.mktemp("viewer_depth")
    data = root / "data"
    assert data_main(["data", "synth", "demo", str(data), "--res", "24", "--views", "6", "--val", "1", "--test",
                      "1"]) == 0
    tiny = ["--steps", "2", "--grid-resolution", "16", "--width", "32", "--features", "16", "--quiet", "--device",
            "cpu"]
    runs = {"cameras": ["--optimize-cameras", "--camera-lr", "0.05"], "plain": []}
    for name, extra in runs.items():
        assert cli.main(["fit", "nerf", str(data), "--out", str(root / name), *tiny, *extra]) == 0
    return {name: root / name for name in runs}


def edit_checkpoint(run, edit) -> None:
    """Rewrite RUN/checkpoint.pt with ``edit(model_state)`` applied, as a fit running elsewhere would."""
    from rwf_render.rundir import CHECKPOINT, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run / CHECKPOINT)
    edit(ckpt["model"])
    save_checkpoint(run / CHECKPOINT, ckpt)


def correct(rows: dict):
    def edit(state):
        for i, v in rows.items():
            state["pose_correction.delta"][i] = torch.tensor(v)
    return edit


def shown_after_reload(run, edit) -> tuple[list, list]:
    """``rwf view RUN`` (a served page, someone watching); the checkpoint changes on disk and the "reload
    checkpoint" button is pressed. Returns the frustums' poses before and after, once the panel thread has
    refreshed them (as dicts with ``position`` and ``wxyz``)."""
    from viewer import panels
    from viewer.app import ViewerApp
    from viewer.sources import open_run

    app = ViewerApp(open_run(run, CPU), port=0)
    refreshed, refresh = [], app.source.refresh_gui

    def refresh_gui():  # the panel thread's, after it loaded a new model: note which
        refresh()
        refreshed.append(app.source.version)

    def poses():
        return [{"position": np.array(f.position), "wxyz": np.array(f.wxyz)} for f in app.source._frustums]  # copies

    app.source.refresh_gui = refresh_gui
    app.start()
    try:
        app.renderers[99] = Watching()  # someone watches: the panel thread refreshes after a new model
        before = poses()
        version = app.source.version
        edit_checkpoint(run, edit)
        panels.reload_run(app)
        deadline = time.monotonic() + 30.0
        while not any(v > version for v in refreshed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(v > version for v in refreshed), "the panel thread never loaded the reloaded checkpoint"
        return before, poses()
    finally:
        app.stop()


def test_reload_moves_the_frustums_where_the_new_checkpoint_puts_the_cameras(tiny_runs, tmp_path):
    from rwf_render.nerf import load_scene_model

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["cameras"], run)
    edit_checkpoint(run, correct({1: [0.0, 0.2, 0.0, 0.1, -0.3, 0.0]}))  # the run's corrections are not zero
    at_load = load_scene_model(run, CPU)
    before, after = shown_after_reload(run, correct({2: [0.1, 0.0, -0.1, 0.0, 0.0, 0.4]}))  # the fit moved camera 2
    reloaded = load_scene_model(run, CPU).train_cameras
    assert len(before) == len(after) == len(reloaded) == 6
    for i in range(6):
        assert_drawn_at(types.SimpleNamespace(**before[i]), frustum_params(at_load.train_cameras, i))  # once
        assert_drawn_at(types.SimpleNamespace(**after[i]), frustum_params(reloaded, i))
    dataset = at_load.train_dataset_cameras
    assert np.linalg.norm(before[1]["position"] - frustum_params(dataset, 1)["position"]) > 0.3  # corrected at load
    assert np.linalg.norm(after[2]["position"] - before[2]["position"]) > 0.3  # and moved by the reload


def test_reload_leaves_the_frustums_of_a_run_without_camera_optimization(tiny_runs, tmp_path):
    from rwf_render.nerf import load_scene_model

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    model = load_scene_model(run, CPU)
    assert model.pose_correction is None
    key = next(k for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() > 1)

    def edit(state):  # the fit went on: the field changed
        state[key] = state[key] + 0.1

    before, after = shown_after_reload(run, edit)
    for i in range(6):
        for poses in (before, after):
            assert_drawn_at(types.SimpleNamespace(**poses[i]), frustum_params(model.train_cameras, i))
