"""Depth supervision: depth maps -> ray distances (closed form against a ray caster), the thinning rule, the depth
map reader's errors, and the --depth-loss option end to end."""

import json

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.errors import UserError
from rwf_render.imgio import write_image, write_png
from rwf_render.nerf_data import load_split
from rwf_render.nerf_depth import DEFAULT_UNIT, read_depth_map, thin_depth


@pytest.fixture(scope="module")
def depth_scene(tmp_path_factory):
    """A 36 px Blender-format scene with 16-bit z-depth maps, and its mesh (data_tools' ray caster)."""
    from data_tools.synth import demo_mesh, render_dataset

    out = tmp_path_factory.mktemp("scene") / "depth"
    render_dataset(demo_mesh(), out, res=36, n_views=6, n_val=2, n_test=1, depth=True, log=lambda *a, **k: None)
    return out


def _cast(mesh_path, rays_o, rays_d) -> np.ndarray:
    """Distance along each ray to the first hit of the mesh (open3d's ray caster; inf on a miss)."""
    import open3d as o3d  # noqa: PLC0415

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(o3d.io.read_triangle_mesh(str(mesh_path))))
    rays = np.concatenate([rays_o, rays_d], 1).astype(np.float32)
    return scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()


@pytest.mark.parametrize("downscale", [1, 3])
def test_ray_distances_hit_the_mesh_where_the_ray_caster_does(depth_scene, downscale):
    """Closed form: each depth sample's distance along its (unit) ray equals the ray caster's distance to the mesh
    along that same ray, to the depth map's quantization; at 1/3 resolution each sample keeps its own ray."""
    split = load_split(depth_scene, "train", downscale, depth=True)
    d = split.depth
    unit = json.loads((depth_scene / "transforms_train.json").read_text())["depth_unit_scale_factor"]
    rays_o, rays_d = split.rays(d.image, d.uv, "cpu")
    hit = _cast(depth_scene / "mesh.ply", rays_o.numpy(), rays_d.numpy())
    assert len(d) > 50 * len(split) / downscale**2 and np.isfinite(hit).all()
    # z is quantized to the unit; t = z / cos grows the error by at most 1 / cos (< 1.1 at this field of view)
    assert np.abs(d.t.numpy() - hit).max() < 0.55 * unit * 1.1 + 1e-5
    # every sample lies in a (downscaled) pixel of its image, one per pixel at most
    w, h = split.size(0)
    assert (d.uv[:, 0] >= 0).all() and (d.uv[:, 0] < w).all() and (d.uv[:, 1] >= 0).all() and (d.uv[:, 1] < h).all()
    cells = d.image * w * h + d.uv[:, 1].long() * w + d.uv[:, 0].long()
    assert len(torch.unique(cells)) == len(d)


def test_thinning_keeps_the_sample_nearest_each_block_centre():
    """One sample per block, the one nearest the centre that has a depth; blocks without depth give none."""
    z = np.zeros((6, 9))
    z[0, 0], z[1, 1] = 5.0, 7.0  # block (0, 0): (1, 1) is its centre
    z[0, 3] = 2.0  # block (0, 1): a corner sample is the only one
    z[4, 7], z[5, 8] = 3.0, 4.0  # block (1, 2): (4, 7) is the centre
    rows, cols = thin_depth(z, 3)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 3), (1, 1), (4, 7)]
    rows, cols = thin_depth(z, 1)
    assert len(rows) == int((z > 0).sum())


def test_depth_map_values_scale_by_the_unit(tmp_path):
    """16-bit maps read as stored value x unit (0 stays 0); float maps as stored x unit."""
    raw = np.array([[0, 1, 65535], [1000, 2, 3]], dtype=np.uint16)
    write_png(tmp_path / "d.png", raw[..., None].astype(np.float32) / 65535.0, bits=16)
    z = read_depth_map(tmp_path / "d.png", DEFAULT_UNIT, 3, 2)
    np.testing.assert_allclose(z, raw * DEFAULT_UNIT, rtol=1e-6)
    write_image(tmp_path / "d.exr", np.array([[0.0, 1.5, 2.25]], np.float32)[..., None])
    np.testing.assert_allclose(read_depth_map(tmp_path / "d.exr", 2.0, 3, 1), [[0.0, 3.0, 4.5]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int16, np.int32, np.float32])
