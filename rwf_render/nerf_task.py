"""The NeRF fitting task: the model, random rays across every training image and their losses, and the scores
(validation during a fit, the test metrics at its end and for ``rwf eval``). ``nerf.py`` wires it to the ``rwf``
command; the benchmark uses it directly.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .camera_opt import PoseCorrection, write_refined_cameras
from .errors import RwfWarning, UserError
from .metrics import lpips_metric, mse_to_psnr, psnr, ssim
from .nerf_config import NeRFConfig
from .nerf_data import PosedImages, background_color, composite_background, load_split
from .nerf_depth import depth_loss
from .nerf_reg import distortion_loss, near_opacity, occlusion_ramp
from .nerf_render import NeRFModel, pixel_radius
from .rundir import METRICS, VAL_RENDERS, write_json
from .trainer import Trainer

def build_model(cfg: NeRFConfig, aabb, n_images: int) -> NeRFModel:
    cfg.field.n_images = n_images
    model = NeRFModel(aabb, cfg.field, cfg.render, cfg.background, seed=cfg.model_seed)
    if cfg.optimize_cameras:
        model.pose_correction = PoseCorrection(n_images, cfg.camera_lr, unit=1.0 / model.field.density_scale)
    return model


def open_levels(model: NeRFModel, schedule: list | None, progress: float | None) -> None:
    """Open the hash grid's levels as far as the coarse-to-fine ``schedule`` [start, end] says at ``progress`` (the
    fraction of the steps done; None: every level, as after training)."""
    enc = model.field.pos_enc
    if not hasattr(enc, "open_levels"):
        return
    if schedule is None or progress is None:
        enc.open_levels(None)
        return
    start, end = schedule
    enc.open_levels((enc.levels - 1) * min(max((progress - start) / (end - start), 0.0), 1.0))


def eval_background(name: str) -> str:
    return "black" if name == "black" else "white"


class CollapseWatch:
    """Notices a fit whose field has collapsed to empty space, once: after step ``after``, ``steps`` steps in a row in
    which no training ray gathered ``opacity`` and the training PSNR stayed under ``psnr`` dB (a scene that really is
    empty fits its background well; a collapsed one renders the background over the object). The density then sits
    near zero everywhere, where its gradient (proportional to it) vanishes too, so such a fit rarely recovers: on an
    H200 the lego-gpu preset's Fourier field of that time (4 x 256 RWF layers, lr 3e-3) rendered the empty background
    (9.25 dB) at steps 4356, 8665 and 10000 (BENCHMARKS.md)."""

    def __init__(self, after: int = 100, steps: int = 20, opacity: float = 1e-3, psnr: float = 20.0):
        self.after, self.steps, self.opacity, self.psnr = after, steps, opacity, psnr
        self.since: int | None = None  # the first step of the current run of empty steps
        self.count = 0
        self.warned = False

    def update(self, step: int, opacity: torch.Tensor, psnr_train: float) -> str | None:
        """The warning's text at the step the collapse is noticed (only once); None otherwise. ``opacity``: the
        step's per-ray opacities (read only past ``after``, one device sync)."""
        if self.warned or step < self.after:
            return None
        empty = psnr_train < self.psnr and (opacity.numel() == 0 or float(opacity.max()) < self.opacity)
        if not empty:
            self.since, self.count = None, 0
            return None
        self.since = step if self.since is None else self.since
        self.count += 1
        if self.count < self.steps:
            return None
        self.warned = True
        return (f"the field has collapsed to empty space: in steps {self.since + 1} to {step + 1} no training ray "
                f"gathered {self.opacity:g} opacity and the training PSNR is {psnr_train:.1f} dB; such a fit rarely "
                "recovers. "
                "Fit again with a longer --lr-warmup, a lower --lr or a narrower --width (RWF layers 192 or 256 "
                "wide collapsed on lego at lr 3e-3 without a warm-up, and trained after 20 steps of one)")


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
        self.collapse = CollapseWatch()

    def state_dict(self) -> dict:
        watch = self.collapse  # a resumed fit goes on counting empty steps and warns once, as one unbroken fit
        return {"n_rays": self.n_rays, "total_samples": self.total_samples,
                "collapse": [-1 if watch.since is None else watch.since, watch.count, int(watch.warned)]}

    def load_state_dict(self, state: dict) -> None:
        n_rays, total = state.get("n_rays", self.n_rays), state.get("total_samples", 0)
        since, count, warned = state.get("collapse", [-1, 0, 0])  # none in checkpoints of earlier versions
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n_rays, total, since, count, warned)) \
                or n_rays < 1 or total < 0 or since < -1 or count < 0:
            raise ValueError(f"rays per step {n_rays!r}, samples so far {total!r} and the collapse watch "
                             f"{state.get('collapse')!r} are not counts")
        self.n_rays, self.total_samples = n_rays, total
        self.collapse.since, self.collapse.count = (None if since < 0 else since), count
        self.collapse.warned = bool(warned)

    def batch(self, step: int, generator: torch.Generator) -> dict:
        self.last_step = step
        open_levels(self.model, self.cfg.coarse_to_fine, step / self.cfg.train.steps)
        self.model.update_grid(step, generator)
        n = self.n_rays
        flat = torch.randint(self.train.n_pixels, (n,), generator=generator)
        img, uv = self.train.locate(flat)
        rgba = self.train.pixels[flat].float().to(self.device) / 255.0
        weight = None if self.train.masks is None else self.train.masks[flat].float().to(self.device) / 255.0
        depth = None
        if self.cfg.depth_weight > 0:  # rays through depth samples ride along after the n colour rays
            # no more of them than colour rays: at the floor of 64 colour rays a fixed 256 outweighed them
            # and put the step far past --target-samples (a 48 px scene: 3.6x the time of a fit without them)
            pick = torch.randint(len(self.train.depth), (min(self.cfg.depth_rays, n),), generator=generator)
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
        if b["weight"] is None:
            mse = err.mean()
        else:  # the mask-weighted mean, also when a step's weights sum under 1 (a mask keeping few pixels)
            mse = (err.mean(1) * b["weight"]).sum() / b["weight"].sum().clamp(min=1e-8)
        if not mse.requires_grad:  # no sample hit an occupied cell: keep the step well defined
            mse = mse + 0.0 * sum(p.sum() for p in model.parameters())
        terms, stats = {"mse": mse}, {"psnr_train": mse_to_psnr(float(mse.detach())), "rays": total,
                                      "samples_per_ray": samples / total}
        if b["depth"] is not None:
            terms["depth"] = depth_loss(out["depth"][n:], b["depth"], out["opacity"][n:])
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
        collapsed = self.collapse.update(self.last_step, out["opacity"][:n].detach(), stats["psnr_train"])
        if collapsed:
            warnings.warn(collapsed, RwfWarning, stacklevel=2)
        # adapt the colour ray count toward target_samples per step, all rays counted (geometric step, bounded)
        want = total * (self.cfg.target_samples / max(samples, 1)) ** 0.5 - (total - n)
        self.n_rays = int(min(max(want, self.cfg.min_rays), self.cfg.max_rays))
        return terms, stats

    def evaluate(self, model: NeRFModel) -> dict:
        split = self.val if self.val is not None else refined_split(model, self.train)
        scores = []
        for i in range(min(self.cfg.val_images, len(split))):
            pred, target = render_and_target(model, split, i, self.cfg.background, trained=self.val is None)
            scores.append(psnr(pred, target))
            if self.run_dir is not None and i == 0:  # periodic validation render: truth | prediction
                from .imgio import write_image  # noqa: PLC0415

                (self.run_dir / VAL_RENDERS).mkdir(exist_ok=True)
                write_image(self.run_dir / VAL_RENDERS / f"step_{self.last_step + 1:06d}.png",
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


def render_and_target(model: NeRFModel, split: PosedImages, i: int, background: str, trained: bool = False):
    """Render image i of a split and its ground truth on the evaluation background: (H, W, 3) each. ``trained``: the
    split is the training split, in the fit's order, so image i is rendered with its own appearance code (where the
    field has them), as nerfstudio renders a training camera; other views get the codes' mean."""
    bg = torch.ones(3) if eval_background(background) == "white" else torch.zeros(3)
    rgba = split.image(i)
    target = composite_background(rgba.reshape(-1, 4), bg).reshape(*rgba.shape[:2], 3)
    near = far = None
    if split.near_far is not None:
        near, far = float(split.near_far[i, 0]), float(split.near_far[i, 1])
    out = model.render_camera(split.cameras[i], image_idx=i if trained else None, near=near, far=far)
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
                 renders: dict | None = None, progress: bool | None = False, split: str = "test") -> dict:
    """Mean per-image PSNR and SSIM over ``n_images`` evenly spaced test images (None: all), and each image's own
    figures under ``views`` (its path from the split's folder, :func:`view_names`; psnr, ssim, lpips: to find the
    views a fit gets wrong); ``renders``, when
    given, receives {index: (prediction, target)} of each image scored (the fit reuses image 0's for its view).

    ``progress``: a bar on stderr over the views (``split`` names them), each view's PSNR beside it; None: a bar on a
    terminal, else one line per view (a log: ``rwf eval`` of 200 views ran half an hour without a word). A
    full-size render of a view can take minutes on a CPU, longer than a short fit's training."""
    from tqdm import tqdm  # noqa: PLC0415

    count = len(test) if not n_images else min(n_images, len(test))
    picks = np.unique(np.linspace(0, len(test) - 1, count).round().astype(int))
    p, s, lp = [], [], []
    lpips_score, lpips_note = lpips_metric()
    bar = tqdm(picks, desc=f"{split} views", unit="view", disable=None if progress is None else not progress,
               dynamic_ncols=True, leave=False, file=sys.stderr, mininterval=0)  # each view: seconds to minutes
    lines = progress is None and bar.disable  # no terminal: a line per view instead
    names = view_names(test)
    start = time.perf_counter()
    for i in bar:
        pred, target = render_and_target(model, test, int(i), background, trained=split == "train")
        if renders is not None and i == 0:
            renders[0] = (pred, target)
        p.append(psnr(pred, target))
        s.append(ssim(pred.numpy(), target.numpy()))
        if lpips_score is not None:
            try:
                lp.append(lpips_score(pred.numpy(), target.numpy()))
            except Exception as e:  # noqa: BLE001  (an optional metric: absent, the fit's scores are not lost)
                lpips_score, lp, lpips_note = None, [], f"absent: {e if isinstance(e, ValueError) else repr(e)}"
        bar.set_postfix_str(f"view {int(i)}: {p[-1]:.2f} dB", refresh=False)
        if lines:
            print(f"rwf: {split} view {len(p)}/{len(picks)} ({names[int(i)]}): {p[-1]:.2f} dB, "
                  f"{time.perf_counter() - start:.0f} s so far", file=sys.stderr, flush=True)
    bar.close()
    views = [{"image": names[int(i)], "psnr": float(p[k]), "ssim": float(s[k]),
              "lpips": float(lp[k]) if lp else None} for k, i in enumerate(picks)]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "test_images": len(picks),
            "lpips": float(np.mean(lp)) if lp else None, "lpips_note": lpips_note, "views": views}


