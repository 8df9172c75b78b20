"""The viewer without a browser: progressive rendering per client, the page for every run kind, camera paths."""

import math
import threading
import time

import numpy as np
import pytest
import torch

from rwf_render.errors import UserError
from rwf_render.mesh import Normalization
from viewer.camera import ViewCamera
from rwf_render.camera_path import load_camera_path
from viewer.image_source import ImageSource
from viewer.nerf_source import NeRFSource
from viewer.render_loop import ClientRenderer, DutyCycle, RenderSettings
from viewer.sdf_source import SDFSource

from test_viewer_sources import Sphere, StandInAPI  # noqa: E402  (tests/ is on sys.path under pytest)

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")


def tiny_image_source() -> ImageSource:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid())
    target = np.random.default_rng(0).random((12, 16, 3), dtype=np.float32)
    return ImageSource(model, target, CPU)


class FakeClient:
    """What ClientRenderer uses of a viser ClientHandle: client_id, camera, scene.set_background_image."""

    def __init__(self, view: ViewCamera):
        self.client_id = 0
        self.camera = view
        self.scene = self
        self.sent = []
        self.changed = threading.Condition()

    def set_background_image(self, image, format="jpeg", jpeg_quality=None, depth=None):
        with self.changed:
            self.sent.append(None if image is None else image.shape)
            self.changed.notify_all()

    def wait_for(self, predicate, timeout=60.0):
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.sent), timeout), self.sent


def test_progressive_frames_refine_to_max_res_then_stop():
    source = tiny_image_source()
    pos, target = source.initial_view()
    from rwf_render.cameras import look_at

    view = ViewCamera.from_c2w(look_at(torch.tensor(pos), torch.tensor(target), up=torch.tensor([0.0, 1, 0])),
                               0.9, 1.5)
    client = FakeClient(view)
    settings = RenderSettings(mode="reconstruction", max_res=128)
    renderer = ClientRenderer(client, source, settings, DutyCycle(1.0)).start()
    try:
        renderer.notify_camera()
        client.wait_for(lambda sent: sent and sent[-1] == (85, 128, 3))  # the longer side reaches max_res
        sides = [max(s[:2]) for s in client.sent]
        assert sides == sorted(sides) and sides[0] < 128  # a small frame first, then sharper ones
        shown = len(client.sent)
        time.sleep(1.0)
        assert len(client.sent) == shown  # still camera, current frame: nothing is rendered
        renderer.notify_change()  # e.g. a new live snapshot
        client.wait_for(lambda sent: len(sent) > shown and sent[-1] == (85, 128, 3))
        settings.mode = "off"
        renderer.notify_change()
        client.wait_for(lambda sent: sent[-1] is None)
    finally:
        renderer.stop()


def test_duty_cycle_rests_in_proportion_across_threads():
    """Work of 1 s at duty 0.25 owes 3 s of rest; a second thread's work right after owes its rest on top (the
    budget is shared), so it waits about 6 s. Only the requested waits are checked, never the clock."""
    calls = []

    class Spy:
        def wait(self, seconds):
            calls.append(seconds)

    shared = DutyCycle(0.25)
    shared.rest(1.0, Spy())
    shared.rest(1.0, Spy())
    DutyCycle(1.0).rest(1.0, Spy())
    assert calls[0] == pytest.approx(3.0, abs=0.05) and calls[1] == pytest.approx(6.0, abs=0.05)
    assert len(calls) == 2
    with pytest.raises(ValueError):
        DutyCycle(0.0)


def sources():
    yield "image", tiny_image_source(), "/camera_path"
    yield "sdf", SDFSource(Sphere(0.3), "sdf", Normalization((0.0, 0.0, 0.0), 1.0), CPU), "/sdf/slice"
    yield "nerf", NeRFSource.from_run(None, {"kind": "nerf"}, CPU, api=StandInAPI), "/nerf/cameras/0002"


