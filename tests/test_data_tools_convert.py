"""llff round trip, check (each planted defect flagged), downscale (exact intrinsics), the python -m entry."""

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_tools.check import check_dataset
from data_tools.cli import main
from data_tools.common import load_image, save_image
from data_tools.llff import read_poses_bounds, write_poses_bounds
from rwf_render.cameras import look_at, project
from rwf_render.datasets import load_transforms

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_llff_round_trip(tmp_path):
    n = 6
    src = tmp_path / "scene"  # OUT may not lie inside DIR
    src.mkdir()
    eyes = torch.tensor([[0.4 * math.cos(a), 0.3 * math.sin(a), 4.0] for a in np.linspace(0, 5, n)],
                        dtype=torch.float64)
    c2w = look_at(eyes, torch.tensor([0.1, 0.2, 0.0], dtype=torch.float64), up=(0.0, 1.0, 0.0)).numpy()
    bounds = np.stack([np.linspace(2.0, 2.5, n), np.linspace(7.0, 9.0, n)], 1)
    write_poses_bounds(src / "poses_bounds.npy", c2w, [60.0, 80.0, 70.0], bounds)
    back, hwf, b = read_poses_bounds(src / "poses_bounds.npy")
    np.testing.assert_allclose(back[:, :3], c2w, atol=1e-12)
    np.testing.assert_array_equal(b, bounds)
    (src / "images_2").mkdir()
    for i in range(n):  # half-size images, as in LLFF's images_2 folders
        save_image(src / "images_2" / f"{i:03d}.png", np.zeros((30, 40, 3), np.uint8))
    assert main(["data", "llff", str(src), str(tmp_path / "out"), "--images", "images_2"]) == 0
    t = load_transforms(tmp_path / "out", "all")
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    S = np.array(meta["input_to_world"])
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    expect = S @ np.concatenate([c2w, np.tile([[[0, 0, 0, 1]]], (n, 1, 1))], 1)
    expect[:, :3, :3] /= s
    np.testing.assert_allclose(t.cameras.c2w.numpy(), expect[:, :3], atol=1e-9)
    assert torch.allclose(t.cameras.fx, torch.full((n,), 35.0, dtype=torch.float64))  # focal scaled with the image
    assert (t.cameras.width == 40).all() and torch.allclose(t.near_far[:, 0], torch.from_numpy(bounds[:, 0] * s))
    # LLFF's bounds are depths; near/far are distances along a ray: the corner ray meets the far depth at far
    cos_corner = 35.0 / math.sqrt(35.0 ** 2 + 20.0 ** 2 + 15.0 ** 2)
    assert torch.allclose(t.near_far[:, 1] * cos_corner, torch.from_numpy(bounds[:, 1] * s))
    # the point every camera looks at projects to every image center, before and after
    target = torch.from_numpy(S[:3, :3] @ [0.1, 0.2, 0.0] + S[:3, 3])
    pix, _ = project(target[None], t.cameras)
    assert torch.allclose(pix[:, 0], torch.tensor([20.0, 15.0], dtype=torch.float64), atol=1e-6)
    np.save(src / "poses_bounds.npy", np.zeros((3, 12)))
    assert main(["data", "llff", str(src), str(tmp_path / "o2")]) == 2 and not (tmp_path / "o2").exists()


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory):
    pytest.importorskip("open3d")
    root = tmp_path_factory.mktemp("synth") / "d"
    assert main(["data", "synth", "demo", str(root), "--res", "24", "--views", "4", "--val", "0", "--test", "0",
                 "--depth", "--supersample", "1"]) == 0
    return root


