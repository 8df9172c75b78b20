"""Depth supervision for NeRF: depth maps -> ray distances of the pixels that have one, and the depth loss.

A frame's ``depth_file_path`` names a depth map of its image (nerfstudio's layout): z-depth along the camera's
optical axis, ``value * depth_unit_scale_factor`` in the dataset's units (the factor is top-level; nerfstudio's
default 1e-3, millimetres, when absent), 0 where there is no depth. instant-ngp's per-frame ``depth_path`` with its
top-level ``integer_depth_scale`` means the same (z-depth, stored value times the scale; instant-ngp uses no depth
without that scale, and neither does the loader: :mod:`rwf_render.frames`), so the loader reads it as an alias and
gives its scale as the split's ``depth_unit_scale_factor``. Dense maps come from depth sensors or
``rwf data synth --depth``; sparse ones from structure from motion (``rwf data colmap --depth`` writes COLMAP's
observed points), which is what a real capture with few views needs: 20 photos 18 degrees apart let a field paint
each photo on a screen in front of its own camera (BENCHMARKS.md, "The real capture"); a depth loss on the
keypoints' rays puts the colours where the points are (DS-NeRF, Deng et al. 2022, with a plain L1 in place of its
ray-distribution loss).

The loader converts z-depth to the distance along the unit ray through the pixel centre (the marcher's ``t``):
``t = z / cos(angle between the ray and the optical axis)``, exact for distorted cameras too since the ray comes
from :func:`rwf_render.cameras.pixel_rays`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cameras import Cameras, pixel_rays
from .errors import UserError
from .frames import DEFAULT_DEPTH_UNIT as DEFAULT_UNIT  # nerfstudio's default unit (millimetres)
from .imgio import read_image, tiff_samples


@dataclass
class DepthPixels:
    """The depth samples of a split: which image, where in it, and the distance along the unit ray there.

    Attributes:
        image: (V,) int64 image index in the split.
        uv: (V, 2) float32 pixel position in the (downscaled) camera: the centre of the full-resolution pixel that
            holds the depth, so the ray is exactly the one the depth was measured along.
        t: (V,) float32 distance from the camera centre along the unit ray.
    """

    image: torch.Tensor
    uv: torch.Tensor
    t: torch.Tensor

    def __len__(self) -> int:
        return int(self.t.shape[0])


def depth_unit(meta: dict, where: str) -> float:
    """The dataset's ``depth_unit_scale_factor`` (positive), DEFAULT_UNIT when absent."""
    value = meta.get("depth_unit_scale_factor", DEFAULT_UNIT)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0
    if not ok:
        raise UserError(f"{where}: depth_unit_scale_factor must be a positive number, got {value!r}")
    return float(value)


def check_depth_channels(path, info: dict, pixels: np.ndarray) -> None:
    """UserError for a depth map of 3 or more channels (``info`` and ``pixels`` of
    :func:`rwf_render.imgio.read_image`) that is a colour image: an 8- or 16-bit RGB(A) file (most likely a coloured
    depth visualisation, whose red channel is no depth: such a PNG used to train the depth loss), or a float one
    whose colour channels differ. A float EXR or TIFF with the depth copied into R, G and B (as Blender's
    compositor writes it) is read from its first channel."""
    if info["channels"] < 3:
        return
    rgb = pixels[..., :3]
    if info["bit_depth"] not in (8, 16) and np.array_equal(rgb[..., 0], rgb[..., 1]) \
            and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return
    raise UserError(f"{path}: a depth map has one channel (or, in a float file, three equal ones), this image has "
                    f"{info['channels']} different ones (a colour image, such as a coloured depth visualisation?); "
                    "write z-depth as a 1-channel 16-bit PNG or a float EXR / TIFF")


def read_depth_map(path, unit: float, width: int, height: int) -> np.ndarray:
    """(H, W) float32 z-depth in dataset units (0: none) of a one-channel depth map file: integer formats by their
    stored value, float formats (EXR, float TIFF) as stored, times ``unit``.

    Raises:
        UserError: an unreadable file, 3 or more channels (:func:`check_depth_channels`), a size other than the
            camera's, negative depths.
    """
    pixels, info = read_image(path)
    check_depth_channels(path, info, pixels)
    if (info["width"], info["height"]) != (width, height):
        raise UserError(f"{path}: depth map is {info['width']}x{info['height']} but its camera says {width}x{height}")
    z = pixels[..., 0].astype(np.float64)
    if info["format"] == "tiff":  # any integer type (32-bit, signed) by its stored value; floats as stored
        raw = tiff_samples(path)[0]
        z = (raw if raw.ndim == 2 else raw[..., 0]).astype(np.float64)
    elif info["bit_depth"] in (8, 16):  # read_image scaled the stored integers to [0, 1]
        z = np.round(z * (2 ** info["bit_depth"] - 1))
    if (z < 0).any():
        raise UserError(f"{path}: depth map holds negative values")
    return (z * unit).astype(np.float32)