@pytest.mark.parametrize("kind", ["image", "sdf", "nerf"])
def test_page_builds_for_every_run_kind(kind, tmp_path):
    from viewer.app import ViewerApp

    source, node = next((s, n) for k, s, n in sources() if k == kind)
    source.run = tmp_path
    app = ViewerApp(source, port=0)
    url = app.start()
    try:
        assert url == f"http://127.0.0.1:{app.port}" and app.port > 0
        # camera path: two keyframes, saved, read back by the library-side reader
        for angle in (0.0, 0.5):
            c2w = np.eye(4)
            c2w[:3, 3] = [math.sin(angle), 0.0, 3.0]
            app.recorder.add(ViewCamera.from_c2w(c2w, 0.8, 1.5))
        assert app.server.scene.get_handle_by_name(node) is not None
        path = tmp_path / "camera_path.json"
        app.recorder.save(path)
        c2w, fx, fy, cx, cy, w, h, fps = load_camera_path(path)
        assert c2w.shape == (96, 4, 4) and (w, h, fps) == (640, 480, 24.0)
        np.testing.assert_allclose(c2w[0, :3, 3].numpy(), [0.0, 0.0, 3.0], atol=1e-6)
        with pytest.raises(UserError, match="exists"):
            app.recorder.save(path)  # never overwritten without asking
    finally:
        app.stop()


@pytest.mark.parametrize("args, message", [
    (["missing"], "no such run directory"),
    (["compare/plain/config.json"], "a file, not a run directory"),  # said "no such run directory" of a file
    (["compare"], "holds several runs (plain, rwf)"),
    (["compare/plain", "--port", "70000"], "0..65535"),
    (["compare/plain", "--max-res", "8"], "32..4096"),
])
def test_view_command_errors_are_one_line(tmp_path, capsys, args, message):
    from viewer.cli import main

    for name in ("plain", "rwf"):
        (tmp_path / "compare" / name).mkdir(parents=True)
        (tmp_path / "compare" / name / "config.json").write_text('{"kind": "image"}')
    args = [str(tmp_path / args[0]), *args[1:]]
    assert main(["view", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_probe_connection_leaves_no_traceback(caplog):
    """A connection closed before its handshake (port scanners, browser preconnects) is not reported as an error."""
    import logging
    import socket
    import time

    from viewer.app import ViewerApp

    app = ViewerApp(tiny_image_source(), port=0)
    app.start()
    try:
        socket.create_connection(("127.0.0.1", app.port), timeout=5).close()
        time.sleep(1.0)
    finally:
        app.stop()
    assert not [r for r in caplog.records if r.name.startswith("websockets") and r.levelno >= logging.ERROR]


class _Ledger(DutyCycle):
    """A duty cycle that records what it is charged and never waits."""

    def __init__(self):
        super().__init__(0.1)
        self.charged = []

    def rest(self, busy_seconds, stop):
        self.charged.append(busy_seconds)


@pytest.mark.parametrize("threads", [1, None])
def test_beside_a_trainer_a_starved_viewer_thread_is_charged_its_cpu_time(threads):
    """Beside a trainer (one intra-op thread, nice 19) a live frame whose strips wait 0.2 s each for a core was
    abandoned as too slow (wall time against --max-frame-s), the cost per pixel learned from the waits shrank frames
    to the minimum, and the duty cycle rested 9 times the waits: on a loaded 2-core machine no frame came in 31 s.
    The waits are stood in for by sleeps: no CPU time. Without ``threads`` (rwf view alone, or a GPU) work stays
    wall time."""
    source = tiny_image_source()
    render = source.render

    def waiting_render(cams, mode):
        time.sleep(0.2)  # a nice-19 thread waiting for the trainer's cores
        return render(cams, mode)

    source.render = waiting_render
    pos, target = source.initial_view()
    from rwf_render.cameras import look_at

    view = ViewCamera.from_c2w(look_at(torch.tensor(pos), torch.tensor(target), up=torch.tensor([0.0, 1, 0])),
                               0.9, 1.5)
    client, duty = FakeClient(view), _Ledger()
    renderer = ClientRenderer(client, source, RenderSettings(mode="reconstruction", max_res=128, max_frame_s=0.05),
                              duty, threads=threads)
    renderer.has_camera, renderer.last_move = True, time.monotonic() - 10  # a still camera
    renderer._once()
    if threads == 1:
        assert len(client.sent) == 1 and renderer.sec_per_pixel < 0.05 / 64**2  # shown; costed by its CPU time
        assert duty.charged[-1] < 0.15  # not the 0.2 s waits
    else:
        assert client.sent == [] and duty.charged[-1] >= 0.2  # wall time: abandoned as longer than 2 x 0.05 s


def test_the_run_panel_leaves_out_absent_figures_and_their_notes():
    """A NeRF run without lpips showed a row "lpips | None" and the whole lpips_note paragraph."""
    from viewer.panels import metrics_markdown

    table = metrics_markdown({"psnr": 27.5, "lpips": None, "lpips_note": "absent: pip install lpips", "steps": 10,
                              "views": [{"image": "r_0.png"}]})
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == ["psnr", "steps"] and "27.5" in table
