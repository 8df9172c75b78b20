"""Camera pose refinement (``--optimize-cameras``) on lego with perturbed training poses.

    python benchmarks/camera_opt.py                      # 1 degree / 0.02 units of noise, hash grid, 1500 steps
    python benchmarks/camera_opt.py --rot-deg 2 --trans 0.05 --steps 3000 --encoding fourier
    python benchmarks/camera_opt.py --only exact+opt noisy+opt --coarse-to-fine 0.1 0.5   # BARF's level schedule

The training poses of ``../shared/data/nerf/lego_400`` get a seeded rigid error each, in the camera's own frame:
a rotation whose axis-angle vector is normal with an RMS angle of ``--rot-deg``, and a translation with an RMS length
of ``--trans`` (the cameras sit 4 units from the centre). The validation and test poses stay exact. Then the same
fit (lego at 100x100: the ``lego`` preset's marching settings, ``--encoding``, ``--steps``, one seed) runs on

- ``exact``: the dataset's poses, without refinement (the ceiling);
- ``noisy``: the perturbed poses, without refinement;
- ``noisy+opt``: the perturbed poses with ``--optimize-cameras``;
- ``exact+opt`` (``--with-exact-opt``): the exact poses with refinement (does it cost anything when poses are right).

It reports test PSNR / SSIM (8 views) of each and, for the refined fits, the training poses' error against the
exact ones before and after refinement (mean rotation in degrees, mean translation in units), as they are and after
the similarity transform that best aligns the camera centres. Last output line: one JSON object {run: {"psnr", "ssim",
"seconds", "rot_err_deg", "trans_err", "rot_err_aligned_deg", "trans_err_aligned"}}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import data_root, machine  # noqa: E402
from rwf_render.camera_opt import corrected_c2w  # noqa: E402


def perturb(src: Path, dst: Path, rot_deg: float, trans: float, seed: int) -> np.ndarray:
    """Write a copy of the Blender dataset ``src`` into ``dst`` (image folders linked) whose training poses carry a
    seeded rigid error; returns the exact training poses (N, 4, 4)."""
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        meta = json.loads((src / f"transforms_{split}.json").read_text())
        folder = Path(meta["frames"][0]["file_path"]).parts[-2] if "/" in meta["frames"][0]["file_path"] else None
        if folder and not (dst / folder).exists():
            os.symlink((src / folder).resolve(), dst / folder)
        if split == "train":
            exact = np.array([f["transform_matrix"] for f in meta["frames"]], dtype=np.float64)
            g = torch.Generator().manual_seed(seed)
            n = len(exact)
            delta = torch.cat([torch.randn(n, 3, generator=g, dtype=torch.float64) * math.radians(rot_deg) / 3**0.5,
                               torch.randn(n, 3, generator=g, dtype=torch.float64) * trans / 3**0.5], 1)
            noisy = corrected_c2w(torch.from_numpy(exact), delta).numpy()
            for f, m in zip(meta["frames"], noisy):
                f["transform_matrix"] = m.tolist() + [[0.0, 0.0, 0.0, 1.0]]
        (dst / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    return exact


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean rotation angle (degrees) and mean centre distance between pose sets (N, 3|4, 4)."""
    # |Ra - Rb|_F = 2 sqrt(2) sin(angle / 2): well conditioned at small angles, where arccos of the trace is not
    chord = np.linalg.norm(a[:, :3, :3] - b[:, :3, :3], axis=(1, 2)) / 8**0.5
    angle = 2 * np.arcsin(np.clip(chord, 0, 1))
    return float(np.degrees(angle).mean()), float(np.linalg.norm(a[:, :3, 3] - b[:, :3, 3], axis=1).mean())


