"""The camera model: the one place where camera conventions are written down.

Conventions (shared by every loader, converter, renderer and the viewer):

* **Poses** are camera-to-world matrices ``c2w`` (N, 3, 4) in the **OpenGL** convention, as in Blender,
  instant-ngp and nerfstudio ``transforms.json``: the camera looks down its -Z axis, +Y is up in the image and +X
  is right. A world point p has camera coordinates ``R^T (p - t)`` with ``R = c2w[:, :3]``, ``t = c2w[:, 3]``.
  OpenCV / COLMAP cameras look down +Z with +Y down; :func:`opencv_to_opengl` converts (it is its own inverse).
* **Pixels** are continuous (u, v) with u to the right and v down, the top-left corner of the image at (0, 0),
  so pixel (i, j) (column i, row j) has its center at (i + 0.5, j + 0.5). This is COLMAP's convention too, so
  COLMAP's principal point is used as is.
* **Intrinsics**: u = fx * xd + cx, v = fy * yd + cy, where (xd, yd) is the distorted version of the normalized
  OpenCV image coordinate (x, y) = (X / Z, Y / Z) of a camera point (X, Y, Z) (OpenCV axes, Z > 0 in front).
* **Models** (``MODELS``), with distortion ``dist = (k1, k2, k3, k4, p1, p2)``, unused entries zero:

  - ``PINHOLE``: no distortion.
  - ``OPENCV``: r2 = x^2 + y^2, radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4;
    xd = x radial + 2 p1 x y + p2 (r2 + 2 x^2), yd = y radial + p1 (r2 + 2 y^2) + 2 p2 x y. (k4, the r^8 term,
    is nerfstudio's extension of OpenCV's k1 k2 k3 model, as its ``transforms.json`` reader and ray generator use
    it; 0 in OpenCV and COLMAP models.)
  - ``OPENCV_FISHEYE``: theta = the angle between the ray and the optical axis, atan2(|(X, Y)|, Z) (atan(r) in
    front of the camera), theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8),
    (xd, yd) = theta_d (X, Y) / |(X, Y)|. Rays and projections go by angle, never through X / Z, so a fisheye may see
    up to 180 degrees off axis (a field of view of 180 degrees or more, as nerfstudio allows).

* **Valid lenses**: every pixel of a distorted camera must have one ray: :meth:`Cameras.create` refuses
  (UserError) a distortion that folds back inside the image, that cannot be inverted at the image border, or a
  fisheye whose border lies more than 180 degrees off axis (:func:`check_lenses`).
* **Depth** returned by :func:`project` is the z-depth along the optical axis (positive in front of the camera).

Everything is torch-first: functions accept tensors or numpy arrays and return tensors (float64 stays float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch

from .errors import UserError
from .lenses import (_radial_turn, _t, distort, fisheye_directions, fisheye_distort_dirs,  # noqa: F401
                     lens_problems, undistort)
# (distort, undistort: also imported from here)

PINHOLE, OPENCV, OPENCV_FISHEYE = "PINHOLE", "OPENCV", "OPENCV_FISHEYE"
MODELS = (PINHOLE, OPENCV, OPENCV_FISHEYE)  # Cameras.model holds indices into this tuple
DIST_NAMES = ("k1", "k2", "k3", "k4", "p1", "p2")  # order of Cameras.dist's last axis


def model_index(model: str | int) -> int:
    """Index of a model name (or index) in ``MODELS``; ValueError on an unknown one."""
    if isinstance(model, (int, np.integer)) and 0 <= int(model) < len(MODELS):
        return int(model)
    if isinstance(model, str) and model.upper() in MODELS:
        return MODELS.index(model.upper())
    raise ValueError(f"unknown camera model {model!r}; expected one of {', '.join(MODELS)}")


@dataclass
class Cameras:
    """A batch of N cameras (all tensors share dtype and device).

    Attributes:
        c2w: (N, 3, 4) OpenGL camera-to-world.
        fx, fy, cx, cy: (N,) focal lengths and principal point, in pixels.
        width, height: (N,) int64 image size in pixels.
        model: (N,) int64 index into ``MODELS``.
        dist: (N, 6) distortion (k1, k2, k3, k4, p1, p2).
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: torch.Tensor
    height: torch.Tensor
    model: torch.Tensor
    dist: torch.Tensor

    @classmethod
    def create(cls, c2w, fx, fy=None, cx=None, cy=None, width=None, height=None,
               model: str | Sequence[str] = PINHOLE, dist=None, dtype=None, names=None) -> "Cameras":
        """Build from anything broadcastable: scalars apply to every camera.

        Args:
            c2w: (N, 3, 4) or (N, 4, 4) or a single (3, 4) / (4, 4) OpenGL camera-to-world.
            fx: focal length in pixels, () or (N,); fy defaults to fx.
            cx, cy: principal point; default to the image center width / 2, height / 2.
            width, height: image size in pixels (required).
            model: one name for all cameras or a list of N names.
            dist: (6,) or (N, 6) distortion (k1, k2, k3, k4, p1, p2), or a dict with some of those keys.
            names: N labels that a lens error names the camera by (e.g. its frame and image file) instead of
                "camera i".
        Raises:
            UserError: a distortion that has no ray for some pixel of the image (see :func:`check_lenses`).
        Example:
            >>> cams = Cameras.create(torch.eye(4), fx=100.0, width=200, height=100)
            >>> cams.cx.item(), len(cams)
            (100.0, 1)
        """
        if width is None or height is None:
            raise ValueError("width and height are required")
        c2w = _t(c2w, dtype)
        dtype = c2w.dtype
        if c2w.ndim == 2:
            c2w = c2w[None]
        c2w = c2w[:, :3, :4]
        n = c2w.shape[0]

        def vec(x, default=None):
            x = default if x is None else x
            return torch.broadcast_to(_t(x, dtype, c2w.device), (n,)).clone()

        width, height = vec(width).round().long(), vec(height).round().long()
        fx = vec(fx)
        fy = vec(fy, fx)
        cx, cy = vec(cx, width.to(dtype) / 2), vec(cy, height.to(dtype) / 2)
        per_cam = [model] * n if isinstance(model, (str, int)) else list(model)
        model_t = torch.tensor([model_index(m) for m in per_cam], dtype=torch.long, device=c2w.device)
        if dist is None:
            dist = torch.zeros(6)
        elif isinstance(dist, dict):
            dist = [float(dist.get(k, 0.0)) for k in DIST_NAMES]
        dist = torch.broadcast_to(_t(dist, dtype, c2w.device), (n, 6)).clone()
        cams = cls(c2w, fx, fy, cx, cy, width, height, torch.broadcast_to(model_t, (n,)).clone(), dist)
        check_lenses(cams, names=names)
        return cams

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        """Select cameras (int, slice, index tensor or mask); the result keeps the batch axis."""
        if isinstance(index, torch.Tensor) and index.ndim == 0 and not index.is_floating_point() \
                and index.dtype != torch.bool:
            index = int(index)  # a 0-d tensor as one camera too (tensor indexing would drop the batch axis)
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            index = int(index)
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Cameras(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device=None, dtype=None) -> "Cameras":
        """Move to a device; ``dtype`` applies to the floating-point attributes only."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
        return Cameras(**out)

    @staticmethod
    def cat(cams: Sequence["Cameras"]) -> "Cameras":
        return Cameras(**{f.name: torch.cat([getattr(c, f.name) for c in cams]) for f in fields(Cameras)})

    def with_c2w(self, c2w) -> "Cameras":
        return replace(self, c2w=_t(c2w, self.c2w.dtype, self.c2w.device)[..., :3, :4])

    @property
    def K(self) -> torch.Tensor:
        """(N, 3, 3) intrinsic matrices."""
        K = torch.zeros(len(self), 3, 3, dtype=self.fx.dtype, device=self.fx.device)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = self.fx, self.fy, self.cx, self.cy, 1
        return K

    def model_names(self) -> list[str]:
        return [MODELS[int(m)] for m in self.model]


# ----------------------------------------------------------------------------------------------- conventions
def opencv_to_opengl(c2w):
    """Flip a camera-to-world between the OpenCV (x right, y down, z forward) and OpenGL (x right, y up,
    z backward) camera conventions by negating the camera's y and z axes. Its own inverse.

    Args:
        c2w: (..., 3, 4) or (..., 4, 4), tensor or numpy (the type is kept).
    """
    flip = np.array([1.0, -1.0, -1.0])
    if isinstance(c2w, torch.Tensor):
        out = c2w.clone()
        out[..., :3, :3] = out[..., :3, :3] * torch.as_tensor(flip, dtype=c2w.dtype, device=c2w.device)
        return out
    out = np.array(c2w, dtype=float, copy=True)
    out[..., :3, :3] *= flip
    return out


opengl_to_opencv = opencv_to_opengl


def to_homogeneous(c2w: torch.Tensor) -> torch.Tensor:
    """(..., 3, 4) -> (..., 4, 4) with last row (0, 0, 0, 1)."""
    c2w = _t(c2w)
    bottom = torch.zeros(*c2w.shape[:-2], 1, 4, dtype=c2w.dtype, device=c2w.device)
    bottom[..., 0, 3] = 1
    return torch.cat([c2w[..., :3, :4], bottom], dim=-2)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenGL camera-to-world(s) at ``eye`` looking at ``target``; ``up`` fixes the roll.

    Args:
        eye: (..., 3); target: (3,) or (..., 3); up: (3,).
    Returns:
        (..., 3, 4) c2w whose -Z axis points from eye to target.
    """
    eye = _t(eye)
    target, up = _t(target, eye.dtype), _t(up, eye.dtype)
    back = torch.nn.functional.normalize(eye - target, dim=-1)
    right = torch.linalg.cross(up.expand_as(back), back, dim=-1)
    # eye straight above/below the target: any right vector perpendicular to the view works: y x back, or x x back
    # when the view runs along y too (up = +-y)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-8
    alt = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype).expand_as(back), back, dim=-1)
    alt_x = torch.linalg.cross(torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype).expand_as(back), back, dim=-1)
    alt = torch.where(alt.norm(dim=-1, keepdim=True) < 1e-6, alt_x, alt)
    right = torch.nn.functional.normalize(torch.where(degenerate, alt, right), dim=-1)
    cam_up = torch.linalg.cross(back, right, dim=-1)
    return torch.stack([right, cam_up, back, eye], dim=-1)


