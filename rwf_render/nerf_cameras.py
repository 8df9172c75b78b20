"""The cameras of a NeRF run as a dataset file: ``rwf export cameras RUN`` (nerfstudio's ``ns-export cameras``).

    rwf export cameras RUN [--split all|train|val|test] [--out FILE] [--force]

Data flow, one step per function:
    config.json (the dataset) and, for an ``--optimize-cameras`` run, checkpoint.pt (the corrections, one per
    training photo: :mod:`rwf_render.camera_opt`) (:func:`run_corrections`)
    -> each split's cameras as the loader reads them from the dataset: intrinsics of the full-resolution photos the
       paths name (the fit's ``--downscale`` divides them only in memory), poses as written in its files
    -> the training poses corrected, c2w_i @ [exp(omega_i) | tau_i]; val and test views keep the dataset's poses, as
       the fit scored them (:func:`split_frames`)
    -> one transforms.json in the instant-ngp / nerfstudio format, written atomically (:func:`cameras_json`).

**Coordinates**: the loader uses each ``transform_matrix`` as written (OpenGL camera-to-world; no recentring or
rescaling: the scene box is worked out in the file's coordinates), so the poses written are in the dataset's own
coordinates and units, and the keys that place the scene box (``aabb``, ``aabb_scale``, ``scale``, ``offset``) are
copied from the training split's file, giving the same box. A nerfstudio file without them, whose box the loader
makes from all of its cameras (:func:`rwf_render.scene_box.box_from_cameras`), gets that box as ``aabb``, so a file
of one split keeps it.

**Intrinsics**: ``camera_model``, ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` and ``k1 k2 k3 k4 p1 p2`` at the
top level where every camera shares the value, in the frame where cameras differ (a frame's own value overrides
the top level's, as the loader reads it). A Blender ``camera_angle_x`` becomes the focal length it gives.

**Paths**: ``file_path`` (and ``mask_path``, ``depth_file_path``) relative to the written file's folder, with ``/``
separators, so that the file loads from where it lies (``rwf fit nerf FILE``) and moves together with the dataset;
absolute where no relative path exists (another drive on Windows).

**Splits**: ``--split all`` (the default) writes every frame of the train, val and test splits once, and lists
them in ``train_filenames``, ``val_filenames`` and ``test_filenames`` (nerfstudio's keys), so that the file splits
as the run's dataset did; one split writes its own frames and its own list.

**Corrections**: each refined training frame also holds ``camera_correction``: the dataset's pose
(``dataset_transform_matrix``), the correction in the camera's own frame (``omega``, axis-angle radians, and
``tau``, dataset units) and its size (``rotation_deg``, ``translation``). Readers ignore keys they do not know.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

from .camera_opt import corrected_c2w
from .cameras import DIST_NAMES, MODELS, Cameras
from .datasets import SPLITS, Transforms, load_transforms
from .errors import RwfWarning, UserError
from .nerf_config import NeRFConfig
from .rundir import CHECKPOINT, CONFIG, load_checkpoint, write_json
from .scene_box import box_from_cameras

BOX_KEYS = ("aabb", "aabb_scale", "scale", "offset")
"""top-level keys that place the scene box (:func:`rwf_render.scene_box.scene_box`), copied as the dataset gives them"""
COPIED_KEYS = (*BOX_KEYS, "depth_unit_scale_factor", "applied_transform", "applied_scale")
"""top-level keys of the training split's file kept in the export (the depth maps' units; nerfstudio's record of
the transform its tools applied to the poses written, which are the poses kept)"""
INTRINSIC_KEYS = ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", *DIST_NAMES)


def default_out(run: Path, split: str) -> Path:
    """RUN/cameras.json for every split, RUN/cameras_<split>.json for one."""
    return run / ("cameras.json" if split == "all" else f"cameras_{split}.json")


def run_corrections(run: Path, cfg: NeRFConfig) -> torch.Tensor | None:
    """(N, 6) float64 corrections (omega in radians, tau in scene units) of an ``--optimize-cameras`` run's training
    photos, from its checkpoint; None for a run fitted without them."""
    if not cfg.optimize_cameras:
        return None
    state = load_checkpoint(run / CHECKPOINT)
    delta = state.get("model", {}).get("pose_correction.delta") if isinstance(state.get("model"), dict) else None
    if not isinstance(delta, torch.Tensor) or delta.ndim != 2 or delta.shape[1] != 6:
        raise UserError(f"{run / CHECKPOINT}: no camera corrections, though {run / CONFIG} says the fit refined the "
                        "cameras (--optimize-cameras)")
    delta = delta.detach().double().cpu()
    delta[:, 3:] /= cfg.field.density_scale or 1.0  # the parameters' translations are in lengths of the box
    return delta


def _intrinsics(cams: Cameras, i: int) -> dict:
    """Camera ``i``'s intrinsics under the transforms.json keys (INTRINSIC_KEYS)."""
    out = {"camera_model": MODELS[int(cams.model[i])], "fl_x": float(cams.fx[i]), "fl_y": float(cams.fy[i]),
           "cx": float(cams.cx[i]), "cy": float(cams.cy[i]), "w": int(cams.width[i]), "h": int(cams.height[i])}
    out.update(zip(DIST_NAMES, (float(v) for v in cams.dist[i])))
    return out


