"""SDF / occupancy runs in the viewer: the extracted mesh, the source (a mesh, or an oriented point cloud shown as
points coloured by their normals), a slice through the field, the field itself.

The scene is in the source's own units (``RUN/mesh.ply`` is saved in them); the field lives in the unit cube
``unit = (x - center) * scale`` (:class:`rwf_render.mesh.Normalization`, stored in config.json). Everything that
touches the SDF pipeline's API is in :func:`load_sdf_run` and :meth:`SDFSource.from_trainer`.

Render modes from the browser camera (sphere tracing for distances, first crossing for occupancy logits, via
:mod:`rwf_render.spheretrace`): ``shaded`` (headlight Lambert), ``normals`` (0.5 + 0.5 n), ``depth``, and ``off``
(only the 3D meshes; the default once a mesh was extracted).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras, pixel_rays
from rwf_render.mesh import UNIT_BOX

from .sources import FAR, Source, colormap, to_uint8, view_scale_for

AXES = ("x", "y", "z")
# slice plane orientation per normal axis: columns = image right, image up, normal (a proper rotation)
SLICE_FRAMES = {"x": np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float),
                "y": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float),
                "z": np.eye(3)}
SLICE_RES = 160
COLORMAPS = ("RdBu", "coolwarm", "viridis", "turbo")
MAX_CLOUD_POINTS = 100_000  # a larger source point cloud is shown as this many of its points (1.5 MB to send)


def load_sdf_run(run: Path, cfg: dict, device: torch.device):
    """The SDF pipeline's side: (SDFConfig, model, Normalization, source (mesh or ``point_cloud.PointCloud``) or
    None, extracted mesh or None)."""
    from rwf_render import sdf  # noqa: PLC0415

    scfg, model, norm, _, device = sdf.load_run(run, cfg, str(device))
    return scfg, model, norm, _source_mesh(scfg, run), _extracted_mesh(run)


def _source_mesh(scfg, run: Path | None = None):
    """The run's source for display; a point-cloud run's stored copy (``shape_task.load_source``: no normals estimated
    again), which a live fit writes before its first step."""
    from rwf_render.errors import UserError  # noqa: PLC0415
    from rwf_render.shape_task import load_source  # noqa: PLC0415

    try:
        return load_source(scfg, run)[0]
    except UserError as e:  # moved or deleted since the fit: show the rest
        print(f"rwf: warning: source mesh or point cloud unavailable ({e})", file=sys.stderr)
        return None


def shown_cloud(points: np.ndarray, normals: np.ndarray, n_max: int = MAX_CLOUD_POINTS, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """The points of a source cloud to draw: all of them up to ``n_max``, else ``n_max`` drawn without replacement
    (seeded, in file order), with their colours 0.5 + 0.5 n (the ``normals`` render mode's). (n, 3) float64 and
    (n, 3) uint8."""
    idx = np.arange(len(points))
    if len(points) > n_max:
        idx = np.sort(np.random.default_rng(seed).choice(len(points), n_max, replace=False))
    return points[idx], to_uint8(0.5 + 0.5 * normals[idx])


def _extracted_mesh(run: Path | None):
    """The run's extracted mesh, or None. An empty one (a fit whose field has no surface yet writes one) or an
    unreadable one is left out with a warning: the field itself can still be viewed."""
    from rwf_render.errors import UserError  # noqa: PLC0415
    from rwf_render.mesh_io import load_mesh  # noqa: PLC0415

    for name in ("mesh.ply", "mesh.obj", "mesh.glb"):
        if run is not None and (run / name).is_file():
            try:
                return load_mesh(run / name)
            except UserError as e:
                print(f"rwf: warning: extracted mesh left out ({e})", file=sys.stderr)
                return None
    return None


class SDFSource(Source):
    kind = "sdf"
    modes = ("shaded", "normals", "depth", "off")
    up = (0.0, 1.0, 0.0)

    def __init__(self, model, target: str, norm, device: torch.device, source_mesh=None, extracted=None,
                 run: Path | None = None):
        """model: field (N, 3) -> (N, 1) in the unit cube; target: "sdf" | "occupancy"; norm: Normalization;
        source_mesh: what was fitted, in its own units: a mesh (``.vertices``, ``.faces``) or an oriented point
        cloud (``.points``, ``.normals``: ``point_cloud.PointCloud``); extracted: the run's mesh."""
        super().__init__(model, device, run)
        self.target, self.norm = target, norm
        self.source_mesh, self.extracted = source_mesh, extracted
        self.center, self.scale = np.asarray(norm.center, np.float64), float(norm.scale)
        self.view_scale = view_scale_for(self.scene_radius())  # a mesh in millimetres: see VISER_MAX_DEPTH
        self.default_mode = "off" if extracted is not None else "shaded"
        self.slice = {"axis": "z", "offset": 0.0, "cmap": "RdBu", "visible": True}
        self._server, self._slice_node = None, None
        self._slope = (None, 1.0)  # (model version, the field's slope then)

    @classmethod
    def from_run(cls, run: Path, cfg: dict, device: torch.device) -> "SDFSource":
        scfg, model, norm, source_mesh, extracted = load_sdf_run(run, cfg, device)
        return cls(model, scfg.target, norm, model_device(model), source_mesh, extracted, run)

    @classmethod
    def from_trainer(cls, trainer, cfg: dict) -> "SDFSource":
        from rwf_render.mesh import Normalization  # noqa: PLC0415
        from rwf_render.shape_task import SDFConfig  # noqa: PLC0415

        scfg = SDFConfig.from_dict(cfg) if "normalization" in cfg else trainer.task.cfg
        norm = Normalization.from_dict(cfg["normalization"]) if "normalization" in cfg else Normalization((0, 0, 0), 1)
        return cls(cls.snapshot(trainer.model), scfg.target, norm, trainer.device,
                   _source_mesh(scfg, trainer.run_dir), None, trainer.run_dir)

    # -- geometry -----------------------------------------------------------------------------------------------
    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return (x - torch.as_tensor(self.center, dtype=x.dtype, device=x.device)) * self.scale

    def scene_radius(self) -> float:
        return 0.87 / self.scale  # half the unit cube's diagonal, in source units

    def initial_view(self):
        d = np.array([0.6, 0.45, 0.75])  # from the front-right, a little above (y up)
        return self.center + 3.0 * self.scene_radius() * d / np.linalg.norm(d), self.center.copy()

    def slope(self) -> float:
        """How much steeper than a distance the field is (``spheretrace.field_slope``, at least 1), once per model
        version: a learned field reaches 2 to 7, and sphere tracing with steps of 0.9 f stepped over thin parts (a
        field of slope 3 rendered blank)."""
        from rwf_render.spheretrace import field_slope  # noqa: PLC0415

        version = self.version
        if self._slope[0] != version:
            self._slope = (version, max(1.0, field_slope(self.field, device=self.device)))
        return self._slope[1]

    def field(self, x_unit: torch.Tensor) -> torch.Tensor:
        """Field values (N,) at unit-cube points (N, 3)."""
        return self.model(x_unit)[:, 0]

    # -- rendering ----------------------------------------------------------------------------------------------
    def render(self, cams: Cameras, mode: str):
        from rwf_render.spheretrace import field_normals, first_crossing, sphere_trace  # noqa: PLC0415

        cams = cams.to(self.device)
        rays_o, rays_d = pixel_rays(cams, normalize=False)  # world; t along rays_d is z-depth
        h, w = rays_o.shape[:2]
        o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        o_u, dn = self.to_unit(o), torch.nn.functional.normalize(d, dim=-1)  # unit-cube rays, unit length
        if self.target == "sdf":  # steps shortened by the field's slope, as the fit's preview (render_field)
            slope = self.slope()
            t_u = sphere_trace(self.field, o_u, dn, UNIT_BOX, steps=math.ceil(96 * slope), eps=2e-3,
                               step_scale=0.9 / slope)
        else:
            t_u = first_crossing(self.field, o_u, dn, UNIT_BOX, inside="above", n_steps=128, refine=6)
        hit = torch.isfinite(t_u)
        zdepth = torch.where(hit, t_u / self.scale / d.norm(dim=-1), torch.full_like(t_u, FAR))
        rgb = torch.ones(o.shape[0], 3, device=self.device)
        if mode == "depth":
            dist = float(np.linalg.norm(cams.c2w[0, :, 3].cpu().numpy() - self.center))
            lo, hi = max(dist - self.scene_radius(), 0.0), dist + self.scene_radius()
            vals = colormap(zdepth[hit].cpu().numpy(), "turbo", lo, hi)
            rgb[hit] = torch.from_numpy(vals).to(rgb)
        elif hit.any():
            pts = o_u[hit] + t_u[hit, None] * dn[hit]
            # central differences over a pixel's footprint at the surface (unit-cube units): autograd normals of a
            # ReLU field shade as grain (spheretrace.render_field)
            step = float(t_u[hit].median()) / float(cams.fy[0])
            n = field_normals(self.field, pts, outward=1.0 if self.target == "sdf" else -1.0, h=step)
            facing = (n * dn[hit]).sum(-1, keepdim=True)
            n = torch.where(facing > 0, -n, n)  # toward the camera
            if mode == "normals":
                rgb[hit] = 0.5 + 0.5 * n
            else:
                lambert = (-(n * dn[hit]).sum(-1, keepdim=True)).clamp(0, 1)
                rgb[hit] = torch.tensor([0.72, 0.76, 0.84], device=self.device) * (0.25 + 0.75 * lambert)
        return rgb.reshape(h, w, 3), zdepth.reshape(h, w)

    # -- slice plane --------------------------------------------------------------------------------------------
    def slice_points(self, axis: str, offset: float, res: int = SLICE_RES) -> torch.Tensor:
        """Unit-cube points (res, res, 3) of the slice texture: row 0 at the top, column 0 at the left."""
        frame = torch.as_tensor(SLICE_FRAMES[axis], dtype=torch.float32)
        s = (torch.arange(res, dtype=torch.float32) + 0.5) / res - 0.5
        right, up = torch.meshgrid(s, -s, indexing="xy")  # (res, res): right grows along columns, up towards row 0
        normal_axis = torch.zeros(3)
        normal_axis[AXES.index(axis)] = offset
        return right[..., None] * frame[:, 0] + up[..., None] * frame[:, 1] + normal_axis

    def slice_image(self, axis: str, offset: float, cmap: str, res: int = SLICE_RES) -> np.ndarray:
        """The slice texture (res, res, 3): the field through a colormap, with iso-lines (zero level black)."""
        pts = self.slice_points(axis, offset, res).reshape(-1, 3).to(self.device)
        with self.lock, torch.no_grad():
            f = torch.cat([self.field(c) for c in pts.split(65536)]).reshape(res, res).cpu().numpy()
        if self.target == "sdf":
            rgb = colormap(f, cmap, -0.25, 0.25)
            band = np.abs(f / 0.05 - np.round(f / 0.05)) < 0.06  # iso-lines every 0.05 (unit cube)
            rgb[band] *= 0.75
            rgb[np.abs(f) < 0.004] = 0.0
        else:
            rgb = colormap(f, cmap, -10.0, 10.0)  # logits
            rgb[np.abs(f) < 0.2] = 0.0
        return rgb

    def slice_pose(self, axis: str, offset: float) -> tuple[np.ndarray, np.ndarray]:
        """(wxyz, position) in source units of the slice image node.

        viser draws an image node like a camera image (OpenCV): local +x is the image's right, local +y its *down*
        (the client rotates the textured plane by pi about x), so the node's axes are (right, -up, -normal).
        """
        from rwf_render.camera_path import quat_from_matrix  # noqa: PLC0415

        shift = np.zeros(3)
        shift[AXES.index(axis)] = offset / self.scale
        return quat_from_matrix(SLICE_FRAMES[axis] * np.array([1.0, -1.0, -1.0])), self.center + shift

    def _update_slice(self) -> None:
        if self._server is None:
            return
        cfg = self.slice
        wxyz, pos = self.slice_pose(cfg["axis"], cfg["offset"])
        img = to_uint8(self.slice_image(cfg["axis"], cfg["offset"], cfg["cmap"]))
        side, pos = self.view_scale / self.scale, pos * self.view_scale  # viewer units
        self._slice_node = self._server.scene.add_image("/sdf/slice", img, side, side, format="png", wxyz=wxyz,
                                                        position=pos, visible=cfg["visible"], cast_shadow=False,
                                                        receive_shadow=False)

    # -- scene and panels ---------------------------------------------------------------------------------------
    def setup_scene(self, server) -> None:
        self._server = server
        self._meshes = {}
        s = self.view_scale  # nodes in viewer units: s per source unit
        if self.extracted is not None:
            self._meshes["extracted"] = server.scene.add_mesh_simple(
                "/sdf/extracted", np.asarray(self.extracted.vertices * s, np.float32),
                np.asarray(self.extracted.faces, np.uint32), color=(120, 170, 230))
        if hasattr(self.source_mesh, "points"):  # an oriented point cloud: points coloured by their normals
            points, colors = shown_cloud(self.source_mesh.points, self.source_mesh.normals)
            # dots about as wide as n points' spacing on a surface filling the unit cube (a sphere: 0.8 of it)
            size = s * self.scene_radius() * float(np.clip(1.5 / np.sqrt(len(points)), 0.002, 0.02))
            self._meshes["source"] = server.scene.add_point_cloud(
                "/sdf/source", np.asarray(points * s, np.float32), colors, point_size=size, point_shape="circle",
                precision="float32", visible=False)  # float16 rounds a cloud far from the origin by its spacing
        elif self.source_mesh is not None:
            self._meshes["source"] = server.scene.add_mesh_simple(
                "/sdf/source", np.asarray(self.source_mesh.vertices * s, np.float32),
                np.asarray(self.source_mesh.faces, np.uint32), color=(230, 170, 110),
                visible=False)  # shown on demand: it would hide the learned surface
        server.scene.add_box("/sdf/unit_cube", color=(90, 90, 90), dimensions=(s / self.scale,) * 3,
                             wireframe=True, position=self.center * s)
        self._update_slice()

    def setup_gui(self, server) -> None:
        with server.gui.add_folder("Shape"):
            for name, handle in self._meshes.items():
                what = "points" if name == "source" and hasattr(self.source_mesh, "points") else "mesh"
                box = server.gui.add_checkbox(f"{name} {what}", initial_value=handle.visible)
                box.on_update(lambda ev, h=handle: setattr(h, "visible", ev.target.value))
            vis = server.gui.add_checkbox("slice plane", initial_value=True)
            axis = server.gui.add_dropdown("slice axis", AXES, initial_value=self.slice["axis"])
            offset = server.gui.add_slider("slice position", -0.5, 0.5, 0.005, 0.0,
                                           hint="along the axis, in unit-cube units (the field's box)")
            cmap = server.gui.add_dropdown("color map", COLORMAPS, initial_value=self.slice["cmap"])
            server.gui.add_markdown("distance: +-0.25 (unit cube); lines every 0.05, zero level black"
                                    if self.target == "sdf" else "logits: +-10; the 0.5 level black")

        def changed(key):
            def cb(ev):
                self.slice[key] = ev.target.value
                self._update_slice()
            return cb

        from .panels import on_checked_update  # noqa: PLC0415

        vis.on_update(changed("visible"))
        for key, handle in (("axis", axis), ("offset", offset), ("cmap", cmap)):
            on_checked_update(handle, changed(key))

    def refresh_gui(self) -> None:
        self._update_slice()


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
