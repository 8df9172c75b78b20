"""``rwf fit ... --view --port N`` treats a busy port as ``rwf view`` does: a port the user typed is refused (one
line, exit 2, before anything is written or trained); the default port moves to the next free one."""

import contextlib
import errno
import re
import socket
import subprocess
import sys

import pytest

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
DEFAULT_PORT = 8080  # rwf fit's default --port


@contextlib.contextmanager
def busy(port: int):
    """Keep ``port`` (0: any free one) busy on 127.0.0.1 with a listening socket; yields the port. A port another
    program already listens on is busy as well."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the viewer's probe and server do
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
        yield port or s.getsockname()[1]


def fit_with_view(run, *port_args: str) -> subprocess.CompletedProcess:
    """A tiny ``rwf fit image --view`` through the installed entry point (the process ends with the fit)."""
    return subprocess.run([sys.executable, "-m", "rwf_render", "fit", "image", "--size", "16", "--steps", "2",
                           "--width", "16", "--features", "16", "--view", "--quiet", "--out", str(run), *port_args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("typed", ["any", "default"])
def test_typed_busy_port_is_one_error_before_the_run(tmp_path, typed):
    """A busy port the user typed, even the default value typed out, is exit 2 with one line naming the port;
    training never starts and no run folder is written."""
    run = tmp_path / "run"
    with busy(0 if typed == "any" else DEFAULT_PORT) as port:
        r = fit_with_view(run, "--port", str(port))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rwf: error: ") and f"--port {port}: busy" in lines[0], r.stderr
    assert "live viewer at" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert not run.exists() and list(tmp_path.iterdir()) == []


def test_default_port_moves_when_busy(tmp_path):
    """Without --port, a busy default port moves to a free one: training runs, and the message says so."""
    run = tmp_path / "run"
    with busy(DEFAULT_PORT):
        r = fit_with_view(run)
    assert r.returncode == 0, r.stderr
    served = re.search(r"live viewer at http://127\.0\.0\.1:(\d+)", r.stdout + r.stderr)
    assert served and int(served.group(1)) != DEFAULT_PORT, r.stderr
    assert f"port {DEFAULT_PORT} was busy" in r.stderr
    assert (run / "metrics.json").is_file()
