"""fit a radiance field to posed photos (NeRF) and render novel views

Data flow: transforms.json -> images in memory (nerf_data) -> random rays across all training images -> occupancy
grid marching + field + compositing (nerf_render) -> MSE to the pixels -> Trainer. ``rwf render`` and
``rwf export mesh`` for NeRF runs live in nerf_outputs.
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

from .camera_opt import PoseCorrection, write_refined_cameras
from .errors import RwfWarning, UserError, out_of_memory
from .metrics import mse_to_psnr, psnr, ssim
from .nerf_config import (NeRFConfig, add_fit_arguments, check_config, config_from_args,  # noqa: F401 (the CLI's)
                          resume_config_from_args, scene_presets)
from .nerf_data import PosedImages, background_color, check_bounds, composite_background, load_split, summary
from .nerf_depth import depth_loss
from .nerf_reg import distortion_loss, near_opacity, occlusion_ramp
from .nerf_render import NeRFModel, pixel_radius
from .rundir import (CONFIG, METRICS, check_out_holds_no_input, load_run_model, prepare_run_dir, read_json, write_json)
from .trainer import Trainer, resolve_device

def build_model(cfg: NeRFConfig, aabb, n_images: int) -> NeRFModel:
    cfg.field.n_images = n_images
    model = NeRFModel(aabb, cfg.field, cfg.render, cfg.background, seed=cfg.model_seed)
    if cfg.optimize_cameras:
        model.pose_correction = PoseCorrection(n_images, cfg.camera_lr)
    return model


def eval_background(name: str) -> str:
    return "black" if name == "black" else "white"


class NeRFTask:
    """Random rays across every training image; see the trainer's task protocol."""

    def __init__(self, model: NeRFModel, train: PosedImages, val: PosedImages | None, cfg: NeRFConfig,
                 device: torch.device, run_dir: Path | None = None):
        self.model, self.train, self.val, self.cfg, self.device = model, train, val, cfg, device
        self.run_dir = run_dir
        self.radius = pixel_radius(train.cameras).to(device=device, dtype=torch.float32)  # per training camera
        self.c2w = train.cameras.c2w.to(device)  # the dataset poses the camera corrections start from
        self.n_rays = cfg.init_rays
        self.total_samples = 0
        self.timings: dict[str, float] | None = None  # set to {} to accumulate march/field/composite seconds
        self.last_step = 0

    def state_dict(self) -> dict:
        return {"n_rays": self.n_rays, "total_samples": self.total_samples}

    def load_state_dict(self, state: dict) -> None:
        self.n_rays = int(state.get("n_rays", self.n_rays))
        self.total_samples = int(state.get("total_samples", 0))

    def batch(self, step: int, generator: torch.Generator) -> dict:
        self.last_step = step
        self.model.update_grid(step, generator)
        n = self.n_rays
        flat = torch.randint(self.train.n_pixels, (n,), generator=generator)
        img, uv = self.train.locate(flat)
        rgba = self.train.pixels[flat].float().to(self.device) / 255.0
        weight = None if self.train.masks is None else self.train.masks[flat].float().to(self.device) / 255.0
        depth = None
        if self.cfg.depth_weight > 0:  # rays through depth samples ride along after the n colour rays
            pick = torch.randint(len(self.train.depth), (self.cfg.depth_rays,), generator=generator)
            img, uv = torch.cat([img, self.train.depth.image[pick]]), torch.cat([uv, self.train.depth.uv[pick]])
            depth = self.train.depth.t[pick].to(self.device)
        rays_o, rays_d = self.train.rays(img, uv, self.device)
        bg = background_color(self.cfg.background, len(img), generator, self.device)
        near = far = None
        if self.train.near_far is not None:
            near, far = (self.train.near_far[img, 0].to(self.device), self.train.near_far[img, 1].to(self.device))
        jitter = torch.rand(len(img), generator=generator).to(self.device)
        occlusion = None  # where the near-stretch points sit in their strata, for the first colour rays
        if self.cfg.occlusion_weight > 0:
            occlusion = torch.rand(min(n, self.cfg.occlusion_rays), self.cfg.occlusion_samples,
                                   generator=generator).to(self.device)
        return {"rays_o": rays_o, "rays_d": rays_d, "radii": self.radius[img.to(self.device)],
                "target": composite_background(rgba, bg[:n]), "bg": bg, "weight": weight,
                "image_idx": img.to(self.device), "near": near, "far": far, "depth": depth, "jitter": jitter,
                "occlusion_jitter": occlusion, "occlusion_scale": occlusion_ramp(step, self.cfg.occlusion_warmup)}

    def loss(self, model: NeRFModel, b: dict):
        """The colour MSE of the first n rays and, with depth rays after them, the depth loss of those; with the
        occlusion loss, the opacity just past the near bound of the first colour rays, times its warm-up ramp; with
        --optimize-cameras, every ray from its camera's corrected pose and the corrections' regularizer; with the
        distortion loss, its mean over all rays."""
        use_amp = self.cfg.amp and self.device.type == "cuda"
        rays_o, rays_d = b["rays_o"], b["rays_d"]
        if model.pose_correction is not None:  # each training ray from its camera's corrected pose
            rays_o, rays_d = model.pose_correction(rays_o, rays_d, b["image_idx"], self.c2w)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            out = model.render_rays(rays_o, rays_d, near=b["near"], far=b["far"], background=b["bg"],
                                    image_idx=b["image_idx"], jitter=b["jitter"], train=True,
                                    timings=self.timings, radii=b["radii"])
        n, total, samples = b["target"].shape[0], rays_o.shape[0], out["n_samples"]
        err = (out["rgb"][:n] - b["target"]) ** 2
        mse = err.mean() if b["weight"] is None else (err.mean(1) * b["weight"]).sum() / b["weight"].sum().clamp(min=1)
        if not mse.requires_grad:  # no sample hit an occupied cell: keep the step well defined
            mse = mse + 0.0 * sum(p.sum() for p in model.parameters())
        terms, stats = {"mse": mse}, {"psnr_train": mse_to_psnr(float(mse.detach())), "rays": total,
                                      "samples_per_ray": samples / total}
        if b["depth"] is not None:
            terms["depth"] = depth_loss(out["depth"][n:], b["depth"])
        if model.pose_correction is not None and self.cfg.camera_reg > 0:
            terms["camera_reg"] = model.pose_correction.penalty(model.diagonal)
        if self.cfg.distortion_weight > 0:  # mip-NeRF 360: each ray's weight in one compact interval
            terms["distortion"] = distortion_loss(out["weights"], out["t_starts"], out["t_ends"], out["ray_indices"],
                                                  total, model.diagonal).mean()
        if b["occlusion_jitter"] is not None:
            r = b["occlusion_jitter"].shape[0]  # the stretch starts where the marcher does: --near, else per image
            per_image = b["near"] is not None and self.cfg.render.near is None
            near = b["near"][:r] if per_image else torch.full((r,), model.default_near(), device=self.device)
            terms["occlusion"] = b["occlusion_scale"] * near_opacity(
                model.field.density, rays_o[:r], rays_d[:r], near, self.cfg.occlusion_margin,
                b["occlusion_jitter"])
        self.total_samples += samples
        # adapt the colour ray count toward target_samples per step, all rays counted (geometric step, bounded)
        want = total * (self.cfg.target_samples / max(samples, 1)) ** 0.5 - (total - n)
        self.n_rays = int(min(max(want, self.cfg.min_rays), self.cfg.max_rays))
        return terms, stats

    def evaluate(self, model: NeRFModel) -> dict:
        split = self.val if self.val is not None else refined_split(model, self.train)
        scores = []
        for i in range(min(self.cfg.val_images, len(split))):
            pred, target = render_and_target(model, split, i, self.cfg.background)
            scores.append(psnr(pred, target))
            if self.run_dir is not None and i == 0:  # periodic validation render: truth | prediction
                from .imgio import write_image  # noqa: PLC0415

                (self.run_dir / "val").mkdir(exist_ok=True)
                write_image(self.run_dir / "val" / f"step_{self.last_step + 1:06d}.png",
                            np.concatenate([target.numpy(), pred.numpy()], axis=1))
        return {"psnr": float(np.mean(scores)), "occupied": self.model.grid.occupied_fraction}


