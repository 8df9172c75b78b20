"""Options ``rwf fit`` accepted and silently ignored are refused: one line, exit 2, before the run folder exists.

An option counts as given when it was typed (even at its default value), never when a scene preset set it; a
resumed run's saved config decides, so a run fitted before these checks still resumes with its own command. Every
fit option's help states its default.
"""

import argparse
import dataclasses
import json
import re
import time

import pytest

from rwf_render import cli, image, nerf_options, sdf_options
from rwf_render.nerf_config import NeRFConfig, check_config
from rwf_render.rundir import CONFIG

IGNORED = [  # (pipeline, options, the option the error must name)
    ("image", ["--encoding", "fourier", "--n-freqs", "5"], "--n-freqs"),
    ("image", ["--n-freqs", "10"], "--n-freqs"),  # typed at its default value: still ignored
    ("image", ["--encoding", "pe", "--features", "64"], "--features"),
    ("image", ["--encoding", "hashgrid", "--sigma", "3"], "--sigma"),
    ("image", ["--activation", "sine", "--sigma", "3"], "--sigma"),  # raw coordinates: no Fourier features
    ("image", ["--encoding", "pe", "--trainable-features"], "--trainable-features"),
    ("image", ["--lr-final", "0.5"], "--lr-final"),  # the image default schedule is const
    ("image", ["--schedule", "exp", "--decay-every", "10"], "--decay-every"),
    ("image", ["--schedule", "cos", "--decay-every", "10"], "--decay-every"),
    ("image", ["--param", "plain", "--rwf-mu", "2"], "--rwf-mu"),
    ("image", ["--param", "wn", "--rwf-sigma", "0.2"], "--rwf-sigma"),
    ("image", ["--param", "plain", "--scale-lr", "1e-3"], "--scale-lr"),
    ("image", ["--param", "wn", "--rwf-log-scale"], "--rwf-log-scale"),
    ("image", ["--depth", "1", "--width", "8"], "--width"),
    ("sdf", ["--encoding", "pe", "--features", "16"], "--features"),
    ("sdf", ["--encoding", "hashgrid", "--n-freqs", "4"], "--n-freqs"),
    ("sdf", ["--decay-every", "5"], "--decay-every"),  # the sdf default schedule is exp
    ("sdf", ["--schedule", "const", "--lr-final", "0.5"], "--lr-final"),
    ("sdf", ["--param", "plain", "--scale-lr", "1e-3"], "--scale-lr"),
    ("sdf", ["--target", "occupancy", "--eikonal", "0"], "--eikonal"),
    ("sdf", ["--mix", "1", "0", "0", "1", "--near-sigmas", "0.01", "0.1"], "--near-sigmas"),
    ("nerf", ["--encoding", "pe", "--features", "64"], "--features"),
    ("nerf", ["--encoding", "pe", "--sigma", "4"], "--sigma"),
    ("nerf", ["--occlusion-margin", "0.1"], "--occlusion-margin"),
    ("nerf", ["--occlusion-loss", "0", "--occlusion-warmup", "5"], "--occlusion-warmup"),
    ("nerf", ["--depth-rays", "8"], "--depth-rays"),
    ("nerf", ["--sampler", "dense", "--grid-resolution", "32"], "--grid-resolution"),
    ("nerf", ["--far", "3", "--no-far-bounds"], "--no-far-bounds"),
]


def _refused(capsys, argv: list[str], option: str) -> str:
    capsys.readouterr()
    start = time.perf_counter()
    assert cli.main(argv) == 2
    assert time.perf_counter() - start < 5  # refused at once (measured well under a second), not after a fit
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rwf: error:") and option in err[0], err
    return err[0]


@pytest.mark.parametrize("kind, options, option", IGNORED, ids=[" ".join([k, *o]) for k, o, _ in IGNORED])
def test_an_ignored_option_is_refused_before_the_run_folder(tmp_path, capsys, kind, options, option):
    source = []
    if kind == "nerf":  # an existing folder: the options are refused before its data is read
        (tmp_path / "scene").mkdir()
        source = [str(tmp_path / "scene")]
    out = tmp_path / "run"
    _refused(capsys, ["fit", kind, *source, "--out", str(out), "--steps", "1", "--quiet", *options], option)
    assert not out.exists()


@pytest.mark.parametrize("kind, options", [
    ("image", ["--encoding", "pe", "--n-freqs", "4"]), ("image", ["--schedule", "step", "--decay-every", "3",
                                                                  "--lr-final", "0.5"]),
    ("image", ["--schedule", "exp", "--lr-final", "0.5"]), ("image", ["--scale-lr", "1e-3", "--rwf-mu", "0.5"]),
    ("image", ["--encoding", "fourier", "--trainable-features", "--sigma", "4", "--features", "8"]),
    ("sdf", ["--lr-final", "0.5"]), ("sdf", ["--mix", "1", "1", "0", "1", "--near-sigmas", "0.01", "0.1"]),
])
def test_the_same_options_where_they_apply_build_a_config(kind, options):
    """The refusals above are about the company of the options, not the options themselves."""
    parser = cli.build_parser()
    argv = ["fit", kind, *options]
    args = parser.parse_args(argv)
    args.given_options = cli.given_options(parser, argv)
    cfg = (image._config_from_args if kind == "image" else sdf_options.config_from_args)(args)
    assert cfg.train.steps > 0


def _preset(name: str, data):
    return dataclasses.replace(nerf_options.scene_presets()[name], prepare=lambda quiet=False: data)


