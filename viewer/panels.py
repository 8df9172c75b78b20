"""GUI panels shared by every run kind: render controls, metrics and training curve, camera path, training.

Each ``add_*`` function takes the :class:`~viewer.app.ViewerApp` and adds one folder to its viser GUI.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from rwf_render.errors import UserError

from .camera import UnusableCamera, ViewCamera, viser_pose
from rwf_render.camera_path import MAX_FPS, MAX_FRAMES, MIN_FPS, interpolate, save_camera_path

SKIP_CURVE = ("step", "seconds", "lr")
OFF_TEXT = "field render off: the 3D scene only"


def on_checked_update(handle, callback) -> None:
    """``handle.on_update(callback)`` for the values the page offers only. viser passes on what a client sends
    unchecked (a bug hunt's websocket client set "max resolution" to 4096 on a slider ending at 2048: a 1 GB frame;
    "mode" to a name no source has; a preview position of NaN or 5: tracebacks): a number outside the control's
    range is clamped to it, a value outside a dropdown's options or a number that is not finite is put back to the
    last good one, and ``callback`` sees good values only (the page is sent the value kept)."""
    good, reverting = [handle.value], [False]

    def checked(ev):
        if reverting[0]:  # the value put back: the callback has seen it
            return
        value = handle.value
        kept = _offered(handle, value)
        if kept is None:
            reverting[0] = True
            try:
                handle.value = good[0]  # viser's setter sends it to the page (and calls back)
            finally:
                reverting[0] = False
            return
        if type(kept) is not type(value) or kept != value:
            handle.value = kept  # clamped: viser's setter sends it to the page and calls back with it
            return
        good[0] = kept
        callback(ev)

    handle.on_update(checked)


def _offered(handle, value):
    """``value`` if the control ``handle`` offers it, clamped into a number control's range; None: not offered."""
    options = getattr(handle, "options", None)
    if options is not None:
        return value if value in tuple(options) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value  # a checkbox, a text: any value is the user's
    if not math.isfinite(value):
        return None
    lo, hi = getattr(handle, "min", None), getattr(handle, "max", None)
    if lo is not None and value < lo:
        return type(value)(lo)
    if hi is not None and value > hi:
        return type(value)(hi)
    return value


# -- render controls -----------------------------------------------------------------------------------------------
def add_render_controls(app) -> None:
    gui, settings = app.server.gui, app.settings
    with gui.add_folder("Render"):
        modes = tuple(app.source.modes)
        mode = gui.add_dropdown("mode", modes, initial_value=settings.mode)
        # the range holds any --max-res the command accepts (32..4096): viser refuses a start value outside it
        res = gui.add_slider("max resolution", min(64, settings.max_res), max(2048, settings.max_res), 32,
                             settings.max_res,
                             hint="longer side of the sharpest frame; smaller frames while the camera moves")
        app.frame_status = gui.add_markdown(OFF_TEXT if settings.mode == "off" else "waiting for a browser camera")

    def set_mode(ev):
        settings.mode = ev.target.value
        if settings.mode == "off":
            app.frame_status.content = OFF_TEXT
        app.notify_renderers()

    def set_res(ev):
        settings.max_res = int(ev.target.value)
        app.notify_renderers()

    on_checked_update(mode, set_mode)
    on_checked_update(res, set_res)


# -- metrics and training curve ------------------------------------------------------------------------------------
def metrics_markdown(metrics: dict) -> str:
    if not metrics:
        return "no metrics yet"
    lines = ["| metric | value |", "|---|---|"]
    for k, v in metrics.items():
        if v is None or k.endswith("_note"):  # an absent figure (lpips without its weights) and why: not a row
            continue
        if isinstance(v, float):
            v = "-" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"
        elif isinstance(v, (dict, list)):
            continue
        lines.append(f"| {k} | {v} |")
    return "\n".join(lines)


def curve_columns(history: list[dict]) -> list[str]:
    cols = []
    for row in history:
        cols += [k for k, v in row.items() if k not in cols and k not in SKIP_CURVE and isinstance(v, (int, float))]
    preferred = [c for c in ("psnr", "iou", "psnr_train", "iou_surface", "loss") if c in cols]
    return preferred + [c for c in cols if c not in preferred]


