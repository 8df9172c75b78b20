"""Posed-image datasets described by ``transforms.json``: metadata only (paths, cameras, scene box).

Two layouts are read:

* **Blender** (NeRF synthetic): ``DIR/transforms_{train,val,test}.json`` with ``camera_angle_x`` (optionally
  ``camera_angle_y``); image size from the image files; ``file_path`` may omit the ``.png``.
* **instant-ngp / nerfstudio**: one ``DIR/transforms.json`` with ``fl_x, fl_y, cx, cy, w, h``, distortion
  ``k1 k2 k3 k4 p1 p2``, ``camera_model`` (PINHOLE, SIMPLE_PINHOLE, OPENCV, OPENCV_FISHEYE; ngp's ``is_fisheye``),
  ``aabb_scale``, ``scale``, ``offset``; any intrinsic may be overridden per frame (a frame's own focal length,
  ``fl_x`` or ``camera_angle_x``, beats the top level's: :mod:`rwf_render.frames`); optional per-frame
  ``mask_path``, ``depth_file_path`` (or instant-ngp's ``depth_path``, with ``integer_depth_scale`` as its unit)
  and ``near``/``far``. Splits: ``{split}_filenames`` lists when present
  (nerfstudio), otherwise every ``HOLDOUT_EVERY``-th frame is the val/test set and the rest is train.

Poses (``transform_matrix``) are OpenGL camera-to-world (see :mod:`rwf_render.cameras`). Paths are relative to
the JSON file's folder. Frames whose image is missing are skipped with one warning. Errors about a frame name it
by its index in the JSON file's ``frames`` list (and, for its lens, its ``file_path``), not by its position among
the frames loaded. Depth maps named by instant-ngp's ``depth_path`` without a positive ``integer_depth_scale`` are not
used, as instant-ngp does not use them, with one warning; the depth maps of a split share one unit (a split mixing
units is refused), which :attr:`Transforms.meta` gives as ``depth_unit_scale_factor``.

**Scene box** (:func:`scene_box`): an explicit ``"aabb": [[x0, y0, z0], [x1, y1, z1]]`` if present; otherwise
instant-ngp's rule: ngp maps file coordinates p to p * scale + offset (defaults 0.33 and 0.5) and its scene is the
cube of side ``aabb_scale`` centered at 0.5, so in file coordinates the box has center (0.5 - offset) / scale and
half-width 0.5 * aabb_scale / scale (about +-1.5 for the Blender scenes, which fits them). A file written by
nerfstudio's ``ns-process-data`` (it records ``applied_transform``) that gives none of those keys is in the
capture's own units, which nerfstudio's loader normalizes: its box is centred on the mean camera position with
half-width the cameras' largest distance from it (:func:`camera_box`, over every frame of the file, so all splits
share it), as nerfstudio's box [-1, 1]^3 after its centring and scaling. A box that float32
positions cannot resolve (a diagonal beyond 1e12, a side under 1e-6 or 1e-5 of its distance from the origin) is
refused.

**Checks shared with** ``rwf data check``: numeric fields must be JSON numbers (not ``true`` or ``"60"``), and a
frame gives both ``near`` and ``far`` or neither (:func:`check_fields`); a frame's rotation must be orthonormal
and proper and its principal point inside its image (:func:`camera_errors`); every camera must see some of the
scene box (:func:`box_coverage`). The loader refuses the first failure (UserError naming the JSON file and the
frame's index); the check lists them all.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cameras import MODELS, Cameras, pixel_grid, pixel_rays, rotation_error
from .errors import RwfWarning, UserError
from .frames import (FrameInfo, MissingImage, _num, depth_units, image_size, native_path, parse_frame,  # noqa: F401
                     pose_matrix, resolve_image)
from .rundir import read_json  # (FrameInfo, image_size, native_path: still imported from here by data_tools)

SPLITS = ("train", "val", "test")
HOLDOUT_EVERY = 8  # single-file datasets without split lists: frames 0, 8, 16, ... form val/test


@dataclass
class Transforms:
    """A split of a dataset. ``cameras`` has one camera per entry of ``image_paths`` (float64)."""

    path: Path  # the JSON file
    split: str
    image_paths: list[Path]
    cameras: Cameras
    mask_paths: list[Path | None]
    depth_paths: list[Path | None]
    near_far: torch.Tensor | None  # (N, 2) when every frame has near/far
    aabb: torch.Tensor  # (2, 3) scene box, min and max corners
    meta: dict  # the top-level JSON without "frames" (depth_unit_scale_factor: the depth maps' unit, any key's)
    skipped: list[str] = field(default_factory=list)  # file_path of frames skipped (missing image)

    def __len__(self) -> int:
        return len(self.image_paths)


MAX_BOX = 1e12  # largest scene box diagonal: the field works in float32, whose squares overflow near 1.8e19
MIN_BOX = 1e-6  # smallest side of the scene box, and 1e-5 of its distance from the origin (float32 resolution)


def _renderable(box: np.ndarray, source: str) -> torch.Tensor:
    """``box`` (2, 3) as a tensor, or UserError when float32 positions cannot resolve it: a box so large that the
    marcher's step and near plane overflow, so small or so far from the origin that its sides round to nothing
    (training then ran on no samples, or stopped with a traceback)."""
    side, reach = box[1] - box[0], float(np.abs(box).max())
    diagonal = float(np.linalg.norm(side))
    if diagonal > MAX_BOX:
        raise UserError(f"the scene box ({source}) is {diagonal:.3g} units across, more than {MAX_BOX:g}: "
                        "check the dataset's units")
    if side.min() < max(MIN_BOX, 1e-5 * reach):
        raise UserError(f"the scene box ({source}) is {side.min():.3g} units on its shortest side at {reach:.3g} "
                        f"from the origin: too small for float32 positions (at least {MIN_BOX:g}, and 1e-5 of its "
                        "distance from the origin); check the dataset's units, or centre the scene")
    return torch.from_numpy(box)


BOX_KEYS = ("aabb", "aabb_scale", "scale", "offset")
"""top-level keys that place the scene box; a nerfstudio file without any of them gets its box from the cameras"""


def camera_box(frames) -> np.ndarray | None:
    """(2, 3) box of nerfstudio's dataparser for the cameras of ``frames`` (a transforms.json's list): centred on
    their mean position, half-width their largest distance from it (nerfstudio centres the poses on their mean and
    scales the largest coordinate to 1, then uses the box [-1, 1]^3; a distance rather than a coordinate here, as its
    rotation of the poses is not applied). None where fewer than two cameras have distinct positions."""
    positions = []
    for frame in frames:
        try:
            positions.append(pose_matrix(frame["transform_matrix"], "")[:3, 3])
        except (UserError, TypeError, KeyError):
            continue  # the frame's own parse names the problem
    if len(positions) < 2:
        return None
    p = np.stack(positions)
    center = p.mean(0)
    half = float(np.linalg.norm(p - center, axis=-1).max())
    return np.stack([center - half, center + half]) if half > 0 else None


NGP_HALF = 0.5 / 0.33
"""half-width of instant-ngp's scene box per unit of ``aabb_scale`` at its default scale (0.33) and offset (0.5)"""


