"""NeRF on lego: test PSNR against wall time for plain and RWF layers, throughput and where the time goes.

    python benchmarks/nerf.py --cpu                 # lego at 100x100 on a CPU (the 'lego' preset), plain and rwf
    python benchmarks/nerf.py --gpu                 # lego at 400x400 (the 'lego-gpu' preset: the hash grid)
    python benchmarks/nerf.py --tancik              # the simplified-NeRF protocol of Tancik et al. (RWF.md), GPU
    python benchmarks/nerf.py --tancik --cpu        # the same protocol scaled down (100x100, fewer steps)
    python benchmarks/nerf.py --cpu --budget 600 --seeds 0 1 2   # equal-time comparison on the test views

``--budget S`` stops every run after S seconds of training (the preset's schedule is left as it is, so each run is
a snapshot of the same fit at the same wall time) and measures test PSNR at ``--marks`` (default S/4, S/2, S) on
the same test views; with several ``--seeds`` (each seed draws its own Fourier matrix, initial weights and rays, the
same for every param) it prints the mean, the seed-to-seed spread and the per-seed difference to plain. Each mark
is printed as soon as it is measured, and such runs skip the periodic validation renders (the marks replace them;
evaluation never counts as training time, so this changes only the wall time).

Each param trains from the same seed with the preset's settings; validation PSNR (one val view) is logged
against training seconds, and the final test PSNR/SSIM is measured on ``--test-images`` evenly spaced test views.
Time shares: the forward pass split into marching, field and compositing; the rest of a step is the backward
pass, the optimizer and the occupancy-grid updates.

Last output line: {param: {"psnr", "ssim", "seconds", "steps", "samples_per_s", "psnr_at_equal_time", "shares"}}
(one seed), or {"seeds", "marks", "runs": {param: [per seed]}, "at_marks": {param: {mark: mean}}} (several seeds or a
budget).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
from _common import data_root, machine

from rwf_render.nerf_data import load_split
from rwf_render.nerf_options import config_from_args
from rwf_render.nerf_task import NeRFTask, build_model, optional_split, spaced_indices, test_metrics
from rwf_render.trainer import Trainer


def preset_args(preset: str, param: str, args, seed: int = 0) -> SimpleNamespace:
    """The namespace ``rwf fit nerf PRESET --param P`` would produce (preset settings fill the rest)."""
    ns = {name: None for name in ("downscale", "background", "near", "far", "encoding", "features", "sigma", "depth",
                                  "width", "no_view_dependence", "appearance_dim", "sampler", "grid_resolution",
                                  "grid_levels", "steps_per_diagonal", "cone_angle", "target_samples", "lr",
                                  "schedule", "eval_every", "ckpt_every", "eval_images", "hash_levels",
                                  "hash_log2_size", "hash_max_res")}
    param, _, encoding = param.partition(":")
    ns.update(scene=preset, param=param, encoding=encoding or None, steps=args.steps, seed=seed, deterministic=False,
              device=args.device, quiet=True)
    if args.downscale:
        ns["downscale"] = args.downscale
    return SimpleNamespace(**ns)


_SPLITS: dict = {}


def splits(cfg, test_images: int):
    """(train, val, test) of the preset's data, decoded once per process and shared by every run."""
    key = (cfg.data, cfg.downscale, test_images)
    if key not in _SPLITS:
        _SPLITS[key] = (load_split(cfg.data, "train", cfg.downscale),
                        optional_split(cfg.data, "val", cfg.downscale, range(1)),
                        load_split(cfg.data, "test", cfg.downscale, spaced_indices(cfg.data, "test", test_images)))
    return _SPLITS[key]


