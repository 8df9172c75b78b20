"""Findings of a review of the core library and of the command line (2026-12-01): a misspelt option's hint, a hash
grid of one level and --hash-max-res, NeRFField's default configuration."""

import io
import json
import os
import sys

import pytest
import torch

from rwf_render import cli
from rwf_render.nerf_field import NeRFField

from conftest import one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.mark.parametrize("argv, hint", [
    (["fit", "image", "--stepz", "5"], "rwf fit image: unrecognized arguments: --stepz (did you mean --steps?)"),
    (["fit", "nerf", "--downscal", "4"], "rwf fit nerf: unrecognized arguments: --downscal (did you mean "
                                         "--downscale?)"),
    # the nearest spelling of --res in ``rwf fit sdf`` is --resume: the command that has --res is named instead
    (["fit", "sdf", "--res", "32"], "rwf fit sdf: unrecognized arguments: --res (--res is an option of rwf data "
                                    "synth and rwf export mesh)"),
    (["export", "mesh", "run", "--steps=3"], "rwf export mesh: unrecognized arguments: --steps=3 (--steps is an "
                                             "option of rwf fit image, rwf fit nerf and rwf fit sdf)"),
    (["eval", "run", "--bogus"], "rwf eval: unrecognized arguments: --bogus (see --help)"),
    # nearest commands first: a top-level one (rwf render) before the data tools
    (["eval", "run", "--force"], "rwf eval: unrecognized arguments: --force (--force is an option of rwf render, "),
    (["data", "photos", "a", "--video", "v.mp4", "b"], "rwf data photos: unrecognized arguments: b (give "
                                                       "IMAGES_DIR OUT, or --video FILE and OUT only)"),
    # an option of the command typed before it: the parser above did not know it
    (["fit", "--quiet", "image"], "rwf fit image: unrecognized arguments: --quiet (give --quiet after 'rwf fit "
                                  "image')"),
    (["data", "photos", "a", "b", "-q"], "rwf data photos: unrecognized arguments: -q (see --help)"),
    (["fit", "image", "a.png", "b.png"], "rwf fit image: unrecognized arguments: b.png (see --help)"),
])
def test_an_unknown_option_names_its_command_and_the_option_meant(capsys, argv, hint, tmp_path):
    line = one_cli_error(capsys, argv + ["--out", tmp_path / "run"] if argv[0] == "fit" else argv)
    assert line.startswith(f"rwf: error: {hint}") and line.count("rwf:") == 1, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["image", "sdf", "nerf"])
def test_a_typed_hash_max_res_needs_two_levels(capsys, kind, tmp_path):
    line = one_cli_error(capsys, ["fit", kind, "--encoding", "hashgrid", "--hash-levels", "1", "--hash-max-res",
                                  "512", "--out", tmp_path / "run"])
    assert "--hash-max-res 512 needs --hash-levels 2 or more" in line and "16" in line
    assert not (tmp_path / "run").exists()


def test_a_one_level_grid_records_its_one_resolution(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--encoding", "hashgrid", "--hash-levels", "1", "--steps", "2", "--size", "16",
                     "--out", str(run), "--quiet"]) == 0
    enc = json.loads((run / "config.json").read_text())["encoding"]
    assert enc["levels"] == 1 and enc["max_res"] == enc["base_res"] == 16  # 512 was recorded, a grid of 16 built


def test_nerf_fields_built_without_a_config_do_not_share_one():
    a, b = NeRFField([-1, -1, -1, 1, 1, 1]), NeRFField([-1, -1, -1, 1, 1, 1])
    assert a.cfg is not b.cfg
    a.cfg.set_param("plain")
    assert any(type(m).__name__ == "FactorizedLinear" for m in NeRFField(torch.tensor([-1.0] * 3 + [1.0] * 3))
               .modules())


def test_eval_quiet_turns_the_views_bar_off(tmp_path, monkeypatch):
    from conftest import random_views_scene  # noqa: PLC0415

    from rwf_render import nerf

    scene = random_views_scene(tmp_path / "scene", {"train": 3, "test": 1})
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(scene), "--out", str(run), "--steps", "2", "--grid-resolution", "16",
                     "--width", "16", "--features", "8", "--eval-images", "1", "--quiet", "--device", "cpu"]) == 0
    asked = []
    real = nerf.test_metrics
    monkeypatch.setattr(nerf, "test_metrics", lambda *a, **k: (asked.append(k["progress"]), real(*a, **k))[1])
    assert cli.main(["eval", str(run), "--quiet"]) == 0
    assert cli.main(["eval", str(run)]) == 0
    assert asked == [False, None]  # None: a bar on a terminal only


def test_a_closed_pipe_on_stdout_ends_quietly_as_sigpipe_would(capsys, monkeypatch):
    """``rwf data check DIR | head -1`` printed "rwf: error: BrokenPipeError ..." and exited 1, which the README
    gives to a failure of the machine (and check to errors in the dataset)."""
    def pipe_closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    read, write = os.pipe()
    os.close(read)  # the reader has gone, as head's after its first line

    class ClosedPipe(io.StringIO):
        def fileno(self):
            return write

    parser = cli.Parser(prog="rwf")
    sub = parser.add_subparsers(dest="command", parser_class=cli.Parser)
    sub.add_parser("data").set_defaults(func=pipe_closed)
    with monkeypatch.context() as m:
        m.setattr(sys, "stdout", ClosedPipe())
        assert cli.dispatch(parser, ["data"]) == 141
    os.close(write)
    assert capsys.readouterr().err == ""
    # a broken pipe of anything else (ffmpeg's stdin, a file) is a failure: one line, exit 1
    assert cli.dispatch(parser, ["data"]) == 1
    assert "Broken pipe" in capsys.readouterr().err
