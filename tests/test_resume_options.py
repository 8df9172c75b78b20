"""--resume and typed options: what the user typed is compared with the run's config.json, nothing else.

argparse fills every option left out with its default, so "typed" used to mean "differs from the default": an
option typed at its default value against a run saved with another value was silently ignored (image, SDF), and a
NeRF resume refused every option, even the fit's own command with --resume added. ``cli.given_options`` records
what was typed; ``resume.option_clashes`` compares those options, through the config entries each one sets.
"""

import argparse
import json

import pytest

from rwf_render import cli, image, nerf_options, sdf_options
from rwf_render.field_options import ALIASES as MODEL_ALIASES
from rwf_render.resume import RUN_OPTIONS, _leaves, option_leaves


def _fails(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwf: error:"), err
    return err[0]


def test_given_options_sees_an_option_typed_at_its_default_value():
    parser = cli.build_parser()
    argv = ["fit", "image", "--width", "256", "--features", "256", "--quiet"]  # 256: both defaults
    args = parser.parse_args(argv)
    assert args.width == 256 and args.features == 256
    typed = cli.given_options(parser, argv)
    assert {"width", "features", "quiet"} <= typed and not typed & {"sigma", "depth", "lr", "path", "steps"}
    assert parser.parse_args(argv).width == 256  # the defaults are put back after the second parse
    assert cli.given_options(parser, ["fit", "nerf", "lego"]) >= {"scene"}
    assert "scene" not in cli.given_options(parser, ["fit", "nerf"])


def test_image_resume_refuses_an_option_typed_at_its_default_value(tmp_path, capsys):
    """The run was fitted at width 32; '--width 256' (the default) on resume used to be ignored without a word."""
    run = tmp_path / "run"
    fit = ["fit", "image", "--size", "16", "--features", "8", "--width", "32", "--quiet", "--out", str(run)]
    assert cli.main(fit + ["--steps", "2"]) == 0
    config = (run / "config.json").read_text()
    err = _fails(capsys, ["fit", "image", "--out", str(run), "--resume", "--steps", "3", "--width", "256"])
    assert "--width (run: 32, given: 256)" in err
    err = _fails(capsys, ["fit", "image", "--out", str(run), "--resume", "--steps", "3", "--schedule", "const",
                          "--features", "256"])  # --schedule const is the run's own value; --features is not
    assert "--features (run: 8, given: 256)" in err and "--schedule" not in err
    assert (run / "config.json").read_text() == config
    # the fit's own command with --resume added continues the run; --deterministic may be turned on
    assert cli.main(fit + ["--steps", "3", "--resume", "--deterministic"]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert train["steps"] == 3 and train["deterministic"] is True


def test_sdf_resume_compares_typed_options_with_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    fit = ["fit", "sdf", "--features", "16", "--width", "16", "--pool", "4096", "--batch", "512", "--eval-points",
           "2048", "--metric-points", "2000", "--mesh-res", "24", "--preview-res", "16", "--quiet", "--out", str(run)]
    assert cli.main(fit + ["--steps", "2"]) == 0
    err = _fails(capsys, ["fit", "sdf", "--out", str(run), "--resume", "--steps", "3", "--features", "128"])
    assert "--features (run: 16, given: 128)" in err  # 128 is the default: it used to go unnoticed
    err = _fails(capsys, ["fit", "sdf", "--out", str(run), "--resume", "--steps", "3", "--eikonal", "0.1"])
    assert "--eikonal" in err
    assert cli.main(fit + ["--steps", "3", "--resume"]) == 0


def test_sdf_resume_reads_clamp_against_the_runs_saved_loss(tmp_path, capsys):
    """'--clamp' without '--loss clamped' is refused for a new fit, but on --resume the run's saved loss decides:
    the run's own clamp continues it, another clamp is a clash."""
    run = tmp_path / "run"
    fit = ["fit", "sdf", "--features", "16", "--width", "16", "--pool", "4096", "--batch", "512", "--eval-points",
           "2048", "--metric-points", "2000", "--mesh-res", "24", "--preview-res", "16", "--quiet", "--out", str(run)]
    assert "applies to --loss clamped" in _fails(capsys, fit + ["--steps", "2", "--clamp", "0.05"])
    assert cli.main(fit + ["--steps", "2", "--loss", "clamped", "--clamp", "0.05"]) == 0
    err = _fails(capsys, ["fit", "sdf", "--out", str(run), "--resume", "--steps", "3", "--clamp", "0.2"])
    assert "--clamp (run: 0.05, given: 0.2)" in err
    assert cli.main(["fit", "sdf", "--out", str(run), "--resume", "--steps", "3", "--clamp", "0.05", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 3


def test_render_refuses_another_kinds_option_typed_at_its_default(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--size", "16", "--features", "8", "--width", "16", "--steps", "1", "--quiet",
                     "--out", str(run)]) == 0
    assert "--fps applies to nerf and sdf runs" in _fails(capsys, ["render", str(run), "--fps", "24"])  # 24: default


# -- every fit option reaches the config entries the --resume check compares -------------------------------------
def _alternatives(action: argparse.Action) -> list[list[str]]:
    """Valid values other than the default, as command-line words (every other choice; a flag; a number)."""
    name = action.option_strings[0]
    if action.nargs == 0:  # a flag, or both spellings of --x / --no-x
        return [[spelling] for spelling in action.option_strings]
    if action.choices:
        return [[name, str(c)] for c in action.choices if c != action.default and c is not None]
    if action.dest == "hash_max_res":  # at least the coarsest level's 16
        return [[name, "64"]]
    value = "7" if action.default != 7 else "9"
    try:
        action.type("0.37")
        value = "0.37"
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        pass
    n = action.nargs if isinstance(action.nargs, int) else 1
    return [[name, *[value] * n]]


COMPANY = {k: ["--encoding", "hashgrid"] for k in ("hash_levels", "hash_log2_size", "hash_max_res")}
COMPANY["omega0"] = ["--activation", "sine"]
COMPANY["camera_lr"] = COMPANY["camera_reg"] = ["--optimize-cameras"]
COMPANY["n_freqs"] = ["--encoding", "pe"]  # options a fit refuses where it would ignore them (test_audit3_options)
COMPANY["lr_final"], COMPANY["decay_every"] = ["--schedule", "exp"], ["--schedule", "step"]
COMPANY["occlusion_margin"] = COMPANY["occlusion_warmup"] = ["--occlusion-loss", "1"]
COMPANY["depth_rays"] = ["--depth-loss", "1"]
COMPANY["coarse_to_fine"] = ["--optimize-cameras", "--encoding", "hashgrid"]
BY_OPTION = {"--view-dependence": ["--no-view-dependence"]}  # company of one spelling of a shared dest (it undoes it)
PIPELINES = {  # how each pipeline builds its config from the options, its aliases, options needing company
    "image": (image.add_fit_arguments, image._config_from_args, MODEL_ALIASES, COMPANY),
    "sdf": (sdf_options.add_fit_arguments, sdf_options.config_from_args, sdf_options.ALIASES,
            {"clamp": ["--loss", "clamped"], "pool": ["--batch", "7"], **COMPANY}),  # a batch no larger than the pool
    "nerf": (nerf_options.add_fit_arguments, lambda a: nerf_options._config(a, "data", None, {}), nerf_options.ALIASES,
             COMPANY),
}


@pytest.mark.parametrize("kind", list(PIPELINES))
def test_every_fit_option_maps_to_the_config_entries_it_sets(kind):
    """Set each option to another value: some entry that ``option_leaves`` names for it must change. An option
    added without a config entry of its name (or an alias) fails here instead of escaping the --resume check."""
    add, build, aliases, company = PIPELINES[kind]
    parser = argparse.ArgumentParser(add_help=False)
    add(parser)
    base = _leaves(build(parser.parse_args([])).to_dict())
    checked = 0
    for action in parser._actions:
        if not action.option_strings or action.dest in RUN_OPTIONS | {"device"}:
            continue
        extra = BY_OPTION.get(action.option_strings[0], company.get(action.dest, []))
        before = _leaves(build(parser.parse_args(extra)).to_dict()) if extra else base
        keys = option_leaves(action.dest, before, aliases)
        assert keys, f"{kind}: {action.option_strings[0]} names no config entry"
        changed = []
        for words in _alternatives(action):
            after = _leaves(build(parser.parse_args(extra + words)).to_dict())
            changed += [k for k in option_leaves(action.dest, after, aliases) if after.get(k) != before.get(k)]
        assert changed, f"{kind}: {action.option_strings[0]} changes none of {keys}"
        checked += 1
    assert checked >= 15



@pytest.mark.parametrize("kind", ["image", "nerf"])
def test_max_seconds_may_change_on_resume_and_is_recorded(kind, tmp_path, capsys, tiny_scene):
    """--max-seconds is a budget of the run's training time, like --steps a limit the resume may move: a resume
    with another one continues (no clash), and config.json records the one in force. A budget of 1e-9 s stops after
    the first step, evaluated and saved as a last step; resumed with the same budget, no step is taken."""
    run = tmp_path / "run"
    common = (["fit", "image", "--size", "16", "--features", "8", "--width", "16"] if kind == "image" else
              ["fit", "nerf", str(tiny_scene), "--grid-resolution", "16", "--width", "16", "--features", "16",
               "--eval-images", "1", "--target-samples", "2048"]) + ["--quiet", "--out", str(run), "--steps", "50"]
    assert cli.main(common + ["--max-seconds", "1e-9"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 1 and "--max-seconds 1e-09 reached at step 1 of 50" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["train"]["max_seconds"] == 1e-9
    assert cli.main(common + ["--resume"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 1
    assert "pass a larger --max-seconds" in capsys.readouterr().err
    assert cli.main([*common[:-1], "3", "--resume", "--max-seconds", "1e6"]) == 0  # to --steps 3, within 1e6 s
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3
    assert json.loads((run / "config.json").read_text())["train"]["max_seconds"] == 1e6
    assert "max-seconds" in _fails(capsys, common + ["--max-seconds", "0"])
