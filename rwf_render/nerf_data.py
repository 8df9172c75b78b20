"""Posed images in memory for NeRF training and evaluation.

Images of one split are decoded once, downscaled by an integer factor (block averages; intrinsics divided by the
factor), and held as uint8 in one flat pixel buffer, so images of different sizes (real captures) live side by
side and a uniformly random pixel of the whole split is one ``randint``. Camera conventions are those of
:mod:`rwf_render.cameras` (OpenGL camera-to-world, pixel centres at +0.5).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .cameras import Cameras, pixel_rays
from .datasets import FRAME_FILE_KEYS, Transforms, load_transforms, named_files
from .errors import RwfWarning, UserError
from .imgio import read_image
from .nerf_depth import DepthPixels, load_depths
from .scene_box import outer_box

BACKGROUNDS = ("white", "black", "random", "learned")


def downscale_image(pixels: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks of (H, W, C); the last partial row/column of blocks is cropped.

    With C = 4 (straight RGBA) the colour is averaged premultiplied, weighted by alpha, so a block composited on
    any background equals the mean of its pixels composited on it, and the colour of transparent pixels does not
    bleed into edges. A fully transparent block keeps its plain mean colour.
    """
    if k == 1:
        return pixels
    h, w = pixels.shape[0] // k, pixels.shape[1] // k
    if h == 0 or w == 0:
        raise UserError(f"--downscale {k} leaves no pixels of a {pixels.shape[1]}x{pixels.shape[0]} image")
    blocks = pixels[: h * k, : w * k].reshape(h, k, w, k, -1)
    if pixels.shape[-1] != 4:
        return blocks.mean(axis=(1, 3))
    alpha = blocks[..., 3:].astype(np.float64)
    weight = alpha.sum(axis=(1, 3))
    colour = np.where(weight > 0, (blocks[..., :3] * alpha).sum(axis=(1, 3)) / np.maximum(weight, 1e-300),
                      blocks[..., :3].mean(axis=(1, 3)))
    return np.concatenate([colour, weight / (k * k)], axis=-1).astype(pixels.dtype)


MASK_COLOUR_TOLERANCE = 0.1  # largest difference of a mask's red, green and blue (JPEG masks are not exactly grey)


def read_mask(path: str | Path) -> np.ndarray:
    """A ``mask_path`` image as (H, W) float32 in [0, 1] (1: use the pixel): a grey image as it is (float values
    clipped), an RGB one by its (grey) red channel, times its alpha when it has one (a transparent pixel is left out,
    whatever colour it keeps), as :func:`load_split` and ``rwf data check`` read masks. An 8- or 16-bit mask whose
    values are 0 and 1 only (a segmentation tool's labels, in its grey or in its alpha) is black and white: 1 uses
    the pixel, as nerfstudio reads any non-zero value (read as 1/255 it weighed every pixel's loss 255 times less).

    Raises:
        UserError: read_image's errors, and a colour mask: red, green and blue differing by more than
            ``MASK_COLOUR_TOLERANCE`` somewhere is an image (a cut-out photo given as its own mask, say), whose red
            channel would silently stand for the mask.
    """
    pixels, info = read_image(path)
    pixels = np.clip(pixels, 0, 1)
    bits = info.get("bit_depth")
    if info.get("format") != "exr" and bits in (8, 16) and pixels.size:
        step = 1.0 / (2 ** bits - 1)  # one level: labels 0 and 1 read as 0 and 1/255
        parts = (pixels[..., :-1], pixels[..., -1:]) if pixels.shape[2] in (2, 4) else (pixels,)
        for part in parts:  # the grey or colour, and the alpha: labels in either (a white mask, labels in alpha)
            if 0 < float(part.max()) <= 1.5 * step:
                part[...] = (part > 0.5 * step).astype(pixels.dtype)
    mask = pixels[..., 0]
    if pixels.shape[2] >= 3:
        spread = float(np.abs(pixels[..., 1:3] - pixels[..., :1]).max())
        if spread > MASK_COLOUR_TOLERANCE:
            raise UserError(f"{path}: a mask must be grey (white: use the pixel, black: leave it out), but its red, "
                            f"green and blue differ by up to {spread:.2f}; is this an image rather than its mask?")
    if pixels.shape[2] == 4:
        mask = mask * pixels[..., 3]
    return mask


