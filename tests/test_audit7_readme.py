"""README as a contract (audit 7): commands whose behaviour contradicted the README, each checked here."""

import json

import pytest

from rwf_render import cli
from rwf_render.errors import RwfWarning


class ModelLoaded(Exception):
    """Raised in place of loading a checkpoint: the command got past its checks of the options."""


@pytest.fixture
def nerf_run(tmp_path, monkeypatch):
    """A NeRF run folder whose model never loads: reaching the load raises ModelLoaded."""
    import rwf_render.nerf_export as nerf_export

    def load(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(nerf_export, "load_scene_model", load)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "nerf"}))
    return run


def _export(capsys, run, *extra):
    code = cli.main(["export", "mesh", str(run), "--quiet", *map(str, extra)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--out", "m.stl"], ["--format", "obj", "--out", "m.stl"],
                                   ["--format", "ply", "--out", "m.mesh"], ["--poisson", "--out", "m.off"],
                                   ["--tsdf", "--out", "m.stl"]])
def test_nerf_mesh_export_refuses_an_unwritable_format_before_the_work(nerf_run, capsys, tmp_path, extra):
    """README: bad input ends with one line and exit 2 before the work. `rwf export mesh NERF_RUN --out m.stl` (or
    `--format obj --out m.stl`, which wrote OBJ into m.stl) loaded the model and evaluated the grid (--poisson,
    --tsdf: rendered every training view) before the write refused STL; sdf runs refuse these at once."""
    extra = [str(tmp_path / a) if a.startswith("m.") else a for a in extra]
    code, err = _export(capsys, nerf_run, *extra)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rwf: error:"), (code, err)
    assert not any(p.name.startswith("m.") for p in tmp_path.iterdir())


@pytest.mark.parametrize("extra", [[], ["--out", "m.obj"], ["--format", "glb", "--out", "m.glb"],
                                   ["--pointcloud", "--out", "p.ply"], ["--format", "obj"]])
def test_nerf_mesh_export_still_takes_the_formats_it_writes(nerf_run, tmp_path, extra):
    """The checks above stop only what cannot be written: these exports reach the model (ModelLoaded)."""
    extra = [str(tmp_path / a) if a[:2] in ("m.", "p.") else a for a in extra]
    with pytest.raises(ModelLoaded):
        cli.main(["export", "mesh", str(nerf_run), "--quiet", *extra])


@pytest.mark.parametrize("data, name", [("scenes/lego", "lego"), ("scenes/lego/transforms.json", "lego"),
                                        ("scenes/lego/transforms_train.json", "lego"),
                                        ("runs/a/cameras.json", "cameras"), ("x/My.Scene", "My.Scene")])
def test_a_default_nerf_run_is_named_after_the_dataset_without_the_json_suffix(data, name):
    """``rwf fit nerf RUN/cameras.json`` without --out made ``runs/nerf-cameras.json-<time>``."""
    from rwf_render.nerf import data_name

    assert data_name(data) == name


@pytest.mark.parametrize("text, value", [("0", 0.0), ("0.015625", 1 / 64), ("1/64", 1 / 64), ("1/256", 1 / 256)])
def test_cone_angle_takes_a_fraction_as_instant_ngp_writes_it(tmp_path, text, value):
    """``--cone-angle 1/256`` (as instant-ngp's docs and this toolkit's BENCHMARKS write it) was refused."""
    from rwf_render.nerf_options import config_from_args

    args = cli.build_parser().parse_args(["fit", "nerf", str(tmp_path), "--cone-angle", text])
    assert args.cone_angle == value
    assert config_from_args(args).render.cone_angle == value


@pytest.mark.parametrize("text", ["-1/64", "1/0", "1/2/3", "a/b", "inf", "nan"])
def test_cone_angle_refuses_what_is_not_a_finite_number_at_least_0(capsys, text):
    assert cli.main(["fit", "nerf", "--cone-angle", text]) == 2
    err = capsys.readouterr().err
    assert "--cone-angle" in err and len(err.strip().splitlines()) == 1


def test_data_tool_warnings_are_warnings_not_report_lines(tmp_path, capsys):
    """`rwf data colmap` and `rwf data downscale` printed "warning: ..." on stdout, inside their report, where the
    CLI's other warnings are RwfWarnings, printed "rwf: warning: ..." on stderr (README: warnings go to stderr; the
    format is one_line_warnings', tested in test_cli_polish)."""
    from test_audit6_data2 import MODELS, _synthetic_model

    _synthetic_model(tmp_path, {k: MODELS[k] for k in ("PINHOLE", "OPENCV", "SIMPLE_RADIAL")})
    (tmp_path / "images" / "im1.png").unlink()
    capsys.readouterr()
    with pytest.warns(RwfWarning, match="skipped 1 of the model's 3 images") as caught:
        assert cli.main(["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"),
                         str(tmp_path / "out")]) == 0
    assert len([w for w in caught if issubclass(w.category, RwfWarning)]) == 1
    assert "warning:" not in capsys.readouterr().out
    (tmp_path / "out" / "images" / "im2.png").unlink()
    with pytest.warns(RwfWarning, match="im2.png is missing; frame left out"):
        assert cli.main(["data", "downscale", str(tmp_path / "out"), str(tmp_path / "half"), "--factor", "2"]) == 0
    assert "warning:" not in capsys.readouterr().out