def _plant(src, dst, edit):
    shutil.copytree(src, dst)
    path = dst / "transforms_train.json"
    meta = json.loads(path.read_text())
    edit(dst, meta)
    path.write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("name, edit, message", [
    ("zero_pose", lambda d, m: m["frames"][2].update(transform_matrix=np.zeros((4, 4)).tolist()),
     r"frame 2 .*singular"),
    ("wrong_size", lambda d, m: save_image(d / "train" / "r_0.png", np.zeros((20, 24, 4), np.uint8)),
     r"frame 0 .*image is 24x20 but its camera is 24x24"),
    ("skewed", lambda d, m: m["frames"][3]["transform_matrix"][0].__setitem__(0, 3.0), r"frame 3 .*not orthonormal"),
    ("corrupt", lambda d, m: (d / "train" / "r_2.png").write_bytes(b"\x89PNG garbage"), r"frame 2 .*cannot decode"),
    ("bad_focal", lambda d, m: m["frames"][0].update(fl_x=-5.0), r"frame 0 .*must be positive"),
    ("mask_size", lambda d, m: (save_image(d / "train" / "m_1.png", np.full((12, 12), 255, np.uint8)),
                                m["frames"][1].update(mask_path="train/m_1.png")),
     r"frame 1 .*mask m_1.png is 12x12 but its camera is 24x24"),
    ("depth_size", lambda d, m: save_image(d / "train" / "r_0_depth.png", np.zeros((24, 20), np.uint16)),
     r"frame 0 .*depth map r_0_depth.png is 20x24 but its camera is 24x24"),
    ("corrupt_mask", lambda d, m: ((d / "train" / "m_3.png").write_bytes(b"\x89PNG garbage"),
                                   m["frames"][3].update(mask_path="train/m_3.png")),
     r"frame 3 .*mask: .*cannot decode"),
])
def test_check_flags_each_planted_defect(small_synth, tmp_path, name, edit, message, capsys):
    assert check_dataset(small_synth, log=lambda *a: None) == ([], [])
    bad = _plant(small_synth, tmp_path / name, edit)
    errors, _ = check_dataset(bad, log=lambda *a: None)
    assert len(errors) == 1, errors
    assert __import__("re").search(message, errors[0]), errors[0]
    assert main(["data", "check", str(bad)]) == 1
    assert "FAILED: 1 error(s)" in capsys.readouterr().out


def test_downscale_keeps_projections_exact(small_synth, tmp_path):
    assert main(["data", "downscale", str(small_synth), str(tmp_path / "half"), "--factor", "2"]) == 0
    a, b = load_transforms(small_synth, "train"), load_transforms(tmp_path / "half", "train")
    assert (b.cameras.width == 12).all() and load_image(b.image_paths[0]).shape == (12, 12, 4)
    pts = torch.randn(20, 3, dtype=torch.float64) * 0.5
    pa, _ = project(pts, a.cameras)
    pb, _ = project(pts, b.cameras)
    assert torch.allclose(pb, pa / 2, atol=1e-9)  # pixel (u, v) -> (u / 2, v / 2): same continuous convention
    big, small = load_image(a.image_paths[0]).astype(float), load_image(b.image_paths[0]).astype(float)
    assert abs(big[..., 3].mean() - small[..., 3].mean()) < 2  # coverage kept by the box filter
    depth = load_image(tmp_path / "half" / "train" / "r_0_depth.png")
    assert depth.dtype == np.uint16 and depth.shape == (12, 12)
    assert main(["data", "check", str(tmp_path / "half")]) == 0
    n_files = len(list(small_synth.rglob("*")))
    assert main(["data", "downscale", str(small_synth), str(small_synth), "-k", "2", "--force"]) == 2
    assert len(list(small_synth.rglob("*"))) == n_files  # the input is never replaced


def test_python_dash_m_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "data_tools", "data", "check", str(tmp_path / "none")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("rwf: error:") and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "data_tools", "data", "synth", "--res", "0", "m", "o"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "--res" in r.stderr and "Traceback" not in r.stderr


