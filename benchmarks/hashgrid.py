"""The hash grid encoding (instant-ngp's multiresolution hash tables) against the default Gaussian Fourier features,
in each pipeline, at the pipeline's defaults and an equal number of steps, one run after the other in one script.

    nerf   the built-in scene of ``rwf fit nerf`` (64x64 views, 2000 steps): the preset as it is, and with
           ``--encoding hashgrid`` (16 levels, 2^17 entries, finest 1024, trunk 2 x 64, lr 1e-2); then the preset
           again with the steps that fit in the hash grid's training time (equal time)
    sdf    ``rwf fit sdf`` on the shared meshes (spot, armadillo; $RWF_DATA/meshes), 1000 steps: the default
           Fourier field (128 features, sigma 3, 4 x 128) and ``--encoding hashgrid`` (finest 512) with a 3 x 64 MLP
    image  ``rwf fit image`` on the built-in astronaut at 256 px, Tancik's split (train on even pixels, PSNR on the
           odd ones), 2000 steps: the default 4 x 256 Fourier net and ``--encoding hashgrid`` with a 3 x 64 MLP

    python benchmarks/hashgrid.py                 # every stage (about 30 minutes on an idle 2-core CPU)
    python benchmarks/hashgrid.py nerf sdf        # some stages
    python benchmarks/hashgrid.py --quick         # a smoke test: few steps, small grids (about 2 minutes)

Each run is a ``python -m rwf_render fit ...`` subprocess into a temporary folder; its figures come from the run's
metrics.json, its time from the fit's own clock (``seconds``: training only). Times mean something only on an
otherwise idle machine: run nothing else beside it. The last output line is one JSON object
{stage: {encoding: figures}, "machine": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine

ROOT = Path(__file__).resolve().parents[1]
HASH_MLP = ["--width", "64", "--depth", "3"]


def fit(kind: str, args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "rwf_render", "fit", kind, *args, "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads((out / "metrics.json").read_text())


def pick(metrics: dict, keys) -> dict:
    return {k: round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k] for k in keys if k in metrics}


def stage_nerf(tmp: Path, quick: bool) -> dict:
    """Both encodings at the preset's steps, then the Fourier field again with as many more steps as the hash
    grid's training time allows (its learning-rate decay stretched over them): the equal-time comparison."""
    steps = 60 if quick else 2000
    extra = ["--steps", str(steps)] + (["--eval-images", "2"] if quick else [])
    keys = ("psnr", "ssim", "psnr_train", "steps", "seconds", "samples_per_s")
    out = {name: pick(fit("nerf", extra + enc, tmp / f"nerf-{name}"), keys)
           for name, enc in (("fourier", []), ("hashgrid", ["--encoding", "hashgrid"]))}
    ratio = out["hashgrid"]["seconds"] / out["fourier"]["seconds"]
    more = ["--steps", str(max(steps, round(steps * ratio)))] + extra[2:]
    out["fourier_equal_time"] = pick(fit("nerf", more, tmp / "nerf-fourier-equal-time"), keys)
    return out


def stage_sdf(tmp: Path, quick: bool, data: Path | None) -> dict:
    if quick:
        shapes = {"knot": []}
        extra = ["--steps", "50", "--mesh-res", "48", "--preview-res", "32", "--metric-points", "20000"]
    else:
        if data is None or not (data / "meshes").is_dir():
            raise SystemExit("benchmark: the sdf stage needs the shared meshes (set RWF_DATA)")
        shapes = {name: [str(data / "meshes" / f"{name}.obj")] for name in ("spot", "armadillo")}
        extra = []
    keys = ("iou", "iou_surface", "chamfer_l1", "fscore", "normal_consistency", "steps", "seconds")
    out = {}
    for shape, path in shapes.items():
        out[shape] = {name: pick(fit("sdf", path + extra + enc, tmp / f"sdf-{shape}-{name}"), keys)
                      for name, enc in (("fourier", []),
                                        ("hashgrid", ["--encoding", "hashgrid", *HASH_MLP]))}
    return out


def stage_image(tmp: Path, quick: bool) -> dict:
    extra = ["--size", "64", "--steps", "60"] if quick else ["--size", "256", "--steps", "2000"]
    keys = ("psnr", "psnr_train", "ssim", "best_psnr", "best_step", "steps", "seconds")
    return {name: pick(fit("image", extra + enc, tmp / f"image-{name}"), keys)
            for name, enc in (("fourier", []), ("hashgrid", ["--encoding", "hashgrid", *HASH_MLP]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="*", help="nerf, sdf, image (default: all three)")
    p.add_argument("--quick", action="store_true", help="a smoke test: few steps, small grids")
    args = p.parse_args()
    stages = args.stages or ["nerf", "sdf", "image"]
    unknown = set(stages) - {"nerf", "sdf", "image"}
    if unknown:
        p.error(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from nerf, sdf, image")
    data = Path(os.environ["RWF_DATA"]) if os.environ.get("RWF_DATA") else ROOT.parent / "shared" / "data"
    info = {**machine(), "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({"machine": info, "stages": stages, "quick": args.quick}), flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="rwf-hashgrid-") as tmp:
        for stage in stages:
            if stage == "nerf":
                results[stage] = stage_nerf(Path(tmp), args.quick)
            elif stage == "sdf":
                results[stage] = stage_sdf(Path(tmp), args.quick, data if data.is_dir() else None)
            else:
                results[stage] = stage_image(Path(tmp), args.quick)
            print(json.dumps({stage: results[stage]}), flush=True)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({**results, "machine": info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
