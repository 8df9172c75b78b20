"""fit an image: a coordinate MLP maps pixel positions to colors (Tancik et al. 2020, sec. 6)

Coordinates are pixel centres divided by the long side, so x in [0, W/L] and y in [0, H/L] with L = max(H, W):
a Fourier sigma means the same thing on square and non-square images, and ``rwf render --scale s`` samples the
same continuous field on a finer lattice. The Tancik split trains on pixels [::2, ::2] and reports PSNR on the
offset lattice [1::2, 1::2].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import RwfWarning, UserError
from .evalchunk import eval_chunk
from .field_options import (ALIASES, LR_WARMUP, ModelDefaults, TrainingDefaults, add_model_arguments,
                            add_training_arguments, checked_field, default_lr_warmup, model_from_args,
                            model_size_problem, train_from_args)
from .fields import EncodingConfig, MLPConfig, NeuralField, config_dict, from_dict
from .imgio import exif_orientation, output_image_path, read_image, upright, write_image
from .metrics import mse_to_psnr, psnr, ssim, steps_to_reach
from .plots import crops_png, curve_png, error_map
from .resume import check_source_unchanged, compare_runs, fit_each, resume_run_config, resume_trainer
from .rundir import (CHECKPOINT, COMPARE_PARAMS, CONFIG, METRICS, check_out_holds_no_input, checkpoint_mismatch,
                     check_output_file, json_safe, load_run_model, prepare_run_dir, read_json, refuse_source_as_output,
                     write_json)
from .trainer import ConstantWatch, TrainConfig, Trainer, resolve_device

BUILTIN = "astronaut"  # scikit-image's photo (NASA, public domain), shipped inside the installed package
SPLITS = ("tancik", "all")
IMAGE_WIDTH = 256  # the MLP's default width (the paper's); wider fits warm up (--lr-warmup)
MAX_RENDER_PIXELS = 2**26  # rwf render --scale: at most about 8192 x 8192 pixels (peak about 40 bytes a pixel)


@dataclass
class ImageConfig:
    path: str | None = None
    """image file; None uses the built-in photo"""
    size: int = 256
    """long side after resizing (images are never enlarged)"""
    split: str = "tancik"
    """tancik: train on [::2, ::2], test on [1::2, 1::2]; all: train and test on every pixel"""
    batch: int = 0
    """pixels per step; 0 means every training pixel (full batch)"""
    encoding: EncodingConfig = field(default_factory=lambda: EncodingConfig(kind="fourier", m=256, sigma=10.0))
    mlp: MLPConfig = field(default_factory=lambda: MLPConfig(depth=4, width=256, out_activation="sigmoid",
                                                            param="rwf"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=500, eval_every=25, ckpt_every=250))
    model_seed: int = 0
    """seed of the Fourier matrix, W0 and the RWF scales"""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mlp"] = config_dict(self.mlp)
        return {"kind": "image", **d}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageConfig":
        return cls(path=d.get("path"), size=d["size"], split=d["split"], batch=d["batch"],
                   encoding=from_dict(EncodingConfig, d["encoding"]), mlp=from_dict(MLPConfig, d["mlp"]),
                   train=from_dict(TrainConfig, d["train"]), model_seed=d.get("model_seed", 0))

    @classmethod
    def from_run(cls, path: Path, d: dict) -> "ImageConfig":
        """``from_dict`` of a saved config.json, with UserError (naming the file) when it is not a valid one."""
        try:
            if not isinstance(d, dict) or d.get("kind") != "image":
                raise ValueError(f"kind {d.get('kind') if isinstance(d, dict) else None!r}, not 'image'")
            cfg = cls.from_dict(d)
            if cfg.path is not None and not isinstance(cfg.path, str):
                raise TypeError(f"path {cfg.path!r}")
            for name in ("size", "batch"):
                if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < (name == "size"):
                    raise ValueError(f"{name} {getattr(cfg, name)!r}")
            if cfg.split not in SPLITS:
                raise ValueError(f"split {cfg.split!r}")
            problem = model_size_problem(cfg.encoding, cfg.mlp, 2)
            if problem:  # a hand-edited depth or width: building it would take minutes or exhaust memory
                raise ValueError(problem)
            build_model(cfg, 1)  # the encoding and the MLP can be built
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{path}: not a valid image run config ({type(e).__name__}: {e})") from None
        return cfg


# -- data ---------------------------------------------------------------------------------------------------------
def load_target(cfg: ImageConfig) -> tuple[np.ndarray, dict]:
    """The image to fit, resized so its long side is at most ``cfg.size``: float32 (H, W, C) and its info."""
    if cfg.path is None:
        from skimage import data  # noqa: PLC0415

        pixels = getattr(data, BUILTIN)().astype(np.float32) / 255.0
        info = {"format": "builtin", "name": BUILTIN, "bit_depth": 8, "channels": 3}
    else:
        pixels, info = read_image(cfg.path, grey_alpha=True)
        info["transfer"] = transfer_of(cfg.path)
        info["sha256"] = hashlib.sha256(Path(cfg.path).read_bytes()).hexdigest()
        orientation = exif_orientation(cfg.path)  # a phone's portrait photo, stored sideways: fitted as it is seen
        if orientation != 1:
            pixels, info["exif_orientation"] = upright(pixels, orientation), orientation
            info["height"], info["width"] = pixels.shape[:2]
    if pixels.max() > 1.0 or pixels.min() < 0.0:
        print(f"rwf: warning: {cfg.path}: values outside [0, 1] are clipped (PSNR is defined on [0, 1])",
              file=sys.stderr)
        pixels = np.clip(pixels, 0.0, 1.0)
    h, w = pixels.shape[:2]
    info["original_height"], info["original_width"] = h, w
    if max(h, w) > cfg.size:
        k = cfg.size / max(h, w)
        pixels = shrink(pixels, (max(1, round(h * k)), max(1, round(w * k)), pixels.shape[2]))
    if cfg.split == "tancik" and min(pixels.shape[:2]) < 2:
        resized = (h, w) != pixels.shape[:2]
        raise UserError(f"{cfg.path or BUILTIN}: the tancik split needs at least 2x2 pixels, the image is "
                        f"{pixels.shape[1]}x{pixels.shape[0]}{f' after --size {cfg.size}' if resized else ''} "
                        f"(use --split all{', or a larger --size' if resized else ''})")
    return pixels, info


def transfer_of(path) -> str:
    """How a source file encodes light: "linear" for OpenEXR (scene-linear by its definition), "srgb" for the rest
    (PNG, JPEG and TIFF, display-referred). A fit works on the stored values; :func:`encoded_for` converts where an
    output file encodes otherwise."""
    return "linear" if path is not None and Path(path).suffix.lower() == ".exr" else "srgb"


def run_transfer(cfg_dict: dict) -> str:
    """A run's source encoding: config.json's ``source.transfer``, else (runs before 1 Dec 2026) its path's."""
    source = cfg_dict.get("source") if isinstance(cfg_dict.get("source"), dict) else {}
    return source["transfer"] if source.get("transfer") in ("linear", "srgb") else transfer_of(cfg_dict.get("path"))


