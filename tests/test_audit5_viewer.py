"""Audit of the live viewer: with ``--optimize-cameras`` the training frustums follow the fit's camera corrections
(and land where ``rwf view RUN`` draws them afterwards; a click jumps to the pose drawn), and a ``--compare`` says
once, after its last run, that the viewer closes with the command."""

import contextlib
import dataclasses
import time
import types

import numpy as np
import pytest
import torch

from rwf_render.camera_opt import PoseCorrection
from rwf_render.trainer import Trainer
from viewer.camera import ViewCamera, frustum_params, matrix_from_quat
from viewer.nerf_source import NeRFSource

from test_viewer_live import Watching, make_trainer  # noqa: E402  (tests/ is on sys.path under pytest)
from test_viewer_sources import StandInAPI

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")


class FakeHandle(types.SimpleNamespace):
    def on_click(self, callback):
        self.click = callback


class FakeScene:
    """The part of viser's scene API that NeRFSource.setup_scene uses; frustum handles keep their pose."""

    def __init__(self):
        self.frustums = []

    def add_box(self, name, **kw):
        return FakeHandle(**kw)

    def add_camera_frustum(self, name, **kw):
        handle = FakeHandle(image=None, **kw)
        self.frustums.append(handle)
        return handle


def assert_drawn_at(handle, params):
    """The frustum's pose is ``params``' (rotations compared as matrices: q and -q are one rotation)."""
    np.testing.assert_allclose(np.asarray(handle.position), params["position"], atol=1e-5)
    np.testing.assert_allclose(matrix_from_quat(handle.wxyz), matrix_from_quat(params["wxyz"]), atol=1e-5)


def corrected_source(follow: bool) -> NeRFSource:
    model = StandInAPI.load_scene_model(None, CPU)
    model.pose_correction = PoseCorrection(len(model.train_cameras))
    with torch.no_grad():
        model.pose_correction.delta[1] = torch.tensor([0.0, 0.2, 0.0, 0.1, -0.3, 0.0])  # a resumed fit's
    return NeRFSource(model, CPU, StandInAPI, cameras=model.train_cameras, thumbnail=lambda i: None,
                      follow_corrections=follow)


def test_live_frustums_follow_the_corrections_and_a_click_jumps_where_drawn():
    source = corrected_source(follow=True)
    dataset = source.cameras
    scene = FakeScene()
    source.setup_scene(types.SimpleNamespace(scene=scene))
    source.close()

    def expected(i):
        c2w = source.model.pose_correction.refined(dataset.c2w)
        return frustum_params(dataclasses.replace(dataset, c2w=c2w), i)

    assert_drawn_at(scene.frustums[1], expected(1))  # drawn corrected from the start (--resume)
    assert_drawn_at(scene.frustums[0], frustum_params(dataset, 0))  # no correction: the dataset pose
    state = {k: v.clone() for k, v in source.model.state_dict().items()}
    state["pose_correction.delta"][2] = torch.tensor([0.1, 0.0, -0.1, 0.0, 0.0, 0.4])  # the fit moved camera 2
    source.offer_state(state)
    source.sync()
    source.refresh_gui()  # the panel thread, after a new snapshot
    for i in range(3):
        assert_drawn_at(scene.frustums[i], expected(i))
    moved = np.linalg.norm(np.asarray(scene.frustums[2].position) - frustum_params(dataset, 2)["position"])
    assert moved > 0.3  # the dataset pose would fail the check above
    camera = types.SimpleNamespace(position=(0.0, 0.0, 5.0), wxyz=(1.0, 0.0, 0.0, 0.0), fov=1.0, aspect=1.25)
    client = types.SimpleNamespace(camera=camera, atomic=contextlib.nullcontext)
    scene.frustums[2].click(types.SimpleNamespace(client=client))
    np.testing.assert_allclose(ViewCamera.from_client(camera).c2w()[:3, 3], expected(2)["position"], atol=1e-5)


def test_a_finished_runs_cameras_are_not_corrected_twice():
    """``rwf view RUN``: load_scene_model's cameras are already refined; the source draws them as they are."""
    source = corrected_source(follow=False)
    scene = FakeScene()
    source.setup_scene(types.SimpleNamespace(scene=scene))
    source.close()
    source.refresh_gui()
    for i in range(3):
        assert_drawn_at(scene.frustums[i], frustum_params(source.cameras, i))


