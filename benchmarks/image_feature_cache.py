"""The image fit's training step with its fixed Fourier features encoded once (``ImageTask._fixed_features``)
against recomputed every step: the default image fit (256 px astronaut, tancik split, full batch of 16384 pixels,
256 features, 4 x 256 RWF), steps of the two interleaved in blocks in one process; median ms per step.

    python benchmarks/image_feature_cache.py [--steps 10] [--rounds 5] [--device auto]

Last output line: {"cached_ms": ..., "recomputed_ms": ..., "ratio": ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import machine

from rwf_render import image
from rwf_render.layers import param_groups
from rwf_render.trainer import resolve_device


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = image.ImageConfig()
    target, _ = image.load_target(cfg)
    print(json.dumps({"machine": machine(), "pixels": int(target.shape[0] * target.shape[1])}))
    runs = {}
    for name, cache in (("cached", image.FEATURE_CACHE_BYTES), ("recomputed", 0)):
        model = image.build_model(cfg, target.shape[2]).to(device)
        opt = torch.optim.Adam(param_groups(model, lr=1e-3, scale_lr=1e-3))
        runs[name] = (image.ImageTask(target, cfg, device), model, opt, cache, [])
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            task, model, opt, cache, times = runs[name]
            image.FEATURE_CACHE_BYTES = cache
            for _ in range(args.steps):
                t0 = time.perf_counter()
                terms, _ = task.loss(model, None)
                opt.zero_grad(set_to_none=True)
                terms["mse"].backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
    ms = {name: 1000 * statistics.median(run[4][1:]) for name, run in runs.items()}
    print(json.dumps({"cached_ms": round(ms["cached"], 1), "recomputed_ms": round(ms["recomputed"], 1),
                      "ratio": round(ms["recomputed"] / ms["cached"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
