"""A NeRF fit's options: the command line and the scene presets, turned into a ``NeRFConfig``.

``add_fit_arguments`` defines ``rwf fit nerf``'s options; ``config_from_args`` merges them over a preset;
``resume_config_from_args`` reopens a run for ``--resume``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError, ignored_options
from .field_options import LR_WARMUP, LR_WARMUP_WHY, default_lr_warmup, single_level_resolution, warn_warmup_past_end
from .fields import EncodingConfig
from .nerf_config import LOSS_DEFAULTS, OCCLUSION_WARMUP, NeRFConfig
from .nerf_data import BACKGROUNDS
from .resume import option_clashes, resume_config, typed_options
from .rundir import CHECKPOINT, CONFIG, load_checkpoint, read_json


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
    presets = scene_presets()
    if scene is not None and Path(scene).exists():
        if scene in presets and not getattr(args, "quiet", False):  # a folder ./lego beside the preset lego
            print(f"rwf: {scene}: fitting the folder {Path(scene).resolve()}, not the scene preset of that name "
                  "(run from another folder, or rename this one, for the preset)", file=sys.stderr)
        return str(Path(scene).resolve()), None, {}
    name = scene or "default"
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none installed"
        raise UserError(f"{scene}: no such dataset folder, and not a scene preset (presets: {known})")
    preset = presets[name]
    return str(preset.prepare(quiet=args.quiet)), name, {k: v for k, (v, _why) in preset.settings.items()}


FOURIER_WIDTH = 128  # the default trunk width of a Fourier or PE field; wider ones warm up (--lr-warmup)
ENCODING_SIZED = ("depth", "width", "features", "sigma", "lr")
"""preset settings chosen for the preset's encoding, dropped when another encoding is typed"""


def config_from_args(args) -> NeRFConfig:
    return _config(args, *resolve_scene(args.scene, args))


REAL_CAPTURE = {"background": "learned", "grid_levels": 3, "grid_resolution": 64, "cone_angle": 1 / 64}
"""the settings a fit of opaque photos (a real capture) takes where no preset and no typed option sets them, as the
``bartoszek`` preset does (its reasons, measured there, in scenes/bartoszek.py): the world beyond the box needs its
own colour and the photos see past the box; a 64^3 grid and coarser far steps keep a CPU fit to minutes"""
REAL_CAPTURE_FOURIER = {"sigma": 0.5}
"""... and for a Fourier field over the scene box (no aabb_scale cascades, whose field spans their reach and so is
smoother already), the ``bartoszek`` preset's frequencies"""
REAL_CAPTURE_BOUNDS = {"far_bounds": False, "occlusion_loss": 1.0}
"""... and with per-photo near/far bounds (LLFF, ``rwf data colmap --bounds``): rays run to the grid's end, and no
density just past each photo's near bound (FreeNeRF), with its warm-up"""


def real_capture_config(args, cfg: NeRFConfig, opaque: bool, bounds: bool,
                        backdrop: str | None = None, cascades: int = 1) -> tuple[NeRFConfig, dict]:
    """``cfg`` again with :data:`REAL_CAPTURE` (with per-photo ``bounds`` also :data:`REAL_CAPTURE_BOUNDS`, for a
    Fourier field without cascades :data:`REAL_CAPTURE_FOURIER`) under the options typed, for a new fit of
    ``opaque`` photos without a preset; and the settings taken (none: ``cfg``).

    Opaque images on a plain ``backdrop`` ("white" or "black", :meth:`PosedImages.backdrop`: a render saved without
    alpha, a studio shot) are an object in its box, not the world around: they keep the synthetic settings, on a
    training background of the backdrop's colour. With the real capture's learned background, lego rendered on white
    without alpha scored 10.6 dB on its test views after 1000 steps, against 26.1 dB on a white background: the
    background model learned the training views' pixels by direction and left the field nearly empty.

    A dataset whose aabb_scale asks for ``cascades`` occupancy cascades (instant-ngp's rule,
    :func:`rwf_render.scene_box.box_cascades`), opaque or not, takes :func:`cascade_profile` where neither an option
    nor the settings above set its values (the most cascades of the two)."""
    if cfg.scene is not None or getattr(args, "resume", False):
        return cfg, {}
    profile = {}
    if opaque and backdrop is not None:
        profile = {"background": backdrop}
    elif opaque:
        profile = {**REAL_CAPTURE, **(REAL_CAPTURE_BOUNDS if bounds else {})}
        if cfg.field.pos.kind == "fourier" and cascades <= 1:
            profile.update(REAL_CAPTURE_FOURIER)
    for key, value in cascade_profile(cascades).items():
        if key not in profile or (key == "grid_levels" and value > profile[key]):
            profile[key] = value
    taken = {k: v for k, v in profile.items() if getattr(args, k, None) is None}
    return (_config(args, cfg.data, None, profile), taken) if taken else (cfg, {})


