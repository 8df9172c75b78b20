"""SIREN (Sitzmann et al. 2020) on the image protocol, plain vs RWF layers, beside the default Fourier-feature ReLU net.

Target: the built-in astronaut (the ``rwf fit image`` default) at a 256 px long side; ``--split tancik``: train on
pixels [::2, ::2], report PSNR on the held-out [1::2, 1::2]; full batch; Adam; 2000 steps.

    SIREN:  --activation sine --omega0 30, identity encoding (raw coordinates), 5 linear layers of 256 (4 hidden
            sines + the linear output, then the pipeline's sigmoid), SIREN's init; lr 1e-4 (the paper's) unless
            --siren-lr says otherwise; param plain and rwf (same seed: the same W0, the same function at step 0)
    FF ReLU: the ``rwf fit image`` default: 256 Gaussian Fourier features sigma 10, 4 x 256 ReLU, RWF, lr 1e-3

    python benchmarks/siren.py                       # 2000 steps at 256 px (about 1 h on one CPU core)
    python benchmarks/siren.py --siren-lr 1e-4 1e-3  # also SIREN at the project's default rate
    python benchmarks/siren.py --quick               # 64 px, 100 steps, width 64: a smoke test (seconds)

Runs one after another in one process with ``--threads`` BLAS threads (default 1: on a shared 2-core machine two
threads were up to 50x slower). The last output line is one JSON object {run: {"psnr", "best_psnr", "psnr_train",
"seconds", ...}, "machine": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from _common import machine

from rwf_render.fields import EncodingConfig, MLPConfig
from rwf_render.image import ImageConfig, ImageTask, build_model, load_target
from rwf_render.trainer import TrainConfig, Trainer, resolve_device


def run_one(name: str, enc: EncodingConfig, mlp: MLPConfig, lr: float, args) -> dict:
    cfg = ImageConfig(path=None, size=args.size, split="tancik", batch=0, encoding=enc, mlp=mlp,
                      train=TrainConfig(steps=args.steps, lr=lr, schedule="const", device=args.device,
                                        eval_every=args.eval_every, ckpt_every=10**9),
                      model_seed=args.seed)
    image, _ = load_target(cfg)
    device = resolve_device(args.device)
    task = ImageTask(image, cfg, device)
    trainer = Trainer(build_model(cfg, image.shape[2]), task, cfg.train, progress=False)
    trainer.fit()
    final = task.final_metrics(trainer.model)
    best = max(trainer.history, key=lambda r: r["psnr"])
    return {"psnr": round(final["psnr"], 3), "psnr_train": round(final["psnr_train"], 3),
            "ssim": round(final["ssim"], 4), "best_psnr": round(best["psnr"], 3), "best_step": best["step"],
            "seconds": round(trainer.seconds, 1), "lr": lr, "param": mlp.param, "activation": mlp.activation,
            "encoding": enc.kind, "depth": mlp.depth, "width": mlp.width, "steps": args.steps,
            "history": [(r["step"], round(r["psnr"], 3)) for r in trainer.history]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64 px, 100 steps, width 64: a smoke test")
    p.add_argument("--size", type=int, default=None, help="long side in pixels (default 256)")
    p.add_argument("--steps", type=int, default=None, help="full-batch Adam steps (default 2000)")
    p.add_argument("--width", type=int, default=None, help="hidden width (default 256)")
    p.add_argument("--eval-every", type=int, default=None, help="steps between held-out evaluations (default 100)")
    p.add_argument("--omega0", type=float, default=30.0, help="SIREN omega0 (default 30)")
    p.add_argument("--siren-lr", type=float, nargs="+", default=[1e-4], help="SIREN learning rates (default 1e-4)")
    p.add_argument("--ff-lr", type=float, default=1e-3, help="Fourier-feature ReLU learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    args.size = args.size or (64 if args.quick else 256)
    args.steps = args.steps or (100 if args.quick else 2000)
    args.width = args.width or (64 if args.quick else 256)
    args.eval_every = args.eval_every or (25 if args.quick else 100)
    torch.set_num_threads(args.threads)
    info = {**machine(), "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({"machine": info, "protocol": {"size": args.size, "steps": args.steps, "width": args.width,
                                                    "omega0": args.omega0, "quick": args.quick}}), flush=True)
    w = args.width
    plans = [(f"siren-{param}-lr{lr:g}", EncodingConfig(kind="identity"),
              MLPConfig(depth=5, width=w, activation="sine", omega0=args.omega0, out_activation="sigmoid",
                        param=param), lr)
             for lr in args.siren_lr for param in ("plain", "rwf")]
    plans.append((f"ff-relu-rwf-lr{args.ff_lr:g}", EncodingConfig(kind="fourier", m=256, sigma=10.0),
                  MLPConfig(depth=4, width=w, activation="relu", out_activation="sigmoid", param="rwf"), args.ff_lr))
    t0, results = time.time(), {}
    for name, enc, mlp, lr in plans:
        results[name] = r = run_one(name, enc, mlp, lr, args)
        print(f"{name:>22}: test {r['psnr']:6.2f} dB (best {r['best_psnr']:6.2f} at {r['best_step']}), train "
              f"{r['psnr_train']:6.2f}, ssim {r['ssim']:.4f}, {r['seconds']:7.1f} s", flush=True)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print("\n| run | encoding | layers | lr | test PSNR (dB) | best test PSNR (step) | train PSNR | SSIM | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        layers = f"{r['depth']} x {r['width']} {r['activation']} {r['param']}"
        print(f"| {name} | {r['encoding']} | {layers} | {r['lr']:g} | {r['psnr']:.2f} | {r['best_psnr']:.2f} "
              f"({r['best_step']}) | {r['psnr_train']:.2f} | {r['ssim']:.4f} | {r['seconds']:.0f} |")
    print(f"\ntotal {time.time() - t0:.0f} s, load average at the end {info['load_average_end']}")
    print(json.dumps({**{k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in results.items()},
                      "machine": info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
