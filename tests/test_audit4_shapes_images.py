"""Fourth audit of the SDF and image pipelines, as a user of SIREN / instant-ngp / nerfstudio would drive them: an
output path that is the run's own source is refused (it replaced the mesh or photo the run was fitted to), a
--batch larger than the --pool it is drawn from is refused (it was cut to the pool's size without a word), and
``rwf export mesh --level`` on a distance run is a distance in the mesh's units, like the mesh it writes. All
in-process and tiny (2-step fits)."""

import json
import warnings

import numpy as np
import pytest
import trimesh

from rwf_render import cli, sdf
from rwf_render.imgio import write_image
from rwf_render.shape_task import HISTORY_POINTS

from test_shape_image_bad_input_more import IMG_TINY, SDF_TINY, assert_one_error, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A sphere of radius 5 far from the unit cube, a photo, and a 2-step run of each."""
    root = tmp_path_factory.mktemp("audit4")
    mesh, image = root / "ball.ply", root / "photo.png"
    trimesh.creation.icosphere(2, 5.0).apply_translation([10, 0, 0]).export(mesh)
    write_image(image, np.random.default_rng(0).random((12, 16, 3)).astype(np.float32))
    assert cli.main(["fit", "sdf", str(mesh), "--out", str(root / "sdf"), *SDF_TINY]) == 0
    assert cli.main(["fit", "image", str(image), "--out", str(root / "img"), *IMG_TINY]) == 0
    return {"root": root, "mesh": mesh, "image": image, "sdf": root / "sdf", "img": root / "img"}


@pytest.mark.parametrize("kind", ["sdf", "img"])
def test_an_output_that_is_the_runs_source_is_refused(sources, capsys, kind):
    """``rwf export mesh RUN --out MESH`` and ``rwf render RUN --out PHOTO`` overwrote the file the run was fitted to:
    ``rwf eval`` then warned that the source changed and scored the field against its own output (58.9 dB)."""
    source = sources["mesh" if kind == "sdf" else "image"]
    before = source.read_bytes()
    link = sources["root"] / f"link{source.suffix}"  # another name of the same file is the same file
    link.unlink(missing_ok=True)
    link.hardlink_to(source)
    for out in (source, link):
        args = (["export", "mesh", sources["sdf"], "--res", "8", "--quiet"] if kind == "sdf"
                else ["render", sources["img"]])
        line = assert_one_error(*run_cli(capsys, *args, "--out", out))
        assert "source" in line and str(out) in line
    assert source.read_bytes() == before
    other = sources["root"] / f"other_{kind}{source.suffix}"  # any other name is written as before
    args = ["export", "mesh", sources["sdf"], "--res", "8", "--quiet"] if kind == "sdf" else ["render", sources["img"]]
    assert run_cli(capsys, *args, "--out", other)[0] == 0 and other.stat().st_size > 0


def test_a_batch_larger_than_its_pool_is_refused(sources, capsys, tmp_path):
    """--batch 1024 --pool 512 trained on 512 points a step: each batch is drawn from the pool and was cut to its
    size silently."""
    opts = list(SDF_TINY)
    opts[opts.index("--batch") + 1] = "1024"
    line = assert_one_error(*run_cli(capsys, "fit", "sdf", sources["mesh"], "--out", tmp_path / "r", *opts))
    assert "--batch 1024" in line and "--pool" in line
    assert not (tmp_path / "r").exists()
    opts[opts.index("--batch") + 1] = "512"  # equal is fine
    assert run_cli(capsys, "fit", "sdf", sources["mesh"], "--out", tmp_path / "r", *opts)[0] == 0


@pytest.mark.parametrize("target", ["sdf", "occupancy"])
def test_export_level_is_a_distance_in_the_mesh_units(sources, capsys, monkeypatch, tmp_path, target):
    """The exported mesh is in the mesh's units, but --level was handed to the field as is: a unit-cube distance,
    so ``--level 1`` on a mesh of radius 5 asked for the surface 11 units out (nothing in the box) instead of 1.
    A distance level is now scaled like the mesh (config.json's normalization); an occupancy logit is not."""
    run = sources["sdf"]
    if target == "occupancy":
        run = tmp_path / "occ"
        assert run_cli(capsys, "fit", "sdf", sources["mesh"], "--out", run, "--target", "occupancy", *SDF_TINY)[0] == 0
    scale = json.loads((run / "config.json").read_text())["normalization"]["scale"]
    assert scale == pytest.approx(0.9 / 10)  # the sphere's 10-unit diameter becomes 0.9
    seen = []
    original = sdf.extract_mesh

    def spy(fn, **kw):
        seen.append(kw["level"])
        return original(fn, **kw)
    monkeypatch.setattr(sdf, "extract_mesh", spy)
    for level in (0.5, -0.25):
        run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet", "--level", level, "--out", tmp_path / "m.ply",
                "--force")
    expected = [0.5 * scale, -0.25 * scale] if target == "sdf" else [0.5, -0.25]
    assert seen == pytest.approx(expected)


def test_eval_points_help_says_what_the_training_iou_uses(capsys):
    """history.csv's IoU is computed on the first HISTORY_POINTS test points only, so at the default --eval-points
    its last row differs from metrics.json's IoU under the same name; the help now says so."""
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["fit", "sdf", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"first {HISTORY_POINTS}" in text and "history.csv" in text


def test_a_jpeg_render_of_a_transparent_image_run_says_it_drops_alpha(tmp_path, capsys):
    """``rwf render RUN --out x.jpg`` of an RGBA fit dropped the alpha channel without a word."""
    rgba, rgb = tmp_path / "rgba.png", tmp_path / "rgb.png"
    pixels = np.random.default_rng(0).random((12, 16, 4)).astype(np.float32)
    write_image(rgba, pixels)
    write_image(rgb, pixels[..., :3])
    for image in (rgba, rgb):
        assert cli.main(["fit", "image", str(image), "--out", str(tmp_path / image.stem), *IMG_TINY]) == 0
    from rwf_render.errors import RwfWarning  # noqa: PLC0415  (printed as one "rwf: warning:" line by the CLI)

    with pytest.warns(RwfWarning, match="JPEG has no alpha"):
        assert cli.main(["render", str(tmp_path / "rgba"), "--out", str(tmp_path / "a.jpg")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        assert cli.main(["render", str(tmp_path / "rgba"), "--out", str(tmp_path / "a.png")]) == 0  # PNG keeps it
        assert cli.main(["render", str(tmp_path / "rgb"), "--out", str(tmp_path / "b.jpg")]) == 0  # nothing to drop
