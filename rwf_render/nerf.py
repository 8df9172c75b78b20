"""fit a radiance field to posed photos (NeRF) and render novel views

Data flow: transforms.json -> images in memory (nerf_data) -> random rays across all training images -> occupancy
grid marching + field + compositing (nerf_render) -> MSE to the pixels -> Trainer. The options are in nerf_options,
the task and its scores in nerf_task; ``rwf render`` for NeRF runs lives in nerf_outputs, ``rwf export mesh`` in
nerf_export.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .datasets import held_out_training_images, held_out_training_text
from .errors import RwfWarning, UserError, out_of_memory
from .nerf_config import NeRFConfig, check_config
from .nerf_data import PosedImages, changed_splits, check_bounds, dataset_fingerprint, load_split, summary
from .nerf_options import add_fit_arguments, config_from_args, resume_config_from_args  # noqa: F401 (the CLI's)
from .nerf_options import (add_spiral_argument, add_tsdf_arguments, cascade_profile, profile_text,
                           real_capture_config)
from .nerf_render import NeRFModel
from .raymarch import resolve_backend
from .nerf_task import (NeRFTask, build_model, eval_background, finish, optional_split, refined_split,
                        spaced_indices, test_metrics)
from .rundir import (CHECKPOINT, CONFIG, METRICS, check_out_holds_no_input, load_run_model, prepare_run_dir, read_json,
                     refuse_lost_checkpoint, write_json)
from .trainer import Trainer, resolve_device

# -- fitting ------------------------------------------------------------------------------------------------------
def fit(args) -> int:
    cfg = resume_config_from_args(args) if args.resume else config_from_args(args)
    check_config(cfg)
    if args.resume and not (Path(args.out) / CHECKPOINT).is_file():  # said before the images are read
        refuse_lost_checkpoint(Path(args.out), cfg.train.ckpt_every)
    device = resolve_device(cfg.train.device)
    # read and check every input before anything is written: the splits, the test views scored at the end
    train = load_split(cfg.data, "train", cfg.downscale, depth=cfg.depth_weight > 0)
    backdrop = None if train.has_alpha else train.backdrop()  # used only where the real capture's would be
    if args.resume:
        train = resumed_box(train, Path(args.out))
    cfg, taken = real_capture_config(args, cfg, opaque=not train.has_alpha, bounds=train.near_far is not None,
                                     backdrop=backdrop, cascades=train.cascades)
    if taken:
        check_config(cfg)
    ngp = {k: taken.pop(k) for k, v in cascade_profile(train.cascades).items() if taken.get(k) == v}
    spans = ngp.pop("field_extent", None)  # no option: said in words, for the encodings it applies to
    spans = spans if cfg.field.pos.kind != "hashgrid" else None  # (a hash grid spans the grid's cascades anyway)
    if ngp or spans:
        said = [profile_text(ngp)] if ngp else []
        said += [f"the field's {cfg.field.pos.kind} encoding spans their reach, {spans:g} times the cube"] if spans \
            else []
        print(f"rwf: the dataset's aabb_scale asks for {train.cascades} occupancy cascades: {'; '.join(said)} "
              "(instant-ngp's: each doubles the one inside, the finest is its unit cube, the scene box)",
              file=sys.stderr)
    if taken and backdrop is not None:  # opaque renders: the synthetic settings, on the backdrop's colour
        print(f"rwf: opaque images on a plain {backdrop} backdrop (an object, not a real capture): "
              f"{profile_text(taken)} (type --background to choose otherwise)", file=sys.stderr)
    elif taken:  # opaque photos, no preset: the real capture's settings where no option was typed
        print(f"rwf: opaque photos (a real capture): {profile_text(taken)} (type an option to choose otherwise)",
              file=sys.stderr)
    check_background(cfg.background, train, cfg.data, resuming=bool(args.resume))
    shared = held_out_training_images(cfg.data)
    if shared:
        warnings.warn(held_out_training_text(shared), RwfWarning, stacklevel=2)
    val = optional_split(cfg.data, "val", cfg.downscale, range(cfg.val_images))
    test = optional_split(cfg.data, "test", cfg.downscale, spaced_indices(cfg.data, "test", cfg.eval_images))
    check_bounds(train, cfg.render.near, cfg.render.far, cfg.render.far_bounds, cfg.render.grid_levels)
    out = Path(args.out or Path("runs") / f"nerf-{cfg.scene or data_name(cfg.data)}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not args.resume:
        check_out_holds_no_input(out, [cfg.data])
    try:
        model = build_model(cfg, train.aabb, len(train))
    except RuntimeError as e:  # an allocation failure of an absurd --width / --features
        if not out_of_memory(e):
            raise
        raise UserError(f"the field does not fit in memory ({str(e).splitlines()[0][:120]}); use a smaller "
                        "--width, --depth or --features") from None
    cfg.field.density_scale = model.field.density_scale  # recorded: the run keeps it whatever its box rule becomes
    print(summary(train, cfg.render.near, cfg.render.far, cfg.data, model.default_near(), cfg.render.far_bounds,
                  cfg.render.grid_levels)
          + f", background {cfg.background}", file=sys.stderr)
    run = prepare_run_dir(out, force=args.force, resume=args.resume)
    task = NeRFTask(model.to(device), train, val, cfg, device, run_dir=run)
    trainer = Trainer(model, task, cfg.train, run_dir=run, progress=not args.quiet)
    # the marcher's kernel, built here on first use: not inside the first step, where Ctrl+C only asks the trainer to
    # stop after the step (a build or a wait for another process's build would go on) and the build's minute counted
    # as training time in metrics.json
    resolve_backend("auto", device)
    if args.resume:  # before config.json is rewritten: a refused resume changes nothing
        print(f"rwf: resuming {run} at step {trainer.step_idx}/{cfg.train.steps}" if trainer.resume()
              else f"rwf: {run}: no checkpoint yet; training starts at step 0", file=sys.stderr)
    saved = {**cfg.to_dict(), "aabb": train.aabb.tolist(), "dataset": dataset_fingerprint(cfg.data)}
    write_json(run / CONFIG, saved)  # the fingerprint: --resume refuses a dataset changed since
    trainer.fit()
    metrics = finish(run, model, task, trainer, cfg, test, progress=not args.quiet)
    split = metrics["psnr_split"]
    print(f"{run}: {split} psnr {metrics['psnr']:.2f} dB, ssim {metrics['ssim']:.4f} ({metrics['test_images']} "
          f"{split} images{'' if split == 'test' else '; the dataset has no test split'}), "
          f"{metrics['steps']} steps in {metrics['seconds']:.1f} s, {metrics['samples_per_s']:.3g} samples/s")
    return 0


def resumed_box(train: PosedImages, run: Path) -> PosedImages:
    """``train`` with the scene box the run was fitted in (its config.json's ``aabb``): a run keeps its box, also
    where the dataset's rule has changed since (aabb_scale read as cascades around instant-ngp's unit cube rather
    than as one box of that side)."""
    saved = read_json(run / CONFIG).get("aabb") if (run / CONFIG).is_file() else None
    try:
        box = torch.tensor(saved, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        return train
    if box.shape != (6,) or not bool(torch.isfinite(box).all()) or not bool((box[3:] > box[:3]).all()):
        return train
    return replace(train, aabb=box, cascades=1)


def check_background(background: str, train: PosedImages, data: str, resuming: bool = False) -> None:
    """Refuse ``learned`` on transparent training images: their targets are composited on a random colour per ray
    (``background_color``), which a colour by direction alone cannot match (lego_tiny: 7.4 dB).

    Raises:
        UserError: naming the dataset and the backgrounds that fit it.
    """
    if background == "learned" and train.has_alpha:
        why = f"{data}: the training images are transparent (alpha < 1) where --background learned would paint what " \
              "lies beyond the scene"
        if resuming:  # a run fitted before the refusal existed: its background is part of what it learned
            raise UserError(f"{why}; this run was fitted with it and cannot continue: start a new run (--out) with "
                            "--background white, black or random")
        raise UserError(f"{why}; use --background white, black or random")


# -- commands on a run --------------------------------------------------------------------------------------------
def load_scene_model(run: Path, device="cpu") -> NeRFModel:
    """Rebuild a NeRF run's model from config.json and checkpoint.pt; also attaches ``train_cameras`` (with their
    learned corrections when the fit refined them), ``train_dataset_cameras`` (the same at the dataset's poses: what
    ``model.pose_correction`` refines, so a viewer that reloads the checkpoint can correct them anew),
    ``train_image_paths``, ``train_mask_paths``, ``train_near_far``, ``background`` (3,) and ``cfg`` for the
    viewer."""
    from .datasets import load_transforms  # noqa: PLC0415

    cfg_dict = read_json(Path(run) / CONFIG)
    try:
        cfg = NeRFConfig.from_dict(cfg_dict)
        aabb = np.asarray(cfg_dict["aabb"], dtype=np.float64).reshape(6)
    except (UserError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{Path(run) / CONFIG}: {e if isinstance(e, UserError) else 'no valid scene box (aabb)'}") \
            from None
    if not (np.isfinite(aabb).all() and (aabb[3:] > aabb[:3]).all()):
        raise UserError(f"{Path(run) / CONFIG}: the scene box (aabb) is not a box: {aabb.tolist()}")
    device = resolve_device(device) if isinstance(device, str) else device
    model = build_model(cfg, aabb.tolist(), cfg.field.n_images)
    state = load_run_model(run, model)
    model.checkpoint_step = int(state.get("step", 0))  # what ``rwf eval`` records with its figures
    seconds = state.get("seconds")
    model.checkpoint_seconds = float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) \
        else None
    model.to(device).eval()
    try:
        tf = load_transforms(cfg.data, "train")
        cams = tf.cameras.to(dtype=torch.float32)
        if cfg.downscale > 1:
            k = float(cfg.downscale)
            cams = replace(cams, fx=cams.fx / k, fy=cams.fy / k, cx=cams.cx / k, cy=cams.cy / k,
                           width=cams.width // cfg.downscale, height=cams.height // cfg.downscale)
        model.train_dataset_cameras = cams
        if model.pose_correction is not None:  # the poses the field was fitted to
            if len(cams) == model.pose_correction.delta.shape[0]:
                cams = replace(cams, c2w=model.pose_correction.refined(cams.c2w))
                if changed_splits(cfg_dict, cfg.data, ("train",)):  # reordered, replaced or moved photos
                    warnings.warn(f"{cfg.data}: the training split changed since the fit; its refined poses are "
                                  "applied in frame order, as learned for the photos it held then", RwfWarning)
            else:
                warnings.warn(f"{cfg.data}: the training split has {len(cams)} photos now, the run refined "
                              f"{model.pose_correction.delta.shape[0]}; showing the dataset's poses", RwfWarning)
        model.train_cameras, model.train_image_paths = cams, list(tf.image_paths)
        model.train_mask_paths = list(tf.mask_paths)  # None where a frame has no mask
        model.train_near_far = tf.near_far  # (N, 2) per-image bounds of the dataset, or None
    except UserError as e:  # the dataset moved, or no longer loads: say why where the cameras are needed
        model.train_cameras, model.train_image_paths, model.train_near_far = None, [], None
        model.train_mask_paths = []
        model.train_dataset_cameras, model.train_cameras_missing = None, str(e)
    model.cfg = cfg
    model.background_color = torch.ones(3) if eval_background(cfg.background) == "white" else torch.zeros(3)
    return model


def data_name(data: str) -> str:
    """A dataset's name in a default run folder: the folder's name; for a file, its stem (``cameras.json``:
    "cameras"), or its folder's name where the file is a ``transforms*.json``."""
    p = Path(data)
    if p.suffix.lower() != ".json":
        return p.name
    return p.parent.resolve().name if p.stem.lower().startswith("transforms") else p.stem


