"""What a fit trains with: ``TrainConfig`` (steps, learning rate and its schedule, seed, checkpoints, loss
weights), its validation for configs read back from a run, and the learning-rate schedules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SCHEDULES = ("const", "exp", "cos", "step")
DEVICES = ("auto", "cpu", "cuda")
MAX_LR = 1e3
"""learning rates at most: a larger one overflows Adam's float32 update (a traceback, not a diverged fit)"""
MAX_SEED = 2**32 - 1
"""seeds are 0..MAX_SEED (numpy's range; torch's generators take the offsets the fields add to them)"""


@dataclass
class TrainConfig:
    steps: int = 2000
    """optimizer steps in total"""
    lr: float = 1e-3
    """Adam learning rate"""
    scale_lr: float | None = None
    """learning rate of the RWF scales (default: lr)"""
    schedule: str = "const"
    """learning-rate schedule: const | exp | cos (exp and cos decay to lr * lr_final at the last step) | step
    (lr * lr_final ** (step // decay_every): Tancik's "x0.1 every 5000 steps")"""
    lr_final: float = 0.1
    """exp/cos: final learning rate as a fraction of lr; step: the factor applied every decay_every steps"""
    decay_every: int = 0
    """step schedule: steps between decays"""
    lr_warmup: int = 0
    """the rate rises linearly over the first ``lr_warmup`` steps (lr / lr_warmup at the first) before the schedule
    applies in full; 0: none. Adam's first steps move every weight by the full rate whatever its gradient's size, and
    an RWF layer's scale multiplies that move: 1024 wide at lr 1e-3, an image fit's sigmoid saturated within 20 steps
    and never moved again (BENCHMARKS.md)"""
    seed: int = 0
    """seeds the data sampling (the model has its own seed in its config)"""
    deterministic: bool = False
    """deterministic algorithms (bit-identical reruns and resumes, slower on GPU)"""
    device: str = "auto"
    """auto | cpu | cuda"""
    eval_every: int = 100
    """evaluate (and append a history row) every this many steps"""
    ckpt_every: int = 500
    """write checkpoint.pt every this many steps (and at the end)"""
    loss_weights: dict = field(default_factory=dict)
    """weight of each named loss term (1.0 when absent)"""
    max_seconds: float | None = None
    """stop once the training time (metrics.json's ``seconds``: steps only, counted over resumes) reaches this many
    seconds, at most ``steps``; the last step reached is evaluated and saved as a last step is. The learning-rate
    schedule still spans ``steps``. None: train all ``steps``"""


def check_train_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming the setting when ``cfg`` cannot be trained: the command line refuses such values,
    but a hand-edited or damaged config.json of a resumed run would otherwise fail with a traceback mid-fit."""

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def rate(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= MAX_LR

    problems = [
        (integer(cfg.steps) and cfg.steps >= 1, f"steps {cfg.steps!r} (an integer >= 1)"),
        (rate(cfg.lr), f"lr {cfg.lr!r} (a number in (0, {MAX_LR:g}])"),
        (cfg.scale_lr is None or rate(cfg.scale_lr),
         f"scale_lr {cfg.scale_lr!r} (null or a number in (0, {MAX_LR:g}])"),
        (cfg.schedule in SCHEDULES, f"schedule {cfg.schedule!r} (one of {', '.join(SCHEDULES)})"),
        (rate(cfg.lr_final) and cfg.lr_final <= 1, f"lr_final {cfg.lr_final!r} (a number in (0, 1])"),
        (integer(cfg.decay_every) and cfg.decay_every >= (cfg.schedule == "step"),
         f"decay_every {cfg.decay_every!r} (an integer >= 1 with the step schedule, else >= 0)"),
        (integer(cfg.lr_warmup) and cfg.lr_warmup >= 0, f"lr_warmup {cfg.lr_warmup!r} (an integer >= 0)"),
        (integer(cfg.seed) and 0 <= cfg.seed <= MAX_SEED, f"seed {cfg.seed!r} (an integer in 0..{MAX_SEED})"),
        (isinstance(cfg.deterministic, bool), f"deterministic {cfg.deterministic!r} (true or false)"),
        (cfg.device in DEVICES, f"device {cfg.device!r} (one of {', '.join(DEVICES)})"),
        (integer(cfg.eval_every) and cfg.eval_every >= 1, f"eval_every {cfg.eval_every!r} (an integer >= 1)"),
        (integer(cfg.ckpt_every) and cfg.ckpt_every >= 1, f"ckpt_every {cfg.ckpt_every!r} (an integer >= 1)"),
        (isinstance(cfg.loss_weights, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0 for k, v in cfg.loss_weights.items()),
         f"loss_weights {cfg.loss_weights!r} (names to finite numbers >= 0)"),
        (cfg.max_seconds is None or (isinstance(cfg.max_seconds, (int, float)) and not isinstance(cfg.max_seconds, bool)
                                     and math.isfinite(cfg.max_seconds) and cfg.max_seconds > 0),
         f"max_seconds {cfg.max_seconds!r} (null or a number > 0)")]
    bad = [what for ok, what in problems if not ok]
    if bad:
        raise ValueError(f"train: {'; '.join(bad)}")


def lr_factor(schedule: str, step: int, steps: int, final: float, decay_every: int = 0, warmup: int = 0) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``steps``: the schedule's, times (step + 1) / warmup during
    the first ``warmup`` steps."""
    if warmup > 0 and step + 1 < warmup:
        return (step + 1) / warmup * lr_factor(schedule, step, steps, final, decay_every)
    frac = min(step / max(steps - 1, 1), 1.0)
    if schedule == "const":
        return 1.0
    if schedule == "step":
        if decay_every <= 0:
            raise ValueError("the step schedule needs decay_every > 0")
        return final ** (step // decay_every)
    if schedule == "exp":
        return final ** frac
    if schedule == "cos":
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
