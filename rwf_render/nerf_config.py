"""A NeRF fit's configuration: the saved settings, their checks, the fit options and the scene presets.

``NeRFConfig`` is what config.json holds; ``check_config`` refuses impossible settings wherever they come from (the
command line, a preset, a saved run); ``config_from_args`` merges options over a preset; ``resume_config_from_args``
reopens a run for ``--resume``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, fields
from dataclasses import field as dc_field
from pathlib import Path

from .errors import UserError
from .field_options import hash_grid_problem, model_size_problem
from .fields import from_dict, typed_settings
from .nerf_data import BACKGROUNDS
from .nerf_field import DENSITY_ACTIVATIONS, NeRFFieldConfig
from .nerf_render import RenderConfig
from .resume import option_clashes, resume_config, typed_options
from .rundir import CHECKPOINT, CONFIG, load_checkpoint, read_json
from .train_config import TrainConfig, check_train_config

@dataclass
class NeRFConfig:
    data: str = ""
    """dataset folder or transforms file"""
    scene: str | None = None
    """preset name, when the fit started from one"""
    downscale: int = 1
    """integer image downscale factor"""
    background: str = "white"
    """white | black | random (random colour per ray in training, white in evaluation) | learned (a colour by
    direction for what lies beyond the scene; images without transparency only, refused at fit start otherwise)"""
    field: NeRFFieldConfig = dc_field(default_factory=NeRFFieldConfig)
    render: RenderConfig = dc_field(default_factory=RenderConfig)
    train: TrainConfig = dc_field(default_factory=lambda: TrainConfig(steps=3000, lr=3e-3, schedule="exp",
                                                                   lr_final=0.1, eval_every=250, ckpt_every=500))
    target_samples: int = 1 << 15
    """samples per training step: the number of rays adapts to keep near it"""
    init_rays: int = 1024
    """rays in the first step"""
    min_rays: int = 64
    """floor on rays per step"""
    max_rays: int = 1 << 16
    """cap on rays per step"""
    depth_rays: int = 256
    """rays through depth samples per step, when the depth loss is on (``train.loss_weights["depth"]`` > 0)"""
    occlusion_rays: int = 256
    """colour rays per step whose first stretch the occlusion loss reads (``train.loss_weights["occlusion"]`` > 0)"""
    occlusion_samples: int = 8
    """points per ray in that stretch (stratified)"""
    occlusion_margin: float = 0.05
    """the stretch, [near, near (1 + margin)], as a fraction of each ray's near bound"""
    occlusion_warmup: int = 0
    """steps over which the occlusion loss's weight rises linearly from 0 (``--occlusion-warmup``; a run saved
    before the option existed has none; new fits default to OCCLUSION_WARMUP)"""
    val_images: int = 1
    """validation images rendered at each evaluation"""
    eval_images: int = 8
    """test images (evenly spaced) for the metrics written at the end of a fit; ``rwf eval`` uses every one"""
    optimize_cameras: bool = False
    """learn a rigid correction of each training camera's pose (``--optimize-cameras``; camera_opt.PoseCorrection)"""
    camera_lr: float = 3e-4
    """Adam learning rate of those corrections (on the fit's schedule; 3e-4 beat nerfstudio's 1e-3 on perturbed and on
    exact lego poses, BENCHMARKS.md)"""
    amp: bool = True
    """bfloat16 autocast for the field on CUDA"""
    model_seed: int = 0

    @property
    def depth_weight(self) -> float:
        """The depth loss weight (``--depth-loss``; 0: off, the dataset's depth maps are not read)."""
        return self.train.loss_weights.get("depth", 0.0)

    @property
    def camera_reg(self) -> float:
        """The weight of the camera corrections' regularizer (``--camera-reg``; default 1: nerfstudio's)."""
        return self.train.loss_weights.get("camera_reg", 1.0)

    @property
    def distortion_weight(self) -> float:
        """The distortion loss weight (``--distortion-loss``; 0: off)."""
        return self.train.loss_weights.get("distortion", 0.0)

    @property
    def occlusion_weight(self) -> float:
        """The occlusion loss weight (``--occlusion-loss``; 0: off)."""
        return self.train.loss_weights.get("occlusion", 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["field"], d["render"] = self.field.to_dict(), self.render.to_dict()
        return {"kind": "nerf", **d}

    @classmethod
    def from_dict(cls, d: dict) -> "NeRFConfig":
        """The config saved in a run's config.json; unknown keys (a newer version's) are ignored.

        Raises:
            UserError: ``d`` is not a NeRF config (another kind of run, or a damaged file).
        """
        if not isinstance(d, dict) or d.get("kind", "nerf") != "nerf":
            kind = d.get("kind") if isinstance(d, dict) else type(d).__name__
            raise UserError(f"describes a {kind} run, not a nerf run")
        names = {f.name for f in fields(cls)} - {"field", "render", "train"}
        try:
            simple = typed_settings(cls, {k: v for k, v in d.items() if k in names})
            cfg = cls(field=NeRFFieldConfig.from_dict(d["field"]), render=from_dict(RenderConfig, d["render"]),
                      train=from_dict(TrainConfig, d["train"]), **simple)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"not a valid nerf run config ({type(e).__name__}: {e})") from None
        check_config(cfg)
        return cfg


