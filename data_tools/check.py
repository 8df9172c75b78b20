"""Validate a posed-image dataset (transforms.json or Blender layout) and report in numbers.

Errors (make ``rwf data check`` exit 1): unreadable JSON, no training frame (no ``transforms_train.json``, or
a ``transforms.json`` whose split lists hold out every frame), frames that do not parse, undecodable images,
missing or undecodable masks or depth maps, image, mask and depth-map sizes that differ from their camera's,
impossible intrinsics (focal <= 0, principal point outside the
image), singular, non-orthonormal or mirrored rotations, cameras that see none of the scene box
(:func:`rwf_render.scene_box.scene_box`), numeric fields that are not JSON numbers (``true``, ``"60"``), a frame with
``near`` but no ``far``. The camera and field checks are the NeRF loader's own (:mod:`rwf_render.datasets`), so
``rwf fit nerf`` refuses what this reports as such an error.
Warnings: missing images (``rwf fit`` skips those frames, so a split is an error only when none is left), unusual
field of view, off-center principal point, non-square pixels, images of different sizes sharing one focal length in
pixels (``fl_x`` at the top, no ``w``/``h``: the loader gives each its own centre and that focal, right for crops,
wrong for a resized copy; a shared ``camera_angle_x`` fits every size).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras, fov_from_focal
from rwf_render.datasets import (HOLDOUT_EVERY, _select, camera_errors, check_fields, dataset_files,
                                 held_out_training_images, held_out_training_text, ignored_depth_text, image_size,
                                 mixed_units_text, note_depth_unit, parse_frame)
from rwf_render.errors import UserError
from rwf_render.frames import PINHOLE_DISTORTED, MissingImage
from rwf_render.imgio import read_image, sniff_format
from rwf_render.lenses import fisheye_theta
from rwf_render.nerf_data import read_mask
from rwf_render.nerf_depth import check_depth_channels, depth_unit
from rwf_render.rundir import read_json
from rwf_render.scene_box import box_cascades, box_coverage, outer_box, scene_box


def _check_frame(info, where: str, decode: bool, errors: list, warnings: list) -> tuple | None:
    """Per-frame checks; returns the image size read from the file (or None when it cannot be read)."""
    errors.extend(f"{where}: {e}" for e in camera_errors(info))  # the loader refuses the same (rwf fit)
    if not (0 < info.width < 2 ** 31 and 0 < info.height < 2 ** 31) or info.fx <= 0 or info.fy <= 0:
        errors.append(f"{where}: focal length and image size must be positive (and the size below 2^31) "
                      f"(fl_x {info.fx:g}, fl_y {info.fy:g}, {info.width}x{info.height})")
        return None
    inside = 0 <= info.cx <= info.width and 0 <= info.cy <= info.height  # else an error of camera_errors
    if inside and (abs(info.cx / info.width - 0.5) > 0.25 or abs(info.cy / info.height - 0.5) > 0.25):
        warnings.append(f"{where}: principal point ({info.cx:g}, {info.cy:g}) is far from the image center")
    fov = _horizontal_fov(info)
    if info.model != "OPENCV_FISHEYE" and not 5 <= fov <= 150:
        warnings.append(f"{where}: unusual horizontal field of view {fov:.1f} deg")
    if not 0.9 <= info.fx / info.fy <= 1.1:
        warnings.append(f"{where}: fl_x / fl_y = {info.fx / info.fy:.3f} (non-square pixels?)")
    aux = [(kind, p) for kind, p in (("mask", info.mask), ("depth map", info.depth)) if p is not None]
    for kind, p in aux:
        if not p.is_file():
            errors.append(f"{where}: {kind} {p} is missing")
    if not info.image.is_file():
        warnings.append(f"{where}: image {info.image} is missing; the frame is skipped")
        return None
    try:
        size = _size(info.image, decode)
    except UserError as e:
        errors.append(f"{where}: {e}")
        return None
    if size != (info.width, info.height):
        errors.append(f"{where}: image is {size[0]}x{size[1]} but its camera is {info.width}x{info.height}")
    for kind, p in aux:  # a mask or depth map covers its image pixel for pixel, so it has its camera's size
        if not p.is_file():
            continue
        try:
            aux_size = _size(p, decode, depth=kind == "depth map", mask=kind == "mask")
        except UserError as e:
            errors.append(f"{where}: {kind}: {e}")
            continue
        if aux_size != (info.width, info.height):
            errors.append(f"{where}: {kind} {p.name} is {aux_size[0]}x{aux_size[1]} but its camera is "
                          f"{info.width}x{info.height}")
    return size


def _size(path: Path, decode: bool, depth: bool = False, mask: bool = False) -> tuple[int, int]:
    """(width, height) of an image file: decoded in full when ``decode`` (so a corrupt file is caught), as
    ``rwf fit`` decodes it, else read from its header. UserError saying plainly what is wrong when it cannot be
    read: an empty file, a truncated one, a file that is not an image of a format ``rwf fit`` reads; with
    ``decode``, a depth map of 3+ channels (``depth``: :func:`rwf_render.nerf_depth.check_depth_channels`) or a
    colour mask (``mask``: :func:`rwf_render.nerf_data.read_mask`)."""
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the image file is empty (0 bytes)")
    fmt = sniff_format(path)
    if fmt is None:
        raise UserError(f"{path}: cannot decode: not a readable image (not a PNG, JPEG, TIFF or EXR file)")
    try:
        if not decode:
            return tuple(int(v) for v in image_size(path))
        pixels, info = read_image(path)
    except UserError as e:
        if _truncated(path, fmt):
            raise UserError(f"{path}: cannot decode: the {fmt.upper()} image is truncated ({path.stat().st_size} "
                            "bytes; its end is missing): copy it again") from None
        raise UserError(f"{path}: cannot decode: not a readable {fmt.upper()} image (corrupt: "
                        f"{str(e).removeprefix(f'{path}: ')})") from None
    if depth:
        check_depth_channels(path, info, pixels)
    if mask:
        read_mask(path)
    return info["width"], info["height"]


def _truncated(path: Path, fmt: str) -> bool:
    """Whether a PNG lacks its closing IEND chunk, or a JPEG its end-of-image marker (a cut-off copy)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 16))
        tail = f.read()
    return (fmt == "png" and b"IEND" not in tail) or (fmt == "jpeg" and not tail.rstrip(b"\0").endswith(b"\xff\xd9"))


