"""Audit of the viewer as a user of nerfstudio's viewer would use it: failures on viewer threads stay one line and
never end the page or the fit, Ctrl+C reaches a paused fit, camera paths land where the page says and never
replace another file, the command fails fast and leaves no thread behind."""

import json
import socket
import sys
import threading
import time
import types

import numpy as np
import pytest
import torch

from rwf_render.errors import UserError
from viewer.camera import ViewCamera
from viewer.image_source import ImageSource
from viewer.nerf_source import NeRFSource
from viewer.render_loop import ClientRenderer, DutyCycle, RenderSettings

from test_viewer_app import FakeClient, tiny_image_source  # noqa: E402  (tests/ is on sys.path under pytest)
from test_viewer_live import Watching, make_trainer
from test_viewer_sources import StandInAPI

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")


def front_view(source) -> ViewCamera:
    from rwf_render.cameras import look_at

    pos, target = source.initial_view()
    return ViewCamera.from_c2w(look_at(torch.tensor(pos), torch.tensor(target), up=torch.tensor([0.0, 1, 0])),
                               0.9, 1.0)


class LargeFramesFail(ImageSource):
    """Frames wider than ``limit`` pixels raise, as a GPU running out of memory at a large resolution."""

    limit = 64

    def render(self, cams, mode):
        self.calls += 1
        if int(cams.width[0]) > self.limit:
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
        return super().render(cams, mode)


def test_a_failing_frame_is_reported_once_and_the_renderer_goes_on():
    base = tiny_image_source()
    source = LargeFramesFail(base.model, base.target, CPU)
    source.calls = 0
    client, errors = FakeClient(front_view(source)), []
    renderer = ClientRenderer(client, source, RenderSettings(mode="reconstruction", max_res=256), DutyCycle(1.0),
                              on_error=lambda cid, e: errors.append(e))
    renderer.start()
    try:
        renderer.notify_camera()
        client.wait_for(lambda sent: sent and sent[-1][1] == 64)  # the 64-pixel frame shows
        for _ in range(200):
            if errors:
                break
            time.sleep(0.05)
        assert len(errors) == 1 and "out of memory" in str(errors[0])  # refining to 128 failed, said once
        calls = source.calls
        time.sleep(0.6)
        assert source.calls == calls and renderer._thread.is_alive()  # no retry loop; the thread lives
        shown = len(client.sent)
        renderer.settings.max_res = 64  # the user lowers the resolution: frames show again
        renderer.notify_change()
        client.wait_for(lambda sent: len(sent) > shown)
        assert len(errors) == 1 and renderer._thread.is_alive()
    finally:
        renderer.stop(join=30)


class FlakyPanels(ImageSource):
    def refresh_gui(self):
        self.refreshes += 1
        if self.refreshes == 1:
            raise RuntimeError("slice failed\nsecond line")


def test_a_failing_panel_refresh_is_one_line_and_the_panels_go_on(capsys):
    from viewer.app import ViewerApp

    base = tiny_image_source()
    source = FlakyPanels(base.model, base.target, CPU)
    source.refreshes = 0
    app = ViewerApp(source, port=0)
    app.start()
    try:
        app.renderers[99] = Watching()  # someone watches: model panels are refreshed
        for expected in (1, 2):
            app.notify_model()
            for _ in range(200):
                if source.refreshes >= expected:
                    break
                time.sleep(0.05)
            assert source.refreshes == expected
    finally:
        app.renderers.pop(99, None)
        app.stop()
    err = capsys.readouterr().err
    assert "viewer: panels not refreshed (RuntimeError: slice failed second line)" in err
    assert "Traceback" not in err


def test_a_viewer_that_cannot_start_leaves_the_fit_to_finish(monkeypatch, capsys):
    from viewer.app import ViewerApp
    from viewer.live import LiveViewer

    def broken(self):
        raise RuntimeError("no server for you")

    monkeypatch.setattr(ViewerApp, "start", broken)
    live = LiveViewer("image", port=0)
    trainer = make_trainer(12, [live])
    trainer.fit()
    assert trainer.step_idx == 12 and live.failed and live.app is None
    err = capsys.readouterr().err
    assert err.count("live viewer stopped (RuntimeError: no server for you)") == 1


