"""A run in Python: ``rwf_render.load_run(RUN)`` gives the trained field of any run directory a fit wrote, to query
at points, render and turn into a mesh from a script or a notebook, in the coordinates and units of the fit's input.

The commands (``rwf render``, ``rwf export``, ``rwf eval``) read runs the same way; this module adds no file format.
Queries are evaluated without gradients, in chunks (memory bounded at any number of points), and return the type
they were given: a tensor for a tensor (on its device), else a numpy array.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

CHUNK = 1 << 16


class _Run:
    """What every run has: its folder, ``kind``, ``config`` (config.json as a dict), the trained ``model`` (a torch
    module in eval mode on ``device``), and ``metrics`` / ``history`` as the fit wrote them."""

    kind = ""

    def __init__(self, path: Path, config: dict, model: torch.nn.Module, device: torch.device):
        self.path, self.config, self.model, self.device = path, config, model, device

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r} on {self.device}>"

    @property
    def metrics(self) -> dict:
        """metrics.json ({} before the fit's end or when unreadable)."""
        from .rundir import METRICS, read_json  # noqa: PLC0415

        try:
            m = read_json(self.path / METRICS) if (self.path / METRICS).is_file() else {}
        except (UserError, OSError):
            return {}
        return m if isinstance(m, dict) else {}

    @property
    def history(self) -> list[dict]:
        """history.csv's rows (one per logged step)."""
        from .rundir import HISTORY, read_history  # noqa: PLC0415

        return read_history(self.path / HISTORY) if (self.path / HISTORY).is_file() else []

    def _points(self, x, dim: int, what: str) -> tuple[torch.Tensor, tuple, callable]:
        """``x`` (..., dim) as float32 (N, dim) on the model's device, the leading shape, and the function that gives
        a result back in the caller's type and device."""
        given = x
        try:
            t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError) as e:
            raise UserError(f"{what}: expected an array of shape (..., {dim}), got {type(given).__name__} ({e})") \
                from None
        if t.ndim == 0 or t.shape[-1] != dim:
            raise UserError(f"{what}: expected shape (..., {dim}), got {tuple(t.shape)}")
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16)):
            raise UserError(f"{what}: expected real numbers, got {t.dtype}")
        lead = tuple(t.shape[:-1])
        flat = t.reshape(-1, dim).to(device=self.device, dtype=torch.float32)
        if not torch.isfinite(flat).all():
            raise UserError(f"{what}: holds NaN or infinite values")

        def back(y: torch.Tensor):
            y = y.reshape(*lead, *y.shape[1:])
            return y.to(given.device) if isinstance(given, torch.Tensor) else y.cpu().numpy()
        return flat, lead, back