@dataclass
class PosedImages:
    """One split: cameras and every pixel.

    Attributes:
        cameras: N cameras (float32), intrinsics already divided by the downscale factor.
        pixels: (P, 4) uint8 RGBA of all images, row-major per image, images one after another.
        masks: (P,) uint8 (255 = use the pixel) or None.
        offsets: (N + 1,) int64 first pixel of each image in ``pixels``.
        names: image file names, for reports and renders.
        near_far: (N, 2) or None, per-image bounds from the dataset.
        aabb: (6,) scene box (xmin, ymin, zmin, xmax, ymax, zmax).
        depth: the depth samples of the dataset's depth maps, when loaded (:mod:`rwf_render.nerf_depth`).
        paths: the images' paths, when loaded from files.
        cascades: the occupancy cascades around ``aabb`` that the dataset's aabb_scale asks for (instant-ngp's
            rule, :func:`rwf_render.scene_box.box_cascades`); 1 where it asks for none.
    """

    cameras: Cameras
    pixels: torch.Tensor
    masks: torch.Tensor | None
    offsets: torch.Tensor
    names: list[str]
    near_far: torch.Tensor | None
    aabb: torch.Tensor
    has_alpha: bool
    depth: DepthPixels | None = None
    paths: list[Path] | None = None
    cascades: int = 1

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n_pixels(self) -> int:
        return int(self.pixels.shape[0])

    def size(self, i: int) -> tuple[int, int]:
        return int(self.cameras.width[i]), int(self.cameras.height[i])

    def image(self, i: int) -> torch.Tensor:
        """Image i as float (H, W, 4) RGBA in [0, 1]."""
        w, h = self.size(i)
        return self.pixels[self.offsets[i]:self.offsets[i + 1]].reshape(h, w, 4).float() / 255.0

    def backdrop(self, tolerance: int = 8, share: float = 0.98) -> str | None:
        """"white" or "black" when the images' outermost rows and columns are that colour (every channel within
        ``tolerance`` of 255 or 0) at ``share`` of their pixels, over all images: a render or a studio shot on a
        plain backdrop rather than a photo of the world around. None otherwise."""
        borders = []
        for i in range(len(self)):
            w, h = self.size(i)
            img = self.pixels[self.offsets[i]:self.offsets[i + 1]].reshape(h, w, 4)[..., :3]
            borders += [img[0], img[-1], img[:, 0], img[:, -1]]
        if not borders:
            return None
        edge = torch.cat(borders).int()
        for name, level in (("white", 255), ("black", 0)):
            if float(((edge - level).abs() <= tolerance).all(dim=1).float().mean()) >= share:
                return name
        return None

    def locate(self, flat: torch.Tensor):
        """Image index, pixel centre (u, v) of flat pixel indices (R,)."""
        img = torch.searchsorted(self.offsets, flat, right=True) - 1
        local = flat - self.offsets[img]
        w = self.cameras.width[img]
        uv = torch.stack([(local % w).float() + 0.5, (local // w).float() + 0.5], dim=-1)
        return img, uv

    def rays(self, img: torch.Tensor, uv: torch.Tensor, device: torch.device):
        """World rays (unit directions) through pixel positions ``uv`` (R, 2) of images ``img`` (R,)."""
        return tuple(t.to(device) for t in pixel_rays(self.cameras, uv, img))


def load_split(path: str | Path, split: str, downscale: int = 1, indices=None, depth: bool = False) -> PosedImages:
    """Read one split into memory (see :class:`PosedImages`); ``indices`` picks some of its frames (default all);
    ``depth`` also reads its depth maps.

    Raises:
        UserError: the loader's errors (malformed JSON, missing keys, singular poses, empty split), an image that
            does not decode, or an image whose size differs from its camera's; with ``depth``, those of
            :func:`rwf_render.nerf_depth.load_depths`.
    """
    tf: Transforms = load_transforms(path, split)
    if indices is not None:
        keep = [i for i in indices if 0 <= i < len(tf)]
        tf = replace(tf, image_paths=[tf.image_paths[i] for i in keep], cameras=tf.cameras[torch.tensor(keep)],
                     mask_paths=[tf.mask_paths[i] for i in keep], depth_paths=[tf.depth_paths[i] for i in keep],
                     near_far=None if tf.near_far is None else tf.near_far[keep])
    chunks, masks, names, clipped = [], [], [], []
    any_mask = any(m is not None for m in tf.mask_paths)
    has_alpha = False
    for i, img_path in enumerate(tf.image_paths):
        pixels, info = read_image(img_path)
        w, h = int(tf.cameras.width[i]), int(tf.cameras.height[i])
        if (info["width"], info["height"]) != (w, h):
            raise UserError(f"{img_path}: image is {info['width']}x{info['height']} but its camera says {w}x{h}")
        if pixels.shape[2] == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        if pixels.shape[2] == 3:
            pixels = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=2)
        else:
            has_alpha = has_alpha or bool((pixels[..., 3] < 1).any())
        if pixels.min() < 0 or pixels.max() > 1:  # float images (EXR, TIFF): HDR values beyond white
            clipped.append(img_path.name)
        pixels = downscale_image(np.clip(pixels, 0, 1), downscale)
        chunks.append(torch.from_numpy(np.round(pixels * 255).astype(np.uint8)).reshape(-1, 4))
        if any_mask:
            if tf.mask_paths[i] is None:
                mask = np.ones(pixels.shape[:2], np.float32)
            else:
                mask = read_mask(tf.mask_paths[i])  # float masks (EXR, TIFF) clipped, not wrapped by the uint8 below
                if mask.shape != (h, w):
                    raise UserError(f"{tf.mask_paths[i]}: mask is {mask.shape[1]}x{mask.shape[0]}, image {w}x{h}")
                mask = downscale_image(mask[..., None], downscale)[..., 0]
            masks.append(torch.from_numpy(np.round(mask * 255).astype(np.uint8)).reshape(-1))
        names.append(img_path.name)
    if clipped:
        warnings.warn(f"{tf.path}: {len(clipped)} image(s) of split {split!r} hold values outside [0, 1], clipped "
                      f"(first: {clipped[0]})", RwfWarning, stacklevel=2)
    cams = tf.cameras.to(dtype=torch.float32)
    if downscale > 1:
        k = float(downscale)
        cams = replace(cams, fx=cams.fx / k, fy=cams.fy / k, cx=cams.cx / k, cy=cams.cy / k,
                       width=cams.width // downscale, height=cams.height // downscale)
    if any_mask and not any(bool(m.any()) for m in masks):
        raise UserError(f"{tf.path}: every pixel of split {split!r} is masked out (mask_path images are all black)")
    counts = torch.tensor([c.shape[0] for c in chunks], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    aabb = tf.aabb.to(torch.float32).reshape(-1)
    near_far = None if tf.near_far is None else tf.near_far.to(torch.float32)
    return PosedImages(cams, torch.cat(chunks), torch.cat(masks) if any_mask else None, offsets, names, near_far,
                       aabb, has_alpha, load_depths(tf, cams, downscale) if depth else None, list(tf.image_paths),
                       tf.cascades)


def composite_background(rgba: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """RGB target of (R, 4) float RGBA over a (3,) or (R, 3) background."""
    return rgba[:, :3] * rgba[:, 3:] + background * (1.0 - rgba[:, 3:])


def background_color(name: str, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n, 3) background colors: fixed white/black, or uniformly random per ray ("random", "learned" training)."""
    if name == "white":
        return torch.ones(n, 3, device=device)
    if name == "black":
        return torch.zeros(n, 3, device=device)
    return torch.rand(n, 3, generator=generator).to(device)


def summary(train: PosedImages, near: float | None, far: float | None, path: str, default_near: float = 0.0,
            far_bounds: bool = True, levels: int = 1) -> str:
    """The one-line summary printed at start: ``near``/``far`` are --near/--far (None: the dataset's per-image
    bounds where it has them and ``far_bounds`` allows, else ``default_near`` and the box); ``levels``: the
    occupancy grid's cascades, whose outer box is named when there are several."""
    sizes = sorted({train.size(i) for i in range(len(train))})
    res = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else f"{len(sizes)} sizes ({sizes[0][0]}x{sizes[0][1]}..)"
    box = train.aabb.tolist()
    bounds = train.near_far

    def bound(value, column, fallback):
        if value is not None:
            return f"{value:.3g}"
        if bounds is not None and (column == 0 or far_bounds):
            lo, hi = float(bounds[:, column].min()), float(bounds[:, column].max())
            return f"{lo:.3g}..{hi:.3g} (per image)"
        return fallback

    grid = ""
    if levels > 1:
        lo, hi = outer_box(train.aabb.double(), levels).tolist()
        grid = f", {levels} cascades to [{lo[0]:.2f} {lo[1]:.2f} {lo[2]:.2f}] - [{hi[0]:.2f} {hi[1]:.2f} {hi[2]:.2f}]"
    return (f"{path}: {len(train)} train images, {res}, box [{box[0]:.2f} {box[1]:.2f} {box[2]:.2f}] - "
            f"[{box[3]:.2f} {box[4]:.2f} {box[5]:.2f}]{grid}, near {bound(near, 0, f'{default_near:.3g}')}, "
            f"far {bound(far, 1, 'box' if levels == 1 else 'grid')}")


def check_bounds(train: PosedImages, near: float | None, far: float | None, far_bounds: bool = True,
                 levels: int = 1) -> None:
    """UserError when --near alone lies at or beyond the per-image far bound of some training images (or --far
    alone before their near): their rays would get no samples and train only the background; then when no
    camera's [near, far] meets the grid's outer box (:func:`check_reach`). With ``far_bounds`` off
    (--no-far-bounds) the per-image far bounds are not used, so --near cannot clash with them."""
    if train.near_far is None or (near is None) == (far is None) or (near is not None and not far_bounds):
        check_reach(train, near, far, far_bounds, levels)
        return
    column, bad = (1, train.near_far[:, 1] <= near) if near is not None else (0, train.near_far[:, 0] >= far)
    if bad.any():
        option, other = ("--near", "far") if near is not None else ("--far", "near")
        edge = train.near_far[bad, column]
        edge = float(edge.min() if near is not None else edge.max())
        raise UserError(f"{option} {near if near is not None else far:g} leaves no ray segment in {int(bad.sum())} of "
                        f"{len(train)} train images (their dataset {other} bound reaches {edge:.3g}); give "
                        f"{'--far' if near is not None else '--near'} too, or a value within the bounds")
    check_reach(train, near, far, far_bounds, levels)


def check_reach(train: PosedImages, near: float | None, far: float | None, far_bounds: bool = True,
                levels: int = 1) -> None:
    """UserError when a typed --near / --far leaves every training ray without a sample.

    Rays start at camera centres, which may lie outside the box, and the marcher samples a ray's [near, far]
    (distances along unit directions) where it crosses the grid's outer box (the scene box grown by 2^(levels-1)).
    A camera whose [near, far] shell lies wholly nearer than the box (far < distance to the box) or wholly beyond
    it (near > distance to its farthest corner) has no sample on any ray; refused only when that holds for every
    training camera, so a value that some rays can use is never refused. ``near`` / ``far`` None: the per-image
    bounds where the dataset has them (the far only with ``far_bounds``), else 2 % of the box diagonal and no far
    limit, as the marcher does.
    """
    if near is None and far is None:
        return
    box = train.aabb.double().reshape(2, 3)
    lo, hi = outer_box(box, levels)
    origins = train.cameras.c2w[:, :3, 3].double()  # (N, 3) camera centres
    closest = (lo - origins).clamp_min(0) + (origins - hi).clamp_min(0)  # per-axis gap to the box, 0 inside
    d_min = closest.norm(dim=-1)  # (N,) distance to the nearest point of the box
    d_max = torch.maximum((origins - lo).abs(), (origins - hi).abs()).norm(dim=-1)  # to the farthest corner
    n, bounds = len(origins), train.near_far
    full = lambda value: torch.full((n,), float(value), dtype=torch.float64)  # noqa: E731
    if near is not None:
        ray_near = full(near)
    else:
        ray_near = bounds[:, 0].double() if bounds is not None else full(0.02 * float((box[1] - box[0]).norm()))
    if far is not None:
        ray_far = full(far)
    else:
        ray_far = bounds[:, 1].double() if bounds is not None and far_bounds else full(float("inf"))
    reach = (ray_near <= d_max) & (ray_far >= d_min) & (ray_near < ray_far)
    if bool(reach.any()):
        return
    typed = " ".join(f"{o} {v:g}" for o, v in (("--near", near), ("--far", far)) if v is not None)
    raise UserError(f"{typed} leaves no training ray a sample: the {'grid' if levels > 1 else 'scene box'} "
                    f"[{', '.join(f'{v:.2f}' for v in lo)}] - [{', '.join(f'{v:.2f}' for v in hi)}] lies "
                    f"{float(d_min.min()):.3g} to {float(d_max.max()):.3g} from the {n} training camera(s)")


FINGERPRINT_KEYS = FRAME_FILE_KEYS
"""the frame keys whose files a fingerprint hashes; runs fitted before 29 Nov 2026 20:22 hashed all but
``depth_path`` (:func:`rwf_render.resume.check_dataset_unchanged` accepts their record)"""


def dataset_fingerprint(path: str | Path, keys: tuple = FINGERPRINT_KEYS) -> dict:
    """What a NeRF run records of its dataset so that ``--resume`` can refuse changed data
    (:func:`rwf_render.resume.check_dataset_unchanged`): the sha256 of the bytes of each transforms JSON file and
    of each image, mask and depth map its frames name (those that exist, every split), by path relative to the
    dataset folder (the first 16 hex digits each), and one sha256 over all of them.

    Hashing bytes rather than sizes and times catches an edit that keeps both, and survives a copy of the dataset;
    it runs at disk speed, far below the decoding the fit does anyway (100 images of 500 kB: about 0.1 s).

    Returns:
        {"sha256": str, "files": {relative path: str}, "splits": {split: str}} (``split_fingerprint`` of each
        split that loads)
    """
    found = named_files(path, keys)
    root = found[0].parent  # the (first) transforms file's folder
    full = {p: _file_digest(p) for p in found}
    digests = {Path(os.path.relpath(p, root)).as_posix(): d for p, d in full.items()}
    total = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(digests.items())).encode()).hexdigest()
    splits = {split: d for split in SPLIT_NAMES if (d := split_fingerprint(path, split, full)) is not None}
    return {"sha256": total, "files": {k: v[:16] for k, v in digests.items()}, "splits": splits}


SPLIT_NAMES = ("train", "val", "test")


def _file_digest(p: Path) -> str:
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_fingerprint(path: str | Path, split: str, known: dict | None = None) -> str | None:
    """One sha256 (16 hex digits) of a split as a fit reads it: in frame order, each frame's image path, the bytes
    of its image, mask and depth map, its camera (pose, intrinsics, lens) and near/far, with the split's scene box
    and the top level of its transforms file (but its split lists). None when the split does not load (absent, or no
    longer valid).

    A run records one per split (``dataset_fingerprint``), so that a command can tell which split changed since the
    fit: ``--resume`` refuses a changed training split only, the refined poses of ``--optimize-cameras`` warn when
    applied to a changed one, ``rwf eval`` says the split it scores changed. ``known``: file -> sha256 already
    computed."""
    known = known or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tf = load_transforms(path, split)
        except UserError:
            return None
    h = hashlib.sha256()
    cams = tf.cameras
    for i, image in enumerate(tf.image_paths):
        h.update(f"{image.name}\0".encode())
        for p in (image, tf.mask_paths[i], tf.depth_paths[i]):
            h.update((known.get(p) or (_file_digest(p) if p is not None and p.is_file() else "-")).encode())
    for t in (cams.c2w, cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height, cams.model, cams.dist, tf.aabb,
              tf.near_far if tf.near_far is not None else torch.zeros(0)):
        h.update(np.ascontiguousarray(torch.as_tensor(t).double().cpu().numpy()).tobytes())
    # the top level but its split lists: what they select is the frames hashed above (an edited test list is no
    # change of the training split)
    h.update(repr(sorted((k, repr(v)) for k, v in tf.meta.items() if not k.endswith("_filenames"))).encode())
    return h.hexdigest()[:16]


def changed_splits(saved: dict | None, data, splits=SPLIT_NAMES, current: dict | None = None) -> list[str] | None:
    """The ``splits`` whose :func:`split_fingerprint` differs from the one a run saved in its config.json (``saved``:
    the config's dict), an absent split's included; None when the run saved none (fitted before they were).
    ``current``: the fingerprints of ``data`` already computed (``dataset_fingerprint(data)["splits"]``)."""
    old = saved.get("dataset") if isinstance(saved, dict) else None
    old = old.get("splits") if isinstance(old, dict) else None
    if not isinstance(old, dict) or not isinstance(data, (str, os.PathLike)):
        return None
    now = current.get if current is not None else lambda s: split_fingerprint(data, s)
    return [s for s in splits if now(s) != old.get(s)]