def check_dataset(path: str | Path, decode: bool = True, log=print) -> tuple[list[str], list[str]]:
    """Check a dataset folder (or JSON file), print a report, return (errors, warnings)."""
    path = Path(path)
    files = dataset_files(path)
    errors, warnings = [], []
    units, ignored_depth = {}, []  # depth unit -> the first frame using it; frames whose depth_path is not read
    log(f"dataset {path} ({'single transforms.json' if 'all' in files else 'Blender layout: ' + ', '.join(files)})")
    if "all" not in files and "train" not in files:
        errors.append(f"{path}: no transforms_train.json, so no training frame (rwf fit needs one)")
    for split, json_path in files.items():
        try:
            top = read_json(json_path)
        except UserError as e:
            errors.append(str(e))
            continue
        if not isinstance(top, dict) or not isinstance(top.get("frames"), list):
            errors.append(f"{json_path.name}: expected an object with a list of 'frames'")
            continue
        try:
            check_fields(top, json_path.name, top=True)
        except UserError as e:  # a top-level value every frame inherits: one error, not one per frame
            errors.append(str(e))
            continue
        try:
            box, levels = scene_box(top, top["frames"], json_path.parent), box_cascades(top)
        except UserError as e:
            errors.append(f"{json_path.name}: {e}")
            box, levels = scene_box({}), 1
        infos, wheres, shared_sizes = [], [], set()
        # sizes taken from the images themselves (no w/h given) under one focal length in pixels: a resized copy?
        # (frames with a size or focal of their own are not under it)
        shared = "w" not in top and any(k in top for k in ("fl_x", "fl_y"))
        own = ("w", "h", "fl_x", "fl_y", "camera_angle_x")
        for i, frame in enumerate(top["frames"]):
            name = frame.get("file_path", "?") if isinstance(frame, dict) else "?"
            where = f"{json_path.name} frame {i} ({name})"
            try:
                if isinstance(frame, dict):
                    check_fields(frame, where)
                info = parse_frame(frame, top, json_path.parent, where=where)
            except MissingImage as e:  # no size without the image; rwf fit skips the frame with a warning
                warnings.append(f"{e}; the frame is skipped")
                continue
            except UserError as e:
                errors.append(str(e))
                continue
            note_depth_unit(info, top, where, units, ignored_depth)  # the depth maps' units, as the loader checks
            size = _check_frame(info, where, decode, errors, warnings)
            if size is not None:
                if not (isinstance(frame, dict) and any(k in frame for k in own)):
                    shared_sizes.add(size)
                infos.append(info)
                wheres.append(where)
        distorted = sum(info.distortion_as_opencv for info in infos)
        if distorted:
            warnings.append(f"{json_path.name}: {distorted} frame(s) with {PINHOLE_DISTORTED}")
        if shared and len(shared_sizes) > 1:
            given = [f"{k} {top[k]}" for k in ("cx", "cy") if k in top]
            centre = f"the principal point's {' and '.join(given)} given at the top" if given else "its own centre"
            warnings.append(f"{json_path.name}: the frames share one focal length in pixels but the images have "
                            f"{len(shared_sizes)} sizes ({', '.join(f'{w}x{h}' for w, h in sorted(shared_sizes))}): "
                            f"rwf fit gives each image that focal length and {centre}, right for crops of one "
                            "camera, wrong for a resized copy (give each frame its own fl_x, or camera_angle_x)")
        bounded = [w for f, w in zip(infos, wheres) if f.near_far is not None]
        if bounded and len(bounded) < len(infos):
            errors.append(f"{json_path.name}: {len(bounded)} of {len(infos)} frames give near/far (e.g. {bounded[0]}); "
                          "per-frame bounds need every frame (or none)")
        if split == "all" and top["frames"]:
            try:
                held_out = not _select(top["frames"], top, "train", json_path.parent)
            except UserError as e:
                errors.append(f"{json_path.name}: {e}")
                held_out = False
            if held_out:
                errors.append(f"{json_path.name}: no training frame: the split lists (or, without them, the "
                              "every-8th-frame hold-out) leave every frame to val/test")
        if not infos:
            errors.append(f"{json_path.name}: no usable frame")
            continue
        _check_box(infos, wheres, box, json_path.name, errors, warnings, log, split, len(top["frames"]), levels)
        if split == "all":  # one file of every frame: how the fit splits it (the summary above counts them all)
            _log_splits(top, json_path.parent, log)
    if not errors:
        shared = held_out_training_images(path)
        if shared:
            warnings.append(held_out_training_text(shared))
    if len(units) > 1:  # rwf fit refuses the dataset, with or without --depth-loss
        errors.append(mixed_units_text(units))
    for unit, first in units.items():  # as rwf fit nerf --depth-loss reads it (a unit of 0 or -1e-3 passed here)
        try:
            depth_unit({"depth_unit_scale_factor": unit}, first)
        except UserError as e:
            errors.append(f"{e} (rwf fit nerf --depth-loss refuses it)")
    if ignored_depth:
        warnings.append(ignored_depth_text(ignored_depth))
    log(("FAILED" if errors else "OK") + f": {len(errors)} error(s), {len(warnings)} warning(s)")
    for title, items in (("error", errors), ("warning", warnings)):
        for msg in items[:50]:
            log(f"  {title}: {msg}")
        if len(items) > 50:
            log(f"  ... and {len(items) - 50} more {title}s")
    return errors, warnings


