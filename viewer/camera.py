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
:func:`rwf_render.cameras.project`.
"""

from __future__ import annotations

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
        return cls(tuple(float(v) / scale for v in camera.position), tuple(float(v) for v in camera.wxyz),
                   float(camera.fov), float(camera.aspect))

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