def test_tiff_depth_maps_read_their_stored_values(tmp_path, dtype):
    """TIFF depth maps of any sample type read as stored x unit: 32-bit integers exactly (millimetres up to
    2^31 and beyond), signed ones without an offset; a negative value is refused."""
    import tifffile  # noqa: PLC0415

    top = min(np.iinfo(dtype).max, 4_000_000_007) if np.issubdtype(dtype, np.integer) else 1e6
    raw = np.array([[0, 1, 7], [250, 100, top]], dtype=dtype)
    tifffile.imwrite(tmp_path / "d.tif", raw)
    z = read_depth_map(tmp_path / "d.tif", 0.001, 3, 2)
    np.testing.assert_allclose(z, raw.astype(np.float64) * 0.001, rtol=1e-7)
    if np.issubdtype(dtype, np.signedinteger):
        tifffile.imwrite(tmp_path / "n.tif", np.array([[0, -5, 3]], dtype=dtype))
        with pytest.raises(UserError, match="negative"):
            read_depth_map(tmp_path / "n.tif", 0.001, 3, 1)


def _with_depth_edit(src, dst, edit):
    """A copy of the depth scene's train split with ``edit(meta)`` applied to transforms_train.json."""
    import shutil  # noqa: PLC0415

    shutil.copytree(src, dst)
    meta = json.loads((dst / "transforms_train.json").read_text())
    edit(meta)
    (dst / "transforms_train.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("defect, message", [
    ("corrupt", "cannot decode"), ("size", "but its camera says"), ("unit", "depth_unit_scale_factor"),
    ("none", "no depth maps"), ("zeros", "hold no depth"),
])
def test_bad_depth_maps_are_one_line_exit_2(depth_scene, tmp_path, capsys, defect, message):
    def edit(meta):
        frames = meta["frames"]
        if defect == "corrupt":
            (tmp_path / "d" / frames[0]["depth_file_path"]).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        elif defect == "size":
            write_png(tmp_path / "d" / frames[1]["depth_file_path"], np.ones((5, 7, 1), np.float32), bits=16)
        elif defect == "unit":
            meta["depth_unit_scale_factor"] = -1
        elif defect == "none":
            for f in frames:
                f.pop("depth_file_path")
        else:
            for f in frames:
                write_png(tmp_path / "d" / f["depth_file_path"], np.zeros((36, 36, 1), np.float32), bits=16)

    data = _with_depth_edit(depth_scene, tmp_path / "d", edit)
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(data), "--out", str(run), "--steps", "1", "--quiet",
                     "--depth-loss", "0.1"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def _train_depth_error(run, data) -> float:
    """Median relative error of a run's rendered depth at the depth samples of its training images."""
    from rwf_render.nerf import load_scene_model  # noqa: PLC0415

    model = load_scene_model(run)
    split = load_split(data, "train", depth=True)
    rays_o, rays_d = split.rays(split.depth.image, split.depth.uv, "cpu")
    with torch.no_grad():
        out = model.render_rays(rays_o, rays_d)
    return float(((out["depth"] - split.depth.t).abs() / split.depth.t).median())


