"""A click on a training camera's frustum shows the *render* from that camera, not the training photo.

The click takes the browser's camera exactly into the training camera, where the frustum's image (the photo, on
the frustum's far end) fills the view in front of the render: the user saw the photo and took it for a perfect
fit. Now, while its photo would cover the middle of the view, the clicked frustum and any other whose photo does
too are hidden from the clicking browser alone (a node of its name in that browser's own scene scope outranks the
shared one in viser 1.1.1), and they show again once the user backs or turns away. ``Browser`` below stands in for
a viser client and shows, for each name, the node of its own scope when it has one, else the shared one (viser's
display rule: real client > real broadcast). A "training images" checkbox takes the photos off every frustum.
"""

import asyncio
import contextlib
import inspect
import math
import threading
import time
import types

import numpy as np
import pytest
import torch

from viewer.camera import matrix_from_quat, quat_from_matrix
from viewer.nerf_source import NeRFSource

from test_viewer_sources import StandInAPI  # noqa: E402  (tests/ is on sys.path under pytest)

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
CPU = torch.device("cpu")


def run(result):
    """What viser does with a callback's result: a coroutine is run (in its event loop)."""
    if inspect.iscoroutine(result):
        asyncio.run(result)


class SharedScene:
    """``server.scene``: nodes every browser sees; frustums keep all their click callbacks, in order."""

    def __init__(self):
        self.nodes = {}

    def add_box(self, name, **kw):
        return types.SimpleNamespace(name=name, visible=True, **kw)

    def add_camera_frustum(self, name, **kw):
        handle = types.SimpleNamespace(name=name, visible=True, image=None, clicks=[], **kw)
        handle.on_click = handle.clicks.append
        self.nodes[name] = handle
        return handle


class Browser:
    """A viser client: its id, its camera (with update callbacks) and its own scene scope (``client.scene``)."""

    def __init__(self, client_id: int, shared: SharedScene):
        self.client_id, self.shared, self.own, self.updates = client_id, shared, {}, []
        self.camera = types.SimpleNamespace(position=np.array([0.0, 0.0, 8.0]), wxyz=np.array([1.0, 0, 0, 0]),
                                            fov=0.9, aspect=1.5, on_update=self.updates.append)
        self.scene = types.SimpleNamespace(add_frame=self._add_frame)

    def atomic(self):
        return contextlib.nullcontext()

    def _add_frame(self, name, **kw):
        assert name not in self.own, "a second node of one name in one scope"
        node = types.SimpleNamespace(name=name, **kw)
        node.remove = lambda: self.own.pop(name)
        self.own[name] = node
        return node

    def click(self, name: str) -> None:
        """Click a frustum: its callbacks in order, then the browser reports the camera the click moved."""
        frustum = self.shared.nodes[name]
        for callback in frustum.clicks:
            run(callback(types.SimpleNamespace(client=self, target=frustum)))
        self.move(self.camera.position, self.camera.wxyz)

    def move(self, position, wxyz) -> None:
        self.camera.position, self.camera.wxyz = np.asarray(position, np.float64), np.asarray(wxyz, np.float64)
        for callback in self.updates:
            run(callback(self.camera))

    def sees(self, name: str) -> tuple[bool, bool]:
        """(frustum drawn, photo drawn) in this browser: its own node of that name in place of the shared one."""
        node = self.own.get(name, self.shared.nodes[name])
        drawn = bool(node.visible)
        return drawn, drawn and getattr(node, "image", None) is not None


def photo(i: int) -> np.ndarray:
    return np.full((24, 32, 3), 0.2 + 0.3 * i)


def clicked_source():
    scene = SharedScene()
    source = NeRFSource(StandInAPI.load_scene_model(None, CPU), CPU, StandInAPI, thumbnail=photo)
    source.setup_scene(types.SimpleNamespace(scene=scene))
    source._thumbnails.join(30.0)
    names = sorted(scene.nodes)
    assert len(names) == 3 and all(scene.nodes[n].image is not None for n in names)
    return source, scene, names


def forward(wxyz) -> np.ndarray:
    return matrix_from_quat(wxyz)[:, 2]  # OpenCV: the camera looks along +z