def _path_text(path: Path | None, folder: Path) -> str | None:
    """``path`` relative to ``folder`` with ``/`` separators; absolute where no relative path exists."""
    if path is None:
        return None
    try:
        return Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).resolve().as_posix()


def _matrix(c2w: torch.Tensor) -> list:
    """(3|4, 4) camera-to-world as a 4x4 nested list."""
    return [[float(v) for v in row] for row in c2w[:3].tolist()] + [[0.0, 0.0, 0.0, 1.0]]


def split_frames(tf: Transforms, folder: Path, delta: torch.Tensor | None = None) -> list[dict]:
    """The frames of a split (its loaded :class:`~rwf_render.datasets.Transforms`) for a file in ``folder``: pose,
    intrinsics (all of them; :func:`cameras_json` moves the shared ones to the top level), paths, per-frame bounds;
    ``delta`` (N, 6): the split's poses corrected by it, each frame with its ``camera_correction``."""
    cams = tf.cameras.to(dtype=torch.float64, device="cpu")
    c2w = cams.c2w
    if delta is not None:
        c2w = corrected_c2w(cams.c2w, delta)
    frames = []
    for i, image in enumerate(tf.image_paths):
        frame = {"file_path": _path_text(image, folder), "transform_matrix": _matrix(c2w[i]), **_intrinsics(cams, i)}
        for key, path in (("mask_path", tf.mask_paths[i]), ("depth_file_path", tf.depth_paths[i])):
            if path is not None:
                frame[key] = _path_text(path, folder)
        if tf.near_far is not None:
            frame["near"], frame["far"] = (float(v) for v in tf.near_far[i])
        if delta is not None:
            d = delta[i]
            frame["camera_correction"] = {
                "dataset_transform_matrix": _matrix(cams.c2w[i]), "omega": d[:3].tolist(), "tau": d[3:].tolist(),
                "rotation_deg": math.degrees(float(d[:3].norm())), "translation": float(d[3:].norm())}
        frames.append(frame)
    return frames


def cameras_json(splits: dict[str, list[dict]], meta: dict, note: dict) -> dict:
    """One transforms.json of the frames of ``splits`` ({split: frames of :func:`split_frames}``, in order): each
    image once (its first split's frame), a ``{split}_filenames`` list per split, the intrinsics every frame shares
    at the top level, ``meta``'s COPIED_KEYS, and ``note`` under ``rwf_export``."""
    frames, seen, lists = [], {}, {}
    for split, split_list in splits.items():
        lists[split] = []
        for frame in split_list:
            lists[split].append(frame["file_path"])
            first = seen.get(frame["file_path"])
            if first is None:
                seen[frame["file_path"]] = frame
                frames.append(frame)
            elif first["transform_matrix"] != frame["transform_matrix"] or any(
                    first[k] != frame[k] for k in INTRINSIC_KEYS):
                warnings.warn(f"{frame['file_path']}: the {split} split gives this photo another camera than an "
                              "earlier split; written once, with the earlier camera", RwfWarning, stacklevel=2)
    shared = {k: frames[0][k] for k in INTRINSIC_KEYS if all(f[k] == frames[0][k] for f in frames)}
    top = {**shared, **{k: meta[k] for k in COPIED_KEYS if k in meta}}
    top.update({f"{split}_filenames": names for split, names in lists.items()})
    top["rwf_export"] = note
    top["frames"] = [{k: v for k, v in f.items() if k not in shared} for f in frames]
    return top


