"""Posed-image datasets described by ``transforms.json``: metadata only (paths, cameras, scene box).

Two layouts are read:

* **Blender** (NeRF synthetic): ``DIR/transforms_{train,val,test}.json`` with ``camera_angle_x`` (optionally
  ``camera_angle_y``); image size from the image files; ``file_path`` may omit the ``.png``.
* **instant-ngp / nerfstudio**: one ``DIR/transforms.json`` with ``fl_x, fl_y, cx, cy, w, h``, distortion
  ``k1 k2 k3 k4 p1 p2``, ``camera_model`` (PINHOLE, SIMPLE_PINHOLE, OPENCV, OPENCV_FISHEYE; ngp's ``is_fisheye``),
  ``aabb_scale``, ``scale``, ``offset``; any intrinsic may be overridden per frame (a frame's own focal length,
  ``fl_x`` or ``camera_angle_x``, beats the top level's: :mod:`rwf_render.frames`); optional per-frame
  ``mask_path``, ``depth_file_path`` and ``near``/``far``. Splits: ``{split}_filenames`` lists when present
  (nerfstudio), otherwise every ``HOLDOUT_EVERY``-th frame is the val/test set and the rest is train.

Poses (``transform_matrix``) are OpenGL camera-to-world (see :mod:`rwf_render.cameras`). Paths are relative to
the JSON file's folder. Frames whose image is missing are skipped with one warning. Errors about a frame name it
by its index in the JSON file's ``frames`` list (and, for its lens, its ``file_path``), not by its position among
the frames loaded.

**Scene box** (:func:`scene_box`): an explicit ``"aabb": [[x0, y0, z0], [x1, y1, z1]]`` if present; otherwise
instant-ngp's rule: ngp maps file coordinates p to p * scale + offset (defaults 0.33 and 0.5) and its scene is the
cube of side ``aabb_scale`` centered at 0.5, so in file coordinates the box has center (0.5 - offset) / scale and
half-width 0.5 * aabb_scale / scale (about +-1.5 for the Blender scenes, which fits them). A box that float32
positions cannot resolve (a diagonal beyond 1e12, a side under 1e-6 or 1e-5 of its distance from the origin) is
refused.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cameras import MODELS, Cameras
from .errors import RwfWarning, UserError
from .frames import FrameInfo, MissingImage, _num, image_size, native_path, parse_frame, resolve_image  # noqa: F401
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
    meta: dict  # the top-level JSON without "frames"
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


def scene_box(meta: dict) -> torch.Tensor:
    """(2, 3) float64 scene box of a dataset's top-level metadata (rule in the module docstring)."""
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
    infos, labels, skipped, meta, held_out = [], [], [], {}, ""
    for json_path, sel in parts:
        top = read_json(json_path)
        if not isinstance(top, dict) or not isinstance(top.get("frames"), list):
            raise UserError(f"{json_path}: expected an object with a list of 'frames'")
        meta = meta or {k: v for k, v in top.items() if k != "frames"}
        chosen = _select(top["frames"], top, sel, json_path.parent)
        if top["frames"] and not chosen and sel == "train":  # frames there, but the split rules hold all of them out
            n, lists = len(top["frames"]), [f"{s}_filenames" for s in SPLITS if f"{s}_filenames" in top]
            held_out = (f"{' and '.join(lists)} leave no training frame among its {n} frame(s)" if lists else
                        f"its {n} frame(s) are all held out for val/test (every {HOLDOUT_EVERY}th from frame 0); "
                        "a train_filenames list chooses the training frames")
        for i, frame in chosen:
            try:
                info = parse_frame(frame, top, json_path.parent, where=f"{json_path.name}: frame {i}")
            except MissingImage:  # its size would come from the image: skipped as any frame without its image
                skipped.append(str(frame["file_path"]))
                continue
            if info.image.is_file():
                infos.append(info)
                labels.append(f"{json_path.name}: frame {i}, {frame['file_path']}")  # how a lens error names it
            else:
                skipped.append(str(frame["file_path"]))
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} frame(s) whose image is missing "
                      f"(first: {skipped[0]})", RwfWarning, stacklevel=2)
    if held_out:
        raise UserError(f"{path}: split {split!r} has no frame: {held_out}")
    if not infos:
        raise UserError(f"{path}: split {split!r} has no frame with an existing image")
    c2w = torch.from_numpy(np.stack([f.c2w for f in infos]))
    cams = Cameras.create(c2w, fx=[f.fx for f in infos], fy=[f.fy for f in infos], cx=[f.cx for f in infos],
                          cy=[f.cy for f in infos], width=[f.width for f in infos],
                          height=[f.height for f in infos], model=[f.model for f in infos],
                          dist=np.array([f.dist for f in infos]), names=labels)
    assert all(m in MODELS for m in cams.model_names())
    near_far = None
    if all(f.near_far is not None for f in infos):
        near_far = torch.tensor([f.near_far for f in infos], dtype=torch.float64)
    return Transforms(path=parts[0][0], split=split, image_paths=[f.image for f in infos], cameras=cams,
                      mask_paths=[f.mask for f in infos], depth_paths=[f.depth for f in infos],
                      near_far=near_far, aabb=scene_box(meta), meta=meta, skipped=skipped)
