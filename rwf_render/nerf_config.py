"""A NeRF fit's configuration: the saved settings and their checks.

``NeRFConfig`` is what config.json holds; ``check_config`` refuses impossible settings wherever they come from (the
command line, a preset, a saved run). The fit's options and the scene presets that fill it are in nerf_options.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from dataclasses import field as dc_field

from .errors import UserError
from .field_options import hash_grid_problem, model_size_problem
from .fields import from_dict, typed_settings
from .nerf_data import BACKGROUNDS
from .nerf_field import DENSITY_ACTIVATIONS, NeRFField, NeRFFieldConfig
from .nerf_render import RenderConfig
from .train_config import TrainConfig, check_train_config

LOSS_DEFAULTS = {"depth": 0.0, "distortion": 0.0, "occlusion": 0.0, "camera_reg": 1.0}
"""the weight of each loss term a config's ``train.loss_weights`` does not name (0: off; the camera corrections'
regularizer at nerfstudio's 1)"""


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
    coarse_to_fine: list | None = None
    """[start, end] fractions of the steps over which the hash grid's finer levels open one after another
    (``--coarse-to-fine``; BARF's schedule, for --optimize-cameras: coarse levels align the cameras before fine ones
    fit their errors); None: every level from the start"""
    amp: bool = True
    """bfloat16 autocast for the field on CUDA"""
    model_seed: int = 0

    @property
    def depth_weight(self) -> float:
        """The depth loss weight (``--depth-loss``; 0: off, the dataset's depth maps are not read)."""
        return self.train.loss_weights.get("depth", LOSS_DEFAULTS["depth"])

    @property
    def camera_reg(self) -> float:
        """The weight of the camera corrections' regularizer (``--camera-reg``; default 1: nerfstudio's)."""
        return self.train.loss_weights.get("camera_reg", LOSS_DEFAULTS["camera_reg"])

    @property
    def distortion_weight(self) -> float:
        """The distortion loss weight (``--distortion-loss``; 0: off)."""
        return self.train.loss_weights.get("distortion", LOSS_DEFAULTS["distortion"])

    @property
    def occlusion_weight(self) -> float:
        """The occlusion loss weight (``--occlusion-loss``; 0: off)."""
        return self.train.loss_weights.get("occlusion", LOSS_DEFAULTS["occlusion"])

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
        try:  # the field can be built (a hand-edited param, activation, width or SH degree), the grid aside
            NeRFField([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], cfg.field)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"not a valid nerf run config ({type(e).__name__}: {e})") from None
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
    need(r.cone_angle < 1, f"--cone-angle {r.cone_angle:g}: a step is C times the distance from the camera, so from "
                           "C = 1 on steps jump over the scene (1000 left no ray a sample; instant-ngp uses 1/256 to "
                           "1/64): use a value below 1")
    for name in ("near", "far"):
        value = getattr(r, name)
        need(value is None or (finite(value) and value > 0), f"--{name} must be a positive number, got {value!r}")
    need(r.near is None or r.far is None or r.near < r.far, f"--near {r.near} must be less than --far {r.far}")
    need(isinstance(r.max_samples, int) and r.max_samples >= 1 and isinstance(r.chunk, int) and r.chunk >= 1,
         "max_samples and chunk must be integers >= 1")
    need(isinstance(f.appearance_dim, int) and f.appearance_dim >= 0,
         f"--appearance-dim must be an integer >= 0, got {f.appearance_dim!r}")
    need(f.pos.kind in ("fourier", "pe", "hashgrid"), f"encoding must be fourier, pe or hashgrid, got {f.pos.kind!r}")
    need(f.dirs.kind in ("sh", "pe"), f"the view direction's encoding must be sh or pe, got {f.dirs.kind!r}")
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
    c2f = cfg.coarse_to_fine
    need(c2f is None or (isinstance(c2f, list) and len(c2f) == 2 and all(finite(v) for v in c2f)
                         and 0 <= c2f[0] < c2f[1] <= 1),
         f"--coarse-to-fine takes two fractions of the steps, 0 <= START < END <= 1, got {c2f!r}")
    need(c2f is None or f.pos.kind == "hashgrid",
         f"--coarse-to-fine opens the levels of --encoding hashgrid, not {f.pos.kind}")
    need(isinstance(f.appearance_dim, int) and f.appearance_dim <= MAX_APPEARANCE_DIM,
         f"--appearance-dim must be at most {MAX_APPEARANCE_DIM}, got {f.appearance_dim!r}")
    try:
        check_train_config(t)  # schedule, seed, device, ...: a hand-edited config.json fails here, not mid-fit
        problem = model_size_problem(f.pos, f.trunk, 3, 1 + f.features)  # an absurd --width: before any work
    except (TypeError, ValueError) as e:
        raise UserError(f"not a valid nerf run config ({e})") from None
    need(problem is None, str(problem))