def test_plugs_into_rwf_command(monkeypatch, tmp_path, capsys, data_dir):
    """``rwf data ...`` through rwf_render.cli with the entry point the setup.py registers."""
    from rwf_render import cli  # noqa: PLC0415

    from data_tools.cli import register  # noqa: PLC0415

    class Entry:
        name = "data"

        def load(self):
            return register

    real = cli.metadata.entry_points
    monkeypatch.setattr(cli.metadata, "entry_points",
                        lambda group=None, **kw: [Entry()] if group == "rwf_render.commands" else real(group=group))
    assert cli.main(["data", "check", str(data_dir / "nerf" / "lego_tiny")]) == 0
    assert "OK: 0 error(s)" in capsys.readouterr().out
    assert cli.main(["data", "downscale", str(tmp_path), str(tmp_path / "o")]) == 2  # --factor is required
    assert "--factor" in capsys.readouterr().err


def test_depth_downscale_keeps_sparse_points_and_dense_centres():
    """A dense map at an odd factor takes each block's centre sample; a sparse map (structure-from-motion depth)
    keeps one of its own values in every block that holds any, and nothing is averaged."""
    from data_tools.downscale import depth_downscale  # noqa: PLC0415

    dense = np.arange(1, 82, dtype=np.uint16).reshape(9, 9)
    np.testing.assert_array_equal(depth_downscale(dense, 3), dense[1::3, 1::3])
    rng = np.random.default_rng(0)
    sparse = np.zeros((30, 40), np.uint16)
    rows, cols = rng.integers(0, 30, 25), rng.integers(0, 40, 25)
    sparse[rows, cols] = rng.integers(1, 65535, 25)
    small = depth_downscale(sparse, 4)
    blocks = sparse[:28].reshape(7, 4, 10, 4).transpose(0, 2, 1, 3).reshape(7, 10, 16)
    has = (blocks > 0).any(-1)
    np.testing.assert_array_equal(small > 0, has)
    assert all(small[i, j] in blocks[i, j] for i, j in zip(*np.nonzero(has)))


def test_depth_downscale_at_an_even_factor_gives_the_block_centre_of_a_surface():
    """At K = 2 no sample lies at a block's centre: the nearest one sat a quarter of a new pixel up and left (a
    helper's hunt). On a plane the four central samples' mean is the centre's depth; across an edge (a jump) no
    depths are mixed."""
    from data_tools.downscale import depth_downscale  # noqa: PLC0415

    yy, xx = np.mgrid[0:12, 0:16].astype(np.float32)
    plane = 2.0 + 0.01 * (xx + 0.5) + 0.02 * (yy + 0.5)  # depth at pixel centres
    small = depth_downscale(plane, 2)
    cy, cx = np.mgrid[0:6, 0:8] * 2.0 + 1.0  # the new pixels' centres in old pixels
    np.testing.assert_allclose(small, 2.0 + 0.01 * cx + 0.02 * cy, rtol=1e-6)
    edge = plane.copy()
    edge[:, 9:] += 3.0  # a jump inside the blocks of columns 8..9
    small = depth_downscale(edge, 2)
    assert set(np.unique(small[:, 4])) <= set(np.unique(edge[:, 8:10]))  # one sample of the block, not a mean
    np.testing.assert_allclose(small[:, :4], 2.0 + 0.01 * cx[:, :4] + 0.02 * cy[:, :4], rtol=1e-6)
    step = np.full((4, 4), 10.0, np.float32)
    step[:, 1:] = 10.6  # a jump of 6 % between the central columns: an edge, not averaged to 10.3
    assert set(np.unique(depth_downscale(step, 2)[:, 0])) <= {np.float32(10.0), np.float32(10.6)}


def test_python_m_data_tools_help_lists_the_data_commands():
    """``python -m data_tools --help`` listed one command, ``data``, though ``synth``, ``check`` ... work without it."""
    r = subprocess.run([sys.executable, "-m", "data_tools", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert {"synth", "colmap", "photos", "llff", "check", "downscale"} <= listed, r.stdout