def test_a_preset_setting_is_never_refused_only_what_was_typed(tmp_path, monkeypatch, capsys):
    """lego-tancik sets the dense sampler, --far and a fixed ray count; bartoszek the occlusion loss and the grid
    resolution. Those settings are the preset's own: its fit is not refused; what the user types over them is."""
    data = tmp_path / "scene"
    data.mkdir()
    presets = {name: _preset(name, data) for name in ("lego-tancik", "bartoszek")}
    monkeypatch.setattr(nerf_options, "scene_presets", lambda: presets)
    parser = cli.build_parser()

    def config(*argv):
        args = parser.parse_args(["fit", "nerf", *argv])
        args.given_options = cli.given_options(parser, ["fit", "nerf", *argv])
        return nerf_options.config_from_args(args)

    tancik = config("lego-tancik")
    assert tancik.render.sampler == "dense" and tancik.render.far == 6.0 and tancik.min_rays == tancik.max_rays
    bartoszek = config("bartoszek", "--occlusion-margin", "0.1", "--occlusion-warmup", "10")  # its occlusion loss
    assert bartoszek.occlusion_margin == 0.1 and bartoszek.render.grid_resolution == 64
    out = tmp_path / "run"
    for argv, option in [(["lego-tancik", "--grid-resolution", "32"], "--grid-resolution"),
                         (["lego-tancik", "--target-samples", "4096"], "--target-samples"),
                         (["lego-tancik", "--far-bounds"], "--far-bounds"),
                         (["bartoszek", "--occlusion-loss", "0", "--occlusion-margin", "0.1"], "--occlusion-margin")]:
        err = _refused(capsys, ["fit", "nerf", *argv, "--out", str(out), "--quiet"], option)
        assert "preset" in err or "occlusion-loss" in err
        assert not out.exists()


def test_an_image_run_fitted_with_an_ignored_option_still_resumes_and_renders(tmp_path, capsys):
    """A run saved before these checks (here: --features 8 typed beside --encoding pe, written into config.json as
    the old fit did) resumes with its own command, and renders; another value is still a clash."""
    run = tmp_path / "run"
    fit = ["fit", "image", "--size", "16", "--width", "16", "--encoding", "pe", "--n-freqs", "4", "--quiet",
           "--out", str(run)]
    assert cli.main(fit + ["--steps", "1"]) == 0
    saved = json.loads((run / CONFIG).read_text())
    saved["encoding"]["m"], saved["train"]["lr_final"] = 8, 0.5  # the old fit's --features 8 --lr-final 0.5
    (run / CONFIG).write_text(json.dumps(saved))
    old_command = fit + ["--features", "8", "--lr-final", "0.5"]
    assert cli.main(old_command + ["--steps", "2", "--resume"]) == 0
    assert json.loads((run / CONFIG).read_text())["train"]["steps"] == 2
    assert cli.main(["render", str(run), "--out", str(tmp_path / "r.png")]) == 0
    err = _refused(capsys, fit + ["--features", "9", "--steps", "3", "--resume"], "--features")
    assert "run: 8" in err


def test_a_nerf_run_saved_with_ignored_settings_still_loads_and_resumes(tmp_path):
    """config.json of a run fitted before these checks, with settings it never used (Fourier features beside the
    pe encoding, an occlusion margin without the loss, a grid resolution beside the dense sampler), loads and
    resumes with its own command."""
    data, run = tmp_path / "scene", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    cfg = NeRFConfig(data=str(data))
    cfg.field.pos.kind, cfg.field.pos.m, cfg.occlusion_margin = "pe", 64, 0.3
    cfg.render.sampler, cfg.render.grid_resolution = "dense", 32
    (run / CONFIG).write_text(json.dumps(cfg.to_dict()))
    check_config(NeRFConfig.from_dict(json.loads((run / CONFIG).read_text())))
    argv = ["fit", "nerf", str(data), "--out", str(run), "--encoding", "pe", "--features", "64",
            "--occlusion-margin", "0.3", "--sampler", "dense", "--grid-resolution", "32", "--resume"]
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    args.given_options = cli.given_options(parser, argv)
    resumed = nerf_options.resume_config_from_args(args)
    assert (resumed.field.pos.m, resumed.occlusion_margin, resumed.render.grid_resolution) == (64, 0.3, 32)


def _fit_parser(kind: str) -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser of ``rwf fit KIND`` and the dests of the options every fit shares (cli.add_run_arguments)."""
    add = {"image": image.add_fit_arguments, "sdf": sdf_options.add_fit_arguments,
           "nerf": nerf_options.add_fit_arguments}[kind]
    parser, shared = argparse.ArgumentParser(add_help=False), argparse.ArgumentParser(add_help=False)
    add(parser)
    cli.add_run_arguments(shared, kind)
    return parser, {a.dest for a in shared._actions}


@pytest.mark.parametrize("kind", ["image", "sdf", "nerf"])
def test_every_fit_option_states_its_default(kind):
    parser, shared = _fit_parser(kind)
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.dest not in shared and "default" not in (a.help or "")]
    assert not missing, f"rwf fit {kind}: no default in the help of {missing}"


def test_vote_dirs_help_says_what_0_means():
    """0, the default, is the automatic count (3 for a watertight mesh, 15 for an open one), not 'an odd number'."""
    parser, _ = _fit_parser("sdf")
    vote = next(a for a in parser._actions if a.dest == "vote_dirs")
    assert vote.default == 0 and re.search(r"\b0\b", vote.help) and "15" in vote.help and "watertight" in vote.help