def focal_from_fov(fov_radians: float, size: float) -> float:
    """Focal length in pixels for a field of view across ``size`` pixels (``camera_angle_x`` in Blender)."""
    return 0.5 * size / math.tan(0.5 * fov_radians)


def fov_from_focal(focal: float, size: float) -> float:
    return 2.0 * math.atan(0.5 * size / focal)


# ----------------------------------------------------------------------------------------------- lenses
def check_lenses(cams: Cameras, chunk: int = 32, names: Sequence[str] | None = None) -> None:
    """Refuse cameras whose distortion has no well-defined ray for some pixel of their image.

    A distortion that folds back inside the image (not monotonic, e.g. a strong negative k1 at a wide image's
    corners), one that cannot be inverted there (e.g. k1 = 1e20, whose inversion overflows), or a fisheye whose
    image reaches beyond 180 degrees off axis would otherwise give NaN or wrong rays without a word. Each
    distinct lens (intrinsics, size, model, distortion) is checked once, at its image border (see
    :func:`~rwf_render.lenses.lens_problems`); PINHOLE cameras need nothing.

    Args:
        names: how the error names each camera (default "camera i", its index in ``cams``).
    Raises:
        UserError: one line naming the first such camera and its parameters.
    """
    if len(cams) == 0 or not bool((cams.model != 0).any()):
        return
    cpu = cams.to(device="cpu", dtype=torch.float64)
    rows = torch.cat([torch.stack([cpu.fx, cpu.fy, cpu.cx, cpu.cy, cpu.width.double(), cpu.height.double(),
                                   cpu.model.double()], -1), cpu.dist], -1)
    first: dict[tuple, int] = {}  # each distinct lens -> the first camera with it
    for i in torch.nonzero(cpu.model != 0).flatten().tolist():
        first.setdefault(tuple(rows[i].tolist()), i)
    index = sorted(first.values())
    for start in range(0, len(index), chunk):
        part = torch.tensor(index[start:start + chunk])
        for i, why in zip(part.tolist(), lens_problems(cpu[part])):
            if why is not None:
                params = " ".join(f"{n}={v:g}" for n, v in zip(DIST_NAMES, cpu.dist[i].tolist()) if v != 0)
                label = f"camera {i}" if names is None else names[i]
                raise UserError(f"{label} ({MODELS[int(cpu.model[i])]} {params}, fx={float(cpu.fx[i]):g} "
                                f"fy={float(cpu.fy[i]):g} cx={float(cpu.cx[i]):g} cy={float(cpu.cy[i]):g}, "
                                f"{int(cpu.width[i])}x{int(cpu.height[i])}): {why}")