OCCLUSION_WARMUP = 300  # --occlusion-warmup of a new fit: at 0 the bartoszek fit without depth emptied (BENCHMARKS.md)
MAX_APPEARANCE_DIM = 1 << 16  # per-image appearance codes (NeRF-W uses 48): beyond, the table alone exhausts memory
GRID_MAX_CELLS = 1 << 30  # occupancy cells over all cascades (6 bytes each): beyond this the grid alone needs > 6 GB


def check_config(cfg: NeRFConfig) -> None:
    """Refuse impossible settings (from options, a preset or a saved config) before anything is built or written.

    Raises:
        UserError: naming the setting and the allowed range.
    """
    r, f, t = cfg.render, cfg.field, cfg.train

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(what)

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    need(isinstance(cfg.downscale, int) and cfg.downscale >= 1,
         f"--downscale must be an integer >= 1, got {cfg.downscale!r}")
    need(cfg.background in BACKGROUNDS, f"background must be one of {', '.join(BACKGROUNDS)}, got {cfg.background!r}")
    need(r.sampler in ("grid", "dense"), f"sampler must be grid or dense, got {r.sampler!r}")
    res, levels = r.grid_resolution, r.grid_levels
    need(isinstance(res, int) and res >= 2 and res % 2 == 0,
         f"--grid-resolution must be an even number >= 2, got {res!r}")
    need(isinstance(levels, int) and 1 <= levels <= 16, f"--grid-levels must be in 1..16, got {levels!r}")
    need(levels == 1 or res % 4 == 0, f"--grid-levels {levels} needs --grid-resolution divisible by 4, got {res}")
    need(levels * res**3 <= GRID_MAX_CELLS,
         f"--grid-resolution {res} with {levels} level(s) is {levels * res**3:.3g} cells, more than "
         f"{GRID_MAX_CELLS:.3g}; use a smaller resolution")
    need(isinstance(r.steps_per_diagonal, int) and r.steps_per_diagonal >= 1,
         f"--steps-per-diagonal must be >= 1, got {r.steps_per_diagonal!r}")
    need(finite(r.cone_angle) and r.cone_angle >= 0, f"--cone-angle must be a finite number >= 0, got {r.cone_angle!r}")
    for name in ("near", "far"):
        value = getattr(r, name)
        need(value is None or (finite(value) and value > 0), f"--{name} must be a positive number, got {value!r}")
    need(r.near is None or r.far is None or r.near < r.far, f"--near {r.near} must be less than --far {r.far}")
    need(isinstance(r.max_samples, int) and r.max_samples >= 1 and isinstance(r.chunk, int) and r.chunk >= 1,
         "max_samples and chunk must be integers >= 1")
    need(isinstance(f.appearance_dim, int) and f.appearance_dim >= 0,
         f"--appearance-dim must be an integer >= 0, got {f.appearance_dim!r}")
    need(f.pos.kind in ("fourier", "pe", "hashgrid"), f"encoding must be fourier, pe or hashgrid, got {f.pos.kind!r}")
    if f.pos.kind == "hashgrid":
        p = f.pos
        need(all(isinstance(v, int) and not isinstance(v, bool)
                 for v in (p.levels, p.log2_size, p.base_res, p.max_res)),
             "the hash grid's levels, log2_size, base_res and max_res must be integers")
        need(hash_grid_problem(p) is None, str(hash_grid_problem(p)))
        need(p.level_features in (1, 2, 4, 8), f"level_features must be 1, 2, 4 or 8, got {p.level_features!r}")
        need(not f.mip, "--mip integrates a Fourier or positional encoding over each sample's footprint; the hash "
                        "grid has no such form here: use --encoding fourier or pe with --mip")
    need(finite(f.pos_extent) and f.pos_extent >= 1, f"pos_extent must be a number >= 1, got {f.pos_extent!r}")
    need(f.density_act in DENSITY_ACTIVATIONS,
         f"density_act must be one of {', '.join(DENSITY_ACTIVATIONS)}, got {f.density_act!r}")
    need(isinstance(t.steps, int) and t.steps >= 1, f"--steps must be an integer >= 1, got {t.steps!r}")
    need(finite(t.lr) and t.lr > 0, f"--lr must be a positive number, got {t.lr!r}")
    need(all(isinstance(v, int) and v >= 1 for v in (t.eval_every, t.ckpt_every)),
         "--eval-every and --ckpt-every must be integers >= 1")
    need(all(isinstance(v, int) and v >= 1 for v in (cfg.target_samples, cfg.init_rays, cfg.min_rays, cfg.max_rays,
                                                     cfg.eval_images, cfg.depth_rays)) and cfg.val_images >= 0,
         "--target-samples, --eval-images and the ray counts must be integers >= 1")
    need(finite(cfg.depth_weight) and cfg.depth_weight >= 0,
         f"--depth-loss must be a finite number >= 0, got {cfg.depth_weight!r}")
    need(finite(cfg.distortion_weight) and cfg.distortion_weight >= 0,
         f"--distortion-loss must be a finite number >= 0, got {cfg.distortion_weight!r}")
    need(finite(cfg.occlusion_weight) and cfg.occlusion_weight >= 0,
         f"--occlusion-loss must be a finite number >= 0, got {cfg.occlusion_weight!r}")
    need(finite(cfg.occlusion_margin) and cfg.occlusion_margin > 0,
         f"--occlusion-margin must be a finite number > 0, got {cfg.occlusion_margin!r}")
    need(isinstance(cfg.occlusion_warmup, int) and not isinstance(cfg.occlusion_warmup, bool)
         and cfg.occlusion_warmup >= 0, f"--occlusion-warmup must be an integer >= 0, got {cfg.occlusion_warmup!r}")
    need(all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
             for v in (cfg.occlusion_rays, cfg.occlusion_samples)),
         "occlusion_rays and occlusion_samples must be integers >= 1")
    need(isinstance(cfg.optimize_cameras, bool),
         f"optimize_cameras must be true or false, got {cfg.optimize_cameras!r}")
    need(finite(cfg.camera_lr) and cfg.camera_lr > 0, f"--camera-lr must be a positive number, got {cfg.camera_lr!r}")
    need(finite(cfg.camera_reg) and cfg.camera_reg >= 0,
         f"--camera-reg must be a finite number >= 0, got {cfg.camera_reg!r}")
    need(isinstance(f.appearance_dim, int) and f.appearance_dim <= MAX_APPEARANCE_DIM,
         f"--appearance-dim must be at most {MAX_APPEARANCE_DIM}, got {f.appearance_dim!r}")
    try:
        check_train_config(t)  # schedule, seed, device, ...: a hand-edited config.json fails here, not mid-fit
        problem = model_size_problem(f.pos, f.trunk, 3, 1 + f.features)  # an absurd --width: before any work
    except (TypeError, ValueError) as e:
        raise UserError(f"not a valid nerf run config ({e})") from None
    need(problem is None, str(problem))


