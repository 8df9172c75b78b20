"""The browser camera as an rwf_render camera: viser pose -> OpenGL camera-to-world -> Cameras -> rays.

viser reports each client's camera as ``position`` (3,), ``wxyz`` (4,), ``fov`` and ``aspect``:

* ``wxyz`` is the rotation R_world_camera in the **OpenCV** convention: the camera looks along its +z axis, +y points
  down in the image, +x right (viser ``CameraHandle.wxyz``: "look_direction is +Z, up_direction is -Y"); frustums
  and images placed in the scene use the same convention.
* ``fov`` is the *vertical* field of view in radians; ``aspect`` is canvas width / height.

rwf_render (:mod:`rwf_render.cameras`) uses OpenGL camera-to-world matrices (looks down -z, +y up), so
``c2w_gl = [R diag(1, -1, -1) | position]``, the same flip as :func:`rwf_render.cameras.opencv_to_opengl`.
Pixels are square: fx = fy = focal_from_fov(fov, height), principal point at the image centre.

Nothing here imports viser: the conversions are plain numpy/torch and are tested against
:func:`rwf_render.cameras.project`; :class:`ClickedFrustums` takes viser's client handles as arguments.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from rwf_render.cameras import Cameras, focal_from_fov, fov_from_focal, opencv_to_opengl

from rwf_render.camera_path import matrix_from_quat, quat_from_matrix


# -- viser pose <-> OpenGL camera-to-world ---------------------------------------------------------------------------
def c2w_from_viser(position, wxyz) -> np.ndarray:
    """OpenGL camera-to-world (4, 4) float64 of a viser camera (position (3,), wxyz (4,) OpenCV R_world_camera)."""
    c2w = np.eye(4)
    c2w[:3, :3] = matrix_from_quat(wxyz)
    c2w[:3, 3] = np.asarray(position, np.float64)
    return opencv_to_opengl(c2w)


def viser_pose(c2w) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz (4,), position (3,)) for placing a viser node (frustum, image) at an OpenGL c2w (3, 4) or (4, 4)."""
    c2w = np.asarray(c2w.detach().cpu() if isinstance(c2w, torch.Tensor) else c2w, np.float64)
    cv = opencv_to_opengl(c2w)
    return quat_from_matrix(cv[:3, :3]), cv[:3, 3].copy()


class UnusableCamera(ValueError):
    """A browser's camera that cannot be rendered (non-finite, a field of view outside (0, pi), no pixels)."""


def image_size(long_side: int, aspect: float) -> tuple[int, int]:
    """(width, height) whose longer side is ``long_side`` pixels and whose ratio is ``aspect`` (width / height)."""
    aspect = max(float(aspect), 1e-3)
    if aspect >= 1:
        return int(long_side), max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), int(long_side)


@dataclass(frozen=True)
class ViewCamera:
    """One browser camera, as viser reports it.

    Attributes:
        position: (3,) camera centre in world units.
        wxyz: (4,) OpenCV R_world_camera quaternion.
        fov: vertical field of view, radians.
        aspect: width / height of the canvas.
    """

    position: tuple
    wxyz: tuple
    fov: float
    aspect: float

    @classmethod
    def from_client(cls, camera, scale: float = 1.0) -> "ViewCamera":
        """Snapshot a viser ``CameraHandle`` (reads its four properties); its position is in viewer units,
        ``scale`` per scene unit (``Source.view_scale``), the snapshot's in scene units."""
        try:
            view = cls(tuple(float(v) / scale for v in camera.position), tuple(float(v) for v in camera.wxyz),
                       float(camera.fov), float(camera.aspect))
        except (ZeroDivisionError, TypeError, ValueError, OverflowError) as e:  # viser's aspect of a 0-pixel image
            raise UnusableCamera(f"camera message unusable ({type(e).__name__})") from None
        why = view.unusable()
        if why:
            raise UnusableCamera(why)
        return view

    def unusable(self) -> str | None:
        """Why this view cannot be rendered (None: it can): a client sends what it likes, and viser checks
        nothing (a hunt's fov 0 and image height 0 failed frames with ZeroDivisionError; NaN poses rendered
        garbage)."""
        if not all(math.isfinite(v) for v in (*self.position, *self.wxyz, self.fov, self.aspect)):
            return "camera message with a value that is not a finite number"
        if not (0 < self.fov < math.pi and self.aspect > 0):
            return f"camera message with fov {self.fov:g} rad and aspect {self.aspect:g}"
        if math.hypot(*self.wxyz) < 1e-6:
            return "camera message with a zero rotation"
        return None

    @classmethod
    def from_c2w(cls, c2w, fov: float, aspect: float) -> "ViewCamera":
        """From an OpenGL camera-to-world (3, 4) or (4, 4), vertical fov (radians) and aspect."""
        wxyz, position = viser_pose(c2w)
        return cls(tuple(position.tolist()), tuple(wxyz.tolist()), float(fov), float(aspect))

    def c2w(self) -> np.ndarray:
        """(4, 4) float64 OpenGL camera-to-world."""
        return c2w_from_viser(self.position, self.wxyz)

    def cameras(self, width: int, height: int, dtype=torch.float32, device=None) -> Cameras:
        """A single PINHOLE camera rendering a ``width`` x ``height`` image of this view.

        The vertical field of view is kept: fy = focal_from_fov(fov, height); pixels are square (fx = fy), so the
        horizontal field of view follows from width / height (equal to ``aspect`` up to rounding).
        """
        f = focal_from_fov(self.fov, height)
        return Cameras.create(torch.as_tensor(self.c2w(), dtype=dtype, device=device), fx=f, fy=f,
                              width=width, height=height)

    def look_at(self, distance: float) -> np.ndarray:
        """The point ``distance`` in front of the camera (3,)."""
        return np.asarray(self.position) + distance * matrix_from_quat(self.wxyz)[:, 2]


