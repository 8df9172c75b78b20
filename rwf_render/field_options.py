"""The model and training options that ``rwf fit image`` and ``rwf fit sdf`` share, with each pipeline's defaults.

``add_model_arguments`` / ``add_training_arguments`` add them to a parser; ``model_from_args`` /
``train_from_args`` turn them into the configs of ``fields`` and ``trainer``; ``ALIASES`` names the config entries
of the options whose entry is named otherwise, for the --resume check (``resume.option_clashes``).
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass

from .errors import RwfWarning, UserError, ignored_options, out_of_memory
from .fields import EncodingConfig, MLPConfig
from .rundir import COMPARE_PARAMS
from .train_config import MAX_LR, SCHEDULES, TrainConfig

ENCODINGS = ("fourier", "pe", "hashgrid", "identity")
ACTIVATIONS = ("relu", "tanh", "softplus", "gelu", "silu", "sine")
OMEGA0 = 30.0
"""--omega0 default: SIREN's omega_0 (Sitzmann et al. 2020, sec. 3.2)"""

MAX_DEPTH = 1024
"""linear layers at most: beyond, building the MLP alone would take minutes (one Python object per layer)"""
MAX_PARAMETERS = 1 << 31
"""weights at most (8.6 GB in float32, three times that with Adam's moments): beyond, an absurd --width or
--features would exhaust memory (or overflow torch's size computation) after the run folder was made"""
MAX_LOG_SCALE = 40.0
"""|--rwf-mu| + 8 --rwf-sigma at most: the RWF scales exp(N(mu, sigma)) and V = W0 / s then stay float32 numbers"""

ALIASES = {"encoding": ("encoding.kind",), "features": ("encoding.m",), "trainable_features": ("encoding.trainable",),
           "hash_levels": ("encoding.levels",), "hash_log2_size": ("encoding.log2_size",),
           "hash_max_res": ("encoding.max_res",)}
"""config entries of the options not named like them (the others: ``--width`` sets ``mlp.width``, ...)"""


@dataclass(frozen=True)
class ModelDefaults:
    features: int
    sigma: float
    n_freqs: int
    width: int
    hash_max_res: int = 512
    """--encoding hashgrid: the finest level's resolution"""
    trainable_features: bool = True
    """whether the pipeline offers --trainable-features"""


LR_WARMUP = 20
"""steps of warm-up of image and NeRF fits whose layers are wider than the pipeline's default (none with a hash grid):
without it, RWF layers 1024 wide saturated an image fit's output (lr 1e-3) and 192 or 256 wide emptied a NeRF field
(lr 3e-3; 512 wide even at 7.5e-4) within their first steps, and with it they train; at the default widths none is
needed, and on short NeRF fits it cost up to 1.4 dB (BENCHMARKS.md)"""


def default_lr_warmup(width: int, default_width: int, hashgrid: bool) -> int:
    """The warm-up a fit gets unless --lr-warmup is typed: LR_WARMUP for layers wider than ``default_width``."""
    return LR_WARMUP if width > default_width and not hashgrid else 0


LR_WARMUP_WHY = "without one, wide RWF layers can saturate or empty the field in their first steps"


@dataclass(frozen=True)
class TrainingDefaults:
    steps: int
    schedule: str
    decay_every: int
    eval_every: int
    what_eval: str
    """what a held-out evaluation measures, for the help text"""
    lr_warmup: int = 0
    """steps of the learning rate's linear warm-up"""