# ----------------------------------------------------------------------------------------------- projection
def project(points, cams: Cameras, eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into every camera.

    Args:
        points: (P, 3) world points seen by all cameras, or (N, P, 3) one set per camera.
        cams: N cameras.
    Returns:
        pixels: (N, P, 2) continuous pixel coordinates (u right, v down; pixel centers at +0.5).
        depth: (N, P) z-depth in front of the camera; points behind have depth <= 0. Their pixels are meaningless
            for PINHOLE and OPENCV (X / Z of a point behind), while an OPENCV_FISHEYE projects every point by its
            angle from the axis (up to 180 degrees), behind the camera too.
    Example:
        >>> cams = Cameras.create(torch.eye(4, dtype=torch.float64), fx=100.0, width=200, height=100)
        >>> project(torch.tensor([[0.0, 0.0, -2.0]], dtype=torch.float64), cams)[0]
        tensor([[[100.,  50.]]], dtype=torch.float64)
    """
    points = _t(points, cams.c2w.dtype, cams.c2w.device)
    if points.ndim == 2:
        points = points[None].expand(len(cams), -1, -1)
    R, t = cams.c2w[:, :3, :3], cams.c2w[:, :3, 3]
    p_cam = (points - t[:, None]) @ R  # (N, P, 3) OpenGL camera coordinates: R^T (p - t) per point
    depth = -p_cam[..., 2]
    z = torch.where(depth.abs() < eps, torch.full_like(depth, eps), depth)
    xy = torch.stack([p_cam[..., 0] / z, -p_cam[..., 1] / z], -1)  # OpenCV normalized (y down)
    xy_d = distort(xy, cams.model[:, None], cams.dist[:, None])
    fish = cams.model == 2
    if bool(fish.any()):  # by angle: atan2(|(X, Y)|, Z), valid behind the camera too
        p_cv = torch.stack([p_cam[..., 0], -p_cam[..., 1], depth], -1)
        xy_d = torch.where(fish[:, None, None], fisheye_distort_dirs(p_cv, cams.dist[:, None]), xy_d)
    u = cams.fx[:, None] * xy_d[..., 0] + cams.cx[:, None]
    v = cams.fy[:, None] * xy_d[..., 1] + cams.cy[:, None]
    return torch.stack([u, v], -1), depth


def pixel_grid(width: int, height: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(H, W, 2) pixel-center coordinates (i + 0.5, j + 0.5) of a width x height image."""
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype, device=device) + 0.5,
                          torch.arange(width, dtype=dtype, device=device) + 0.5, indexing="ij")
    return torch.stack([u, v], -1)