def test_a_click_hides_the_clicked_photo_from_that_browser_until_it_leaves():
    source, scene, names = clicked_source()
    a, b = Browser(1, scene), Browser(2, scene)
    frustum = scene.nodes[names[1]]
    a.click(names[1])
    np.testing.assert_allclose(a.camera.position, frustum.position, atol=1e-9)  # jumped into camera 1
    assert a.camera.fov == pytest.approx(frustum.fov)
    assert a.sees(names[1]) == (False, False)  # neither photo nor lines in front of the render
    assert a.sees(names[0]) == a.sees(names[2]) == (True, True)
    assert all(b.sees(n) == (True, True) for n in names)  # the other browser still sees every frustum

    # a small step back: the photo would still cover the middle of the view, so it stays hidden
    depth = source._clicks.scale / np.cbrt(math.tan(frustum.fov / 2) ** 2 * frustum.aspect / 3)
    a.move(frustum.position - 0.5 * depth * forward(frustum.wxyz), frustum.wxyz)
    assert a.sees(names[1]) == (False, False)
    # backed far away (the frustum a small thing in the distance), and turned away in place: shown again
    a.move(frustum.position - 20 * depth * forward(frustum.wxyz), frustum.wxyz)
    assert a.sees(names[1]) == (True, True)
    a.move(frustum.position, frustum.wxyz)  # back into the camera: hidden again
    assert a.sees(names[1]) == (False, False)
    turned = matrix_from_quat(frustum.wxyz) @ np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # 90 deg about y
    a.move(frustum.position, quat_from_matrix(turned))
    assert a.sees(names[1]) == (True, True)

    # a click on another frustum moves there: the first shows, the second hides
    a.click(names[1])
    a.click(names[2])
    assert a.sees(names[1]) == (True, True) and a.sees(names[2]) == (False, False)
    assert list(a.own) == [names[2]]
    # two browsers at one camera: each hides it for itself, and one leaving shows it to that one only
    b.click(names[2])
    assert b.sees(names[2]) == (False, False)
    a.move(np.array([0.0, 0.0, 8.0]), quat_from_matrix(np.diag([1.0, -1.0, -1.0])))  # above, looking down
    assert a.sees(names[2]) == (True, True) and b.sees(names[2]) == (False, False)
    assert len(a.updates) == 1  # one camera callback per browser, however many clicks


def test_the_hidden_frustum_follows_its_camera_corrections():
    """A clicked frustum that a fit moves (``--optimize-cameras``) is judged where it is drawn now."""
    source, scene, names = clicked_source()
    a = Browser(1, scene)
    a.click(names[0])
    assert a.sees(names[0]) == (False, False)
    moved = dict(source._frustum_params[0], position=source._frustum_params[0]["position"] + [0.0, 0.0, 3.0])
    source._frustum_params[0] = moved  # what refresh_gui does after new corrections
    a.move(a.camera.position, a.camera.wxyz)  # the browser stayed at the old pose: the photo is not in its view
    assert a.sees(names[0]) == (True, True)
    a.move(moved["position"], moved["wxyz"])
    assert a.sees(names[0]) == (False, False)


def test_a_neighbour_whose_photo_covers_the_view_hides_too():
    """A camera beside the clicked one (near-duplicate views: a quarter of lego_400's cameras have a neighbour whose
    photo covers over 5 % of the middle of their view) is hidden with it, and shows again with it."""
    from rwf_render.cameras import Cameras, look_at

    eyes = torch.tensor([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [-3.0, 0.0, 1.0], [0.03, 3.0, 1.0]])
    cameras = Cameras.create(look_at(eyes, torch.zeros(3)), fx=30.0, width=32, height=24)
    scene = SharedScene()
    source = NeRFSource(StandInAPI.load_scene_model(None, CPU), CPU, StandInAPI, cameras=cameras, thumbnail=photo)
    source.setup_scene(types.SimpleNamespace(scene=scene))
    source._thumbnails.join(30.0)
    names = sorted(scene.nodes)
    a, b = Browser(1, scene), Browser(2, scene)
    a.click(names[1])
    assert [a.sees(n) for n in names] == [(True, True), (False, False), (True, True), (False, False)]
    assert all(b.sees(n) == (True, True) for n in names)
    frustum = scene.nodes[names[1]]
    a.move(frustum.position - 40 * source._clicks.scale * forward(frustum.wxyz), frustum.wxyz)  # backed away
    assert all(a.sees(n) == (True, True) for n in names) and a.own == {}
    a.click(names[3])  # the neighbour's own click: camera 1 hides with it
    assert [a.sees(n)[0] for n in names] == [True, False, True, False]


class Gui:
    """``server.gui`` and the server's disconnect callbacks, as NeRFSource.setup_gui uses them."""

    def __init__(self):
        self.controls, self.left = {}, []

    def add_folder(self, label, **kw):
        return contextlib.nullcontext()

    def add_checkbox(self, label, initial_value, **kw):
        control = types.SimpleNamespace(value=initial_value, callbacks=[])
        control.on_update = control.callbacks.append
        self.controls[label] = control
        return control

    def add_markdown(self, text):
        return types.SimpleNamespace(content=text)

    def tick(self, label: str, value: bool) -> None:
        control = self.controls[label]
        control.value = value
        for callback in control.callbacks:
            run(callback(types.SimpleNamespace(target=control)))