class TestMarks:
    """Trainer callback: test PSNR when training time first reaches each mark; stops the fit at ``budget`` s.
    Each mark is printed as it is measured, so a run stopped from outside still leaves the marks it reached."""

    def __init__(self, test, background: str, marks: list[float], budget: float | None, label: str = ""):
        self.test, self.background, self.budget, self.label = test, background, budget, label
        self.pending = sorted(marks)
        self.at: dict[float, dict] = {}
        self.last: tuple[int, dict] | None = None  # (step, test metrics) of the latest measurement

    def on_step(self, trainer, stats) -> None:
        while self.pending and trainer.seconds >= self.pending[0]:
            mark = self.pending.pop(0)
            if self.last is not None and self.last[0] == trainer.step_idx:
                m = self.last[1]  # two marks passed in one step: the same weights
            else:
                start = time.time()
                trainer.model.eval()
                with torch.no_grad():
                    m = test_metrics(trainer.model, self.test, self.background, None)
                trainer.model.train()
                m = {**m, "eval_seconds": round(time.time() - start, 1)}
            self.last = (trainer.step_idx, m)
            self.at[mark] = {"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4), "step": trainer.step_idx,
                             "seconds": round(trainer.seconds, 1)}
            print(f"{self.label} mark {mark:g} s: test PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} at step "
                  f"{trainer.step_idx} ({trainer.seconds:.1f} s of training; {m['eval_seconds']:.0f} s to evaluate "
                  f"{m['test_images']} views)", flush=True)
        if self.budget is not None and trainer.seconds >= self.budget:
            trainer.stop_requested = True


def run(preset: str, param: str, args, seed: int = 0, marks: list[float] = ()) -> dict:
    cfg = config_from_args(preset_args(preset, param, args, seed))
    cfg.train.ckpt_every = 10**9
    if marks:  # the test marks measure the curve: no validation render every eval_every steps (wall time only)
        cfg.train.eval_every = 10**9
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    train, val, test = splits(cfg, args.test_images)
    model = build_model(cfg, train.aabb, len(train)).to(device)
    task = NeRFTask(model, train, val, cfg, device)
    task.timings = {}
    marker = TestMarks(test, cfg.background, list(marks), args.budget, label=f"{param:>5} seed {seed}:")
    trainer = Trainer(model, task, cfg.train, callbacks=[marker], progress=not args.quiet)
    t0 = time.time()
    trainer.fit()
    wall = time.time() - t0
    if marker.last is not None and marker.last[0] == trainer.step_idx:
        metrics = marker.last[1]  # the last mark was measured on the final weights (a budget stop): not again
    else:
        metrics = test_metrics(model, test, cfg.background, None)
    forward = sum(task.timings.values())
    shares = {k: round(v / trainer.seconds, 3) for k, v in task.timings.items()}
    shares["backward_optimizer_grid"] = round(1 - forward / trainer.seconds, 3)
    return {"psnr": round(metrics["psnr"], 3), "ssim": round(metrics["ssim"], 4), "seconds": round(trainer.seconds, 1),
            "wall_seconds": round(wall, 1), "steps": trainer.step_idx, "test_images": metrics["test_images"],
            "samples_per_s": round(task.total_samples / trainer.seconds), "shares": shares,
            "curve": [(r["step"], r["seconds"], r["psnr"]) for r in trainer.history],
            "resolution": f"{train.size(0)[0]}x{train.size(0)[1]}", "seed": seed,
            "at_marks": {str(k): v for k, v in marker.at.items()}}