def render_camera(model: NeRFModel, cam, max_samples: int | None = None, chunk: int | None = None,
                  near: float | None = None, far: float | None = None) -> dict:
    """Render one camera: rgb (H, W, 3), depth (H, W), opacity (H, W); memory bounded by ``chunk`` rays; ``near``
    and ``far`` bound every ray (default: the run's)."""
    old = (model.render_cfg.max_samples, model.render_cfg.chunk)
    model.render_cfg.max_samples = max_samples or old[0]
    model.render_cfg.chunk = chunk or old[1]
    try:
        return model.render_camera(cam, near=near, far=far)
    finally:
        model.render_cfg.max_samples, model.render_cfg.chunk = old


def eval_run(run: Path, cfg_dict: dict, args) -> int:
    """PSNR and SSIM over the whole test split (else the val, else the train split, as the fit scores them, named in
    ``psnr_split``), written into metrics.json."""
    import json  # noqa: PLC0415

    scored = _file_state(run / CHECKPOINT)  # before loading: a checkpoint replaced after this reads as changed
    model = load_scene_model(run, args.device)
    cfg = model.cfg
    split, images = "test", optional_split(cfg.data, "test", cfg.downscale)
    if images is None:
        split, images = "val", optional_split(cfg.data, "val", cfg.downscale)
    if images is None:  # the fit read its train split: an error here is the dataset's, said as such
        split, images = "train", refined_split(model, load_split(cfg.data, "train", cfg.downscale))
    saved = read_json(run / METRICS) if (run / METRICS).is_file() else {}  # unreadable: said before the renders
    saved = saved if isinstance(saved, dict) else {}  # not an object of metrics: replaced
    if split != "test":
        print(f"rwf: {cfg.data} has no test split; scoring its {split} split", file=sys.stderr)
    if changed_splits(cfg_dict, cfg.data, (split,)):
        print(f"rwf: warning: {cfg.data}: the {split} split changed since the fit; these figures score the views it "
              "holds now and replace the fit's", file=sys.stderr)
    progress = False if getattr(args, "quiet", False) else None  # None: a bar on a terminal
    metrics = test_metrics(model, images, cfg.background, None, progress=progress, split=split)
    metrics["psnr_split"] = split
    print(json.dumps({k: v for k, v in metrics.items() if k != "views"}))  # each view's own: in metrics.json
    if _file_state(run / CHECKPOINT) != scored:  # a fit (--resume) went on meanwhile: its figures are newer
        print(f"rwf: warning: {run / CHECKPOINT} changed while it was scored (a fit of the run is going on); "
              f"{run / METRICS} is left to the fit (run rwf eval again when it ends)", file=sys.stderr)
        return 0
    if (run / METRICS).is_file():  # read again: the fit may have written its final figures during the renders
        fresh = read_json(run / METRICS)
        saved = fresh if isinstance(fresh, dict) else {}
    step = getattr(model, "checkpoint_step", None)
    fit_step = saved.get("steps")
    if step is not None and isinstance(fit_step, int) and not isinstance(fit_step, bool) and fit_step != step:
        # a fit killed after a later checkpoint (or one going on past it when the renders began): the file's other
        # figures (psnr_train, seconds, ...) describe other weights; they go, and the steps are the checkpoint's
        print(f"rwf: warning: {run / METRICS} held the figures of step {fit_step}, the checkpoint is at step {step} "
              "(a fit stopped after a later checkpoint, before its final figures): replaced by these, of the "
              "checkpoint", file=sys.stderr)
        saved = {}
    elif saved.get("test_images") == metrics["test_images"] and saved.get("psnr_split", "test") == split:
        # the fit scored the same views (all of the split): figures that differ were defined otherwise
        diff = [k for k in ("psnr", "ssim") if isinstance(saved.get(k), (int, float))
                and not isinstance(saved.get(k), bool) and abs(saved[k] - metrics[k]) > 1e-4]
        if diff:
            print(f"rwf: warning: {', '.join(diff)} differ from the fit's in {run / METRICS} over the same "
                  f"{metrics['test_images']} views ({', '.join(f'{saved[k]:.4f}' for k in diff)}), now replaced: the "
                  "dataset changed since, or the fit ran an earlier version that defined them otherwise (its other "
                  "figures, psnr_train, stay as the fit wrote them)", file=sys.stderr)
    saved.update(metrics)
    if step is not None and saved.get("steps") != step:  # replaced above, or no figures of the fit's own yet
        saved["steps"] = step
        if getattr(model, "checkpoint_seconds", None) is not None:
            saved["seconds"] = round(model.checkpoint_seconds, 3)
    write_json(run / METRICS, saved)
    return 0


