"""``rwf render RUN --orbit N [--video]`` of an SDF run: frames around the shape, depth in the mesh's units."""

import math

import numpy as np
import pytest
import torch
from conftest import interrupt_render_writes, one_cli_error
from test_shape_image_bad_input_more import runs, snapshot  # noqa: F401 (a fixture: sdf and image runs)

from rwf_render import cli, sdf
from rwf_render.frame_folder import MANIFEST
from rwf_render.imgio import read_image
from rwf_render.rundir import read_json
from rwf_render.spheretrace import FOV, RADIUS, orbit_rays


def rwf(*args) -> int:
    return cli.main([str(a) for a in args])


R_UNIT = 0.3  # the analytic sphere's radius in the unit box


class Ball(torch.nn.Module):
    """The exact signed distance of a ball of radius R_UNIT at the origin, as a model's (N, 1) output."""

    def forward(self, x):
        return (x.norm(dim=-1) - R_UNIT)[:, None]


def test_orbit_frames_are_the_exact_ball_with_depth_in_the_meshs_units(runs, tmp_path, monkeypatch):
    """Closed form: with the field replaced by an exact ball, every pixel's depth is the ray's distance to the
    ball (divided by the run's normalization scale: the mesh's units), 0 where the ray misses it, and its colour
    is the ball's normal facing the camera; frame i looks from azimuth 360 i / N."""
    real = sdf.load_run

    def ball_run(run, cfg_dict, device):
        cfg, _, norm, state, dev = real(run, cfg_dict, device)
        return cfg, Ball(), norm, state, dev

    monkeypatch.setattr(sdf, "load_run", ball_run)
    out, n, scale = tmp_path / "frames", 3, 4
    assert rwf("render", runs["sdf"], "--orbit", n, "--scale", scale, "--out", out, "--quiet") == 0
    norm_scale = read_json(runs["sdf"] / "config.json")["normalization"]["scale"]
    assert norm_scale < 0.2  # the mesh's units are not the unit box's: a missing division would show
    res = 8 * scale
    footprint = 2 * RADIUS * math.tan(math.radians(FOV) / 2) / res
    for i in range(n):
        o, d = (t.double() for t in orbit_rays(res, 360.0 * i / n, 25.0))
        b = (o * d).sum(-1)
        disc = b**2 - ((o * o).sum(-1) - R_UNIT**2)
        t_true = -b - disc.clamp(min=0).sqrt()
        depth = torch.from_numpy(read_image(out / f"depth_{i:04d}.exr")[0][..., 0].reshape(-1)).double()
        hit = depth > 0
        miss_gap = (o + (-b)[:, None] * d).norm(dim=-1) - R_UNIT  # closest approach beyond the ball's surface
        clear = miss_gap.abs() > footprint  # pixels not grazing the silhouette
        assert torch.equal(hit[clear], (disc > 0)[clear])
        inner = hit & clear
        assert inner.sum() > res * res / 10
        normal = o[inner] + t_true[inner, None] * d[inner]
        normal = normal / normal.norm(dim=-1, keepdim=True)
        # the trace stops once the distance is below 0.3 footprint: along the ray that is at most 0.3 footprint over
        # the cosine between the ray and the normal, before the surface
        err = t_true[inner] - depth[inner] * norm_scale
        cos = (normal * d[inner]).sum(-1).abs()
        assert bool((err >= -1e-5).all() and (err <= 0.3 * footprint / cos + 1e-5).all()), float(err.abs().max())
        rgb = torch.from_numpy(read_image(out / f"rgb_{i:04d}.png")[0].reshape(-1, 3)).double()
        assert (rgb[inner] - (0.5 + 0.5 * normal)).abs().max() < 0.03
        assert bool((rgb[~hit & clear] == 1).all())  # white background
    assert sorted(read_json(out / MANIFEST)["files"]) == sorted(p.name for p in out.iterdir() if p.name != MANIFEST)


