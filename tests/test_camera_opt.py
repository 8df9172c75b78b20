"""Camera pose refinement (--optimize-cameras): the SO(3) exponential, the ray correction against re-posed cameras,
pose recovery from ray-point residuals, the optimizer group, and fits that write, resume and reload it."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.camera_opt import PoseCorrection, corrected_c2w, so3_exp
from rwf_render.cameras import Cameras, pixel_rays
from rwf_render.layers import param_groups


def _skew(w):
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*w.shape[:-1], 3, 3)


def test_so3_exp_is_the_matrix_exponential_of_the_skew_matrix():
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(40, 3, generator=g, dtype=torch.float64), dim=-1)
    angles = torch.cat([torch.zeros(1), torch.logspace(-9, 0.49, 39)]).double()  # 0, tiny, up to ~3.1 rad
    omega = directions * angles[:, None]
    r = so3_exp(omega)
    assert torch.allclose(r, torch.linalg.matrix_exp(_skew(omega)), atol=1e-12)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(40, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(40, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("scale", [0.0, 1e-5, 0.3])
def test_so3_exp_gradient_is_finite_and_exact_at_and_near_zero(scale):
    """Every correction starts at 0: Rodrigues' sin(t)/t is 0/0 there, its Taylor branch must give the gradient."""
    omega = (torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64) * scale).requires_grad_()
    v = torch.tensor([0.7, 0.1, -0.4], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w: so3_exp(w) @ v, (omega,), atol=1e-8)
    (so3_exp(omega) @ v).sum().backward()
    assert torch.isfinite(omega.grad).all()
    if scale == 0.0:  # d(R v)/d omega at 0 is -[v]x: summed over rows, (sum of -[v]x columns)
        assert torch.allclose(omega.grad[0], (-_skew(v)).sum(0), atol=1e-12)


def _cameras(n=3, dist=False):
    g = torch.Generator().manual_seed(1)
    rot = so3_exp(torch.randn(n, 3, generator=g, dtype=torch.float64))
    c2w = torch.cat([rot, torch.randn(n, 3, 1, generator=g, dtype=torch.float64) * 3], -1)
    kw = {"model": "OPENCV", "dist": torch.tensor([0.05, -0.01, 0.0, 0.0, 0.001, -0.002])} if dist else {}
    return Cameras.create(c2w, fx=40.0, fy=42.0, cx=31.0, cy=23.0, width=64, height=48, dtype=torch.float64, **kw)


