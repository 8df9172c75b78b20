"""LLFF ``poses_bounds.npy`` <-> transforms.json.

``poses_bounds.npy`` is (N, 17): a 3x5 matrix per image, flattened row by row, then (near, far). The 3x5 matrix is
``[R | t | hwf]`` where R's columns are the camera's (down, right, backward) axes in the world, t its center, and
hwf = (height, width, focal) in pixels. In OpenGL axes (right, up, backward) that is ``[c1, -c0, c2]``.
Images are the files of DIR/images (or another sub-folder), sorted by name, one per row.
"""

from __future__ import annotations

import math
import shutil
import zipfile
from pathlib import Path

import numpy as np

from rwf_render.datasets import image_size
from rwf_render.errors import UserError
from rwf_render.rundir import write_json

from .common import apply_similarity_to_poses, check_readable, list_images, normalize_scene, staged_output


def read_poses_bounds(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns c2w (N, 4, 4) OpenGL, hwf (N, 3), bounds (N, 2) near/far."""
    path = Path(path)
    try:  # memory-mapped first: a corrupt header claiming more rows than the file holds fails instead of allocating
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        arr = np.array(arr) if isinstance(arr, np.ndarray) else arr
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # EOFError: an empty file
        raise UserError(f"{path}: not a .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):  # np.load opens a zip (.npz) whatever the file is called
        arr.close()
        raise UserError(f"{path}: an .npz archive, not a .npy array")
    if arr.dtype.kind not in "fiu":
        raise UserError(f"{path}: expected a real-valued (N, 17) array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0:
        raise UserError(f"{path}: expected a finite (N, 17) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():  # the shape was right: say what is wrong (a fuzzing hunt)
        row, col = (int(v) for v in np.argwhere(~np.isfinite(arr))[0])
        raise UserError(f"{path}: row {row} holds a non-finite value ({arr[row, col]}) at column {col}; expected "
                        "finite numbers")
    m = arr[:, :15].reshape(-1, 3, 5).astype(np.float64)
    c2w = np.tile(np.eye(4), (len(arr), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = m[:, :, 1], -m[:, :, 0], m[:, :, 2], m[:, :, 3]
    if (np.abs(np.linalg.det(c2w[:, :3, :3])) < 1e-6).any():
        raise UserError(f"{path}: some poses have a singular rotation")
    R = c2w[:, :3, :3]
    ortho = np.abs(R.transpose(0, 2, 1) @ R - np.eye(3)).max(axis=(1, 2))
    if (ortho > 1e-3).any() or (np.linalg.det(R) < 0).any():
        k = int(np.argmax((ortho > 1e-3) | (np.linalg.det(R) < 0)))
        raise UserError(f"{path}: row {k} is not a rotation (max |R^T R - I| = {ortho[k]:.3g}, det "
                        f"{np.linalg.det(R[k]):.3g})")
    hwf, bounds = m[:, :, 4], arr[:, 15:17].astype(np.float64)
    bad = (hwf <= 0).any(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise UserError(f"{path}: row {k} has height, width, focal {hwf[k].tolist()}; all must be positive")
    bad = ~((bounds[:, 0] > 0) & (bounds[:, 1] > bounds[:, 0]))
    if bad.any():
        k = int(np.argmax(bad))
        raise UserError(f"{path}: row {k} has near, far {bounds[k].tolist()}; expected 0 < near < far")
    return c2w, hwf, bounds


def write_poses_bounds(path: str | Path, c2w: np.ndarray, hwf: np.ndarray, bounds: np.ndarray) -> None:
    """Inverse of :func:`read_poses_bounds`: c2w (N, 3|4, 4) OpenGL, hwf (N, 3) or (3,), bounds (N, 2)."""
    c2w = np.asarray(c2w, np.float64)
    n = len(c2w)
    m = np.zeros((n, 3, 5))
    m[:, :, 0], m[:, :, 1], m[:, :, 2], m[:, :, 3] = -c2w[:, :3, 1], c2w[:, :3, 0], c2w[:, :3, 2], c2w[:, :3, 3]
    m[:, :, 4] = np.broadcast_to(hwf, (n, 3))
    np.save(path, np.concatenate([m.reshape(n, 15), np.broadcast_to(bounds, (n, 2))], 1))


def convert_llff(src: str | Path, out: str | Path, images: str = "images", force: bool = False,
                 copy_images: bool = True, orient: bool = True, log=print) -> dict:
    """DIR/poses_bounds.npy + DIR/<images>/ -> OUT/transforms.json (+ OUT/images/).

    The scene is normalized like a COLMAP conversion (:func:`data_tools.common.normalize_scene`) using the
    points at the near bound and at sqrt(near * far) on each optical axis; near/far are kept per frame, scaled, as
    distances along the rays (LLFF's are depths: the far bound grows to where the image's corner ray reaches it).
    Images whose size differs from (W, H) by a uniform factor (LLFF's images_4 etc.) get the focal scaled.
    """
    src = Path(src)
    c2w, hwf, bounds = read_poses_bounds(src / "poses_bounds.npy")
    files = list_images(src / images)
    if len(files) != len(c2w):
        raise UserError(f"{src / images}: {len(files)} images but poses_bounds.npy has {len(c2w)} rows")
    check_readable(files, src / images)
    fwd = -c2w[:, :3, 2]
    mids = np.sqrt(np.clip(bounds[:, 0] * bounds[:, 1], 1e-12, None))
    pts = np.concatenate([c2w[:, :3, 3] + fwd * bounds[:, :1], c2w[:, :3, 3] + fwd * mids[:, None]])
    S, aabb_scale, stats = normalize_scene(c2w, pts, orient=orient)
    s = stats["scale"]
    c2w = apply_similarity_to_poses(S, c2w)
    frames, sizes = [], set()
    for k, f in enumerate(files):
        w, h = image_size(f)
        H, W, focal = hwf[k]
        if abs(w / W * H - h) > 1.0:
            raise UserError(f"{f}: image is {w}x{h}, not a scaled copy of the {W:.0f}x{H:.0f} in poses_bounds.npy")
        fl = focal * w / W
        sizes.add((w, h))
        # LLFF's bounds are depths along the optical axis; the loader reads near/far as distances along each ray,
        # so a corner ray reaches the far depth at far / cos(its angle): the far bound is the corner's
        corner = math.sqrt(1.0 + ((w / 2) ** 2 + (h / 2) ** 2) / fl ** 2)
        frames.append({"file_path": f"images/{f.name}", "transform_matrix": c2w[k].tolist(), "fl_x": fl,
                       "fl_y": fl, "cx": w / 2, "cy": h / 2, "w": w, "h": h,
                       "near": float(bounds[k, 0] * s), "far": float(bounds[k, 1] * s * corner)})
    with staged_output(out, force, inputs=(src, src / images)) as stage:  # --images may lie outside DIR
        if copy_images:
            (stage / "images").mkdir()
            for f in files:
                shutil.copy2(f, stage / "images" / f.name)
        else:
            for fr, f in zip(frames, files):
                fr["file_path"] = Path(shutil.os.path.relpath(f.resolve(), Path(out).resolve())).as_posix()
        write_json(stage / "transforms.json", {"camera_model": "PINHOLE", "aabb_scale": aabb_scale,
                                               "input_to_world": S.tolist(), "source": f"llff:{src.resolve()}",
                                               "frames": frames})
    log(f"converted {len(frames)} LLFF poses (image size {', '.join(f'{w}x{h}' for w, h in sorted(sizes))}); "
        f"scene scale {s:.4g}, aabb_scale {aabb_scale}; near/far {bounds[:, 0].min() * s:.3g}/"
        f"{bounds[:, 1].max() * s:.3g} -> {Path(out) / 'transforms.json'}")
    return {"n_images": len(frames), "aabb_scale": aabb_scale, **stats}