# -- options and presets ------------------------------------------------------------------------------------------
def scene_presets() -> dict:
    """Every installed scene preset by name (the ``rwf_render.scenes`` entry points). Run from a source checkout
    that is not installed (no entry points, as on a bare GPU machine with ``PYTHONPATH`` set), the ``scenes``
    package beside ``rwf_render`` provides them."""
    from importlib import import_module, metadata  # noqa: PLC0415

    presets = {}
    for entry in metadata.entry_points(group="rwf_render.scenes"):
        presets.update(entry.load()())
    beside = Path(__file__).resolve().parents[1] / "scenes" / "__init__.py"
    if not presets and beside.is_file() and str(beside.parents[1]) in [str(Path(p).resolve()) for p in sys.path]:
        presets.update(import_module("scenes").presets())
    return presets


def resolve_scene(scene: str | None, args) -> tuple[str, str | None, dict]:
    """(dataset path, preset name or None, preset settings) for the SCENE argument (None: the built-in default)."""
    if scene is not None and Path(scene).exists():
        return str(Path(scene).resolve()), None, {}
    presets = scene_presets()
    name = scene or "default"
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none installed"
        raise UserError(f"{scene}: no such dataset folder, and not a scene preset (presets: {known})")
    preset = presets[name]
    return str(preset.prepare(quiet=args.quiet)), name, {k: v for k, (v, _why) in preset.settings.items()}