def refined_split(model: NeRFModel, train: PosedImages) -> PosedImages:
    """The training split with its cameras' learned corrections applied (itself without --optimize-cameras)."""
    if model.pose_correction is None:
        return train
    fitted = model.pose_correction.delta.shape[0]
    if len(train) != fitted:
        raise UserError(f"the training split has {len(train)} photos now, the run refined the poses of {fitted}: "
                        "the dataset changed since the fit")
    c2w = model.pose_correction.refined(train.cameras.c2w)
    return replace(train, cameras=replace(train.cameras, c2w=c2w.to(train.cameras.c2w.dtype)))


def render_and_target(model: NeRFModel, split: PosedImages, i: int, background: str):
    """Render image i of a split and its ground truth on the evaluation background: (H, W, 3) each."""
    bg = torch.ones(3) if eval_background(background) == "white" else torch.zeros(3)
    rgba = split.image(i)
    target = composite_background(rgba.reshape(-1, 4), bg).reshape(*rgba.shape[:2], 3)
    near = far = None
    if split.near_far is not None:
        near, far = float(split.near_far[i, 0]), float(split.near_far[i, 1])
    out = model.render_camera(split.cameras[i], near=near, far=far)
    return out["rgb"].cpu(), target


def spaced_indices(data: str, split: str, n: int) -> list[int]:
    """``n`` evenly spaced frame indices of a split (all when it has fewer); [] when the split is absent."""
    from .datasets import load_transforms  # noqa: PLC0415

    try:
        total = len(load_transforms(data, split))
    except UserError as e:  # a malformed split is an error, not an absent one
        if _absent(e):
            return []
        raise
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)).tolist()