def psnr_at(curve, seconds: float) -> float | None:
    """Validation PSNR at ``seconds`` of training, linearly interpolated on the logged curve."""
    s = np.array([c[1] for c in curve])
    v = np.array([c[2] for c in curve])
    if len(s) == 0 or seconds < s[0]:
        return None
    return float(np.interp(seconds, s, v))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="CPU-sized protocol (100x100)")
    p.add_argument("--gpu", action="store_true", help="400x400 protocol")
    p.add_argument("--tancik", action="store_true", help="the simplified-NeRF protocol")
    p.add_argument("--params", nargs="*", default=["plain", "rwf"],
                   help="layer parameterizations to run, each optionally with an encoding: rwf:hashgrid (the first "
                        "is the baseline of the differences)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--downscale", type=int, default=None)
    p.add_argument("--test-images", type=int, default=25)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run each param with (default: 0)")
    p.add_argument("--budget", type=float, default=None, help="stop every run after this many training seconds")
    p.add_argument("--marks", type=float, nargs="+", default=None,
                   help="training seconds at which to measure test PSNR (default with --budget: S/4, S/2, S)")
    args = p.parse_args()
    if args.budget is not None and args.budget <= 0:
        print("--budget must be positive", file=sys.stderr)
        return 2
    os.environ["RWF_DATA"] = str(data_root(args.data))
    if not (data_root(args.data) / "nerf" / "lego_400").is_dir():
        print(f"lego_400 not found under {data_root(args.data)} (use --data or RWF_DATA)", file=sys.stderr)
        return 2
    preset = "lego-tancik" if args.tancik else ("lego-gpu" if args.gpu else "lego")
    if args.tancik and args.cpu:
        args.downscale = args.downscale or 4
        args.steps = args.steps or 3000
    print(json.dumps({"machine": machine(), "preset": preset, "steps": args.steps, "downscale": args.downscale,
                      "seeds": args.seeds, "budget": args.budget}))
    if len(args.seeds) > 1 or args.budget is not None or args.marks:
        return compare_seeds(preset, args)
    results = {}
    for param in args.params:
        results[param] = run(preset, param, args)
        r = results[param]
        print(f"{param:>5}: test PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} ({r['test_images']} views at "
              f"{r['resolution']}), {r['steps']} steps in {r['seconds']:.0f} s, {r['samples_per_s']:.3g} samples/s, "
              f"shares {r['shares']}", flush=True)
    equal = min(r["seconds"] for r in results.values())
    for r in results.values():
        r["psnr_at_equal_time"] = psnr_at(r["curve"], equal)
        r["equal_time_seconds"] = round(equal, 1)
    print("\n| param | test PSNR | SSIM | val PSNR at equal time | steps | seconds | samples/s |")
    print("|---|---|---|---|---|---|---|")
    for param, r in results.items():
        eq = r["psnr_at_equal_time"]
        print(f"| {param} | {r['psnr']:.2f} | {r['ssim']:.4f} | {'-' if eq is None else f'{eq:.2f}'} | {r['steps']} | "
              f"{r['seconds']:.0f} | {r['samples_per_s']:.3g} |")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in results.items()}))
    return 0


def compare_seeds(preset: str, args) -> int:
    """Every param with every seed (params alternate within a seed, so a drift in machine load hits all alike);
    test PSNR at each mark: per-param mean and spread, and each seed's difference to the first param."""
    marks = sorted(args.marks or ([args.budget / 4, args.budget / 2, args.budget] if args.budget else []))
    runs: dict[str, list[dict]] = {param: [] for param in args.params}
    for seed in args.seeds:
        for param in args.params:
            r = run(preset, param, args, seed, marks)
            runs[param].append(r)
            at = ", ".join(f"{k} s: {v['psnr']:.2f} dB (step {v['step']})" for k, v in r["at_marks"].items())
            print(f"{param:>5} seed {seed}: final test PSNR {r['psnr']:.2f} dB after {r['steps']} steps in "
                  f"{r['seconds']:.0f} s; {at}", flush=True)
    table: dict[str, dict[str, dict]] = {}
    base_param = args.params[0]
    print(f"\n| mark (training s) | param | test PSNR mean | seed std | per seed | minus {base_param}, per seed |")
    print("|---|---|---|---|---|---|")

    def psnrs(param: str, mark: str) -> list[float]:
        """Each seed's test PSNR at ``mark`` ("final": at the end); runs that ended before the mark are left out."""
        return [r["psnr"] if mark == "final" else r["at_marks"][mark]["psnr"] for r in runs.get(param, [])
                if mark == "final" or mark in r["at_marks"]]

    for mark in [str(m) for m in marks] + ["final"]:
        for param in args.params:
            vals, base = psnrs(param, mark), psnrs(base_param, mark)
            if len(vals) != len(args.seeds):
                continue  # a run ended (its steps done) before this mark
            diff = [round(a - b, 3) for a, b in zip(vals, base)] if param != base_param and len(base) == len(vals) else []
            entry = {"mean": round(float(np.mean(vals)), 3),
                     "std": round(float(np.std(vals, ddof=1)), 3) if len(vals) > 1 else 0.0,
                     "per_seed": vals, f"minus_{base_param}": diff}
            table.setdefault(param, {})[mark] = entry
            print(f"| {mark} | {param} | {entry['mean']:.2f} | {entry['std']:.2f} | "
                  f"{' '.join(f'{v:.2f}' for v in vals)} | {' '.join(f'{d:+.2f}' for d in diff) or '-'} |")
    print(json.dumps({"seeds": args.seeds, "marks": marks, "budget": args.budget, "at_marks": table,
                      "runs": {p: [{k: v for k, v in r.items() if k != "curve"} for r in rs]
                               for p, rs in runs.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
