"""Points per field call when evaluating without training on the CPU: the default SDF field (Fourier features,
4 x 256 RWF MLP) and the default NeRF field's density on 2^20 points, called in chunks of 2^18 (the GPU size) and
of ``evalchunk.CPU_EVAL_CHUNK``, interleaved round by round in one process; CPU seconds (process time: the page
faults of fresh big buffers count as system time) and the results compared.

    python benchmarks/eval_chunk.py [--points 1048576] [--rounds 5]

Last output line: {"sdf": {"big_s": ..., "small_s": ..., "ratio": ...}, "nerf": {...}, "identical": true}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import machine

from rwf_render.evalchunk import CPU_EVAL_CHUNK
from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField
from rwf_render.nerf_field import NeRFField, NeRFFieldConfig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=1 << 20)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    print(json.dumps({"machine": machine(), "points": args.points, "threads": torch.get_num_threads(),
                      "chunks": [1 << 18, CPU_EVAL_CHUNK]}))
    x = torch.rand(args.points, 3) - 0.5
    sdf = NeuralField(3, 1, EncodingConfig(kind="fourier", m=128, sigma=3.0),
                      MLPConfig(depth=4, width=256, param="rwf"), seed=0).eval()
    nerf = NeRFField([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], NeRFFieldConfig()).eval()
    fields = {"sdf": lambda c: sdf(c)[:, 0], "nerf": nerf.density}
    out, identical = {}, True
    with torch.no_grad():
        for name, fn in fields.items():
            times = {1 << 18: [], CPU_EVAL_CHUNK: []}
            results = {}
            for r in range(args.rounds):
                for chunk in (list(times) if r % 2 == 0 else list(times)[::-1]):
                    t0 = time.process_time()
                    results[chunk] = torch.cat([fn(c) for c in x.split(chunk)])
                    times[chunk].append(time.process_time() - t0)
            big, small = statistics.median(times[1 << 18]), statistics.median(times[CPU_EVAL_CHUNK])
            identical &= bool(torch.allclose(results[1 << 18], results[CPU_EVAL_CHUNK], rtol=1e-5, atol=1e-6))
            out[name] = {"big_s": round(big, 3), "small_s": round(small, 3), "ratio": round(big / small, 2)}
            print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps({**out, "identical": identical}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
