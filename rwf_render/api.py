"""A run in Python: ``rwf_render.load_run(RUN)`` gives the trained field of any run directory a fit wrote, to query
at points, render and turn into a mesh from a script or a notebook, in the coordinates and units of the fit's input.

The commands (``rwf render``, ``rwf export``, ``rwf eval``) read runs the same way; this module adds no file format.
Queries are evaluated without gradients, in chunks (memory bounded at any number of points), and return the type
they were given: a tensor for a tensor (on its device), else a numpy array.
"""

from __future__ import annotations

import contextlib
import csv
import numbers
import os
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

CHUNK = 1 << 16


def _number(value, name: str) -> float | None:
    """``value`` as a float: a Python, numpy or 0-d tensor real number (None stays None); UserError for a bool, a
    string or an array."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise UserError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _whole(value, name: str, lo: int, hi: int) -> int:
    """``value`` as an int in lo..hi: a Python, numpy or 0-d tensor integer; UserError otherwise (bools too)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)) \
            or not lo <= int(value) <= hi:
        raise UserError(f"{name}: expected a whole number in {lo}..{hi}, got {value!r}")
    return int(value)


def _count(value, kind):
    """A checkpoint's step or seconds as ``kind``; None when it has none (weights without a training state)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return kind(value)


def _finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t``, or UserError when a value overflowed float32 on the way in (finite before: |x| > 3.4e38)."""
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise UserError(f"{what}: values beyond float32's range (about 3.4e38 in magnitude), in which the field "
                        "computes")
    return t


@contextlib.contextmanager
def _flushed_denormals(device: torch.device):
    """Tiny densities and gradients slow CPU math by up to 2.5x unless denormals flush to zero; the setting is
    global to the process, so a notebook gets its own back after each call."""
    if device.type != "cpu":
        yield
        return
    before = float(torch.tensor([1e-39]) * 1.0) == 0.0  # a denormal float32: flushed already?
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


class _Run:
    """What every run has: its folder, ``kind``, ``config`` (config.json as a dict), the trained ``model`` (a torch
    module in eval mode on ``device``), ``step`` and ``seconds`` (the training steps and seconds of the checkpoint
    loaded: a fit going on, or stopped, saves every --ckpt-every steps), and ``metrics`` / ``history`` as the fit
    wrote them."""

    kind = ""

    def __init__(self, path: Path, config: dict, model: torch.nn.Module, device: torch.device,
                 state: dict | None = None):
        self.path, self.config, self.model, self.device = path, config, model, device
        self.step = _count((state or {}).get("step"), int)
        self.seconds = _count((state or {}).get("seconds"), float)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r} on {self.device}>"

    @property
    def metrics(self) -> dict:
        """metrics.json ({} before the fit's end or when unreadable). Its ``steps`` may be older than :attr:`step`:
        a fit resumed, or stopped after a later checkpoint, has not written its figures yet."""
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

        if not (self.path / HISTORY).is_file():
            return []
        try:
            rows = read_history(self.path / HISTORY)
        except (OSError, ValueError, csv.Error) as e:
            raise UserError(f"{self.path / HISTORY}: unreadable ({e})") from None
        return [{k: int(v) if k == "step" and v == v else v for k, v in row.items()} for row in rows]

    def _points(self, x, dim: int, what: str, dtype=torch.float32) -> tuple[torch.Tensor, callable]:
        """``x`` (..., dim) of real numbers (floats or integers; no bools, complex numbers, masked or object arrays)
        as ``dtype`` (N, dim) on the model's device, and the function that gives a result back in the caller's
        shape, type and device."""
        given = x
        if isinstance(x, np.ma.MaskedArray):
            raise UserError(f"{what}: a masked array (its mask would be ignored); pass the points to use")
        try:
            if isinstance(x, torch.Tensor):
                if x.layout != torch.strided or x.is_meta:
                    raise TypeError(f"a {x.layout} tensor{' on the meta device' if x.is_meta else ''}")
                t = x.detach()
            else:
                a = np.asarray(x)
                if a.dtype.kind not in "fiu":
                    raise TypeError(f"{a.dtype} values")
                with np.errstate(over="ignore"):  # a finite long double beyond float64's range: said below
                    t = torch.from_numpy(np.array(a, dtype=np.float64))  # a copy: read-only arrays too
        except (TypeError, ValueError) as e:
            raise UserError(f"{what}: expected an array of real numbers of shape (..., {dim}), got "
                            f"{type(given).__name__} ({e})") from None
        if t.ndim == 0 or t.shape[-1] != dim:
            raise UserError(f"{what}: expected shape (..., {dim}), got {tuple(t.shape)}")
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int16, torch.int32, torch.int64,
                                                                        torch.uint8, torch.int8)):
            raise UserError(f"{what}: expected real numbers, got {t.dtype}")
        lead = tuple(t.shape[:-1])
        flat = t.reshape(-1, dim)
        if flat.is_floating_point() and not torch.isfinite(flat).all():
            raise UserError(f"{what}: holds NaN or infinite values")
        flat = _finite(flat.to(device=self.device, dtype=dtype), what)

        def back(y: torch.Tensor):
            y = y.reshape(lead + tuple(y.shape[1:]))
            return y.to(given.device) if isinstance(given, torch.Tensor) else y.cpu().numpy()
        return flat, back


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

        flat, back = self._points(xy, 2, "xy")
        w, h = self.size
        with _flushed_denormals(self.device):
            out = predict(self.model, flat / max(w, h), CHUNK)
        return back(out.clamp(0, 1))

    @torch.no_grad()
    def render(self, scale: float = 1.0) -> np.ndarray:
        """The field at the pixel centres of a lattice ``scale`` times the fitted image's size per side, as ``rwf
        render RUN --scale`` writes it: float32 (H', W', channels) in [0, 1]."""
        from .image import MAX_RENDER_PIXELS, render  # noqa: PLC0415

        value = _number(scale, "scale")
        if not (np.isfinite(value) and value > 0):
            raise UserError(f"scale must be a positive number, got {scale!r}")
        w, h = self.size
        if max(1, round(h * value)) * max(1, round(w * value)) > MAX_RENDER_PIXELS:
            raise UserError(f"scale {value:g}: more than {MAX_RENDER_PIXELS} pixels (the run is {w}x{h})")
        with _flushed_denormals(self.device):
            return render(self.model, h, w, value, self.device)