def test_depth_loss_pulls_rendered_depth_to_the_depth_maps(depth_scene, tmp_path):
    """Two short fits that differ only in --depth-loss: with it, the rendered depth at the depth samples is much
    closer to the maps (the term reaches the field, with the right rays and sign); config.json records it, and
    resuming with another weight is refused."""
    common = ["--steps", "60", "--quiet", "--grid-resolution", "32", "--steps-per-diagonal", "128", "--width", "64",
              "--features", "64", "--target-samples", "4096", "--eval-images", "1", "--eval-every", "60"]
    errors = {}
    for weight in ("0", "1"):
        run = tmp_path / f"w{weight}"
        assert cli.main(["fit", "nerf", str(depth_scene), "--out", str(run), "--depth-loss", weight, *common]) == 0
        errors[weight] = _train_depth_error(run, depth_scene)
    assert errors["1"] < 0.35 * errors["0"], errors  # measured: 0.08 against 0.57
    saved = json.loads((tmp_path / "w1" / "config.json").read_text())
    assert saved["train"]["loss_weights"] == {"depth": 1.0} and saved["depth_rays"] == 256
    assert cli.main(["fit", "nerf", str(depth_scene), "--out", str(tmp_path / "w1"), "--resume", "--steps", "41",
                     "--quiet", "--depth-loss", "0.5"]) == 2


def test_depth_rays_never_outnumber_the_colour_rays(depth_scene, tmp_path):
    """With --target-samples far below one ray's samples the colour rays sit at their floor of 64; the depth rays
    follow them down instead of adding a fixed 256 (320 rays a step, five times the target's share)."""
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(depth_scene), "--out", str(run), "--steps", "8", "--quiet", "--depth-loss",
                     "1", "--target-samples", "64", "--eval-every", "8", "--eval-images", "1", "--grid-resolution",
                     "16"]) == 0
    last = (run / "history.csv").read_text().splitlines()
    row = dict(zip(last[0].split(","), last[-1].split(",")))
    assert int(row["rays"]) == 2 * 64, row


def _preset_against(tmp_path, steps: int, variant: list[str]) -> tuple[dict, dict]:
    """Test metrics of the bartoszek preset and of the preset with the ``variant`` options, ``steps`` steps each."""
    metrics = []
    for name, extra in (("preset", []), ("variant", variant)):
        run = tmp_path / name
        assert cli.main(["fit", "nerf", "bartoszek", "--out", str(run), "--steps", str(steps), "--eval-every",
                         str(steps), "--eval-images", "3", "--quiet", *extra]) == 0
        metrics.append(json.loads((run / "metrics.json").read_text()))
    return metrics[0], metrics[1]


