"""``rwf fit KIND ... --view``: the viewer beside a running trainer.

``make_callback(args)`` is the entry point (group ``rwf_render.live``); ``rwf fit`` attaches what it returns to
every Trainer of the process. The callback only *reads* the trainer (``model.state_dict()``, ``step_idx``,
``cfg.steps``, ``history``, ``run_dir``, ``device``, ``task``); the one thing it does to training is wait in
``on_step`` while the page's pause button is down.

    on_start   first trainer: a source on a private copy of the model, the viewer started, its URL printed;
               later trainers (``--compare``): the source switches to a copy of the new model
    on_step    every ``refresh_s`` while a browser is connected: a copy of ``model.state_dict()`` taken here, on
               the training thread between two steps, so a frame never mixes two optimizer steps (no tearing); a
               status line at most once a second; blocks while paused (Ctrl+C ends the pause: the fit saves and
               stops at that step)
    on_eval    the evaluation joins the run panel's metrics and curve
    on_end     a last snapshot; "finished" on the page; after the command's last trainer (``--compare`` trains one
               per parameterization, the viewer switching from one to the next), one line: the viewer stops with
               the process

A viewer that fails in any of these (or cannot serve at all) prints one warning and stops; the fit goes on without
it and writes its outputs. A frame or panel that fails on a viewer thread is one line, and the page goes on.

Training speed: renderers and panels run in viewer threads with one intra-op thread each (``RENDER_THREADS``: the
trainer's thread keeps its own count, OpenMP and MKL counts being per thread; threads that start using torch later
in the process default to one too) and sleep so that together they are busy at most ``duty`` (0.1, a slider on the
page) of the wall time; live
frames are at most ``max_res`` (256) pixels and at most ``MAX_FRAME_S`` of work each (on a CPU, NeRF frames stay
small), full-resolution panels refresh at most every ``PANEL_EVERY_S``, and nothing is rendered while the camera is
still and the frame is current. BENCHMARKS.md has the measured cost.
"""

from __future__ import annotations

import atexit
import math
import sys
import threading
import time

from rwf_render.cli import option_typed
from rwf_render.errors import UserError
from rwf_render.rundir import COMPARE_PARAMS, one_line

from .app import ViewerApp, is_loopback, listen_port, open_port_note
from .sources import Source, live_source, state_copy

DEFAULT_PORT = 8080  # the default of ``rwf fit --port``
LIVE_DUTY = 0.1
REFRESH_S = 2.0
LIVE_MAX_RES = 256
RENDER_THREADS = 1  # the viewer's threads compute on one core; the trainer's thread keeps its intra-op threads
PANEL_EVERY_S = 6.0  # full-resolution panels (image panels, SDF slice) at most this often
MAX_FRAME_S = 1.0  # no live frame is refined beyond the size predicted to take this long


def make_callback(args) -> "LiveViewer":
    """Entry point of ``rwf fit ... --view``: the parsed args carry ``kind``, ``host`` and ``port``. A host the
    viewer cannot listen on, or a port the user typed that is busy, fails here (UserError, exit 2), before the fit
    writes anything; the default port, when busy, moves to the next free one (as ``rwf view``)."""
    host, port = getattr(args, "host", "127.0.0.1"), getattr(args, "port", DEFAULT_PORT)
    move = not option_typed(args, "port", DEFAULT_PORT)  # a port the user typed does not move when busy
    try:
        import viser  # noqa: F401, PLC0415
    except ImportError:
        raise UserError("--view: the viewer needs viser (pip install viser)") from None
    listen_port(host, port, move=move)
    runs = len(COMPARE_PARAMS) if getattr(args, "compare", False) else 1  # --compare: one trainer per param
    return LiveViewer(args.kind, host=host, port=port, move_port=move, runs=runs)


