"""Shape representation on the shared meshes for plain, WN and RWF layers at equal budget (RWF.md).

Full protocol (GPU; Tancik et al. 2020's 3D occupancy task): the shape scaled into the unit cube (``fill`` 1.0,
the cube is [-0.5, 0.5]^3 here instead of [0, 1]^3, the same up to a shift); MLP 8 x 256 ReLU, logit output, BCE;
256 Gaussian features sigma 12; batch 32768 points uniform in the cube (a pool of 2^20 redrawn every 32 steps);
Adam 5e-4 decayed x0.1 per 5000 steps (the trainer's step schedule); IoU at p = 0.5 on 2^18 uniform points and
2^18 near-surface points (surface + N(0, 0.01^2)).

``--cpu``: the protocol scaled down for a 2-core CPU, and say so beside its numbers: the same occupancy task (BCE
on logits) with the training points concentrated near the surface (50% in a 0.005 shell, 20% in a 0.05 band, 30%
uniform; a pool of 2^17 redrawn every 100 steps), the mesh's longest side 0.9, MLP 4 x 128, 128 features sigma 3,
batch 4096, 1500 steps, Adam 1e-3 decayed exponentially to 1e-4, metrics on a 128^3 grid. IoU is measured exactly as
in the full protocol.

Both report Chamfer-L1/L2, F-score at 1% of the bounding-box diagonal and normal consistency of the mesh extracted
at ``--mesh-res`` (unit-cube units), and time the extraction of a 256^3 grid for the RWF field of the last mesh.

    python benchmarks/shape.py --cpu        # < 30 min on a quiet 2-core CPU
    python benchmarks/shape.py              # full protocol, for a GPU
    python benchmarks/shape.py --cpu --seeds 0 1 2 --params plain rwf --extract-res 0   # seed-to-seed spread

With several ``--seeds`` every figure is the mean over the seeds (each seed draws its own Fourier matrix, initial
weights and training points, the same for every param) and the seed-to-seed standard deviation is printed beside it.

The last output line is one JSON object: {"runs": {mesh: {param: metrics}}, "mean": {param: metrics},
"extract_256": {...}}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _common import data_root, machine

from rwf_render.fields import EncodingConfig, MLPConfig
from rwf_render.mesh import Normalization, extract_mesh
from rwf_render.shape_task import SDFConfig, ShapeTask, build_model, field_fn, load_source
from rwf_render.trainer import TrainConfig, Trainer, resolve_device

MESHES = ["armadillo", "spot", "bunny"]
PARAMS = ("plain", "wn", "rwf")
KEYS = ("iou", "iou_surface", "chamfer_l1", "chamfer_l2", "fscore", "normal_consistency", "seconds")


def protocol(args) -> dict:
    if args.cpu:
        return dict(target="occupancy", fill=0.9, mix=(0.0, 0.5, 0.2, 0.3), pool=2**17, refresh_every=100,
                    batch=4096, depth=4, width=128, m=128, sigma=3.0, lr=1e-3, lr_final=0.1, schedule="exp",
                    decay_every=0,
                    steps=args.steps or 1500, mesh_res=args.mesh_res or 128)
    return dict(target="occupancy", fill=1.0, mix=(0.0, 0.0, 0.0, 1.0), pool=2**20, refresh_every=32,
                batch=32768, depth=8, width=256, m=256, sigma=12.0, lr=5e-4, lr_final=0.1, schedule="step",
                decay_every=5000,
                steps=args.steps or 10000, mesh_res=args.mesh_res or 256)


def config(path: str, param: str, p: dict, args, seed: int) -> SDFConfig:
    return SDFConfig(path=path, target=p["target"], fill=p["fill"], pool=p["pool"], refresh_every=p["refresh_every"],
                     batch=p["batch"], mix=p["mix"], mesh_res=p["mesh_res"], eval_points=2**18,
                     encoding=EncodingConfig(kind="fourier", m=p["m"], sigma=p["sigma"]),
                     mlp=MLPConfig(depth=p["depth"], width=p["width"], param=param, rwf_mu=args.mu,
                                   rwf_sigma=args.rwf_sigma),
                     train=TrainConfig(steps=p["steps"], lr=p["lr"], schedule=p["schedule"], lr_final=p["lr_final"],
                                       decay_every=p["decay_every"],
                                       seed=seed, device=args.device, eval_every=max(p["steps"] // 10, 1),
                                       ckpt_every=10**9),
                     model_seed=seed)


def run_one(cfg: SDFConfig):
    mesh, info = load_source(cfg)
    device = resolve_device(cfg.train.device)
    task = ShapeTask(Normalization.fit(mesh, cfg.fill).apply(mesh), cfg, device)
    trainer = Trainer(build_model(cfg), task, cfg.train, progress=False)
    trainer.fit()
    t0 = time.perf_counter()
    metrics, _ = task.final_metrics(trainer.model)
    metrics.update(seconds=round(trainer.seconds, 2), metric_seconds=round(time.perf_counter() - t0, 2),
                   watertight=info["watertight"], history=[(r["step"], r["iou"], r["iou_surface"])
                                                           for r in trainer.history])
    return metrics, trainer.model, device


def over_seeds(ms: list[dict]) -> tuple[dict, dict]:
    """Each metric of ``KEYS`` over the seeds' runs: (mean, sample standard deviation); None values are left out
    (a mean of none is None), and one seed has a spread of 0."""
    mean, std = {}, {}
    for k in KEYS:
        vals = [m[k] for m in ms if m[k] is not None]
        mean[k] = statistics.mean(vals) if vals else None
        std[k] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return mean, std


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="scaled-down protocol for a 2-core CPU")
    p.add_argument("--data", default=None, help="shared data folder (default $RWF_DATA or ../shared/data)")
    p.add_argument("--meshes", nargs="*", default=MESHES)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--mesh-res", type=int, default=None, help="grid of the mesh metrics (128 cpu, 256 full)")
    p.add_argument("--extract-res", type=int, default=256, help="grid of the timed extraction (0: skip)")
    p.add_argument("--mu", type=float, default=1.0, help="RWF log-scale mean")
    p.add_argument("--rwf-sigma", type=float, default=0.1, help="RWF log-scale std")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to average over (default: 0)")
    p.add_argument("--params", nargs="+", default=list(PARAMS), choices=PARAMS)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write every run's numbers (with IoU curves) to this file")
    args = p.parse_args()
    root = data_root(args.data) / "meshes"
    if not root.is_dir():
        print(f"shared meshes not found at {root} (use --data or RWF_DATA)", file=sys.stderr)
        return 2
    proto = protocol(args)
    print(json.dumps({"machine": machine(), "protocol": {**proto, "cpu": args.cpu, "mu": args.mu,
                                                         "rwf_sigma": args.rwf_sigma}}))
    t_start = time.time()
    params = [pa for pa in PARAMS if pa in args.params]
    if "plain" not in params:
        print("--params must include plain (every figure is compared with it)", file=sys.stderr)
        return 2
    runs, per_seed, spread, model, device = {}, {}, {}, None, None
    for name in args.meshes:
        runs[name], per_seed[name], spread[name] = {}, {}, {}
        for param in params:
            per_seed[name][param] = []
            for seed in args.seeds:
                m, model, device = run_one(config(str(root / f"{name}.obj"), param, proto, args, seed))
                per_seed[name][param].append(m)
                print(f"{name:>10} {param:>5} seed {seed}: iou {m['iou']:.4f}  near {m['iou_surface']:.4f}  "
                      f"chamfer_l1 {m['chamfer_l1']:.5f}  fscore {m['fscore']:.4f}  "
                      f"nc {m['normal_consistency']:.4f}  {m['seconds']:.0f} s", flush=True)
            runs[name][param], spread[name][param] = over_seeds(per_seed[name][param])
    extract = {}
    if args.extract_res and model is not None:
        t0 = time.perf_counter()
        mesh = extract_mesh(field_fn(model), res=args.extract_res, inside="above",
                            device=device)
        extract = {"res": args.extract_res, "seconds": round(time.perf_counter() - t0, 2),
                   "faces": len(mesh.faces), "field": f"rwf on {args.meshes[-1]}"}
        print(f"extraction of a {args.extract_res}^3 grid: {extract['seconds']:.1f} s ({extract['faces']} faces)")

    def mean(param, key):
        vals = [runs[n][param][key] for n in runs if runs[n][param][key] is not None]
        return round(statistics.mean(vals), 6) if vals else None

    if len(args.seeds) > 1:
        print(f"\nmean over seeds {args.seeds}; seed-to-seed standard deviation:")
        print("| mesh | param | " + " | ".join(KEYS[:-1]) + " |\n|---|---|" + "---|" * (len(KEYS) - 1))
        for name in runs:
            for param in params:
                print(f"| {name} | {param} | " + " | ".join(f"{spread[name][param][k]:.2g}" for k in KEYS[:-1])
                      + " |")
    print(f"\n| mesh | param | IoU | IoU near-surface | Chamfer-L1 | Chamfer-L2 | F-score@1% | normal consistency | "
          f"seconds |\n|---|---|---|---|---|---|---|---|---|")
    for name in list(runs) + ["mean"]:
        for param in params:
            m = runs[name][param] if name != "mean" else {k: mean(param, k) for k in KEYS}
            print(f"| {name} | {param} | {m['iou']:.4f} | {m['iou_surface']:.4f} | {m['chamfer_l1']:.5f} | "
                  f"{m['chamfer_l2']:.2e} | {m['fscore']:.4f} | {m['normal_consistency']:.4f} | {m['seconds']:.0f} |")
    def at_least_plain(param, key, names):
        """param matches or beats plain on ``key`` for every mesh in names (lower is better for Chamfer)."""
        def ok(a, b):
            if a is None or b is None:
                return a is None and b is None
            return a <= b if key.startswith("chamfer") else a >= b
        return all(ok(runs[n][param][key], runs[n]["plain"][key]) for n in names)

    better = {param: {"every_mesh": {k: at_least_plain(param, k, list(runs)) for k in KEYS[:-1]},
                      "mean": {k: (mean(param, k) <= mean("plain", k) if k.startswith("chamfer")
                                   else mean(param, k) >= mean("plain", k)) for k in KEYS[:-1]}}
              for param in params if param != "plain"}
    print(f"\ntotal {time.time() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "per_seed": per_seed, "extract": extract}, f)
    summary = {"runs": {n: {pa: {k: runs[n][pa][k] for k in KEYS} for pa in params} for n in runs},
               "mean": {pa: {k: mean(pa, k) for k in KEYS} for pa in params},
               "at_least_plain": better, "extract": extract, "cpu": args.cpu, "seeds": args.seeds}
    if len(args.seeds) > 1:
        summary["std"] = spread
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