DIR_ENCODINGS = {"sh": lambda: EncodingConfig(kind="sh", degree=3),  # instant-ngp's and nerfstudio's: 16 values
                 "pe": lambda: EncodingConfig(kind="pe", n_freqs=4, include_input=True)}  # NeRF's: L = 4, 27 values
"""the view direction's encodings of ``--dir-encoding``"""


def cascade_profile(cascades: int) -> dict:
    """The settings a dataset whose aabb_scale asks for ``cascades`` occupancy cascades takes (none for 1):
    instant-ngp's, that many cascades and a cone angle of 1/256 (steps that grow with distance once the scene
    reaches beyond the unit cube, where a constant step would take up to 2^(cascades - 1) times the samples); and
    ``field_extent`` (no option): a Fourier or PE field's positions are normalized over the whole scene aabb_scale
    reaches (2^(cascades - 1) times the cube, whatever --grid-levels is typed), as instant-ngp's encoding spans its
    whole box and as a hash grid here spans the grid's cascades. That keeps the field
    these datasets were fitted with while aabb_scale was read as one box of its side: on the real capture given
    aabb_scale 16 (BENCHMARKS.md), normalized over the cube instead, the default --sigma 8 scored 17.56 / 16.95 dB
    on its held-out views (seeds 0 / 1) against 18.81 / 18.63 before; spanning the cascades, 18.82 (seed 0)."""
    return {} if cascades <= 1 else {"grid_levels": cascades, "cone_angle": 1 / 256,
                                     "field_extent": float(2 ** (cascades - 1))}


def profile_text(taken: dict) -> str:
    """The settings :func:`real_capture_config` took, as the options that set them."""

    def value(k: str, v) -> str:
        if isinstance(v, str):
            return v
        # only --cone-angle reads a fraction: every other value is printed as it must be typed (--sigma 0.5)
        if k == "cone_angle" and isinstance(v, float) and 0 < v < 1 and float(round(1 / v)) == 1 / v:
            return f"1/{round(1 / v)}"
        return format(v, "g")

    spelled = {"far_bounds": "--no-far-bounds"}
    return " ".join(spelled.get(k) or f"--{k.replace('_', '-')} {value(k, v)}" for k, v in taken.items())


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
        # a preset sizes its field and learning rate for its own encoding (lego-tancik: 4 x 256 and lr 5e-4 for
        # Fourier features); with another encoding they fall back to that encoding's defaults, unless typed
        preset = {k: v for k, v in preset.items() if k not in ENCODING_SIZED}
    for name in ("hash_levels", "hash_log2_size", "hash_max_res") if not hashgrid else ("features", "sigma"):
        if getattr(args, name, None) is not None:
            other = "--encoding hashgrid" if hashgrid else f"--encoding {pos.kind}"
            raise UserError(f"--{name.replace('_', '-')} does not apply to {other}")
    # a hash grid carries the detail in its tables: instant-ngp's small MLP (one hidden layer of 64) and lr 1e-2
    cfg.field.trunk.depth = pick("depth", 2 if hashgrid else 4)
    cfg.field.trunk.width = pick("width", 64 if hashgrid else FOURIER_WIDTH)
    pos.m, pos.sigma = pick("features", 128), pick("sigma", 8.0)
    # 2^17 entries a level (not instant-ngp's 2^19): on the built-in scene 30.47 against 30.73 dB, 3x faster on a CPU
    pos.levels, pos.log2_size = pick("hash_levels", 16), pick("hash_log2_size", 17)
    pos.max_res = single_level_resolution(args, pos.levels, pos.base_res, pick("hash_max_res", 1024))
    cfg.field.view_dependent = not pick("no_view_dependence", False)
    cfg.field.dirs = DIR_ENCODINGS[pick("dir_encoding", "sh")]()
    cfg.field.appearance_dim = pick("appearance_dim", 0)
    cfg.field.mip = pick("mip", False)
    cfg.field.density_act = pick("density_act", "trunc_exp")
    cfg.render.grid_levels = pick("grid_levels", 1)
    if hashgrid:  # the tables span every cascade: positions outside the box keep their own features
        cfg.field.pos_extent = float(2 ** (cfg.render.grid_levels - 1))
    elif preset.get("field_extent"):  # a dataset's aabb_scale: the field spans its reach (cascade_profile)
        cfg.field.pos_extent = float(preset["field_extent"])
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
    t.lr_warmup = pick("lr_warmup", default_lr_warmup(cfg.field.trunk.width, FOURIER_WIDTH, hashgrid))
    if getattr(args, "lr_warmup", None) is not None:
        warn_warmup_past_end(t.steps, t.lr_warmup)
    t.eval_every, t.ckpt_every = pick("eval_every", 250), pick("ckpt_every", 500)
    t.max_seconds = getattr(args, "max_seconds", None)  # the command's, never a preset's
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
    c2f = pick("coarse_to_fine", None)
    cfg.coarse_to_fine = None if c2f is None else [float(v) for v in c2f]
    for name in ("camera_lr", "camera_reg", "coarse_to_fine"):  # a resumed run's own setting decides there
        if getattr(args, name, None) is not None and not cfg.optimize_cameras and not getattr(args, "resume", 0):
            raise UserError(f"--{name.replace('_', '-')} applies to --optimize-cameras")
    t.seed, t.deterministic, t.device = args.seed, args.deterministic, args.device
    cfg.model_seed = args.seed
    refuse_ignored_options(args, cfg, scene)
    return cfg


