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

**Scene box**: :mod:`rwf_render.scene_box` (an explicit ``aabb``, instant-ngp's rule from ``scale`` and ``offset``
with the cascades ``aabb_scale`` asks for, or for a nerfstudio-processed file its sparse points or its cameras).

**Checks shared with** ``rwf data check``: numeric fields must be JSON numbers (not ``true`` or ``"60"``), and a
frame gives both ``near`` and ``far`` or neither (:func:`check_fields`); a frame's rotation must be orthonormal
and proper and its principal point inside its image (:func:`camera_errors`); every camera must see some of the
scene box, or of the cascades around it that ``aabb_scale`` asks for (:func:`~rwf_render.scene_box.box_coverage`).
The loader refuses the first failure (UserError naming the JSON file and the frame's index); the check lists them
all.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cameras import MODELS, Cameras, rotation_error
from .errors import RwfWarning, UserError
from .frames import (PINHOLE_DISTORTED, FrameInfo, MissingImage, depth_units, image_size,  # noqa: F401
                     native_path, parse_frame, resolve_image)
from .rundir import read_json  # (FrameInfo, image_size, native_path: still imported from here by data_tools)
from .scene_box import box_cascades, box_coverage, outer_box, scene_box

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
    cascades: int = 1  # occupancy cascades aabb_scale asks for around ``aabb`` (scene_box.box_cascades)

    def __len__(self) -> int:
        return len(self.image_paths)


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


def _conversion_hint(path: Path) -> str:
    """What turns the folder into a dataset, when it looks like a COLMAP model, an LLFF capture or plain photos."""
    try:
        names = {p.name.lower() for p in path.iterdir()}
        if "config.json" in names and "checkpoint.pt" in names:  # its renders would read as photos without poses
            return (" (a run of rwf fit: 'rwf render', 'rwf eval' or 'rwf view' it; a fit goes on with "
                    f"'rwf fit ... --out {path} --resume')")
        photos = path / "images" if (path / "images").is_dir() else path
        # the photos folder of a COLMAP project itself (its model beside it, in ../sparse/0) is one too
        model = next((m for m in (path / "sparse" / "0", path / "sparse", path, path.parent / "sparse" / "0",
                                  path.parent / "sparse")
                      if (m / "cameras.bin").is_file() or (m / "cameras.txt").is_file()), None)
        if model is not None:
            return f" (a COLMAP model: convert it with 'rwf data colmap {model} {photos} OUT')"
        if "poses_bounds.npy" in names:
            return f" (an LLFF capture: convert it with 'rwf data llff {path} OUT')"
        if any(p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in photos.iterdir()):
            return f" (photos without poses: 'rwf data photos {photos} OUT' finds them by structure from motion)"
    except OSError:
        pass
    return ""


def dataset_files(path: str | Path) -> dict[str, Path]:
    """The JSON file of each split: {"train": ..., "val": ..., "test": ...} (Blender) or {"all": transforms.json}."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise UserError(f"no dataset: expected the path of a dataset folder or transforms file, got {path!r}")
    path = Path(path)
    if path.is_file():  # transforms_{train,val,test}.json: that split; any other name: one file of every frame
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr"):  # read as JSON: "0x89 ..."
            raise UserError(f"{path}: an image, not a dataset (a transforms.json or a folder of one); 'rwf fit image "
                            f"{path}' fits one image, 'rwf data photos FOLDER OUT' poses a folder of photos")
        split = path.stem[len("transforms_"):] if path.stem.startswith("transforms_") else "all"
        return {split if split in SPLITS else "all": path}
    if not path.is_dir():
        raise UserError(f"{path}: no such dataset folder or file")
    if (path / "transforms.json").is_file():
        return {"all": path / "transforms.json"}
    found = {s: path / f"transforms_{s}.json" for s in SPLITS if (path / f"transforms_{s}.json").is_file()}
    if not found:
        raise UserError(f"{path}: no transforms.json or transforms_{{train,val,test}}.json{_conversion_hint(path)}")
    return found


FRAME_FILE_KEYS = ("file_path", "mask_path", "depth_file_path", "depth_path")
"""the frame keys that name a file: the image, its mask, its depth map (nerfstudio's or instant-ngp's)"""


def named_files(path: str | Path, keys: tuple = FRAME_FILE_KEYS, top_keys: tuple = ()) -> list[Path]:
    """The existing files a dataset names, in order, each once: its transforms JSON files, and for each file the
    files its frames name under ``keys`` (a frame's own path, else the top level's, which stands for every frame)
    and its top level under ``top_keys``. Frames and files that do not parse name nothing; UserError only when there
    is no dataset."""
    found: dict[Path, None] = {}  # ordered set
    for json_path in dataset_files(path).values():
        found[json_path] = None
        try:
            top = read_json(json_path)
        except UserError:
            continue
        if not isinstance(top, dict):
            continue
        frames = top.get("frames")
        for frame in frames if isinstance(frames, list) else []:
            if not isinstance(frame, dict):
                continue
            for key in keys:
                value = frame.get(key) if frame.get(key) is not None or key == "file_path" else top.get(key)
                if isinstance(value, str) and value.strip():
                    p = (resolve_image if key == "file_path" else native_path)(json_path.parent, value)
                    if p.is_file():
                        found[p] = None
        for key in top_keys:
            value = top.get(key)
            if isinstance(value, str) and value.strip() and native_path(json_path.parent, value).is_file():
                found[native_path(json_path.parent, value)] = None
    return list(found)


def dataset_inputs(path: str | Path) -> set[Path]:
    """The files of a dataset, resolved: its transforms JSON files, every frame's image, mask and depth map, and the
    files its top level names (``mesh_file_path`` of data_tools' scenes, nerfstudio's ``ply_file_path``); what
    ``rwf render --out`` and ``rwf export mesh --out`` must not write over or among. None when the dataset is
    gone."""
    try:
        return {p.resolve() for p in named_files(path, top_keys=("mesh_file_path", "ply_file_path"))}
    except UserError:
        return set()


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
        frame_keys = {key(f["file_path"]) for f in frames
                      if isinstance(f, dict) and isinstance(f.get("file_path"), str)}
        for s, names in lists.items():  # as nerfstudio: a listed name no frame has is an error, not a lost split
            stray = [p for p in names if not isinstance(p, str) or key(p) not in frame_keys]
            if stray:
                raise UserError(f"{s}_filenames: {len(stray)} of its {len(names)} name(s) match no frame's file_path "
                                f"(first: {stray[0]!r}); names are paths from the transforms file's folder, compared "
                                "with their case")

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


def note_depth_unit(info: FrameInfo, top: dict, label: str, units: dict, ignored: list) -> None:
    """Record a frame's depth map for the unit check: ``units`` (unit -> the first frame using it) or, for an
    instant-ngp ``depth_path`` without a positive ``integer_depth_scale`` (not read), ``ignored`` (frame labels)."""
    if info.depth is not None:
        units.setdefault(depth_units(top)[info.depth_key == "depth_path"], f"{label} ({info.depth_key})")
    elif info.depth_key == "depth_path":
        ignored.append(label)


def mixed_units_text(units: dict) -> str:
    """Why depth maps in more than one unit (``note_depth_unit``'s ``units``) are refused."""
    (a, first), (b, second) = list(units.items())[:2]
    return (f"depth maps in different units: {first} in {a!r}, {second} in {b!r} (the unit of depth_file_path: "
            "depth_unit_scale_factor, nerfstudio's default 1e-3 when absent; of depth_path: integer_depth_scale); "
            "give every depth map one unit")


def ignored_depth_text(ignored: list) -> str:
    """The warning for frames whose instant-ngp depth maps are not read (``note_depth_unit``'s ``ignored``)."""
    return (f"{len(ignored)} frame(s) give instant-ngp's depth_path but no positive integer_depth_scale (first: "
            f"{ignored[0]}): their depth maps are not used, as instant-ngp does not use them; add "
            "integer_depth_scale, scene units per stored depth value")


def held_out_training_images(path: str | Path) -> dict[str, list[Path]]:
    """Images the training split holds that a held-out split lists too: {"val" | "test": [paths]} (none: {}). A
    frames list written twice, or one photo in transforms_train.json and transforms_test.json, scored training
    photos as held-out views without a word (a fuzzing hunt)."""
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():  # missing images are said once, by the loader proper
        warnings.simplefilter("ignore")
        try:
            train = {p.resolve() for p in load_transforms(path, "train").image_paths}
        except UserError:
            return {}
        shared = {}
        for split in ("val", "test"):
            try:
                paths = load_transforms(path, split).image_paths
            except UserError:
                continue
            both = [p for p in paths if p.resolve() in train]
            if both:
                shared[split] = both
    return shared


def held_out_training_text(shared: dict[str, list[Path]]) -> str:
    """The warning for :func:`held_out_training_images`'s result (not empty)."""
    said = "; ".join(f"{len(v)} of the {k} split (first: {v[0].name})" for k, v in shared.items())
    return (f"training images are listed in a held-out split too: {said}; their scores measure photos the fit "
            "trained on")


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
    infos, labels, skipped, meta, held_out, box_frames, empty = [], [], [], {}, "", None, None
    units, ignored = {}, []  # depth unit -> the first frame using it; frames whose ngp depth map is not used
    for json_path, sel in parts:
        top = read_json(json_path)
        if not isinstance(top, dict) or not isinstance(top.get("frames"), list):
            raise UserError(f"{json_path}: expected an object with a list of 'frames'")
        check_fields(top, json_path.name, top=True)
        meta = meta or {k: v for k, v in top.items() if k != "frames"}
        empty = empty or (json_path if not top["frames"] else None)
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
                note_depth_unit(info, top, label, units, ignored)
            else:
                skipped.append(str(frame["file_path"]))
    if skipped:
        of = "" if split == "all" else f" of the {split} split"  # val and test may be one set of frames: say which
        warnings.warn(f"{path}: skipped {len(skipped)} frame(s){of} whose image is missing "
                      f"(first: {skipped[0]})", RwfWarning, stacklevel=2)
    if held_out:
        raise UserError(f"{path}: split {split!r} has no frame: {held_out}")
    if ignored:
        warnings.warn(f"{path}: {ignored_depth_text(ignored)}", RwfWarning, stacklevel=2)
    distorted = sum(info.distortion_as_opencv for info in infos)
    if distorted:
        warnings.warn(f"{path}: {distorted} frame(s) with {PINHOLE_DISTORTED}", RwfWarning, stacklevel=2)
    if len(units) > 1:
        raise UserError(f"{path}: {mixed_units_text(units)}")
    if any(info.depth_key == "depth_path" and info.depth is not None for info in infos):  # ngp's unit, under the
        meta = {**meta, "depth_unit_scale_factor": next(iter(units))}  # key the depth loss and written files read
    if not infos and empty is not None and not skipped:  # an empty split is an error, not an absent one
        raise UserError(f"{empty}: its list of 'frames' is empty, so the {split} split has no frame")
    if not infos:
        raise UserError(f"{path}: split {split!r} has no frame with an existing image")
    c2w = torch.from_numpy(np.stack([f.c2w for f in infos]))
    cams = Cameras.create(c2w, fx=[f.fx for f in infos], fy=[f.fy for f in infos], cx=[f.cx for f in infos],
                          cy=[f.cy for f in infos], width=[f.width for f in infos],
                          height=[f.height for f in infos], model=[f.model for f in infos],
                          dist=np.array([f.dist for f in infos]), names=labels)
    assert all(m in MODELS for m in cams.model_names())
    aabb = scene_box(meta, box_frames, parts[0][0].parent)  # the folder of the file giving meta
    cascades = box_cascades(meta)
    seen = outer_box(aabb, cascades)  # instant-ngp's scene: the unit cube and the cascades aabb_scale asks for
    blind = torch.nonzero(box_coverage(cams, seen) == 0).flatten().tolist()
    if blind:  # every camera: nothing to train on; some (a video frame turned away, a camera beyond the box that
        # --grid-levels cascades reach): the fit still trains on the others, so a warning
        more = f" (and {len(blind) - 1} other frame(s))" if len(blind) > 1 else ""
        corners = [", ".join(f"{v:.3g}" for v in corner) for corner in seen.tolist()]
        what = "scene box" if cascades == 1 else f"scene box's {cascades} cascades (aabb_scale)"
        text = f"{labels[blind[0]]}: the camera sees none of the {what} [{corners[0]}] - [{corners[1]}]{more}"
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
                      near_far=near_far, aabb=aabb, meta=meta, skipped=skipped, cascades=cascades)