def _check_out(out: Path, force: bool, data: str) -> None:
    """UserError before any work for an output that cannot or must not be written: a folder, a missing folder, an
    existing file without --force, and (even with --force) a file of the run's dataset (its transforms files, a
    photo: --force wrote JSON over a training image) or of a run."""
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the file to write")
    from .rundir import check_output_file, check_output_folder, refuse_among_inputs  # noqa: PLC0415

    check_output_folder(out)
    refuse_among_inputs(out, data)  # its transforms files too (a dataset gone protects nothing)
    check_output_file(out, force)


def export_cameras_run(run: Path, cfg_dict: dict, args) -> int:
    """``rwf export cameras RUN``: see the module docstring."""
    try:
        cfg = NeRFConfig.from_dict(cfg_dict)
    except (UserError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{run / CONFIG}: {e}") from None
    split = getattr(args, "split", None) or "all"
    if args.out and args.out.endswith(("/", os.sep)):  # Path() drops the slash: a file of the folder's name was written
        raise UserError(f"{args.out}: names a folder; --out names the file to write")
    out = Path(args.out) if args.out else default_out(run, split)
    _check_out(out, getattr(args, "force", False), cfg.data)
    delta = run_corrections(run, cfg)
    wanted = SPLITS if split == "all" else (split,)
    loaded: dict[str, Transforms] = {}
    for name in wanted:
        try:
            loaded[name] = load_transforms(cfg.data, name)
        except UserError as e:  # with --split all, a val or test split the dataset does not have is left out
            absent = "no transforms_" in str(e) or "no frame with an existing image" in str(e)
            if not absent or name == "train" or split != "all":
                raise
    if {"val", "test"} <= loaded.keys() and loaded["val"].image_paths == loaded["test"].image_paths \
            and "val_filenames" not in loaded["val"].meta:  # a val split that is the test split's frames (nerfstudio's
        del loaded["val"]  # fallback): not written as a split of its own, which the file then falls back to again
    if delta is not None and "train" in loaded and len(loaded["train"]) != len(delta):
        raise UserError(f"{cfg.data}: the training split has {len(loaded['train'])} photos now, the run refined the "
                        f"poses of {len(delta)}: the dataset changed since the fit")
    saved = cfg_dict.get("dataset")
    if delta is not None and isinstance(saved, dict) and isinstance(saved.get("sha256"), str):
        from .nerf_data import changed_splits, dataset_fingerprint  # noqa: PLC0415

        changed = changed_splits(cfg_dict, cfg.data, ("train",))  # None: a run without them, the whole dataset's
        if changed if changed is not None else dataset_fingerprint(cfg.data)["sha256"] != saved["sha256"]:
            warnings.warn(f"{cfg.data}: the training split changed since the fit; the corrections written were "
                          "learned for the training poses it held then", RwfWarning, stacklevel=2)
    folder = out.parent
    frames = {name: split_frames(tf, folder, delta if name == "train" else None) for name, tf in loaded.items()}
    meta = loaded["train"].meta if "train" in loaded else next(iter(loaded.values())).meta
    refined = delta is not None and "train" in loaded
    note = {"run": str(run.resolve()), "data": str(cfg.data), "split": split, "refined_train_poses": refined,
            "convention": "OpenGL camera-to-world in the dataset's coordinates and units; intrinsics of the "
                          "full-resolution images; paths relative to this file's folder"}
    written = cameras_json(frames, meta, note)
    if box_from_cameras(meta):  # a nerfstudio file's box comes from all of its cameras: kept when fewer are written
        written = {"aabb": next(iter(loaded.values())).aabb.tolist(), **written}
    write_json(out, written)
    k = len(frames["train"]) if refined else 0
    what = f"; {k} training pose{'s' * (k != 1)} refined by --optimize-cameras" if refined else ""
    print(f"{out}: {len(written['frames'])} cameras ({', '.join(f'{s} {len(f)}' for s, f in frames.items())}){what}")
    return 0
