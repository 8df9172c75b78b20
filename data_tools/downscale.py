"""Downscale a dataset's images by an integer factor K, with exactly matching intrinsics.

Each image is cropped to a multiple of K at its right and bottom edges (at most K - 1 pixels; the crop does not
move the origin) and box-filtered, so every new pixel covers exactly K x K old ones: fl_x, fl_y, cx and cy are
divided by K with no approximation, w and h become floor(w / K) and floor(h / K). RGBA is averaged with
premultiplied alpha; masks are box-filtered; depth maps take, per block, the sample nearest its centre among those
that have a depth (no mixing of depths across an edge, and a sparse map from ``rwf data colmap --depth`` keeps its
points), or for an even K the mean of the four central samples where they lie within 5 % of each other (one
surface: the depth at the block's centre; ``SMOOTH_DEPTH``).
"""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np

from rwf_render.datasets import _select, dataset_files, native_path, parse_frame, resolve_image
from rwf_render.errors import RwfWarning, UserError
from rwf_render.nerf_depth import thin_depth
from rwf_render.rundir import read_json, write_json

from .common import load_depth_samples, load_image, save_image, staged_output

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy")


def box_downscale(img: np.ndarray, k: int) -> np.ndarray:
    """(H, W[, C]) -> (H // k, W // k[, C]) mean over k x k blocks, same dtype (RGBA and grey + alpha: premultiplied
    mean)."""
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    if h == 0 or w == 0:
        raise UserError(f"a {img.shape[1]}x{img.shape[0]} image is smaller than the factor {k}")
    x = img[:h, :w].astype(np.float64)
    x = x[..., None] if x.ndim == 2 else x
    alpha = x.shape[-1] in (2, 4)  # grey + alpha or RGBA: the last channel is alpha
    if alpha:  # premultiply so transparent pixels do not bleed their (meaningless) color
        x[..., :-1] *= x[..., -1:]
    x = x.reshape(h // k, k, w // k, k, x.shape[-1]).mean(axis=(1, 3))
    if alpha:
        x[..., :-1] /= np.maximum(x[..., -1:], 1e-12)
    x = x[..., 0] if img.ndim == 2 else x
    if np.issubdtype(img.dtype, np.integer):
        return np.clip(np.round(x), 0, np.iinfo(img.dtype).max).astype(img.dtype)
    return x.astype(img.dtype)


SMOOTH_DEPTH = 0.05
"""an even factor's four central depths of a block are one surface when they agree within this fraction: a jump of
more is an edge, whose depths are not mixed. Four pixels cannot tell a slope from a small jump: 5 % keeps the mean
on surfaces sloping up to about 2.5 % a pixel (a 48-pixel view of a plane at 60 degrees), and puts a block across a
smaller jump between its two sides (10.0 against 10.4 gives 10.2)."""


def depth_downscale(img: np.ndarray, k: int) -> np.ndarray:
    """(H, W) depth map -> (H // k, W // k): the sample nearest each block's centre among those with a depth
    (non-zero; :func:`rwf_render.nerf_depth.thin_depth`), 0 where a block has none. For an even ``k`` no sample lies
    at the centre: where the four around it have depths within SMOOTH_DEPTH of each other (one surface), their
    mean, which a plane gives exactly at the centre (the nearest sample sat a quarter of a new pixel up and left at
    k = 2: 0.019 off a unit sphere's surface in a 20-pixel view); at an edge (a jump), the nearest sample still."""
    z = img[..., 0] if img.ndim == 3 else img
    rows, cols = thin_depth(z, k)
    out = np.zeros((z.shape[0] // k, z.shape[1] // k), dtype=img.dtype)
    out[rows // k, cols // k] = z[rows, cols]
    if k % 2 == 0:
        h, w = out.shape
        mid = z[: h * k, : w * k].reshape(h, k, w, k)[:, k // 2 - 1: k // 2 + 1, :, k // 2 - 1: k // 2 + 1]
        mid = mid.astype(np.float64)
        lo, hi = mid.min(axis=(1, 3)), mid.max(axis=(1, 3))
        smooth = (lo > 0) & (hi - lo <= SMOOTH_DEPTH * lo)  # NaN anywhere: not smooth
        mean = mid.mean(axis=(1, 3))[smooth]
        out[smooth] = np.round(mean) if np.issubdtype(out.dtype, np.integer) else mean
    return out


def _scaled(d: dict, factor: int, where: str) -> dict:
    """Copy of a JSON object with fl_x, fl_y, cx, cy divided by ``factor`` and w, h integer-divided (absent or null
    keys stay as they are); UserError naming ``where`` when one is not a number."""
    out = dict(d)
    for key in (*INTRINSIC_KEYS, "w", "h"):
        v = d.get(key)
        if v is None:
            continue
        number = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if key in ("w", "h"):
            if not (number and v > 0 and v == int(v)):
                raise UserError(f"{where}: {key} must be a whole number of pixels, got {v!r}")
            out[key] = int(v) // factor
        else:
            if not number:
                raise UserError(f"{where}: {key} must be a finite number, got {v!r}")
            out[key] = float(v) / factor
    return out


def _implicit_intrinsics(frame: dict, top: dict, base: Path, factor: int, where: str) -> dict:
    """fl_x, fl_y, cx, cy of the downscaled frame, for one that leaves some of them to the loader
    (``camera_angle_x``, the image center) when its size is not a multiple of ``factor``; else {}. The loader would
    derive them from the cropped size: cx = floor(w / K) / 2 instead of w / (2 K), and the focal off by a factor
    floor(w / K) K / w. The frame's field-of-view angles (``camera_angle_x``, ``_y``) are rewritten for the new
    size and focal too, for readers that take the focal from them (the original NeRF's, nerfstudio's Blender
    loader; their principal point, the image centre, stays up to (K - 1) / (2 K) pixel off)."""
    def given(length: str, angle: str) -> bool:  # the loader's focal: the frame's fl_x, else its camera_angle_x,
        return frame.get(length) is not None or (frame.get(angle) is None and top.get(length) is not None)  # else top

    if given("fl_x", "camera_angle_x") and given("fl_y", "camera_angle_y") \
            and all(frame.get(k, top.get(k)) is not None for k in ("cx", "cy")):
        return {}
    info = parse_frame(frame, top, base, where=where)
    if info.width % factor == 0 and info.height % factor == 0:
        return {}
    fx, fy = info.fx / factor, info.fy / factor
    return {"fl_x": fx, "fl_y": fy, "cx": info.cx / factor, "cy": info.cy / factor,
            "camera_angle_x": 2 * math.atan(info.width // factor / (2 * fx)),
            "camera_angle_y": 2 * math.atan(info.height // factor / (2 * fy))}


def _inside(base: Path, path: Path) -> str | None:
    """``path`` relative to the dataset folder ``base`` (posix), or None when it lies outside."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return None


def _aux_paths(base: Path, frame: dict, where: str) -> dict[str, Path]:
    """The mask and depth map files a frame names: {key: path}; UserError when a path is not a string."""
    out = {}
    for key in ("mask_path", "depth_file_path", "depth_path"):
        if key in frame:
            if not isinstance(frame[key], str) or not frame[key].strip():
                raise UserError(f"{where}: {key} must be a file path (a non-empty string), got {frame[key]!r}")
            out[key] = native_path(base, frame[key])  # (a Windows path: backslashes as separators)
    return out


def _free_name(folder: str, path: Path, taken: set) -> str:
    """``folder + path.name``, or with ``_1``, ``_2`` ... before its suffix when that output name is taken; the name
    chosen joins ``taken``."""
    name, k = f"{folder}{path.name}", 1
    while name in taken:
        name, k = f"{folder}{path.stem}_{k}{path.suffix}", k + 1
    taken.add(name)
    return name


def _left_out(base: Path, name, placed: dict) -> bool:
    """Whether a split list's entry names an image that is not written (missing in the source)."""
    return isinstance(name, str) and Path(resolve_image(base, name)).resolve() not in placed


def _moved(base: Path, name, placed: dict):
    """A split list's entry (an image path as a frame's file_path names it) as the output names that image (one whose
    image was not written, :func:`_left_out`, is dropped from the list)."""
    if not isinstance(name, str):
        return name
    return placed.get(Path(resolve_image(base, name)).resolve(), name)


def downscale_dataset(src: str | Path, out: str | Path, factor: int, force: bool = False, log=print) -> dict:
    """Write a copy of dataset ``src`` with images (and masks, depth maps) downscaled by ``factor``."""
    if factor < 2:
        raise UserError(f"--factor must be an integer >= 2, got {factor}")
    files = dataset_files(src)
    tops = {split: read_json(p) for split, p in files.items()}
    for split, top in tops.items():
        if not isinstance(top, dict) or not isinstance(top.get("frames"), list):
            raise UserError(f"{files[split]}: expected an object with a list of 'frames'")
    base = next(iter(files.values())).parent
    # every frame's files, checked before anything is written
    dropped = set()  # the splits (files) a frame was left out of, its image missing
    top_angles = {}  # (split, camera_angle_x or _y) -> the frames reading the top's: rewritten angle, else None
    jobs, heads, head_aux = {}, {}, {}  # split -> [(frame, image, {key: aux path})]; top-level keys, scaled; and
    for split, top in tops.items():   # the mask and depth files named there, which the loader gives every frame
        heads[split] = _scaled({k: v for k, v in top.items() if k != "frames"}, factor, files[split].name)
        named = {k: v for k, v in top.items() if v is not None}  # null: not given, as the loader reads it
        head_aux[split] = {k: v for k, v in _aux_paths(base, named, files[split].name).items() if v.is_file()}
        jobs[split] = []
        for i, frame in enumerate(top["frames"]):
            where = f"{files[split].name} frame {i}"
            if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
                raise UserError(f"{where}: no file_path (a string)")
            image = resolve_image(base, frame["file_path"])
            if not image.is_file():
                warnings.warn(f"{image} is missing; frame left out", RwfWarning, stacklevel=2)
                dropped.add(split)
                continue
            scaled = _scaled(frame, factor, where)
            implicit = _implicit_intrinsics(frame, top, base, factor, where)
            for key in ("camera_angle_x", "camera_angle_y"):  # a rewritten frame's angle is its own (a frame's
                angle = implicit.pop(key, None)                 # angle wins over the top's); the top's below
                if angle is not None and (frame.get(key) is not None or top.get(key) is not None):
                    scaled[key] = round(angle, 12)
                if frame.get(key) is None and top.get(key) is not None:  # a frame that reads the top's angle
                    top_angles.setdefault((split, key), []).append(scaled.get(key))
            scaled.update(implicit)
            jobs[split].append((scaled, image, _aux_paths(base, frame, where)))
        for key in ("camera_angle_x", "camera_angle_y"):  # the top's angle, where every frame reading it was
            angles = top_angles.get((split, key), [])     # rewritten to one (a size a multiple of K keeps it)
            if angles and None not in angles and len(set(angles)) == 1:
                heads[split][key] = angles[0]
    if not any(jobs.values()):  # an empty dataset written and exit 0; the fit and the check refuse it
        names, listed = ", ".join(f.name for f in files.values()), sum(len(t["frames"]) for t in tops.values())
        raise UserError(f"{src}: no frame with an existing image to downscale ({names}: {listed} frame(s) listed)")
    # output names: files inside the dataset keep their relative path; files outside it go to images/, renamed
    # when the name is taken (two folders may both hold a 0001.png)
    paths = [p for js in jobs.values() for _, img, aux in js for p in (img, *aux.values())]
    paths += [p for aux in head_aux.values() for p in aux.values()]
    placed = {p.resolve(): _inside(base, p) for p in paths if _inside(base, p) is not None}  # source -> output
    taken = set(placed.values())
    for p in paths:
        if p.resolve() not in placed:
            placed[p.resolve()] = _free_name("images/", p, taken)
    for split, top in tops.items():  # the split lists name frames by their images' paths, which have moved
        keys = [f"{s}_filenames" for s in ("train", "val", "test")]
        for key in keys:
            if isinstance(top.get(key), list):  # a frame left out leaves its lists too (a name of no frame is an
                heads[split][key] = [_moved(base, name, placed) for name in top[key]  # error to the loader)
                                     if not _left_out(base, name, placed)]
        if split == "all" and split in dropped and not any(k in top for k in keys):
            # the every-8th-frame hold-out counts frames by position, so a frame left out would move it: the frames
            # held out are named instead, as lists (nerfstudio's keys), so that OUT holds out the same photos
            # (and the training frames too: nerfstudio refuses val and test lists without a train list)
            named = {}
            for part in ("train", "val"):
                chosen = [f["file_path"] for _, f in _select(top["frames"], top, part, base)
                          if isinstance(f, dict) and isinstance(f.get("file_path"), str)]
                named[part] = [_moved(base, name, placed) for name in chosen if not _left_out(base, name, placed)]
            heads[split]["train_filenames"] = named["train"]
            heads[split]["val_filenames"] = heads[split]["test_filenames"] = held = named["val"]
            log(f"a frame was left out: the {len(held)} frame(s) held out for val/test are named in val_filenames "
                "and test_filenames, and the others in train_filenames, so that the every-8th-frame rule does not "
                "move to others")
    extras = {}  # a point cloud or mesh file the dataset names: source -> output path, inside OUT
    for split, top in tops.items():
        for key in ("ply_file_path", "mesh_file_path"):
            rel = top.get(key)
            if isinstance(rel, str) and rel.strip() and native_path(base, rel).is_file():
                path = native_path(base, rel).resolve()
                if path not in extras:  # one outside the dataset goes to OUT's top level, under a free name
                    inside = _inside(base, path)
                    extras[path] = inside if inside is not None else _free_name("", path, taken)
                heads[split][key] = extras[path]
    done, sizes = {}, set()  # done: output path -> (width, height)
    sources = {p.parent for p in placed}  # frames may name files outside the dataset folder: those stay too
    # OUT may not go inside the dataset or a folder of its images, except one that holds the dataset itself (images
    # in the folder above it): there OUT beside the dataset (rwf data downscale out/ out_half/) is the usual place
    holders = (base, *(d for d in sources if d not in base.resolve().parents))
    with staged_output(out, force, inputs=(base, *sources), holders=holders) as stage:
        def convert(path: Path, how) -> str:
            rel = placed[path.resolve()]
            if rel not in done:  # a depth map by its stored values (any integer type), as rwf fit reads one
                img = how((load_depth_samples if how is depth_downscale else load_image)(path), factor)
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                save_image(stage / rel, img)
                done[rel] = img.shape[1::-1]
            return rel

        for path, rel in extras.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, stage / rel)
        for split in tops:
            for key, path in head_aux[split].items():
                heads[split][key] = convert(path, box_downscale if key == "mask_path" else depth_downscale)
            frames = []
            for f, image, aux in jobs[split]:
                f["file_path"] = convert(image, box_downscale)
                sizes.add(done[f["file_path"]])
                for key, path in aux.items():
                    f[key] = convert(path, box_downscale if key == "mask_path" else depth_downscale)
                frames.append(f)
            if not frames:  # every image of the split missing: absent, as the loader reads the source (an empty
                continue    # 'frames' list is an error to it)
            # one file of every split is written as transforms.json, whatever its name (rwf export cameras writes
            # cameras.json), so that OUT is a dataset the loader and --force recognize
            write_json(stage / ("transforms.json" if split == "all" else files[split].name),
                       {**heads[split], "frames": frames})
    photos = len({f["file_path"] for js in jobs.values() for f, _, _ in js})
    named = [aux for js in jobs.values() for _, _, aux in js] + list(head_aux.values())  # {key: mask or depth file}
    masks = len({placed[p.resolve()] for aux in named for key, p in aux.items() if key == "mask_path"})
    depths = len(done) - photos - masks
    more = ", ".join(f"{n} {what}" for n, what in ((masks, "masks"), (depths, "depth maps")) if n > 0)
    more = f" (and {more})" if more else ""
    log(f"downscaled {photos} photos{more} by {factor} to {', '.join(f'{w}x{h}' for w, h in sorted(sizes))} -> {out}")
    return {"n_files": len(done), "sizes": sorted(sizes)}
