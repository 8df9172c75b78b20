"""Render paths from a run's training cameras: ``rwf render RUN --orbit N``, ``--interpolate N`` and ``--spiral N``.

    rwf render RUN --orbit N         # a circle around the scene centre, N frames
    rwf render RUN --interpolate N   # every training camera in turn, N frames from one to the next
    rwf render RUN --spiral N        # the original NeRF's spiral around forward-facing cameras, N frames

Data flow, one step per function:
    training cameras (K, and their per-image ray bounds (K, 2) where the dataset gives them)
    -> poses: a circle at their median distance and elevation around the scene centre (:func:`orbit_cameras`), a
       greedy tour through them (:func:`nearest_neighbour_tour`) interpolated as a camera path's keyframes are
       (:func:`keyframe_path`, through :func:`rwf_render.camera_path.interpolate`), or a spiral around their average
       camera (:func:`average_pose`, :func:`spiral_focus`, :func:`spiral_path`)
    -> N PINHOLE :class:`~rwf_render.cameras.Cameras` with the training cameras' intrinsics and their ray bounds
       (:func:`orbit_cameras`, :func:`training_path_cameras`, :func:`spiral_cameras`), rendered by
       ``nerf_outputs.py``.

A distorted or fisheye training camera contributes the pinhole that ``--orbit`` renders for it (see
:func:`orbit_cameras`). The frame counts are checked against :data:`rwf_render.camera_path.MAX_FRAMES` before any
camera is made (``nerf_outputs.py``). Paths recorded in the viewer are ``camera_path.json`` files
(:mod:`rwf_render.camera_path`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from rwf_render.camera_path import interpolate
from rwf_render.cameras import Cameras, look_at
from rwf_render.errors import RwfWarning, UserError
from rwf_render.lenses import fisheye_theta


# -- a circle around the scene (rwf render RUN --orbit N) ---------------------------------------------------------
def bounds_at_distance(train: Cameras, center, near_far, distance) -> torch.Tensor | None:
    """(near, far) for cameras ``distance`` (M,) from ``center`` looking at it, from the training cameras' per-image
    bounds ``near_far`` (K, 2) (LLFF, ``rwf data colmap --bounds``; None: none, and None is returned): each bound as
    a fraction of its camera's distance to the centre, the smallest near fraction (x 0.9, as NeRF's spiral) and the
    largest far one, times ``distance``. A real capture's field is fitted only beyond each photo's near bound; in
    front of it, where no ray of the fit marched, it may paint anything (a view from the training cameras' ring
    without the bound looked through that haze). Returns (M, 2) float64."""
    if near_far is None:
        return None
    near_far = torch.as_tensor(near_far, dtype=torch.float64).reshape(-1, 2)
    d = (train.c2w[:, :3, 3].double().cpu() - torch.as_tensor(center, dtype=torch.float64)).norm(dim=1)
    d = d.clamp_min(1e-12)
    near, far = 0.9 * float((near_far[:, 0] / d).min()), float((near_far[:, 1] / d).max())
    distance = torch.as_tensor(distance, dtype=torch.float64).reshape(-1)
    return torch.stack([near * distance, far * distance], 1)


def orbit_cameras(train: Cameras, center, n: int) -> Cameras:
    """``n`` cameras on a circle around ``center``, looking at it: up is the training cameras' mean up vector,
    radius and elevation their median distance and elevation.

    The orbit cameras are plain PINHOLE cameras (as nerfstudio renders camera paths with perspective cameras), so
    the video of a distorted dataset comes out undistorted: training camera 0's fx, fy, cx, cy, width and height
    without its distortion. An OPENCV_FISHEYE camera 0 instead gets the pinhole focal length whose horizontal field
    of view, 2 atan(width / (2 fx)), equals the fisheye's across its width (the angles of the rays through the left
    and right image edges at the principal row, added), capped at 120 degrees: a pinhole cannot reach 180 degrees
    and spends most of its pixels on the edges well before that. fy is scaled by the same factor (pixel aspect kept),
    cx and cy are kept.
    """
    train = train.to(dtype=torch.float64)
    center = torch.as_tensor(center, dtype=torch.float64)
    up = torch.nn.functional.normalize(train.c2w[:, :3, 1].mean(0), dim=0)
    offsets = train.c2w[:, :3, 3] - center  # (N, 3)
    radius = float(offsets.norm(dim=1).median())
    elevation = float(torch.asin((offsets @ up / offsets.norm(dim=1)).clamp(-1, 1)).median())
    a = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    if a.norm() < 1e-6:
        a = torch.linalg.cross(up, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    phi = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    ring = torch.cos(phi)[:, None] * a + torch.sin(phi)[:, None] * b  # (n, 3)
    eyes = center + radius * (math.cos(elevation) * ring + math.sin(elevation) * up)
    c2w = look_at(eyes, center, up)  # (n, 3, 4)
    base = train[0]
    fx, fy = base.fx, base.fy
    if int(base.model[0]) == 2:  # OPENCV_FISHEYE: the pinhole with its horizontal field of view, at most 120 deg
        edges = (torch.cat([-base.cx, base.width - base.cx]) / base.fx).double()  # xd of the left / right edge
        theta = torch.sign(edges) * fisheye_theta(edges.abs(), base.dist[:, :4])
        fov = min(float(theta[1] - theta[0]), math.radians(120.0))
        fx = base.width.double() / (2 * math.tan(fov / 2))
        fy = base.fy * fx / base.fx
    pinhole, no_dist = torch.zeros(n, dtype=torch.long, device=c2w.device), c2w.new_zeros(n, 6)
    return Cameras(c2w=c2w, fx=fx.expand(n).clone(), fy=fy.expand(n).clone(), cx=base.cx.expand(n).clone(),
                   cy=base.cy.expand(n).clone(), width=base.width.expand(n).clone(),
                   height=base.height.expand(n).clone(), model=pinhole, dist=no_dist)


# -- a path through the training cameras (rwf render RUN --interpolate N) ------------------------------------------
def nearest_neighbour_tour(positions, start: int = 0) -> list[int]:
    """Visit every position once, greedily: from ``start``, always on to the nearest position not yet visited (ties:
    the lowest index). Capture order is not always file order (a COLMAP export sorts frames by file name, a
    Blender split is shuffled), so a path through the cameras in file order can jump back and forth; this order
    follows the capture where the cameras lie along a smooth path. Not a shortest tour in general.

    Args:
        positions: (K, 3) camera centres, K >= 1.
    Returns:
        the K indices in visiting order, starting with ``start``.
    """
    p = np.asarray(positions, np.float64).reshape(-1, 3)
    left = np.ones(len(p), bool)
    order = [int(start)]
    left[start] = False
    while left.any():
        d = np.linalg.norm(p - p[order[-1]], axis=1)
        d[~left] = np.inf
        order.append(int(np.argmin(d)))
        left[order[-1]] = False
    return order


def keyframe_path(c2w, values, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames through keyframes in the given order, ``steps`` frames per interval.

    Args:
        c2w: (K, 4, 4) or (K, 3, 4) OpenGL camera-to-world keyframes, K >= 1.
        values: (K, D) numbers carried along (intrinsics, ray bounds), linear between consecutive keyframes.
        steps: frames per interval, >= 1.
    Returns:
        c2w (N, 4, 4) and values (N, D), float64, N = steps * (K - 1) + 1: poses as :func:`interpolate` places them
        (Catmull-Rom positions, slerp rotations); frame steps * j is keyframe j.
    """
    values = np.asarray(values, np.float64)
    k = len(values)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n = steps * (k - 1) + 1
    frames, _ = interpolate(c2w, np.zeros(k), n)
    s = np.arange(n) / max(n - 1, 1) * (k - 1)  # where interpolate puts frame i, in keyframe intervals
    return frames, np.stack([np.interp(s, np.arange(k), col) for col in values.T], 1).reshape(n, -1)