class ShapeRun(_Run):
    """An SDF (or occupancy) fit of a mesh or point cloud. The field was fitted in a unit cube the source was moved
    into (``normalization``); every method here takes and gives the source's own coordinates and units."""

    kind = "sdf"

    def __init__(self, path, config, model, device, sdf_config, normalization, state: dict | None = None):
        super().__init__(path, config, model, device, state)
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

        unit, back = self._unit_points(points)
        norm = self.normalization
        with _flushed_denormals(self.device):
            f = predict(self.model, unit, CHUNK)
        out = f.double() / norm.scale if self.target == "sdf" else torch.sigmoid(f.double())
        return back(out)

    def _unit_points(self, points) -> tuple[torch.Tensor, callable]:
        """``points`` (..., 3) in the source's units moved into the fitted unit cube in float64 (float32 points far
        from the origin snap to a lattice), then float32 (N, 3); and ``_points``' way back."""
        flat, back = self._points(points, 3, "points", torch.float64)
        center = torch.as_tensor(self.normalization.center, dtype=torch.float64, device=self.device)
        return _finite(((flat - center) * self.normalization.scale).float(), "points"), back

    def normals(self, points):
        """Unit outward normals (..., 3) of the field's level sets at ``points`` (..., 3) in the source's units:
        the normalized gradient of the distance (sdf runs; of minus the logit for occupancy runs), by autograd
        through the network (a ReLU network's gradient is piecewise constant: at a mesh's vertices it may vary
        from one to the next)."""
        from .spheretrace import field_gradients  # noqa: PLC0415

        unit, back = self._unit_points(points)
        with _flushed_denormals(self.device), torch.inference_mode(False):  # a notebook's inference_mode too
            grad = field_gradients(lambda x: self.model(x)[:, 0], unit.clone(), 0.0, CHUNK)
        outward = grad if self.target == "sdf" else -grad  # logits grow inward
        return back(torch.nn.functional.normalize(outward, dim=-1))

    def mesh(self, res: int = 256, level: float = 0.0, min_component: float = 0.0):
        """The surface {field = ``level``} by marching cubes on a res^3 grid over the unit cube the field was fitted
        in, as ``rwf export mesh RUN`` extracts it (``level`` a distance in the source's units for sdf runs, a logit
        for occupancy runs; pieces under ``min_component`` of all faces dropped): a ``trimesh.Trimesh`` in the
        source's units, faces outward. Empty when no part of the box is inside; where the inside reaches the box's
        faces (a level beyond what the box holds) the surface is capped flat there, with a warning, as the
        command's."""
        import warnings  # noqa: PLC0415

        from .errors import RwfWarning  # noqa: PLC0415
        from .mesh import MAX_GRID_RES, capped_vertices, extract_mesh, remove_small_components  # noqa: PLC0415
        from .shape_task import field_fn  # noqa: PLC0415

        res = _whole(res, "res", 2, MAX_GRID_RES)
        value = _number(level, "level")
        if not np.isfinite(value):
            raise UserError(f"level must be a finite number, got {level!r}")
        fraction = _number(min_component, "min_component")
        if not 0 <= fraction <= 1:
            raise UserError(f"min_component must be a fraction in [0, 1], got {min_component!r}")
        field_level = value * self.normalization.scale if self.target == "sdf" else value
        with torch.no_grad(), _flushed_denormals(self.device):
            mesh = extract_mesh(field_fn(self.model), res=res, level=field_level, inside=self.sdf_config.inside,
                                device=self.device)
        if not len(mesh.faces):
            return mesh
        capped = capped_vertices(mesh)
        if capped:
            warnings.warn(f"the surface at level {value:g} reaches the box the field was fitted in and is capped flat "
                          f"on its faces ({capped} of {len(mesh.vertices)} vertices)", RwfWarning, stacklevel=2)
        return self.normalization.apply(remove_small_components(mesh, fraction), inverse=True)


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

    def cameras_of(self, split: str):
        """The cameras of the dataset's ``split`` ("train", "val", "test"; ``cameras.Cameras``) at the fit's
        ``--downscale``, as ``rwf render --split`` renders them: the training split with an ``--optimize-cameras``
        fit's corrections (:attr:`cameras`), the others as the dataset gives them. UserError for a split the
        dataset lacks."""
        from .datasets import load_transforms  # noqa: PLC0415
        from .nerf_outputs import scaled_cameras  # noqa: PLC0415

        if split not in ("train", "val", "test"):
            raise UserError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if split == "train" and self.cameras is not None:
            return self.cameras
        tf = load_transforms(self.config.get("data"), split)
        return scaled_cameras(tf.cameras.to(dtype=torch.float32), int(self.config.get("downscale", 1) or 1))

    @property
    def density_scale(self) -> float:
        """What :meth:`query`'s densities are per unit of ``mesh(threshold=)`` and ``rwf export mesh --threshold``:
        those count density per reference length (a box diagonal of 2 x 1.515 x sqrt 3), the same surface for one
        scene in any units, so a threshold T is the density T x density_scale per unit of the scene's length."""
        return float(self.model.field.density_scale)

    @torch.no_grad()
    def query(self, points, directions=None):
        """(rgb (..., 3) in [0, 1], density (...,)) at ``points`` (..., 3) seen along unit ``directions`` (..., 3)
        (default +z, as mesh colours are; ignored by a field without view dependence). The density is per unit of
        the scene's length, as the renderer integrates it (``mesh(threshold=T)`` is the surface of density
        T x :attr:`density_scale`); outside the scene box the field extrapolates."""
        flat, back = self._points(points, 3, "points")
        d = None
        if directions is not None:
            d = self._directions(directions, flat.shape, "point")
        from .evalchunk import eval_chunk  # noqa: PLC0415

        rgb, sigma, chunk = [], [], eval_chunk(self.device, CHUNK)  # page faults of big CPU calls: see evalchunk
        with _flushed_denormals(self.device):
            for i in range(0, flat.shape[0], chunk):
                c, s = self.model.field(flat[i:i + chunk], None if d is None else d[i:i + chunk])
                rgb.append(c.float())
                sigma.append(s.float())
        empty = flat.new_zeros(0)
        rgb, sigma = torch.cat(rgb) if rgb else empty.reshape(0, 3), torch.cat(sigma) if sigma else empty
        bad = ~(torch.isfinite(rgb).all(-1) & torch.isfinite(sigma))
        if bool(bad.any()):  # finite float32 points so far out that the field's own coordinates overflow (1e38)
            far = float(flat[bad].abs().max())
            raise UserError(f"points: the field has no finite value at {int(bad.sum())} of them (the largest "
                            f"coordinate there {far:.3g}: its math in float32 overflows that far from the scene)")
        return back(rgb), back(sigma)

    @torch.no_grad()
    def render(self, c2w=None, width: int | None = None, height: int | None = None, *, fov: float | None = None,
               fx: float | None = None, fy: float | None = None, cx: float | None = None, cy: float | None = None,
               camera: int | None = None, near: float | None = None, far: float | None = None) -> dict:
        """Render one view: {"rgb" (H, W, 3), "depth" (H, W), "opacity" (H, W)} float32 numpy arrays, as ``rwf
        render`` computes its frames (depth the expected distance along the ray, sum_i w_i t_i; divide by the
        opacity for where the ray stops).

        Either ``camera=i``, training camera i as the fit saw it (its pose, intrinsics, near/far bounds and, with
        ``--appearance-dim``, its appearance: ``rwf render --split train``'s frame i), or a pinhole camera: ``c2w``
        (3, 4) or (4, 4) OpenGL camera-to-world (x right, y up, looking down -z; a rotation and a position),
        ``width`` and ``height`` in pixels, and ``fov`` (vertical, degrees) or ``fx`` (and ``fy``, ``cx``, ``cy``;
        default the image centre). Rays start at ``near`` and end at ``far`` when given (they win over the run's
        --near/--far and --no-far-bounds); else a real capture's per-photo bounds carried to the camera's distance,
        as ``rwf render --orbit`` and the viewer, else the run's. Images are at most 16384 pixels a side and 64
        million pixels.
        """
        from .nerf_outputs import frame_bounds  # noqa: PLC0415
        from .render_paths import bounds_at_distance  # noqa: PLC0415

        train = self.cameras
        bounds, own = {}, {}
        if camera is not None:
            if c2w is not None or any(v is not None for v in (width, height, fov, fx, fy, cx, cy)):
                raise UserError("camera=i renders training camera i: give no c2w, size or intrinsics with it")
            if train is None:
                raise UserError(f"the training cameras are unavailable ({self._missing()})")
            i = _whole(camera, "camera", -len(train), len(train) - 1) % len(train)
            cam = train[i:i + 1]
            bounds = frame_bounds(getattr(self.model, "train_near_far", None), i)
            own = {"image_idx": i}  # its own appearance code, as the fit and --split train render it
        else:
            cam = self._pinhole(c2w, width, height, fov, fx, fy, cx, cy)
            if train is not None:
                center = torch.as_tensor(self.aabb.mean(0))
                nf = bounds_at_distance(train, center, getattr(self.model, "train_near_far", None),
                                        (cam.c2w[:, :3, 3].double().cpu() - center).norm(dim=1))
                bounds = frame_bounds(nf, 0)
        with self._bounds(near, far, bounds):
            res = self.model.render_camera(cam.to(dtype=torch.float32), **own, **bounds)
        return {k: res[k].float().cpu().numpy() for k in ("rgb", "depth", "opacity")}

    @torch.no_grad()
    def render_rays(self, origins, directions, near: float | None = None, far: float | None = None) -> dict:
        """Render rays from ``origins`` (..., 3) along ``directions`` (..., 3) (normalized here): {"rgb" (..., 3),
        "depth" (...,), "opacity" (...,)}, in the type the origins came in; depth along the unit direction. Bounds
        as in :meth:`render` (without per-photo bounds: ``near``/``far``, else the run's). A ``mip`` field sees
        points, not cones (rays carry no pixel footprint here)."""
        o, back = self._points(origins, 3, "origins")
        d = self._directions(directions, o.shape, "origin")
        parts = {"rgb": [], "depth": [], "opacity": []}
        with self._bounds(near, far, {}):
            for i in range(0, o.shape[0], self.model.render_cfg.chunk):
                res = self.model.render_rays(o[i:i + self.model.render_cfg.chunk], d[i:i + self.model.render_cfg.chunk])
                for k in parts:
                    parts[k].append(res[k].float())
        empty = {"rgb": o.new_zeros(0, 3), "depth": o.new_zeros(0), "opacity": o.new_zeros(0)}
        return {k: back(torch.cat(v) if v else empty[k]) for k, v in parts.items()}

    def _directions(self, directions, shape, per: str) -> torch.Tensor:
        """(N, 3) unit float32 directions, one per ``per`` (shape ``shape``), normalized in float64 (a float32 norm
        of 1e20 overflowed, of 1e-25 underflowed: both read as a zero vector)."""
        d, _ = self._points(directions, 3, "directions", torch.float64)
        if d.shape != shape:
            raise UserError(f"directions: expected one per {per}, {tuple(shape)}, got {tuple(d.shape)}")
        scale = d.abs().amax(dim=-1, keepdim=True)  # first to [-1, 1]: the norm then neither overflows nor underflows
        if bool((scale == 0).any()):
            raise UserError("directions: a zero vector has no direction")
        d = d / scale
        return (d / d.norm(dim=-1, keepdim=True)).float()

    @contextlib.contextmanager
    def _bounds(self, near, far, bounds: dict):
        """Render with typed ``near`` / ``far`` winning over the run's --near / --far / --no-far-bounds (which
        ``render_rays`` applies first) and over ``bounds`` (per-photo ones); UserError for bounds that leave the
        rays empty. The run's settings are back afterwards."""
        typed = {}
        for name, v in (("near", near), ("far", far)):
            value = _number(v, name)
            if value is not None:
                if not (np.isfinite(value) and value >= 0):
                    raise UserError(f"{name} must be a finite distance >= 0, got {v!r}")
                typed[name] = value
        cfg = self.model.render_cfg
        start = typed.get("near", cfg.near if cfg.near is not None else bounds.get("near", self.model.default_near()))
        end = typed.get("far", cfg.far if cfg.far is not None else bounds.get("far") if cfg.far_bounds else None)
        if end is not None and not end > start:
            raise UserError(f"far ({end:g}) must exceed near ({start:g}): the rays would be empty")
        saved = (cfg.near, cfg.far, cfg.far_bounds)
        try:
            if "near" in typed:
                cfg.near = typed["near"]
            if "far" in typed:
                cfg.far, cfg.far_bounds = typed["far"], True
            with _flushed_denormals(self.device):
                yield
        finally:
            cfg.near, cfg.far, cfg.far_bounds = saved

    def _missing(self) -> str:
        return getattr(self.model, "train_cameras_missing", None) or f"{self.config.get('data')}: dataset not found"

    def _pinhole(self, c2w, width, height, fov, fx, fy, cx, cy):
        from .cameras import Cameras  # noqa: PLC0415

        if c2w is None:
            raise UserError("render needs a camera: c2w with width, height and fov or fx, or camera=i")
        try:
            m = np.asarray(c2w.detach().cpu() if isinstance(c2w, torch.Tensor) else c2w, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise UserError(f"c2w: expected a (3, 4) or (4, 4) camera-to-world matrix ({e})") from None
        if m.shape not in ((3, 4), (4, 4)) or not np.isfinite(m).all():
            raise UserError(f"c2w: expected a finite (3, 4) or (4, 4) camera-to-world matrix, got shape {m.shape}")
        if m.shape == (4, 4) and not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            raise UserError(f"c2w: the last row of a 4x4 camera-to-world is 0 0 0 1, got {m[3].tolist()}")
        rot = m[:3, :3]
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-4) or np.linalg.det(rot) <= 0:
            raise UserError("c2w: its 3x3 part is not a rotation (orthonormal columns, determinant 1)")
        w = _whole(width, "width", 1, 16384)
        h = _whole(height, "height", 1, 16384)
        if w * h > 64_000_000:
            raise UserError(f"{w}x{h}: more than 64 million pixels in one view")
        fov, fx, fy, cx, cy = (_number(v, n) for v, n in ((fov, "fov"), (fx, "fx"), (fy, "fy"), (cx, "cx"),
                                                            (cy, "cy")))
        if (fov is None) == (fx is None):
            raise UserError("give the focal length as fov (vertical, degrees) or fx (pixels), one of them")
        if fov is not None and fy is not None:
            raise UserError("fy goes with fx: fov sets both focal lengths (square pixels)")
        if fov is not None:
            if not 0 < fov < 180:
                raise UserError(f"fov: expected degrees in (0, 180), got {fov:g}")
            fx = 0.5 * h / np.tan(np.radians(fov) / 2)
        for name, v in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy)):
            if v is not None and not np.isfinite(v):
                raise UserError(f"{name}: expected a finite number, got {v!r}")
        if fx <= 0 or (fy is not None and fy <= 0):
            raise UserError("fx and fy must be positive")
        return Cameras.create(torch.as_tensor(m[:3]), fx=fx, fy=fy, cx=cx, cy=cy, width=w, height=h)

    def mesh(self, res: int = 256, threshold: float | None = None, min_component: float = 0.0):
        """The surface where the density crosses ``threshold`` (``rwf export mesh --threshold``'s units: a density
        per reference length, default 10; :meth:`query`'s density there is threshold x :attr:`density_scale`) by
        marching cubes on a res^3 grid over the scene box, with vertex colours: a ``trimesh.Trimesh`` in the
        scene's coordinates, as ``rwf export mesh RUN`` writes it (empty when nothing crosses)."""
        from .mesh import MAX_GRID_RES  # noqa: PLC0415
        from .nerf_export import DEFAULT_DENSITY_LEVEL, density_mesh  # noqa: PLC0415

        res = _whole(res, "res", 2, MAX_GRID_RES)
        level = DEFAULT_DENSITY_LEVEL if threshold is None else _number(threshold, "threshold")
        if not (np.isfinite(level) and level > 0):
            raise UserError(f"threshold must be a positive density, got {threshold!r}")
        fraction = _number(min_component, "min_component")
        if not 0 <= fraction <= 1:
            raise UserError(f"min_component must be a fraction in [0, 1], got {min_component!r}")
        with torch.no_grad(), _flushed_denormals(self.device):
            return density_mesh(self.model, self.aabb, res, level, fraction)


