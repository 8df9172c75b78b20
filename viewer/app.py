"""The viewer application: a viser server showing one source, its panels, and one renderer per browser.

    app = ViewerApp(source, host="127.0.0.1", port=8080)
    url = app.start()          # serves in background threads; prints nothing
    ...                        # app.clients_seen, app.frames_sent; app.set_training(metrics, history)
    app.stop()

viser serves its bundled web client (no network needed). A background "panel" thread recomputes the panels that
depend on the model (image panels, SDF slice) after a new live snapshot, under the same duty cycle as the frames.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import socket
import sys
import threading
import time

import numpy as np

from rwf_render.errors import UserError
from rwf_render.rundir import one_line

from . import origin, panels
from .render_loop import ClientRenderer, DutyCycle, RenderSettings, limit_threads, work_clock
from .sources import INITIAL_FOV, Source, run_history, run_metrics

UP_CHOICES = ("auto", "+x", "+y", "+z", "-x", "-y", "-z")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is reached from this machine only (127.0.0.1, ::1, localhost, a name under .localhost)."""
    import ipaddress  # noqa: PLC0415

    if not host:
        return False
    if str(host).lower() == "localhost" or str(host).lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def open_port_note(host: str, live: bool) -> str:
    """What a viewer listening on a host others can reach gives them, said in the terminal."""
    rights = "sees the run, pauses the training and saves camera paths in the run folder" if live else \
        "sees the run and saves camera paths in its folder"
    return f"listening on {host}: whoever reaches this port {rights}"


