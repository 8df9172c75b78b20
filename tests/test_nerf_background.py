"""The background a NeRF run is rendered on outside training: the one its test targets are composited on."""

import json

import pytest
import torch

from rwf_render import cli
from rwf_render.nerf_field import NeRFFieldConfig
from rwf_render.nerf_render import NeRFModel, RenderConfig


@pytest.mark.parametrize("background,expect", [("white", 1.0), ("random", 1.0), ("black", 0.0)])
def test_rays_that_miss_the_box_show_the_evaluation_background(background, expect):
    """A ray that never enters the box has opacity 0, so its colour is the background: white for "random" runs
    (their targets are scored on white; they used to render black), black only for "black"."""
    model = NeRFModel([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], NeRFFieldConfig(), RenderConfig(grid_resolution=16),
                      background, seed=0)
    rays_o = torch.tensor([[5.0, 5.0, 5.0], [-5.0, 4.0, 0.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        out = model.render_rays(rays_o, rays_d)
    assert torch.equal(out["opacity"], torch.zeros(2))
    torch.testing.assert_close(out["rgb"], torch.full((2, 3), expect))


def test_random_background_fit_is_scored_on_its_targets_background(data_dir, tmp_path):
    """lego_tiny (RGBA) fitted on random backgrounds: its test PSNR is close to a white-background fit's, not
    ruined by a black rendered background (1.7 against 10.5 dB before)."""
    tiny = data_dir / "nerf" / "lego_tiny"
    common = ["--steps", "2", "--quiet", "--target-samples", "1024", "--eval-images", "1", "--grid-resolution", "16",
              "--steps-per-diagonal", "128"]
    psnr = {}
    for bg in ("white", "random"):
        run = tmp_path / bg
        assert cli.main(["fit", "nerf", str(tiny), "--out", str(run), "--background", bg, *common]) == 0
        psnr[bg] = json.loads((run / "metrics.json").read_text())["psnr"]
    assert abs(psnr["random"] - psnr["white"]) < 3, psnr


@pytest.mark.parametrize("channels,typed,expect", [(4, None, "white"), (3, None, "learned"), (4, "random", "random"),
                                                   (3, "black", "black")])
def test_the_background_used_is_recorded_and_shown(tmp_path, capsys, channels, typed, expect):
    """config.json and the start-up line name the background the fit used (white unless typed or a preset's;
    learned for opaque photos, the real-capture settings)."""
    from conftest import random_views_scene  # noqa: PLC0415

    data = random_views_scene(tmp_path / "data", {"train": 3, "test": 1}, channels=channels)
    run = tmp_path / "run"
    argv = ["fit", "nerf", str(data), "--out", str(run), "--steps", "2", "--quiet", "--target-samples", "512",
            "--eval-images", "1", "--grid-resolution", "16", "--steps-per-diagonal", "64"]
    assert cli.main(argv + (["--background", typed] if typed else [])) == 0
    assert json.loads((run / "config.json").read_text())["background"] == expect
    assert f"background {expect}" in capsys.readouterr().err


def test_a_preset_background_is_kept_unless_typed():
    """The built-in scene's preset trains on random colours (BENCHMARKS.md); a typed --background wins."""
    import argparse  # noqa: PLC0415

    from rwf_render.nerf_options import _config, add_fit_arguments  # noqa: PLC0415
    from scenes import presets  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    add_fit_arguments(parser)
    default = {k: v for k, (v, _why) in presets()["default"].settings.items()}
    assert _config(parser.parse_args(["data"]), "data", "default", default).background == "random"
    assert _config(parser.parse_args(["data"]), "data", None, {}).background == "white"
    assert _config(parser.parse_args(["data", "--background", "black"]), "data", "default",
                   default).background == "black"