def test_metrics(model: NeRFModel, test: PosedImages, background: str, n_images: int | None,
                 renders: dict | None = None) -> dict:
    """Mean per-image PSNR and SSIM over ``n_images`` evenly spaced test images (None: all); ``renders``, when
    given, receives {index: (prediction, target)} of each image scored (the fit reuses image 0's for its view)."""
    count = len(test) if not n_images else min(n_images, len(test))
    picks = np.unique(np.linspace(0, len(test) - 1, count).round().astype(int))
    p, s = [], []
    for i in picks:
        pred, target = render_and_target(model, test, int(i), background)
        if renders is not None and i == 0:
            renders[0] = (pred, target)
        p.append(psnr(pred, target))
        s.append(ssim(pred.numpy(), target.numpy()))
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "test_images": len(picks),
            "lpips": None, "lpips_note": lpips_note()}


def lpips_note() -> str:
    try:
        import lpips  # noqa: F401, PLC0415
    except ImportError:
        return "absent: the lpips package and its network weights are not available offline"
    return "absent: LPIPS needs pretrained network weights that this toolkit does not download"


# -- fitting ------------------------------------------------------------------------------------------------------
def fit(args) -> int:
    cfg = resume_config_from_args(args) if args.resume else config_from_args(args)
    check_config(cfg)
    device = resolve_device(cfg.train.device)
    # read and check every input before anything is written: the splits, the test views scored at the end
    train = load_split(cfg.data, "train", cfg.downscale, depth=cfg.depth_weight > 0)
    check_background(cfg.background, train, cfg.data, resuming=bool(args.resume))
    val = _optional_split(cfg.data, "val", cfg.downscale, range(cfg.val_images))
    test = _optional_split(cfg.data, "test", cfg.downscale, spaced_indices(cfg.data, "test", cfg.eval_images))
    check_bounds(train, cfg.render.near, cfg.render.far, cfg.render.far_bounds, cfg.render.grid_levels)
    name = cfg.scene or Path(cfg.data).name
    out = Path(args.out or Path("runs") / f"nerf-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not args.resume:
        check_out_holds_no_input(out, [cfg.data])
    try:
        model = build_model(cfg, train.aabb, len(train))
    except RuntimeError as e:  # an allocation failure of an absurd --width / --features
        if not out_of_memory(e):
            raise
        raise UserError(f"the field does not fit in memory ({str(e).splitlines()[0][:120]}); use a smaller "
                        "--width, --depth or --features") from None
    print(summary(train, cfg.render.near, cfg.render.far, cfg.data, model.default_near(), cfg.render.far_bounds),
          file=sys.stderr)
    run = prepare_run_dir(out, force=args.force, resume=args.resume)
    task = NeRFTask(model.to(device), train, val, cfg, device, run_dir=run)
    trainer = Trainer(model, task, cfg.train, run_dir=run, progress=not args.quiet)
    if args.resume and trainer.resume():  # before config.json is rewritten: a refused resume changes nothing
        print(f"rwf: resuming {run} at step {trainer.step_idx}/{cfg.train.steps}", file=sys.stderr)
    write_json(run / CONFIG, {**cfg.to_dict(), "aabb": train.aabb.tolist()})
    trainer.fit()
    metrics = finish(run, model, task, trainer, cfg, test)
    split = metrics["psnr_split"]
    print(f"{run}: {split} psnr {metrics['psnr']:.2f} dB, ssim {metrics['ssim']:.4f} ({metrics['test_images']} "
          f"{split} images{'' if split == 'test' else '; the dataset has no test split'}), "
          f"{metrics['steps']} steps in {metrics['seconds']:.1f} s, {metrics['samples_per_s']:.3g} samples/s")
    return 0


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


def _absent(e: UserError) -> bool:
    """Whether a loader error only says that a split is absent (no file for it, or no frame of it on disk)."""
    return "no transforms_" in str(e) or "no frame with an existing image" in str(e)


def _optional_split(data: str, split: str, downscale: int, indices=None) -> PosedImages | None:
    """A split, or None when the dataset has none (a Blender file missing, or no frame of it on disk)."""
    if indices is not None and len(indices) == 0:
        return None
    try:
        return load_split(data, split, downscale, indices)
    except UserError as e:
        if _absent(e):
            return None
        raise


def finish(run: Path, model: NeRFModel, task: NeRFTask, trainer: Trainer, cfg: NeRFConfig,
           test: PosedImages | None = None) -> dict:
    """Final metrics on the test images (``test``, loaded before training; else the val, else the train split,
    named in ``psnr_split``), a test render (the first image scored), curve.png and metrics.json."""
    from .imgio import write_image  # noqa: PLC0415
    from .plots import curve_png  # noqa: PLC0415

    train = refined_split(model, task.train)
    split, test = next((name, s) for name, s in (("test", test), ("val", task.val), ("train", train)) if s)
    first = {}
    metrics = test_metrics(model, test, cfg.background, None, renders=first)
    if model.pose_correction is not None:
        metrics.update(write_refined_cameras(run, model.pose_correction, task.train, cfg.data, task.train.paths))
    metrics.update(psnr_split=split, psnr_train=psnr(*render_and_target(model, train, 0, cfg.background)),
                   steps=trainer.step_idx,
                   seconds=round(trainer.seconds, 3), param=cfg.field.trunk.param,
                   samples_per_s=task.total_samples / max(trainer.seconds, 1e-9),
                   occupied=model.grid.occupied_fraction)
    pred, target = first[0]
    write_image(run / "test_view.png", np.concatenate([target.numpy(), pred.numpy()], axis=1))
    curve_png(run / "curve.png", {cfg.field.trunk.param: trainer.history}, title="validation PSNR")
    write_json(run / METRICS, metrics)
    return metrics


# -- commands on a run --------------------------------------------------------------------------------------------
def load_scene_model(run: Path, device="cpu") -> NeRFModel:
    """Rebuild a NeRF run's model from config.json and checkpoint.pt; also attaches ``train_cameras`` (with their
    learned corrections when the fit refined them), ``train_image_paths``, ``train_near_far``, ``background`` (3,)
    and ``cfg`` for the viewer."""
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
    load_run_model(run, model)
    model.to(device).eval()
    try:
        tf = load_transforms(cfg.data, "train")
        cams = tf.cameras.to(dtype=torch.float32)
        if cfg.downscale > 1:
            k = float(cfg.downscale)
            cams = replace(cams, fx=cams.fx / k, fy=cams.fy / k, cx=cams.cx / k, cy=cams.cy / k,
                           width=cams.width // cfg.downscale, height=cams.height // cfg.downscale)
        if model.pose_correction is not None:  # the poses the field was fitted to
            if len(cams) == model.pose_correction.delta.shape[0]:
                cams = replace(cams, c2w=model.pose_correction.refined(cams.c2w))
            else:
                warnings.warn(f"{cfg.data}: the training split has {len(cams)} photos now, the run refined "
                              f"{model.pose_correction.delta.shape[0]}; showing the dataset's poses", RwfWarning)
        model.train_cameras, model.train_image_paths = cams, list(tf.image_paths)
        model.train_near_far = tf.near_far  # (N, 2) per-image bounds of the dataset, or None
    except UserError:
        model.train_cameras, model.train_image_paths, model.train_near_far = None, [], None
    model.cfg = cfg
    model.background_color = torch.ones(3) if eval_background(cfg.background) == "white" else torch.zeros(3)
    return model


def render_camera(model: NeRFModel, cam, max_samples: int | None = None, chunk: int | None = None) -> dict:
    """Render one camera: rgb (H, W, 3), depth (H, W), opacity (H, W); memory bounded by ``chunk`` rays."""
    old = (model.render_cfg.max_samples, model.render_cfg.chunk)
    model.render_cfg.max_samples = max_samples or old[0]
    model.render_cfg.chunk = chunk or old[1]
    try:
        return model.render_camera(cam)
    finally:
        model.render_cfg.max_samples, model.render_cfg.chunk = old


def eval_run(run: Path, cfg_dict: dict, args) -> int:
    """PSNR and SSIM over the whole test split (else the val, else the train split, as the fit scores them, named in
    ``psnr_split``), written into metrics.json."""
    import json  # noqa: PLC0415

    model = load_scene_model(run, args.device)
    cfg = model.cfg
    split, images = "test", _optional_split(cfg.data, "test", cfg.downscale)
    if images is None:
        split, images = "val", _optional_split(cfg.data, "val", cfg.downscale)
    if images is None:  # the fit read its train split: an error here is the dataset's, said as such
        split, images = "train", refined_split(model, load_split(cfg.data, "train", cfg.downscale))
    saved = read_json(run / METRICS) if (run / METRICS).is_file() else {}  # unreadable: said before the renders
    saved = saved if isinstance(saved, dict) else {}  # not an object of metrics: replaced
    if split != "test":
        print(f"rwf: {cfg.data} has no test split; scoring its {split} split", file=sys.stderr)
    metrics = test_metrics(model, images, cfg.background, None)
    metrics["psnr_split"] = split
    saved.update(metrics)
    write_json(run / METRICS, saved)
    print(json.dumps(metrics))
    return 0


def render_run(run: Path, cfg_dict: dict, args) -> int:
    from .nerf_outputs import render_run as _render  # noqa: PLC0415

    return _render(run, cfg_dict, args)


def export_mesh_run(run: Path, cfg_dict: dict, args) -> int:
    from .nerf_outputs import export_mesh_run as _export  # noqa: PLC0415

    return _export(run, cfg_dict, args)


def add_render_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import positive_int  # noqa: PLC0415

    g = p.add_argument_group("nerf runs")
    g.add_argument("--split", choices=["train", "val", "test"], help="render every camera of a split")
    g.add_argument("--orbit", type=positive_int, metavar="N", help="render N views on a circle around the scene")
    g.add_argument("--camera-path", metavar="FILE", help="render a camera_path.json recorded in the viewer")
    g.add_argument("--interpolate", type=positive_int, metavar="N",
                   help="a smooth path through every training camera, N frames from one to the next "
                        "(N * (K - 1) + 1 frames for K cameras; suits real captures, where --orbit swings to views no "
                        "photo saw). The cameras are visited nearest-first from training camera 0, since capture "
                        "order is not always file order; each frame has the size of camera 0 and intrinsics blended "
                        "from its two cameras'")
    g.add_argument("--video", action="store_true", help="also write MP4 videos (rgb and depth)")
    g.add_argument("--fps", type=positive_int, default=24,
                   help="video frame rate (default 24; with --camera-path, the file's own rate unless --fps is typed)")
    g.add_argument("--downscale", type=positive_int, default=None, help="render at 1/K of the camera resolution")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import int_in, unit_fraction  # noqa: PLC0415

    g = p.add_argument_group("nerf runs")
    g.add_argument("--threshold", type=float, default=None, help="density level of the surface (default 10)")
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
