"""Ray marcher throughput: every available backend on the same rays through a voxelized real mesh.

    python benchmarks/raymarch.py [--quick] [--mesh PATH] [--rays 65536] [--resolution 128]

The grid is a solid voxelization of a mesh (default: ``$RWF_DATA/meshes/armadillo.obj``, else
``../shared/data/meshes`` beside the repository) in its own padded bounding box, about 10% occupied at 128^3.
Rays start on a sphere around the box and aim at uniform points inside it; the step is sqrt(3) * box / 1024
(instant-ngp's). All backends must return the same samples (checked: a backend that differs is marked in the
table, and the run exits non-zero after every speed is printed). Then compositing (torch) forward and backward on the
packed samples. The last output line is one JSON object: backend -> samples/s and rays/s.

``--quick`` takes one timed run per backend (under a minute on 2 cores); the default takes the median of several.
On a GPU, ``--cuda-blocks 64 128 256 512`` also times the CUDA kernel at those threads per block (the default is
256; the samples must not change), and ``--profile`` prints the GPU time of each kernel of one march (torch's
profiler): what the next change to the CUDA marcher should aim at.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rwf_render.raymarch import OccupancyGrid, available_backends, composite  # noqa: E402  (after sys.path)


def default_mesh() -> Path:
    data = Path(os.environ.get("RWF_DATA", ROOT.parent / "shared" / "data"))
    return data / "meshes" / "armadillo.obj"


def make_grid(mesh_path: Path, resolution: int) -> OccupancyGrid:
    import trimesh  # noqa: PLC0415

    mesh = trimesh.load(mesh_path, force="mesh")
    v = torch.tensor(mesh.vertices, dtype=torch.float32)
    f = torch.tensor(mesh.faces, dtype=torch.long)
    lo, hi = v.min(0).values, v.max(0).values
    pad = 0.02 * (hi - lo)
    grid = OccupancyGrid(torch.cat([lo - pad, hi + pad]), resolution=resolution)
    grid.mark_mesh(v, f, solid=mesh.is_watertight)
    return grid


def make_rays(grid: OccupancyGrid, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lo, hi = grid.aabb[:3], grid.aabb[3:]
    center, radius = (lo + hi) / 2, float((hi - lo).norm()) * 1.5
    origins = torch.randn(n, 3, generator=gen)
    origins = center + radius * origins / origins.norm(dim=1, keepdim=True)
    targets = lo + torch.rand(n, 3, generator=gen) * (hi - lo)
    dirs = targets - origins
    return origins, dirs / dirs.norm(dim=1, keepdim=True)


def timed(fn, reps: int, sync, warm_up: bool = True) -> tuple[float, object]:
    """Median seconds of ``reps`` calls (after one untimed call unless ``warm_up`` is False), and a result."""
    out = None
    if warm_up:
        out = fn()
        sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed run per backend")
    parser.add_argument("--mesh", type=Path, default=None, help="a mesh file (default: armadillo from RWF_DATA)")
    parser.add_argument("--rays", type=int, default=1 << 16)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=1024)
    parser.add_argument("--backends", default=None, help="comma-separated subset of torch,cpu,cuda")
    parser.add_argument("--cuda-blocks", type=int, nargs="*", default=[],
                        help="on a GPU: also time the CUDA kernel at these threads per block")
    parser.add_argument("--profile", action="store_true", help="on a GPU: the GPU time of each kernel of one march")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    mesh = args.mesh or default_mesh()
    if not mesh.is_file():
        sys.exit(f"benchmarks/raymarch.py: mesh not found: {mesh} (pass --mesh or set RWF_DATA)")

    start = time.perf_counter()
    grid = make_grid(mesh, args.resolution)
    rays_o, rays_d = make_rays(grid, args.rays)
    step = math.sqrt(3) * float((grid.aabb[3:] - grid.aabb[:3]).max()) / 1024
    print(f"grid: {mesh.name} at {args.resolution}^3, {100 * grid.occupied_fraction:.1f}% occupied "
          f"({time.perf_counter() - start:.1f} s to voxelize); {args.rays} rays, step {step:.5f}, "
          f"max {args.max_samples} samples/ray; torch {torch.__version__}, {torch.get_num_threads()} threads")

    available = available_backends()
    wanted = args.backends.split(",") if args.backends else ["torch", "cpu", "cuda"]
    gpu = "cuda" in available
    reps = {"torch": 1 if args.quick else 3, "cpu": 3 if args.quick else 10, "cuda": 10 if args.quick else 50}
    kw = dict(step_size=step, max_samples=args.max_samples)
    results, reference, rows, speeds, different = {}, None, [], {}, []
    # the twin runs on the GPU when there is one (the CUDA kernel's comparison), and on the CPU (the C++ kernel's)
    runs = [("torch", "cuda"), ("torch", "cpu")] if gpu else [("torch", "cpu")]
    runs += [("cpu", "cpu"), ("cuda", "cuda")]
    for name, device in runs:
        if name not in wanted:
            continue
        if name not in available:
            rows.append((name, "-", "-", "-", "unavailable"))
            continue
        g = grid.to(device)
        o, d = rays_o.to(device), rays_d.to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        warm_up = not (args.quick and name == "torch" and device == "cpu")  # the slow one: a single timed run
        seconds, samples = timed(lambda g=g, o=o, d=d, name=name: g.sampling(o, d, backend=name, **kw), reps[name],
                                 sync, warm_up)
        n = samples.ray_indices.numel()
        note = ""
        if reference is None:
            reference, first = samples, f"{name} on the {device}"
        else:  # a difference fails the run at the end, after every backend's speed is measured and printed
            why = differs(samples, reference)
            if why:
                different.append(f"{name} on the {device} returned different samples than {first}: {why}")
                note = "; DIFFERENT samples"
        speeds[name, device] = n / seconds
        if name not in results:  # the JSON line: the twin on the GPU when there is one
            results[name] = {"samples_per_s": n / seconds, "rays_per_s": args.rays / seconds}
        rows.append((name, device, f"{n / seconds / 1e6:.2f}", f"{args.rays / seconds / 1e6:.3f}",
                     f"{seconds * 1e3:.1f} ms, {n / args.rays:.1f} samples/ray{note}"))

    print(f"\n{'backend':8} {'device':6} {'Msamples/s':>11} {'Mrays/s':>8}  notes")
    for row in rows:
        print(f"{row[0]:8} {row[1]:6} {row[2]:>11} {row[3]:>8}  {row[4]}")
    for fast in ("cpu", "cuda"):  # each kernel against the twin on the same device
        if (fast, fast) in speeds and ("torch", fast) in speeds:
            print(f"{fast} kernel / torch twin on the {fast}: {speeds[fast, fast] / speeds['torch', fast]:.1f}x")
    if ("cuda", "cuda") in speeds and (args.cuda_blocks or args.profile):
        different += cuda_tuning(grid.to("cuda"), rays_o.cuda(), rays_d.cuda(), kw, reps["cuda"], reference,
                                 speeds.get(("torch", "cuda")), args)

    if reference is not None:  # compositing throughput on the packed samples, torch autograd
        for device in (["cpu"] + (["cuda"] if gpu else [])):
            ri = reference.ray_indices.to(device)
            ts, te = reference.t_starts.to(device), reference.t_ends.to(device)
            gen = torch.Generator(device=device).manual_seed(0)
            sigmas = (torch.rand(ri.shape, generator=gen, device=device) * 50).requires_grad_()
            rgbs = torch.rand(ri.shape[0], 3, generator=gen, device=device).requires_grad_()
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

            def forward(rgbs=rgbs, sigmas=sigmas, ts=ts, te=te, ri=ri):
                return composite(rgbs, sigmas, ts, te, ri, args.rays, background=1.0)[0]

            def both(forward=forward):
                forward().sum().backward()

            fwd, _ = timed(forward, reps["cpu"], sync)
            fb, _ = timed(both, reps["cpu"], sync)
            n = ri.numel()
            print(f"composite ({device}): forward {n / fwd / 1e6:.1f} Msamples/s, forward+backward "
                  f"{n / fb / 1e6:.1f} Msamples/s ({n} samples)")
    print(json.dumps(results))
    if different:
        sys.exit("benchmarks/raymarch.py: " + "; ".join(different))


def cuda_tuning(g, o, d, kw, reps: int, reference, twin_speed, args) -> list[str]:
    """The CUDA kernel at other block sizes, and one march under torch's profiler; returns sample differences."""
    different = []
    for block in args.cuda_blocks:
        old = os.environ.get("RWF_CUDA_BLOCK")
        os.environ["RWF_CUDA_BLOCK"] = str(block)
        try:
            seconds, samples = timed(lambda: g.sampling(o, d, backend="cuda", **kw), reps, torch.cuda.synchronize)
        finally:
            if old is None:
                os.environ.pop("RWF_CUDA_BLOCK")
            else:
                os.environ["RWF_CUDA_BLOCK"] = old
        n = samples.ray_indices.numel()
        why = differs(samples, reference)
        if why:
            different.append(f"cuda at {block} threads per block returned different samples: {why}")
        ratio = f", {n / seconds / twin_speed:.1f}x the twin" if twin_speed else ""
        print(f"cuda block {block:4d}: {seconds * 1e3:.3f} ms, {n / seconds / 1e6:.1f} Msamples/s{ratio}"
              f"{'; DIFFERENT samples' if why else ''}")
    if args.profile:
        try:
            from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

            g.sampling(o, d, backend="cuda", **kw)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    g.sampling(o, d, backend="cuda", **kw)
                torch.cuda.synchronize()
            events = prof.key_averages()
            for key in ("self_device_time_total", "self_cuda_time_total"):
                try:
                    print(f"profile of 10 marches on the GPU (sorted by {key}):")
                    print(events.table(sort_by=key, row_limit=12))
                    break
                except (AttributeError, KeyError, ValueError, RuntimeError) as e:
                    print(f"  ({key}: {e})")
        except Exception as e:  # noqa: BLE001  (a profiler that does not run here must not fail the benchmark)
            print(f"profile: unavailable ({type(e).__name__}: {e})")
    return different


def differs(samples, reference) -> str:
    """Why two sample sets differ (counts, ray indices, t beyond 1e-6), or "" when they are the same."""
    n, m = samples.ray_indices.numel(), reference.ray_indices.numel()
    if n != m:
        counts = torch.bincount(samples.ray_indices.cpu(), minlength=1)
        ref_counts = torch.bincount(reference.ray_indices.cpu(), minlength=1)
        size = max(counts.numel(), ref_counts.numel())
        rays = int((torch.nn.functional.pad(counts, (0, size - counts.numel()))
                    != torch.nn.functional.pad(ref_counts, (0, size - ref_counts.numel()))).sum())
        return f"{n} samples against {m}, on {rays} rays"
    if not bool((samples.ray_indices.cpu() == reference.ray_indices.cpu()).all()):
        return "the same count, other ray indices"
    dt = (samples.t_starts.cpu() - reference.t_starts.cpu()).abs()
    if n and float(dt.max()) > 1e-6:
        return f"t_starts off by up to {float(dt.max()):.3g} on {int((dt > 1e-6).sum())} samples"
    return ""


if __name__ == "__main__":
    main()
