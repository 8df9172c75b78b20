"""SDF pipeline findings of a real-data hunt (1 Dec 2026): faces naming one vertex twice made a closed mesh read as
open (a warning and a 15-ray vote instead of 3); metrics.json did not say the F-score's threshold; an occupancy
run's export at --level 0.5 (a probability to Occupancy Networks users, a logit here) found no surface without a hint
that the level is a logit."""

import json
import warnings

import numpy as np
import pytest
import trimesh

from conftest import one_cli_error
from rwf_render import cli
from rwf_render.mesh import surface_metrics
from rwf_render.mesh_io import load_mesh

from test_shape_image_bad_input_more import SDF_TINY  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.mark.parametrize("suffix, twice", [("obj", (0, 0, 1)), ("ply", (0, 1, 1)), ("stl", (0, 1, 0))])
def test_faces_that_name_a_vertex_twice_are_dropped_and_the_mesh_stays_closed(tmp_path, suffix, twice):
    sphere = trimesh.creation.icosphere(2, 1.0)
    f = np.asarray(sphere.faces)
    bad = np.stack([f[:40, i] for i in twice], 1)  # (a, a, b), (a, b, b), (a, b, a): no area, edges used once
    path = tmp_path / f"m.{suffix}"
    trimesh.Trimesh(sphere.vertices, np.concatenate([f, bad]), process=False).export(path)
    mesh = load_mesh(path)
    assert mesh.is_watertight and len(mesh.faces) == len(f)
    assert mesh.volume == pytest.approx(sphere.volume, rel=1e-6)


def test_an_open_mesh_with_such_faces_is_still_open(tmp_path):
    """Only the faces naming a vertex twice go: a mesh with a real hole stays open."""
    sphere = trimesh.creation.icosphere(2, 1.0)
    f = np.asarray(sphere.faces)[1:]  # one face missing
    bad = np.stack([f[:5, 0], f[:5, 1], f[:5, 1]], 1)
    path = tmp_path / "open.obj"
    trimesh.Trimesh(sphere.vertices, np.concatenate([f, bad]), process=False).export(path)
    mesh = load_mesh(path)
    assert not mesh.is_watertight and len(mesh.faces) == len(f)


def test_the_fscore_threshold_is_reported_with_the_fscore():
    ref = trimesh.creation.box((2.0, 1.0, 1.0))
    m = surface_metrics(ref, ref, n_points=2000, fscore_tau=0.02)
    assert m["fscore_tau"] == pytest.approx(0.02 * np.sqrt(6.0))
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int))
    assert surface_metrics(empty, ref, fscore_tau=0.01)["fscore_tau"] == pytest.approx(0.01 * np.sqrt(6.0))


def test_an_occupancy_runs_level_error_says_it_is_a_logit(tmp_path, capsys):
    run = tmp_path / "occ"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "sdf", "--out", str(run), *SDF_TINY, "--target", "occupancy", "--device",
                         "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fscore_tau"] == pytest.approx(0.01 * np.sqrt(3.0) * 0.9, rel=0.2)  # the source in the cube
    capsys.readouterr()
    err = one_cli_error(capsys, ["export", "mesh", str(run), "--res", "16", "--level", "1000", "--out",
                                 str(tmp_path / "x.ply"), "--quiet"])
    assert "no surface at level 1000" in err and "is a logit: 1000 is p = 1; 0 is p = 0.5" in err
    err = one_cli_error(capsys, ["export", "mesh", str(run), "--res", "16", "--level", "5", "--out",
                                 str(tmp_path / "x.ply"), "--quiet"])
    assert "is a logit: 5 is p = 0.993; 0 is p = 0.5" in err  # the sigmoid of 5
    assert not (tmp_path / "x.ply").exists()


def test_a_distance_runs_level_error_has_no_logit_hint(tmp_path, capsys):
    run = tmp_path / "sdf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "sdf", "--out", str(run), *SDF_TINY, "--device", "cpu"]) == 0
    err = one_cli_error(capsys, ["export", "mesh", str(run), "--res", "16", "--level", "-1000", "--out",
                                 str(tmp_path / "x.ply"), "--quiet"])
    assert "no surface at level -1000" in err and "logit" not in err
