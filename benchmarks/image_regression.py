"""Tancik et al.'s 2D image-regression protocol (RWF.md) for plain, WN and RWF layers.

Full protocol (GPU): images resized to a 512 long side, train on [::2, ::2], test on [1::2, 1::2]; MLP 4 x 256 ReLU,
sigmoid output; 256 Gaussian features, sigma 10 (photos) or 14 (text); Adam lr 1e-3, 2000 full-batch steps.
``--cpu``: the same protocol scaled down for a 2-core CPU (128 px long side, 1000 steps); say so beside its numbers.

Every (image, schedule) trains plain, wn and rwf from one seed (same Fourier matrix, same W0), so the three runs
differ in the parameterization only. Each is run with a constant learning rate (the protocol) and with an
exponential decay to 0.1 x (RWF's effective per-neuron rate is larger, so it may oscillate late at constant lr).

    python benchmarks/image_regression.py --cpu            # < 30 min on a 2-core CPU
    python benchmarks/image_regression.py                  # full protocol, for a GPU

The last output line is one JSON object: {param: {"mean_psnr", "mean_best_psnr", "steps_to_plain_final", ...}}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _common import data_root, machine

from rwf_render.fields import EncodingConfig, MLPConfig
from rwf_render.image import ImageConfig, ImageTask, build_model, load_target
from rwf_render.metrics import steps_to_reach
from rwf_render.trainer import TrainConfig, Trainer, resolve_device

NATURAL = ["astronaut", "coffee", "kodim23", "camera"]
TEXT = ["text"]
PARAMS = ("plain", "wn", "rwf")


def run_one(path, param, schedule, args, sigma):
    cfg = ImageConfig(path=str(path), size=args.size, split="tancik", batch=0,
                      encoding=EncodingConfig(kind="fourier", m=256, sigma=sigma),
                      mlp=MLPConfig(depth=4, width=256, out_activation="sigmoid", param=param,
                                    rwf_mu=args.mu, rwf_sigma=args.rwf_sigma),
                      train=TrainConfig(steps=args.steps, lr=1e-3, schedule=schedule, lr_final=0.1,
                                        device=args.device, eval_every=args.eval_every, ckpt_every=10**9),
                      model_seed=args.seed)
    image, _ = load_target(cfg)
    device = resolve_device(args.device)
    trainer = Trainer(build_model(cfg, image.shape[2]), ImageTask(image, cfg, device), cfg.train, progress=False)
    trainer.fit()
    best = max(r["psnr"] for r in trainer.history)
    return {"psnr": trainer.history[-1]["psnr"], "best_psnr": best, "seconds": trainer.seconds,
            "history": [(r["step"], r["psnr"]) for r in trainer.history]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="scaled-down protocol for a 2-core CPU")
    p.add_argument("--data", default=None, help="shared data folder (default $RWF_DATA or ../shared/data)")
    p.add_argument("--images", nargs="*", default=NATURAL + TEXT)
    p.add_argument("--schedules", nargs="*", default=["const", "exp"])
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--mu", type=float, default=1.0, help="RWF log-scale mean")
    p.add_argument("--rwf-sigma", type=float, default=0.1, help="RWF log-scale std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write every run's numbers to this file")
    args = p.parse_args()
    args.size = args.size or (128 if args.cpu else 512)
    args.steps = args.steps or (1000 if args.cpu else 2000)
    args.eval_every = args.eval_every or (10 if args.cpu else 20)
    root = data_root(args.data) / "images"
    if not root.is_dir():
        print(f"shared images not found at {root} (use --data or RWF_DATA)", file=sys.stderr)
        return 2
    print(json.dumps({"machine": machine(), "protocol": {"size": args.size, "steps": args.steps, "cpu": args.cpu,
                                                         "mu": args.mu, "rwf_sigma": args.rwf_sigma}}))
    t0 = time.time()
    runs = {}  # (image, schedule, param) -> result
    for name in args.images:
        sigma = 14.0 if name in TEXT else 10.0
        for schedule in args.schedules:
            for param in PARAMS:
                r = run_one(root / f"{name}.png", param, schedule, args, sigma)
                runs[(name, schedule, param)] = r
                print(f"{name:>10} {schedule:>5} {param:>5}: final {r['psnr']:6.2f}  best {r['best_psnr']:6.2f}  "
                      f"{r['seconds']:6.1f} s", flush=True)
            plain_final = runs[(name, schedule, "plain")]["psnr"]
            for param in PARAMS:
                r = runs[(name, schedule, param)]
                reach = steps_to_reach([{"step": s, "psnr": v} for s, v in r["history"]], plain_final)
                r["steps_to_plain_final"] = reach
                print(f"{'':>10} {schedule:>5} {param:>5}: reaches plain's final {plain_final:.2f} dB at step "
                      f"{reach} ({'-' if reach is None else f'{100 * reach / args.steps:.0f}%'} of the steps)")

    def agg(param, schedule, names, key):
        vals = [runs[(n, schedule, param)][key] for n in names if (n, schedule, param) in runs]
        return (statistics.mean(vals), statistics.pstdev(vals)) if vals else (float("nan"), float("nan"))

    def reach(param, schedule, names):
        """Mean steps to plain's final PSNR over the images where it was reached, and how many reached it."""
        vals = [runs[(n, schedule, param)]["steps_to_plain_final"] for n in names]
        got = [v for v in vals if v is not None]
        return (statistics.mean(got) if got else None), len(got), len(vals)

    print("\n| set | schedule | param | final test PSNR | best test PSNR | steps to plain's final (% of steps) |")
    print("|---|---|---|---|---|---|")
    sets = {"natural": [n for n in args.images if n not in TEXT], "text": [n for n in args.images if n in TEXT]}
    for set_name, names in sets.items():
        for schedule in args.schedules:
            for param in PARAMS:
                if not names:
                    continue
                m, s = agg(param, schedule, names, "psnr")
                bm, bs = agg(param, schedule, names, "best_psnr")
                steps, k, n = reach(param, schedule, names)
                frac = "never" if steps is None else f"{100 * steps / args.steps:.0f}%"
                print(f"| {set_name} | {schedule} | {param} | {m:.2f} +- {s:.2f} | {bm:.2f} +- {bs:.2f} | "
                      f"{frac} ({k}/{n} images) |")
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}/{k[1]}/{k[2]}": v for k, v in runs.items()}, f)
    head = args.schedules[0]
    summary = {}
    for param in PARAMS:
        summary[param] = {"mean_psnr": round(agg(param, head, args.images, "psnr")[0], 3),
                          "mean_best_psnr": round(agg(param, head, args.images, "best_psnr")[0], 3),
                          "steps_to_plain_final": reach(param, head, args.images)[0],
                          "reached_plain_final": f"{reach(param, head, args.images)[1]}/{len(args.images)}",
                          "schedule": head, "steps": args.steps,
                          "by_schedule": {s: {"mean_psnr": round(agg(param, s, args.images, "psnr")[0], 3),
                                              "steps_to_plain_final": reach(param, s, args.images)[0],
                                              "reached_plain_final":
                                                  f"{reach(param, s, args.images)[1]}/{len(args.images)}"}
                                          for s in args.schedules}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