def test_training_images_checkbox_takes_the_photos_off_and_back():
    """Unticked before the photos load, none shows; ticked, each frustum shows its own; the outlines stay."""
    release = threading.Event()

    def slow_photo(i):
        release.wait(30.0)
        return photo(i)

    scene, gui = SharedScene(), Gui()
    source = NeRFSource(StandInAPI.load_scene_model(None, CPU), CPU, StandInAPI, thumbnail=slow_photo)
    server = types.SimpleNamespace(scene=scene, gui=gui, on_client_disconnect=gui.left.append)
    source.setup_scene(server)
    source.setup_gui(server)
    gui.tick("training images", False)
    release.set()
    source._thumbnails.join(30.0)
    frustums = [scene.nodes[n] for n in sorted(scene.nodes)]
    assert all(f.image is None and f.visible for f in frustums)
    gui.tick("training images", True)
    for i, f in enumerate(frustums):  # each its own photo, as uint8
        assert f.image.dtype == np.uint8 and np.abs(f.image - photo(i) * 255).max() <= 0.5
    gui.tick("training images", False)
    assert all(f.image is None and f.visible for f in frustums)

    # a browser that leaves is forgotten (viser drops its own nodes with it)
    a = Browser(1, scene)
    a.click(sorted(scene.nodes)[0])
    assert 1 in source._clicks._chosen
    for callback in gui.left:
        run(callback(a))
    assert 1 not in source._clicks._chosen


# -- in real browsers ------------------------------------------------------------------------------------------------
def test_a_real_click_shows_the_render_in_that_browser_and_the_photo_in_another(tmp_path):
    """Two headless Chromium pages (software WebGL) look at frustum 1 of a stand-in NeRF (a sphere coloured by its
    normals) whose photos are magenta. A click in page A's middle (a real mouse click, through viser's picking)
    takes A into camera 1: A then shows the sphere there, as rendered, and no magenta (before: frustum 1's lines,
    converging at the camera, and its photo filled the view), while B still shows the photo on frustum 1; A backed
    out far enough sees it again. This checks what the stand-ins above assume of viser's browser client: its own
    node of a name hides the shared one, and shows it again once removed."""
    from test_viewer_e2e import CHROMIUM, Chromium
    from viewer.app import ViewerApp

    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    pytest.importorskip("websockets.sync.client", reason="driving Chromium needs websockets >= 12 (viser's)")
    source = NeRFSource(StandInAPI.load_scene_model(None, CPU), CPU, StandInAPI,
                        thumbnail=lambda i: np.tile(np.array([1.0, 0.0, 1.0]), (24, 32, 1)))
    app = ViewerApp(source, port=0, max_res=128)
    url = app.start()
    pages = []

    def connect(name):
        pages.append(Chromium(tmp_path / name))
        pages[-1].call("Page.navigate", url=url)
        return until(lambda: next((c for c in app.server.get_clients().values() if c.client_id not in seen), None),
                     f"page {name} connects")

    def until(found, what, timeout=90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = found()
            except AssertionError:  # viser: a client's camera before the browser first reported it
                value = None
            if value is not None and value is not False:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out: {what}")

    # the render from camera 1 at the middle of the view: the sphere where it faces the camera, 0.5 + 0.5 normal
    eye = source.cameras.c2w[1, :3, 3].numpy()
    facing = 255 * (0.5 + 0.5 * eye / np.linalg.norm(eye))

    def looks(page):
        """(share of magenta left of the GUI, share of the middle 40 x 40 pixels of the render's colour there)."""
        shot = page.screenshot().astype(int)
        h, w = shot.shape[:2]
        left = shot[:, : int(0.55 * w)]
        middle = shot[h // 2 - 20: h // 2 + 20, w // 2 - 20: w // 2 + 20]
        return (float(((left[..., 0] > 200) & (left[..., 2] > 200) & (left[..., 1] < 150)).mean()),
                float((np.abs(middle - facing).max(-1) < 30).mean()))

    try:
        seen = set()
        a = connect("a")
        seen.add(a.client_id)
        b = connect("b")
        frustum = source._frustums[1]
        axis = matrix_from_quat(frustum.wxyz)[:, 2]
        outside = frustum.position - 1.5 * axis + np.array([0.0, 0.0, 0.2])
        for client in (a, b):  # both a little behind camera 1, frustum 1 in the middle of the view
            until(lambda c=client: c.camera.position is not None, "the browser reports its camera")
            with client.atomic():
                client.camera.position, client.camera.look_at = outside, frustum.position + 0.25 * axis
        until(lambda: looks(pages[0])[0] > 0.005, "page A shows the photo on frustum 1")
        shot = pages[0].screenshot()
        h, w = shot.shape[:2]
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            pages[0].call("Input.dispatchMouseEvent", type=kind, x=w / 2, y=h / 2, clickCount=1,
                          button="none" if kind == "mouseMoved" else "left")
        until(lambda: np.linalg.norm(a.camera.position - frustum.position) < 1e-4, "the click moves A into camera 1")
        until(lambda: (lambda magenta, render: magenta == 0 and render > 0.9)(*looks(pages[0])),
              "page A shows the render from camera 1, nothing of frustum 1 over it")
        until(lambda: looks(pages[1])[0] > 0.005, "page B still shows the photo on frustum 1")
        with a.atomic():  # backed out along the axis until the photo covers under 5 % of the middle square
            a.camera.position, a.camera.look_at = frustum.position - 3.0 * axis, frustum.position
        until(lambda: looks(pages[0])[0] > 0.002, "page A, backed out, shows the photo again")
    finally:
        for page in pages:
            page.close()
        app.stop()
