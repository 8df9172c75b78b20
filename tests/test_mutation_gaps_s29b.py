"""Tests for behaviour a second mutation run (s29b) of today's changes found unpinned: each fails on one mutant of
the code and passes on the code as it is."""

import numpy as np
import pytest
import torch

from rwf_render.lenses import _radial_turn, distort, fisheye_theta, undistort

OPENCV = torch.tensor(1)


def _theta_d(theta, k):
    t2 = theta * theta
    k1, k2, k3, k4 = k
    return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))


# ------------------------------------------------------------------------------------------------------- lenses
@pytest.mark.parametrize("k", [(-0.0731, 0.0695, 0.0528, -0.049), (-0.0461, 0.0096, 0.0914, -0.0989)])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fisheye_theta_inverts_every_angle_of_a_mild_fisheye(k, dtype, tol):
    """theta_d(fisheye_theta(theta_d)) = theta_d over the lens's rising range: a point whose residual is already at
    rounding size stays put (a zero Newton step then bisected it away from the root, or the iterations ran out with
    it still wandering)."""
    kk = torch.tensor(k, dtype=torch.float64)
    top = min(0.999 * float(_radial_turn(kk[None])[0]), 3.0)  # up to where theta_d stops rising
    theta = torch.linspace(0, top, 20001, dtype=torch.float64)
    td = _theta_d(theta, kk)
    got = fisheye_theta(td.to(dtype), kk.to(dtype)).double()
    assert float((_theta_d(got, kk) - td).abs().max()) < tol


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_a_lens_without_a_turning_point_but_a_nearly_flat_stretch_inverts(dtype, tol):
    """k1 = -0.3, k2 = 0.0406: r (1 + k1 r^2 + k2 r^4) keeps rising (no turn: the bracket has no upper end), but its
    slope falls to 0.0025 near r = 1.49. A bisection there with an infinite upper end gave inf (NaN pixels); Newton
    alone must carry on."""
    d = torch.tensor([[-0.3, 0.0406, 0, 0, 0, 0]], dtype=torch.float64)
    assert float(_radial_turn(d[:, :4])[0]) == float("inf")
    rd = torch.linspace(0, 2.0, 20001, dtype=torch.float64)
    xy_d = torch.stack([rd, torch.zeros_like(rd)], -1)
    got = undistort(xy_d.to(dtype), OPENCV, d.to(dtype)).double()
    assert bool(torch.isfinite(got).all())
    assert float((distort(got, OPENCV, d) - xy_d).norm(dim=-1).max()) < tol


# ------------------------------------------------------------------------------------------------- data tools
def test_a_truncated_tiff_depth_map_is_refused_with_a_message_not_a_traceback(tmp_path):
    """load_depth_samples reads a TIFF's raw samples, but first lets rwf fit's reader refuse what it refuses: a cut-off
    file came back as tifffile's bare ValueError (a traceback from rwf data downscale)."""
    import tifffile

    from data_tools.common import load_depth_samples
    from rwf_render.errors import UserError

    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), photometric="minisblack")
    np.testing.assert_array_equal(load_depth_samples(whole), np.arange(64 * 64).reshape(64, 64))
    cut = tmp_path / "cut.tif"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.tif"):
        load_depth_samples(cut)


def test_big_endian_tiffs_are_read_as_tiffs(tmp_path):
    """A big-endian ("MM") TIFF is a TIFF: a min-is-white photo reads as what it means (stored 0 is white), and a
    32-bit depth map keeps its stored integers (the little-endian "II" magic alone was tested)."""
    import tifffile

    from data_tools.common import load_depth_samples, load_image

    stored = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6) * 10
    photo = tmp_path / "photo.tif"
    tifffile.imwrite(photo, stored, photometric="miniswhite", byteorder=">")
    assert photo.read_bytes()[:4] == b"MM\x00*"
    np.testing.assert_array_equal(load_image(photo), 255 - stored)
    depth = tmp_path / "depth.tif"
    mm = (np.arange(4 * 6, dtype=np.uint32).reshape(4, 6) + 1) * 100_000  # beyond 16 bits
    tifffile.imwrite(depth, mm, photometric="minisblack", byteorder=">")
    got = load_depth_samples(depth)
    assert got.dtype.kind in "iu"
    np.testing.assert_array_equal(got, mm)