@pytest.mark.parametrize("dist", [False, True])
def test_corrected_rays_are_the_rays_of_the_re_posed_cameras(dist):
    """(M o + s, M d) of a dataset ray equals the ray through the same pixel of camera c2w @ [exp(omega) | tau]."""
    cams = _cameras(dist=dist)
    g = torch.Generator().manual_seed(2)
    n_rays = 500
    idx = torch.randint(len(cams), (n_rays,), generator=g)
    uv = torch.rand(n_rays, 2, generator=g, dtype=torch.float64) * torch.tensor([64.0, 48.0], dtype=torch.float64)
    corr = PoseCorrection(len(cams)).double()
    with torch.no_grad():
        corr.delta.copy_(torch.randn(len(cams), 6, generator=g, dtype=torch.float64) * 0.2)
    o, d = pixel_rays(cams, uv, idx)
    o2, d2 = corr(o, d, idx, cams.c2w)
    moved = replace(cams, c2w=corrected_c2w(cams.c2w, corr.delta.detach()))
    o_ref, d_ref = pixel_rays(moved, uv, idx)
    assert torch.allclose(o2, o_ref, atol=1e-12) and torch.allclose(d2, d_ref, atol=1e-12)
    assert torch.allclose(d2.norm(dim=-1), torch.ones(n_rays, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(corr.refined(cams.c2w), moved.c2w, atol=1e-12)
    with torch.no_grad():  # no correction: the rays themselves
        corr.delta.zero_()
    o3, d3 = corr(o, d, idx, cams.c2w)
    assert torch.allclose(o3, o, atol=1e-12) and torch.allclose(d3, d, atol=1e-12)


def test_a_scaled_rotation_block_is_left_alone_at_zero_correction():
    """Datasets are not checked for orthonormal rotations: with a 1.1 x R block, R^T is not the inverse, and an
    unrefined ray must still be the dataset's ray, unit length."""
    cams = _cameras()
    scaled = replace(cams, c2w=torch.cat([cams.c2w[:, :, :3] * 1.1, cams.c2w[:, :, 3:]], -1))
    idx = torch.arange(3).repeat_interleave(10)
    uv = torch.rand(30, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 40
    o, d = pixel_rays(scaled, uv, idx)
    o2, d2 = PoseCorrection(3).double()(o, d, idx, scaled.c2w)
    assert torch.allclose(o2, o, atol=1e-12) and torch.allclose(d2, d, atol=1e-12)


def test_ray_residuals_recover_a_known_pose_error():
    """Bundle adjustment in miniature: rays of cameras whose poses are off by a known rigid error miss the 3D
    points their pixels saw; minimizing the ray-to-point distance over the corrections undoes the error."""
    cams = _cameras(n=4)
    g = torch.Generator().manual_seed(3)
    truth = replace(cams, c2w=cams.c2w)
    err = torch.cat([torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.03,
                     torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.05], 1)
    wrong = replace(cams, c2w=corrected_c2w(cams.c2w, err))
    idx = torch.arange(4).repeat_interleave(60)
    uv = torch.rand(240, 2, generator=g, dtype=torch.float64) * torch.tensor([64.0, 48.0], dtype=torch.float64)
    o, d = pixel_rays(truth, uv, idx)
    points = o + d * (2 + 4 * torch.rand(240, 1, generator=g, dtype=torch.float64))  # what each pixel saw
    o_w, d_w = pixel_rays(wrong, uv, idx)
    corr = PoseCorrection(4).double()
    opt = torch.optim.Adam(corr.parameters(), lr=3e-3)

    def residual():
        o2, d2 = corr(o_w, d_w, idx, wrong.c2w)
        v = points - o2
        return (v - (v * d2).sum(-1, keepdim=True) * d2).norm(dim=-1).mean()

    with torch.no_grad():
        start = float(residual())
    for _ in range(1500):
        opt.zero_grad()
        loss = residual()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(residual()) < 0.01 * start
    refined = corr.refined(wrong.c2w)
    rel = truth.c2w[:, :3, :3].transpose(1, 2) @ refined[:, :3, :3]
    angle = torch.arccos(((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    assert float(angle.max()) < 0.05 * float(err[:, :3].norm(dim=-1).min())
    moved = float((refined[:, :, 3] - truth.c2w[:, :, 3]).norm(dim=-1).max())
    assert moved < 0.05 * float(err[:, 3:].norm(dim=-1).min())


def test_the_regularizer_is_nerfstudios_in_scene_independent_units():
    """1e-3 x mean |omega| + 1e-2 x mean |tau| in units of a [-1, 1]^3 box's diagonal; on its own it drives the
    corrections to zero (an L1 pull), and scaling the scene with the translations leaves it unchanged."""
    corr = PoseCorrection(2).double()
    with torch.no_grad():
        corr.delta.copy_(torch.tensor([[0.3, 0.0, 0.4, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.6, 0.0, 0.8]],
                                      dtype=torch.float64))
    diagonal = 6.0
    unit = diagonal / (2 * math.sqrt(3))
    assert float(corr.penalty(diagonal).detach()) == pytest.approx(1e-3 * 0.5 / 2 + 1e-2 * (1.0 / unit) / 2, rel=1e-12)
    bigger = PoseCorrection(2).double()
    with torch.no_grad():
        bigger.delta.copy_(corr.delta * torch.tensor([1, 1, 1, 10, 10, 10]))
    assert float(bigger.penalty(10 * diagonal).detach()) == pytest.approx(float(corr.penalty(diagonal).detach()),
                                                                          rel=1e-12)
    opt = torch.optim.Adam(corr.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        corr.penalty(diagonal).backward()
        opt.step()
    assert float(corr.delta.detach().abs().max()) < 0.02


def test_corrections_form_their_own_optimizer_group():
    model = torch.nn.Module()
    model.field = torch.nn.Linear(3, 3)
    model.pose_correction = PoseCorrection(5, lr=2e-4)
    groups = {g["name"]: g for g in param_groups(model, 1e-2)}
    assert groups["camera_poses"]["lr"] == 2e-4 and groups["camera_poses"]["params"] == [model.pose_correction.delta]
    assert all(p is not model.pose_correction.delta for p in groups["main"]["params"])
    assert len(groups["main"]["params"]) == 2


COMMON = ["--eval-images", "1", "--quiet", "--grid-resolution", "32", "--steps-per-diagonal", "128",
          "--target-samples", "2048", "--width", "32", "--eval-every", "10", "--ckpt-every", "10"]


def test_fit_writes_refined_cameras_that_render_and_eval_reload(tiny_scene, tmp_path):
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(run), "--steps", "20", "--optimize-cameras",
                     "--camera-lr", "5e-3", *COMMON]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["optimize_cameras"] is True and cfg["camera_lr"] == 5e-3
    assert "camera_reg" in (run / "history.csv").read_text().splitlines()[0].split(",")  # the regularizer ran
    refined = json.loads((run / "cameras_refined.json").read_text())
    train = json.loads((tiny_scene / "transforms_train.json").read_text())
    assert len(refined["frames"]) == len(train["frames"])
    for frame, src in zip(refined["frames"], train["frames"]):  # the photo's path under the dataset folder
        assert (tiny_scene / frame["file_path"]).is_file()
        assert Path(frame["file_path"]).with_suffix("") == Path(src["file_path"]).with_suffix(""), frame
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    delta = state["pose_correction.delta"].double()
    assert delta.shape == (len(train["frames"]), 6) and delta.abs().max() > 0  # it moved
    for frame, src, dlt in zip(refined["frames"], train["frames"], delta):
        m = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
        expect = corrected_c2w(torch.tensor(src["transform_matrix"], dtype=torch.float64)[None], dlt[None])[0]
        assert torch.allclose(m[:3], expect, atol=1e-5)
        assert frame["rotation_deg"] == pytest.approx(math.degrees(float(dlt[:3].norm())), rel=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["camera_rotation_deg_max"] == pytest.approx(max(f["rotation_deg"] for f in refined["frames"]))
    # reloaded, the run's training cameras are the refined ones: the viewer, --split train, --interpolate and the
    # point exports look from where the field was fitted; the test split keeps the dataset's poses
    import argparse

    from rwf_render.nerf import load_scene_model
    from rwf_render.nerf_outputs import _cameras

    model = load_scene_model(run)
    want = torch.tensor([f["transform_matrix"] for f in refined["frames"]], dtype=torch.float32)[:, :3]
    assert torch.allclose(model.train_cameras.c2w, want, atol=1e-5)
    args = argparse.Namespace(split="train", orbit=None, camera_path=None, interpolate=None, fps=24)
    assert torch.allclose(_cameras(model, args)[0].c2w, want, atol=1e-5)
    test = json.loads((tiny_scene / "transforms_test.json").read_text())
    args.split = "test"
    assert torch.allclose(_cameras(model, args)[0].c2w,
                          torch.tensor([f["transform_matrix"] for f in test["frames"]], dtype=torch.float32)[:, :3])
    assert cli.main(["eval", str(run)]) == 0  # the checkpoint with its corrections loads
    assert cli.main(["render", str(run), "--split", "test", "--out", str(tmp_path / "frames"), "--quiet"]) == 0


def test_refined_fit_resumes_to_the_parameters_of_an_uninterrupted_one(tiny_scene, tmp_path, monkeypatch):
    """Stopped at step 10 and resumed, a deterministic --optimize-cameras fit ends with the same corrections,
    field and optimizer state as one that ran straight to step 20."""
    from rwf_render.trainer import Trainer

    common = [str(tiny_scene), "--steps", "20", "--optimize-cameras", "--deterministic", *COMMON]
    a, b = tmp_path / "a", tmp_path / "b"
    try:
        assert cli.main(["fit", "nerf", "--out", str(a), *common]) == 0
        step = Trainer.step

        def stop_at_10(self):
            out = step(self)
            self.stop_requested = self.step_idx >= 10
            return out

        monkeypatch.setattr(Trainer, "step", stop_at_10)
        assert cli.main(["fit", "nerf", "--out", str(b), *common]) == 0
        assert torch.load(b / "checkpoint.pt", weights_only=True)["step"] == 10
        monkeypatch.setattr(Trainer, "step", step)
        # the fit's own command with --resume added, --camera-lr typed at the run's value
        assert cli.main(["fit", "nerf", *common, "--out", str(b), "--resume", "--camera-lr", "3e-4"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    sa, sb = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (a, b))
    assert sa["step"] == sb["step"] == 20
    assert sa["model"]["pose_correction.delta"].abs().max() > 0
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    assert [g["lr"] for g in sa["optimizer"]["param_groups"]] == [g["lr"] for g in sb["optimizer"]["param_groups"]]


def test_camera_lr_without_optimize_cameras_is_refused(tiny_scene, tmp_path, capsys):
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(tmp_path / "r"), "--camera-lr", "1e-3",
                     "--steps", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--camera-lr applies to --optimize-cameras" in err and "Traceback" not in err
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(tmp_path / "r"), "--camera-reg", "0.5",
                     "--steps", "2", "--quiet"]) == 2
    assert "--camera-reg applies to --optimize-cameras" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_fit_without_the_option_has_no_corrections(tiny_scene, tmp_path):
    run = tmp_path / "plain"
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(run), "--steps", "2", *COMMON]) == 0
    assert not (run / "cameras_refined.json").exists()
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert not any(k.startswith("pose_correction") for k in state)
    assert "camera_rotation_deg_mean" not in json.loads((run / "metrics.json").read_text())
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["psnr"])


def test_resuming_an_unrefined_run_with_camera_lr_is_refused(tiny_scene, tmp_path, capsys):
    run = tmp_path / "plain"
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(run), "--steps", "2", *COMMON]) == 0
    capsys.readouterr()
    assert cli.main(["fit", "nerf", "--out", str(run), "--resume", "--steps", "4", "--camera-lr", "1e-3",
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--camera-lr applies to --optimize-cameras" in err and "fitted without it" in err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2


def test_a_changed_training_split_is_refused_not_misassigned(tiny_scene):
    """Corrections are per photo: a training split with another photo count than the fit's has no answer."""
    from rwf_render.errors import UserError
    from rwf_render.nerf_data import load_split
    from rwf_render.nerf_task import refined_split

    model = torch.nn.Module()
    model.pose_correction = PoseCorrection(5)
    with pytest.raises(UserError, match="has 3 photos now, the run refined the poses of 5"):
        refined_split(model, load_split(str(tiny_scene), "train", 1, indices=[0, 1, 2]))
    assert refined_split(model, load_split(str(tiny_scene), "train", 1, indices=range(5))).cameras.c2w.shape[0] == 5


# -- BARF's coarse-to-fine schedule on the hash grid's levels (--coarse-to-fine) ------------------------------------
def _grid():
    from rwf_render.encodings import HashGrid

    grid = HashGrid(3, levels=6, level_features=2, log2_size=10, base_res=4, max_res=64)
    torch.nn.init.uniform_(grid.table, -1.0, 1.0, generator=torch.Generator().manual_seed(0))
    return grid


def _x_grad_per_level(grid, x):
    """d(sum of the encoding)/dx, one level at a time, at every level in full: (levels, N, 3)."""
    grid.open_levels(None)
    out = []
    for level in range(grid.levels):
        xg = x.detach().clone().requires_grad_(True)
        out.append(torch.autograd.grad(grid(xg).reshape(len(x), grid.levels, -1)[:, level].sum(), xg)[0])
    return torch.stack(out)


def test_open_levels_weighs_each_levels_gradient_in_x_by_the_barf_window():
    grid, x = _grid(), torch.rand(50, 3, generator=torch.Generator().manual_seed(1))
    full, per_level = grid(x), _x_grad_per_level(grid, x)
    for alpha in (0.0, 0.25, 1.5, 3.0, 4.99):
        grid.open_levels(alpha)
        want = torch.tensor([1.0] + [(1 - math.cos(math.pi * min(max(alpha - lv + 1, 0.0), 1.0))) / 2
                                     for lv in range(1, 6)])
        xg = x.clone().requires_grad_(True)
        out = grid(xg)
        assert torch.allclose(out, full, atol=1e-6)  # the encoding itself is whole (full: the compiled lookup)
        got = torch.autograd.grad(out.sum(), xg)[0]
        assert torch.allclose(got, (want[:, None, None] * per_level).sum(0), atol=1e-5), alpha
    for alpha in (5.0, 9.0, None):  # levels - 1 and beyond, or off: every level in full
        grid.open_levels(alpha)
        assert grid.position_weights is None


def test_the_tables_gradient_stays_whole_while_a_level_is_closed_to_x():
    """The field learns every level from the start (BARF's output mask blurred it, and the cameras drifted)."""
    grid = _grid()
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    grid.open_levels(0.0)  # only level 0 moves x
    (grid(x) ** 2).sum().backward()
    closed = grid.table.grad.clone()
    grid.table.grad = None
    grid.open_levels(None)
    (grid(x) ** 2).sum().backward()
    assert torch.equal(closed, grid.table.grad)


def test_the_schedule_follows_the_fraction_of_steps_and_the_final_scores_use_every_level():
    from types import SimpleNamespace

    from rwf_render.nerf_task import open_levels

    grid = _grid()
    model = SimpleNamespace(field=SimpleNamespace(pos_enc=grid))
    open_levels(model, [0.2, 0.6], 0.1)  # before START: the coarsest level alone
    assert grid.position_weights[1:].abs().max() == 0
    open_levels(model, [0.2, 0.6], 0.4)  # half way: alpha = 2.5 of 5
    assert torch.allclose(grid.position_weights, torch.tensor([1, 1, 1, 0.5, 0, 0.0]))
    open_levels(model, [0.2, 0.6], 0.6)
    assert grid.position_weights is None
    open_levels(model, [0.2, 0.6], 0.3)
    open_levels(model, None, None)  # what finish() does before scoring
    assert grid.position_weights is None


@pytest.mark.parametrize("extra, message", [
    (["--coarse-to-fine", "0.1", "0.5"], "--coarse-to-fine applies to --optimize-cameras"),
    (["--optimize-cameras", "--coarse-to-fine", "0.5", "0.1"], "0 <= START < END <= 1"),
    (["--optimize-cameras", "--coarse-to-fine", "0.1", "0.5", "--encoding", "fourier"], "not fourier"),
])
def test_impossible_coarse_to_fine_settings_are_refused(tiny_scene, tmp_path, capsys, extra, message):
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(tmp_path / "r"), "--steps", "2", "--quiet",
                     *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "r").exists()


def test_a_coarse_to_fine_fit_trains_saves_and_resumes(tiny_scene, tmp_path):
    run = tmp_path / "run"
    common = [str(tiny_scene), "--out", str(run), "--optimize-cameras", "--encoding", "hashgrid", "--coarse-to-fine",
              "0.2", "0.6", *COMMON]
    assert cli.main(["fit", "nerf", *common, "--steps", "10"]) == 0
    assert json.loads((run / "config.json").read_text())["coarse_to_fine"] == [0.2, 0.6]
    assert cli.main(["fit", "nerf", *common, "--steps", "12", "--resume"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 12


def test_translation_steps_scale_with_the_scene():
    """Adam moves a parameter by about its rate a step whatever the gradient's size: translations trained in scene
    units moved the cameras of a scene 10 times larger by the same absolute amount (a helper's hunt: a tenth-size
    copy of a scene lost 1.2 dB of training PSNR). With the translation in lengths of the box, one step on the same
    scene in units 10 times larger moves its cameras 10 times as far, and the regularizer is the same."""
    from rwf_render.camera_opt import PoseCorrection

    gen = torch.Generator().manual_seed(0)
    c2w = torch.eye(4)[None].repeat(2, 1, 1)
    c2w[:, :3, 3] = torch.randn(2, 3, generator=gen)
    rays_o, rays_d = torch.randn(64, 3, generator=gen), torch.nn.functional.normalize(torch.randn(64, 3, generator=gen))
    image_idx = torch.arange(64) % 2
    target = torch.randn(64, 3, generator=gen)
    moved = []
    for k in (1.0, 10.0):
        corr = PoseCorrection(2, lr=1e-2, unit=k)
        opt = torch.optim.Adam([corr.delta], lr=1e-2)
        c = c2w.clone()
        c[:, :3, 3] *= k
        o, _ = corr(rays_o * k, rays_d, image_idx, c)
        (((o / k - target) ** 2).mean() + corr.penalty(5.0 * k)).backward()
        opt.step()
        moved.append(corr.magnitudes())
    assert torch.allclose(moved[1][0], moved[0][0], rtol=1e-4)  # the same turn
    assert torch.allclose(moved[1][1], 10 * moved[0][1], rtol=1e-4)  # ten times the shift
