"""Only the viewer's own page may drive it: a web page elsewhere cannot open its websocket (a bug hunt read a run's
images, saved a camera path and paused a live fit from a page at another origin)."""

import socket
import urllib.error
import urllib.request

import pytest

from test_viewer_app import tiny_image_source
from viewer.origin import ENV, refusal

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
connect = pytest.importorskip("websockets.sync.client", reason="needs websockets >= 12 (viser's)").connect


@pytest.fixture(scope="module")
def viewer():
    from viewer.app import ViewerApp

    app = ViewerApp(tiny_image_source(), port=0)
    app.start()
    yield app
    app.stop()


def _opens(port: int, origin: str | None, host: str | None = None) -> bool:
    """Whether the websocket handshake to the viewer with these Origin and Host headers succeeds (403: refused)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        with connect(f"ws://{host or f'127.0.0.1:{port}'}", sock=sock, origin=origin,
                     subprotocols=["viser-v1.1.1"], open_timeout=20):
            return True
    except Exception as e:  # noqa: BLE001
        assert "403" in str(e), e
        return False


def test_the_viewers_own_page_and_scripts_connect_and_other_pages_do_not(viewer, capfd):
    port = viewer.port
    assert _opens(port, f"http://127.0.0.1:{port}")
    assert _opens(port, None)  # a script (no browser) sends no Origin
    assert _opens(port, f"http://localhost:{port}", host=f"localhost:{port}")
    assert _opens(port, "http://localhost:9000", host="localhost:9000")  # ssh -L 9000:localhost:PORT
    assert not _opens(port, "http://evil.example.com")
    assert not _opens(port, f"http://localhost:{port + 1}")  # another local web page
    assert not _opens(port, "null")
    # a page whose name was re-pointed at 127.0.0.1 (DNS rebinding): its own origin, but not this machine's name
    assert not _opens(port, f"http://evil.example.com:{port}", host=f"evil.example.com:{port}")
    err = capfd.readouterr().err
    assert "viewer: refused a page at http://evil.example.com (not this viewer's own page)" in err
    assert err.count("http://evil.example.com (") == 1  # once per origin, not per request


def test_a_page_from_another_origin_gets_no_file_either(viewer):
    request = urllib.request.Request(f"http://127.0.0.1:{viewer.port}/", headers={"Origin": "http://evil.example.com"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=20)
    assert e.value.code == 403
    with urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=20) as page:  # the user's browser
        assert page.status == 200 and b"<html" in page.read().lower()


@pytest.mark.parametrize("bound, headers, refused", [
    ("127.0.0.1", {"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080"}, False),
    ("127.0.0.1", {"Host": "127.0.0.1:8080", "Origin": "HTTP://127.0.0.1:8080/"}, False),
    ("127.0.0.1", {"Host": "[::1]:8080", "Origin": "http://[::1]:8080"}, False),
    ("127.0.0.1", {"Host": "127.0.0.1:8080", "Origin": "https://127.0.0.1:8080"}, False),
    ("127.0.0.1", {"Host": "127.0.0.1:8080", "Origin": "file://"}, True),
    ("127.0.0.1", {"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8081"}, True),
    ("127.0.0.1", {"Host": "rebind.example:8080"}, True),
    ("127.0.0.1", {}, True),
    ("0.0.0.0", {"Host": "gpu-box:8080", "Origin": "http://gpu-box:8080"}, False),  # --host 0.0.0.0: any name
    ("0.0.0.0", {"Host": "gpu-box:8080", "Origin": "http://evil.example.com"}, True),
    ("0.0.0.0", {"Host": "gpu-box:8080"}, False),
    ("127.0.0.1", [("Host", "127.0.0.1:8080"), ("Host", "evil.example.com")], True)])
def test_the_rule(bound, headers, refused):
    if isinstance(headers, list):  # two headers of one name, as a request may carry them
        from websockets.datastructures import Headers

        headers = Headers(headers)
    assert (refusal(bound, headers) is not None) is refused


def test_more_origins_from_the_environment(monkeypatch):
    headers = {"Host": "127.0.0.1:8080", "Origin": "https://hub.example.org"}
    assert refusal("127.0.0.1", headers) is not None
    monkeypatch.setenv(ENV, " https://other.example, HTTPS://hub.example.org/ ")
    assert refusal("127.0.0.1", headers) is None