class LiveViewer:
    """Trainer callback serving the viewer; see the module docstring. ``move_port``: a busy ``port`` moves to the
    next free one (the default port); off for a port the user typed, which :func:`make_callback` refuses when busy
    (taken between that check and ``on_start``, it is the viewer failing: a warning, the fit goes on). ``runs``:
    the trainers the command trains one after another (``--compare``: one per parameterization); the viewer stays
    up from one to the next, and says that it closes with the command only after the last."""

    def __init__(self, kind: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT, duty: float = LIVE_DUTY,
                 refresh_s: float = REFRESH_S, max_res: int = LIVE_MAX_RES, verbose: bool = False,
                 move_port: bool = True, runs: int = 1):
        self.kind, self.host, self.port, self.move_port, self.runs = kind, host, port, move_port, runs
        self.duty, self.refresh_s, self.max_res, self.verbose = duty, refresh_s, max_res, verbose
        self.app: ViewerApp | None = None
        self.waiting = threading.Event()  # set while on_step is blocked by the pause button
        self._running = threading.Event()
        self._running.set()
        self._history: list[dict] = []
        self._last_snapshot = self._last_status = -math.inf
        self._t0, self._step0, self._trainers = 0.0, 0, 0
        self._run_dirs: list = []  # of the trainers that finished, in order
        self.failed = False  # the viewer failed and stopped; training went on without it

    # -- pause (from the page) ----------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    # -- trainer callbacks --------------------------------------------------------------------------------------
    # A viewer that fails (cannot serve, a snapshot that cannot be taken, ...) never ends the fit: one warning, the
    # viewer stops, and training goes on headless to write its outputs (see _fail).
    def on_start(self, trainer) -> None:
        self._trainers += 1
        if self.failed:
            return
        try:
            self._start(trainer)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def _start(self, trainer) -> None:
        if self.app is None:
            source = live_source(self.kind, trainer)
            self.app = ViewerApp(source, self.host, self.port, max_res=self.max_res, duty=self.duty, live=self,
                                 verbose=self.verbose, threads=RENDER_THREADS, panel_every_s=PANEL_EVERY_S,
                                 max_frame_s=MAX_FRAME_S, move_port=self.move_port)
            url = self.app.start()
            atexit.register(self.app.stop)  # before viser's own exit handler (LIFO): frames end, then the server
            moved = f"; port {self.port} was busy" if self.port not in (0, self.app.port) else ""
            print(f"rwf: live viewer at {url} (training continues; pause it from the page{moved})", file=sys.stderr,
                  flush=True)
            if not is_loopback(self.host):  # rwf view says so; the live page can also hold the fit paused
                print(f"rwf: live viewer {open_port_note(self.host, live=True)}", file=sys.stderr, flush=True)
        else:  # another trainer of the same command (--compare): show its model from now on
            self.app.source.replace_model(Source.snapshot(trainer.model))
            self.app.notify_model()
        self._history = list(trainer.history)
        self._t0, self._step0 = time.perf_counter(), trainer.step_idx
        self._last_snapshot = -math.inf
        self.app.set_training(trainer.last_eval, self._history, self._status(trainer))

    def on_step(self, trainer, stats: dict) -> None:
        if self.app is None:
            return
        try:
            now = time.perf_counter()
            if self.app.renderers and now - self._last_snapshot >= self.refresh_s:
                self._last_snapshot = now
                self.app.source.offer_state(state_copy(trainer.model))
                self.app.notify_model()
            if now - self._last_status >= 1.0:
                self._last_status = now
                self.app.set_status(self._status(trainer))
            if self.paused:
                self.app.set_status(f"**paused** at step {trainer.step_idx} / {trainer.cfg.steps}")
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return
        if self.paused:
            self._hold(trainer)

    def _hold(self, trainer) -> None:
        """Block between two steps while paused; Ctrl+C (the trainer's ``stop_requested``: it then saves and
        stops) or a failed viewer ends the pause as the resume button does."""
        self.waiting.set()
        # said in the terminal too: a page closed after a pause left the fit waiting without a word there
        print(f"rwf: training paused from the viewer at step {trainer.step_idx}; resume it on the page (or Ctrl+C: "
              "the fit saves a checkpoint and stops)", file=sys.stderr, flush=True)
        try:
            while not self._running.wait(0.2):
                if getattr(trainer, "stop_requested", False) or self.app is None:
                    break
        finally:
            self.waiting.clear()
        if self._running.is_set() and not getattr(trainer, "stop_requested", False):
            print(f"rwf: training resumed at step {trainer.step_idx}", file=sys.stderr, flush=True)
        self._t0, self._step0 = time.perf_counter(), trainer.step_idx  # speed excludes the pause
        if self.app is not None:
            try:
                self.app.set_status(self._status(trainer))
            except Exception as e:  # noqa: BLE001
                self._fail(e)

    def on_eval(self, trainer, metrics: dict) -> None:
        if self.app is None:
            return
        self._history.append({"step": trainer.step_idx, **metrics})
        try:
            self.app.set_training(metrics, self._history)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def on_end(self, trainer) -> None:
        if self.app is None:
            return
        self._run_dirs.append(trainer.run_dir)
        of = f" of {self.runs}" if self.runs > 1 else ""
        try:
            self.app.source.offer_state(state_copy(trainer.model))
            self.app.notify_model()
            self.app.set_status(f"finished: {trainer.step_idx} steps"
                                + (f" (run {self._trainers}{of})" if self._trainers > 1 or of else ""))
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return
        if len(self._run_dirs) < self.runs:  # --compare: the viewer stays and shows the next run as it starts
            return
        last, *others = [d for d in reversed(self._run_dirs) if d] or [None]
        where = f"rwf view {last or 'RUN'} to keep looking" + (
            f"; likewise {', '.join(map(str, reversed(others)))}" if others else "")
        print(f"rwf: training finished; the live viewer closes with this command ({where})", file=sys.stderr,
              flush=True)

    def _fail(self, error: Exception) -> None:
        """The viewer failed: say so in one line, stop it, and let training go on (never paused) without it."""
        self.failed = True
        app, self.app = self.app, None
        self._running.set()
        print(f"rwf: warning: live viewer stopped ({one_line(error)}); training goes on without it",
              file=sys.stderr, flush=True)
        if app is not None:
            try:
                app.stop()
            except Exception:  # noqa: BLE001  (what is left of it goes with the process)
                pass

    def _status(self, trainer) -> str:
        steps = trainer.step_idx - self._step0
        rate = steps / max(time.perf_counter() - self._t0, 1e-9)
        return f"step {trainer.step_idx} / {trainer.cfg.steps}, {rate:.1f} steps/s"
