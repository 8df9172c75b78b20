"""Cost of the factorized layer: one training step (forward, backward, Adam) of an MLP with RWF layers against
the same MLP with plain (and WN) layers, batch 65536, width 256, depth 4, 512 Fourier-feature inputs.

Steps of the variants are interleaved round by round in one process, so load and clock changes hit all of them;
the figure is the ratio of median step times.

    python benchmarks/layer_overhead.py [--batch 65536] [--rounds 15] [--device auto]

Last output line: {"rwf_over_plain": ..., "wn_over_plain": ..., "ms": {param: median ms}}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from _common import machine

from rwf_render.fields import MLP, MLPConfig
from rwf_render.trainer import resolve_device


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=65536)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    print(json.dumps({"machine": machine(), "batch": args.batch, "width": args.width, "depth": args.depth}))
    x = torch.rand(args.batch, 512, device=device)
    y = torch.rand(args.batch, 3, device=device)
    models, opts, times = {}, {}, {}
    for param in ("plain", "wn", "rwf"):
        models[param] = MLP(512, 3, MLPConfig(depth=args.depth, width=args.width, param=param,
                                              out_activation="sigmoid"), seed=0).to(device)
        opts[param] = torch.optim.Adam(models[param].parameters(), lr=1e-3)
        times[param] = []

    def step(param):
        loss = torch.mean((models[param](x) - y) ** 2)
        opts[param].zero_grad(set_to_none=True)
        loss.backward()
        opts[param].step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for param in models:  # warm-up
        step(param)
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for param in order:
            t0 = time.perf_counter()
            step(param)
            times[param].append(time.perf_counter() - t0)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    for k, v in ms.items():
        print(f"{k:>5}: median {v:8.2f} ms per step (min {1000 * min(times[k]):.2f})")
    print(json.dumps({"rwf_over_plain": round(ms["rwf"] / ms["plain"], 4),
                      "wn_over_plain": round(ms["wn"] / ms["plain"], 4),
                      "ms": {k: round(v, 2) for k, v in ms.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