ENCODING_SIZED = ("depth", "width", "features", "sigma", "lr")
"""preset settings chosen for the preset's encoding, dropped when another encoding is typed"""


def config_from_args(args) -> NeRFConfig:
    return _config(args, *resolve_scene(args.scene, args))


def _config(args, data: str, scene: str | None, preset: dict) -> NeRFConfig:
    """The config of the options in ``args`` over the ``preset`` settings, over the built-in defaults."""

    def pick(name, default):
        value = getattr(args, name, None)
        return value if value is not None else preset.get(name, default)

    cfg = NeRFConfig(data=data, scene=scene)
    cfg.downscale = pick("downscale", 1)
    cfg.background = pick("background", "white")
    cfg.field.set_param(pick("param", "rwf"))
    pos = cfg.field.pos
    pos.kind = pick("encoding", "fourier")
    hashgrid = pos.kind == "hashgrid"
    if pos.kind != preset.get("encoding", "fourier"):
        # a preset sizes its field and learning rate for its own encoding (lego-gpu: width 256 for Fourier
        # features); with another encoding they fall back to that encoding's defaults, unless typed
        preset = {k: v for k, v in preset.items() if k not in ENCODING_SIZED}
    for name in ("hash_levels", "hash_log2_size", "hash_max_res") if not hashgrid else ("features", "sigma"):
        if getattr(args, name, None) is not None:
            other = "--encoding hashgrid" if hashgrid else f"--encoding {pos.kind}"
            raise UserError(f"--{name.replace('_', '-')} does not apply to {other}")
    # a hash grid carries the detail in its tables: instant-ngp's small MLP (one hidden layer of 64) and lr 1e-2
    cfg.field.trunk.depth = pick("depth", 2 if hashgrid else 4)
    cfg.field.trunk.width = pick("width", 64 if hashgrid else 128)
    pos.m, pos.sigma = pick("features", 128), pick("sigma", 8.0)
    # 2^17 entries a level (not instant-ngp's 2^19): on the built-in scene 30.47 against 30.73 dB, 3x faster on a CPU
    pos.levels, pos.log2_size = pick("hash_levels", 16), pick("hash_log2_size", 17)
    pos.max_res = pick("hash_max_res", 1024)
    cfg.field.view_dependent = not pick("no_view_dependence", False)
    cfg.field.appearance_dim = pick("appearance_dim", 0)
    cfg.field.mip = pick("mip", False)
    cfg.field.density_act = pick("density_act", "trunc_exp")
    cfg.render.grid_levels = pick("grid_levels", 1)
    if hashgrid:  # the tables span every cascade: positions outside the box keep their own features
        cfg.field.pos_extent = float(2 ** (cfg.render.grid_levels - 1))
    cfg.render.grid_resolution = pick("grid_resolution", 128)
    cfg.render.steps_per_diagonal = pick("steps_per_diagonal", 1024)
    cfg.render.cone_angle = pick("cone_angle", 0.0)
    cfg.render.near, cfg.render.far = pick("near", None), pick("far", None)
    cfg.render.far_bounds = pick("far_bounds", True)
    cfg.render.sampler = pick("sampler", "grid")
    cfg.target_samples = pick("target_samples", 1 << 15)
    rays = pick("rays", None)  # a fixed ray count (the Tancik protocol) instead of the adaptive one
    if rays:
        cfg.init_rays = cfg.min_rays = cfg.max_rays = rays
    t = cfg.train
    t.steps, t.lr, t.schedule = pick("steps", 3000), pick("lr", 1e-2 if hashgrid else 3e-3), pick("schedule", "exp")
    t.eval_every, t.ckpt_every = pick("eval_every", 250), pick("ckpt_every", 500)
    cfg.eval_images = pick("eval_images", 8)
    cfg.depth_rays = pick("depth_rays", 256)
    depth_weight = pick("depth_loss", 0.0)
    if depth_weight:
        t.loss_weights["depth"] = depth_weight
    distortion_weight = pick("distortion_loss", 0.0)
    if distortion_weight:
        t.loss_weights["distortion"] = distortion_weight
    occlusion_weight = pick("occlusion_loss", 0.0)
    if occlusion_weight:
        t.loss_weights["occlusion"] = occlusion_weight
    cfg.occlusion_margin = pick("occlusion_margin", 0.05)
    cfg.occlusion_warmup = pick("occlusion_warmup", OCCLUSION_WARMUP)
    cfg.optimize_cameras = pick("optimize_cameras", False)
    cfg.camera_lr = pick("camera_lr", 3e-4)
    camera_reg = pick("camera_reg", None)
    if camera_reg is not None:
        t.loss_weights["camera_reg"] = camera_reg
    for name in ("camera_lr", "camera_reg"):  # a resumed run's own setting decides there
        if getattr(args, name, None) is not None and not cfg.optimize_cameras and not getattr(args, "resume", 0):
            raise UserError(f"--{name.replace('_', '-')} applies to --optimize-cameras")
    t.seed, t.deterministic, t.device = args.seed, args.deterministic, args.device
    cfg.model_seed = args.seed
    return cfg


