"""Photos or a video -> structure from motion (pycolmap) -> transforms.json.

Steps: (video: frames at --fps) -> SIFT features -> exhaustive or sequential matching -> incremental mapping ->
the largest reconstruction -> :func:`data_tools.colmap.convert_model`. The COLMAP model is kept in
OUT/colmap/sparse/0. pycolmap is optional: without it the command stops with one line saying how to install it.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from rwf_render.datasets import image_size
from rwf_render.errors import UserError

from .colmap import convert_model
from .common import IMAGE_EXTS, check_output, check_readable, list_images, save_image


def import_pycolmap():
    try:
        import pycolmap  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise UserError("structure from motion needs pycolmap, which is not installed: pip install pycolmap") \
            from None
    return pycolmap


def extract_frames(video: str | Path, out_dir: str | Path, fps: float, max_size: int | None = None) -> list[Path]:
    """Write frames of ``video`` sampled at ``fps`` (at most the video's own rate) as PNGs; returns their paths."""
    import imageio.v3 as iio  # noqa: PLC0415

    video, out_dir = Path(video), Path(out_dir)
    if not video.is_file():
        raise UserError(f"{video}: video file not found")
    try:
        meta = iio.immeta(video, plugin="FFMPEG")
        frames = iio.imiter(video, plugin="FFMPEG")
    except ImportError:
        raise UserError("reading videos needs imageio-ffmpeg: pip install imageio-ffmpeg") from None
    except Exception as e:  # noqa: BLE001  (ffmpeg's errors for bad files vary)
        raise UserError(f"{video}: cannot read the video ({type(e).__name__}: {_first_line(e)})") from None
    src_fps = float(meta.get("fps") or 0) or fps
    step = max(src_fps / fps, 1.0)
    paths, next_t = [], 0.0
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for i, frame in enumerate(frames):
            if i + 1e-9 < next_t:
                continue
            next_t += step
            img = np.asarray(frame)[..., :3]
            if max_size and max(img.shape[:2]) > max_size:
                from PIL import Image  # noqa: PLC0415

                s = max_size / max(img.shape[:2])
                img = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s)),
                                                             Image.LANCZOS))
            paths.append(out_dir / f"frame_{len(paths):05d}.png")
            save_image(paths[-1], img)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{video}: failed while decoding frames ({type(e).__name__}: {_first_line(e)})") from None
    if not paths:
        raise UserError(f"{video}: no frames could be read")
    return paths