def encoded_for(pixels: np.ndarray, transfer: str, out) -> np.ndarray:
    """The fit's values ``pixels`` (H, W, C) as the file ``out`` stores light: a linear (EXR) fit written to a PNG,
    JPEG or TIFF is sRGB-encoded, an sRGB fit written to an EXR decoded to linear (a linear EXR's reconstruction.png
    came out dark: mean 0.28 against the photo's 0.45); the alpha channel of 2 or 4 channels as it is."""
    to_exr = Path(out).suffix.lower() == ".exr"
    if (transfer == "linear") == to_exr:
        return pixels
    from .mesh_io import linear_to_srgb, srgb_to_linear  # noqa: PLC0415

    colour = pixels.shape[2] - 1 if pixels.shape[2] in (2, 4) else pixels.shape[2]
    out_pixels = np.array(pixels, dtype=np.float32, copy=True)
    convert = srgb_to_linear if to_exr else linear_to_srgb
    out_pixels[..., :colour] = convert(np.clip(out_pixels[..., :colour].astype(np.float64), 0.0, 1.0))
    return out_pixels


def as_fitted(image: np.ndarray, channels) -> np.ndarray:
    """``image`` as a run with ``channels`` was fitted to it: a grey + alpha image (2 channels) was read as its grey
    alone before 28 Nov 2026 (1 channel) and as RGBA, the grey repeated, until 30 Nov 2026 (4); such runs keep
    evaluating, rendering and resuming as fitted."""
    if image.shape[2] == 2 and channels == 4:
        return np.concatenate([np.repeat(image[..., :1], 3, axis=2), image[..., 1:]], axis=2)
    if image.shape[2] == 2 and channels == 1:
        return image[..., :1]
    return image


