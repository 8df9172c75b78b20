"""What a browser sends is checked: a value its page does not offer, or a camera that cannot be rendered, does not
reach the renderer (viser passes both on unchecked; a bug hunt made a 1 GB frame from "max resolution" 4096 on a
slider ending at 2048, and tracebacks from a preview position of NaN and a slice axis "w")."""

import math
import types

import numpy as np
import pytest

from test_viewer_app import tiny_image_source
from viewer.camera import UnusableCamera, ViewCamera
from viewer.panels import on_checked_update

viser = pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")


@pytest.fixture(scope="module")
def server():
    s = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    yield s
    s.stop()


def _watched(handle):
    seen = []
    on_checked_update(handle, lambda ev: seen.append(ev.target.value))
    return seen


def test_a_slider_value_outside_its_range_is_clamped_and_a_non_finite_one_put_back(server):
    slider = server.gui.add_slider("res", 32, 2048, 32, 512)
    seen = _watched(slider)
    slider.value = 4096  # as a client's message sets it: viser's setter runs the update callbacks
    assert slider.value == 2048 and seen == [2048]
    slider.value = -5
    assert slider.value == 32 and seen == [2048, 32]
    share = server.gui.add_slider("share", 0.05, 1.0, 0.05, 0.5)
    shares = _watched(share)
    share.value = 0.25
    share.value = float("nan")
    assert share.value == 0.25 and shares == [0.25]  # the callback never saw the NaN
    share.value = float("inf")
    assert share.value == 0.25 and shares == [0.25]


def test_a_dropdown_value_outside_its_options_is_put_back(server):
    mode = server.gui.add_dropdown("mode", ("rgb", "depth"), initial_value="rgb")
    seen = _watched(mode)
    mode.value = "depth"
    mode.value = "../../etc/passwd"
    assert mode.value == "depth" and seen == ["depth"]


def test_a_number_with_no_maximum_is_clamped_at_its_minimum_only(server):
    number = server.gui.add_number("fps", 24.0, min=1.0, step=0.01)
    seen = _watched(number)
    number.value = 1e9
    number.value = 0.0
    assert seen == [1e9, 1.0] and number.value == 1.0


def test_the_viewers_own_controls_are_checked():
    from viewer.app import ViewerApp

    app = ViewerApp(tiny_image_source(), port=0)
    app.start()
    try:
        handles = {h.label: h for h in app.server.gui._gui_input_handle_from_uuid.values()}
        handles["max resolution"].value = 32768
        assert app.settings.max_res == handles["max resolution"].max == 2048
        before = app.settings.mode
        handles["mode"].value = "bogus"
        assert app.settings.mode == before and handles["mode"].value == before
        handles["preview (moves your camera)"].value = float("nan")  # no traceback, the slider kept
        assert handles["preview (moves your camera)"].value == 0.0
    finally:
        app.stop()


def _client_camera(**over):
    cam = dict(position=(0.0, 0.0, 2.0), wxyz=(1.0, 0.0, 0.0, 0.0), fov=0.8, aspect=4 / 3)
    cam.update(over)
    return types.SimpleNamespace(**cam)


class _NoPixels:
    position, wxyz, fov = (0.0, 0.0, 2.0), (1.0, 0.0, 0.0, 0.0), 0.8

    @property
    def aspect(self):  # viser's: image_width / image_height, of a client that says height 0
        return 640 / 0


@pytest.mark.parametrize("over", [dict(fov=0.0), dict(fov=math.inf), dict(fov=math.pi), dict(fov=math.nan),
                                  dict(aspect=0.0), dict(aspect=math.nan), dict(position=(math.nan, 0.0, 0.0)),
                                  dict(wxyz=(0.0, 0.0, 0.0, 0.0)), dict(wxyz=(math.nan, 0.0, 0.0, 1.0))])
def test_a_camera_that_cannot_be_rendered_is_refused(over):
    with pytest.raises(UnusableCamera):
        ViewCamera.from_client(_client_camera(**over))


def test_a_camera_of_no_pixels_is_refused_and_a_good_one_kept():
    with pytest.raises(UnusableCamera):
        ViewCamera.from_client(_NoPixels())
    view = ViewCamera.from_client(_client_camera(), scale=2.0)
    assert view.position == (0.0, 0.0, 1.0) and view.unusable() is None
    assert np.isfinite(view.c2w()).all()
