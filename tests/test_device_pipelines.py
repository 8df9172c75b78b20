"""Every pipeline end to end on each device: on the CPU here, and on a GPU where one is (scripts/gpu_check.sh runs the
`cuda` ones). Until the first lent GPU, only the marcher's CUDA tests and the benchmarks had run there; the commands
that read a trained model back (eval, render, mesh export, point cloud) had never seen CUDA tensors."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import random_views_scene
from rwf_render import cli
from rwf_render.imgio import read_image

ON_GPU = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="no CUDA device")])
DEVICES = ["cpu", ON_GPU]
NERF = ["--steps", "4", "--eval-every", "2", "--eval-images", "1", "--grid-resolution", "16", "--steps-per-diagonal",
        "32", "--width", "16", "--target-samples", "1024", "--quiet"]
ENCODINGS = {"fourier": ["--features", "8"],
             "hashgrid": ["--hash-levels", "4", "--hash-log2-size", "10", "--hash-max-res", "32"]}


@pytest.mark.parametrize("encoding", ["fourier", "hashgrid"])
@pytest.mark.parametrize("device", DEVICES)
def test_nerf_fit_eval_render_and_exports(tmp_path, device, encoding):
    data = random_views_scene(tmp_path / "data", {"train": 4, "test": 2})
    run, dev = tmp_path / "run", ["--device", device]
    assert cli.main(["fit", "nerf", str(data), "--out", str(run), "--encoding", encoding, *ENCODINGS[encoding], *NERF,
                     *dev]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["device"] == device
    assert cli.main(["eval", str(run), *dev]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"]) and 0 <= metrics["ssim"] <= 1
    frames = tmp_path / "frames"
    assert cli.main(["render", str(run), "--split", "test", "--rgba", "--out", str(frames), *dev]) == 0
    rgb = sorted(frames.glob("rgb_*.png"))
    assert len(rgb) == 2 and len(sorted(frames.glob("rgba_*.png"))) == 2 and sorted(frames.glob("depth_*"))
    pixels, _ = read_image(rgb[0])
    assert pixels.shape == (8, 8, 3) and np.isfinite(pixels).all()
    mesh, cloud = tmp_path / "m.ply", tmp_path / "p.ply"
    assert cli.main(["export", "mesh", str(run), "--res", "24", "--threshold", "0.5", "--out", str(mesh), *dev]) == 0
    assert cli.main(["export", "mesh", str(run), "--pointcloud", "--out", str(cloud), *dev]) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_image_fit_and_eval(tmp_path, device):
    run = tmp_path / "img"
    assert cli.main(["fit", "image", "--out", str(run), "--size", "32", "--steps", "6", "--width", "32",
                     "--features", "16", "--eval-every", "3", "--quiet", "--device", device]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"]) and metrics["steps"] == 6


@pytest.mark.skipif(importlib.util.find_spec("open3d") is None, reason="rwf fit sdf needs open3d for distances")
@pytest.mark.parametrize("device", DEVICES)
def test_sdf_fit_and_mesh_export(tmp_path, device):
    run = tmp_path / "sdf"
    assert cli.main(["fit", "sdf", "--out", str(run), "--steps", "6", "--width", "32", "--features", "16",
                     "--eval-every", "3", "--mesh-res", "24", "--preview-res", "16", "--eval-points", "2048",
                     "--metric-points", "2000", "--pool", "2048", "--batch", "256", "--refresh-every", "3",
                     "--quiet", "--device", device]) == 0
    assert cli.main(["export", "mesh", str(run), "--res", "24", "--out", str(tmp_path / "s.ply"),
                     "--device", device]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 6