def shrink(pixels: np.ndarray, shape: tuple) -> np.ndarray:
    """``pixels`` (H, W, C) resized to ``shape`` by skimage's ``resize`` (linear, anti-aliased). With an alpha channel
    (C 2 or 4, straight alpha, last) the colour is averaged weighted by alpha (premultiplied, then divided by the new
    alpha), so transparent pixels do not darken the edge they border; where the new alpha is 0 the colour is the
    plain average. Unweighted, an opaque white edge next to transparent black came out grey (0.26 at alpha 0.26)."""

    from skimage.transform import resize  # noqa: PLC0415

    def scaled(x):
        return resize(x, (*shape[:2], x.shape[2]), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)

    if pixels.shape[2] not in (2, 4):
        return scaled(pixels)
    alpha = pixels[..., -1:]
    weighted = scaled(np.concatenate([pixels[..., :-1] * alpha, alpha], axis=-1))
    new_alpha = np.clip(weighted[..., -1:], 0.0, 1.0)
    seen = new_alpha > 1e-6
    colour = weighted[..., :-1] / np.where(seen, new_alpha, 1.0)
    if not seen.all():  # wholly transparent: the plain average (a second resize, only where some pixel needs it)
        colour = np.where(seen, colour, scaled(pixels[..., :-1]))
    return np.concatenate([np.clip(colour, 0.0, 1.0), new_alpha], axis=-1).astype(np.float32)


def pixel_coords(h: int, w: int, scale: float = 1.0) -> torch.Tensor:
    """Centres of an (h*scale) x (w*scale) lattice over an h x w image: (H', W', 2) as (x, y) / max(h, w)."""
    hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
    ys = (torch.arange(hs, dtype=torch.float32) + 0.5) * (h / hs)
    xs = (torch.arange(ws, dtype=torch.float32) + 0.5) * (w / ws)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H', W', 2)
    return grid / max(h, w)


def split_pixels(image: np.ndarray, split: str) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    if split == "tancik":
        return (slice(0, None, 2), slice(0, None, 2)), (slice(1, None, 2), slice(1, None, 2))
    return (slice(None), slice(None)), (slice(None), slice(None))


FEATURE_CACHE_BYTES = 256 * 2**20
"""the most memory the training pixels' fixed input features may take to be computed once (``ImageTask``)"""