def _file_state(path: Path) -> tuple | None:
    """What tells one version of ``path`` from the next (an atomic replace gives a new inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def render_run(run: Path, cfg_dict: dict, args) -> int:
    from .nerf_outputs import render_run as _render  # noqa: PLC0415

    return _render(run, cfg_dict, args)


def export_mesh_run(run: Path, cfg_dict: dict, args) -> int:
    from .nerf_export import export_mesh_run as _export  # noqa: PLC0415

    return _export(run, cfg_dict, args)


def add_render_arguments(p: argparse.ArgumentParser) -> None:
    from .camera_path import MAX_FPS, MAX_FRAMES, MIN_FPS, frame_rate  # noqa: PLC0415
    from .cli import int_in, positive_int  # noqa: PLC0415

    g = p.add_argument_group("nerf runs")
    g.add_argument("--split", choices=["train", "val", "test"], help="render every camera of a split")
    g.add_argument("--orbit", type=positive_int, metavar="N",
                   help=f"render N views on a circle around the scene (N at most {MAX_FRAMES}); also for sdf "
                        "runs: N frames around the shape at the preview's elevation and distance, shaded as "
                        "preview.png, with depth in the mesh's units")
    g.add_argument("--camera-path", metavar="FILE",
                   help="render a camera_path.json recorded in the viewer (a relative name not found here: in RUN)")
    g.add_argument("--interpolate", type=positive_int, metavar="N",
                   help="a smooth path through every training camera, N frames from one to the next "
                        "(N * (K - 1) + 1 frames for K cameras; suits real captures, where --orbit swings to views no "
                        "photo saw). The cameras are visited nearest-first from training camera 0, since capture "
                        "order is not always file order; each frame has the size of camera 0 and intrinsics blended "
                        f"from its two cameras'. At most {MAX_FRAMES} frames in all")
    add_spiral_argument(g)
    g.add_argument("--video", action="store_true",
                   help="also write MP4 videos (rgb and depth; sdf runs too, with --orbit)")
    g.add_argument("--opacity", action="store_true",
                   help="also write opacity_XXXX.png per frame: the opacity sum_i w_i (nerfstudio's accumulation), "
                        "[0, 1] as a 16-bit grey PNG; depth_XXXX.exr / opacity is where the ray stops. rgb_XXXX.png "
                        "stays RGB on the run's background (see --rgba for the scene alone); --video makes no "
                        "opacity video")
    g.add_argument("--rgba", action="store_true",
                   help="also write rgba_XXXX.png per frame: the scene without its background, to matte over any: a "
                        "16-bit RGBA PNG with straight alpha, alpha = the opacity (as --opacity's) and colour = the "
                        "render on black / opacity (0 where alpha is 0), from the same samples as the rgb. Over the "
                        "white or black that rgb_XXXX.png was rendered on it gives that file back; with a learned "
                        "background it is the only output without that background. --video makes no rgba video")
    g.add_argument("--fps", type=frame_rate, default=24,
                   help=f"video frame rate, {MIN_FPS:g}..{MAX_FPS}, decimals too (23.976 is written as the exact "
                        "2997/125; default 24; with --camera-path, the file's own rate unless --fps is typed)")
    g.add_argument("--downscale", type=positive_int, default=None, metavar="K",
                   help="render at 1/K of the resolution the run was fitted at (default 1: that resolution, the "
                        "cameras' own divided by the fit's --downscale); --scale S renders at any other, larger too")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import int_in, unit_fraction  # noqa: PLC0415

    g = p.add_argument_group("nerf runs")
    g.add_argument("--threshold", type=float, default=None,
                   help="density level of the surface (default 10), per 1/5.25 of the box diagonal as the field's "
                        "density (runs fitted before 30 Nov 2026: per scene unit)")
    g.add_argument("--crop", type=float, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"), default=None,
                   help="box to extract (default: the scene box)")
    g.add_argument("--pointcloud", action="store_true", help="a coloured point cloud from depth instead of a mesh")
    g.add_argument("--poisson", action="store_true",
                   help="a screened Poisson surface (open3d) through the --pointcloud points instead of marching "
                        "cubes, normals from the density gradient; no --res or --threshold")
    g.add_argument("--poisson-depth", type=int_in(2, 12, "an octree depth"), default=8, metavar="D",
                   help="--poisson octree depth, 2..12 (default 8: cells of 1/256 of the points' extent; each +1 "
                        "halves them and needs about 4x the time and memory)")
    g.add_argument("--poisson-trim", type=unit_fraction, default=0.1, metavar="FRACTION",
                   help="--poisson: remove this fraction of the vertices, those of lowest Poisson density, i.e. "
                        "with the fewest points nearby: surface the solver invents where nothing was seen "
                        "(default 0.1; 0 keeps the closed surface)")
    add_tsdf_arguments(g)
