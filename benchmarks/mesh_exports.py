"""The NeRF geometry exports against the scene's source mesh: marching cubes on density (at two grid sizes), the
screened Poisson surface (with and without its density trim), the TSDF fusion of rendered depths, and the point
cloud, each timed, on a procedural still life whose mesh is known.

    python benchmarks/mesh_exports.py                       # the tests' still life: 24 views of 32x32, 1000 steps
    python benchmarks/mesh_exports.py --res 64 --views 60 --steps 2000   # nearer the built-in scene of rwf fit nerf

The scene is rendered by ``data_tools.synth`` (its ``mesh.ply`` is the surface in the scene's coordinates) and
fitted with the settings of the tests' session run (``tests/conftest.py``'s STILL_LIFE_STEPS: random training
backgrounds, a 64-wide field). Meshes are scored by ``rwf_render.mesh.surface_metrics`` (Chamfer-L1, F-score at 1 %
of the diagonal, 50,000 points a surface); the points by their distance to the source surface (median and 90th
percentile, open3d's RaycastingScene). Seconds are wall time of each ``rwf export mesh`` call in this process.

Last output line: {"fit": {...}, "exports": {name: {"seconds", "chamfer_l1", "fscore"} or {"seconds", "median",
"p90", "points"}}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import machine

FIT = ["--eval-images", "1", "--quiet", "--grid-resolution", "32", "--steps-per-diagonal", "192", "--width", "64",
       "--features", "32", "--sigma", "4", "--target-samples", "4096", "--background", "random", "--device", "cpu"]
EXPORTS = {"marching cubes, --res 128": ["--res", "128"], "marching cubes, --res 256": ["--res", "256"],
           "poisson": ["--poisson"], "poisson, --poisson-trim 0": ["--poisson", "--poisson-trim", "0"],
           "tsdf": ["--tsdf"], "pointcloud": ["--pointcloud"]}


def _cli(argv: list[str]) -> float:
    from rwf_render import cli  # noqa: PLC0415

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cli.main(argv) != 0:
            raise SystemExit(f"rwf {' '.join(argv)} failed")
    return time.perf_counter() - start


def _point_distances(points: np.ndarray, mesh) -> np.ndarray:
    import open3d as o3d  # noqa: PLC0415

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", type=int, default=32, help="view size in pixels (default 32)")
    p.add_argument("--views", type=int, default=24, help="training views (default 24)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--work", default=None, help="folder for the scene, run and exports (default: a temporary one)")
    args = p.parse_args()

    import trimesh  # noqa: PLC0415

    from data_tools.synth import demo_mesh, render_dataset  # noqa: PLC0415
    from rwf_render.mesh import surface_metrics  # noqa: PLC0415

    print(json.dumps(machine()), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        scene, run = work / "scene", work / "run"
        render_dataset(demo_mesh(), scene, res=args.res, n_views=args.views, n_val=1, n_test=2,
                       log=lambda *a, **k: None)
        fit_s = _cli(["fit", "nerf", str(scene), "--out", str(run), "--steps", str(args.steps),
                      "--eval-every", str(args.steps), *FIT])
        fit = {"seconds": round(fit_s, 1), **{k: v for k, v in json.loads((run / "metrics.json").read_text()).items()
                                              if k in ("psnr", "ssim", "steps")}}
        print(f"fit: {json.dumps(fit)}", file=sys.stderr)
        source = trimesh.load(scene / "mesh.ply", force="mesh")
        results = {}
        for name, extra in EXPORTS.items():
            out = work / f"{name.replace(' ', '').replace(',', '_').replace('-', '')}.ply"
            seconds = _cli(["export", "mesh", str(run), "--out", str(out), "--quiet", "--device", "cpu", *extra])
            if name == "pointcloud":
                import open3d as o3d  # noqa: PLC0415

                pts = np.asarray(o3d.io.read_point_cloud(str(out)).points)
                d = _point_distances(pts, source)
                row = {"points": len(pts), "median": float(np.median(d)), "p90": float(np.percentile(d, 90))}
            else:
                m = surface_metrics(trimesh.load(out, force="mesh"), source, n_points=50_000)
                row = {"chamfer_l1": m["chamfer_l1"], "fscore": m["fscore"]}
            results[name] = {"seconds": round(seconds, 1), **row}
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    print("| export | Chamfer-L1 | F-score@1% | points: median / 90th pct distance | seconds |", file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for name, r in results.items():
        if "median" in r:
            print(f"| {name} | | | {r['median']:.4f} / {r['p90']:.4f} ({r['points']} points) | {r['seconds']} |",
                  file=sys.stderr)
        else:
            print(f"| {name} | {r['chamfer_l1']:.4f} | {r['fscore']:.3f} | | {r['seconds']} |", file=sys.stderr)
    print(json.dumps({"fit": fit, "exports": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
