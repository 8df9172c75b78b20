"""Downscale a dataset's images by an integer factor K, with exactly matching intrinsics.

Each image is cropped to a multiple of K at its right and bottom edges (at most K - 1 pixels; the crop does not
move the origin) and box-filtered, so every new pixel covers exactly K x K old ones: fl_x, fl_y, cx and cy are
divided by K with no approximation, w and h become floor(w / K) and floor(h / K). RGBA is averaged with
premultiplied alpha; masks are box-filtered; depth maps take the nearest sample (no mixing of depths).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rwf_render.datasets import dataset_files, resolve_image
from rwf_render.errors import UserError
from rwf_render.rundir import read_json, write_json

from .common import load_image, save_image, staged_output

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy")


def box_downscale(img: np.ndarray, k: int) -> np.ndarray:
    """(H, W[, C]) -> (H // k, W // k[, C]) mean over k x k blocks, same dtype (RGBA: premultiplied mean)."""
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    if h == 0 or w == 0:
        raise UserError(f"a {img.shape[1]}x{img.shape[0]} image is smaller than the factor {k}")
    x = img[:h, :w].astype(np.float64)
    x = x[..., None] if x.ndim == 2 else x
    if x.shape[-1] == 4:  # premultiply so transparent pixels do not bleed their (meaningless) color
        x[..., :3] *= x[..., 3:]
    x = x.reshape(h // k, k, w // k, k, x.shape[-1]).mean(axis=(1, 3))
    if x.shape[-1] == 4:
        x[..., :3] /= np.maximum(x[..., 3:], 1e-12)
    x = x[..., 0] if img.ndim == 2 else x
    if np.issubdtype(img.dtype, np.integer):
        return np.clip(np.round(x), 0, np.iinfo(img.dtype).max).astype(img.dtype)
    return x.astype(img.dtype)


def nearest_downscale(img: np.ndarray, k: int) -> np.ndarray:
    """The sample nearest each block's center (depth maps)."""
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    return img[k // 2:h:k, k // 2:w:k]


def _out_rel(base: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:  # the file lives outside the dataset folder: bring it in
        return f"images/{path.name}"


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
    done, sizes = {}, set()
    with staged_output(out, force, inputs=(base,)) as stage:
        def convert(path: Path, how) -> str:
            rel = _out_rel(base, path)
            if rel not in done:
                img = how(load_image(path), factor)
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                save_image(stage / rel, img)
                done[rel] = img.shape[1::-1]
            return rel

        for split, top in tops.items():
            new = {k: v for k, v in top.items() if k != "frames"}
            for key in INTRINSIC_KEYS:
                if key in new:
                    new[key] = float(new[key]) / factor
            for key in ("w", "h"):
                if key in new:
                    new[key] = int(new[key]) // factor
            for key in ("ply_file_path", "mesh_file_path"):
                if key in top and (base / top[key]).is_file() and not (stage / top[key]).exists():
                    (stage / top[key]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(base / top[key], stage / top[key])
            frames = []
            for i, frame in enumerate(top["frames"]):
                if not isinstance(frame, dict) or "file_path" not in frame:
                    raise UserError(f"{files[split].name}: frame {i} has no file_path")
                image = resolve_image(base, str(frame["file_path"]))
                if not image.is_file():
                    log(f"warning: {image} is missing; frame left out")
                    continue
                f = dict(frame, file_path=convert(image, box_downscale))
                sizes.add(done[f["file_path"]])
                for key in INTRINSIC_KEYS:
                    if key in f:
                        f[key] = float(f[key]) / factor
                for key in ("w", "h"):
                    if key in f:
                        f[key] = int(f[key]) // factor
                if "mask_path" in f:
                    f["mask_path"] = convert(base / f["mask_path"], box_downscale)
                if "depth_file_path" in f:
                    f["depth_file_path"] = convert(base / f["depth_file_path"], nearest_downscale)
                frames.append(f)
            write_json(stage / files[split].name, {**new, "frames": frames})
    log(f"downscaled {len(done)} images by {factor} to {', '.join(f'{w}x{h}' for w, h in sorted(sizes))} -> {out}")
    return {"n_files": len(done), "sizes": sorted(sizes)}