def curve_data(history: list[dict], column: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[column]) for r in history if "step" in r and isinstance(r.get(column), (int, float))
            and math.isfinite(r[column])]
    if not rows:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*rows)
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def add_run_panel(app) -> None:
    """Metrics (metrics.json, or the last evaluation while training) and one history column against step."""
    gui = app.server.gui
    with gui.add_folder("Run"):
        app.metrics_md = gui.add_markdown(metrics_markdown(app.metrics))
        cols = curve_columns(app.history) or ["iou" if app.source.kind == "sdf" else "psnr"]  # a fit's first
        app.curve_column = gui.add_dropdown("curve", tuple(cols), initial_value=cols[0])
        x, y = curve_data(app.history, cols[0])
        app.curve = gui.add_uplot((x, y), ({"label": "step"}, {"label": cols[0], "stroke": "#1f77b4", "width": 2}),
                                  title="training curve", aspect=1.6)
        if app.live is None and app.source.run is not None:
            reload = gui.add_button("reload checkpoint", hint="a fit still running elsewhere rewrites it")
            reload.on_click(lambda _: reload_run(app))
    on_checked_update(app.curve_column, lambda _: update_run_panel(app))


def reload_run(app) -> None:
    """Show the run's newest checkpoint, metrics and history."""
    import sys  # noqa: PLC0415

    from .sources import run_history, run_metrics  # noqa: PLC0415

    try:
        reloaded = app.source.reload()
    except UserError as e:  # the page keeps showing what it showed
        print(f"rwf: warning: checkpoint not reloaded ({e})", file=sys.stderr, flush=True)
        app.frame_status.content = f"**checkpoint not reloaded:** {e}"
        return
    if not reloaded:  # the button would otherwise do nothing, without a word
        why = f"{app.source.run}: no checkpoint.pt (was the run deleted or moved?); showing the one loaded before"
        print(f"rwf: warning: checkpoint not reloaded ({why})", file=sys.stderr, flush=True)
        app.frame_status.content = f"**checkpoint not reloaded:** {why}"
        return
    app.metrics, app.history = run_metrics(app.source.run), run_history(app.source.run)
    app.notify_model()


def update_run_panel(app) -> None:
    app.metrics_md.content = metrics_markdown(app.metrics)
    cols = curve_columns(app.history)
    if cols and tuple(cols) != tuple(app.curve_column.options):
        app.curve_column.options = tuple(cols)
    column = app.curve_column.value
    app.curve.data = curve_data(app.history, column)
    app.curve.series = ({"label": "step"}, {"label": column, "stroke": "#1f77b4", "width": 2})


