"""A small, generic trainer: one ``step()``, a ``fit()`` loop, ``evaluate()``, callbacks, checkpoints.

What is trained is described by a *task* (duck-typed):

    task.batch(step, generator) -> batch            draw the data of one step
    task.loss(model, batch) -> (terms, stats)       terms: dict of scalar tensors (summed with the config's
                                                    weights); stats: dict of floats to log (e.g. psnr_train)
    task.evaluate(model) -> dict of floats          held-out metrics (psnr, ...)
    task.state_dict() / task.load_state_dict(d)     optional: task state saved in checkpoints (e.g. an adaptive
                                                    batch size), so a resumed fit continues exactly

Callbacks are objects with any of ``on_start(trainer)``, ``on_step(trainer, stats)``, ``on_eval(trainer, metrics)``,
``on_end(trainer)``; they read trainer state (``model``, ``task``, ``run_dir``, ``history``, ``step_idx``) and may
set ``trainer.stop_requested`` or block in ``on_step`` (pause); they never edit internals.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import Diverged, RwfWarning, UserError
from .layers import param_groups
from .rundir import (CHECKPOINT, HISTORY, check_finite_weights, checkpoint_mismatch, load_checkpoint,
                     refuse_lost_checkpoint, save_checkpoint, write_history)
from .replacing import replacing
from .signals import StopAtStepBoundary
from .train_config import TrainConfig, lr_factor  # noqa: F401  (TrainConfig, lr_factor: also imported from here)

# Callbacks attached to every Trainer built in this process, after its own: how ``rwf fit ... --view`` adds the
# live viewer without the pipelines knowing about it.
_PROCESS_CALLBACKS: list = []


def add_process_callback(callback) -> None:
    """Attach ``callback`` to every Trainer created from now on in this process."""
    _PROCESS_CALLBACKS.append(callback)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name == "cpu":
        torch.set_flush_denormal(True)  # tiny densities/gradients otherwise slow CPU math by up to 2.5x
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch. ``deterministic`` turns on torch's deterministic algorithms, a setting of the
    whole process that stays on after the fit (torch has no scope for it); ``False`` leaves it as it was."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


class ConstantWatch:
    """Warns once when a field gives one value at every evaluation point: a dead network (sigmoid outputs
    saturated, every ReLU unit off), whose gradients are zero, so that no further step changes it (an image fit at
    --lr 10 sat at one colour from step 10 to its end, its loss bit-identical at every evaluation)."""

    def __init__(self, where: str, target: torch.Tensor | None = None):
        """``target``: what the field is fitted to at those points; one value everywhere (a one-colour image) makes
        a constant field the right answer, not a dead one: no warning then."""
        self.where = where
        self.warned = target is not None and target.shape[0] > 1 and _constant(target)

    def check(self, values: torch.Tensor) -> None:
        """``values``: the field at the evaluation points, (N, C)."""
        if self.warned or values.shape[0] < 2 or not _constant(values):
            return
        self.warned = True
        warnings.warn(f"the field gives one value at every {self.where} (a dead network: its units saturated or "
                      "switched off, and it cannot train out of that); refit (--force) with a lower --lr or a "
                      "longer --lr-warmup", RwfWarning, stacklevel=3)


def _constant(values: torch.Tensor) -> bool:
    return bool((values == values[:1]).all())


class Trainer:
    """Adam on ``model`` for ``task``; the RWF scales form their own parameter group ("rwf_scales").

    Args:
        model: the field (moved to the configured device).
        task: see the module docstring.
        cfg: TrainConfig.
        run_dir: where checkpoint.pt and history.csv go (None: nothing is written).
        callbacks: see the module docstring.
        progress: show a tqdm bar (loss, train and test PSNR).
    """

    def __init__(self, model: nn.Module, task, cfg: TrainConfig, run_dir: str | Path | None = None,
                 callbacks: list | None = None, progress: bool = True):
        self.cfg, self.task = cfg, task
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed, cfg.deterministic)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(param_groups(model, cfg.lr, cfg.scale_lr))
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks or []) + _PROCESS_CALLBACKS
        self.progress = progress
        self.step_idx = 0  # steps done
        self.saved_step: int | None = None  # the step of the checkpoint on disk (this process's or a resumed one)
        self.seconds = 0.0  # wall time spent in step(), excluding evaluation and checkpoints
        self.history: list[dict] = []
        self.last_eval: dict = {}
        self.stop_requested = False

    # -- one step ---------------------------------------------------------------------------------------------
    def step(self) -> dict:
        """One optimizer step; returns the logged floats (loss, each term, the task's stats, lr)."""
        t0 = time.perf_counter()
        self.model.train()
        factor = lr_factor(self.cfg.schedule, self.step_idx, self.cfg.steps, self.cfg.lr_final, self.cfg.decay_every,
                           self.cfg.lr_warmup)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        batch = self.task.batch(self.step_idx, self.generator)
        terms, stats = self.task.loss(self.model, batch)
        loss = sum(self.cfg.loss_weights.get(name, 1.0) * value for name, value in terms.items())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_idx += 1
        out = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}, **stats,
               "lr": self.base_lrs[0] * factor}
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        for cb in self.callbacks:
            if hasattr(cb, "on_step"):
                cb.on_step(self, out)
        return out

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        metrics = self.task.evaluate(self.model)
        self.last_eval = metrics
        for cb in self.callbacks:
            if hasattr(cb, "on_eval"):
                cb.on_eval(self, metrics)
        return metrics

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until ``cfg.steps`` (continuing from a loaded checkpoint); returns the last evaluation."""
        from tqdm import tqdm  # noqa: PLC0415

        for cb in self.callbacks:
            if hasattr(cb, "on_start"):
                cb.on_start(self)
        bar = tqdm(total=self.cfg.steps, initial=self.step_idx, disable=not self.progress, dynamic_ncols=True,
                   leave=False, desc="fit")
        signals = StopAtStepBoundary(self)
        budget, first = getattr(self.cfg, "max_seconds", None), self.step_idx
        try:
            while self.step_idx < self.cfg.steps and not self.stop_requested and not self.out_of_time():
                stats = self.step()
                if not math.isfinite(stats["loss"]):  # NaN weights would follow into every output and checkpoint
                    raise self._diverged(f"the loss became {stats['loss']} at step {self.step_idx}")
                last = self.step_idx == self.cfg.steps or self.out_of_time()
                if self.step_idx % self.cfg.eval_every == 0 or last:
                    metrics = self.evaluate()
                    self.history.append({"step": self.step_idx, "seconds": round(self.seconds, 4),
                                         "loss": stats["loss"], **{k: v for k, v in stats.items() if k != "loss"},
                                         **metrics})
                    if self.run_dir is not None:
                        write_history(self.run_dir / HISTORY, self.history)
                if self.run_dir is not None and (self.step_idx % self.cfg.ckpt_every == 0 or last):
                    self.save()
                bar.update(1)
                post = {"loss": f"{stats['loss']:.4g}"}
                if "psnr_train" in stats:
                    post["psnr_train"] = f"{stats['psnr_train']:.2f}"
                if "samples_per_ray" in stats:  # a NeRF fit: what the occupancy grid leaves of each ray
                    post["samples/ray"] = f"{stats['samples_per_ray']:.1f}"
                for key in ("psnr", "iou"):
                    if key in self.last_eval:
                        post[key] = f"{self.last_eval[key]:.4g}"
                bar.set_postfix(post, refresh=False)
        finally:
            bar.close()
            signals.restore()
        if self.out_of_time() and self.step_idx < self.cfg.steps:
            print(f"rwf: --max-seconds {budget:g} reached at step {self.step_idx} of {self.cfg.steps} "
                  f"({self.seconds:.1f} s of training" + ("" if self.step_idx > first else
                                                        ", all before this call: pass a larger --max-seconds to go on")
                  + ")", file=sys.stderr)
        if self.stop_requested and self.run_dir is not None and not (signals.received and replacing(self.run_dir)):
            self.save()  # (a Ctrl+C while --force replaces a run: the new one is dropped, the old one comes back)
        if signals.received:  # saved at a step boundary: --resume continues exactly here
            raise KeyboardInterrupt
        for cb in self.callbacks:
            if hasattr(cb, "on_end"):
                cb.on_end(self)
        return self.last_eval

    def out_of_time(self) -> bool:
        """True once the training time has reached the config's ``max_seconds`` (never without one)."""
        budget = getattr(self.cfg, "max_seconds", None)
        return budget is not None and self.seconds >= budget

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"step": self.step_idx, "seconds": self.seconds, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": rng, "history": self.history,
                "last_eval": self.last_eval,
                "task": self.task.state_dict() if hasattr(self.task, "state_dict") else {}}

    def load_state_dict(self, state: dict) -> None:
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step {step!r} is not a count of steps")
        history, last_eval = state["history"], state["last_eval"]
        if not (isinstance(history, list) and all(isinstance(r, dict) and all(isinstance(k, str) for k in r)
                                                  for r in history) and isinstance(last_eval, dict)):
            raise ValueError("its history is not a list of rows")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # torch checks the groups' sizes, not the moments' shapes
            for p in group["params"]:
                for name, v in self.optimizer.state.get(p, {}).items():
                    if torch.is_tensor(v) and v.dim() > 0 and v.shape != p.shape:
                        raise ValueError(f"optimizer state {name!r} of shape {tuple(v.shape)} for a parameter "
                                         f"of shape {tuple(p.shape)}")
        self.step_idx, self.seconds = step, float(state["seconds"])
        self.history, self.last_eval = list(history), dict(last_eval)
        if hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(state.get("task", {}))
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def save(self) -> None:
        """Write the checkpoint; never one with weights that are not all finite (the step's update diverged
        although its loss was finite): :class:`Diverged`, the last finite checkpoint kept."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise self._diverged(f"the weights stopped being finite numbers at step {self.step_idx}")
        save_checkpoint(self.run_dir / CHECKPOINT, self.state_dict())
        self.saved_step = self.step_idx

    def _diverged(self, what: str) -> Diverged:
        where = f"{self.run_dir}: " if self.run_dir is not None else ""
        kept = (f"its last checkpoint (step {self.saved_step}) is kept" if self.saved_step is not None
                else "no checkpoint was written")
        return Diverged(f"{where}{what}: the fit diverged and stopped; {kept}. Fit again (--force) with a lower "
                        "--lr or a longer --lr-warmup")

    def resume(self) -> bool:
        """Load ``run_dir/checkpoint.pt`` if it exists; returns whether it did."""
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            refuse_lost_checkpoint(self.run_dir, self.cfg.ckpt_every)
            return False
        try:
            self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        except (KeyError, ValueError, TypeError, RuntimeError) as e:  # another run's file, or a foreign one
            raise checkpoint_mismatch(path, e) from None
        check_finite_weights(self.model, path)
        self.saved_step = self.step_idx
        write_history(self.run_dir / HISTORY, self.history)  # drop rows written after the checkpoint
        return True