def finite_float(text: str) -> float:
    """An argparse type: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_finite(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def model_size_problem(enc: EncodingConfig, mlp: MLPConfig, in_dim: int = 3, out_dim: int = 4) -> str | None:
    """Why a field of these configs cannot be built (too deep, too many weights, RWF scales beyond float32), or
    None. Checked before anything is built or written: an allocation of an absurd size fails only after minutes,
    or the run folder was made, or an old run replaced with --force."""
    if mlp.depth > MAX_DEPTH:
        return f"--depth {mlp.depth} is more than {MAX_DEPTH} layers"
    if mlp.param == "rwf" and abs(mlp.rwf_mu) + 8 * abs(mlp.rwf_sigma) > MAX_LOG_SCALE:
        return (f"--rwf-mu {mlp.rwf_mu:g} with --rwf-sigma {mlp.rwf_sigma:g}: the RWF scales exp(N(mu, sigma)) "
                f"would overflow float32 (|mu| + 8 sigma must be at most {MAX_LOG_SCALE:g})")
    extra = in_dim if enc.include_input else 0
    enc_out = {"fourier": 2 * enc.m + extra, "pe": 2 * in_dim * enc.n_freqs + extra,
               "hashgrid": enc.levels * enc.level_features}.get(enc.kind, in_dim)
    table = enc.levels * (1 << enc.log2_size) * enc.level_features if enc.kind == "hashgrid" else 0
    weights = table + (enc.m * in_dim if enc.kind == "fourier" else 0) + (
        enc_out * out_dim if mlp.depth == 1
        else enc_out * mlp.width + (mlp.depth - 2) * mlp.width ** 2 + mlp.width * out_dim)
    if weights > MAX_PARAMETERS:
        return (f"--depth {mlp.depth}, --width {mlp.width} and --features {enc.m}: {weights:.3g} weights, more than "
                f"{MAX_PARAMETERS:.3g}; use a smaller --width, --depth or --features")
    return None


def add_model_arguments(p: argparse.ArgumentParser, d: ModelDefaults) -> None:
    from .cli import positive_float, positive_int  # noqa: PLC0415

    m = p.add_argument_group("model")
    m.add_argument("--param", choices=list(COMPARE_PARAMS), default="rwf", help="linear layer type (default rwf)")
    m.add_argument("--rwf-mu", type=finite_float, default=1.0, help="--param rwf: log-scale mean (default 1)")
    m.add_argument("--rwf-sigma", type=nonneg_float, default=0.1, help="--param rwf: log-scale std (default 0.1)")
    m.add_argument("--rwf-log-scale", action="store_true", help="--param rwf: train log s instead of s (default off)")
    m.add_argument("--encoding", choices=ENCODINGS, default=None,
                   help="input encoding (default fourier; identity, the raw coordinates, with --activation sine)")
    m.add_argument("--features", type=positive_int, default=d.features,
                   help=f"--encoding fourier: features m (default {d.features})")
    m.add_argument("--sigma", type=positive_float, default=d.sigma,
                   help=f"--encoding fourier: sigma (2-pi convention, default {d.sigma:g})")
    if d.trainable_features:
        m.add_argument("--trainable-features", action="store_true",
                       help="--encoding fourier: learn the Fourier matrix (default off: fixed)")
    m.add_argument("--n-freqs", type=positive_int, default=d.n_freqs,
                   help=f"--encoding pe: octaves (default {d.n_freqs})")
    p.set_defaults(hash_max_res_default=d.hash_max_res)
    m.add_argument("--hash-levels", type=positive_int, default=None,
                   help=f"--encoding hashgrid (instant-ngp's multiresolution hash tables): levels (default "
                        f"{HASH_LEVELS}; default --lr {HASH_LR:g})")
    m.add_argument("--hash-log2-size", type=positive_int, default=None,
                   help=f"--encoding hashgrid: log2 of a hashed level's entries (default {HASH_LOG2_SIZE})")
    m.add_argument("--hash-max-res", type=positive_int, default=None,
                   help=f"--encoding hashgrid: the finest level's resolution across the unit box (default "
                        f"{d.hash_max_res}; the coarsest is {HASH_BASE_RES})")
    m.add_argument("--depth", type=positive_int, default=4, help="linear layers, output included (default 4)")
    m.add_argument("--width", type=positive_int, default=d.width,
                   help=f"hidden width, with --depth 2 or more (default {d.width})")
    m.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="hidden activation (default relu); sine: SIREN (Sitzmann et al. 2020), each hidden layer "
                        "sin(omega0 (W x + b)) with SIREN's init, linear output layer (image fits: then their "
                        "sigmoid), raw coordinates unless --encoding is given (a Fourier encoding is allowed); its "
                        "default --lr is SIREN's 1e-4 "
                        "(at 1e-3 a 5 x 256 SIREN diverged on a 256 px photo: benchmarks/siren.py)")
    m.add_argument("--omega0", type=positive_finite, default=None,
                   help=f"--activation sine: the frequency factor omega0 (default {OMEGA0:g}); coordinates here "
                        "span 1 (images [0, 1], shapes [-0.5, 0.5]), half SIREN's [-1, 1]: --omega0 60 gives "
                        "SIREN's first-layer frequencies")
    record_defaults(p, m)


DEFAULT_LR, SIREN_LR = 1e-3, 1e-4  # --lr unless given: SIREN's rate for sine networks (Sitzmann et al. 2020)
HASH_LR = 1e-2  # ... and instant-ngp's for hash grids
HASH_LEVELS, HASH_LOG2_SIZE, HASH_BASE_RES = 16, 19, 16


def learning_rate(text: str) -> float:
    """An argparse type: a learning rate in (0, MAX_LR] (a larger one overflows Adam's float32 update)."""
    from .cli import positive_at_most  # noqa: PLC0415

    return positive_at_most(MAX_LR, " (a larger rate overflows Adam's float32 update)")(text)


def add_training_arguments(p: argparse.ArgumentParser, d: TrainingDefaults) -> None:
    from .cli import nonneg_int, positive_at_most, positive_float, positive_int  # noqa: PLC0415

    decay_factor = positive_at_most(1.0, " (a decay: above 1 the rate grows until it overflows)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=positive_int, default=None, help=f"optimizer steps (default {d.steps})")
    t.add_argument("--max-seconds", type=positive_float, default=None, metavar="S",
                   help="stop once training has taken S seconds (steps only, counted over --resume; metrics.json's "
                        "seconds), evaluating and saving that step as the last; the learning-rate schedule still "
                        "spans --steps (default: no limit)")
    t.add_argument("--lr", type=learning_rate, default=None,
                   help=f"Adam learning rate (default {DEFAULT_LR:g}; {SIREN_LR:g} with --activation sine, SIREN's; "
                        f"{HASH_LR:g} with --encoding hashgrid, instant-ngp's; both: sine's)")
    t.add_argument("--scale-lr", type=learning_rate, default=None,
                   help="--param rwf: learning rate of the RWF scales (default: --lr)")
    t.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help=f"learning-rate schedule (default {d.schedule})")
    t.add_argument("--lr-final", type=decay_factor, default=0.1,
                   help="--schedule exp or cos: final lr as a fraction of --lr; step: the factor every --decay-every "
                        "steps (default 0.1)")
    t.add_argument("--lr-warmup", type=nonneg_int, default=None, metavar="STEPS",
                   help=f"the rate rises linearly to --lr over the first STEPS steps (default "
                        f"{f'{d.lr_warmup} with a --width above the default and no hash grid, else 0' if d.lr_warmup else '0'}; "
                        f"{LR_WARMUP_WHY})")
    t.add_argument("--decay-every", type=positive_int, default=d.decay_every,
                   help=f"--schedule step: steps between decays (default {d.decay_every})")
    t.add_argument("--eval-every", type=positive_int, default=d.eval_every,
                   help=f"steps between {d.what_eval} (default {d.eval_every})")
    t.add_argument("--ckpt-every", type=positive_int, default=250, help="steps between checkpoints (default 250)")
    record_defaults(p, t)


def record_defaults(p: argparse.ArgumentParser, group) -> None:
    """Keep the defaults of ``group``'s options in ``args.option_defaults``, for ``typed`` on a namespace that
    ``cli.dispatch`` did not parse (a call from code)."""
    known = dict(p.get_default("option_defaults") or {})
    p.set_defaults(option_defaults={**known, **{a.dest: a.default for a in group._group_actions}})


def typed(args, dest: str) -> bool:
    """Whether option ``dest`` was typed on the command line, even at its default value (``cli.option_typed``)."""
    from .cli import option_typed  # noqa: PLC0415

    return option_typed(args, dest, (getattr(args, "option_defaults", None) or {}).get(dest))


def refuse_ignored_options(args, kind: str) -> None:
    """UserError naming the options typed for a new fit that it would not use: those of another --encoding than
    ``kind``, the RWF options with --param plain or wn, --lr-final with --schedule const, --decay-every without
    --schedule step, --width with --depth 1. Resuming, the run's saved config decides (a run fitted before these
    checks continues with its own command), and ``resume.option_clashes`` compares what was typed with it."""
    if getattr(args, "resume", False):
        return
    schedule = getattr(args, "schedule", None)
    families = [
        (("features", "sigma", "trainable_features"), kind != "fourier", f"--encoding fourier only, not {kind}"),
        (("n_freqs",), kind != "pe", f"--encoding pe only, not {kind}"),
        (("rwf_mu", "rwf_sigma", "rwf_log_scale", "scale_lr"), args.param != "rwf",
         f"--param rwf only, not {args.param}"),
        (("lr_final",), schedule == "const", "--schedule exp, cos or step, not const"),
        (("decay_every",), schedule != "step", f"--schedule step only, not {schedule}"),
        (("width",), args.depth == 1, "--depth 2 or more (--depth 1 has no hidden layer)")]
    for dests, ignored, applies in families:
        names = [f"--{dest.replace('_', '-')}" for dest in dests if ignored and typed(args, dest)]
        if names:
            raise ignored_options(names, applies)


def model_from_args(args, out_activation: str = "none", in_dim: int = 3) -> tuple[EncodingConfig, MLPConfig]:
    """The encoding and MLP configs of the options; UserError when such a field cannot be built
    (``model_size_problem``), or when --omega0 is given without --activation sine (a new fit only: resuming, the
    run's saved activation decides). --activation sine without --encoding uses the raw coordinates (identity)."""
    sine = args.activation == "sine"
    omega0 = getattr(args, "omega0", None)
    if omega0 is not None and not sine and not getattr(args, "resume", False):
        raise UserError(f"--omega0 applies to --activation sine only, not {args.activation}")
    kind = args.encoding or ("identity" if sine else "fourier")
    refuse_ignored_options(args, kind)
    hash_options = [f"--{n.replace('_', '-')}" for n in ("hash_levels", "hash_log2_size", "hash_max_res")
                    if getattr(args, n, None) is not None]
    if hash_options and kind != "hashgrid":
        raise UserError(f"{', '.join(hash_options)} apply to --encoding hashgrid only, not {kind}")
    enc = EncodingConfig(kind=kind, m=args.features, sigma=args.sigma,
                         trainable=getattr(args, "trainable_features", False), n_freqs=args.n_freqs,
                         include_input=kind == "pe")
    if kind == "hashgrid":
        enc.levels = HASH_LEVELS if args.hash_levels is None else args.hash_levels
        enc.log2_size = HASH_LOG2_SIZE if args.hash_log2_size is None else args.hash_log2_size
        enc.base_res = HASH_BASE_RES
        enc.max_res = getattr(args, "hash_max_res_default", 512) if args.hash_max_res is None else args.hash_max_res
        enc.max_res = single_level_resolution(args, enc.levels, enc.base_res, enc.max_res)
        problem = hash_grid_problem(enc)
        if problem:
            raise UserError(problem)
    mlp = MLPConfig(depth=args.depth, width=args.width, activation=args.activation, out_activation=out_activation,
                    param=args.param, rwf_mu=args.rwf_mu, rwf_sigma=args.rwf_sigma, rwf_log_scale=args.rwf_log_scale,
                    omega0=OMEGA0 if omega0 is None else omega0)
    problem = model_size_problem(enc, mlp, in_dim)
    if problem:
        raise UserError(problem)
    return enc, mlp


def checked_field(build, options: str = "--sigma, --n-freqs, --omega0, --rwf-mu or --rwf-sigma"):
    """``build()`` (a field), with an allocation failure or initial weights that are not finite numbers (a Fourier
    sigma or an octave count beyond float32) as a UserError: call it before the run folder is made, so such
    options write nothing and replace no run."""
    import torch  # noqa: PLC0415

    try:
        model = build()
    except RuntimeError as e:
        if not out_of_memory(e):
            raise
        raise UserError(f"the field does not fit in memory ({str(e).splitlines()[0][:120]}); use a smaller "
                        "--width, --depth or --features") from None
    finite = all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
    if finite and isinstance(getattr(model, "in_dim", None), int):
        with torch.no_grad():  # the encoding of coordinates in the unit box (a huge sigma overflows only there)
            finite = bool(torch.isfinite(model(torch.rand(16, model.in_dim, generator=torch.Generator()
                                                          .manual_seed(0)))).all())
    if not finite:
        raise UserError(f"the field's initial weights or outputs are not finite numbers (float32 overflows); check "
                        f"{options}")
    return model


def single_level_resolution(args, levels: int, base_res: int, max_res: int) -> int:
    """The finest resolution a hash grid of ``levels`` has: one level is at ``base_res`` whatever --hash-max-res
    says (the config recorded 512 for a grid of resolution 16), so a typed --hash-max-res with one level is refused."""
    if levels > 1:
        return max_res
    if getattr(args, "hash_max_res", None) is not None and args.hash_max_res != base_res:
        raise UserError(f"--hash-max-res {args.hash_max_res} needs --hash-levels 2 or more: a grid of one level has "
                        f"the coarsest resolution, {base_res}")
    return base_res


def hash_grid_problem(enc: EncodingConfig) -> str | None:
    """Why a hash grid of ``enc`` cannot be built, or None."""
    if not 1 <= enc.levels <= 32:
        return f"--hash-levels must be in 1..32, got {enc.levels}"
    if not 4 <= enc.log2_size <= 26:
        return f"--hash-log2-size must be in 4..26, got {enc.log2_size}"
    if not 2 <= enc.base_res <= enc.max_res <= 1 << 20:
        return f"--hash-max-res must be in {enc.base_res}..{1 << 20}, got {enc.max_res}"
    return None


def warn_warmup_past_end(steps: int, warmup: int) -> None:
    """A typed --lr-warmup longer than the fit: its rate never reaches --lr (5 steps of a 100-step warm-up ended at
    1.5e-5 of 3e-3). Warned, not refused: a short trial fit with a long run's settings is a use."""
    if warmup > steps:
        warnings.warn(f"--lr-warmup {warmup} is longer than the fit's {steps} steps: the learning rate rises to "
                      f"{steps / warmup:.2g} of --lr at most", RwfWarning, stacklevel=2)


def train_from_args(args, steps: int, loss_weights: dict | None = None, lr_warmup: int = 0) -> TrainConfig:
    """``lr_warmup``: the warm-up unless --lr-warmup was typed (``default_lr_warmup``)."""
    hashgrid = getattr(args, "encoding", None) == "hashgrid"
    lr = (args.lr if args.lr is not None else SIREN_LR if getattr(args, "activation", None) == "sine"
          else HASH_LR if hashgrid else DEFAULT_LR)
    typed_warmup = getattr(args, "lr_warmup", None)
    lr_warmup = typed_warmup if typed_warmup is not None else lr_warmup
    if typed_warmup is not None:
        warn_warmup_past_end(args.steps or steps, typed_warmup)
    return TrainConfig(steps=args.steps or steps, lr=lr, scale_lr=args.scale_lr, schedule=args.schedule,
                       lr_final=args.lr_final, decay_every=args.decay_every,
                       lr_warmup=lr_warmup, seed=args.seed,
                       deterministic=args.deterministic, device=args.device, eval_every=args.eval_every,
                       ckpt_every=args.ckpt_every, loss_weights=dict(loss_weights or {}),
                       max_seconds=getattr(args, "max_seconds", None))