def frustum_params(cams: Cameras, i: int, scale: float = 1.0) -> dict:
    """Keyword arguments of viser's ``add_camera_frustum`` for camera ``i``: fov (vertical), aspect, wxyz, position
    (in viewer units: ``scale`` per scene unit, ``Source.view_scale``)."""
    wxyz, position = viser_pose(cams.c2w[i])
    h, w = float(cams.height[i]), float(cams.width[i])
    return {"fov": fov_from_focal(float(cams.fy[i]), h), "aspect": w / h, "wxyz": wxyz, "position": position * scale}


def frustum_image_corners(params: dict, scale: float) -> np.ndarray:
    """World corners (4, 3) of the image plane of a frustum drawn by ``add_camera_frustum(scale=scale, **params)``
    (``params``: :func:`frustum_params`' dict), where its thumbnail shows.

    viser 1.1.1 (client ``CameraFrustumVariants.tsx``) draws the pyramid with half-extents (tan(fov/2) aspect,
    tan(fov/2), 1), divided by the cube root of a third of their product (every fov gets the same volume) and times
    ``scale``, in the OpenCV frame (+z forward); the image fills its far end.
    """
    y = math.tan(params["fov"] / 2)
    x = y * params["aspect"]
    v = np.cbrt(x * y / 3.0)
    x, y, z = x * scale / v, y * scale / v, scale / v
    local = np.array([[-x, -y, z], [x, -y, z], [x, y, z], [-x, y, z]])
    return local @ matrix_from_quat(params["wxyz"]).T + np.asarray(params["position"], np.float64)


def middle_coverage(corners: np.ndarray, eye, target, up, fov: float, share: float = 0.5) -> np.ndarray:
    """How much of the middle of its view a browser camera at ``eye`` looking at ``target`` (roll by ``up``,
    vertical ``fov``) sees covered by each of K quads (K, 4, 3) (or polygons, (K, M, 3)): the share (K,) in [0, 1]
    of the middle square (a side ``share`` of the view's height, at the centre) that the quad's projected bounding
    box covers.

    A quad reaching behind the camera while part of it is in front counts as covering it all; one wholly behind,
    as nothing.
    """
    eye = np.asarray(eye, np.float64)
    axis = np.asarray(target, np.float64) - eye
    axis /= np.linalg.norm(axis)
    right = np.cross(axis, np.asarray(up, np.float64))
    if np.linalg.norm(right) < 1e-9:  # looking along ``up``: any roll
        right = np.cross(axis, np.eye(3)[np.argmin(np.abs(axis))])
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, axis)
    d = np.asarray(corners, np.float64) - eye  # (K, 4, 3)
    z = d @ axis  # (K, 4) depth along the view axis
    in_front = z > 1e-9
    x, y = (d @ right) / np.where(in_front, z, 1.0), (d @ cam_up) / np.where(in_front, z, 1.0)  # (K, 4)
    half = share * math.tan(fov / 2)
    w = np.clip(np.minimum(x.max(1), half) - np.maximum(x.min(1), -half), 0.0, None)
    h = np.clip(np.minimum(y.max(1), half) - np.maximum(y.min(1), -half), 0.0, None)
    return np.where(in_front.all(1), w * h / (2 * half) ** 2, in_front.any(1).astype(np.float64))