def bulk_cube(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and half-width of the bulk of ``points`` (M, 3): per axis their 2nd to 98th percentile, as a
    cube (half-width 0 for points that do not spread)."""
    lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
    return (lo + hi) / 2, float(np.max(hi - lo) / 2)


def holding_scale(r: np.ndarray, keep: float = 0.95, max_scale: int = 128) -> int:
    """The smallest power of two ``aabb_scale`` (at most ``max_scale``) whose instant-ngp box, half-width
    ``NGP_HALF * aabb_scale``, holds the fraction ``keep`` of points at Chebyshev distances ``r`` from its centre."""
    aabb_scale = 1
    while aabb_scale < max_scale and (r <= NGP_HALF * aabb_scale).mean() < keep:
        aabb_scale *= 2
    return aabb_scale


MIN_BOX_POINTS = 8
"""fewer points in a nerfstudio file's ``ply_file_path`` than this: its box comes from the cameras"""


def sparse_points_box(meta: dict, folder: Path | None) -> np.ndarray | None:
    """(2, 3) box of the sparse points of a nerfstudio file (``ply_file_path``, relative to ``folder``, as
    ``ns-process-data`` and ``rwf data colmap`` write it), by the rule ``rwf data colmap`` normalizes a scene with
    (:func:`data_tools.common.normalize_scene`): about the centre of their bulk (:func:`bulk_cube`, half-width h),
    instant-ngp's box for the aabb_scale that holds 95 % of them (:func:`holding_scale`), half-width
    NGP_HALF x aabb_scale x h. None where the file names no points; a warning and None where they cannot be read
    or are too few (the cameras' box then)."""
    name = meta.get("ply_file_path")
    if not isinstance(name, str) or not name or folder is None:
        return None
    path = Path(folder) / name
    try:
        import trimesh  # noqa: PLC0415

        with open(path, "rb") as f:
            points = np.asarray(trimesh.load(f, file_type="ply", process=False).vertices, dtype=np.float64)
    except Exception as e:  # missing, unreadable, not a PLY: the box from the cameras still works
        warnings.warn(f"{path}: the sparse points (ply_file_path) cannot be read ({type(e).__name__}: {e}); the "
                      "scene box comes from the cameras", RwfWarning, stacklevel=3)
        return None
    points = points[np.isfinite(points).all(axis=1)] if points.ndim == 2 and points.shape[1:] == (3,) else points[:0]
    center, half = bulk_cube(points) if len(points) >= MIN_BOX_POINTS else (None, 0.0)
    if not half > 1e-12:
        warnings.warn(f"{path}: {len(points)} sparse points that span no volume; the scene box comes from the "
                      "cameras", RwfWarning, stacklevel=3)
        return None
    r = NGP_HALF * holding_scale(np.abs(points - center).max(axis=1) / half) * half
    return np.stack([center - r, center + r])


def box_from_cameras(meta: dict) -> bool:
    """Whether a transforms.json's box comes from its cameras: a file written by nerfstudio's ``ns-process-data``
    (it records ``applied_transform``) that places no box (none of BOX_KEYS). Its poses are in the capture's own
    units (COLMAP's), which nerfstudio's loader normalizes; instant-ngp's default box (+-1.5) would miss most of
    the scene."""
    return "applied_transform" in meta and not any(k in meta for k in BOX_KEYS)


def scene_box(meta: dict, frames=None, folder: Path | None = None) -> torch.Tensor:
    """(2, 3) float64 scene box of a dataset's top-level metadata and, for a nerfstudio file without box keys, its
    sparse points (``ply_file_path`` relative to ``folder``) or else its ``frames`` (rule in the module
    docstring)."""
    if frames is not None and box_from_cameras(meta):
        box = sparse_points_box(meta, folder)
        if box is not None:
            return _renderable(box, "from the sparse points (ply_file_path)")
        box = camera_box(frames)
        if box is not None:
            return _renderable(box, "from the cameras, as nerfstudio's loader")
    if "aabb" in meta:
        try:
            box = np.asarray(meta["aabb"], dtype=np.float64)
        except (TypeError, ValueError):
            box = np.zeros(0)
        if box.shape != (2, 3) or not np.isfinite(box).all() or not (box[1] > box[0]).all():
            raise UserError(f"aabb must be [[x0, y0, z0], [x1, y1, z1]] with x1 > x0 etc., got {meta['aabb']}")
        return _renderable(box, "aabb")
    scale = _num(meta.get("scale", 0.33), "scale")
    try:
        offset = np.broadcast_to(np.asarray(meta.get("offset", 0.5), dtype=np.float64), (3,))
    except (TypeError, ValueError):
        offset = np.full(3, np.nan)
    if not np.isfinite(offset).all():
        raise UserError(f"offset must be a number or [x, y, z], got {meta.get('offset')!r}")
    aabb_scale = _num(meta.get("aabb_scale", 1), "aabb_scale")
    if scale <= 0 or aabb_scale <= 0:
        raise UserError("scale and aabb_scale must be positive")
    center, half = (0.5 - offset) / scale, 0.5 * aabb_scale / scale
    return _renderable(np.stack([center - half, center + half]), "from aabb_scale, scale and offset")


NUMBER_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "k1", "k2", "k3", "k4",
               "p1", "p2", "near", "far")