def test_the_shared_focal_warning_covers_a_shared_vertical_focal_too(tmp_path):
    """camera_angle_x fits every size, but a top-level fl_y is one vertical focal length in pixels for all of them:
    wrong for a resized copy as fl_x is, and warned about the same way."""
    from conftest import sized_frames_dataset
    from data_tools.check import check_dataset

    root = sized_frames_dataset(tmp_path / "ds", [(40, 40), (60, 30)], {"fl_y": 30.0, "camera_angle_x": 0.7})
    errors, warnings = check_dataset(root, log=lambda *a: None)
    sizes = [w for w in warnings if "sizes" in w]
    assert errors == [] and len(sizes) == 1 and "40x40, 60x30" in sizes[0], warnings


# ------------------------------------------------------------------------------------------------ nerf_task views
class _Split:
    def __init__(self, paths):
        self.paths = paths
        self.names = [p.rsplit("/", 1)[-1] for p in paths]

    def __len__(self):
        return len(self.paths)


def test_each_views_figures_belong_to_that_view_when_a_subset_is_scored(monkeypatch, tmp_path):
    """With n_images below the split's size the views scored are 0, 2, 4 of 5: each entry must carry that view's
    own name, PSNR, SSIM and LPIPS (not the k-th name, nor another figure)."""
    from rwf_render import nerf_task
    from rwf_render.metrics import psnr, ssim

    rng = np.random.default_rng(0)
    target = torch.tensor(rng.random((8, 8, 3)), dtype=torch.float32)

    def render_and_target(model, test, i, background, trained=False):
        noise = torch.tensor(np.random.default_rng(i).normal(0, 0.02 * (i + 1), (8, 8, 3)), dtype=torch.float32)
        return (target + noise).clamp(0, 1), target

    monkeypatch.setattr(nerf_task, "render_and_target", render_and_target)
    monkeypatch.setattr(nerf_task, "lpips_metric", lambda: (lambda a, b: float(np.abs(a - b).mean()), None))
    split = _Split([str(tmp_path / f"v{i}.png") for i in range(5)])
    out = nerf_task.test_metrics(None, split, "white", 3)
    assert [v["image"] for v in out["views"]] == ["v0.png", "v2.png", "v4.png"]
    for v, i in zip(out["views"], (0, 2, 4)):
        pred, tgt = render_and_target(None, split, i, "white")
        assert v["psnr"] == pytest.approx(float(psnr(pred, tgt)), rel=1e-9)
        assert v["ssim"] == pytest.approx(float(ssim(pred.numpy(), tgt.numpy())), rel=1e-9)
        assert v["lpips"] == pytest.approx(float(np.abs(pred.numpy() - tgt.numpy()).mean()), rel=1e-9)
    assert len({v["psnr"] for v in out["views"]}) == 3


def test_view_names_of_a_split_of_one_image_is_its_file_name(tmp_path):
    """One image: the folder holding them all is its own folder (not the file itself, which named it ".")."""
    from rwf_render.nerf_task import view_names

    assert view_names(_Split([str(tmp_path / "test" / "r_0.png")])) == ["r_0.png"]
    assert view_names(_Split([str(tmp_path / "l" / "a.png"), str(tmp_path / "r" / "a.png")])) == ["l/a.png", "r/a.png"]


# ------------------------------------------------------------------------------------------------------- api
def test_a_runs_step_and_seconds_are_the_checkpoints_own(tmp_path):
    """step and seconds come from their own fields of the checkpoint's state, as int and float; a flag (a bool) or a
    missing field is no count."""
    from rwf_render.api import _Run

    run = _Run(tmp_path, {}, torch.nn.Linear(1, 1), torch.device("cpu"), {"step": 7, "seconds": 3})
    assert (run.step, run.seconds) == (7, 3.0) and type(run.step) is int and type(run.seconds) is float
    run = _Run(tmp_path, {}, torch.nn.Linear(1, 1), torch.device("cpu"), {"step": 250.0, "seconds": 12.5})
    assert (run.step, run.seconds) == (250, 12.5) and type(run.step) is int
    run = _Run(tmp_path, {}, torch.nn.Linear(1, 1), torch.device("cpu"), {"step": True, "seconds": None})
    assert run.step is None and run.seconds is None
    assert _Run(tmp_path, {}, torch.nn.Linear(1, 1), torch.device("cpu")).step is None


def test_load_run_names_a_dangling_checkpoint_link(tmp_path):
    """A checkpoint.pt that is a link to a file gone was reported as "no checkpoint yet" (a young fit)."""
    import json
    import os

    from rwf_render.api import load_run
    from rwf_render.errors import UserError

    (tmp_path / "config.json").write_text(json.dumps({"kind": "image"}))
    os.symlink(tmp_path / "elsewhere" / "checkpoint.pt", tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="a link to .*elsewhere.*does not exist"):
        load_run(tmp_path, device="cpu")