class ImageTask:
    """Regression of pixel colors on a pixel lattice; see the trainer's task protocol."""

    def __init__(self, image: np.ndarray, cfg: ImageConfig, device: torch.device):
        self.image, self.cfg, self.device = image, cfg, device
        coords = pixel_coords(*image.shape[:2])
        target = torch.from_numpy(image)
        train, test = split_pixels(image, cfg.split)
        self.train_slices, self.test_slices = train, test
        self.same_split = train == test  # "all": the held-out pixels are the training pixels
        self.train_shape = target[train].shape  # (h, w, C) lattices, kept as images for SSIM
        self.test_shape = target[test].shape
        self.train_x = coords[train].reshape(-1, 2).to(device)
        self.train_y = target[train].reshape(-1, image.shape[2]).to(device)
        self.test_x = coords[test].reshape(-1, 2).to(device)
        self.test_y = target[test].reshape(-1, image.shape[2]).to(device)
        self.dead = ConstantWatch("test pixel", self.test_y)

    def batch(self, step: int, generator: torch.Generator):
        n = self.train_x.shape[0]
        if self.cfg.batch <= 0 or self.cfg.batch >= n:
            return None  # full batch
        return torch.randint(n, (self.cfg.batch,), generator=generator).to(self.device)

    def loss(self, model, idx):
        y = self.train_y if idx is None else self.train_y[idx]
        features = self._fixed_features(model)
        if features is not None:  # the same inputs every step through an encoding that does not learn: once
            pred = model.mlp(features if idx is None else features[idx])
        else:
            pred = model(self.train_x if idx is None else self.train_x[idx])
        mse = torch.mean((pred - y) ** 2)
        return {"mse": mse}, {"psnr_train": mse_to_psnr(float(mse.detach()))}

    def _fixed_features(self, model) -> torch.Tensor | None:
        """The encoding of every training pixel, computed once, when the model's encoding has nothing to learn
        (Fourier features with a fixed B, positional encoding; not --trainable-features, not the hash grid) and
        they take at most ``FEATURE_CACHE_BYTES``: about 8 % of a full-batch step was spent recomputing them.
        None otherwise (the model is called on the coordinates, as before)."""
        encoding = getattr(model, "encoding", None)
        if encoding is None or not hasattr(model, "mlp") or any(p.requires_grad for p in encoding.parameters()):
            return None
        cached = getattr(self, "_features", None)
        if cached is not None and cached[0] is encoding:
            return cached[1]
        if self.train_x.shape[0] * encoding.out_dim * 4 > FEATURE_CACHE_BYTES:
            return None
        with torch.no_grad():
            features = torch.cat([encoding(c) for c in self.train_x.split(65536)])
        self._features = (encoding, features)
        return features

    def evaluate(self, model) -> dict:
        pred_test = predict(model, self.test_x)
        self.dead.check(pred_test)
        pred_train = pred_test if self.same_split else predict(model, self.train_x)
        return {"psnr": psnr(pred_test, self.test_y), "psnr_train": psnr(pred_train, self.train_y)}

    def predict_image(self, model) -> torch.Tensor:
        """The model on every pixel centre of the image: (H, W, C), unclamped, on the task's device."""
        h, w, c = self.image.shape
        return predict(model, pixel_coords(h, w).reshape(-1, 2).to(self.device)).reshape(h, w, c)

    def final_metrics(self, model, full: torch.Tensor | None = None) -> dict:
        """Held-out and training PSNR, and SSIM on the held-out lattice seen as an image; from ``full``
        (:meth:`predict_image`) when the caller has it (a fit writes the reconstruction from it too: one pass over
        the image instead of three)."""
        full = self.predict_image(model) if full is None else full
        c = full.shape[-1]
        pred_test = full[self.test_slices].reshape(-1, c)
        return {"psnr": psnr(pred_test, self.test_y),
                "psnr_train": psnr(full[self.train_slices].reshape(-1, c), self.train_y),
                "ssim": ssim(pred_test.reshape(self.test_shape).cpu().numpy(),
                             self.test_y.reshape(self.test_shape).cpu().numpy())}


@torch.no_grad()
def predict(model, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """model(x) in chunks of ``chunk`` coordinates; x (N, 2) -> (N, C)."""
    model.eval()
    chunk = eval_chunk(x.device, chunk)
    if x.shape[0] == 0:
        return model(x)
    return torch.cat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)], dim=0)


@torch.no_grad()
def render(model, h: int, w: int, scale: float, device: torch.device) -> np.ndarray:
    """The field on a (h*scale, w*scale) lattice: float32 (H', W', C)."""
    coords = pixel_coords(h, w, scale)
    out = predict(model, coords.reshape(-1, 2).to(device))
    return out.reshape(*coords.shape[:2], -1).clamp(0, 1).cpu().numpy()


def build_model(cfg: ImageConfig, channels: int) -> NeuralField:
    return NeuralField(2, channels, cfg.encoding, cfg.mlp, seed=cfg.model_seed)