def _first_line(e: Exception) -> str:
    """The first non-empty line of an error message (ffmpeg appends its whole log to some)."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), "")


def run_sfm(images_dir: Path, work: Path, matching: str = "exhaustive", camera_model: str = "SIMPLE_RADIAL",
            single_camera: bool = True, max_image_size: int = 1600, max_features: int = 8192,
            seed: int = 0, log=print, image_names: list[str] | None = None):
    """Features, matching and incremental mapping with pycolmap. Returns (reconstruction, timings dict).

    ``image_names``: the files (relative to ``images_dir``) to use; None for every image COLMAP finds, which
    includes those in sub-folders (it lists ``images_dir`` recursively).
    """
    pycolmap = import_pycolmap()
    pycolmap.logging.minloglevel = 2  # COLMAP's own progress lines (INFO, WARNING) off; errors stay
    pycolmap.set_random_seed(seed)
    threads = os.cpu_count() or 1
    db = work / "database.db"
    times = {}
    t = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size, extraction.num_threads = max_image_size, threads
    extraction.sift.max_num_features = max_features
    mode = pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.PER_IMAGE
    pycolmap.extract_features(db, images_dir, image_names=list(image_names or []), camera_mode=mode,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
    times["features"] = time.perf_counter() - t
    t = time.perf_counter()
    match_opts = pycolmap.FeatureMatchingOptions()
    match_opts.num_threads = threads
    if matching == "sequential":
        pycolmap.match_sequential(db, matching_options=match_opts, device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(db, matching_options=match_opts, device=pycolmap.Device.cpu)
    times["matching"] = time.perf_counter() - t
    t = time.perf_counter()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads, opts.random_seed = threads, seed
    (work / "sparse").mkdir(exist_ok=True)
    recs = pycolmap.incremental_mapping(db, images_dir, work / "sparse", options=opts)
    times["mapping"] = time.perf_counter() - t
    if not recs:
        return None, times
    return max(recs.values(), key=lambda r: r.num_reg_images()), times


def _subfolders_with_images(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder`` that hold image files at any depth."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir()
                  and any(p.suffix.lower() in IMAGE_EXTS and p.is_file() for p in d.rglob("*")))


def photos_to_dataset(out: str | Path, images_dir: str | Path | None = None, video: str | Path | None = None,
                      fps: float = 2.0, matching: str | None = None, camera_model: str = "SIMPLE_RADIAL",
                      single_camera: bool = True, max_image_size: int = 1600, min_registered: float = 0.5,
                      force: bool = False, seed: int = 0, bounds: bool = False, depth: bool = False,
                      log=print) -> dict:
    """Structure from motion on a folder of photos (or frames of a video), then convert to OUT/transforms.json.

    Args:
        matching: "exhaustive" or "sequential" (default: sequential for a video, exhaustive for photos).
        camera_model: COLMAP model to estimate (SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV).
        min_registered: fail unless this fraction of the images (and at least 3) is registered.
        bounds, depth: per-frame near/far and sparse depth maps from the points (:func:`convert_model`).
    Returns:
        numbers: registered, total, reproj_error (px), points, seconds (total and per step), and the converter's.
    """
    if (images_dir is None) == (video is None):
        raise UserError("give either a folder of photos or --video FILE")
    matching = matching or ("sequential" if video is not None else "exhaustive")
    if matching not in ("exhaustive", "sequential"):
        raise UserError(f"matching must be exhaustive or sequential, got {matching!r}")
    if not 0 <= min_registered <= 1:
        raise UserError(f"--min-registered must be a fraction in [0, 1], got {min_registered}")
    if not (isinstance(seed, int) and 0 <= seed < 2**32):  # COLMAP's seed is an unsigned 32-bit integer
        raise UserError(f"seed must be an integer in 0..2^32-1, got {seed!r}")
    check_output(out, force, inputs=tuple(p for p in (images_dir, video) if p is not None))
    if images_dir is not None:  # fails early on an empty or missing folder, or images rwf fit cannot read
        check_readable(list_images(images_dir), images_dir)
    import_pycolmap()
    t0 = time.perf_counter()
    origin = f"{'video' if video is not None else 'photos'}:{Path(video or images_dir).resolve()}"
    with tempfile.TemporaryDirectory(prefix="rwf-sfm-") as tmp:
        work = Path(tmp)
        if video is not None:
            images_dir = work / "images"
            paths = extract_frames(video, images_dir, fps, max_image_size)
            log(f"extracted {len(paths)} frames from {video} at {fps:g} fps")
        images_dir = Path(images_dir)
        files = list_images(images_dir)  # the images directly in the folder: the ones counted and given to COLMAP
        total = len(files)
        if skipped := _subfolders_with_images(images_dir):
            log(f"{images_dir}: ignoring the images in {len(skipped)} sub-folder(s) ({', '.join(skipped[:3])}"
                f"{', ...' if len(skipped) > 3 else ''}); only the {total} directly in the folder are used")
        if total < 3:  # registering needs at least 3 (min_registered below): no point running SfM
            raise UserError(f"{images_dir if video is None else video}: {total} image(s); structure from motion "
                            "needs at least 3 overlapping views")
        sizes = {image_size(f) for f in files}
        if single_camera and len(sizes) > 1:  # COLMAP would skip every image of another size
            log(f"the images have {len(sizes)} different sizes: estimating one camera per image")
            single_camera = False
        log(f"structure from motion on {total} images ({matching} matching, {camera_model}, "
            f"{'one camera' if single_camera else 'a camera per image'}) ...")
        rec, times = run_sfm(images_dir, work, matching, camera_model, single_camera, max_image_size, seed=seed,
                             log=log, image_names=[f.name for f in files])
        registered = rec.num_reg_images() if rec is not None else 0
        need = max(3, math.ceil(min_registered * total))
        if registered < need:
            hint = ", or try --matching exhaustive" if matching == "sequential" else ""
            raise UserError(f"only {registered} of {total} images registered (need {need}); the photos need more "
                            f"overlap and texture{hint}")
        err = rec.compute_mean_reprojection_error()
        sfm_seconds = time.perf_counter() - t0
        log(f"registered {registered}/{total} images, {rec.num_points3D()} points, mean reprojection error "
            f"{err:.3f} px per point (each point's mean over its observations); SfM took {sfm_seconds:.1f} s (features "
            f"{times['features']:.1f} s, matching {times['matching']:.1f} s, mapping {times['mapping']:.1f} s)")
        model_dir = work / "model"
        model_dir.mkdir()
        rec.write_binary(str(model_dir))
        report = convert_model(model_dir, images_dir, out, force=force, log=log, bounds=bounds, depth=depth,
                               attach={"colmap/sparse/0": model_dir}, source=f"{origin} (colmap/sparse/0)")
    registered_names = sorted(rec.image(i).name for i in rec.reg_image_ids())
    return {**report, "registered": registered, "total": total, "sfm_reproj_error": err,
            "points": rec.num_points3D(), "sfm_seconds": sfm_seconds, "seconds": time.perf_counter() - t0,
            **{f"{k}_seconds": v for k, v in times.items()}, "registered_names": registered_names}
