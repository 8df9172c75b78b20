"""COLMAP model -> ``transforms.json`` (instant-ngp / nerfstudio layout, read by :mod:`rwf_render.datasets`).

What the conversion does, in order (images of the model missing in the images folder are skipped with one warning,
as nerfstudio's converter skips them; none there is an error):

1. intrinsics per camera: SIMPLE_PINHOLE and PINHOLE -> PINHOLE; SIMPLE_RADIAL, RADIAL and OPENCV -> OPENCV
   (k1, k2, p1, p2); OPENCV_FISHEYE -> OPENCV_FISHEYE. COLMAP's principal point is used as is (both put pixel
   centers at +0.5). Images whose size differs from the camera's by a uniform factor get scaled intrinsics.
2. poses: COLMAP world-to-camera (OpenCV) -> camera-to-world -> OpenGL (:func:`rwf_render.cameras.opencv_to_opengl`).
3. normalization (:func:`data_tools.common.normalize_scene`): mean camera up -> +Z, the bulk of the sparse points
   centered and scaled into [-1, 1]^3, ``aabb_scale`` chosen to hold 95 % of the points (cameras may lie outside). The
   similarity is saved as ``input_to_world`` (4x4, x_out = S @ x_colmap).
4. sparse points, moved the same way, saved as ``sparse_pc.ply`` (``ply_file_path``).
5. optionally (``--bounds``), each frame's ``near``/``far`` from the distances to the points it observes, as LLFF
   writes them: rays then start just before the nearest point, so a field cannot hide a training view's colours on
   a screen close to its own camera (measured on the bartoszek capture in BENCHMARKS.md).
6. optionally (``--depth``), a sparse depth map per frame (nerfstudio's "sfm depth" layout,
   :func:`observation_depths`): ``depth/<image name>.png``, 16-bit, 0 where there is no depth, else the z-depth
   along the optical axis (output units) of the points the image observes, at the pixels of its keypoints;
   ``depth_unit_scale_factor`` (top level) = output units per depth value.

The report includes the reprojection error of the converted cameras against COLMAP's own, both in the pixels of the
COLMAP cameras (where the images were rescaled, ours in the rescaled images' pixels as well).
"""

from __future__ import annotations

import itertools
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras, fov_from_focal, opencv_to_opengl, project
from rwf_render.datasets import image_size
from rwf_render.errors import RwfWarning, UserError
from rwf_render.rundir import write_json

from .colmap_io import Image, Model, read_model
from .common import (apply_similarity_to_poses, check_readable, normalize_scene, save_image, staged_output,
                     write_ply)

SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE")


def camera_intrinsics(model: str, params, width: int, height: int) -> dict:
    """transforms.json intrinsics (fl_x, fl_y, cx, cy, w, h, camera_model, k1, k2, [k3, k4,] p1, p2) of a COLMAP camera."""
    p = [float(v) for v in params]
    out = {"w": int(width), "h": int(height)}
    if model == "SIMPLE_PINHOLE":
        out.update(fl_x=p[0], fl_y=p[0], cx=p[1], cy=p[2], camera_model="PINHOLE")
    elif model == "PINHOLE":
        out.update(fl_x=p[0], fl_y=p[1], cx=p[2], cy=p[3], camera_model="PINHOLE")
    elif model == "SIMPLE_RADIAL":
        out.update(fl_x=p[0], fl_y=p[0], cx=p[1], cy=p[2], k1=p[3], k2=0.0, p1=0.0, p2=0.0, camera_model="OPENCV")
    elif model == "RADIAL":
        out.update(fl_x=p[0], fl_y=p[0], cx=p[1], cy=p[2], k1=p[3], k2=p[4], p1=0.0, p2=0.0, camera_model="OPENCV")
    elif model == "OPENCV":
        out.update(fl_x=p[0], fl_y=p[1], cx=p[2], cy=p[3], k1=p[4], k2=p[5], p1=p[6], p2=p[7], camera_model="OPENCV")
    elif model == "OPENCV_FISHEYE":
        out.update(fl_x=p[0], fl_y=p[1], cx=p[2], cy=p[3], k1=p[4], k2=p[5], k3=p[6], k4=p[7],
                   camera_model="OPENCV_FISHEYE")
    else:
        raise UserError(f"COLMAP camera model {model} is not supported (supported: {', '.join(SUPPORTED)}); "
                        "undistort the images first (colmap image_undistorter) and convert that model")
    return out