def test_live_frustums_of_a_nerf_fit_end_where_rwf_view_draws_them(tmp_path):
    """``rwf fit nerf --view --optimize-cameras``: after the fit the live page's frustums are at the refined poses,
    those the static viewer draws from the finished run."""
    from rwf_render import cli
    from rwf_render import trainer as trainer_module
    from rwf_render.errors import UserError
    from viewer.live import LiveViewer
    from viewer.nerf_source import nerf_api
    from viewer.sources import open_run

    try:
        nerf_api()
    except UserError as e:
        pytest.skip(f"NeRF pipeline not available ({e})")
    from data_tools.cli import main as data_main

    data, run = tmp_path / "data", tmp_path / "run"
    assert data_main(["data", "synth", "demo", str(data), "--res", "24", "--views", "6", "--val", "1", "--test",
                      "1"]) == 0
    live = LiveViewer("nerf", port=0)

    class Watch:
        def on_start(self, trainer):
            live.app.renderers[99] = Watching()  # someone watches: snapshots are taken and panels refreshed
            live.app.panel_every_s = 0.0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "_PROCESS_CALLBACKS", [live, Watch()])
        try:
            assert cli.main(["fit", "nerf", str(data), "--out", str(run), "--steps", "3", "--grid-resolution", "16",
                             "--width", "32", "--features", "16", "--quiet", "--optimize-cameras",
                             "--camera-lr", "0.05"]) == 0
            static = open_run(run, CPU)
            source = live.app.source
            want = [frustum_params(static.cameras, i) for i in range(6)]  # 6 cameras: one frustum each
            assert len(source._frustums) == 6
            for _ in range(300):  # the panel thread moves them after the last snapshot
                try:
                    for handle, params in zip(source._frustums, want):
                        assert_drawn_at(handle, params)
                    break
                except AssertionError:
                    time.sleep(0.1)
            for handle, params in zip(source._frustums, want):
                assert_drawn_at(handle, params)
        finally:
            if live.app is not None:
                live.app.stop()
    shift = max(np.linalg.norm(p["position"] - frustum_params(source.cameras, k)["position"])
                for k, p in enumerate(want))
    assert shift > 1e-3  # the fit did move the cameras: the dataset poses would fail the check


def test_compare_says_once_after_its_last_run_that_the_viewer_closes(tmp_path, capsys):
    """--compare trains plain, wn and rwf one after another under one viewer, which stays up between them."""
    from viewer.live import LiveViewer

    live = LiveViewer("image", port=0, runs=3)
    apps, statuses = [], []
    try:
        for k, param in enumerate(("plain", "wn", "rwf")):
            base = make_trainer(5)
            (tmp_path / param).mkdir()
            trainer = Trainer(base.model, base.task, base.cfg, run_dir=tmp_path / param, callbacks=[live],
                              progress=False)
            trainer.fit()
            apps.append(live.app)
            statuses.append(live.app.train_status.content)
            err = capsys.readouterr().err
            assert err.count("training finished") == (1 if param == "rwf" else 0), err
        assert apps[0] is apps[1] is apps[2] and not apps[0]._server_stopped  # one viewer, up from run to run
        assert statuses[0].endswith("(run 1 of 3)") and statuses[2].endswith("(run 3 of 3)")
        assert f"rwf view {tmp_path / 'rwf'} to keep looking; likewise {tmp_path / 'plain'}, {tmp_path / 'wn'}" \
            in err
    finally:
        if live.app is not None:
            live.app.stop()


def test_fit_compare_view_expects_one_run_per_parameterization():
    from rwf_render.cli import build_parser
    from viewer.live import make_callback

    parser = build_parser()
    for kind in ("image", "sdf"):
        assert make_callback(parser.parse_args(["fit", kind, "--compare", "--view", "--port", "0"])).runs == 3
    assert make_callback(parser.parse_args(["fit", "image", "--view", "--port", "0"])).runs == 1
    assert make_callback(parser.parse_args(["fit", "nerf", "--view", "--port", "0"])).runs == 1