class ClickedFrustums:
    """Frustums hidden from a browser that looks through the training camera it clicked: a click takes the browser
    into that camera, where the camera's photo (its frustum's image) fills the view in front of the render, and a
    neighbour's photo can too (a quarter of lego_400's 100 cameras have one covering over 5 % of the middle).

    While the clicked camera's image covers more than ``cover`` of the middle of the browser's view
    (:func:`middle_coverage` with ``share``, as the first view is chosen), that frustum and every other whose
    image covers more than ``cover`` of it are hidden from that browser alone; once the clicked one covers less (the
    user backed or turned away), all show again. Checked at each move of that browser's camera (K quads projected at
    once); a click on another frustum moves the choice there.

    Per browser, through viser 1.1.1's scene scopes: a browser shows its own node (``client.scene``) of a name in
    place of the shared one (``server.scene``; "real client > real broadcast") and the shared one again, where it
    is drawn now, once its own is removed. An invisible frame of a frustum's name in a browser's scene hides the
    frustum (lines and photo) there only; other browsers keep seeing it.

    Args:
        params: each frustum's :func:`frustum_params` in viewer units: the list its owner keeps current (frustums
            that move with camera corrections).
        names: their scene nodes' names.
        scale: their ``add_camera_frustum`` scale.
        share, cover: the middle square's side, a share of the view's height, and the share of it an image may
            cover (NeRFSource: START_MIDDLE, START_COVER, as for its first view).
    """

    def __init__(self, params: list, names: list, scale: float, share: float, cover: float):
        self.params, self.names, self.scale, self.share, self.cover = params, names, scale, share, cover
        self._lock = threading.Lock()
        self._chosen: dict[int, int] = {}  # client_id -> the frustum it clicked last
        self._hiding: dict[int, dict[int, object]] = {}  # client_id -> {frustum: its node hiding it there}
        self._quads: list[tuple[dict, np.ndarray]] = []  # (params, image corners (4, 3)) of each frustum

    def on_click(self, k: int):
        """Click callback of frustum ``k``; a coroutine (viser runs it in its event loop, as the camera's below)."""

        async def clicked(event) -> None:
            client, p = event.client, self.params[k]
            with self._lock:
                first = client.client_id not in self._chosen
                self._chosen[client.client_id] = k
                self._hide(client, self.hidden(k, p["position"], p["wxyz"], p["fov"]))  # where the jump goes
            if first:
                client.camera.on_update(self._moved(client))
        return clicked

    def _moved(self, client):
        async def moved(_) -> None:
            with self._lock:
                k, camera = self._chosen.get(client.client_id), client.camera
                if k is not None:
                    self._hide(client, self.hidden(k, camera.position, camera.wxyz, camera.fov))
        return moved

    async def forget(self, client) -> None:
        """A browser left (its own nodes leave with it)."""
        with self._lock:
            self._chosen.pop(client.client_id, None)
            self._hiding.pop(client.client_id, None)

    def hidden(self, k: int, position, wxyz, fov: float) -> set[int]:
        """The frustums hidden from a browser that clicked frustum ``k`` whose camera is at ``position`` (viewer
        units), ``wxyz`` (as :class:`ViewCamera`'s), vertical ``fov``."""
        if not self.covering(position, wxyz, fov, [k])[0]:  # the browser left camera k (one quad: cheap)
            return set()
        return set(np.flatnonzero(self.covering(position, wxyz, fov)).tolist()) | {k}

    def covering(self, position, wxyz, fov: float, which=None) -> np.ndarray:
        """(K,) bool: the frustums (or those of index in ``which``) whose image covers more than ``cover`` of the
        middle of that camera's view. Of an image reaching behind the camera (a neighbour beside it, or the browser
        turned sideways), the part in front."""
        quads = self._image_quads()  # (K, 4, 3) viewer units
        quads = quads if which is None else quads[list(which)]
        axes, eye = matrix_from_quat(wxyz), np.asarray(position, np.float64)
        view = (eye, eye + axes[:, 2], -axes[:, 1], float(fov), self.share)
        z, near = (quads - eye) @ axes[:, 2], 1e-3 * self.scale  # (K, 4) depths; the plane images are cut at
        ahead = z > near
        whole = ahead.all(1)
        share = np.zeros(len(quads))
        if whole.any():
            share[whole] = middle_coverage(quads[whole], *view)
        for j in np.flatnonzero(ahead.any(1) & ~whole):
            following, z_following = np.roll(quads[j], -1, 0), np.roll(z[j], -1)
            cut = ahead[j] != (z_following > near)  # edges crossing the near plane
            t = (near - z[j][cut]) / (z_following[cut] - z[j][cut])
            part = np.concatenate([quads[j][ahead[j]], quads[j][cut] + t[:, None] * (following[cut] - quads[j][cut])])
            share[j] = middle_coverage(part[None], *view)[0]
        return share > self.cover

    def _image_quads(self) -> np.ndarray:
        """(K, 4, 3) the frustums' image corners, recomputed for those drawn elsewhere since (new params)."""
        if len(self._quads) != len(self.params):
            self._quads = [(None, None)] * len(self.params)
        for k, p in enumerate(self.params):
            if self._quads[k][0] is not p:
                self._quads[k] = (p, frustum_image_corners(p, self.scale))
        return np.stack([q for _, q in self._quads])

    def _hide(self, client, hidden: set[int]) -> None:
        """Under the lock: hide exactly ``hidden`` from ``client``."""
        nodes = self._hiding.setdefault(client.client_id, {})
        for j in [j for j in nodes if j not in hidden]:
            nodes.pop(j).remove()
        for j in sorted(hidden - nodes.keys()):
            nodes[j] = client.scene.add_frame(self.names[j], show_axes=False, visible=False)