def listen_port(host: str, port: int, move: bool = True) -> int:
    """The port to serve on: ``port`` if it is free on ``host``, else (``move``) the next free one (0 stays 0: the
    system picks). UserError when ``host`` is not an address of this machine, when ``port`` is busy and not
    ``move`` (a port the user typed), or when no port up to 65535 is free.

    viser itself tries ports upwards and, when none binds (a host that is not this machine's, or 65535 busy),
    blocks forever without a word; this probe makes that one readable error instead.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host}: not an address or host name this machine can resolve ({e})") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    for candidate in ([0] if port == 0 else range(port, 65536)):
        bound, busy, why = 0, False, None
        for family, address in addresses:  # the server listens on every address the host resolves to
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own socket does
                try:
                    probe.bind((address[0], candidate, *address[2:]))
                    bound += 1
                except OSError as e:
                    busy, why = busy or e.errno == errno.EADDRINUSE, why or e
        if busy and not move:
            raise UserError(f"--port {port}: busy on {host} (another program listens there); choose another "
                            "port, or --port 0 for any free one")
        if busy:
            continue
        if not bound:
            raise UserError(f"--host {host}: cannot listen there ({why.strerror or why}); use an address of this "
                            "machine (127.0.0.1, or 0.0.0.0 for every interface)")
        return candidate
    raise UserError(f"--port {port}: no free port from {port} to 65535 on {host}")


class ViewerApp:
    """See the module docstring.

    Args:
        source: what to show.
        host, port: where to listen (port 0: any free port; a busy port moves to the next free one, unless
            ``move_port`` is off: then it is a UserError).
        max_res: initial maximum resolution (longer side, pixels).
        duty: share of wall time the renderers may use (1.0 for ``rwf view``; less when training runs beside).
        up: "auto" (the source's) or one of "+x", "-x", "+y", ... .
        live: the :class:`~viewer.live.LiveViewer` when training runs in this process (adds the training panel).
        verbose: print one line per frame sent.
        threads: intra-op threads of the viewer's rendering threads (None: torch's default; 1 beside a trainer).
        panel_every_s: least time between two refreshes of the model-dependent panels (live snapshots).
        max_frame_s: no refinement beyond the size predicted to take this long (None: up to max_res).
    """

    def __init__(self, source: Source, host: str = "127.0.0.1", port: int = 8080, max_res: int = 512,
                 duty: float = 1.0, up: str = "auto", live=None, verbose: bool = False, label: str | None = None,
                 threads: int | None = None, panel_every_s: float = 0.0, max_frame_s: float | None = None,
                 move_port: bool = True):
        self.source, self.host, self.port, self.live, self.verbose = source, host, port, live, verbose
        self.move_port = move_port
        self.threads, self.panel_every_s = threads, panel_every_s
        self.settings = RenderSettings(mode=source.default_mode, max_res=max_res, max_frame_s=max_frame_s)
        self.duty = DutyCycle(duty)
        self.up = up
        self.label = label or (f"rwf {source.kind}: {source.run.name}" if source.run else f"rwf {source.kind}")
        self.metrics = run_metrics(source.run) if live is None else {}
        self.history = run_history(source.run) if live is None else []
        self.renderers: dict[int, ClientRenderer] = {}
        self._leaving: list[ClientRenderer] = []  # of browsers gone, perhaps still inside a frame
        self.clients_seen = 0
        self.frames_sent = 0
        self.server = None
        self._panel_thread: threading.Thread | None = None
        self._server_stopped = False
        self._panel_wake, self._stop = threading.Event(), threading.Event()
        self._panels_dirty = False
        self._initial: tuple | None = None  # (position, look_at, up) of server.initial_camera
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving; returns the URL to open."""
        import viser  # noqa: PLC0415

        # a connection that closes before its handshake (a port probe, a browser's speculative preconnect) is
        # harmless, but the websockets library logs it with a traceback; keep the user's terminal clean
        logging.getLogger("websockets.server").setLevel(logging.CRITICAL)
        # viser would wait forever for a host or port it cannot bind
        port = listen_port(self.host, self.port, self.move_port)
        origin.guard()  # only this viewer's own page may drive it (any web site may reach 127.0.0.1)
        with contextlib.redirect_stdout(io.StringIO()):  # viser's own banner; the caller prints the URL
            self.server = viser.ViserServer(host=self.host, port=port, label=self.label, verbose=False)
        try:
            self._build_page()
        except BaseException:  # a page that cannot be built: no server left running behind the error
            self.stop()
            raise
        return self.url

    def _build_page(self) -> None:
        self.port = self.server.get_port()
        self._setup_scene()
        panels.add_render_controls(self)
        if self.live is not None:
            panels.add_training_panel(self, self.live)
        self.source.setup_gui(self.server)
        panels.add_run_panel(self)
        self.recorder = panels.CameraPathRecorder(self)
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        self._panel_thread = threading.Thread(target=self._panel_loop, daemon=True, name="viewer-panels")
        self._panel_thread.start()

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def stop(self) -> None:
        """Stop rendering (waiting for frames in progress, so no thread is inside torch when Python exits), then
        the server. Safe to call twice."""
        self._stop.set()
        self._panel_wake.set()
        for r in list(self.renderers.values()) + self._leaving:  # a thread left inside torch at exit aborts Python
            r.stop(join=30.0)
        if self._panel_thread is not None and self._panel_thread is not threading.current_thread():
            self._panel_thread.join(30.0)
        self.source.close()
        if self.server is not None and not self._server_stopped:
            self._server_stopped = True
            # viser then prints "(viser) Server stopped" from its own thread, whatever verbose=False (viser 1.1.1:
            # an unconditional rich.print); only swapping the process's stdout would hide it, others' lines too
            self.server.stop()

    def serve_forever(self) -> None:
        """Block until :meth:`stop` (from another thread) or Ctrl+C / SIGTERM; the KeyboardInterrupt propagates
        after the server has stopped, so the command exits 130 as interrupted commands do."""
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()

    # -- scene --------------------------------------------------------------------------------------------------
    def up_vector(self) -> np.ndarray:
        if self.up == "auto":
            return np.asarray(self.source.up, np.float64)
        v = np.zeros(3)
        v["xyz".index(self.up[1])] = 1.0 if self.up[0] == "+" else -1.0
        return v

    def _setup_scene(self) -> None:
        self.server.scene.set_up_direction(self.up_vector())
        self._set_initial_camera()
        self.server.initial_camera.fov = INITIAL_FOV
        self.source.setup_scene(self.server)

    def _set_initial_camera(self) -> None:
        """The view of browsers that connect next and of "reset view": the source's initial view (in viewer units)
        with the up direction. Called again after the panels refresh: a reloaded checkpoint can move the training
        cameras it starts from; viser moves no browser already connected, and the scene's up direction stays as
        set at start (turning it would tilt every browser's orbit)."""
        position, look_at = (np.asarray(v, np.float64) * self.source.view_scale for v in self.source.initial_view())
        up = self.up_vector()
        if self._initial is not None and all(np.array_equal(a, b) for a, b in zip(self._initial,
                                                                                   (position, look_at, up))):
            return
        self._initial = (position, look_at, up)
        cam = self.server.initial_camera
        cam.position, cam.look_at, cam.up = position, look_at, up

    # -- clients ------------------------------------------------------------------------------------------------
    # The three client callbacks are coroutines: viser runs them in its event loop (they only set events and start
    # a thread), not in its thread pool, which Python shuts down before viser's own exit handler runs.
    async def _connect(self, client) -> None:
        with self._lock:
            self.clients_seen += 1
        print(f"viewer: client {client.client_id} connected", flush=True)
        renderer = ClientRenderer(client, self.source, self.settings, self.duty, on_frame=self._on_frame,
                                  threads=self.threads, on_error=self._on_error)
        self.renderers[client.client_id] = renderer

        async def moved(_):
            renderer.notify_camera()

        client.camera.on_update(moved)
        renderer.start()
        if self._panels_dirty:
            self._panel_wake.set()

    async def _disconnect(self, client) -> None:
        renderer = self.renderers.pop(client.client_id, None)
        if renderer is not None:
            renderer.stop()  # ends after the strip it renders (seconds for a NeRF on a CPU): stop() waits for it
            self._leaving = [r for r in self._leaving if r.is_alive()] + [renderer]
        print(f"viewer: client {client.client_id} disconnected", flush=True)

    def _on_frame(self, client_id: int, frame, side: int) -> None:
        with self._lock:
            self.frames_sent += 1
        h, w = frame.rgb.shape[:2]
        text = f"{w}x{h} {self.settings.mode}: {1000 * frame.seconds:.0f} ms"
        self.frame_status.content = f"last frame {text}"
        if self.verbose:
            print(f"viewer: frame for client {client_id}: {text}", flush=True)

    def _on_error(self, client_id: int, error: Exception) -> None:
        """A frame failed (the renderer goes on after the next change): one line here and on the page."""
        why = one_line(error)
        self.frame_status.content = f"**frame failed:** {why}"
        print(f"viewer: frame for client {client_id} failed ({why}); move the camera or lower the resolution to "
              "try again", file=sys.stderr, flush=True)

    def notify_renderers(self) -> None:
        for r in list(self.renderers.values()):
            r.notify_change()

    # -- live updates (called from the training thread; cheap) --------------------------------------------------
    def notify_model(self) -> None:
        """A new snapshot was offered to the source: re-render every browser and refresh the panels."""
        self._panels_dirty = True
        self._panel_wake.set()
        self.notify_renderers()

    def set_training(self, metrics: dict, history: list[dict], status: str | None = None) -> None:
        self.metrics, self.history = dict(metrics), list(history)
        if status is not None and hasattr(self, "train_status"):
            self.train_status.content = status
        self._panel_wake.set()

    def set_status(self, status: str) -> None:
        if hasattr(self, "train_status"):
            self.train_status.content = status

    def _panel_loop(self) -> None:
        limit_threads(self.threads)
        clock = work_clock(self.threads, getattr(self.source, "device", None))
        shown_history, last_refresh, failed = None, -math.inf, None
        while not self._stop.is_set():
            wait = last_refresh + self.panel_every_s - time.perf_counter() if self._panels_dirty else None
            self._panel_wake.wait(None if wait is None else max(wait, 0.0))
            self._panel_wake.clear()
            if self._stop.is_set():
                return
            t0, c0 = time.perf_counter(), clock()
            due = t0 - last_refresh >= self.panel_every_s
            try:
                if self._panels_dirty and self.renderers and due:  # nobody watching: skip the model's panels
                    self._panels_dirty, last_refresh = False, t0
                    self.source.sync()
                    self.source.refresh_gui()
                    self._set_initial_camera()
                if shown_history is not self.history:
                    shown_history = self.history
                    panels.update_run_panel(self)
            except Exception as e:  # noqa: BLE001  the panels stay as they were; the next change tries again
                why = one_line(e)
                if why != failed:
                    print(f"viewer: panels not refreshed ({why})", file=sys.stderr, flush=True)
                failed = why
            else:
                failed = None
            self.duty.rest(clock() - c0, self._stop)  # the thread's CPU time beside a trainer (work_clock)
