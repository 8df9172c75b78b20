"""Audit 5, ``rwf export mesh RUN`` without ``--out``: an sdf fit writes RUN/mesh.ply, the mesh its metrics.json
describes (Chamfer, F-score, normal consistency at ``mesh_res``); the default export replaced it with a mesh at
another grid and level, so the run's metrics no longer described its mesh.ply. The export now goes beside it, to
RUN/mesh_<res>.<format>. A nerf fit writes no mesh, so its default export stays RUN/mesh.<format>, the file the
viewer shows as the exported mesh. All in-process and tiny (2-step fits, 8^3 grids)."""

import shutil
import warnings

import pytest
import trimesh

from rwf_render import cli
from rwf_render.mesh_io import load_mesh

from test_audit_nerf_input import _dataset  # noqa: E402  (tests/ is on sys.path under pytest)
from test_shape_image_bad_input_more import SDF_TINY, run_cli  # noqa: E402

NERF_TINY = ["--steps", "2", "--eval-images", "1", "--grid-resolution", "16", "--steps-per-diagonal", "32",
             "--width", "16", "--features", "8", "--target-samples", "512", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def sdf_run(tmp_path_factory):
    """A 2-step sdf fit of a ball (its mesh.ply extracted on a 12^3 grid); tests copy it before exporting."""
    root = tmp_path_factory.mktemp("audit5_sdf")
    ball = root / "ball.ply"
    trimesh.creation.icosphere(2, 5.0).apply_translation([10, 0, 0]).export(ball)
    assert cli.main(["fit", "sdf", str(ball), "--out", str(root / "run"), *SDF_TINY]) == 0
    return root / "run"


@pytest.fixture
def run(sdf_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(sdf_run, copy)
    return copy


@pytest.mark.parametrize("fmt", ["ply", "obj"])
def test_default_export_of_an_sdf_run_goes_beside_the_fits_mesh(run, capsys, fmt):
    fit_mesh = (run / "mesh.ply").read_bytes()
    metrics = (run / "metrics.json").read_bytes()
    extra = [] if fmt == "ply" else ["--format", fmt]
    code, err = run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet", *extra)
    assert code == 0, err
    assert (run / "mesh.ply").read_bytes() == fit_mesh  # the mesh metrics.json describes, byte for byte
    assert (run / "metrics.json").read_bytes() == metrics
    exported = load_mesh(run / f"mesh_8.{fmt}")
    assert len(exported.faces) > 0
    assert sorted(p.name for p in run.glob("mesh*")) == sorted({"mesh.ply", f"mesh_8.{fmt}"})  # no mesh.obj


def test_an_earlier_export_of_the_same_grid_is_replaced_only_with_force(run, capsys):
    (run / "mesh_8.ply").write_bytes(b"an earlier export")
    assert run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet")[0] == 2
    assert (run / "mesh_8.ply").read_bytes() == b"an earlier export"
    assert run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet", "--force")[0] == 0
    assert len(load_mesh(run / "mesh_8.ply").faces) > 0


def test_an_explicit_out_is_honoured_even_over_the_fits_mesh(run, capsys):
    """The user named the file and gave --force: ``--out RUN/mesh.ply`` replaces the fit's mesh, with the default
    export's mesh (without --force it is refused, as any existing file)."""
    assert run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet", "--force")[0] == 0
    fit_mesh = (run / "mesh.ply").read_bytes()
    assert run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet", "--out", run / "mesh.ply")[0] == 2
    assert (run / "mesh.ply").read_bytes() == fit_mesh
    assert run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet", "--out", run / "mesh.ply",
                   "--force")[0] == 0
    written = (run / "mesh.ply").read_bytes()
    assert written != fit_mesh  # a 12^3 extraction before, an 8^3 one now
    assert written == (run / "mesh_8.ply").read_bytes()
    elsewhere = run.parent / "elsewhere.obj"
    assert run_cli(capsys, "export", "mesh", run, "--res", "8", "--quiet", "--out", elsewhere)[0] == 0
    assert len(load_mesh(elsewhere).faces) > 0 and not (run / "mesh_8.obj").exists()


def test_a_nerf_fit_writes_no_mesh_so_its_default_export_keeps_the_name_the_viewer_shows(tmp_path, capsys):
    """Nothing of a nerf fit's is replaced by RUN/mesh.ply; viewer/nerf_source.py shows that file as the exported
    mesh, so the default stays. Should a nerf fit ever write a mesh, this test says the default must move."""
    from viewer.sdf_source import _extracted_mesh  # noqa: PLC0415

    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(_dataset(tmp_path / "data", n=5)), "--out", str(run), *NERF_TINY]) == 0
    assert not list(run.glob("mesh*"))
    code, err = run_cli(capsys, "export", "mesh", run, "--res", "8", "--threshold", "1e-6", "--quiet")
    assert code == 0, err
    assert [p.name for p in run.glob("mesh*")] == ["mesh.ply"]
    assert len(_extracted_mesh(run).faces) == len(load_mesh(run / "mesh.ply").faces) > 0