def refuse_ignored_options(args, cfg: NeRFConfig, scene: str | None) -> None:
    """UserError naming the options typed for a new fit that ``cfg`` (the options over the preset) would not use.
    Only what was typed is refused, never a preset's own settings; resuming, the run's saved config decides (a run
    fitted before these checks continues with its own command)."""
    if getattr(args, "resume", False):
        return

    def typed(*names: str) -> list[str]:
        return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]

    def preset_set(name: str) -> str:
        return f" (the {scene} preset's)" if scene and getattr(args, name, None) is None else ""

    r = cfg.render
    spelling = {True: ["--far-bounds"], False: ["--no-far-bounds"]}.get(getattr(args, "far_bounds", None), [])
    cases = [
        (typed("features", "sigma"), cfg.field.pos.kind == "pe", "--encoding fourier, not pe"),
        (typed("dir_encoding", "appearance_dim"), not cfg.field.view_dependent,
         "a colour that depends on the view direction (the colour head takes it and the appearance code), not "
         f"--no-view-dependence{preset_set('no_view_dependence')}"),
        (typed("occlusion_margin", "occlusion_warmup"), cfg.occlusion_weight == 0,
         "--occlusion-loss (a weight > 0), off here"),
        (typed("depth_rays"), cfg.depth_weight == 0, "--depth-loss (a weight > 0), off here"),
        (typed("grid_resolution"), r.sampler == "dense",
         f"--sampler grid, not dense{preset_set('sampler')}: the dense sampler keeps every cell occupied"),
        (typed("target_samples"), cfg.min_rays == cfg.max_rays,
         f"an adaptive ray count; the {scene} preset fixes {cfg.max_rays} rays per step"),
        (spelling, r.far is not None,
         f"a fit without --far{preset_set('far')}, which replaces the dataset's far bounds")]
    for names, ignored, applies in cases:
        if names and ignored:
            raise ignored_options(names, applies)