class ImageRun(_Run):
    """An image fit: the field maps a position in the image to its colour."""

    kind = "image"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the fitted image, in pixels."""
        return int(self.config["width"]), int(self.config["height"])

    @property
    def channels(self) -> int:
        return int(self.config["channels"])

    @torch.no_grad()
    def query(self, xy):
        """Colours (..., channels) in [0, 1] (clamped, as renders are written) at positions ``xy`` (..., 2) in the
        fitted image's pixels: x to the right, y down, (0, 0) the top-left corner of the image, so pixel (row i,
        column j) has its centre at (j + 0.5, i + 0.5). The fit saw the pixel centres only: between them the field
        holds what its frequencies make of it (smooth where the image has many pixels per Fourier period, aliased
        where it has few), beyond the image its extrapolation."""
        from .image import predict  # noqa: PLC0415

        flat, _, back = self._points(xy, 2, "xy")
        w, h = self.size
        out = predict(self.model, flat / max(w, h), CHUNK)
        return back(out.clamp(0, 1))

    @torch.no_grad()
    def render(self, scale: float = 1.0) -> np.ndarray:
        """The field at the pixel centres of a lattice ``scale`` times the fitted image's size per side, as ``rwf
        render RUN --scale`` writes it: float32 (H', W', channels) in [0, 1]."""
        from .image import MAX_RENDER_PIXELS, render  # noqa: PLC0415

        if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
            raise UserError(f"scale must be a positive number, got {scale!r}")
        w, h = self.size
        if max(1, round(h * scale)) * max(1, round(w * scale)) > MAX_RENDER_PIXELS:
            raise UserError(f"scale {scale:g}: more than {MAX_RENDER_PIXELS} pixels (the run is {w}x{h})")
        return render(self.model, h, w, scale, self.device)


class ShapeRun(_Run):
    """An SDF (or occupancy) fit of a mesh or point cloud. The field was fitted in a unit cube the source was moved
    into (``normalization``); every method here takes and gives the source's own coordinates and units."""

    kind = "sdf"

    def __init__(self, path, config, model, device, sdf_config, normalization):
        super().__init__(path, config, model, device)
        self.sdf_config, self.normalization = sdf_config, normalization

    @property
    def target(self) -> str:
        """"sdf" (signed distances) or "occupancy" (inside/outside logits)."""
        return self.sdf_config.target

    @torch.no_grad()
    def query(self, points):
        """At ``points`` (..., 3) in the source's units: for an sdf run the signed distance in those units,
        negative inside; for an occupancy run the probability (0..1) that the point lies inside. Beyond the box the
        field was fitted in (the source's bounding box, ``fill`` of the unit cube) the field extrapolates."""
        from .shape_task import predict  # noqa: PLC0415

        flat, _, back = self._points(points, 3, "points")
        norm = self.normalization
        center = torch.as_tensor(norm.center, dtype=torch.float64, device=self.device)
        unit = ((flat.double() - center) * norm.scale).float()
        f = predict(self.model, unit, CHUNK)
        out = f.double() / norm.scale if self.target == "sdf" else torch.sigmoid(f.double())
        return back(out)

    def mesh(self, res: int = 256, level: float = 0.0):
        """The surface {field = ``level``} by marching cubes on a res^3 grid over the unit cube, as ``rwf export mesh
        RUN`` extracts it (``level`` a distance in the source's units for sdf runs, a logit for occupancy runs):
        a ``trimesh.Trimesh`` in the source's units, faces outward; empty when nothing crosses the level."""
        from .mesh import extract_mesh  # noqa: PLC0415
        from .shape_task import field_fn  # noqa: PLC0415

        if not (isinstance(level, (int, float)) and np.isfinite(level)):
            raise UserError(f"level must be a finite number, got {level!r}")
        field_level = level * self.normalization.scale if self.target == "sdf" else level
        with torch.no_grad():
            mesh = extract_mesh(field_fn(self.model), res=res, level=field_level, inside=self.sdf_config.inside,
                                device=self.device)
        return self.normalization.apply(mesh, inverse=True) if len(mesh.faces) else mesh


