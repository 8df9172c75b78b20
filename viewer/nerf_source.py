"""NeRF runs in the viewer: the radiance field from the browser camera, training cameras, scene box, mesh.

Everything that touches the NeRF pipeline goes through two functions of ``rwf_render.nerf`` (the contract):

    load_scene_model(run, device) -> model   with .aabb (6,), .train_cameras (Cameras or None),
                                             .train_image_paths (list[Path]); optionally
                                             .train_dataset_cameras (the cameras before .pose_correction)
    render_camera(model, cam, max_samples=None, chunk=None) -> {"rgb": (H, W, 3), "depth": (H, W),
                                                                  "opacity": (H, W)}

``depth`` is ``sum_i w_i t_i`` along unit-length rays (``RAY_DISTANCE_DEPTH``; NeRFModel.render_rays) and
``opacity`` is ``sum_i w_i``. viser composites the frame with the scene's meshes and frustums by a z-depth (the
distance along the camera axis, in scene units): a pixel of opacity >= ``nerf_export.MIN_OPACITY`` gets its
weights' mean, depth / opacity, as z-depth (``depth`` alone lies short of the surface by the missing opacity, a
fifth at 0.8; the exports place their points the same way: ``nerf_export.stop_distance``), and a pixel of less
opacity, background, gets ``FAR``: behind every scene node (viser reads a depth of 0 as at the camera, in front of
them all).

Live (``rwf fit nerf --view``), the trainer's model is the same NeRFModel without the attached cameras; they and
the thumbnails come from the task's training split (``task.train``, a ``PosedImages``) when it has one. Those are
the dataset's poses: with ``--optimize-cameras`` the frustums are drawn where the snapshot's ``pose_correction``
puts them (``PoseCorrection.refined``, as ``load_scene_model`` gives a finished run's cameras) and move with it at
each panel refresh (:meth:`NeRFSource.refresh_gui`). ``rwf view RUN`` draws the run's refined cameras, and after
"reload checkpoint" its ``train_dataset_cameras`` corrected by the reloaded ``pose_correction``: where
``load_scene_model`` of the new checkpoint puts them.

A click on a frustum takes the clicking browser into that camera and hides that frustum from that browser alone
while its image (the training photo, on the frustum's far end) would cover the middle of the view, with any other
frustum whose photo does too (:class:`~viewer.camera.ClickedFrustums`): otherwise the photo fills the view in front
of the render and reads as a perfect fit. The "training images" checkbox takes the photos off every frustum.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras, pixel_rays
from rwf_render.errors import UserError
from rwf_render.nerf_export import stop_distance

from .camera import ClickedFrustums, frustum_image_corners, frustum_params, middle_coverage
from .sdf_source import _extracted_mesh
from .sources import FAR, INITIAL_FOV, Source, colormap, to_uint8, view_scale_for

RAY_DISTANCE_DEPTH = True  # render_camera's depth: distance along unit rays (True) or z-depth (False)
MAX_FRUSTUMS = 300  # more training cameras are subsampled evenly
FRUSTUM_SIZE = 0.06  # a training camera's frustum: viser's scale per scene radius
START_STEPS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)  # initial_view's offsets from camera 0, in its frustum's depth
START_MIDDLE = 0.5  # ... until frustum images cover little of the middle square this share of the view's height:
START_COVER = 0.05  # this share of it at most, and none of it camera 0's own (ClickedFrustums: what a click hides)
THUMB_HEIGHT = 64


def nerf_api(module: str = "rwf_render.nerf"):
    """The NeRF pipeline module, or one readable error when it is missing or lacks the viewer's two functions."""
    try:
        api = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise UserError("NeRF runs need the NeRF pipeline (rwf_render.nerf), which this install lacks") from None
        raise
    missing = [n for n in ("load_scene_model", "render_camera") if not hasattr(api, n)]
    if missing:
        raise UserError(f"{module} lacks {', '.join(missing)}: this viewer needs a newer NeRF pipeline")
    return api


def jump_to(params):
    """Click callback of a training camera's frustum: the clicking browser's camera takes that camera's pose and fov.
    ``params``: :func:`~viewer.camera.frustum_params`' dict, or a callable returning the current one (a frustum that
    moves: the browser jumps to where it is drawn now)."""

    def jump(event) -> None:
        p = params() if callable(params) else params
        camera = event.client.camera
        with event.client.atomic():
            camera.position = p["position"]  # first: moving the position shifts the orbit target along
            camera.wxyz = p["wxyz"]
            camera.fov = p["fov"]
    return jump