ALIASES = {"scene": ("data",), "param": ("field.trunk.param", "field.head.param"), "encoding": ("field.pos.kind",),
           "features": ("field.pos.m",), "sigma": ("field.pos.sigma",), "depth": ("field.trunk.depth",),
           "hash_levels": ("field.pos.levels",), "hash_log2_size": ("field.pos.log2_size",),
           "hash_max_res": ("field.pos.max_res",),
           "width": ("field.trunk.width",), "no_view_dependence": ("field.view_dependent",),
           "depth_loss": ("train.loss_weights.depth",), "occlusion_loss": ("train.loss_weights.occlusion",),
           "distortion_loss": ("train.loss_weights.distortion",), "camera_reg": ("train.loss_weights.camera_reg",)}
"""config entries of the fit options not named like them, for the --resume check (``resume.option_clashes``)"""


def resume_config_from_args(args) -> NeRFConfig:
    """The saved config of the run to resume, with ``--steps`` and ``--device`` applied (``--deterministic`` can
    only be turned on). Every other option typed must agree with the run's config.json, which decides: SCENE must
    be the run's dataset, an option its saved value, so the fit's own command with --resume added works."""
    if not args.out:
        raise UserError("--resume needs --out RUN")
    run = Path(args.out)
    saved = read_json(run / CONFIG) if (run / CONFIG).is_file() else {"kind": "nerf"}
    kind = saved.get("kind") if isinstance(saved, dict) else None
    if kind != "nerf":
        raise UserError(f"{run}: not a nerf run (its config.json says kind {kind!r})")
    cfg = resume_config(run, NeRFConfig.from_dict, args.steps)
    for name in ("camera_lr", "camera_reg"):
        if getattr(args, name, None) is not None and not cfg.optimize_cameras:
            raise UserError(f"{run}: --{name.replace('_', '-')} applies to --optimize-cameras, and this run was "
                            "fitted without it")
    typed = typed_options(args, add_fit_arguments)
    data = resolve_scene(args.scene, args)[0] if "scene" in typed else cfg.data
    # the options typed, over the saved dataset (a preset's other settings are the run's already)
    fresh = _config(args, data, cfg.scene, {}).to_dict()
    fresh["data"], saved_dict = str(Path(data).resolve()), cfg.to_dict()
    saved_dict["data"] = str(Path(cfg.data).resolve())
    clash = option_clashes(args, add_fit_arguments, fresh, saved_dict, ALIASES, {"steps", "device", "deterministic"})
    if clash:
        raise UserError(f"{run}: --resume continues the run as configured in {CONFIG}; these options differ from "
                        f"it: {'; '.join(clash)} (only --steps and --device may change; start a new run instead)")
    cfg.train.device = args.device  # where to continue is this machine's business, not the saved run's
    cfg.train.deterministic = cfg.train.deterministic or args.deterministic
    if (run / CHECKPOINT).is_file():
        done = load_checkpoint(run / CHECKPOINT).get("step", 0)
        done = int(done) if isinstance(done, (int, float)) else 0  # a damaged one is refused by Trainer.resume
        if done > cfg.train.steps:
            raise UserError(f"{run}: the checkpoint is at step {done}, past --steps {cfg.train.steps}")
    return cfg


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_run_arguments, positive_float, positive_int  # noqa: PLC0415
    from .field_options import learning_rate  # noqa: PLC0415

    p.add_argument("scene", nargs="?", metavar="SCENE",
                   help="dataset folder (transforms.json) or a preset name (default: a built-in synthetic scene)")
    add_run_arguments(p, "nerf", compare=False)
    d = p.add_argument_group("data (defaults: the preset's, else these)")
    d.add_argument("--downscale", type=positive_int, help="integer image downscale (default 1)")
    d.add_argument("--background", choices=BACKGROUNDS,
                   help="white (default) | black | random | learned (what lies beyond the scene, for photos "
                        "without alpha)")
    d.add_argument("--near", type=positive_float,
                   help="ray start, over any per-image bounds of the dataset (default: those, else 2%% of the box "
                        "diagonal)")
    d.add_argument("--far", type=positive_float,
                   help="ray end, over any per-image bounds of the dataset (default: those, else where rays leave "
                        "the grid)")
    d.add_argument("--far-bounds", action=argparse.BooleanOptionalAction, default=None,
                   help="use the dataset's per-image far bounds (default); --no-far-bounds: rays end where they "
                        "leave the grid (captures around an object, whose background lies beyond the farthest "
                        "point structure from motion found)")
    m = p.add_argument_group("field")
    m.add_argument("--param", choices=["plain", "wn", "rwf"], help="linear layers (default rwf)")
    m.add_argument("--encoding", choices=["fourier", "pe", "hashgrid"],
                   help="position encoding (default fourier); hashgrid: instant-ngp's multiresolution hash tables, "
                        "with a smaller trunk (2 x 64) and lr 1e-2 by default; another encoding than a preset's drops "
                        "the preset's depth, width, features, sigma and lr")
    m.add_argument("--features", type=positive_int, help="Fourier features (default 128)")
    m.add_argument("--sigma", type=positive_float, help="Fourier sigma, cycles per box side (default 8)")
    m.add_argument("--hash-levels", type=positive_int, help="hash grid resolution levels (default 16)")
    m.add_argument("--hash-log2-size", type=positive_int,
                   help="log2 of a hashed level's table entries (default 17: 16 levels x 2^17 x 2 features; "
                        "instant-ngp's 19 for large scenes)")
    m.add_argument("--hash-max-res", type=positive_int,
                   help="finest hash grid resolution across the encoded box (default 1024; the coarsest is 16)")
    m.add_argument("--depth", type=positive_int, help="trunk linear layers (default 4; 2 with hashgrid)")
    m.add_argument("--width", type=positive_int, help="trunk width (default 128; 64 with hashgrid)")
    m.add_argument("--no-view-dependence", action="store_true", default=None, help="colour from position only")
    m.add_argument("--appearance-dim", type=int, help="per-image appearance embedding (default 0: off)")
    m.add_argument("--mip", action=argparse.BooleanOptionalAction, default=None,
                   help="integrate the position encoding over each sample's footprint, its length along the ray "
                        "and its pixel's cone (mip-NeRF): features finer than a sample fade instead of aliasing "
                        "(default off)")
    r = p.add_argument_group("marching")
    r.add_argument("--sampler", choices=["grid", "dense"], help="occupancy grid (default) or every lattice point")
    r.add_argument("--grid-resolution", type=positive_int, help="occupancy cells per axis (default 128)")
    r.add_argument("--grid-levels", type=positive_int, help="cascades (default 1)")
    r.add_argument("--steps-per-diagonal", type=positive_int, help="marching steps across the box (default 1024)")
    r.add_argument("--cone-angle", type=float, help="step growth with distance (default 0)")
    r.add_argument("--target-samples", type=positive_int, help="samples per training step (default 32768)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=positive_int, help="optimizer steps (default 3000)")
    t.add_argument("--lr", type=learning_rate, help="Adam learning rate (default 3e-3)")
    t.add_argument("--schedule", choices=["const", "exp", "cos"], help="lr schedule (default exp to 0.1x)")
    t.add_argument("--eval-every", type=positive_int, help="validation every N steps (default 250)")
    t.add_argument("--ckpt-every", type=positive_int, help="checkpoint every N steps (default 500)")
    t.add_argument("--eval-images", type=positive_int, help="test images scored at the end of a fit (default 8)")
    t.add_argument("--depth-loss", type=float, metavar="W",
                   help="weight of the relative L1 between rendered depth and the dataset's depth maps "
                        "(depth_file_path; default 0: off)")
    t.add_argument("--depth-rays", type=positive_int, help="rays through depth samples per step (default 256)")
    t.add_argument("--distortion-loss", type=float, metavar="W",
                   help="weight of mip-NeRF 360's distortion loss (each ray's weights in one compact interval, "
                        "distances over the scene box's diagonal: no haze or floaters; default 0: off)")
    t.add_argument("--occlusion-loss", type=float, metavar="W",
                   help="weight of the mean opacity just past each training ray's near bound (FreeNeRF's occlusion "
                        "loss: no floaters in front of the cameras; default 0: off)")
    t.add_argument("--occlusion-margin", type=float, metavar="M",
                   help="the occlusion loss reads [near, near (1 + M)] of each ray (default 0.05)")
    t.add_argument("--occlusion-warmup", type=int, metavar="STEPS",
                   help="the occlusion loss's weight rises linearly from 0 to W over the first STEPS steps (default "
                        f"{OCCLUSION_WARMUP})")
    t.add_argument("--optimize-cameras", action=argparse.BooleanOptionalAction, default=None,
                   help="learn a rigid correction of each training camera's pose (nerfstudio's SO3xR3 camera "
                        "optimizer), for captures whose poses are off; writes cameras_refined.json (default off)")
    t.add_argument("--camera-lr", type=learning_rate, help="learning rate of those corrections (default 3e-4)")
    t.add_argument("--camera-reg", type=float, metavar="W",
                   help="weight of nerfstudio's pull of the corrections toward zero, 1e-3 x mean rotation (rad) + "
                        "1e-2 x mean translation (default 1; 0: none)")