def thin_depth(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One depth sample per k x k block (the one nearest the block centre among those that have one), so a dense
    map keeps as many samples as its downscaled image has pixels and a sparse one keeps (nearly) all of its own.

    Args:
        z: (H, W) depths, 0 where none.
    Returns:
        rows, cols: (V,) int64 full-resolution positions of the samples kept.
    """
    h, w = z.shape[0] // k, z.shape[1] // k
    blocks = z[: h * k, : w * k].reshape(h, k, w, k).transpose(0, 2, 1, 3).reshape(h, w, k * k)
    dy, dx = np.divmod(np.arange(k * k), k)
    order = np.argsort((dy - (k - 1) / 2) ** 2 + (dx - (k - 1) / 2) ** 2, kind="stable")  # nearest the centre first
    blocks = blocks[..., order]
    first = np.argmax(blocks > 0, axis=-1)  # (h, w) the first sample with a depth, by that order
    by, bx = np.nonzero(np.take_along_axis(blocks, first[..., None], axis=-1)[..., 0] > 0)
    pick = order[first[by, bx]]
    return by * k + dy[pick], bx * k + dx[pick]


def ray_distances(z: np.ndarray, rows: np.ndarray, cols: np.ndarray, cams: Cameras, i: int, k: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions (V, 2) in camera ``i`` of ``cams`` (downscaled by ``k``) of the full-resolution depth samples
    ``z[rows, cols]``, and their ray distances (V,). Samples whose ray runs at 90 degrees or more from the optical
    axis (wide fisheyes) are left out."""
    uv = torch.from_numpy(np.stack([cols + 0.5, rows + 0.5], -1) / k)
    if not len(uv):
        return uv.float(), torch.zeros(0)
    cam = cams[torch.tensor([i])].to(dtype=torch.float64)
    _, rays_d = pixel_rays(cam, uv)
    forward = -cam.c2w[0, :3, 2]
    cos = rays_d @ (forward / forward.norm())
    keep = cos > 1e-6
    t = torch.from_numpy(z[rows, cols].astype(np.float64))[keep] / cos[keep]
    return uv[keep].float(), t.float()


def load_depths(tf, cams: Cameras, downscale: int) -> DepthPixels:
    """The depth samples of a split (:class:`rwf_render.datasets.Transforms` ``tf``), ``cams`` being its cameras
    after the downscale.

    Raises:
        UserError: no frame has a depth map or no depth map has a depth; an unreadable or mis-sized map.
    """
    if all(p is None for p in tf.depth_paths):
        raise UserError(f"{tf.path}: the {tf.split} split has no depth maps (no frame has depth_file_path, or "
                        "instant-ngp's depth_path with a positive integer_depth_scale); "
                        "`rwf data colmap --depth` writes them from COLMAP's points, `rwf data synth --depth` "
                        "from the mesh")
    unit = depth_unit(tf.meta, str(tf.path))
    image, uv, dist = [], [], []
    for i, path in enumerate(tf.depth_paths):
        if path is None:
            continue
        z = read_depth_map(path, unit, int(tf.cameras.width[i]), int(tf.cameras.height[i]))
        where, t = ray_distances(z, *thin_depth(z, downscale), cams, i, downscale)
        image.append(torch.full((len(t),), i, dtype=torch.long))
        uv.append(where)
        dist.append(t)
    out = DepthPixels(torch.cat(image), torch.cat(uv), torch.cat(dist))
    if not len(out):
        raise UserError(f"{tf.path}: the depth maps of the {tf.split} split hold no depth (every pixel is 0)")
    return out


def depth_loss(t_pred: torch.Tensor, t_target: torch.Tensor, opacity: torch.Tensor | None = None) -> torch.Tensor:
    """Mean relative L1 between rendered and target ray distances (R,): scale-free, so a scene's units and a far
    point's larger triangulation error do not weigh in.

    ``t_pred`` is the rendered ``sum_i w_i t_i``; with the rays' ``opacity`` o = sum_i w_i the error is
    |sum_i w_i t_i - o t| / t + (1 - o): o times the relative error of the expected depth (nerfstudio's,
    sum_i w_i t_i / o), least where the weights sit at the target whatever the opacity, plus the transparency of a
    ray that should end at a surface. Both terms have bounded gradients (no division by o), and for an opaque ray
    the sum is the relative error itself. Against the target alone (|sum_i w_i t_i - t| / t) a ray of opacity 0.6
    was best served by a surface at t / 0.6, behind the true one; with the first term alone an empty ray scored
    0 (a fit emptied its depth rays)."""
    if opacity is None:
        return ((t_pred - t_target).abs() / t_target).mean()
    return ((t_pred - opacity * t_target).abs() / t_target + (1 - opacity)).mean()