def frustum_name(i: int) -> str:
    """The scene node of training camera ``i``'s frustum."""
    return f"/nerf/cameras/{i:04d}"


class NeRFSource(Source):
    kind = "nerf"
    modes = ("rgb", "depth", "opacity")
    # render_camera is about 2x faster per pixel with 64k-ray chunks than with 8k on a 2-core CPU (BENCHMARKS.md):
    # strips of 64k pixels (a 256x256 frame is one), each rendered as a single chunk
    strip_pixels = 65536

    def __init__(self, model, device: torch.device, api, run: Path | None = None, mesh=None,
                 cameras: Cameras | None = None, thumbnail=None, follow_corrections: bool = False,
                 dataset_cameras: Cameras | None = None, near_far=None):
        """cameras: training cameras (default ``model.train_cameras``); thumbnail(i) -> (H, W, C) image i in
        [0, 1] (default: read ``model.train_image_paths[i]``); follow_corrections: the frustums are drawn at the
        dataset's poses corrected by ``model.pose_correction`` (when the model has one for as many cameras),
        following it at each :meth:`refresh_gui`; dataset_cameras: those poses (default ``cameras``: a fit in
        progress; a finished run's ``train_cameras`` come already corrected, so its ``train_dataset_cameras`` are
        given here, and the corrections are never applied twice); near_far: the training images' (near, far) (K, 2)
        of a real capture (default ``model.train_near_far``; none: the run's own bounds)."""
        super().__init__(model, device, run)
        self.api, self.mesh = api, mesh
        self.aabb = np.asarray(torch.as_tensor(model.aabb).detach().cpu(), np.float64).reshape(6)
        self.center = (self.aabb[:3] + self.aabb[3:]) / 2
        self.cameras: Cameras | None = cameras if cameras is not None else getattr(model, "train_cameras", None)
        self.image_paths = list(getattr(model, "train_image_paths", None) or [])
        self.near_far = near_far if near_far is not None else getattr(model, "train_near_far", None)
        self.thumbnail = thumbnail or self._read_thumbnail
        self.follow_corrections = follow_corrections
        self.dataset_cameras: Cameras | None = dataset_cameras if dataset_cameras is not None else self.cameras
        # a finished run's cameras are its corrected poses, and stay so after "reload checkpoint"; a fit in
        # progress keeps its dataset's poses as ``cameras`` (its frustums alone follow the corrections)
        self._cameras_corrected = self.dataset_cameras is not self.cameras
        self.up = self._mean_up()
        self.view_scale = view_scale_for(self._extent())
        self._frustums, self._frustum_params, self._frustum_idx = [], [], np.zeros(0, int)
        self._clicks: ClickedFrustums | None = None  # which frustum each browser clicked (setup_scene)
        self._thumbs: dict[int, np.ndarray] = {}  # k -> thumbnail of frustum k, uint8
        self._images_shown = True  # the "training images" checkbox
        self._thumb_lock = threading.Lock()
        self._drawn_delta: torch.Tensor | None = None  # the corrections the frustums are drawn with
        self._closed = threading.Event()
        self._thumbnails: threading.Thread | None = None
        # thumbnails of transparent photos go over the colour the field is shown on (black for --background black)
        background = getattr(model, "background", None)  # NeRFModel: "white" | "black" | "random" | "learned"
        self.thumb_background = 0.0 if isinstance(background, str) and background == "black" else 1.0

    @classmethod
    def from_run(cls, run: Path, cfg: dict, device: torch.device, api=None) -> "NeRFSource":
        api = api or nerf_api()
        try:
            model = api.load_scene_model(run, device)
        except (KeyError, TypeError) as e:  # a config.json without the fields the pipeline reads
            raise UserError(f"{run / 'config.json'}: not a valid nerf run config ({type(e).__name__}: {e})") from None
        model.eval()
        dataset = getattr(model, "train_dataset_cameras", None)  # a reloaded checkpoint corrects them anew
        return cls(model, device, api, run, _extracted_mesh(run), follow_corrections=dataset is not None,
                   dataset_cameras=dataset)

    @classmethod
    def from_trainer(cls, trainer, cfg: dict, api=None) -> "NeRFSource":
        split = getattr(trainer.task, "train", None)  # PosedImages: cameras and the images in memory
        cameras = getattr(split, "cameras", None)
        thumb = (lambda i: split.image(i).numpy()) if hasattr(split, "image") else None
        return cls(cls.snapshot(trainer.model), trainer.device, api or nerf_api(), trainer.run_dir,
                   cameras=cameras, thumbnail=thumb, follow_corrections=True, near_far=getattr(split, "near_far", None))

    # -- geometry -----------------------------------------------------------------------------------------------
    def _extent(self) -> float:
        """Distance from the scene box's centre to its corners and to the farthest training camera."""
        far = self.scene_radius()
        if self.cameras is not None and len(self.cameras):
            eyes = self.cameras.c2w[:, :3, 3].double().cpu().numpy()
            far = max(far, float(np.linalg.norm(eyes - self.center, axis=1).max()))
        return far

    def _mean_up(self) -> tuple:
        """Scene up: the mean of the training cameras' up axes (+z without cameras or when they cancel)."""
        if self.cameras is None or len(self.cameras) == 0:
            return (0.0, 0.0, 1.0)
        up = self.cameras.c2w[:, :3, 1].double().mean(0).cpu().numpy()
        n = np.linalg.norm(up)
        return tuple((up / n).tolist()) if n > 1e-3 else (0.0, 0.0, 1.0)

    def drawn_cameras(self) -> tuple[Cameras, torch.Tensor | None]:
        """The training cameras where their frustums are drawn, and the corrections (N, 6) applied to the
        dataset's poses to get there (None: ``cameras`` as given). Reads the model's corrections under the source's
        lock (a snapshot or a reloaded checkpoint is loaded under it), so the poses all come from one training
        step."""
        correction, base = None, self.dataset_cameras
        with self.lock:
            if self.follow_corrections:
                correction = getattr(self.model, "pose_correction", None)
            if (self.cameras is None or base is None or correction is None
                    or correction.delta.shape[0] != len(base) or len(base) != len(self.cameras)):
                return self.cameras, None
            delta = correction.delta.detach().to("cpu", torch.float64, copy=True)
            c2w = correction.refined(base.c2w.detach().cpu())  # load_scene_model's poses, from the same call
        return replace(base, c2w=c2w), delta

    def scene_radius(self) -> float:
        return 0.5 * float(np.linalg.norm(self.aabb[3:] - self.aabb[:3]))

    def frustum_indices(self) -> np.ndarray:
        """The training cameras drawn as frustums: all, or MAX_FRUSTUMS of them evenly (camera 0 always)."""
        n = 0 if self.cameras is None else len(self.cameras)
        return np.unique(np.linspace(0, n - 1, min(n, MAX_FRUSTUMS)).round().astype(int)) if n else np.zeros(0, int)

    def initial_view(self):
        """A little behind and above training camera 0, looking at the point it looks at (as far along its axis as
        the scene centre), so a new browser sees the render much as camera 0 saw the scene.

        Not *at* camera 0: its frustum's image, the training photo, would fill the middle of the view in front of
        the render. The view backs off along camera 0's axis and rises (scene up) by as much, in steps of its
        frustum's depth (START_STEPS), until the frustums' images cover little of the middle of the view
        (START_MIDDLE, START_COVER; camera 0's image is then in the lower quarter, and more steps take the view
        past neighbours in the way, as in a forward-facing capture). When no step does, the one covering least."""
        if self.cameras is None or not len(self.cameras):
            return self.center + np.array([1.0, -1.0, 0.6]) * self.scene_radius() * 1.5, self.center.copy()
        c2w = self.cameras.c2w[0].double().cpu().numpy()
        eye, forward = c2w[:, 3], -c2w[:, 2]
        target = eye + forward * max(float(np.linalg.norm(eye - self.center)), 0.5 * self.scene_radius())
        rise = np.asarray(self.up, np.float64) - np.dot(self.up, forward) * forward  # scene up, across the axis
        rise = rise / np.linalg.norm(rise) if np.linalg.norm(rise) > 1e-6 else c2w[:, 1]
        size = FRUSTUM_SIZE * self.scene_radius()
        images = np.stack([frustum_image_corners(frustum_params(self.cameras, int(i)), size)
                           for i in self.frustum_indices()])  # (K, 4, 3), camera 0's first
        depth = float(np.mean((images[0] - eye) @ forward))
        best = None
        for step in START_STEPS:
            start = eye + step * depth * (rise - forward)
            cover = middle_coverage(images, start, target, self.up, INITIAL_FOV, START_MIDDLE)
            score = (cover[0] > 0, float(cover.sum()))
            if best is None or score < best[0]:
                best = (score, start)
            if not score[0] and score[1] <= START_COVER:
                break
        return best[1], target

    # -- rendering ----------------------------------------------------------------------------------------------
    def render(self, cams: Cameras, mode: str):
        cams = cams.to(self.device)
        out = self.api.render_camera(self.model, cams, chunk=int(cams.width[0] * cams.height[0]), **self._bounds(cams))
        rgb, depth = out["rgb"].float(), out["depth"].float()
        opacity = out["opacity"].float().reshape(depth.shape)
        if RAY_DISTANCE_DEPTH:
            _, d = pixel_rays(cams, normalize=False)  # z-depth-1 directions: |d| = ray length per unit z-depth
            depth = depth / d.norm(dim=-1).to(depth)
        depth, solid = stop_distance({"depth": depth, "opacity": opacity})  # where the ray stops (H, W)
        zdepth = torch.where(solid, depth, torch.full_like(depth, FAR))
        if mode == "depth":
            dist = float(np.linalg.norm(cams.c2w[0, :, 3].cpu().numpy() - self.center))
            lo, hi = max(dist - self.scene_radius(), 0.0), dist + self.scene_radius()
            vals = torch.from_numpy(colormap(depth.cpu().numpy(), "turbo", lo, hi)).to(rgb)
            rgb = torch.where(solid[..., None], vals, torch.ones_like(vals))
        elif mode == "opacity":
            rgb = opacity[..., None].expand(*opacity.shape, 3)
        return rgb, zdepth

    def _bounds(self, cams: Cameras) -> dict:
        """``near``/``far`` for a browser camera of a real capture with per-image bounds: those of the training
        cameras carried to its distance from the scene centre (``render_paths.bounds_at_distance``: without them
        a view from the photos' ring looked through what the field paints in front of each photo); none else."""
        near_far = self.near_far
        if near_far is None or self.cameras is None or len(self.cameras) == 0:
            return {}
        from rwf_render.render_paths import bounds_at_distance  # noqa: PLC0415

        dist = float(np.linalg.norm(cams.c2w[0, :, 3].double().cpu().numpy() - self.center))
        near, far = bounds_at_distance(self.cameras.to(device="cpu"), self.center, near_far, [dist])[0].tolist()
        return {"near": near, "far": far}

    # -- scene --------------------------------------------------------------------------------------------------
    def setup_scene(self, server) -> None:
        lo, hi, s = self.aabb[:3], self.aabb[3:], self.view_scale  # nodes in viewer units: s per scene unit
        self._box = server.scene.add_box("/nerf/scene_box", color=(90, 90, 90), dimensions=tuple((hi - lo) * s),
                                         wireframe=True, position=self.center * s)
        if self.mesh is not None:
            self._mesh = server.scene.add_mesh_simple("/nerf/mesh", np.asarray(self.mesh.vertices * s, np.float32),
                                                      np.asarray(self.mesh.faces, np.uint32), color=(200, 200, 200),
                                                      visible=False)
        if self.cameras is not None and len(self.cameras):
            idx = self.frustum_indices()
            scale = FRUSTUM_SIZE * self.scene_radius() * s
            drawn, self._drawn_delta = self.drawn_cameras()
            self._frustum_idx = idx
            self._clicks = ClickedFrustums(self._frustum_params, [frustum_name(int(i)) for i in idx], scale,
                                           START_MIDDLE, START_COVER)
            for k, i in enumerate(idx):
                params = frustum_params(drawn, int(i), s)
                handle = server.scene.add_camera_frustum(frustum_name(int(i)), scale=scale,
                                                         thickness=0.08 * scale, color=(40, 90, 200), **params)
                self._frustum_params.append(params)
                handle.on_click(self._clicks.on_click(k))  # hidden from the browser while it is there
                handle.on_click(jump_to(lambda k=k: self._frustum_params[k]))  # where it is drawn when clicked
                self._frustums.append(handle)
            # thumbnails load in the background: a few hundred image files should not delay the first frame
            self._thumbnails = threading.Thread(target=self._load_thumbnails, args=(idx,), daemon=True,
                                                name="thumbnails")
            self._thumbnails.start()

    def refresh_gui(self) -> None:
        """A new snapshot (live) or a reloaded checkpoint: when its camera corrections changed, the frustums move
        to the poses they give, and so do a finished run's ``cameras`` (with ``up`` and ``initial_view``). Cheap:
        at most MAX_FRUSTUMS poses, on the panel thread (every ``panel_every_s`` while someone watches)."""
        if not self.follow_corrections:
            return
        drawn, delta = self.drawn_cameras()
        if delta is None or (self._drawn_delta is not None and torch.equal(delta, self._drawn_delta)):
            return
        self._drawn_delta = delta
        if self._cameras_corrected:
            self.cameras = drawn
            self.up = self._mean_up()
        for k, (handle, i) in enumerate(zip(self._frustums, self._frustum_idx)):
            params = frustum_params(drawn, int(i), self.view_scale)
            self._frustum_params[k] = params  # one assignment: a click reads the old pose or the new, never half
            handle.position, handle.wxyz = params["position"], params["wxyz"]

    def close(self) -> None:
        """Stop loading thumbnails (they would be sent to a server that has stopped)."""
        self._closed.set()
        if self._thumbnails is not None and self._thumbnails is not threading.current_thread():
            self._thumbnails.join(10.0)

    def _read_thumbnail(self, i: int) -> np.ndarray | None:
        from rwf_render.imgio import read_image  # noqa: PLC0415

        if i >= len(self.image_paths):
            return None
        try:
            return read_image(self.image_paths[i])[0]
        except UserError:
            return None

    def _load_thumbnails(self, idx) -> None:
        for k, (handle, i) in enumerate(zip(self._frustums, idx)):
            if self._closed.is_set():
                return
            img = self.thumbnail(int(i))
            if img is None:
                continue
            step = max(1, img.shape[0] // THUMB_HEIGHT)
            img = img[::step, ::step]
            if img.shape[2] == 4:  # straight alpha over the run's background (white unless --background black)
                img = img[..., :3] * img[..., 3:] + self.thumb_background * (1 - img[..., 3:])
            img = to_uint8(np.repeat(img[..., :1], 3, -1) if img.shape[2] < 3 else img[..., :3])
            with self._thumb_lock:
                self._thumbs[k] = img
                if self._images_shown:
                    handle.image = img

    def show_images(self, shown: bool) -> None:
        """Training photos on their frustums, or the frustums' lines alone (the "training images" checkbox)."""
        with self._thumb_lock:
            self._images_shown = bool(shown)
            for k, img in self._thumbs.items():
                self._frustums[k].image = img if shown else None

    def setup_gui(self, server) -> None:
        with server.gui.add_folder("Scene"):
            cams = server.gui.add_checkbox("training cameras", initial_value=True)
            images = server.gui.add_checkbox("training images", initial_value=True,
                                             hint="the photos on the frustums; off: their outlines alone")
            box = server.gui.add_checkbox("scene box", initial_value=True)
            cams.on_update(lambda ev: [setattr(f, "visible", ev.target.value) for f in self._frustums])
            images.on_update(lambda ev: self.show_images(ev.target.value))
            box.on_update(lambda ev: setattr(self._box, "visible", ev.target.value))
            if self.mesh is not None:
                mesh = server.gui.add_checkbox("exported mesh", initial_value=False)
                mesh.on_update(lambda ev: setattr(self._mesh, "visible", ev.target.value))
            n = 0 if self.cameras is None else len(self.cameras)
            ratio = f"1:{1 / self.view_scale:g}" if self.view_scale < 1 else f"{self.view_scale:g}:1"
            shown = "" if self.view_scale == 1 else f"; shown at {ratio} (viser's depth range and near plane)"
            server.gui.add_markdown(f"{n} training cameras; box {np.round(self.aabb, 3).tolist()}{shown}")
        if self._clicks is not None:
            server.on_client_disconnect(self._clicks.forget)
