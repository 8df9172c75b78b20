"""What the viewer shows of a run: one *source* per run kind, with a common render callback.

    open_run(RUN)              -> ImageSource | SDFSource | NeRFSource     (rwf view RUN)
    live_source(kind, trainer) -> the same, on a snapshot of the trainer's model  (rwf fit ... --view)
    render_view(source, view, long_side, mode) -> Frame                    (the browser camera -> an image)

A source renders any :class:`~rwf_render.cameras.Cameras` (one camera) in one of its ``modes``, and adds its own
scene nodes (meshes, frustums, slices) and GUI panels. Its model is never the trainer's: live sources render a
private copy that the trainer's thread refreshes between steps (:meth:`Source.offer_state`), so a frame never mixes
two optimizer steps and the trainer's tensors are only read.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras
from rwf_render.errors import UserError
from rwf_render.rundir import CONFIG, HISTORY, METRICS, load_run_config, read_history, read_json

from .camera import ViewCamera, image_size

FAR = math.inf  # z-depth of "nothing here" pixels in a Frame (behind every scene node; a finite 1e4 scene units
# marked real surfaces that far away as nothing, a unit hunt found)
# viser 1.1.1 sends the composited depth as 24-bit fixed point, 1e-5 per step (SceneApi.set_background_image), so the
# browser reads every depth beyond 167.77 units as 167.77: a scene node farther than that from the camera is behind
# the whole frame, background pixels included. Scenes larger than VIEW_EXTENT are shown scaled down (view_scale).
VISER_MAX_DEPTH = (2**24 - 1) / 100_000
VIEW_EXTENT = 20.0  # scene units from the centre to the farthest content shown without scaling
# and the nearest such extent: smaller content (a mesh in metres of a thing millimetres across) is shown scaled up,
# else viser's near plane (0.01 units) clips it, a 1e-5 depth step is coarse against it, and the orbit controls cross
# it in one drag
VIEW_MIN_EXTENT = 0.2
INITIAL_FOV = math.radians(50.0)  # vertical field of view of a new browser


@dataclass
class Frame:
    """A rendered view: rgb (H, W, 3) float32 in [0, 1]; depth (H, W) float32 z-depth along the camera axis (or
    None: not composited with the 3D scene); seconds spent rendering."""

    rgb: np.ndarray
    depth: np.ndarray | None
    seconds: float = 0.0


def view_scale_for(extent: float) -> float:
    """Viewer units per scene unit for content within ``extent`` scene units of its centre: 1 from
    ``VIEW_MIN_EXTENT`` to ``VIEW_EXTENT``; above, the power of ten (0.1, 0.01, ...) that brings it within, so a
    browser orbiting a few extents away stays inside viser's depth range (VISER_MAX_DEPTH); below, the power of ten
    (10, 100, ...) that brings it up to VIEW_MIN_EXTENT, clear of viser's near plane."""
    if not math.isfinite(extent) or extent <= 0.0:
        return 1.0
    if extent > VIEW_EXTENT:
        return 10.0 ** -math.ceil(math.log10(extent / VIEW_EXTENT) - 1e-9)
    if extent < VIEW_MIN_EXTENT:
        return 10.0 ** math.ceil(math.log10(VIEW_MIN_EXTENT / extent) - 1e-9)
    return 1.0


def viser_depth(depth: np.ndarray | None, scale: float = 1.0) -> np.ndarray | None:
    """The depth to give viser for a frame's z-depth (H, W) in scene units: in viewer units (``scale`` per scene
    unit, :attr:`Source.view_scale`), within [0, VISER_MAX_DEPTH]; FAR ("nothing here", whatever the scale) and NaN
    at the limit: behind every node nearer than that. None stays None (no compositing)."""
    if depth is None:
        return None
    d = np.asarray(depth, np.float64)
    d = np.where(np.isnan(d) | (d >= FAR), VISER_MAX_DEPTH, d * scale)
    return np.clip(d, 0.0, VISER_MAX_DEPTH).astype(np.float32)


