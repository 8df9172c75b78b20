"""Peak memory against output size: the renders and data tools that promise memory bounded by their output.

    python benchmarks/memory.py [--quick]

Each measurement runs one ``rwf`` command in a fresh Python process and reads that process's peak resident set size
(``getrusage``). A case runs at two or three sizes; the growth law is the slope, bytes per output pixel between the
smallest and the largest size (the process's fixed cost, torch and the model, cancels out). Cases:

- ``nerf_frame``: ``rwf render RUN --camera-path`` of one frame of S x S of a tiny NeRF run (rgb and depth PNGs,
  the depth EXR), from a training camera's position looking away from the scene: no ray takes a sample, so what
  grows is the per-pixel cost alone (the marcher's per-chunk buffers are a fixed cost; a frame that sees the
  scene takes minutes on a CPU at these sizes);
- ``sdf_views``: ``rwf render RUN --scale K`` of a 30-step SDF run with the default field (256 wide): its 4 preview
  views of 64 px x K, sphere-traced, normals by autograd;
- ``synth_frame``: ``rwf data synth demo OUT --res R`` with one view (ray casting with open3d).

The last output line is one JSON object: case -> {"bytes_per_pixel": ..., "peak_mb": {size: MB}}.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine  # noqa: E402  (after sys.path)

CHILD = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
from rwf_render.cli import main
rc = main(sys.argv[1:])
print("RWF_PEAK " + json.dumps({"rc": rc, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_mb(argv: list[str], cwd: Path) -> float:
    """Peak RSS (MB) of one ``rwf`` command in a fresh process started in ``cwd`` (not the repository, whose
    folder ``python -c`` would put first on sys.path: $PYTHONPATH may name another version to measure)."""
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True, text=True, cwd=cwd)
    line = next((s for s in done.stdout.splitlines() if s.startswith("RWF_PEAK ")), None)
    if line is None or json.loads(line[9:])["rc"] != 0:
        raise SystemExit(f"failed: rwf {' '.join(map(str, argv))}\n{done.stderr[-2000:]}")
    return json.loads(line[9:])["peak_kb"] / 1024


def tiny_runs(root: Path) -> tuple[Path, Path]:
    """A 30-step NeRF run of a 32 px synthetic scene and a 30-step SDF run of the built-in shape (default field)."""
    from data_tools.synth import demo_mesh, render_dataset

    render_dataset(demo_mesh(), root / "scene", res=32, n_views=12, n_val=1, n_test=1, log=lambda *a, **k: None)
    for argv in (["fit", "nerf", root / "scene", "--out", root / "nerf", "--steps", "30", "--width", "32",
                  "--features", "16", "--grid-resolution", "32", "--eval-images", "1", "--quiet", "--device", "cpu"],
                 ["fit", "sdf", "--out", root / "sdf", "--steps", "30", "--mesh-res", "32", "--preview-res", "64",
                  "--quiet", "--device", "cpu"]):  # the default field: its normals' graph is what grew
        peak_mb(argv, root)
    return root / "nerf", root / "sdf"


def camera_path(run: Path, size: int, out: Path) -> Path:
    """One frame of ``size`` x ``size`` from training camera 0's position, turned half a turn about its up axis
    (it looks away from the scene; a 40-degree view)."""
    meta = json.loads((Path(json.loads((run / "config.json").read_text())["data"]) / "transforms_train.json")
                      .read_text())
    m = [list(map(float, row)) for row in meta["frames"][0]["transform_matrix"]]
    for row in m[:3]:  # x and z axes reversed: the camera's forward (-z) now points away from the scene
        row[0], row[2] = -row[0], -row[2]
    c2w = [v for row in m for v in row]
    out.write_text(json.dumps({"render_width": size, "render_height": size, "fps": 24, "seconds": 1,
                               "camera_path": [{"camera_to_world": c2w, "fov": 40, "aspect": 1}]}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute on 2 cores; the full run takes "
                    "about 6)")
    args = ap.parse_args(argv)
    # the smallest size already fills a block of the synth's and the SDF tracer's rays (2^18 a view), so the slope
    # is the per-pixel cost and not the growth of one block's temporaries (--quick's SDF sizes do not: they only
    # exercise the path; at 8 and 12 the views take about 3 minutes here)
    sizes = {"nerf_frame": (1024, 4096) if args.quick else (1024, 4096, 8000),
             "sdf_views": (2, 4) if args.quick else (8, 12),
             "synth_frame": (1024, 2048) if args.quick else (1024, 4096)}
    info = machine()
    results = {}
    with tempfile.TemporaryDirectory(prefix="rwf-memory-") as tmp:
        root = Path(tmp)
        measured = subprocess.run([sys.executable, "-c", "import rwf_render; print(rwf_render.__file__)"],
                                  capture_output=True, text=True, cwd=root).stdout.strip()
        print(f"# machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}; {info['date']}; the "
              f"commands run {Path(measured).parent} ($PYTHONPATH first)")
        nerf, sdf = tiny_runs(root)
        for case, steps in sizes.items():
            peaks, pixels = {}, {}
            for size in steps:
                out = root / f"{case}_{size}"
                if case == "nerf_frame":
                    argv = ["render", nerf, "--camera-path", camera_path(nerf, size, root / f"path_{size}.json"),
                            "--out", out, "--quiet"]
                    pixels[size] = size * size
                elif case == "sdf_views":
                    argv = ["render", sdf, "--scale", size, "--out", out.with_suffix(".png")]
                    pixels[size] = 4 * (64 * size) ** 2
                else:
                    argv = ["data", "synth", "demo", out, "--res", size, "--views", "1", "--val", "0", "--test",
                            "0", "--supersample", "1"]
                    pixels[size] = size * size
                peaks[size] = peak_mb(argv, root)
                print(f"{case:12s} size {size:5d}: {pixels[size] / 1e6:8.2f} Mpx, peak {peaks[size]:8.0f} MB",
                      flush=True)
            lo, hi = steps[0], steps[-1]
            slope = (peaks[hi] - peaks[lo]) * 2**20 / (pixels[hi] - pixels[lo])
            results[case] = {"bytes_per_pixel": round(slope, 1), "peak_mb": {str(k): round(v) for k, v in peaks.items()}}
            print(f"{case:12s} {slope:.1f} bytes per pixel between sizes {lo} and {hi}", flush=True)
    print(json.dumps(results))
    return 0 if all(math.isfinite(r["bytes_per_pixel"]) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
