"""A fit of opaque photos (a real capture) without a preset takes the real capture's settings where no option was
typed: the defaults made for transparent synthetic scenes (white background, one 128^3 grid) gave 6.9 dB on the
held-out view of the bartoszek capture converted by ``rwf data colmap --bounds`` after 135 steps, where its preset's
settings give 18 dB after 600 (BENCHMARKS.md)."""

import argparse
import json

import pytest

from rwf_render import cli
from rwf_render.nerf_options import (REAL_CAPTURE, REAL_CAPTURE_BOUNDS, REAL_CAPTURE_FOURIER, config_from_args,
                                     profile_text, real_capture_config)
from test_datasets_nerfstudio_box import _nerfstudio

TINY = ["--steps", "2", "--eval-every", "2", "--eval-images", "1", "--width", "16", "--features", "8",
        "--target-samples", "512", "--quiet"]


def _args(*argv):
    return cli.build_parser().parse_args(["fit", "nerf", *argv])


def _cfg(tmp_path, *argv, opaque=True, bounds=False):
    args = _args(str(tmp_path), *argv)
    return real_capture_config(args, config_from_args(args), opaque, bounds)


def test_opaque_photos_take_the_real_capture_settings(tmp_path):
    cfg, taken = _cfg(tmp_path)
    assert taken == {**REAL_CAPTURE, **REAL_CAPTURE_FOURIER}
    assert (cfg.background, cfg.render.grid_levels, cfg.render.grid_resolution, cfg.render.cone_angle) == \
        ("learned", 3, 64, 1 / 64)
    assert cfg.render.far_bounds and "occlusion" not in cfg.train.loss_weights  # no per-photo bounds: not these


def test_with_per_photo_bounds_also_no_far_bounds_and_the_occlusion_loss(tmp_path):
    cfg, taken = _cfg(tmp_path, bounds=True)
    assert taken == {**REAL_CAPTURE, **REAL_CAPTURE_BOUNDS, **REAL_CAPTURE_FOURIER}
    assert not cfg.render.far_bounds and cfg.train.loss_weights["occlusion"] == 1.0


def test_a_typed_option_wins_over_the_profile(tmp_path):
    cfg, taken = _cfg(tmp_path, "--background", "white", "--grid-levels", "1", "--far-bounds", bounds=True)
    assert (cfg.background, cfg.render.grid_levels, cfg.render.far_bounds) == ("white", 1, True)
    assert set(taken) == {"grid_resolution", "cone_angle", "occlusion_loss", "sigma"}
    assert cfg.render.grid_resolution == 64


@pytest.mark.parametrize("case", ["transparent", "preset", "resume"])
def test_transparent_photos_presets_and_resumed_runs_keep_their_settings(tmp_path, case):
    args = _args(str(tmp_path))
    cfg = config_from_args(args)
    if case == "preset":
        cfg.scene = "lego"
    if case == "resume":
        args = argparse.Namespace(**{**vars(args), "resume": True})
    same, taken = real_capture_config(args, cfg, opaque=case != "transparent", bounds=True)
    assert same is cfg and taken == {}
    assert cfg.background == "white" and cfg.render.grid_levels == 1


def test_the_fit_of_an_opaque_dataset_says_and_saves_the_settings_it_took(tmp_path, capsys):
    root = _nerfstudio(tmp_path / "ns")  # random opaque PNGs around a ring
    assert cli.main(["fit", "nerf", str(root), "--out", str(tmp_path / "run"), "--background", "black", *TINY]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "opaque photos" in x)
    assert "--grid-levels 3" in line and "--background" not in line  # typed: not the profile's
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["background"] == "black" and saved["render"]["grid_levels"] == 3
    assert saved["render"]["grid_resolution"] == 64 and saved["render"]["cone_angle"] == 1 / 64
    # the run resumes with those settings, as saved, without the profile applied again
    assert cli.main(["fit", "nerf", str(root), "--out", str(tmp_path / "run"), "--background", "black", *TINY[:-1],
                     "--steps", "3", "--resume"]) == 0
    assert "opaque photos" not in capsys.readouterr().err


def test_a_fourier_field_of_opaque_photos_takes_the_smoother_frequencies(tmp_path):
    """sigma 0.5 (the bartoszek preset's) for a Fourier field over the scene box; not for other encodings, not where
    aabb_scale's cascades already spread the field over their reach, and never over a typed --sigma."""
    cfg, taken = _cfg(tmp_path)
    assert cfg.field.pos.sigma == taken["sigma"] == REAL_CAPTURE_FOURIER["sigma"] == 0.5
    for encoding in ("pe", "hashgrid"):
        cfg, taken = _cfg(tmp_path, "--encoding", encoding)
        assert "sigma" not in taken
    cfg, taken = _cfg(tmp_path, "--sigma", "3")
    assert cfg.field.pos.sigma == 3.0 and "sigma" not in taken
    args = _args(str(tmp_path))
    cfg, taken = real_capture_config(args, config_from_args(args), True, False, cascades=5)
    assert "sigma" not in taken and cfg.field.pos.sigma == 8.0 and cfg.field.pos_extent == 16.0


def test_the_printed_settings_are_options_the_cli_accepts_and_mean_the_same(tmp_path):
    """The line names each setting as the option that sets it: typed back, they parse and give the same config
    (--sigma 0.5 was printed as '--sigma 1/2', which only --cone-angle reads)."""
    cfg, taken = _cfg(tmp_path)
    assert {"sigma", "cone_angle"} <= set(taken)
    typed = profile_text(taken).split()
    assert "0.5" in typed and "1/64" in typed
    again, more = _cfg(tmp_path, *typed)
    assert more == {} and again == cfg