def training_path_cameras(train: Cameras, steps: int, near_far=None) -> tuple[Cameras, torch.Tensor | None,
                                                                                list[int]]:
    """A smooth path through every training camera (nerfstudio's ``ns-render interpolate``), ``steps`` frames
    between consecutive ones, in the order of :func:`nearest_neighbour_tour` from training camera 0.

    The frames are PINHOLE cameras of training camera 0's size. Each training camera contributes its own
    intrinsics, scaled to that size (fx and cx by the width ratio, fy and cy by the height ratio), and they change
    linearly between keyframes, so a frame at a keyframe is that training camera (its pose and, at camera 0's size,
    its intrinsics); a distorted camera contributes the pinhole that ``--orbit`` renders for it (its fx, fy, cx, cy
    without the distortion; a fisheye's horizontal field of view, up to 120 degrees). Per-camera ray bounds
    (``near_far`` (K, 2)), when the dataset gives them, change linearly along the path the same way.

    Returns:
        N = steps * (K - 1) + 1 cameras (float64), their (N, 2) bounds or None, and the tour (K indices).
    """
    train = train.to(dtype=torch.float64, device="cpu")
    order = nearest_neighbour_tour(train.c2w[:, :3, 3].numpy())
    intr = []
    for i in order:
        cam = train[i]
        if int(cam.model[0]) != 0:  # not PINHOLE
            ahead = cam.c2w[0, :3, 3] - cam.c2w[0, :3, 2]  # a point one unit in front of the camera
            cam = orbit_cameras(cam, ahead, 1)
        intr.append([float(cam.fx[0]), float(cam.fy[0]), float(cam.cx[0]), float(cam.cy[0])])
    width, height = int(train.width[0]), int(train.height[0])
    ratio = np.stack([width / train.width[order].numpy(), height / train.height[order].numpy()], 1)
    intr = np.asarray(intr) * ratio[:, [0, 1, 0, 1]]
    if near_far is not None:
        intr = np.concatenate([intr, np.asarray(near_far, np.float64)[order]], 1)
    c2w, vals = keyframe_path(train.c2w[order].numpy(), intr, steps)
    cams = Cameras.create(torch.from_numpy(c2w), fx=vals[:, 0], fy=vals[:, 1], cx=vals[:, 2], cy=vals[:, 3],
                          width=width, height=height)
    bounds = torch.from_numpy(vals[:, 4:6]) if near_far is not None else None
    return cams, bounds, order


