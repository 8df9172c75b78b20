"""Progressive rendering for one browser: small frames while its camera moves, sharper ones once it stops.

One thread per connected client. Every change (camera, render mode, maximum resolution, a new model snapshot)
bumps a version; the thread renders the newest version at the *moving* size (chosen from the measured cost per
pixel so that a frame takes about ``MOVING_BUDGET_S``), and once the camera has been still for ``STILL_AFTER_S`` it
doubles the size until it reaches the maximum resolution. Then it sleeps until the next change: a still camera over
an unchanged model costs nothing. A refinement frame is abandoned between strips when the camera moves or the
settings change (not for a new live snapshot).
New content under a still camera (a live snapshot) is redrawn at the sharpness already shown when that fits
``CONTENT_BUDGET_S``, so live training does not blur the picture every refresh. A frame that raises (a GPU out of
memory at a large size) is reported once and not retried as it is; the thread waits for the next change.

A :class:`DutyCycle` shared by every viewer thread caps the share of wall time they spend working (live training:
the trainer keeps the rest). Beside a trainer on the CPU, work is the thread's own CPU time (:func:`work_clock`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

from .camera import UnusableCamera, ViewCamera, image_size
from .sources import Frame, Source, render_view, to_uint8, viser_depth

MOVING_BUDGET_S = 0.1  # target seconds per frame while the camera moves
STILL_AFTER_S = 0.25  # the camera counts as still this long after its last update
CONTENT_BUDGET_S = 1.0  # new content from a still camera is first shown at the current sharpness if it fits this
MIN_SIDE = 32
STRIP_S = 0.25  # time-limited frames (live) render in strips of about this long, checking the time between them
PROBE_STRIP = 1024  # pixels per strip while the cost per pixel is unknown
FIRST_SIDE = 64  # before any cost is measured


@dataclass
class RenderSettings:
    """Shared by every client; the GUI edits them. ``mode`` is a render mode of the source, or "off"."""

    mode: str
    max_res: int = 512
    jpeg_quality: int = 85
    max_frame_s: float | None = None
    """refinement stops at the size whose predicted time is this (live training: bounds each burst of work)"""


class DutyCycle:
    """A budget shared by every viewer thread: after ``busy`` seconds of work a thread waits until the viewer as a
    whole has been idle ``busy * (1 / duty - 1)`` seconds for it, so all threads together work at most ``duty`` of
    the wall time (1.0: never wait). ``duty`` may be changed at any time (the page's slider)."""

    def __init__(self, duty: float = 1.0):
        if not 0 < duty <= 1:
            raise ValueError(f"duty must be in (0, 1], got {duty}")
        self.duty = duty
        self._free_at = 0.0  # monotonic time when the rests owed so far are over
        self._lock = threading.Lock()

    def rest(self, busy_seconds: float, stop: threading.Event) -> None:
        if self.duty >= 1:
            return
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + busy_seconds * (1 / self.duty - 1)
            wait = self._free_at - now
        stop.wait(wait)


BACKGROUND_NICE = 19  # beside a trainer, the viewer's threads take whatever CPU the trainer leaves


def work_clock(threads: int | None, device) -> callable:
    """The clock that measures a viewer thread's work (duty cycle, cost per pixel, abandoning a frame): its own CPU
    time when it computes on one CPU thread beside a trainer, else wall time. A nice-19 thread on a busy CPU waits
    for the cores: on a loaded 2-core machine 0.1 s of rendering took 3 s of wall time, so frames were abandoned as
    too slow, sizes fell to the minimum and the duty cycle rested 9 times those 3 s (no frame in 31 s). On a GPU,
    and with several intra-op threads, the thread's CPU time is not the work: wall time."""
    if threads == 1 and getattr(device, "type", "cpu") == "cpu":
        return time.thread_time
    return time.perf_counter


def limit_threads(n: int | None) -> None:
    """Give the calling thread ``n`` intra-op threads (None: leave torch's default).

    OpenMP and MKL thread counts are per calling thread, so the trainer's thread keeps its own; torch also records
    ``n`` as the default of threads that start using torch afterwards. With ``n`` set (beside a trainer) the calling
    thread also gets the lowest scheduling priority (Linux nice 19 for this thread only): on a machine with as many
    cores as training threads, a viewer thread that preempts one training thread stalls the other at the next
    OpenMP barrier, which cost 2 to 3 times the viewer's own CPU time in training speed.
    """
    if n is not None:
        import torch  # noqa: PLC0415

        torch.set_num_threads(n)
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        except (AttributeError, OSError):  # not Linux, or not allowed: keep the normal priority
            pass


class ClientRenderer:
    """Renders ``source`` for one viser client; see the module docstring.

    Args:
        client: a viser ``ClientHandle`` (its ``camera`` and ``scene.set_background_image`` are used).
        source: what to render.
        settings: shared render settings.
        duty: shared duty cycle.
        on_frame: optional ``on_frame(client_id, frame, long_side)`` after each frame is sent.
        on_error: optional ``on_error(client_id, exception)`` when a frame raised (the thread goes on; see _failed).
        threads: intra-op threads of this renderer (None: torch's default; 1 beside a trainer, see limit_threads).
    """

    def __init__(self, client, source: Source, settings: RenderSettings, duty: DutyCycle, on_frame=None,
                 threads: int | None = None, on_error=None):
        self.client, self.source, self.settings, self.duty = client, source, settings, duty
        self.on_frame, self.threads, self.on_error = on_frame, threads, on_error
        self._clock = work_clock(threads, getattr(source, "device", None))
        self._last_error: str | None = None
        self._done_if_failed = None  # what _done becomes when the frame being rendered fails
        self.version = self.camera_version = 0  # settings / model changes; camera moves
        self.last_move = -math.inf
        self.has_camera = False
        self.sec_per_pixel: float | None = None
        self._cost_version = -1  # the model version sec_per_pixel was measured on
        self.frames = 0
        self._done = (None, 0)  # (content key, long side) of the last frame sent
        self._off_sent = False
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"render-client-{client.client_id}")

    # -- events (any thread) ------------------------------------------------------------------------------------
    def start(self) -> "ClientRenderer":
        self._thread.start()
        return self

    def stop(self, join: float | None = None) -> None:
        """Stop rendering; with ``join``, wait up to that many seconds for a frame in progress to end."""
        self._stop.set()
        self._wake.set()
        if join is not None and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(join)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def notify_camera(self) -> None:
        self.has_camera = True
        self.last_move = time.monotonic()
        self.camera_version += 1
        self._wake.set()

    def notify_change(self) -> None:
        self.version += 1
        self._wake.set()

    def _key(self) -> tuple:
        return (self.camera_version, self.version, self.source.version)

    # -- sizes --------------------------------------------------------------------------------------------------
    def side_for(self, budget_s: float, aspect: float) -> int:
        """Long side of a frame that should take about ``budget_s`` (a multiple of 8, within the limits)."""
        if self.sec_per_pixel is None:
            side = FIRST_SIDE
        else:
            pixels = budget_s / self.sec_per_pixel
            side = int(math.sqrt(pixels * max(aspect, 1 / max(aspect, 1e-3)))) // 8 * 8
        return max(MIN_SIDE, min(side, self.settings.max_res))

    def next_side(self, key, moving: bool, aspect: float) -> int | None:
        """The long side to render next for ``key`` = (camera version, settings version, model version), or None
        when the frame shown is good enough.

        A moved camera starts over at the moving size; new content seen from the same camera (a live snapshot, a
        mode) keeps the sharpness shown so far, as long as a frame fits in ``CONTENT_BUDGET_S``.
        """
        done_key, done_side = self._done
        move = self.side_for(MOVING_BUDGET_S, aspect)
        top = self.settings.max_res
        if self.settings.max_frame_s is not None:
            top = max(move, min(top, self.side_for(self.settings.max_frame_s, aspect)))
        if key != done_key:
            if done_key is not None and key[0] == done_key[0] and not moving:
                return max(move, min(done_side, top, self.side_for(CONTENT_BUDGET_S, aspect)))
            return move
        if moving or done_side >= top:
            return None
        return min(top, max(2 * done_side, move))

    # -- the loop -----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        limit_threads(self.threads)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._once()
            except Exception as e:  # noqa: BLE001  (out of memory at a large size, a field that cannot render)
                self._failed(e)
                self._wake.wait()  # until the next change (camera, settings, model)

    def _once(self) -> None:
        """One step of the loop: render and send the next frame, or wait for a change."""
        if not self.has_camera:
            self._wake.wait()
            return
        if self.settings.mode == "off":
            if not self._off_sent:
                self.client.scene.set_background_image(None)
                self._off_sent, self._done = True, (None, 0)
            self._wake.wait()
            return
        self._off_sent = False
        self.source.sync()
        key = self._key()
        since = time.monotonic() - self.last_move
        moving = since < STILL_AFTER_S
        try:
            view = ViewCamera.from_client(self.client.camera, self.source.view_scale)
        except AssertionError:  # no camera message yet
            self._wake.wait(0.05)
            return
        except UnusableCamera:  # a client's camera that cannot be rendered: nothing drawn until the next one
            self._wake.wait(0.25)
            return
        side = self.next_side(key, moving, view.aspect)
        if side is None:
            self._wake.wait(STILL_AFTER_S - since + 0.01 if moving else None)
            return
        w, h = image_size(side, view.aspect)
        t0 = self._clock()
        self._done_if_failed = (key, max(side, self.settings.max_res))  # a failed frame is not refined further
        try:
            frame = render_view(self.source, view, side, self.settings.mode,
                                should_stop=self._stopper(key, key == self._done[0], w * h, t0),
                                strip_pixels=self._strip_pixels())
            cost = self._clock() - t0
            if frame is not None and not self._stop.is_set():  # not to a browser gone (viser warns)
                self._send(frame)
        finally:  # rendering, encoding and sending count against the duty cycle, abandoned or failed too
            self.duty.rest(self._clock() - t0, self._stop)
        self._done_if_failed = None
        if frame is None or self._stop.is_set():  # abandoned
            return
        self._last_error = None
        spp = cost / (w * h)
        fresh = self.sec_per_pixel is None or self._cost_version != key[2]
        self.sec_per_pixel = spp if fresh else 0.5 * (self.sec_per_pixel + spp)
        self._cost_version = key[2]
        self._done = (key, side)
        self.frames += 1
        if self.on_frame is not None:
            self.on_frame(self.client.client_id, frame, side)

    def _failed(self, error: Exception) -> None:
        """A frame raised: the thread lives on and tries again after the next change (a camera move starts over at
        the small moving size, which often fits where a large frame ran out of memory). ``on_error(client_id,
        error)`` says why, once per distinct error in a row."""
        if self._done_if_failed is not None:
            self._done, self._done_if_failed = self._done_if_failed, None
        if self.on_error is not None and str(error) != self._last_error:
            try:
                self.on_error(self.client.client_id, error)
            except Exception:  # noqa: BLE001  (the page itself is gone: nothing left to tell)
                pass
        self._last_error = str(error)

    def _stopper(self, key, refining: bool, pixels: int, t0: float):
        """should_stop(pixels_done) for one frame: on stop; for a refinement, when the camera moved or the settings
        changed (not for a new live snapshot: it is seconds old); with ``max_frame_s``, when the strips done so far
        predict more than twice that (the cost per pixel of a field changes as it trains: learn it and go smaller).
        """
        limit = None if self.settings.max_frame_s is None else 2 * self.settings.max_frame_s

        def should_stop(done: int) -> bool:
            if self._stop.is_set() or (refining and self._key()[:2] != key[:2]):
                return True
            if limit is not None and done > 0:
                spp = (self._clock() - t0) / done
                if spp * pixels > limit:
                    self.sec_per_pixel = max(self.sec_per_pixel or 0.0, spp)
                    return True
            return False
        return should_stop

    def _strip_pixels(self) -> int | None:
        """Time-limited frames (live): strips of about STRIP_S at the known cost per pixel, or of PROBE_STRIP
        pixels while that cost is unknown or the model changed since it was measured (a field in training can
        become 100 times slower to render, as a NeRF whose occupancy grid is still mostly full). Otherwise the
        source's strips."""
        if self.settings.max_frame_s is None:
            return None
        if self.sec_per_pixel is None or self._cost_version != self.source.version:
            return PROBE_STRIP
        return int(min(max(STRIP_S / self.sec_per_pixel, PROBE_STRIP), self.source.strip_pixels))

    def _send(self, frame: Frame) -> None:
        self.client.scene.set_background_image(to_uint8(frame.rgb), format="jpeg",
                                               jpeg_quality=self.settings.jpeg_quality,
                                               depth=viser_depth(frame.depth, self.source.view_scale))