def pixel_rays(cams: Cameras, pixels=None, cam_idx=None, normalize: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixels.

    Args:
        cams: N cameras.
        pixels: (R, 2) continuous pixel coordinates (centers at +0.5), with ``cam_idx`` (R,) saying which camera
            each belongs to (may be omitted when N == 1). If ``pixels`` is None, the full grid of camera 0 is used
            and the results have shape (H, W, 3).
        normalize: unit directions if True; otherwise directions with z-depth 1 (``rays_o + t * rays_d`` is at
            z-depth t), which is what depth maps from :func:`project` measure.
    Returns:
        rays_o, rays_d: (R, 3) each (or (H, W, 3)).
    Raises:
        ValueError: ``normalize=False`` with a fisheye ray 90 degrees or more off axis, which has no z-depth.
    """
    if pixels is None:
        W, H = int(cams.width[0]), int(cams.height[0])
        o, d = pixel_rays(cams[0], pixel_grid(W, H, cams.c2w.dtype, cams.c2w.device).reshape(-1, 2),
                          normalize=normalize)
        return o.reshape(H, W, 3), d.reshape(H, W, 3)
    pixels = _t(pixels, cams.c2w.dtype, cams.c2w.device)
    if cam_idx is None:
        if len(cams) != 1:
            raise ValueError("cam_idx is required with more than one camera")
        cam_idx = torch.zeros(pixels.shape[0], dtype=torch.long, device=pixels.device)
    cam_idx = _t(cam_idx, torch.long, pixels.device)
    xy_d = torch.stack([(pixels[:, 0] - cams.cx[cam_idx]) / cams.fx[cam_idx],
                        (pixels[:, 1] - cams.cy[cam_idx]) / cams.fy[cam_idx]], -1)
    model, dist = cams.model[cam_idx], cams.dist[cam_idx]
    turn = None
    if bool((cams.model == 1).any()):  # OPENCV: each lens's turning point once per camera, not per ray
        turn = _radial_turn(cams.dist[:, :4])[cam_idx]
    xy = undistort(xy_d, model, dist, turn=turn)
    d_cv = torch.cat([xy, torch.ones_like(xy[:, :1])], -1)  # OpenCV camera frame, z-depth 1
    fish = model == 2
    if bool(fish.any()):  # the fisheye by angle (theta up to 180 degrees): unit directions
        d_fish = fisheye_directions(xy_d, dist)
        if not normalize:
            if bool((fish & (d_fish[:, 2] < 1e-9)).any()):
                raise ValueError("a fisheye ray 90 degrees or more off axis has no z-depth-1 direction; "
                                 "use normalize=True")
            d_fish = d_fish / d_fish[:, 2:].clamp_min(1e-9)
        d_cv = torch.where(fish[:, None], d_fish, d_cv)
    d_cam = d_cv * d_cv.new_tensor([1.0, -1.0, -1.0])  # OpenGL camera frame
    c2w = cams.c2w[cam_idx] if len(cams) > 1 else cams.c2w.expand(len(cam_idx), -1, -1)
    rays_d = (c2w[:, :3, :3] @ d_cam[:, :, None])[:, :, 0]
    if normalize:
        rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
    return c2w[:, :3, 3].clone(), rays_d


def rotation_error(c2w) -> torch.Tensor:
    """(N,) max |R^T R - I| of each pose's rotation block: 0 for a proper orthonormal rotation."""
    R = _t(c2w)[..., :3, :3]
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return (R.transpose(-1, -2) @ R - eye).abs().amax(dim=(-1, -2))