@pytest.fixture
def shared_capture(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RWF_DATA", str(data_dir))
    monkeypatch.setenv("RWF_SCENE_CACHE", str(tmp_path / "scenes"))


@pytest.mark.slow
def test_the_real_capture_preset_without_depth_neither_empties_nor_trails_the_fit_with_depth(shared_capture,
                                                                                             tmp_path):
    """The shared 23-photo capture, the preset's 2000 steps (about 16 minutes), without COLMAP's depth (the preset)
    and with it (--depth-loss 0.1). Before the occlusion loss, depth raised the held-out PSNR: 17.82 against
    16.90 dB. With the occlusion loss applied in full from step 0, the fit without depth emptied to the background
    alone (15.18 against 18.21 dB). With the loss ramped in over --occlusion-warmup 300 steps (the default) the two
    end level: 18.37 dB each on seed 0, SSIM 0.530 without depth and 0.512 with; seed 1 (one thread) 17.90 against
    17.83 dB, SSIM 0.531 against 0.479 (2026-11-29). So the preset dropped the depth loss. Asserted: no collapse,
    and not behind the fit with depth."""
    preset, with_depth = _preset_against(tmp_path, 2000, ["--depth-loss", "0.1"])
    assert preset["psnr"] > 17.0 and preset["psnr"] > with_depth["psnr"] - 0.3, (preset, with_depth)


@pytest.mark.slow
def test_far_bounds_off_improves_the_held_out_views_of_the_real_capture(shared_capture, tmp_path):
    """The same capture at 600 steps: with the per-photo far bounds the untextured background behind the statue is
    left to the direction-only background model, and the held-out views score lower (measured: 17.28 against
    16.41 dB, SSIM 0.396 against 0.364, before the occlusion loss). With the occlusion loss in the preset (before
    its warm-up): 17.76 against 16.93 dB, but SSIM 0.406 against 0.425, as SSIM rates a flat render above a
    blotchy one; SSIM is not asserted. The preset without the depth loss, its occlusion loss warmed up: 18.03 dB
    against 15.29 dB, SSIM 0.468 against 0.425 (2026-11-29). With the preset's --sigma 0.5: 18.52 against 15.28 dB,
    SSIM (11 x 11 Gaussian window) 0.668 against 0.645 (2026-11-30)."""
    preset, bounded = _preset_against(tmp_path, 600, ["--far-bounds"])
    assert preset["psnr"] > bounded["psnr"] + 0.4, (preset, bounded)


@pytest.mark.slow
def test_smooth_fourier_features_improve_the_held_out_views_of_the_real_capture(shared_capture, tmp_path):
    """The same capture at 600 steps, the preset's --sigma 0.5 against the default 8 (measured, seed 0, SSIM with
    the 7 x 7 window of then: 18.52 against 18.03 dB, SSIM 0.636 against 0.468; at 2000 steps 18.27 / 18.36 against
    18.46 / 17.77 dB on seeds 0 / 1, SSIM 0.666 / 0.661 against 0.519 / 0.526, and the held-out statue in place and
    shaped where sigma 8 leaves a faint blotch; BENCHMARKS.md, "Fourier frequencies for the real capture"). This
    test, with the 11 x 11 Gaussian window: 18.52 against 18.03 dB, SSIM 0.668 against 0.505 (2026-11-30)."""
    preset, sharp = _preset_against(tmp_path, 600, ["--sigma", "8"])
    assert preset["psnr"] > sharp["psnr"] + 0.2 and preset["ssim"] > sharp["ssim"] + 0.05, (preset, sharp)


@pytest.mark.slow
def test_occlusion_loss_improves_the_held_out_views_of_the_real_capture(shared_capture, tmp_path):
    """The same capture at 600 steps: without the occlusion loss the field may paint each photo on density just
    past its camera's near bound (measured: 17.76 against 17.28 dB, SSIM 0.406 against 0.396 on seed 0; seed 1
    17.48 against 17.21, 0.415 against 0.404; BENCHMARKS.md, "Regularizers for unseen views"). With its 300-step
    warm-up the preset scores 17.70 dB, SSIM 0.448 on seed 0. Without the depth loss (the preset since
    2026-11-29): 18.03 against 16.80 dB, SSIM 0.468 against 0.392. With the preset's --sigma 0.5 (2026-11-30):
    18.52 against 16.91 dB, SSIM (11 x 11 Gaussian window) 0.668 against 0.666: level, so only PSNR is asserted,
    as in the far-bounds test above (on this capture SSIM has rated a flat render above one holding the statue)."""
    preset, without = _preset_against(tmp_path, 600, ["--occlusion-loss", "0"])
    assert preset["psnr"] > without["psnr"] + 0.2, (preset, without)


def test_the_depth_loss_is_least_at_the_target_whatever_the_opacity():
    """One ray, all its weight o in one sample at distance s (rendered depth o s): measured against the target
    alone, |o s - t| / t, a ray of opacity 0.6 was best served by a surface at t / 0.6, behind the true one (a
    review of the losses). The loss is now o |s - t| / t + (1 - o): least at s = t, the relative error itself for an
    opaque ray, and an empty ray scores the most, not the least."""
    from rwf_render.nerf_depth import depth_loss

    t = torch.tensor([2.025])
    s = torch.linspace(1.0, 4.0, 3001)
    for o in (0.6, 0.9, 1.0):
        opacity = torch.full_like(s, o)
        losses = torch.stack([depth_loss(o * si[None], t, opacity[:1]) for si in s])
        assert float(s[losses.argmin()]) == pytest.approx(2.025, abs=1e-3)
    assert float(depth_loss(torch.tensor([2.2]), t, torch.tensor([1.0]))) == pytest.approx(0.175 / 2.025)
    empty = float(depth_loss(torch.tensor([0.0]), t, torch.tensor([0.0])))
    assert empty == pytest.approx(1.0) and empty > float(depth_loss(torch.tensor([0.6 * 3.0]), t, torch.tensor([0.6])))