def _horizontal_fov(info) -> float:
    """Degrees between the rays through the left and right image edges on the principal row: the pinhole angle,
    or for OPENCV_FISHEYE the fisheye's own (which may exceed 180). OPENCV distortion is not counted."""
    if info.model != "OPENCV_FISHEYE":
        return math.degrees(fov_from_focal(info.fx, info.width))
    edges = torch.tensor([info.cx, info.width - info.cx], dtype=torch.float64) / info.fx
    return math.degrees(float(fisheye_theta(edges, torch.tensor(info.dist[:4], dtype=torch.float64)).sum()))


def _log_splits(top: dict, base: Path, log) -> None:
    """The frames of each split of a single transforms.json, and what chose them."""
    try:
        counts = {s: len(_select(top["frames"], top, s, base)) for s in ("train", "val", "test")}
    except UserError:  # a bad split list: an error already
        return
    lists = [f"{s}_filenames" for s in ("train", "val", "test") if f"{s}_filenames" in top]
    how = (f"from {', '.join(lists)}" if lists else
           f"every {HOLDOUT_EVERY}th frame from frame 0 held out for val and test")
    log(f"  splits: train {counts['train']}, val {counts['val']}, test {counts['test']} ({how})")


def _check_box(infos, wheres, box, name, errors, warnings, log, split, n_frames, levels=1):
    """Whether each camera sees the scene box or the ``levels`` cascades around it that aabb_scale asks for, and the
    split's summary line (``wheres``: each frame's label)."""
    try:
        cams = Cameras.create(torch.from_numpy(np.stack([f.c2w for f in infos])), fx=[f.fx for f in infos],
                              fy=[f.fy for f in infos], cx=[f.cx for f in infos], cy=[f.cy for f in infos],
                              width=[f.width for f in infos], height=[f.height for f in infos],
                              model=[f.model for f in infos], dist=np.array([f.dist for f in infos]), names=wheres)
    except UserError as e:  # a lens with no ray for some pixel: the rest of the check needs rays
        errors.append(str(e))
        return
    seen = box_coverage(cams, box)  # fraction of the image on the box
    reach = outer_box(box, levels)
    blind = torch.nonzero(box_coverage(cams, reach) == 0).flatten().tolist()  # as the loader: the whole scene
    center = box.mean(0)
    centers = cams.c2w[:, :3, 3]
    inside = ((centers >= box[0]) & (centers <= box[1])).all(-1)
    what = "scene box" if levels == 1 else f"scene box's {levels} cascades (aabb_scale)"
    for k in blind:  # as the loader: an error when no camera sees the box (nothing to train on), else a warning
        (errors if len(blind) == len(infos) else warnings).append(
            f"{wheres[k]}: the camera sees none of the {what} (wrong convention, pose or aabb?)")
    dist = (centers - center).norm(dim=-1)
    fovs = [_horizontal_fov(f) for f in infos]
    sizes = sorted({(f.width, f.height) for f in infos})
    size_txt = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else f"{len(sizes)} sizes"
    log(f"  {split}: {len(infos)}/{n_frames} frames usable, {size_txt}, "
        f"{'/'.join(sorted(set(f.model for f in infos)))}, fov {min(fovs):.1f}-{max(fovs):.1f} deg, "
        f"camera distance to box center {dist.min():.2f}-{dist.max():.2f}, "
        f"{int(inside.sum())} inside the box, {int((seen > 0).sum())}/{len(infos)} cameras see the box "
        f"(on average {100 * seen.mean():.0f}% of the image); box [{', '.join(f'{v:.2f}' for v in box[0])}] - "
        f"[{', '.join(f'{v:.2f}' for v in box[1])}]"
        + (f", {levels} cascades (aabb_scale) to [{', '.join(f'{v:.2f}' for v in reach[0])}] - "
           f"[{', '.join(f'{v:.2f}' for v in reach[1])}]" if levels > 1 else ""))