def _scale_intrinsics(intr: dict, w: int, h: int) -> dict:
    sx, sy = w / intr["w"], h / intr["h"]
    out = dict(intr, w=w, h=h)
    out.update(fl_x=intr["fl_x"] * sx, fl_y=intr["fl_y"] * sy, cx=intr["cx"] * sx, cy=intr["cy"] * sy)
    return out


def cameras_from_frames(frames: list[dict], top: dict) -> Cameras:
    """:class:`Cameras` (float64) of frames written by :func:`convert_model` (per-frame keys override ``top``)."""
    get = [lambda k, f=f: f.get(k, top.get(k, 0.0)) for f in frames]
    return Cameras.create(torch.tensor(np.array([f["transform_matrix"] for f in frames]), dtype=torch.float64),
                          fx=[g("fl_x") for g in get], fy=[g("fl_y") for g in get], cx=[g("cx") for g in get],
                          cy=[g("cy") for g in get], width=[g("w") for g in get], height=[g("h") for g in get],
                          model=[g("camera_model") for g in get],
                          dist=np.array([[g(k) for k in ("k1", "k2", "k3", "k4", "p1", "p2")] for g in get]))


def _point_rows(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """The model's point3D ids sorted, and the row of ``model.xyz`` of each: the lookup of :func:`_observed`."""
    ids = np.asarray(model.point_ids, dtype=np.int64).reshape(-1)
    order = np.argsort(ids, kind="stable")
    return ids[order], order


def _observed(im: Image, rows: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(K,) mask of an image's observations of points present in points3D (untriangulated ids are -1, a pruned
    model's may be absent) and the (K_ok,) rows of those points in ``model.xyz``."""
    ids, order = rows
    pids = np.asarray(im.point3D_ids, dtype=np.int64).reshape(-1)
    pos = np.minimum(np.searchsorted(ids, pids), max(len(ids) - 1, 0))
    ok = ids[pos] == pids if len(ids) else np.zeros(len(pids), dtype=bool)
    return ok, order[pos[ok]].astype(np.int64)


def reprojection_errors(model: Model, cams: Cameras, image_ids: list[int], S: np.ndarray,
                        pixels: str = "output") -> np.ndarray:
    """Pixel distance between each observation and the projection of its (moved) 3D point by ``cams``.

    Args:
        cams: one camera per entry of ``image_ids``, in the output frame. S: (4, 4) COLMAP -> output similarity.
        pixels: "output": pixels of the converted images (COLMAP's keypoints scaled to the output image size);
            "colmap": pixels of the COLMAP cameras, the units of COLMAP's keypoints and of its own errors. They
            differ where the images were rescaled (an image half the camera's size: "output" errors are halved).
    Returns:
        (n_obs,) errors in pixels, in the units ``pixels`` names.
    """
    if pixels not in ("output", "colmap"):
        raise ValueError(f"pixels must be 'output' or 'colmap', got {pixels!r}")
    residuals, scales = _reprojection_residuals(model, cams, image_ids, S)
    return np.linalg.norm(residuals / scales if pixels == "colmap" else residuals, axis=1)


def _reprojection_residuals(model: Model, cams: Cameras, image_ids: list[int], S: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(n_obs, 2) projection minus scaled keypoint, in output pixels, and (n_obs, 2) the (x, y) factor from the
    COLMAP camera's pixels to the output image's of each observation (:func:`reprojection_errors`)."""
    rows = _point_rows(model)
    xyz = torch.from_numpy(model.xyz @ S[:3, :3].T + S[:3, 3])
    residuals, scales = [np.zeros((0, 2))], [np.ones((0, 2))]
    for c, iid in enumerate(image_ids):
        im = model.images[iid]
        ok, seen = _observed(im, rows)  # points absent from points3D (a pruned model) count as untriangulated
        if not ok.any():
            continue
        pix, _ = project(xyz[torch.from_numpy(seen)], cams[c])
        cam = model.cameras[im.camera_id]
        scale = np.array([cams.width[c].item() / cam.width, cams.height[c].item() / cam.height])
        residuals.append(pix[0].numpy() - im.xys[ok] * scale)  # (K_ok, 2)
        scales.append(np.broadcast_to(scale, (int(ok.sum()), 2)))
    return np.concatenate(residuals), np.concatenate(scales)


def _observation_mean(model: Model) -> float:
    """COLMAP's mean reprojection error over all observations (each point's error weighted by its track length)."""
    if not len(model.errors):
        return float("nan")
    weights = np.array([len(t) for t in model.tracks], dtype=np.float64)
    return float((model.errors * weights).sum() / max(weights.sum(), 1))


MIN_BOUND_POINTS = 8  # observed points a frame needs for its near/far bounds


def frame_bounds(model: Model, ids: list, c2w: np.ndarray, xyz: np.ndarray) -> np.ndarray | None:
    """(N, 2) near/far per image: 0.9 x the 0.1th and 1.1 x the 99.9th percentile of the distances from the camera
    to the 3D points that image observes (LLFF's rule, with margins; distances along unit rays, as the marcher's
    t). ``c2w`` and ``xyz`` in the output frame. None when some image observes fewer than MIN_BOUND_POINTS points."""
    rows = _point_rows(model)
    out = []
    for k, i in enumerate(ids):
        _, seen = _observed(model.images[i], rows)
        if len(seen) < MIN_BOUND_POINTS:
            return None
        dist = np.linalg.norm(xyz[seen] - c2w[k, :3, 3], axis=1)
        out.append((0.9 * np.percentile(dist, 0.1), 1.1 * np.percentile(dist, 99.9)))
    return np.array(out)


def observation_depths(model: Model, ids: list, c2w: np.ndarray, xyz: np.ndarray,
                       sizes: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, the pixels of its observations of triangulated points and those points' z-depths.

    Args:
        ids: N image ids. c2w: (N, 4, 4) OpenGL camera-to-world and xyz: (M, 3) points (rows as
            ``model.point_ids``), both in the output frame. sizes: N (w, h), the actual image sizes.
    Returns:
        N pairs (pix, z): pix (K, 2) int64 (column, row) = floor of the keypoint (pixel centers at +0.5) scaled
        from the COLMAP camera's size to (w, h); z (K,) = dot(X - camera center, forward), forward =
        -c2w[:3, 2]. Observations outside the image or with z <= 0 are left out; several may share a pixel.
    """
    rows = _point_rows(model)
    out = []
    for k, i in enumerate(ids):
        im, (w, h) = model.images[i], sizes[k]
        cam = model.cameras[im.camera_id]
        ok, seen = _observed(im, rows)
        z = (xyz[seen] - c2w[k, :3, 3]) @ -c2w[k, :3, 2]
        pix = np.floor(np.asarray(im.xys, dtype=np.float64).reshape(-1, 2)[ok] * [w / cam.width, h / cam.height])
        keep = (z > 0) & (pix >= 0).all(1) & (pix < [w, h]).all(1)
        out.append((pix[keep].astype(np.int64), z[keep]))
    return out


def depth_map(pix: np.ndarray, z: np.ndarray, w: int, h: int, unit: float) -> np.ndarray:
    """(h, w) uint16 sparse depth map: round(z / unit) at ``pix`` (K, 2) (column, row), the smallest z where
    several fall on one pixel, at least 1 (0 means "no depth"); 0 elsewhere."""
    near = np.full((h, w), np.inf)
    np.minimum.at(near, (pix[:, 1], pix[:, 0]), z)
    hit = np.isfinite(near)
    out = np.zeros((h, w), dtype=np.uint16)
    out[hit] = np.clip(np.round(near[hit] / unit), 1, 65535)
    return out


def depth_path(name: str) -> str:
    """Relative path of an image's depth map: depth/<name with its suffix replaced by .png>."""
    return (Path("depth") / name).with_suffix(".png").as_posix()


def _write_depth_map(stage: Path, name: str, pix: np.ndarray, z: np.ndarray, intr: dict, unit: float
                     ) -> tuple[str, int]:
    """Write the :func:`depth_map` of one image (size ``intr["w"]`` x ``intr["h"]``) into ``stage``; returns its
    relative path and how many of its pixels have a depth."""
    rel = depth_path(name)
    dmap = depth_map(pix, z, intr["w"], intr["h"], unit)
    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
    save_image(stage / rel, dmap)
    return rel, int(np.count_nonzero(dmap))


def _check_names(names: list[str], sparse_dir, copy_images: bool, depth: bool) -> None:
    """UserError for image names that appear twice, that would be written outside OUT (copied images, depth
    maps), or whose depth maps would share a file (``a.jpg`` and ``a.png``)."""
    twice = sorted({a for a, b in itertools.pairwise(names) if a == b})
    if twice:
        raise UserError(f"{sparse_dir}: {len(twice)} image name(s) appear more than once in the model (first: "
                        f"{twice[0]})")
    outside = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts]
    if outside and (copy_images or depth):  # a copied image or a depth map must stay inside OUT
        raise UserError(f"{sparse_dir}: image name {outside[0]!r} points outside the images folder; convert with "
                        f"--no-copy{' and without --depth' if depth else ''} to refer to the images where they are")
    paths = sorted(depth_path(n) for n in names) if depth else []
    clash = next((a for a, b in itertools.pairwise(paths) if a == b), None)
    if clash:
        raise UserError(f"{sparse_dir}: two images (names differing only in their suffix) would share the depth map "
                        f"{clash}; convert without --depth")


def convert_model(sparse_dir: str | Path, images_dir: str | Path, out: str | Path, force: bool = False,
                  copy_images: bool = True, orient: bool = True, attach: dict | None = None, log=print,
                  bounds: bool = False, depth: bool = False, source: str | None = None) -> dict:
    """Convert a COLMAP model to OUT/transforms.json (+ OUT/images/, OUT/sparse_pc.ply).

    Args:
        sparse_dir: folder with cameras/images/points3D (.bin or .txt).
        images_dir: folder holding the model's images (names as in the model, sub-folders allowed).
        copy_images: copy the images into OUT/images; otherwise frames point to ``images_dir`` by relative path.
        orient: rotate the mean camera up vector to +Z.
        attach: {relative path in OUT: file or folder} copied into OUT as well (e.g. the COLMAP model).
        source: transforms.json's ``source`` (default ``colmap:<sparse_dir>``; ``rwf data photos`` names its
            photos or video, as its model is made in a temporary folder and kept in OUT/colmap/sparse/0).
        bounds: write each frame's ``near``/``far`` from the points it observes (:func:`frame_bounds`).
        depth: write each frame's sparse depth map (``depth_file_path``, :func:`observation_depths`) and the
            top-level ``depth_unit_scale_factor``.
    Returns:
        the report numbers: n_images, n_points, aabb_scale, scale; reprojection errors (mean over observations,
        pixels): ``reproj_error`` (ours, in the pixels of the converted images), ``reproj_error_colmap_px`` (ours,
        in the pixels of the COLMAP cameras: differs from the former where images were rescaled) and
        ``colmap_reproj_error`` (COLMAP's own, in the units it stored, normally its cameras' pixels); with
        ``depth`` also depth_pixels (pixels with a depth, per image), depth_unit and depth_max_z.
    """
    model = read_model(sparse_dir)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: no such images folder")
    if not model.images:
        raise UserError(f"{sparse_dir}: the model has no registered images")
    if (bounds or depth) and len(model.xyz) == 0:  # it wrote no bounds and all-zero depth maps, and exited 0
        options = " and ".join(o for o, on in (("--bounds", bounds), ("--depth", depth)) if on)
        raise UserError(f"{sparse_dir}: the model has no 3D points (points3D is empty), which {options} come from; "
                        "convert without them")
    ids = sorted(model.images, key=lambda i: model.images[i].name)
    _check_names([model.images[i].name for i in ids], sparse_dir, copy_images, depth)
    missing = [model.images[i].name for i in ids if not (images_dir / model.images[i].name).is_file()]
    if len(missing) == len(ids):
        raise UserError(f"{images_dir}: none of the {len(ids)} images of the model is there (first: {missing[0]})")
    if missing:  # skipped, as nerfstudio's converter and the transforms.json loader skip them
        warnings.warn(f"skipped {len(missing)} of the model's {len(ids)} images, missing in {images_dir} (first: "
                      f"{missing[0]})", RwfWarning, stacklevel=2)
        gone = set(missing)
        ids = [i for i in ids if model.images[i].name not in gone]
    check_readable([images_dir / model.images[i].name for i in ids], images_dir)
    dangling = sum(int((np.asarray(model.images[i].point3D_ids) >= 0).sum()
                       - np.isin(model.images[i].point3D_ids, model.point_ids).sum()) for i in ids)
    if dangling:
        warnings.warn(f"{dangling} observation(s) refer to 3D points absent from points3D; counted as untriangulated",
                      RwfWarning, stacklevel=2)
    # 1. intrinsics, checked against the actual image sizes
    intrinsics, rescaled = [], 0
    for i in ids:
        im = model.images[i]
        cam = model.cameras[im.camera_id]
        intr = camera_intrinsics(cam.model, cam.params, cam.width, cam.height)
        w, h = image_size(images_dir / im.name)
        if (w, h) != (cam.width, cam.height):
            if abs(w / cam.width * cam.height - h) > 1.0:
                raise UserError(f"{im.name}: image is {w}x{h} but its COLMAP camera is {cam.width}x{cam.height} "
                                "(not a uniform scale)")
            intr, rescaled = _scale_intrinsics(intr, w, h), rescaled + 1
        intrinsics.append(intr)
    # 2. poses: w2c (OpenCV) -> c2w (OpenGL)
    c2w = np.stack([opencv_to_opengl(np.linalg.inv(model.images[i].world_to_camera())) for i in ids])
    # 3. normalization
    S, aabb_scale, stats = normalize_scene(c2w, model.xyz, orient=orient)
    c2w = apply_similarity_to_poses(S, c2w)
    xyz = model.xyz @ S[:3, :3].T + S[:3, 3]
    # 5. per-frame near/far
    near_far = frame_bounds(model, ids, c2w, xyz) if bounds else None
    if bounds and near_far is None:
        warnings.warn(f"some image observes fewer than {MIN_BOUND_POINTS} points; no per-frame near/far written",
                      RwfWarning, stacklevel=2)
    # 6. sparse depth: one unit for the whole dataset, the farthest observed point (+5 %) at 65535
    obs = observation_depths(model, ids, c2w, xyz, [(d["w"], d["h"]) for d in intrinsics]) if depth else None
    z_max = max((float(z.max()) for _, z in obs or [] if len(z)), default=0.0)
    unit = z_max * 1.05 / 65535 if z_max > 0 else 1e-3  # no depth at all: nerfstudio's default unit
    shared = all(d == intrinsics[0] for d in intrinsics)
    top = {**(intrinsics[0] if shared else {}), "aabb_scale": aabb_scale, "ply_file_path": "sparse_pc.ply",
           "input_to_world": S.tolist(), "source": source or f"colmap:{Path(sparse_dir).resolve()}",
           **({"depth_unit_scale_factor": unit} if depth else {})}
    depth_pixels = []
    with staged_output(out, force, inputs=(sparse_dir, images_dir)) as stage:
        frames = []
        for k, i in enumerate(ids):
            name = model.images[i].name
            if copy_images:
                dst = stage / "images" / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(images_dir / name, dst)
                file_path = f"images/{name}"
            else:
                file_path = Path(shutil.os.path.relpath(images_dir.resolve() / name, Path(out).resolve())).as_posix()
            frame = {"file_path": file_path, "transform_matrix": c2w[k].tolist(), "colmap_im_id": int(i)}
            if near_far is not None:
                frame.update(near=float(near_far[k, 0]), far=float(near_far[k, 1]))
            if obs is not None:
                frame["depth_file_path"], n = _write_depth_map(stage, name, *obs[k], intrinsics[k], unit)
                depth_pixels.append(n)
            frames.append(frame if shared else {**frame, **intrinsics[k]})
        write_ply(stage / "sparse_pc.ply", xyz, model.rgb)
        for rel, src in (attach or {}).items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, stage / rel)
        # reprojection error in the converted images' pixels, and in the COLMAP cameras' (those of its own errors)
        residuals, scales = _reprojection_residuals(model, cameras_from_frames(frames, top), ids, S)
        errs, errs_colmap = np.linalg.norm(residuals, axis=1), np.linalg.norm(residuals / scales, axis=1)
        write_json(stage / "transforms.json", {**top, "frames": frames})
        used = {model.images[i].camera_id for i in ids}  # the cameras of the converted images (skipped ones' not)
        report = {"n_images": len(ids), "n_cameras": len(used), "n_points": len(model.xyz),
                  "observations": len(errs),
                  "rescaled_images": rescaled, "reproj_error": float(errs.mean()) if len(errs) else float("nan"),
                  "reproj_error_colmap_px": float(errs_colmap.mean()) if len(errs) else float("nan"),
                  "colmap_reproj_error": _observation_mean(model),
                  **stats}
        if depth:
            report.update(depth_pixels=depth_pixels, depth_unit=unit, depth_max_z=z_max)
    models = sorted({model.cameras[model.images[i].camera_id].model for i in ids})
    fovs = [np.degrees(fov_from_focal(d["fl_x"], d["w"])) for d in intrinsics]
    log(f"converted {len(ids)} images, {report['n_cameras']} camera(s) ({', '.join(models)}; horizontal fov "
        f"{min(fovs):.1f}-{max(fovs):.1f} deg), {len(model.xyz)} points"
        + (f"; {rescaled} image(s) had a different size: intrinsics scaled" if rescaled else ""))
    held = f", {100 * stats['points_in_box']:.1f}% of points" if len(model.xyz) else ""
    log(f"scene: scale {stats['scale']:.4g}, aabb_scale {aabb_scale} (box holds {stats['cameras_in_box']}/{len(ids)} "
        f"cameras{held}); camera distance to center "
        f"{stats['camera_distance'][0]:.2f}-{stats['camera_distance'][1]:.2f}")
    if near_far is not None:  # said as llff says its bounds (--bounds printed nothing of them)
        log(f"near/far bounds per frame: near {near_far[:, 0].min():.3g}-{near_far[:, 0].max():.3g}, far "
            f"{near_far[:, 1].min():.3g}-{near_far[:, 1].max():.3g} (from the points each image observes)")
    if depth:
        log(f"depth maps: {min(depth_pixels)}/{int(np.median(depth_pixels))}/{max(depth_pixels)} pixels per image "
            f"(min/median/max), farthest z {z_max:.4g}, unit {unit:.4g} -> {Path(out) / 'depth'}")
    # ours in the pixels of COLMAP's own figure; where images were rescaled, in theirs as well
    resized = (f" in the COLMAP cameras' pixels, {report['reproj_error']:.3f} px in the rescaled images'"
               if rescaled else "")
    # COLMAP's figure is what it stored with its points at its last bundle adjustment (an undistorted model keeps
    # the distorted one's), so the two differ where the model was edited since; both average every observation
    if not report["observations"]:  # no triangulated point: nothing to measure the cameras by
        log(f"reprojection error: none (no observation of a 3D point) -> {Path(out) / 'transforms.json'}")
        return report
    log(f"reprojection error of the converted cameras: {report['reproj_error_colmap_px']:.3f} px{resized} "
        f"(COLMAP's, as stored with its points: {report['colmap_reproj_error']:.3f} px, in the pixels of the images "
        "its last bundle adjustment saw, which an undistorted or resized model keeps) -> "
        f"{Path(out) / 'transforms.json'}; means over {report['observations']} observations")
    return report
