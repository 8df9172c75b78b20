"""A viewer others can reach (``--host`` not loopback): camera paths are saved inside the run folder only (a
visitor typed /tmp/x.json, ~/x.json or ../x.json and the server wrote there), ``rwf fit --view`` says what
visitors can do as ``rwf view`` does, and a relative ``rwf render --camera-path`` the viewer saved in the run is
found there."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from rwf_render.camera_path import save_camera_path
from rwf_render.errors import UserError
from viewer.app import is_loopback, open_port_note
from viewer.panels import CameraPathRecorder


def _resolve(host: str, run, text: str):
    recorder = SimpleNamespace(app=SimpleNamespace(host=host, source=SimpleNamespace(run=run)))
    return CameraPathRecorder.resolve(recorder, text)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.2", False),
                                            ("vm", False), ("::", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_an_open_viewer_saves_camera_paths_inside_the_run_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    run.mkdir()
    assert _resolve("0.0.0.0", run, "my path.json") == run / "my path.json"
    for typed in (str(tmp_path / "evil.json"), "../escape.json", "~/x.json", ".", str(run)):
        with pytest.raises(UserError, match="inside the run folder only"):
            _resolve("0.0.0.0", run, typed)
    assert _resolve("127.0.0.1", run, str(tmp_path / "mine.json")) == tmp_path / "mine.json"  # on one's own machine
    assert _resolve("127.0.0.1", run, "../beside.json") == run / ".." / "beside.json"
    assert "pauses the training" in open_port_note("0.0.0.0", live=True)
    assert "pauses" not in open_port_note("0.0.0.0", live=False)


def test_the_live_viewer_says_what_visitors_can_do_on_an_open_host(capsys, monkeypatch):
    from viewer import live

    class StandInApp:
        def __init__(self, *args, **kwargs):
            self.port = 0

        def start(self):
            return "http://vm:1"

        def stop(self):
            pass

        def set_training(self, *args):
            pass

    monkeypatch.setattr(live, "ViewerApp", StandInApp)
    monkeypatch.setattr(live, "live_source", lambda kind, trainer: None)
    monkeypatch.setattr(live.atexit, "register", lambda fn: None)
    trainer = SimpleNamespace(last_eval=None, history=[], step_idx=0)
    for host, said in (("0.0.0.0", True), ("127.0.0.1", False)):
        viewer = live.LiveViewer("sdf", host=host, port=0)
        monkeypatch.setattr(viewer, "_status", lambda trainer: "", raising=False)
        viewer._start(trainer)
        err = capsys.readouterr().err
        assert ("whoever reaches this port sees the run, pauses the training" in err) is said, err


def test_a_relative_camera_path_saved_in_the_run_is_found_there(tmp_path, capsys):
    from rwf_render import cli

    from conftest import random_views_scene  # noqa: PLC0415

    scene = random_views_scene(tmp_path / "scene", {"train": 3, "test": 1})
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(scene), "--out", str(run), "--steps", "2", "--grid-resolution", "16",
                     "--width", "16", "--features", "8", "--eval-images", "1", "--quiet", "--device", "cpu"]) == 0
    keys = np.stack([np.eye(4), np.eye(4)])
    keys[:, 2, 3] = [3.0, 2.5]
    save_camera_path(run / "orbit.json", keys, np.array([50.0, 50.0]), 8, 6, fps=4, seconds=0.5)
    out = tmp_path / "frames"
    assert cli.main(["render", str(run), "--camera-path", "orbit.json", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("rgb_*.png")) == ["rgb_0000.png", "rgb_0001.png"]


def test_a_saved_camera_path_loads_back_into_the_viewer(tmp_path):
    """The page could save a path but not load one: after a restart of rwf view, a path could be rendered but not
    previewed or edited. Loading takes the keyframes, size, timing (29.97 fps is not rounded to the field's step)
    and loop; a file of frames alone has nothing to edit."""
    pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
    from test_viewer_app import tiny_image_source  # noqa: PLC0415

    from viewer.app import ViewerApp

    source = tiny_image_source()
    source.run = tmp_path
    keys = np.stack([np.eye(4)] * 3)
    keys[:, 0, 3] = [0.0, 0.4, 0.9]
    save_camera_path(tmp_path / "saved.json", keys, np.array([40.0, 50.0, 60.0]), 320, 200, fps=29.97, seconds=2.5,
                     is_cycle=True)
    app = ViewerApp(source, port=0)
    app.start()
    try:
        app.recorder.load(app.recorder.resolve("saved.json"))
        got = app.recorder
        assert len(got.keys) == 3 and [k[1] for k in got.keys] == [40.0, 50.0, 60.0]
        np.testing.assert_allclose(np.stack([k[0] for k in got.keys]), keys)
        assert (got.width.value, got.height.value, got.fps.value, got.seconds.value, got.loop.value) == (
            320, 200, 29.97, 2.5, True)
        got.save(tmp_path / "again.json")
        assert (json.loads((tmp_path / "again.json").read_text())["keyframes"]
                == json.loads((tmp_path / "saved.json").read_text())["keyframes"])
        frames_only = json.loads((tmp_path / "saved.json").read_text())
        del frames_only["keyframes"]
        (tmp_path / "frames.json").write_text(json.dumps(frames_only))
        with pytest.raises(UserError, match="no 'keyframes' to edit"):
            got.load(tmp_path / "frames.json")
        assert len(got.keys) == 3  # a file that does not load leaves the path as it was
    finally:
        app.stop()