ALIASES = {"scene": ("data",), "param": ("field.trunk.param", "field.head.param"), "encoding": ("field.pos.kind",),
           "features": ("field.pos.m",), "sigma": ("field.pos.sigma",), "depth": ("field.trunk.depth",),
           "hash_levels": ("field.pos.levels",), "hash_log2_size": ("field.pos.log2_size",),
           "hash_max_res": ("field.pos.max_res",),
           "width": ("field.trunk.width",), "no_view_dependence": ("field.view_dependent",),
           "dir_encoding": ("field.dirs.kind",),
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
    cfg = resume_config(run, NeRFConfig.from_dict, args.steps, max_seconds=getattr(args, "max_seconds", None))
    for name in ("camera_lr", "camera_reg", "coarse_to_fine"):
        if getattr(args, name, None) is not None and not cfg.optimize_cameras:
            raise UserError(f"{run}: --{name.replace('_', '-')} applies to --optimize-cameras, and this run was "
                            "fitted without it")
    typed = typed_options(args, add_fit_arguments)
    data = resolve_scene(args.scene, args)[0] if "scene" in typed else cfg.data
    # the options typed, over the saved dataset (a preset's other settings are the run's already)
    fresh = _config(args, data, cfg.scene, {}).to_dict()
    fresh["data"], saved_dict = str(Path(data).resolve()), cfg.to_dict()
    saved_dict["data"] = str(Path(cfg.data).resolve())
    for d in (fresh, saved_dict):  # a weight left at its default is not stored: compare the values the fit uses
        d["train"]["loss_weights"] = {**LOSS_DEFAULTS, **(d["train"].get("loss_weights") or {})}
    clash = option_clashes(args, add_fit_arguments, fresh, saved_dict, ALIASES,
                           {"steps", "max_seconds", "device", "deterministic"})
    if clash:
        raise UserError(f"{run}: --resume continues the run as configured in {CONFIG}; these options differ from "
                        f"it: {'; '.join(clash)} (only --steps, --max-seconds and --device may change, and "
                        "--deterministic be turned on; start a new run instead)")
    cfg.train.device = args.device  # where to continue is this machine's business, not the saved run's
    cfg.train.deterministic = cfg.train.deterministic or args.deterministic
    if (run / CHECKPOINT).is_file():
        done = load_checkpoint(run / CHECKPOINT).get("step", 0)
        done = int(done) if isinstance(done, (int, float)) else 0  # a damaged one is refused by Trainer.resume
        if done > cfg.train.steps:
            raise UserError(f"{run}: the checkpoint is at step {done}, past --steps {cfg.train.steps}")
    return cfg


def defaults_epilog() -> str:
    """The end of ``rwf fit nerf --help``: where the defaults the options list do not apply (the built-in scene and
    the other presets, real captures), from the presets' and REAL_CAPTURE's own settings."""
    import textwrap  # noqa: PLC0415

    try:
        presets = scene_presets()
    except Exception:  # noqa: BLE001  (a broken third-party preset must not break --help)
        presets = {}
    default = presets.get("default")
    built_in = (f" Without SCENE the built-in scene is fitted with the 'default' preset's settings: "
                f"{profile_text({k: v for k, (v, _) in default.settings.items()})}." if default else "")
    paragraphs = [
        "Defaults: the options above give a dataset's defaults; a preset sets its own, and a typed option overrides "
        "it (another --encoding drops the preset's field size and learning rate)." + built_in,
        "Opaque photos without a preset (a real capture) take, where no option sets them: "
        f"{profile_text(REAL_CAPTURE)}; a Fourier field over the scene box (aabb_scale 1) also "
        f"{profile_text(REAL_CAPTURE_FOURIER)}; with per-photo near/far bounds also "
        f"{profile_text(REAL_CAPTURE_BOUNDS)}. The fit says which in one line.",
        "Presets: " + ("; ".join(f"{name} ({preset.description})" for name, preset in sorted(presets.items()))
                       or "none installed") + "."]
    return "\n\n".join(textwrap.fill(text, 100, break_on_hyphens=False) for text in paragraphs)


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_run_arguments, nonneg_int, nonneg_ratio, positive_float, positive_int  # noqa: PLC0415
    from .field_options import learning_rate  # noqa: PLC0415

    p.add_argument("scene", nargs="?", metavar="SCENE",
                   help="dataset folder (transforms.json or transforms_{train,val,test}.json), one transforms JSON "
                        "file, or a preset name (default: a built-in synthetic scene, the 'default' preset; see "
                        "below)")
    p.formatter_class, p.epilog = argparse.RawDescriptionHelpFormatter, defaults_epilog()
    add_run_arguments(p, "nerf", compare=False)
    d = p.add_argument_group("data (defaults: a preset's, else these; see below)")
    d.add_argument("--downscale", type=positive_int, help="integer image downscale (default 1)")
    d.add_argument("--background", choices=BACKGROUNDS,
                   help="white (default) | black | random (a random colour per training ray behind transparent "
                        "images, scored and shown on white) | learned (what lies beyond the scene, for photos "
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
    m = p.add_argument_group("field (defaults: a preset's, else these; see below)")
    m.add_argument("--param", choices=["plain", "wn", "rwf"], help="linear layers (default rwf)")
    m.add_argument("--encoding", choices=["fourier", "pe", "hashgrid"],
                   help="position encoding (default fourier); hashgrid: instant-ngp's multiresolution hash tables, "
                        "with a smaller trunk (2 x 64) and lr 1e-2 by default; another encoding than a preset's drops "
                        "the preset's depth, width, features, sigma and lr")
    m.add_argument("--features", type=positive_int, help="--encoding fourier: features (default 128)")
    m.add_argument("--sigma", type=positive_float,
                   help="--encoding fourier: sigma, cycles per side of the box the field spans: the scene box, "
                        "or with aabb_scale > 1 the whole scene its cascades reach (default 8)")
    m.add_argument("--hash-levels", type=positive_int, help="hash grid resolution levels (default 16)")
    m.add_argument("--hash-log2-size", type=positive_int,
                   help="log2 of a hashed level's table entries (default 17: 16 levels x 2^17 x 2 features; "
                        "instant-ngp's 19 for large scenes)")
    m.add_argument("--hash-max-res", type=positive_int,
                   help="finest hash grid resolution across the encoded box (default 1024; the coarsest is 16)")
    m.add_argument("--depth", type=positive_int, help="trunk linear layers (default 4; 2 with hashgrid)")
    m.add_argument("--width", type=positive_int, help="trunk width (default 128; 64 with hashgrid)")
    m.add_argument("--no-view-dependence", action="store_true", default=None,
                   help="colour from position only (default off: from the view direction too)")
    m.add_argument("--view-dependence", dest="no_view_dependence", action="store_false", default=None,
                   help="colour from the view direction too (the default; undoes a preset's --no-view-dependence)")
    m.add_argument("--dir-encoding", choices=sorted(DIR_ENCODINGS),
                   help="view direction encoding for the colour head: sh, spherical harmonics up to degree 3 "
                        "(instant-ngp's; default), or pe, NeRF's positional encoding with 4 frequencies")
    m.add_argument("--appearance-dim", type=int, help="per-image appearance embedding (default 0: off)")
    m.add_argument("--mip", action=argparse.BooleanOptionalAction, default=None,
                   help="integrate the position encoding over each sample's footprint, its length along the ray "
                        "and its pixel's cone (mip-NeRF): features finer than a sample fade instead of aliasing "
                        "(default off)")
    r = p.add_argument_group("marching (defaults: a preset's, else these; see below)")
    r.add_argument("--sampler", choices=["grid", "dense"], help="occupancy grid (default) or every lattice point")
    r.add_argument("--grid-resolution", type=positive_int,
                   help="--sampler grid: occupancy cells per axis (default 128)")
    r.add_argument("--grid-levels", type=positive_int,
                   help="occupancy cascades, each doubling the scene box (default 1; 1 + log2(aabb_scale) for a "
                        "dataset whose aabb_scale exceeds 1, as instant-ngp; 3 for opaque photos)")
    r.add_argument("--steps-per-diagonal", type=positive_int, help="marching steps across the box (default 1024)")
    r.add_argument("--cone-angle", type=nonneg_ratio, metavar="C",
                   help="step growth with distance: steps of C x the distance once that exceeds the base step (a "
                        "number or a fraction such as 1/256, as instant-ngp writes it; default 0; 1/256 for a "
                        "dataset whose aabb_scale exceeds 1, as instant-ngp; 1/64 for opaque photos)")
    r.add_argument("--target-samples", type=positive_int, help="samples per training step (default 32768)")
    t = p.add_argument_group("training (defaults: a preset's, else these; see below)")
    t.add_argument("--steps", type=positive_int, help="optimizer steps (default 3000)")
    t.add_argument("--max-seconds", type=positive_float, metavar="S",
                   help="stop once training has taken S seconds (steps only, counted over --resume; metrics.json's "
                        "seconds), evaluating and saving that step as the last; the learning-rate schedule still "
                        "spans --steps (default: no limit)")
    t.add_argument("--lr", type=learning_rate, help="Adam learning rate (default 3e-3; 1e-2 with hashgrid)")
    t.add_argument("--schedule", choices=["const", "exp", "cos"], help="lr schedule (default exp to 0.1x)")
    t.add_argument("--lr-warmup", type=nonneg_int, metavar="STEPS",
                   help=f"the rate rises linearly to --lr over the first STEPS steps (default {LR_WARMUP} with a "
                        f"Fourier or PE field wider than {FOURIER_WIDTH}, else 0; "
                        f"{LR_WARMUP_WHY})")
    t.add_argument("--eval-every", type=positive_int, help="validation every N steps (default 250)")
    t.add_argument("--ckpt-every", type=positive_int, help="checkpoint every N steps (default 500)")
    t.add_argument("--eval-images", type=positive_int, help="test images scored at the end of a fit (default 8)")
    t.add_argument("--depth-loss", type=float, metavar="W",
                   help="weight of the relative L1 between rendered depth and the dataset's depth maps "
                        "(depth_file_path; default 0: off)")
    t.add_argument("--depth-rays", type=positive_int,
                   help="--depth-loss: rays through depth samples per step (default 256; never more than the colour "
                        "rays, which adapt to --target-samples)")
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
    t.add_argument("--camera-lr", type=learning_rate, help="learning rate of those corrections (default 3e-4): radians, and "
                   "translations in lengths of the box (1/5.25 of its diagonal), so a scene in any units moves alike")
    t.add_argument("--coarse-to-fine", type=float, nargs=2, metavar=("START", "END"),
                   help="with --optimize-cameras and --encoding hashgrid: only the coarsest level of the hash grid "
                        "moves the cameras until the fraction START of the steps, the finer ones join one after "
                        "another until END; the field itself learns every level throughout (BARF's schedule on the "
                        "pose gradient, as Heo et al. 2023; default off)")
    t.add_argument("--camera-reg", type=float, metavar="W",
                   help="weight of nerfstudio's pull of the corrections toward zero, 1e-3 x mean rotation (rad) + "
                        "1e-2 x mean translation (default 1; 0: none)")


# -- render options -----------------------------------------------------------------------------------------------
def add_spiral_argument(g) -> None:
    """``rwf render``'s ``--spiral N`` (rwf_render/render_paths.py: ``spiral_cameras``), added to the nerf runs' group
    ``g``."""
    from .camera_path import MAX_FRAMES  # noqa: PLC0415
    from .cli import positive_int  # noqa: PLC0415

    g.add_argument("--spiral", type=positive_int, metavar="N",
                   help="N views on the original NeRF's spiral, for forward-facing captures (LLFF): two turns around "
                        "the average training camera, radii the 90th percentile of the cameras' offsets from it, each "
                        "view looking at a point ahead of it, whose depth comes from the dataset's near/far bounds "
                        "as NeRF's (else the cameras' median distance to the box centre); camera 0's intrinsics, as "
                        f"--orbit. At most {MAX_FRAMES} frames")


# -- export options -----------------------------------------------------------------------------------------------
def add_tsdf_arguments(g) -> None:
    """``rwf export mesh``'s ``--tsdf`` options (rwf_render/nerf_tsdf.py), added to the nerf runs' group ``g``."""
    from .cli import positive_float, positive_int  # noqa: PLC0415

    g.add_argument("--tsdf", action="store_true",
                   help="a surface fused (open3d's TSDF) from the depths and colours rendered at the training cameras "
                        "(undistorted pinhole views), instead of marching cubes on density; writes "
                        "RUN/mesh_tsdf.<format>; no --res or --threshold")
    g.add_argument("--tsdf-voxel", type=positive_float, default=None, metavar="L",
                   help="--tsdf voxel length in scene units (default: the box diagonal / 256; from 1/2048 to 1/8 "
                        "of it); the truncation is 4 voxels")
    g.add_argument("--tsdf-views", type=positive_int, default=None, metavar="N",
                   help="--tsdf: fuse N training cameras, evenly spaced (default: all)")
    g.add_argument("--downscale", type=positive_int, default=None, metavar="K",
                   help="--tsdf, --pointcloud, --poisson: render the training cameras at 1/K of the resolution "
                        "the run was fitted at (after the fit's own --downscale; default: divided down to about 200 "
                        "pixels across, never up)")
    g.add_argument("--num-points", type=positive_int, default=None, metavar="N",
                   help="--pointcloud, --poisson: keep at most N of the points where training rays stop, a fixed-seed "
                        "sample (default 1000000)")