class NeRFRun(_Run):
    """A NeRF fit: density and colour at points of the scene, renders from any camera, a mesh; in the dataset's own
    world coordinates and units (transforms.json's, OpenGL cameras: x right, y up, looking down -z)."""

    kind = "nerf"

    @property
    def cameras(self):
        """The training cameras (``cameras.Cameras``, at the fit's ``--downscale``, with the learned corrections of
        an ``--optimize-cameras`` fit), or None when the dataset can no longer be read."""
        return getattr(self.model, "train_cameras", None)

    @property
    def aabb(self) -> np.ndarray:
        """The scene box (2, 3): min and max corners."""
        return self.model.aabb.detach().cpu().numpy().astype(np.float64).reshape(2, 3)

    @torch.no_grad()
    def query(self, points, directions=None):
        """(rgb (..., 3) in [0, 1], density (...,)) at ``points`` (..., 3) seen along unit ``directions`` (..., 3)
        (default +z, as mesh colours are; ignored by a field without view dependence). The density is per unit of
        the scene's length, as the renderer integrates it; outside the scene box the field extrapolates."""
        flat, _, back = self._points(points, 3, "points")
        d = None
        if directions is not None:
            d, _, _ = self._points(directions, 3, "directions")
            if d.shape != flat.shape:
                raise UserError(f"directions: expected one per point, {tuple(flat.shape)}, got {tuple(d.shape)}")
            d = torch.nn.functional.normalize(d, dim=-1)
        rgb, sigma = [], []
        for i in range(0, flat.shape[0], CHUNK):
            c, s = self.model.field(flat[i:i + CHUNK], None if d is None else d[i:i + CHUNK])
            rgb.append(c.float())
            sigma.append(s.float())
        empty = flat.new_zeros(0)
        return (back(torch.cat(rgb) if rgb else empty.reshape(0, 3)), back(torch.cat(sigma) if sigma else empty))

    @torch.no_grad()
    def render(self, c2w=None, width: int | None = None, height: int | None = None, *, fov: float | None = None,
               fx: float | None = None, fy: float | None = None, cx: float | None = None, cy: float | None = None,
               camera: int | None = None, near: float | None = None, far: float | None = None) -> dict:
        """Render one view: {"rgb" (H, W, 3), "depth" (H, W), "opacity" (H, W)} float32 numpy arrays, as ``rwf
        render`` computes its frames (depth the expected distance along the ray, sum_i w_i t_i; divide by the
        opacity for where the ray stops).

        Either ``camera=i``, training camera i as the fit saw it, or a pinhole camera: ``c2w`` (3, 4) or (4, 4)
        OpenGL camera-to-world, ``width`` and ``height`` in pixels, and ``fov`` (vertical, degrees) or ``fx`` (and
        ``fy``, ``cx``, ``cy``; default the image centre). ``near`` / ``far`` bound the rays (default: a real
        capture's per-photo bounds carried to the camera's distance, as ``rwf render --orbit`` and the viewer,
        else the run's).
        """
        from .cameras import Cameras  # noqa: PLC0415
        from .nerf_outputs import frame_bounds  # noqa: PLC0415
        from .render_paths import bounds_at_distance  # noqa: PLC0415

        train = self.cameras
        bounds = {}
        if camera is not None:
            if c2w is not None or any(v is not None for v in (width, height, fov, fx, fy, cx, cy)):
                raise UserError("camera=i renders training camera i: give no c2w, size or intrinsics with it")
            if train is None:
                raise UserError(f"{self.config.get('data')}: the training cameras are unavailable")
            if not (isinstance(camera, (int, np.integer)) and -len(train) <= camera < len(train)):
                raise UserError(f"camera must be an index among the {len(train)} training cameras, got {camera!r}")
            i = int(camera) % len(train)
            cam = train[i:i + 1]
            bounds = frame_bounds(getattr(self.model, "train_near_far", None), i)
        else:
            cam = self._pinhole(c2w, width, height, fov, fx, fy, cx, cy)
            if train is not None:
                center = torch.as_tensor(self.aabb.mean(0))
                nf = bounds_at_distance(train, center, getattr(self.model, "train_near_far", None),
                                        (cam.c2w[:, :3, 3].double().cpu() - center).norm(dim=1))
                bounds = frame_bounds(nf, 0)
        for name, v in (("near", near), ("far", far)):
            if v is not None:
                if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                    raise UserError(f"{name} must be a finite distance >= 0, got {v!r}")
                bounds[name] = float(v)
        if "near" in bounds and "far" in bounds and not bounds["far"] > bounds["near"]:
            raise UserError(f"far ({bounds['far']:g}) must exceed near ({bounds['near']:g})")
        res = self.model.render_camera(cam.to(dtype=torch.float32), **bounds)
        return {k: res[k].float().cpu().numpy() for k in ("rgb", "depth", "opacity")}

    def _pinhole(self, c2w, width, height, fov, fx, fy, cx, cy):
        from .cameras import Cameras  # noqa: PLC0415

        if c2w is None:
            raise UserError("render needs a camera: c2w with width, height and fov or fx, or camera=i")
        m = np.asarray(c2w.detach().cpu() if isinstance(c2w, torch.Tensor) else c2w, dtype=np.float64)
        if m.shape not in ((3, 4), (4, 4)) or not np.isfinite(m).all():
            raise UserError(f"c2w: expected a finite (3, 4) or (4, 4) camera-to-world matrix, got shape {m.shape}")
        for name, v in (("width", width), ("height", height)):
            if not (isinstance(v, (int, np.integer)) and 0 < v <= 16384):
                raise UserError(f"{name}: expected a whole number of pixels in 1..16384, got {v!r}")
        if (fov is None) == (fx is None):
            raise UserError("give the focal length as fov (vertical, degrees) or fx (pixels), one of them")
        if fov is not None:
            if not (isinstance(fov, (int, float)) and 0 < fov < 180):
                raise UserError(f"fov: expected degrees in (0, 180), got {fov!r}")
            fx = 0.5 * height / np.tan(np.radians(fov) / 2)
        for name, v in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy)):
            if v is not None and not (isinstance(v, (int, float, np.floating)) and np.isfinite(v)):
                raise UserError(f"{name}: expected a finite number, got {v!r}")
        if fx <= 0 or (fy is not None and fy <= 0):
            raise UserError("fx and fy must be positive")
        return Cameras.create(torch.as_tensor(m[:3]), fx=float(fx), fy=None if fy is None else float(fy),
                              cx=None if cx is None else float(cx), cy=None if cy is None else float(cy),
                              width=int(width), height=int(height))

    def mesh(self, res: int = 256, threshold: float | None = None, min_component: float = 0.0):
        """The surface where the density crosses ``threshold`` (default that of ``rwf export mesh``, 10 per reference
        length) by marching cubes on a res^3 grid over the scene box, with vertex colours: a ``trimesh.Trimesh`` in
        the scene's coordinates, as ``rwf export mesh RUN`` writes it (empty when nothing crosses)."""
        from .nerf_export import DEFAULT_DENSITY_LEVEL, density_mesh  # noqa: PLC0415

        level = DEFAULT_DENSITY_LEVEL if threshold is None else threshold
        if not (isinstance(level, (int, float)) and np.isfinite(level) and level > 0):
            raise UserError(f"threshold must be a positive density, got {threshold!r}")
        if not (isinstance(min_component, (int, float)) and 0 <= min_component <= 1):
            raise UserError(f"min_component must be a fraction in [0, 1], got {min_component!r}")
        with torch.no_grad():
            return density_mesh(self.model, self.aabb, res, float(level), float(min_component))