def test_a_snapshot_that_fails_stops_the_viewer_not_the_fit(capsys):
    from viewer.live import LiveViewer

    live = LiveViewer("image", port=0, refresh_s=0.0)
    trainer = make_trainer(12, [live])
    original = live.on_start

    def on_start(tr):
        original(tr)
        live.app.renderers[99] = Watching()

        def refuse(state):
            raise MemoryError("no room for a copy")
        live.app.source.offer_state = refuse
        live.started = live.app

    live.on_start = on_start
    trainer.fit()
    assert trainer.step_idx == 12 and live.failed and live.app is None
    assert live.started._server_stopped  # the page is gone with its threads
    assert capsys.readouterr().err.count("live viewer stopped (MemoryError: no room for a copy)") == 1


def test_ctrl_c_while_paused_stops_the_fit_at_that_step():
    """The first Ctrl+C sets ``stop_requested`` (the fit then saves and stops); a paused fit must notice it."""
    from viewer.live import LiveViewer

    live = LiveViewer("image", port=0)
    trainer = make_trainer(12, [live])
    live.pause()
    runner = threading.Thread(target=trainer.fit, daemon=True)
    runner.start()
    try:
        assert live.waiting.wait(120), "on_step never blocked"
        trainer.stop_requested = True  # what StopAtStepBoundary does on Ctrl+C
        runner.join(30)
        assert not runner.is_alive() and trainer.step_idx == 1
    finally:
        live.resume()
        runner.join(30)
        if live.app is not None:
            live.app.stop()


def test_fit_view_without_viser_is_one_error_before_the_fit(monkeypatch):
    from viewer.live import make_callback

    monkeypatch.setitem(sys.modules, "viser", None)  # import viser raises ImportError

    class Args:
        kind, host, port = "image", "127.0.0.1", 0

    with pytest.raises(UserError, match="needs viser"):
        make_callback(Args)


@pytest.fixture
def image_app(tmp_path, monkeypatch):
    from viewer.app import ViewerApp

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # the server's working folder: nowhere the page shows
    run = tmp_path / "run"
    run.mkdir()
    source = tiny_image_source()
    source.run = run
    app = ViewerApp(source, port=0)
    app.start()
    for x in (0.0, 0.3):
        c2w = np.eye(4)
        c2w[:3, 3] = [x, 0.0, 2.0]
        app.recorder.add(ViewCamera.from_c2w(c2w, 0.8, 1.5))
    yield app, run
    app.stop()


def test_a_relative_camera_path_name_goes_into_the_run(image_app, tmp_path, monkeypatch):
    app, run = image_app
    elsewhere = tmp_path / "cwd"
    assert app.recorder.file.value == str(run / "camera_path.json")
    app.recorder.file.value = "orbit.json"
    app.recorder._save_clicked()
    assert (run / "orbit.json").is_file() and not (elsewhere / "orbit.json").exists()
    assert str(run / "orbit.json") in app.recorder.status.content
    assert json.loads((run / "orbit.json").read_text())["format"] == "rwf-camera-path"


def test_overwrite_replaces_only_a_camera_path(image_app):
    app, run = image_app
    rec = app.recorder
    (run / "config.json").write_text('{"kind": "image"}')
    rec.overwrite.value = True
    for name, message in (("config.json", "not a camera path"), ("", "file name"), (str(run), "is a folder")):
        rec.file.value = name
        rec._save_clicked()
        assert message in rec.status.content, rec.status.content
    assert (run / "config.json").read_text() == '{"kind": "image"}'  # untouched
    rec.file.value = "camera_path.json"
    rec._save_clicked()
    first = (run / "camera_path.json").read_text()
    rec.add(ViewCamera.from_c2w(np.eye(4), 0.8, 1.5))
    rec._save_clicked()  # a camera path is replaced when asked to
    assert (run / "camera_path.json").read_text() != first
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_camera_path_setting_that_is_not_a_number_is_a_message(image_app):
    app, run = image_app
    app.recorder.fps = types.SimpleNamespace(value=None)  # a cleared number field
    app.recorder._save_clicked()
    assert "must be numbers" in app.recorder.status.content
    assert not (run / "camera_path.json").exists()


def test_camera_path_panel_says_which_runs_it_renders(image_app):
    app, _ = image_app
    assert "renders NeRF runs" in app.recorder.note.content


class SlowThumbnails:
    def __init__(self):
        self.calls = 0

    def __call__(self, i):
        self.calls += 1
        time.sleep(0.3)
        return np.zeros((8, 8, 4), np.float32)  # fully transparent