# -- a spiral in front of forward-facing cameras (rwf render RUN --spiral N) ---------------------------------------
SPIRAL_ROTATIONS, SPIRAL_ZRATE, SPIRAL_PERCENTILE = 2, 0.5, 90.0
"""the original NeRF's spiral (``render_path_spiral`` in its LLFF loader): two turns, one forward-and-back swing, radii
the 90th percentile of the cameras' offsets"""
SPIRAL_SPREAD = 30.0
"""degrees: training cameras whose viewing directions lie further than this from their mean one, on average, are no
forward-facing capture, and ``--spiral`` warns (the bartoszek preset's ring of 20 photos around a statue: 44)"""


def average_pose(c2w) -> np.ndarray:
    """The mean camera (4, 4) float64 of OpenGL camera-to-worlds (K, 3|4, 4) (NeRF's ``poses_avg``): at the mean
    position, looking along the mean viewing direction (-z), its y the cameras' mean up made orthogonal to that.

    Raises:
        ValueError where the viewing directions cancel out (cameras looking in all directions have no mean one).
    """
    c2w = np.asarray(c2w, np.float64)[:, :3, :4]
    back = c2w[:, :, 2].mean(0)
    if np.linalg.norm(back) < 1e-6:
        raise ValueError("the cameras look in all directions: their mean viewing direction vanishes")
    eye = c2w[:, :, 3].mean(0)
    out = np.eye(4)
    out[:3] = look_at(eye, eye - back, c2w[:, :, 1].mean(0)).numpy()
    return out


def spiral_focus(near: float, far: float) -> float:
    """NeRF's focus depth of the spiral between bounds ``near`` < ``far``: 1 / (0.25 / near + 0.75 / far), the depth
    whose disparity lies a quarter of the way from far's to near's."""
    return 1.0 / (0.25 / near + 0.75 / far)