def test_orbit_video_and_a_shorter_render_after_a_longer_one(runs, tmp_path):
    """The learned field itself: N frames of the preview's size, videos of N frames; rendering 2 frames where 3
    were drops the third (listed in the first render's MANIFEST) and keeps a file of the user's."""
    import imageio.v3 as iio

    out = tmp_path / "orbit"
    assert rwf("render", runs["sdf"], "--orbit", 3, "--video", "--fps", 5, "--out", out, "--quiet") == 0
    names = {f"{k}_{i:04d}.{e}" for i in range(3) for k, e in (("rgb", "png"), ("depth", "exr"), ("depth", "png"))}
    assert {p.name for p in out.iterdir()} == names | {"rgb.mp4", "depth.mp4", MANIFEST}
    assert read_image(out / "rgb_0000.png")[0].shape == (8, 8, 3)
    for video in ("rgb.mp4", "depth.mp4"):
        assert iio.imread(out / video, index=None).shape[0] == 3
    (out / "notes.txt").write_text("mine")
    assert rwf("render", runs["sdf"], "--orbit", 2, "--out", out, "--quiet") == 0
    assert {p.name for p in out.iterdir()} == {n for n in names if "0002" not in n} | {MANIFEST, "notes.txt"}


def test_default_folder_is_inside_the_run(runs):
    assert rwf("render", runs["sdf"], "--orbit", 1, "--quiet") == 0
    assert (runs["sdf"] / "renders" / "orbit" / "depth_0000.exr").is_file()


def test_a_ctrl_c_mid_render_leaves_no_folder(runs, tmp_path, monkeypatch):
    calls = interrupt_render_writes(monkeypatch, after=2)
    out = tmp_path / "cut"
    assert rwf("render", runs["sdf"], "--orbit", 3, "--out", out, "--quiet") == 130
    assert len(calls) == 3 and not out.exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("kind,extra,said", [
    ("sdf", ["--video"], "--video goes with --orbit N"),
    ("sdf", ["--fps", "30"], "--fps goes with --orbit N"),
    ("sdf", ["--orbit", "2", "--opacity"], "--opacity applies to nerf runs, not to sdf runs"),
    ("sdf", ["--orbit", "2", "--out", "{tmp}/o.mp4"], "not a .mp4 file"),
    ("sdf", ["--orbit", "2", "--out", "{mesh}"], "is a file of the run's source"),
    ("sdf", ["--orbit", "2", "--fps", "10"], "--fps is the frame rate of --video"),
    ("sdf", ["--orbit", "200000"], "frames is more than"),
    ("img", ["--orbit", "2"], "--orbit applies to nerf and sdf runs, not to image runs")])
def test_impossible_orbit_options_are_one_error_and_nothing_written(runs, capsys, tmp_path, kind, extra, said):
    before = snapshot(runs[kind]), snapshot(runs["root"])
    extra = [e.format(tmp=tmp_path, mesh=runs["mesh"]) for e in extra]
    assert said in one_cli_error(capsys, ["render", runs[kind], *extra])
    assert (snapshot(runs[kind]), snapshot(runs["root"])) == before and list(tmp_path.iterdir()) == []


def test_a_users_frame_in_out_is_refused_before_the_model_loads(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "rgb_0001.png").write_bytes(b"mine")
    monkeypatch.setattr(sdf, "load_run", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    line = one_cli_error(capsys, ["render", runs["sdf"], "--orbit", 2, "--out", out])
    assert "holds rgb_0001.png that no earlier render there wrote; --force replaces it" in line
    assert (out / "rgb_0001.png").read_bytes() == b"mine"


def test_quiet_is_taken_by_every_kind_of_run(runs, tmp_path):
    """--quiet (no progress bar) was refused for image runs as an option of nerf runs."""
    assert rwf("render", runs["img"], "--out", tmp_path / "i.png", "--quiet") == 0
    assert rwf("render", runs["sdf"], "--out", tmp_path / "s.png", "--quiet") == 0
