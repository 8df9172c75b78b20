"""End to end: ``rwf view`` on a free port, the page loaded in headless Chromium (software WebGL), a screenshot
that shows the rendered field, and the server's record of the client connecting and being sent frames.

Chromium is driven over the DevTools protocol (``--remote-debugging-port``): the screenshot is taken once the
server reports the full-resolution frame, instead of guessing a time budget.
"""

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rwf_render import cli

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install "
                                                          "chromium; .ci/run installs it)")]


class Lines:
    """Collects a subprocess's output lines in a thread; ``wait(pattern)`` returns the first match."""

    def __init__(self, stream):
        self.lines, self.cond = [], threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pattern: str, timeout: float) -> re.Match:
        def find():
            return next((m for m in map(re.compile(pattern).search, self.lines) if m), None)

        with self.cond:
            assert self.cond.wait_for(find, timeout), f"no line matching {pattern!r} in:\n" + "\n".join(self.lines)
            return find()


class Chromium:
    """Headless Chromium with software WebGL (SwiftShader), one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path, size=(800, 600)):
        # Chromium keeps its singleton socket in a folder of its own under TMPDIR and does not remove it on exit,
        # so each run left one in /tmp: give it a short-lived TMPDIR (short: a socket path has at most 107 bytes,
        # too few for pytest's tmp_path) and remove that on close.
        self.tmp = tempfile.mkdtemp(prefix="rwf-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
             "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
             "--remote-debugging-port=0", "about:blank"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True, env={**os.environ, "TMPDIR": self.tmp})
        port = Lines(self.proc.stderr).wait(r"DevTools listening on ws://[^:]+:(\d+)/", 60).group(1)
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        from websockets.sync.client import connect

        self.ws = connect(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"],
                          max_size=64 * 2**20)
        self.n = 0

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg["result"]

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
            shutil.rmtree(self.tmp, ignore_errors=True)


def test_view_serves_a_page_that_shows_the_rendered_field(tmp_path):
    pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
    pytest.importorskip("websockets.sync.client", reason="driving Chromium needs websockets >= 12 (viser's)")
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--out", str(run), "--size", "32", "--steps", "30", "--width", "32",
                     "--features", "32", "--split", "all", "--quiet"]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "rwf_render", "view", str(run), "--port", "0", "--max-res", "256",
                               "--verbose"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    out = Lines(server.stdout)
    browser = None
    try:
        url = out.wait(r"viewer: image run .* at (http://127\.0\.0\.1:\d+)", 120).group(1)
        browser = Chromium(tmp_path / "profile")
        browser.call("Page.navigate", url=url)
        client = out.wait(r"viewer: client (\d+) connected", 120).group(1)
        # progressive rendering ends with a frame whose longer side is --max-res
        out.wait(rf"viewer: frame for client {client}: 256x\d+ ", 180)
        shot = None
        for _ in range(20):  # the browser decodes and draws the frame shortly after it arrives
            shot = browser.screenshot()
            h, w = shot.shape[:2]
            # left of the GUI panel, below where viser's white "Software WebGL rendering detected" notice opens in
            # the top-left corner (new in Chromium 150 without a GPU: it covered 14 % of the old region)
            centre = shot[h // 2: 5 * h // 6, w // 6: w // 2].astype(float) / 255
            if (centre.min(-1) > 0.95).mean() < 0.1:
                break
            threading.Event().wait(1.0)
        assert shot.std() > 5, "blank or uniform screenshot"
        # viser's empty scene is white there; the field drawn on the image plane is neither white nor flat
        assert (centre.min(-1) > 0.95).mean() < 0.1, "the rendered frame is not on the page"
        assert centre.std() > 0.03
    finally:
        if browser is not None:
            browser.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