# -- one run ------------------------------------------------------------------------------------------------------
def fit_one(cfg: ImageConfig, out: Path, image: np.ndarray, info: dict, resume: bool, force: bool,
            progress: bool, label: str = "") -> tuple[dict, np.ndarray, list[dict]]:
    """Train one image run into ``out`` and write every contract file.

    Returns: metrics.json's content, the reconstruction (H, W, C) and the history rows.
    """
    run = prepare_run_dir(out, force=force, resume=resume)
    device = resolve_device(cfg.train.device)
    task = ImageTask(image, cfg, device)
    model = build_model(cfg, image.shape[2])
    trainer = Trainer(model, task, cfg.train, run_dir=run, progress=progress)
    if resume:
        resume_trainer(trainer, run)  # before config.json is rewritten: a refused resume changes nothing
    write_json(run / CONFIG, {**cfg.to_dict(), "height": image.shape[0], "width": image.shape[1],
                              "channels": image.shape[2], "source": info})
    trainer.fit()
    full = task.predict_image(trainer.model)
    metrics = {**task.final_metrics(trainer.model, full), "steps": trainer.step_idx,
               "seconds": round(trainer.seconds, 3), "param": cfg.mlp.param}
    best = max(trainer.history, key=lambda r: r["psnr"]) if trainer.history else None
    if best:
        metrics.update(best_psnr=best["psnr"], best_step=best["step"])
    recon = full.clamp(0, 1).cpu().numpy()  # what render() at scale 1 gives
    bits = 16 if info.get("bit_depth", 8) > 8 else 8
    write_image(run / "reconstruction.png", encoded_for(recon, info.get("transfer", "srgb"), ".png"), bits)
    write_image(run / "error.png", error_map(recon, image))
    curve_png(run / "curve.png", {cfg.mlp.param: trainer.history}, title=label or cfg.mlp.param)
    write_json(run / METRICS, metrics)
    return metrics, recon, trainer.history


def _num(v, digits: int) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _config_from_args(args) -> ImageConfig:
    enc, mlp = model_from_args(args, out_activation="sigmoid")
    return ImageConfig(path=str(Path(args.path).resolve()) if args.path else None, size=args.size,
                       split=args.split, batch=args.batch, encoding=enc, mlp=mlp,
                       train=train_from_args(args, 500, lr_warmup=default_lr_warmup(
                           mlp.width, IMAGE_WIDTH, enc.kind == "hashgrid")), model_seed=args.seed)