def aligned(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Poses ``b`` moved by the similarity transform that best maps their centres onto those of ``a`` (Umeyama; BARF's
    evaluation): the error left is the poses' own, not a drift of the whole reconstruction, which the photos cannot
    see."""
    ca, cb = a[:, :3, 3], b[:, :3, 3]
    ma, mb = ca.mean(0), cb.mean(0)
    u, sv, vt = np.linalg.svd((ca - ma).T @ (cb - mb) / len(a))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sv) @ d) / ((cb - mb) ** 2).sum(1).mean()
    out = b.copy()
    out[:, :3, :3] = rot @ b[:, :3, :3]
    out[:, :3, 3] = scale * (cb - mb) @ rot.T + ma
    return out


def fit(data: Path, out: Path, args, opt: bool) -> dict:
    cmd = ["rwf", "fit", "nerf", str(data), "--out", str(out), "--force", "--quiet", "--downscale", "4",
           "--background", "white", "--steps-per-diagonal", "512", "--grid-resolution", "64",
           "--encoding", args.encoding, "--steps", str(args.steps), "--eval-every", str(args.steps),
           "--eval-images", "8", "--seed", str(args.seed)]
    if opt:
        cmd += ["--optimize-cameras"] + (["--camera-lr", str(args.camera_lr)] if args.camera_lr else [])
        cmd += ["--camera-reg", str(args.camera_reg)] if args.camera_reg is not None else []
        cmd += ["--coarse-to-fine", *map(str, args.coarse_to_fine)] if args.coarse_to_fine else []
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    m = json.loads((out / "metrics.json").read_text())
    return {"psnr": m["psnr"], "ssim": m["ssim"], "seconds": m["seconds"], "wall": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="shared data folder (default $RWF_DATA, else ../shared/data)")
    ap.add_argument("--rot-deg", type=float, default=1.0, help="RMS rotation error of a training pose (degrees)")
    ap.add_argument("--trans", type=float, default=0.02, help="RMS translation error (scene units)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--encoding", default="hashgrid", choices=["fourier", "pe", "hashgrid"])
    ap.add_argument("--camera-lr", type=float, default=None, help="--camera-lr of the refined fits")
    ap.add_argument("--seed", type=int, default=0, help="seed of the perturbation and of the fits")
    ap.add_argument("--camera-reg", type=float, default=None, help="--camera-reg of the refined fits")
    ap.add_argument("--coarse-to-fine", type=float, nargs=2, metavar=("START", "END"),
                    help="--coarse-to-fine of the refined fits (hash grid only; default off)")
    ap.add_argument("--only", nargs="+", choices=["exact", "noisy", "noisy+opt", "exact+opt"],
                    help="run these only (default: exact, noisy, noisy+opt)")
    ap.add_argument("--with-exact-opt", action="store_true", help="also refine the exact poses")
    ap.add_argument("--runs", help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    src = data_root(args.data) / "nerf" / "lego_400"
    print(json.dumps(machine()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.runs or tmp)
        noisy_data = root / "lego_noisy"
        exact = perturb(src, noisy_data, args.rot_deg, args.trans, args.seed)
        noisy = np.array([f["transform_matrix"] for f in
                          json.loads((noisy_data / "transforms_train.json").read_text())["frames"]])
        before = pose_error(exact, noisy)
        print(f"training poses perturbed: {before[0]:.3f} deg, {before[1]:.4f} units on average", flush=True)
        plan = [("exact", src, False), ("noisy", noisy_data, False), ("noisy+opt", noisy_data, True)]
        if args.with_exact_opt:
            plan.append(("exact+opt", src, True))
        if args.only:
            every = {p[0]: p for p in plan + [("exact+opt", src, True)]}
            plan = [every[name] for name in args.only]
        results = {}
        for name, data, opt in plan:
            r = fit(data, root / name.replace("+", "_"), args, opt)
            start = noisy if data == noisy_data else exact
            poses = start
            if opt:
                refined = json.loads((root / name.replace("+", "_") / "cameras_refined.json").read_text())
                poses = np.array([f["transform_matrix"] for f in refined["frames"]])
            r["rot_err_deg"], r["trans_err"] = pose_error(exact, poses)
            r["rot_err_aligned_deg"], r["trans_err_aligned"] = pose_error(exact, aligned(exact, poses))
            results[name] = r
            print(f"{name:10s} test PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}, {r['seconds']:.0f} s of training; "
                  f"training poses off by {r['rot_err_deg']:.3f} deg, {r['trans_err']:.4f} units "
                  f"({r['rot_err_aligned_deg']:.3f} deg, {r['trans_err_aligned']:.4f} after a similarity alignment)",
                  flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