def load_run(run: str | os.PathLike, device: str = "auto") -> ImageRun | ShapeRun | NeRFRun:
    """The run directory ``run`` (one a fit wrote: config.json and checkpoint.pt; a fit still going on gives its last
    checkpoint) as an :class:`ImageRun`, :class:`ShapeRun` or :class:`NeRFRun`, its model on ``device`` ("auto":
    the GPU when torch sees one, "cpu", "cuda"). The source image, mesh or dataset is read only where a method needs
    it (a NeRF run reads its training cameras). Errors are :class:`rwf_render.UserError` with the message the
    commands print."""
    from .rundir import load_run_config  # noqa: PLC0415
    from .trainer import resolve_device  # noqa: PLC0415

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    path = Path(run)
    config = load_run_config(path)
    kind = config["kind"]
    if kind == "image":
        from . import image  # noqa: PLC0415

        _, model, _, dev = image.load_model(path, config, device)
        return ImageRun(path, config, model.eval(), dev)
    if kind == "sdf":
        from . import sdf  # noqa: PLC0415

        cfg, model, norm, _, dev = sdf.load_run(path, config, device)
        return ShapeRun(path, config, model.eval(), dev, cfg, norm)
    if kind == "nerf":
        from .nerf import load_scene_model  # noqa: PLC0415

        model = load_scene_model(path, resolve_device(device))
        return NeRFRun(path, config, model, model.aabb.device)
    raise UserError(f"{path / 'config.json'}: unknown run kind {kind!r}")