def test_stop_ends_the_thumbnail_thread():
    from viewer.app import ViewerApp

    thumbs = SlowThumbnails()
    model = StandInAPI.load_scene_model(None, CPU)
    source = NeRFSource(model, CPU, StandInAPI, thumbnail=thumbs)
    app = ViewerApp(source, port=0)
    app.start()
    app.stop()
    assert not source._thumbnails.is_alive()
    calls = thumbs.calls
    time.sleep(0.7)
    assert thumbs.calls == calls < 3


@pytest.mark.parametrize("background, value", [("black", 0), ("white", 255), ("random", 255)])
def test_thumbnails_go_over_the_runs_background(background, value):
    model = StandInAPI.load_scene_model(None, CPU)
    del model.background
    model.background = background  # NeRFModel.background: the run's --background
    source = NeRFSource(model, CPU, StandInAPI, thumbnail=lambda i: np.zeros((8, 8, 4), np.float32))
    source._frustums = [types.SimpleNamespace(image=None) for _ in range(3)]
    source._load_thumbnails(np.arange(3))
    assert all(np.all(h.image == value) for h in source._frustums)


def test_a_run_without_a_checkpoint_yet_says_why(tmp_path, capsys):
    from viewer.cli import main

    (tmp_path / "config.json").write_text('{"kind": "image", "height": 8, "width": 8}')
    assert main(["view", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoint.pt yet" in err and "still running" in err and len(err.splitlines()) == 1


def test_a_bad_address_fails_before_the_run_is_loaded(tmp_path, capsys, monkeypatch):
    import viewer.sources
    from viewer.cli import main

    opened = []
    monkeypatch.setattr(viewer.sources, "open_run", lambda *a: opened.append(a))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["view", str(tmp_path), "--port", str(port)]) == 2
    assert main(["view", str(tmp_path), "--host", "256.1.1.1"]) == 2
    err = capsys.readouterr().err
    assert "busy" in err and "--host 256.1.1.1" in err and opened == []


@pytest.mark.parametrize("host, forward", [("127.0.0.1", "localhost"), ("::1", "[::1]")])
def test_ctrl_c_at_any_moment_stops_the_viewer(monkeypatch, capsys, host, forward):
    """A Ctrl+C that lands before serving began (the page prints its URL while the model loads its thumbnails)
    still stops the app; the ssh hint names the address the server listens on."""
    import viewer.sources
    from viewer.app import ViewerApp
    from viewer.cli import main

    try:
        with socket.socket(socket.getaddrinfo(host, 0)[0][0]) as probe:
            probe.bind((host, 0))
    except OSError:
        pytest.skip(f"{host} is not an address of this machine")
    apps = []

    def interrupted(self):
        apps.append(self)
        raise KeyboardInterrupt  # without stopping: as if it arrived before serve_forever began

    monkeypatch.setattr(viewer.sources, "open_run", lambda run, device: tiny_image_source())
    monkeypatch.setattr(ViewerApp, "serve_forever", interrupted)
    before = {t.ident for t in threading.enumerate()}
    assert main(["view", "run", "--port", "0", "--host", host]) == 130
    assert apps and apps[0]._server_stopped and apps[0]._stop.is_set()
    time.sleep(0.5)
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith(("render", "viewer"))]
    assert left == []
    out = capsys.readouterr().out
    assert f"ssh -L {apps[0].port}:{forward}:{apps[0].port} HOST" in out


def test_a_page_that_cannot_be_built_leaves_no_server(monkeypatch):
    from viewer.app import ViewerApp

    source = tiny_image_source()

    def broken(server):
        raise RuntimeError("panel failed")

    source.setup_gui = broken
    app = ViewerApp(source, port=0)
    with pytest.raises(RuntimeError, match="panel failed"):
        app.start()
    assert app._server_stopped
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", app.port), timeout=2).close()


def test_view_help_has_no_markup(capsys):
    from viewer.cli import main

    with pytest.raises(SystemExit):
        main(["view", "--help"])
    out = capsys.readouterr().out
    assert "open a run directory in the browser" in out and "``" not in out


def test_a_corrupt_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    """torch's unpickling errors span several lines; ``rwf view`` (like eval and render: ``load_checkpoint``) says
    them on one."""
    import viewer.sources
    from viewer.cli import main

    (tmp_path / "config.json").write_text('{"kind": "sdf"}')
    (tmp_path / "checkpoint.pt").write_text("garbage\n")

    def load(run, cfg, device):
        from rwf_render.rundir import load_checkpoint

        load_checkpoint(run / "checkpoint.pt")
    monkeypatch.setattr(viewer.sources, "_open", load)
    assert main(["view", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot load checkpoint" in err and len(err.splitlines()) == 1