"""fields of a frame, or of the top level that frames inherit, that must be JSON numbers when given (not null)"""
TOP_NUMBER_KEYS = ("aabb_scale", "scale", "depth_unit_scale_factor", "integer_depth_scale")
"""top-level fields that must be JSON numbers; ``offset`` and ``aabb`` must be numbers or lists of them"""


def _numeric(value) -> bool:
    """A JSON number, or a (nested) list of them; ``true`` / ``false`` and strings are not numbers."""
    if isinstance(value, list):
        return all(_numeric(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, bool, list, int, float)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(obj: dict, where: str, top: bool = False) -> None:
    """UserError (naming ``where`` and the key) for a numeric field of a frame (or, ``top``, of the top level) that
    is not a JSON number: ``"fl_x": true`` would be read as 1 px and ``"w": "50"`` as 50; and for a frame that gives
    one of ``near`` / ``far`` without the other (the pair would be ignored without a word)."""
    for key in NUMBER_KEYS + (TOP_NUMBER_KEYS if top else ()):
        value = obj.get(key)
        if value is not None and (isinstance(value, list) or not _numeric(value)):
            raise UserError(f"{where}: {key}: expected a number, got {_shown(obj[key])}")
    for key in ("offset", "aabb") if top else ("transform_matrix",):  # lists of numbers (their shapes: the parsers')
        value = obj.get(key)
        if isinstance(value, list) and not _numeric(value) or key == "offset" and isinstance(value, (bool, str)):
            raise UserError(f"{where}: {key}: expected numbers, got {_shown(obj[key])}")
    if not top and (obj.get("near") is None) != (obj.get("far") is None):
        given, missing = ("near", "far") if obj.get("near") is not None else ("far", "near")
        raise UserError(f"{where}: gives {given} but no {missing}; per-frame bounds need both (or neither)")


def camera_errors(info: FrameInfo) -> list[str]:
    """What makes a parsed frame's camera unusable (empty list: nothing): a rotation block that is not orthonormal
    (scaled or sheared: rays and the marcher's distances would be wrong), a mirrored one (determinant -1: a
    left-handed camera), a principal point outside the image."""
    out = []
    err = float(rotation_error(torch.from_numpy(info.c2w)))
    if err > 1e-3:
        out.append(f"rotation is not orthonormal (max |R^T R - I| = {err:.3g})")
    elif np.linalg.det(info.c2w[:3, :3]) < 0:
        out.append("rotation is a reflection (determinant -1)")
    if not (0 <= info.cx <= info.width and 0 <= info.cy <= info.height):
        out.append(f"principal point ({info.cx:g}, {info.cy:g}) is outside the {info.width}x{info.height} image")
    return out


BOX_GRID = 9  # rays per image side used to test whether a camera sees the scene box


def ray_box_hits(rays_o: torch.Tensor, rays_d: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """(R,) bool: does the ray (t > 0) meet the axis-aligned box (2, 3)? Slab method."""
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0, t1 = (box[0] - rays_o) * inv, (box[1] - rays_o) * inv
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    return (far >= near.clamp_min(0)) & (far > 0)


def box_coverage(cams: Cameras, box: torch.Tensor, grid: int = BOX_GRID) -> torch.Tensor:
    """(N,) float64 fraction of a ``grid`` x ``grid`` lattice of each camera's pixels whose rays meet ``box``
    (2, 3): 0 for a camera that sees none of the scene (its rays would train nothing)."""
    cams = cams.to(dtype=torch.float64)
    frac = pixel_grid(grid, grid, torch.float64).reshape(-1, 2) / grid  # (G*G, 2) fractions of width and height
    pix = frac[None] * torch.stack([cams.width, cams.height], -1)[:, None].double()  # (N, G*G, 2)
    o, d = pixel_rays(cams, pix.reshape(-1, 2), torch.arange(len(cams)).repeat_interleave(grid * grid))
    return ray_box_hits(o, d, box.to(torch.float64)).reshape(len(cams), -1).double().mean(-1)


def dataset_files(path: str | Path) -> dict[str, Path]:
    """The JSON file of each split: {"train": ..., "val": ..., "test": ...} (Blender) or {"all": transforms.json}."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise UserError(f"no dataset: expected the path of a dataset folder or transforms file, got {path!r}")
    path = Path(path)
    if path.is_file():  # transforms_{train,val,test}.json: that split; any other name: one file of every frame
        split = path.stem[len("transforms_"):] if path.stem.startswith("transforms_") else "all"
        return {split if split in SPLITS else "all": path}
    if not path.is_dir():
        raise UserError(f"{path}: no such dataset folder or file")
    if (path / "transforms.json").is_file():
        return {"all": path / "transforms.json"}
    found = {s: path / f"transforms_{s}.json" for s in SPLITS if (path / f"transforms_{s}.json").is_file()}
    if not found:
        raise UserError(f"{path}: no transforms.json or transforms_{{train,val,test}}.json")
    return found


def _select(frames: list, top: dict, split: str, base: Path) -> list[tuple[int, object]]:
    """(index in ``frames``, frame) of a split. Split lists name frames by ``file_path`` and are compared as paths
    (``./a.png`` is ``a.png``). As in nerfstudio, once any ``{split}_filenames`` list is given the lists decide: a
    missing val list falls back to the test list and vice versa, a missing train list means every frame not held
    out; frames are never held out by the every-``HOLDOUT_EVERY`` rule then."""
    indexed = list(enumerate(frames))
    if split == "all":
        return indexed
    lists = {s: top[f"{s}_filenames"] for s in SPLITS if f"{s}_filenames" in top}
    if lists:
        def key(p) -> str:
            return os.path.normpath(resolve_image(base, str(p)))

        for s, names in lists.items():
            if not isinstance(names, list):
                raise UserError(f"{s}_filenames: expected a list of file paths, got {type(names).__name__}")

        def named(f) -> bool:
            return isinstance(f, dict) and isinstance(f.get("file_path"), str) and key(f["file_path"]) in wanted

        other = {"val": "test", "test": "val"}.get(split)
        if split in lists or other in lists:
            wanted = {key(p) for p in lists[split if split in lists else other]}
            return [(i, f) for i, f in indexed if named(f)]
        if split == "train":
            wanted = {key(p) for s in ("val", "test") for p in lists.get(s, [])}
            return [(i, f) for i, f in indexed if not named(f)]
        return []
    held = split in ("val", "test")
    return [(i, f) for i, f in indexed if (i % HOLDOUT_EVERY == 0) == held]


def load_transforms(path: str | Path, split: str = "train") -> Transforms:
    """Read one split of a dataset.

    Args:
        path: a dataset folder or one transforms JSON file (a Blender ``transforms_{split}.json`` holds only its
            own split).
        split: "train", "val", "test" or "all" (Blender: all three files concatenated).
    Returns:
        :class:`Transforms` with N >= 1 frames whose images exist.
    Raises:
        UserError: malformed JSON, missing keys, singular poses, unknown split, or no usable frame.
    """
    if split not in (*SPLITS, "all"):
        raise UserError(f"unknown split {split!r}; expected one of {', '.join((*SPLITS, 'all'))}")
    files = dataset_files(path)
    if "all" in files:
        parts = [(files["all"], split)]
    elif Path(path).is_file():  # one Blender file, transforms_{own}.json: its own split only, so that the test
        own = next(iter(files))  # split of transforms_train.json is not its training frames
        if split not in ("all", own):
            raise UserError(f"{path}: no transforms_{split}.json (the {own} split's file was given; give the folder "
                            "for all splits)")
        parts = [(files[own], "all")]
    elif split == "all":
        parts = [(f, "all") for f in files.values()]
    elif split in files:
        parts = [(files[split], "all")]
    else:
        raise UserError(f"{path}: no transforms_{split}.json (has {', '.join(files)})")
    infos, labels, skipped, meta, held_out, box_frames = [], [], [], {}, "", None
    units, ignored = {}, []  # depth unit -> the first frame using it; frames whose ngp depth map is not used
    for json_path, sel in parts:
        top = read_json(json_path)
        if not isinstance(top, dict) or not isinstance(top.get("frames"), list):
            raise UserError(f"{json_path}: expected an object with a list of 'frames'")
        check_fields(top, json_path.name, top=True)
        meta = meta or {k: v for k, v in top.items() if k != "frames"}
        box_frames = box_frames if box_frames is not None else top["frames"]  # every frame of the file, any split
        chosen = _select(top["frames"], top, sel, json_path.parent)
        if top["frames"] and not chosen and sel == "train":  # frames there, but the split rules hold all of them out
            n, lists = len(top["frames"]), [f"{s}_filenames" for s in SPLITS if f"{s}_filenames" in top]
            held_out = (f"{' and '.join(lists)} leave no training frame among its {n} frame(s)" if lists else
                        f"its {n} frame(s) are all held out for val/test (every {HOLDOUT_EVERY}th from frame 0); "
                        "a train_filenames list chooses the training frames")
        for i, frame in chosen:
            where = f"{json_path.name}: frame {i}"
            if isinstance(frame, dict):
                check_fields(frame, where)
            try:
                info = parse_frame(frame, top, json_path.parent, where=where)
            except MissingImage:  # its size would come from the image: skipped as any frame without its image
                skipped.append(str(frame["file_path"]))
                continue
            if info.image.is_file():
                label = f"{where}, {frame['file_path']}"  # how a lens or camera error names it
                problems = camera_errors(info)
                if problems:  # a w/h that is not the image's own explains an off-image principal point better
                    size = image_size(info.image)
                    if size != (info.width, info.height):
                        raise UserError(f"{label}: image is {size[0]}x{size[1]} but its camera says "
                                        f"{info.width}x{info.height}")
                    raise UserError(f"{label}: {problems[0]}")
                infos.append(info)
                labels.append(label)
                if info.depth is not None:
                    unit = depth_units(top)[info.depth_key == "depth_path"]
                    units.setdefault(unit, f"{label} ({info.depth_key})")
                elif info.depth_key == "depth_path":
                    ignored.append(label)
            else:
                skipped.append(str(frame["file_path"]))
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} frame(s) whose image is missing "
                      f"(first: {skipped[0]})", RwfWarning, stacklevel=2)
    if held_out:
        raise UserError(f"{path}: split {split!r} has no frame: {held_out}")
    if ignored:
        warnings.warn(f"{path}: {len(ignored)} frame(s) give instant-ngp's depth_path but no positive "
                      f"integer_depth_scale (first: {ignored[0]}): their depth maps are not used, as instant-ngp does "
                      "not use them; add integer_depth_scale, scene units per stored depth value", RwfWarning,
                      stacklevel=2)
    if len(units) > 1:
        (a, first), (b, second) = list(units.items())[:2]
        raise UserError(f"{path}: depth maps in different units: {first} in {a!r}, {second} in {b!r} (the unit of "
                        "depth_file_path: depth_unit_scale_factor, nerfstudio's default 1e-3 when absent; of "
                        "depth_path: integer_depth_scale); give every depth map one unit")
    if any(info.depth_key == "depth_path" and info.depth is not None for info in infos):  # ngp's unit, under the
        meta = {**meta, "depth_unit_scale_factor": next(iter(units))}  # key the depth loss and written files read
    if not infos:
        raise UserError(f"{path}: split {split!r} has no frame with an existing image")
    c2w = torch.from_numpy(np.stack([f.c2w for f in infos]))
    cams = Cameras.create(c2w, fx=[f.fx for f in infos], fy=[f.fy for f in infos], cx=[f.cx for f in infos],
                          cy=[f.cy for f in infos], width=[f.width for f in infos],
                          height=[f.height for f in infos], model=[f.model for f in infos],
                          dist=np.array([f.dist for f in infos]), names=labels)
    assert all(m in MODELS for m in cams.model_names())
    aabb = scene_box(meta, box_frames, parts[0][0].parent)  # the folder of the file giving meta
    blind = torch.nonzero(box_coverage(cams, aabb) == 0).flatten().tolist()
    if blind:  # every camera: nothing to train on; some (a video frame turned away, a camera beyond the box that
        # --grid-levels cascades reach): the fit still trains on the others, so a warning
        more = f" (and {len(blind) - 1} other frame(s))" if len(blind) > 1 else ""
        corners = [", ".join(f"{v:.3g}" for v in corner) for corner in aabb.tolist()]
        text = f"{labels[blind[0]]}: the camera sees none of the scene box [{corners[0]}] - [{corners[1]}]{more}"
        if len(blind) == len(labels):
            raise UserError(f"{text}: wrong convention, pose or aabb? (`rwf data check` lists every problem)")
        warnings.warn(f"{text}; wrong convention or pose? (`rwf data check` lists every problem)", RwfWarning,
                      stacklevel=2)
    near_far = None
    bounded = [label for f, label in zip(infos, labels) if f.near_far is not None]
    if bounded and len(bounded) < len(infos):  # rays of the others would need bounds from somewhere else
        unbounded = next(label for f, label in zip(infos, labels) if f.near_far is None)
        raise UserError(f"{unbounded}: gives no near/far while {len(bounded)} of the {len(infos)} frames do (e.g. "
                        f"{bounded[0]}); per-frame bounds need every frame (or none)")
    if bounded:
        near_far = torch.tensor([f.near_far for f in infos], dtype=torch.float64)
    return Transforms(path=parts[0][0], split=split, image_paths=[f.image for f in infos], cameras=cams,
                      mask_paths=[f.mask for f in infos], depth_paths=[f.depth for f in infos],
                      near_far=near_far, aabb=aabb, meta=meta, skipped=skipped)