def fit(args) -> int:
    compare = args.compare
    default_name = Path(args.path).stem if args.path else BUILTIN
    out = Path(args.out or Path("runs") / f"image-{default_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if compare and args.param != "rwf":
        raise UserError(f"--param {args.param}: --compare trains every parameterization ({', '.join(COMPARE_PARAMS)})")
    saved = None
    if args.resume:
        cfg, saved = resume_run_config(out, "image", args, ImageConfig.from_dict, _config_from_args,
                                       add_fit_arguments, ALIASES)
        cfg = ImageConfig.from_run(out / (Path(COMPARE_PARAMS[0]) / CONFIG if compare else CONFIG), cfg.to_dict())
    else:
        cfg = _config_from_args(args)
    cfg.train.device = args.device if args.device != "auto" else cfg.train.device
    image, info = load_target(cfg)  # validate the input before anything is written
    image = as_fitted(image, saved.get("channels") if isinstance(saved, dict) else None)
    checked_field(lambda: build_model(cfg, image.shape[2]))  # and the field: no run folder for an impossible one
    if not args.resume:
        check_out_holds_no_input(out, [cfg.path])
    if args.resume:
        check_source_unchanged(saved, info, cfg.path)
    resolve_device(cfg.train.device)
    if not compare:
        m = fit_one(cfg, out, image, info, args.resume, args.force, not args.quiet)[0]
        print(f"{out}: psnr {_num(m['psnr'], 2)} dB (train {_num(m['psnr_train'], 2)}), ssim {_num(m['ssim'], 4)}, "
              f"{m['steps']} steps in {m['seconds']:.1f} s")
        return 0
    # --compare: plain, wn and rwf with identical seed, data and budget, each a run of its own under OUT
    root, runs = compare_runs(cfg, out, args.resume, args.force)

    def fit_param(param, sub, sub_dir, resume):
        m, recon, history = fit_one(sub, sub_dir, image, info, resume, False, not args.quiet, param)
        print(f"{param:>5}: psnr {_num(m['psnr'], 2)} dB, {m['seconds']:.1f} s")
        return m, recon, history

    done, results = fit_each(runs, fit_param)
    write_compare(root, results, {p: done[p][2] for p in done}, {"target": image, **{p: done[p][1] for p in done}})
    return 0


def write_compare(root: Path, results: dict, histories: dict, images: dict) -> None:
    """compare.json, compare.md (table) and compare.png (overlaid curves, side-by-side crops). A parameterization
    that diverged has ``{"param", "diverged"}`` in ``results`` and nothing in ``histories`` and ``images``."""
    plain_final = results["plain"].get("psnr")
    for param, rows in histories.items():  # only for a run that ends at or above plain's final: one that peaked
        # above it and fell back (rwf 11.92 dB at step 40, 11.54 at its end, plain 11.82) does not match it sooner
        final = results[param].get("psnr")
        held = plain_final is not None and final is not None and final >= plain_final
        results[param]["steps_to_plain_final"] = steps_to_reach(rows, plain_final) if held else None
    write_json(root / "compare.json", results)
    lines = ["| param | test PSNR (dB) | best test PSNR | train PSNR | SSIM | steps to plain's final | seconds |",
             "|---|---|---|---|---|---|---|"]
    for param, m in results.items():
        if "diverged" in m:
            lines.append(f"| {param} | diverged | - | - | - | - | - |")
            continue
        reach = m["steps_to_plain_final"]
        lines.append(f"| {param} | {_num(m['psnr'], 2)} | {_num(m.get('best_psnr', float('nan')), 2)} | "
                     f"{_num(m['psnr_train'], 2)} | {_num(m['ssim'], 4)} | {'-' if reach is None else int(reach)} | "
                     f"{m['seconds']:.1f} |")
    from .rundir import atomic_write_text  # noqa: PLC0415

    atomic_write_text(root / "compare.md", "\n".join(lines) + "\n")
    crops_png(root / "compare.png", images, histories, title="plain vs WN vs RWF (equal seed, data, steps)")


# -- commands on an existing run ----------------------------------------------------------------------------------
def load_model(run: Path, cfg_dict: dict, device_name: str):
    """The run's config (validated), its trained model on the device, the checkpoint state and the device."""
    cfg = ImageConfig.from_run(run / CONFIG, cfg_dict)
    size = {k: cfg_dict.get(k) for k in ("height", "width", "channels")}
    if not all(isinstance(v, int) and v > 0 for v in size.values()) or size["channels"] not in (1, 2, 3, 4):
        raise UserError(f"{run / CONFIG}: not a valid image run config (height, width, channels: {size})")
    device = resolve_device(device_name)
    model = build_model(cfg, size["channels"])
    state = load_run_model(run, model)
    return cfg, model.to(device), state, device


def load_run(run: Path, cfg_dict: dict, device_name: str):
    """The config, the target image (as fitted), the model on the device, the checkpoint state and the device."""
    cfg, model, state, device = load_model(run, cfg_dict, device_name)
    image, info = load_target(cfg)
    image = as_fitted(image, cfg_dict.get("channels"))
    saved_sha = cfg_dict.get("source", {}).get("sha256") if isinstance(cfg_dict.get("source"), dict) else None
    if saved_sha and info.get("sha256") != saved_sha:
        print(f"rwf: warning: {cfg.path} changed since the fit; metrics refer to the new file", file=sys.stderr)
    if image.shape != (cfg_dict["height"], cfg_dict["width"], cfg_dict["channels"]):
        raise UserError(f"{cfg.path}: is now {image.shape[1]}x{image.shape[0]} with {image.shape[2]} channels "
                        f"(after --size), the run was fitted to {cfg_dict['width']}x{cfg_dict['height']} with "
                        f"{cfg_dict['channels']}")
    return cfg, image, model, state, device


def eval_run(run: Path, cfg_dict: dict, args) -> int:
    cfg, image, model, state, device = load_run(run, cfg_dict, args.device)
    try:
        steps, seconds = int(state["step"]), round(float(state["seconds"]), 3)
    except (KeyError, TypeError, ValueError) as e:  # a checkpoint with weights but no training state
        raise checkpoint_mismatch(run / CHECKPOINT, e) from None
    saved = read_json(run / METRICS) if (run / METRICS).is_file() else None  # unreadable: said before any work
    task = ImageTask(image, cfg, device)
    metrics = json_safe({**task.final_metrics(model), "steps": steps, "seconds": seconds, "param": cfg.mlp.param})
    print(json.dumps(metrics))
    if saved is not None:
        saved = saved if isinstance(saved, dict) else {}

        def differs(a, b) -> bool:
            if a is None or b is None or not isinstance(a, (int, float)):
                return (a is None) != (b is None)
            return abs(a - b) > 1e-4
        diff = [k for k in ("psnr", "psnr_train", "ssim") if differs(saved.get(k), metrics[k])]
        if diff:
            print(f"rwf: warning: {', '.join(diff)} differ from {run / METRICS}, the fit's figures (left as they "
                  "are): the source changed since, or the fit ran an earlier version that defined them otherwise",
                  file=sys.stderr)
    return 0


def render_run(run: Path, cfg_dict: dict, args) -> int:
    """The field on a lattice ``--scale`` times the fitted image's; needs the checkpoint, not the source image."""
    h, w = cfg_dict.get("height"), cfg_dict.get("width")
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise UserError(f"{run / CONFIG}: not a valid image run config (height {h!r}, width {w!r})")
    hs, ws = max(1, round(h * args.scale)), max(1, round(w * args.scale))
    if hs * ws > MAX_RENDER_PIXELS:
        raise UserError(f"--scale {args.scale:g}: {ws}x{hs} pixels is more than {MAX_RENDER_PIXELS} "
                        f"(the run is {w}x{h}); use a smaller --scale")
    out = output_image_path(args.out, run / f"render_x{args.scale:g}.png")
    cfg, model, _, device = load_model(run, cfg_dict, args.device)
    refuse_source_as_output(out, cfg.path)
    check_output_file(out, getattr(args, "force", False))
    pixels = render(model, h, w, args.scale, device)
    if pixels.shape[2] in (2, 4) and out.suffix.lower() in (".jpg", ".jpeg"):
        warnings.warn(f"{out}: JPEG has no alpha channel, so the colour is written without it (transparent parts "
                      "show the field's colour there); .png, .tif or .exr keep it", RwfWarning, stacklevel=1)
    source = cfg_dict.get("source") if isinstance(cfg_dict.get("source"), dict) else {}
    bits = 16 if (source.get("bit_depth") or 8) > 8 and out.suffix.lower() == ".png" else 8
    try:
        write_image(out, encoded_for(pixels, run_transfer(cfg_dict), out), bits)
    except ValueError as e:
        raise UserError(f"{out}: cannot write ({e})") from None
    except OSError as e:  # a folder that cannot be written, a full disk: a failure of the machine (exit 1)
        e.filename, e.filename2 = str(out), None  # the output, not the temporary beside it
        raise
    print(f"{out}: {pixels.shape[1]}x{pixels.shape[0]}")
    return 0


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_run_arguments, nonneg_int, positive_int  # noqa: PLC0415

    p.add_argument("path", nargs="?", metavar="PATH", help=f"PNG, JPEG, TIFF or EXR (default: skimage's {BUILTIN})")
    add_run_arguments(p, "image")
    d = p.add_argument_group("data")
    d.add_argument("--size", type=positive_int, default=256, help="resize the long side to at most N (default 256)")
    d.add_argument("--split", choices=SPLITS, default="tancik", help="tancik (default) or all")
    d.add_argument("--batch", type=nonneg_int, default=0, help="random pixels per step (default 0: full batch)")
    add_model_arguments(p, ModelDefaults(features=256, sigma=10.0, n_freqs=10, width=IMAGE_WIDTH))
    add_training_arguments(p, TrainingDefaults(steps=500, schedule="const", decay_every=1000, eval_every=25,
                                               what_eval="held-out evaluations", lr_warmup=LR_WARMUP))