def view_names(split: PosedImages) -> list[str]:
    """Each image of a split by its path from the folder holding them all (its file name when they share one), so
    that left/0001.png and right/0001.png stay apart; the file names when the images came from no files."""
    if not split.paths:
        return list(split.names)
    try:
        top = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in split.paths])
    except ValueError:  # paths on different drives (Windows)
        return list(split.names)
    return [Path(os.path.relpath(os.path.abspath(p), top)).as_posix() for p in split.paths]


def _absent(e: UserError) -> bool:
    """Whether a loader error only says that a split is absent (no file for it, or no frame of it on disk)."""
    return "no transforms_" in str(e) or "no frame with an existing image" in str(e)


def optional_split(data: str, split: str, downscale: int, indices=None) -> PosedImages | None:
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
           test: PosedImages | None = None, progress: bool = False) -> dict:
    """Final metrics on the test images (``test``, loaded before training; else the val, else the train split,
    named in ``psnr_split``), a test render (the first image scored), curve.png and metrics.json. ``progress``: say
    on stderr how many views of what size are rendered, and a bar over them (after a short fit these renders can
    take far longer than the training: 20 steps in 69 s, then 30 min for 9 views of 200 px)."""
    from .imgio import write_image  # noqa: PLC0415
    from .plots import curve_png  # noqa: PLC0415

    open_levels(model, None, None)  # scored with every level, as rendered later (a fit stopped early as well)
    train = refined_split(model, task.train)
    split, test = next((name, s) for name, s in (("test", test), ("val", task.val), ("train", train)) if s)
    # the test split came loaded with --eval-images of its views, the val split with --val-images; the training
    # split, scored when the dataset holds no other, has them all: --eval-images of them too (100 full-size views
    # of a capture with only a train file took hours on a CPU after a short fit)
    n_images = min(cfg.eval_images, len(test)) if split == "train" else len(test)
    first = {}
    if progress:
        sizes = sorted({(int(w), int(h)) for w, h in zip(test.cameras.width, test.cameras.height)})
        size = f"{sizes[0][0]}x{sizes[0][1]}" + (f" to {sizes[-1][0]}x{sizes[-1][1]}" if len(sizes) > 1 else "")
        print(f"rwf: scoring the fit: rendering {n_images} {split} view{'s' * (n_images != 1)} at {size} and "
              "training view 0", file=sys.stderr)
    metrics = test_metrics(model, test, cfg.background, n_images, renders=first, progress=progress, split=split)
    if model.pose_correction is not None:
        metrics.update(write_refined_cameras(run, model.pose_correction, task.train, cfg.data, task.train.paths))
    # scoring the training split rendered its view 0 just so (its own appearance code): not twice
    train_view = first[0] if split == "train" else render_and_target(model, train, 0, cfg.background, trained=True)
    metrics.update(psnr_split=split, psnr_train=psnr(*train_view),
                   steps=trainer.step_idx,
                   seconds=round(trainer.seconds, 3), param=cfg.field.trunk.param,
                   samples_per_s=task.total_samples / max(trainer.seconds, 1e-9),
                   occupied=model.grid.occupied_fraction)
    pred, target = first[0]
    write_image(run / "test_view.png", np.concatenate([target.numpy(), pred.numpy()], axis=1))
    curve_png(run / "curve.png", {cfg.field.trunk.param: trainer.history}, title="validation PSNR")
    write_json(run / METRICS, metrics)
    return metrics
