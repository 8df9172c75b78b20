"""The model and training options that ``rwf fit image`` and ``rwf fit sdf`` share, with each pipeline's defaults.

``add_model_arguments`` / ``add_training_arguments`` add them to a parser; ``model_from_args`` /
``train_from_args`` turn them into the configs of ``fields`` and ``trainer``; ``ALIASES`` names the config entries
of the options whose entry is named otherwise, for the --resume check (``rundir.option_clashes``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .fields import EncodingConfig, MLPConfig
from .rundir import COMPARE_PARAMS
from .trainer import TrainConfig

ENCODINGS = ("fourier", "pe", "identity")
ACTIVATIONS = ("relu", "tanh", "softplus", "gelu", "silu")
SCHEDULES = ("const", "exp", "cos", "step")

ALIASES = {"encoding": ("encoding.kind",), "features": ("encoding.m",), "trainable_features": ("encoding.trainable",)}
"""config entries of the options not named like them (the others: ``--width`` sets ``mlp.width``, ...)"""


@dataclass(frozen=True)
class ModelDefaults:
    features: int
    sigma: float
    n_freqs: int
    width: int
    trainable_features: bool = True
    """whether the pipeline offers --trainable-features"""


@dataclass(frozen=True)
class TrainingDefaults:
    steps: int
    schedule: str
    decay_every: int
    eval_every: int
    what_eval: str
    """what a held-out evaluation measures, for the help text"""


def add_model_arguments(p: argparse.ArgumentParser, d: ModelDefaults) -> None:
    from .cli import positive_float, positive_int  # noqa: PLC0415

    m = p.add_argument_group("model")
    m.add_argument("--param", choices=list(COMPARE_PARAMS), default="rwf", help="linear layer type (default rwf)")
    m.add_argument("--rwf-mu", type=float, default=1.0, help="RWF log-scale mean")
    m.add_argument("--rwf-sigma", type=float, default=0.1, help="RWF log-scale std")
    m.add_argument("--rwf-log-scale", action="store_true", help="train log s instead of s")
    m.add_argument("--encoding", choices=ENCODINGS, default="fourier")
    m.add_argument("--features", type=positive_int, default=d.features,
                   help=f"Fourier features m (default {d.features})")
    m.add_argument("--sigma", type=positive_float, default=d.sigma,
                   help=f"Fourier sigma (2-pi convention, default {d.sigma:g})")
    if d.trainable_features:
        m.add_argument("--trainable-features", action="store_true", help="learn the Fourier matrix")
    m.add_argument("--n-freqs", type=positive_int, default=d.n_freqs,
                   help=f"positional-encoding octaves (default {d.n_freqs})")
    m.add_argument("--depth", type=positive_int, default=4, help="linear layers, output included (default 4)")
    m.add_argument("--width", type=positive_int, default=d.width, help=f"hidden width (default {d.width})")
    m.add_argument("--activation", choices=ACTIVATIONS, default="relu")


def add_training_arguments(p: argparse.ArgumentParser, d: TrainingDefaults) -> None:
    from .cli import positive_float, positive_int  # noqa: PLC0415

    t = p.add_argument_group("training")
    t.add_argument("--steps", type=positive_int, default=None, help=f"optimizer steps (default {d.steps})")
    t.add_argument("--lr", type=positive_float, default=1e-3)
    t.add_argument("--scale-lr", type=positive_float, default=None, help="learning rate of the RWF scales")
    t.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help=f"learning-rate schedule (default {d.schedule})")
    t.add_argument("--lr-final", type=positive_float, default=0.1,
                   help="exp/cos: final lr as a fraction of --lr; step: the factor every --decay-every steps")
    t.add_argument("--decay-every", type=positive_int, default=d.decay_every,
                   help=f"step schedule: steps between decays (default {d.decay_every})")
    t.add_argument("--eval-every", type=positive_int, default=d.eval_every,
                   help=f"steps between {d.what_eval} (default {d.eval_every})")
    t.add_argument("--ckpt-every", type=positive_int, default=250, help="steps between checkpoints (default 250)")


def model_from_args(args, out_activation: str = "none") -> tuple[EncodingConfig, MLPConfig]:
    enc = EncodingConfig(kind=args.encoding, m=args.features, sigma=args.sigma,
                         trainable=getattr(args, "trainable_features", False), n_freqs=args.n_freqs,
                         include_input=args.encoding == "pe")
    mlp = MLPConfig(depth=args.depth, width=args.width, activation=args.activation, out_activation=out_activation,
                    param=args.param, rwf_mu=args.rwf_mu, rwf_sigma=args.rwf_sigma, rwf_log_scale=args.rwf_log_scale)
    return enc, mlp


def train_from_args(args, steps: int, loss_weights: dict | None = None) -> TrainConfig:
    return TrainConfig(steps=args.steps or steps, lr=args.lr, scale_lr=args.scale_lr, schedule=args.schedule,
                       lr_final=args.lr_final, decay_every=args.decay_every, seed=args.seed,
                       deterministic=args.deterministic, device=args.device, eval_every=args.eval_every,
                       ckpt_every=args.ckpt_every, loss_weights=dict(loss_weights or {}))