def load_run(run: str | os.PathLike, device: str = "auto") -> ImageRun | ShapeRun | NeRFRun:
    """The run directory ``run`` (one a fit wrote: config.json and checkpoint.pt; a fit still going on gives its last
    checkpoint) as an :class:`ImageRun`, :class:`ShapeRun` or :class:`NeRFRun`, its model on ``device`` ("auto":
    the GPU when torch sees one, "cpu", "cuda"). The source image, mesh or dataset is read only where a method needs
    it (a NeRF run reads its training cameras). Errors are :class:`rwf_render.UserError` with the message the
    commands print."""
    from .rundir import CHECKPOINT, METRICS, load_run_config  # noqa: PLC0415

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda': no CUDA device is available")
    path = Path(run).expanduser()
    config = load_run_config(path)
    ckpt = path / CHECKPOINT
    if not ckpt.exists():
        if ckpt.is_symlink():
            raise UserError(f"{ckpt}: a link to {os.readlink(ckpt)}, which does not exist")
        if (path / METRICS).is_file():  # a finished fit's: the checkpoint was deleted or moved
            raise UserError(f"{ckpt}: missing, though the fit finished ({METRICS}); if it was moved, put it back")
        raise UserError(f"{path}: no checkpoint yet (a fit writes its first after --ckpt-every steps, and one at "
                        "its end)")
    # the loaders set denormal flushing for the commands, a notebook keeps its own; parameters made under its
    # inference_mode could not take part in autograd (ShapeRun.normals)
    with _flushed_denormals(torch.device("cpu")), torch.inference_mode(False):
        return _load(path, config, device)


def _load(path: Path, config: dict, device: str):
    from .trainer import resolve_device  # noqa: PLC0415

    kind = config["kind"]
    if kind == "image":
        from . import image  # noqa: PLC0415

        _, model, state, dev = image.load_model(path, config, device)
        return ImageRun(path, config, model.eval(), dev, state)
    if kind == "sdf":
        from . import sdf  # noqa: PLC0415

        cfg, model, norm, state, dev = sdf.load_run(path, config, device)
        return ShapeRun(path, config, model.eval(), dev, cfg, norm, state)
    if kind == "nerf":
        from .nerf import load_scene_model  # noqa: PLC0415

        model = load_scene_model(path, resolve_device(device))
        state = {"step": getattr(model, "checkpoint_step", None), "seconds": getattr(model, "checkpoint_seconds", None)}
        return NeRFRun(path, config, model, model.aabb.device, state)
    raise UserError(f"{path / 'config.json'}: unknown run kind {kind!r}")