def spiral_path(c2w, n_frames: int, focus: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames on the original NeRF's spiral around forward-facing cameras.

    In the frame of the average camera A (:func:`average_pose`), frame i of N sits at angle t = 4 pi i / N
    (:data:`SPIRAL_ROTATIONS` turns) at (rx cos t, -ry sin t, -rz sin(t / 2)) and looks at the focus point, ``focus``
    ahead of A on its optical axis, with the cameras' mean up (as NeRF's). The radii (rx, ry, rz) are the
    :data:`SPIRAL_PERCENTILE`-th percentile of |camera position - A's position| along A's x, y and z axes. For N >= 3
    the frames' mean position is A's.

    Args:
        c2w: (K, 3|4, 4) OpenGL camera-to-world of the cameras, K >= 1.
        n_frames: N >= 1.
        focus: distance from A to the point every frame looks at, > 0.
    Returns:
        c2w (N, 4, 4), A (4, 4) and the radii (3,), float64.
    Example:
        >>> frames, avg, radii = spiral_path(np.eye(4)[None], 3, focus=2.0)  # one camera: radii 0, three copies of it
    """
    if n_frames < 1 or not focus > 0:
        raise ValueError(f"need n_frames >= 1 and focus > 0, got {n_frames} and {focus}")
    c2w = np.asarray(c2w, np.float64)[:, :3, :4]
    avg = average_pose(c2w)
    rot, centre = avg[:3, :3], avg[:3, 3]
    radii = np.percentile(np.abs((c2w[:, :, 3] - centre) @ rot), SPIRAL_PERCENTILE, axis=0)  # (3,) in A's frame
    t = np.arange(n_frames) * (2 * math.pi * SPIRAL_ROTATIONS / n_frames)
    local = np.stack([np.cos(t), -np.sin(t), -np.sin(SPIRAL_ZRATE * t)], 1) * radii  # (N, 3)
    eyes = centre + local @ rot.T
    frames = np.tile(np.eye(4), (n_frames, 1, 1))
    frames[:, :3] = look_at(eyes, centre - focus * rot[:, 2], c2w[:, :, 1].mean(0)).numpy()
    return frames, avg, radii


def spiral_cameras(train: Cameras, n_frames: int, near_far=None, aabb=None) -> tuple[Cameras, torch.Tensor | None,
                                                                                      float]:
    """``rwf render RUN --spiral N``: :func:`spiral_path` around the training cameras, as N PINHOLE cameras with
    training camera 0's intrinsics and size as ``--orbit`` renders it (a distorted camera 0: its pinhole; a fisheye:
    its horizontal field of view, up to 120 degrees).

    The focus depth: with per-image bounds ``near_far`` (K, 2) (LLFF, ``rwf data colmap --bounds``) NeRF's,
    :func:`spiral_focus` of 0.9 x the smallest near bound and 5 x the largest far bound, and every frame renders with
    (the smallest near, the largest far); without them, the median distance from the training cameras to the centre
    of the scene box ``aabb`` (6,) (at least 2 % of its diagonal), and the run's own bounds.

    Returns:
        N cameras (float64), their (N, 2) bounds or None, and the focus depth.
    Raises:
        UserError where the training cameras look in all directions; an RwfWarning where they look more than
        :data:`SPIRAL_SPREAD` degrees away from their mean viewing direction on average, or all stand at one place
        (one camera: every frame the same view).
    """
    train = train.to(dtype=torch.float64, device="cpu")
    c2w = train.c2w.numpy()
    bounds = None
    if near_far is not None:
        near_far = np.asarray(near_far, np.float64).reshape(-1, 2)
        near, far = float(near_far[:, 0].min()), float(near_far[:, 1].max())
        focus = spiral_focus(0.9 * near, 5.0 * far)
        bounds = torch.tensor([[near, far]], dtype=torch.float64).expand(n_frames, 2).clone()
    else:
        box = np.asarray(aabb, np.float64).reshape(2, 3)
        distance = np.linalg.norm(c2w[:, :3, 3] - box.mean(0), axis=1)
        focus = max(float(np.median(distance)), 0.02 * float(np.linalg.norm(box[1] - box[0])))
    try:
        frames, avg, radii = spiral_path(c2w, n_frames, focus)
    except ValueError as e:
        raise UserError(f"--spiral: {e}; it circles forward-facing captures (--orbit circles a scene)") from None
    if n_frames > 1 and not (radii > 1e-9 * max(focus, 1e-300)).any():
        warnings.warn(f"--spiral: the {len(c2w)} training camera(s) stand at one place, so the spiral has no radius "
                      "and its frames are all the same view (--orbit circles a scene)", RwfWarning, stacklevel=2)
    spread = float(np.degrees(np.arccos(np.clip(c2w[:, :3, 2] @ avg[:3, 2], -1, 1))).mean())
    if spread > SPIRAL_SPREAD:
        warnings.warn(f"--spiral: the training cameras look {spread:.0f} degrees away from their mean viewing "
                      "direction on average, no forward-facing capture: the spiral may leave the views they saw "
                      "(--orbit circles a scene)", RwfWarning, stacklevel=2)
    base = train[0]
    if int(base.model[0]) != 0:  # not PINHOLE
        base = orbit_cameras(base, base.c2w[0, :3, 3] - base.c2w[0, :3, 2], 1)
    intr = {k: getattr(base, k).expand(n_frames) for k in ("fx", "fy", "cx", "cy", "width", "height")}
    return Cameras.create(torch.from_numpy(frames), **intr), bounds, focus