class Source:
    """Base class; see the module docstring. Subclasses set ``kind``, ``modes`` and implement :meth:`render`.

    ``view_scale``: viewer units per scene unit. Every position given to or read from viser (scene nodes, browser
    cameras, the depth of a frame) is in viewer units; renders and files stay in scene units."""

    kind = ""
    modes: tuple[str, ...] = ("rgb",)
    up: tuple = (0.0, 0.0, 1.0)
    strip_pixels = 16384  # a frame renders in strips of about this many pixels (memory, and where it can stop)

    def __init__(self, model: torch.nn.Module | None, device: torch.device, run: Path | None = None):
        self.model, self.device, self.run = model, device, run
        self.lock = threading.RLock()  # held while rendering and while swapping in a new snapshot
        self._pending: dict | None = None
        self.default_mode = self.modes[0]
        self.version = 0  # bumped whenever the model changes (a new snapshot)
        self.view_scale = 1.0

    # -- what the scene looks like ----------------------------------------------------------------------------------
    def initial_view(self) -> tuple[np.ndarray, np.ndarray]:
        """(camera position (3,), look-at point (3,)) for a new browser."""
        return np.array([2.0, -2.0, 1.5]), np.zeros(3)

    def scene_radius(self) -> float:
        """Rough size of the content, for frustum sizes and camera speeds."""
        return 1.0

    def render(self, cams: Cameras, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Render one camera: rgb (H, W, 3) in [0, 1] and z-depth (H, W) (or None). Called under ``self.lock``
        and ``torch.no_grad()``."""
        raise NotImplementedError

    def setup_scene(self, server) -> None:
        """Add the static scene nodes (meshes, frustums, boxes) to a viser server."""

    def setup_gui(self, server) -> None:
        """Add run-specific GUI panels."""

    def refresh_gui(self) -> None:
        """Recompute the panels that depend on the model (after a new snapshot); runs on a viewer thread."""

    def close(self) -> None:
        """End the source's own background work (the app is stopping); called once the renderers have ended."""

    # -- live snapshots ------------------------------------------------------------------------------------------
    def offer_state(self, state: dict) -> None:
        """Hand over a copy of the trainer's ``model.state_dict()`` (called on the training thread)."""
        self._pending = state

    def sync(self) -> bool:
        """Load the newest offered snapshot into the private model; returns whether there was one."""
        state, self._pending = self._pending, None
        if state is None:
            return False
        with self.lock:
            self.model.load_state_dict(state)
            self.version += 1
        return True

    def reload(self) -> bool:
        """Offer the run's current ``checkpoint.pt`` (a fit running elsewhere rewrites it); False without one.
        UserError when it cannot be read or holds another model's weights (nothing is offered then)."""
        from rwf_render.rundir import CHECKPOINT, load_checkpoint  # noqa: PLC0415

        if self.run is None or not (self.run / CHECKPOINT).is_file():
            return False
        path = self.run / CHECKPOINT
        state = load_checkpoint(path).get("model")
        current = self.model.state_dict()
        if isinstance(state, dict):  # a checkpoint from before RWF layers saved their kind: load_state_dict takes it
            current = {k: v for k, v in current.items() if k in state or not k.endswith("_extra_state")}
        if not isinstance(state, dict) or set(state) != set(current) or any(
                not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape
                or (k.endswith("_extra_state") and not torch.equal(state[k], v)) for k, v in current.items()):
            # checked here: a mismatch found by load_state_dict in a render thread would end that thread
            raise UserError(f"{path}: does not fit the model shown (was the run replaced by another fit?)")
        self.offer_state(state)
        return True

    def replace_model(self, model: torch.nn.Module) -> None:
        """Show another model from now on (``--compare`` trains several in one process)."""
        with self.lock:
            self.model, self._pending = model, None
            self.version += 1

    @staticmethod
    def snapshot(model: torch.nn.Module) -> torch.nn.Module:
        """A private, evaluation-mode copy of a model (the trainer's stays untouched)."""
        with torch.no_grad():
            copied = copy.deepcopy(model)
        copied.eval()
        for p in copied.parameters():
            p.requires_grad_(False)
        return copied


def state_copy(model: torch.nn.Module) -> dict:
    """Detached copies of every tensor in ``model.state_dict()``: what :meth:`Source.offer_state` takes."""
    with torch.no_grad():
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- the render callback -------------------------------------------------------------------------------------------
def render_cameras(source: Source, cams: Cameras, mode: str, should_stop=None, strip_pixels: int | None = None
                   ) -> Frame | None:
    """Render one camera in horizontal strips of about ``strip_pixels`` pixels (default: the source's).

    Strips bound memory, and between strips ``should_stop(pixels_done)`` may abandon a frame that is no longer
    wanted or would take too long (returns None). Each strip is the same camera with the principal point moved up
    by the strip's first row.
    """
    t0 = time.perf_counter()
    width, height = int(cams.width[0]), int(cams.height[0])
    rows = max(1, (strip_pixels or source.strip_pixels) // width)
    rgbs, depths = [], []
    with source.lock, torch.no_grad():
        for r0 in range(0, height, rows):
            if should_stop is not None and should_stop(r0 * width):
                return None
            n = min(rows, height - r0)
            strip = replace(cams, cy=cams.cy - r0, height=torch.full_like(cams.height, n))
            rgb, depth = source.render(strip, mode)
            rgbs.append(rgb.float().cpu())
            depths.append(None if depth is None else depth.float().cpu())
    rgb = torch.cat(rgbs).clamp(0, 1).numpy()
    depth = None if depths[0] is None else torch.cat(depths).nan_to_num(FAR, FAR, FAR).clamp(0, FAR).numpy()
    return Frame(rgb, depth, time.perf_counter() - t0)


def render_view(source: Source, view: ViewCamera, long_side: int, mode: str | None = None, should_stop=None,
                strip_pixels: int | None = None) -> Frame | None:
    """The browser's render callback: ``view`` at ``long_side`` pixels on its longer side, in ``mode``.

    Returns a :class:`Frame` whose rgb is (H, W, 3) with (W, H) = image_size(long_side, view.aspect), or None when
    ``should_stop`` abandoned it (see :func:`render_cameras`).
    """
    source.sync()
    width, height = image_size(long_side, view.aspect)
    cams = view.cameras(width, height, device=source.device)
    return render_cameras(source, cams, mode or source.default_mode, should_stop, strip_pixels)


# -- colours -----------------------------------------------------------------------------------------------------
def colormap(values: np.ndarray, name: str, vmin: float, vmax: float) -> np.ndarray:
    """Matplotlib colormap of values (...) on [vmin, vmax]: (..., 3) float32."""
    import matplotlib  # noqa: PLC0415

    t = np.clip((np.asarray(values, np.float64) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    return matplotlib.colormaps[name](t)[..., :3].astype(np.float32)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def as_rgb(img: np.ndarray) -> np.ndarray:
    """(H, W, C) with C in 1..4 -> (H, W, 3): grey repeated, alpha dropped."""
    img = np.asarray(img)
    return np.repeat(img[..., :1], 3, -1) if img.shape[-1] < 3 else img[..., :3]


# -- runs ----------------------------------------------------------------------------------------------------------
def run_metrics(run: Path | None, warn: bool = True) -> dict:
    """The run's metrics.json, or {} when it has none; an unreadable one is left out (the model can still be
    viewed), with a warning when ``warn``."""
    if run is None or not (run / METRICS).is_file():
        return {}
    try:
        metrics = read_json(run / METRICS)
    except (UserError, OSError) as e:
        metrics = e
    if not isinstance(metrics, dict):
        if warn:
            why = metrics if isinstance(metrics, Exception) else f"{run / METRICS}: expected a JSON object"
            print(f"rwf: warning: metrics left out ({why})", file=sys.stderr, flush=True)
        return {}
    return metrics


def run_history(run: Path | None) -> list[dict]:
    if run is None or not (run / HISTORY).is_file():
        return []
    try:
        return read_history(run / HISTORY)
    except (OSError, ValueError):
        return []


def check_run_dir(run: str | Path) -> dict:
    """``load_run_config`` with a hint for ``--compare`` folders (runs one level down)."""
    from rwf_render.replacing import settle_replaced  # noqa: PLC0415

    run = Path(run)
    settle_replaced(run)  # a killed 'rwf fit --force' left the old run in a hidden folder: back first
    if run.is_dir() and not (run / CONFIG).is_file():
        subs = sorted(p.name for p in run.iterdir() if (p / CONFIG).is_file() and not p.name.startswith("."))
        if subs:
            raise UserError(f"{run}: holds several runs ({', '.join(subs)}); view one, e.g. {run / subs[0]}")
    return load_run_config(run)


def open_run(run: str | Path, device: torch.device) -> Source:
    """The source for a finished (or checkpointed) run directory."""
    from rwf_render.rundir import CHECKPOINT  # noqa: PLC0415

    from rwf_render.rundir import hold_run  # noqa: PLC0415

    run = Path(run)
    cfg = check_run_dir(run)
    if cfg["kind"] not in ("image", "sdf", "nerf"):
        raise UserError(f"{run}: the viewer does not know runs of kind {cfg['kind']!r}")
    hold_run(run)  # a reader of the run while the viewer runs: 'rwf fit --force' on it is refused meanwhile
    try:
        return _open(run, cfg, device)
    except UserError as e:
        if (run / CHECKPOINT).exists():
            raise
        # a fit still running in RUN (its config.json is written first): say so instead of "checkpoint not found"
        raise UserError(f"{run}: no {CHECKPOINT} yet (a fit still running writes it at its first checkpoint or "
                        "when it ends; rwf fit ... --view shows a fit as it trains)") from None


def _open(run: Path, cfg: dict, device: torch.device) -> Source:
    kind = cfg["kind"]
    if kind == "image":
        from .image_source import ImageSource  # noqa: PLC0415

        return ImageSource.from_run(run, cfg, device)
    if kind == "sdf":
        from .sdf_source import SDFSource  # noqa: PLC0415

        return SDFSource.from_run(run, cfg, device)
    if kind == "nerf":
        from .nerf_source import NeRFSource  # noqa: PLC0415

        return NeRFSource.from_run(run, cfg, device)
    raise AssertionError(kind)


def live_source(kind: str, trainer) -> Source:
    """The source for a trainer being trained (reads ``trainer.model``, ``trainer.task``, ``trainer.run_dir``)."""
    cfg = load_run_config(trainer.run_dir) if trainer.run_dir and (Path(trainer.run_dir) / CONFIG).is_file() \
        else {"kind": kind}
    if kind == "image":
        from .image_source import ImageSource  # noqa: PLC0415

        return ImageSource.from_trainer(trainer, cfg)
    if kind == "sdf":
        from .sdf_source import SDFSource  # noqa: PLC0415

        return SDFSource.from_trainer(trainer, cfg)
    if kind == "nerf":
        from .nerf_source import NeRFSource  # noqa: PLC0415

        return NeRFSource.from_trainer(trainer, cfg)
    raise UserError(f"--view: the viewer does not know runs of kind {kind!r}")
