"""An SDF fit's options: the command line, turned into an ``SDFConfig`` and checked before anything is written."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import UserError, ignored_options
from .field_options import ALIASES as MODEL_ALIASES
from .field_options import (ModelDefaults, TrainingDefaults, add_model_arguments, add_training_arguments,
                            model_from_args, record_defaults, train_from_args, typed)
from .mesh import check_grid_res
from .shape_task import BUILTIN, HISTORY_POINTS, LOSSES, TARGETS, SDFConfig

MAX_POINTS = 2**24  # training pool, IoU test points per set, surface samples per mesh (a few hundred MB each)
MAX_VOTE_DIRS = 255
MAX_VIEW_RES = 2048  # pixels per side of a preview or render view

ALIASES = {**MODEL_ALIASES, "eikonal": ("train.loss_weights.eikonal",), "normal": ("train.loss_weights.normal",)}
"""config entries of the fit options not named like them, for the --resume check (``resume.option_clashes``)"""


def config_from_args(args) -> SDFConfig:
    enc, mlp = model_from_args(args)
    if enc.kind == "hashgrid":
        enc.origin = -0.5  # shapes live in [-0.5, 0.5]^3
    weights = {k: w for k, w in (("eikonal", args.eikonal), ("normal", args.normal)) if w > 0}
    if args.target == "occupancy" and args.loss is not None:
        raise UserError("--loss applies to --target sdf only (occupancy is fitted with BCE)")
    if args.clamp is not None and args.loss != "clamped" and not getattr(args, "resume", False):
        raise UserError("--clamp applies to --loss clamped only")  # resuming, the run's saved loss decides
    if args.vote_dirs % 2 == 0 and args.vote_dirs:  # a new fit only: runs saved with an even count still load
        raise UserError(f"--vote-dirs must be odd so the majority vote has no ties, got {args.vote_dirs}")
    if not getattr(args, "resume", False):  # options the fit would not use (resuming, the run's config decides)
        losses = [f"--{n}" for n in ("eikonal", "normal") if typed(args, n)]
        if args.target == "occupancy" and losses:
            raise ignored_options(losses, "--target sdf only")
        if typed(args, "vote_dirs") and args.path and Path(args.path).is_file():
            from .point_cloud import is_point_cloud_file  # noqa: PLC0415

            try:
                cloud = is_point_cloud_file(args.path)
            except OSError:  # unreadable: the loader says so
                cloud = False
            if cloud:
                raise ignored_options(["--vote-dirs"], "a mesh source; a point cloud's inside is decided by its "
                                                       "normals (the nearest points' tangent planes)")
        if typed(args, "near_sigmas") and args.mix[1] == args.mix[2] == 0:
            raise UserError("--near-sigmas applies to the near and far --mix shares, both 0 here")
        if args.batch > args.pool:  # each step draws its batch from the pool: it would be cut to the pool's size
            raise UserError(f"--batch {args.batch} is more than the --pool of {args.pool} points each step draws "
                            f"from; raise --pool or lower --batch")
    train = train_from_args(args, 1000, weights)
    if args.path and Path(args.path).is_symlink() and not Path(args.path).exists():  # resolved, only its target
        raise UserError(f"{args.path}: a link to {os.readlink(args.path)}, which does not exist")  # would be named
    return SDFConfig(path=str(Path(args.path).resolve()) if args.path else None, target=args.target, fill=args.fill,
                     vote_dirs=args.vote_dirs, pool=args.pool, refresh_every=args.refresh_every, batch=args.batch,
                     mix=tuple(args.mix), near_sigmas=tuple(args.near_sigmas), loss=args.loss or "l1",
                     clamp=0.1 if args.clamp is None else args.clamp,
                     eval_points=args.eval_points, mesh_res=args.mesh_res, metric_points=args.metric_points,
                     preview_res=args.preview_res, encoding=enc, mlp=mlp, train=train, model_seed=args.seed)


def check_options(cfg: SDFConfig) -> None:
    """UserError for options that cannot work together or would exhaust memory (before anything is written)."""
    if cfg.target not in TARGETS or cfg.loss not in LOSSES:
        raise UserError(f"--target {cfg.target!r} / --loss {cfg.loss!r}: expected one of {TARGETS} / {LOSSES}")
    if not 0 < cfg.fill <= 1:
        raise UserError(f"--fill must be in (0, 1], got {cfg.fill}")
    if len(cfg.mix) != 4 or min(cfg.mix) < 0 or sum(cfg.mix) <= 0:
        raise UserError("--mix takes 4 non-negative shares (surface near far uniform) with a positive sum")
    if cfg.target == "occupancy" and cfg.train.loss_weights:
        raise UserError("--eikonal and --normal apply to --target sdf only")
    if cfg.train.loss_weights.get("normal", 0) > 0 and cfg.mix[0] <= 0:
        raise UserError("--normal needs surface points: the first --mix share (surface) is 0")
    check_grid_res(cfg.mesh_res, "--mesh-res")
    for option, value, hi in (("--preview-res", cfg.preview_res, MAX_VIEW_RES), ("--pool", cfg.pool, MAX_POINTS),
                              ("--eval-points", cfg.eval_points, MAX_POINTS),
                              ("--metric-points", cfg.metric_points, MAX_POINTS),
                              ("--vote-dirs", cfg.vote_dirs, MAX_VOTE_DIRS)):
        if not 0 <= value <= hi:
            raise UserError(f"{option} must be at most {hi}, got {value}")


# -- options ------------------------------------------------------------------------------------------------------
def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", type=float, default=None,
                   help="sdf runs: the iso-value (default 0: the surface); for --target sdf a signed distance in the "
                        "mesh's own units, like the exported mesh (0.01: the surface moved 0.01 outward), for "
                        "--target occupancy the logit (0 = p 0.5)")


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_run_arguments, nonneg_int, positive_float, positive_int  # noqa: PLC0415

    p.add_argument("path", nargs="?", metavar="MESH",
                   help=f"OBJ, PLY, STL, OFF or GLB mesh, or an oriented point cloud: PLY without faces or XYZ text "
                        f"(x y z [nx ny nz] per line; missing normals are estimated) (default: a built-in {BUILTIN})")
    add_run_arguments(p, "sdf")
    d = p.add_argument_group("data")
    d.add_argument("--target", choices=TARGETS, default="sdf", help="sdf (default) or occupancy (BCE, logits)")
    d.add_argument("--fill", type=positive_float, default=0.9,
                   help="longest side of the mesh in the unit cube (default 0.9)")
    d.add_argument("--batch", type=positive_int, default=4096, help="points per step (default 4096)")
    d.add_argument("--pool", type=positive_int, default=2**17,
                   help="pool of points with exact targets (default 131072)")
    d.add_argument("--refresh-every", type=positive_int, default=100, help="steps between pool redraws (default 100)")
    d.add_argument("--mix", type=nonneg_float, nargs=4, default=[0.25, 0.25, 0.2, 0.3],
                   metavar=("SURF", "NEAR", "FAR", "UNI"),
                   help="pool shares: on the surface, thin shell, wide band, uniform in the box (default 0.25 0.25 "
                        "0.2 0.3); --target occupancy draws the surface share in the thin shell (a point on the "
                        "surface has no inside/outside label)")
    d.add_argument("--near-sigmas", type=positive_float, nargs=2, default=[0.005, 0.05], metavar=("THIN", "WIDE"),
                   help="std of the two shells around the surface, the near and far --mix shares (unit-cube units; "
                        "default 0.005 0.05)")
    d.add_argument("--vote-dirs", type=nonneg_int, default=0,
                   help="rays voting inside/outside per point, an odd number; 0 (the default): 3 for a watertight "
                        "mesh, else 15")
    record_defaults(p, d)
    add_model_arguments(p, ModelDefaults(features=128, sigma=3.0, n_freqs=8, width=128, trainable_features=False))
    lo = p.add_argument_group("loss")
    lo.add_argument("--loss", choices=LOSSES, default=None, help="sdf target: l1 (default) or clamped (DeepSDF)")
    lo.add_argument("--clamp", type=positive_float, default=None,
                    help="clamped loss: clamp distance, in unit-cube units (default 0.1)")
    lo.add_argument("--eikonal", type=nonneg_float, default=0.0, help="weight of the eikonal term (default 0: off)")
    lo.add_argument("--normal", type=nonneg_float, default=0.0,
                    help="weight of the surface-normal term (default 0: off)")
    record_defaults(p, lo)
    add_training_arguments(p, TrainingDefaults(steps=1000, schedule="exp", decay_every=5000, eval_every=100,
                                               what_eval="IoU evaluations"))
    o = p.add_argument_group("outputs")
    o.add_argument("--mesh-res", type=positive_int, default=128,
                   help="grid of mesh.ply and the metrics (default 128)")
    o.add_argument("--preview-res", type=positive_int, default=128, help="pixels per preview view (default 128)")
    o.add_argument("--eval-points", type=positive_int, default=2**18,
                   help="IoU test points per set (default 2^18); the IoU logged during training (history.csv, the "
                        f"progress bar) uses the first {HISTORY_POINTS} of them, metrics.json all")
    o.add_argument("--metric-points", type=positive_int, default=100_000,
                   help="surface samples per mesh for Chamfer, F-score, normal consistency (default 100000)")