# -- camera path ---------------------------------------------------------------------------------------------------
class CameraPathRecorder:
    """Keyframes recorded from a browser camera, shown as frustums and a spline, saved as camera_path.json."""

    def __init__(self, app):
        self.app, self.server = app, app.server
        self.keys: list[tuple[np.ndarray, float, float]] = []  # (c2w (4, 4) OpenGL, vertical fov degrees, aspect)
        self._nodes = []
        gui = self.server.gui
        with gui.add_folder("Camera path", expand_by_default=False):
            self.count = gui.add_markdown("0 keyframes")
            add = gui.add_button("add keyframe (this view)")
            undo = gui.add_button("remove last keyframe")
            clear = gui.add_button("clear")
            self.loop = gui.add_checkbox("loop", initial_value=False)
            # steps of 0.01: a loaded file's 29.97 fps or 4.25 s were rounded to the field's step (29, 4.2)
            self.fps = gui.add_number("fps", 24.0, min=MIN_FPS, max=MAX_FPS, step=0.01)  # a float: an int stays one
            self.seconds = gui.add_number("seconds", 4.0, min=0.01, max=MAX_FRAMES / MIN_FPS, step=0.01)
            self.width = gui.add_number("render width", 640, min=16, max=8192, step=1)
            self.height = gui.add_number("render height", 480, min=16, max=8192, step=1)
            self.preview = gui.add_slider("preview (moves your camera)", 0.0, 1.0, 0.001, 0.0)
            default = (Path(app.source.run) / "camera_path.json") if app.source.run else Path("camera_path.json")
            self.file = gui.add_text("file", str(default.absolute()),
                                     hint="a relative name is inside the run directory")
            self.overwrite = gui.add_checkbox("overwrite an existing file", initial_value=False)
            save = gui.add_button("save camera_path.json")
            load = gui.add_button("load (keyframes of the file)")
            self.status = gui.add_markdown("")
            self.note = None if app.source.kind == "nerf" else gui.add_markdown(
                f"`rwf render RUN --camera-path FILE` renders NeRF runs; for {app.source.kind} runs the file only "
                "records the path")
        self._saving = threading.Lock()
        add.on_click(lambda ev: self.add_client_view(ev.client))
        undo.on_click(lambda _: self._set(self.keys[:-1]))
        clear.on_click(lambda _: self._set([]))
        self.loop.on_update(lambda _: self._draw())
        on_checked_update(self.preview, lambda ev: self.preview_at(ev.target.value, ev.client))
        save.on_click(lambda _: self._save_clicked())
        load.on_click(lambda _: self._load_clicked())
        on_checked_update(self.width, lambda _: self._draw())  # the frustums are drawn at the render's shape
        on_checked_update(self.height, lambda _: self._draw())

    def add_client_view(self, client) -> None:
        """A keyframe at a browser's camera (none from a camera that cannot be rendered: said in the status)."""
        try:
            view = ViewCamera.from_client(client.camera, self.app.source.view_scale)
        except UnusableCamera as e:
            self.status.content = f"no keyframe added: {e}"
            return
        self.add(view)

    def add(self, view: ViewCamera) -> None:
        self._set(self.keys + [(view.c2w(), math.degrees(view.fov), view.aspect)])

    def keys_text(self) -> str:
        return f"{len(self.keys)} keyframe{'s' * (len(self.keys) != 1)}"

    def _set(self, keys) -> None:
        self.keys = list(keys)
        self.count.content = self.keys_text()
        self._draw()

    def _draw(self) -> None:
        scene = self.server.scene
        for handle in self._nodes:
            handle.remove()
        self._nodes = []
        s = self.app.source.view_scale  # keyframes are in scene units, nodes in viewer units
        scale = 0.05 * self.app.source.scene_radius() * s
        try:  # the render's shape, which the file keeps, not the browser's at the keyframe (its sides were cut)
            aspect = float(self.width.value) / float(self.height.value)
        except (TypeError, ValueError, ZeroDivisionError):
            aspect = None
        for i, (c2w, fov, key_aspect) in enumerate(self.keys):
            wxyz, pos = viser_pose(c2w)
            self._nodes.append(scene.add_camera_frustum(
                f"/camera_path/key_{i:03d}", fov=math.radians(fov), aspect=aspect or key_aspect, scale=scale,
                thickness=0.1 * scale, color=(230, 120, 30), wxyz=wxyz, position=pos * s))
        if len(self.keys) >= 2:
            frames, _ = self.frames(max(2, 16 * len(self.keys)))
            self._nodes.append(scene.add_line_segments(
                "/camera_path/spline", s * np.stack([frames[:-1, :3, 3], frames[1:, :3, 3]], 1), colors=(230, 120, 30),
                thickness=2.0, thickness_units="screen"))

    def frames(self, n: int):
        c2w = np.stack([k[0] for k in self.keys])
        return interpolate(c2w, np.array([k[1] for k in self.keys]), n, bool(self.loop.value))

    def preview_at(self, u: float, client) -> None:
        """Move one browser's camera to the path at u in [0, 1] (clamped; not a finite number: not moved)."""
        if len(self.keys) < 1 or client is None or not math.isfinite(u):
            return
        u = min(max(float(u), 0.0), 1.0)
        frames, fovs = self.frames(201)
        i = int(round(u * 200))
        wxyz, pos = viser_pose(frames[i])
        with client.atomic():
            client.camera.wxyz = wxyz
            client.camera.position = pos * self.app.source.view_scale
            client.camera.fov = math.radians(fovs[i])

    def resolve(self, text: str) -> Path:
        """The file a name typed in the page means: ``~`` expanded, a relative name inside the run directory (where
        the default lives; the server's working folder is nowhere the user sees)."""
        text = str(text).strip()
        if not text:
            raise UserError("give a file name, e.g. camera_path.json")
        try:
            path = Path(text).expanduser()
        except RuntimeError as e:  # ~nosuchuser/x.json
            raise UserError(f"{text}: {e}") from None
        run = self.app.source.run
        if not path.is_absolute() and run is not None:
            path = Path(run) / path
        path = path.absolute()
        from .app import is_loopback  # noqa: PLC0415  (app imports this module)

        if not is_loopback(getattr(self.app, "host", "127.0.0.1")):  # a visitor from elsewhere: inside the run only
            inside = run is not None and Path(os.path.realpath(run)) in Path(os.path.realpath(path)).parents
            if not inside:
                raise UserError(f"the viewer listens on {self.app.host}: camera paths are saved and loaded inside "
                                "the run folder only (give a relative name, e.g. camera_path.json)")
        return path

    def save(self, path: Path, overwrite: bool = False) -> dict:
        """Write camera_path.json atomically (the old file or the new one, never half). An existing file is
        replaced only with ``overwrite`` and only when it is itself a camera path: never a folder, a run's
        config.json or a checkpoint whose name was typed by mistake."""
        if not self.keys:
            raise UserError("record at least one keyframe first")
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{path} is a folder; give a file name, e.g. {path / 'camera_path.json'}")
        if path.exists() and not overwrite:
            raise UserError(f"{path} exists; tick 'overwrite' or choose another name")
        if path.exists() and not is_camera_path(path):
            raise UserError(f"{path} exists and is not a camera path: not replaced; choose another name")
        if not path.parent.is_dir():
            raise UserError(f"folder {path.parent} does not exist")
        try:
            size = int(self.width.value), int(self.height.value)
            timing = float(self.fps.value), float(self.seconds.value)
        except (TypeError, ValueError):
            raise UserError("render width, height, fps and seconds must be numbers") from None
        with self._saving:  # two clicks at once: the second sees the first's file
            if path.exists() and not overwrite:
                raise UserError(f"{path} exists; tick 'overwrite' or choose another name")
            return save_camera_path(path, np.stack([k[0] for k in self.keys]), np.array([k[1] for k in self.keys]),
                                    *size, *timing, bool(self.loop.value))

    def load(self, path: Path) -> None:
        """Take the keyframes, size, timing and loop of a camera path file (one saved here, or edited by hand)."""
        from rwf_render.camera_path import load_keyframes  # noqa: PLC0415

        got = load_keyframes(path)
        self.width.value, self.height.value = got["width"], got["height"]
        self.fps.value, self.seconds.value, self.loop.value = got["fps"], got["seconds"], got["is_cycle"]
        aspect = got["width"] / got["height"]
        self._set([(c2w, float(fov), aspect) for c2w, fov in zip(got["c2w"], got["fov"])])

    def _load_clicked(self) -> None:
        try:
            path = self.resolve(self.file.value)
            self.load(path)
        except (UserError, ValueError, OSError) as e:
            self.status.content = f"**not loaded:** {e}"
            return
        self.status.content = f"loaded {self.keys_text()} from `{path.resolve()}`"

    def _save_clicked(self) -> None:
        try:
            path = self.resolve(self.file.value)
            obj = self.save(path, bool(self.overwrite.value))
        except (UserError, ValueError, OSError) as e:
            self.status.content = f"**not saved:** {e}"
            return
        path = path.resolve()  # where it went (a typed "../x.json" said as typed)
        self.status.content = f"saved {len(obj['camera_path'])} frames to `{path}`"
        print(f"viewer: camera path saved to {path} ({self.keys_text()}, {len(obj['camera_path'])} frames)",
              flush=True)


def is_camera_path(path: Path) -> bool:
    """Whether ``path`` holds a camera path (a JSON object with ``camera_path`` or ``keyframes``)."""
    from rwf_render.rundir import holds_camera_path  # noqa: PLC0415

    return holds_camera_path(path)


# -- live training -------------------------------------------------------------------------------------------------
def add_training_panel(app, live) -> None:
    """Pause / resume and a status line; ``live`` is the :class:`~viewer.live.LiveViewer`."""
    gui = app.server.gui
    with gui.add_folder("Training"):
        app.train_status = gui.add_markdown("starting")
        button = gui.add_button("pause training")
        share = gui.add_slider("viewer CPU share", 0.05, 1.0, 0.05, app.duty.duty,
                               hint="fraction of the time the viewer may compute; training gets the rest")
    on_checked_update(share, lambda ev: setattr(app.duty, "duty", float(ev.target.value)))

    def toggle(_):
        if live.paused:
            live.resume()
            button.label = "pause training"
        else:
            live.pause()
            button.label = "resume training"

    button.on_click(toggle)
