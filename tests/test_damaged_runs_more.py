"""Damaged run directories that used to give a traceback, a misleading message or a half-done resume (a bug hunt
of the run commands): a NeRF config.json with an impossible network, a checkpoint whose optimizer moments, history
or NeRF ray count are damaged, a run file that is a folder, an SDF config whose source path is gone. Each is one
line and exit 2, with nothing in the run changed."""

import json
import shutil

import numpy as np
import pytest
import torch
import trimesh

from rwf_render import cli
from rwf_render.imgio import write_image

from conftest import random_views_scene  # noqa: E402  (tests/ is on sys.path under pytest)
from test_shape_image_bad_input_more import IMG_TINY, SDF_TINY, run_cli, snapshot  # noqa: E402

NERF_TINY = ["--steps", "2", "--eval-images", "1", "--quiet", "--grid-resolution", "16", "--steps-per-diagonal", "32",
             "--width", "16", "--features", "8", "--target-samples", "512", "--device", "cpu"]


def assert_one_error(code: int, err: str) -> str:
    """Exit 2 and one error line (a NeRF fit's one-line summary of its dataset may come before it)."""
    errors = [line for line in err.splitlines() if line.startswith("rwf: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, (code, err)
    return errors[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-step run of each kind (copy one before changing it)."""
    root = tmp_path_factory.mktemp("damaged")
    image = root / "photo.png"
    write_image(image, np.random.default_rng(0).random((12, 16, 3)).astype(np.float32))
    assert cli.main(["fit", "image", str(image), "--out", str(root / "image"), *IMG_TINY]) == 0
    mesh = root / "box.obj"
    trimesh.creation.box().export(mesh)
    assert cli.main(["fit", "sdf", str(mesh), "--out", str(root / "sdf"), *SDF_TINY]) == 0
    scene = random_views_scene(root / "scene", {"train": 3, "test": 1})
    assert cli.main(["fit", "nerf", str(scene), "--out", str(root / "nerf"), *NERF_TINY]) == 0
    return root


def copy(runs, kind, tmp_path):
    shutil.copytree(runs / kind, tmp_path / kind)
    return tmp_path / kind


def edit_checkpoint(run, change):
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    change(ck)
    torch.save(ck, run / "checkpoint.pt")


@pytest.mark.parametrize("path, value", [(("trunk", "param"), "xx"), (("trunk", "width"), 0),
                                          (("head", "activation"), "zz"), (("dirs", "degree"), 9)],
                         ids=["param", "width", "activation", "sh-degree"])
def test_a_nerf_config_with_an_impossible_network_is_one_error_for_every_command(runs, tmp_path, capsys, path,
                                                                                  value):
    run = copy(runs, "nerf", tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["field"][path[0]][path[1]] = value
    (run / "config.json").write_text(json.dumps(cfg))
    before = snapshot(run)
    for argv in (["eval", run], ["render", run, "--orbit", "1", "--out", tmp_path / "frames"],
                 ["export", "mesh", run, "--res", "8"], ["fit", "nerf", "--out", run, "--resume", "--steps", "3"]):
        line = assert_one_error(*run_cli(capsys, *argv))
        assert "config.json" in line and "not a valid nerf run config" in line, line
    assert snapshot(run) == before and not (tmp_path / "frames").exists()


def _bad_moment(ck):
    state = ck["optimizer"]["state"]
    state[sorted(state)[1]]["exp_avg"] = torch.zeros(2)


@pytest.mark.parametrize("kind, change, words", [
    ("image", _bad_moment, "optimizer state 'exp_avg' of shape (2,)"),
    ("image", lambda ck: ck.update(history="abc"), "history is not a list of rows"),
    ("sdf", lambda ck: ck.update(history=[1, 2]), "history is not a list of rows"),
    ("nerf", lambda ck: ck.update(task={"n_rays": 0}), "rays per step 0"),
    ("nerf", lambda ck: ck.update(task={"n_rays": 64, "total_samples": -1}), "samples so far -1"),
], ids=["optimizer-moment", "image-history", "sdf-history", "nerf-no-rays", "nerf-negative-samples"])
def test_a_damaged_checkpoint_refuses_the_resume_before_anything_is_written(runs, tmp_path, capsys, kind, change,
                                                                             words):
    run = copy(runs, kind, tmp_path)
    edit_checkpoint(run, change)
    before = snapshot(run)
    line = assert_one_error(*run_cli(capsys, "fit", kind, "--out", run, "--resume", "--steps", "4"))
    assert "does not match this run's config.json" in line and words in line, line
    assert snapshot(run) == before  # config.json keeps its steps, history.csv its rows


@pytest.mark.parametrize("kind", ["image", "sdf", "nerf"])
@pytest.mark.parametrize("name", ["checkpoint.pt", "metrics.json", "history.csv"])
def test_a_run_file_that_is_a_folder_is_named_before_any_work(runs, tmp_path, capsys, kind, name):
    run = copy(runs, kind, tmp_path)
    (run / name).unlink()
    (run / name).mkdir()
    before = snapshot(run)
    for argv in (["eval", run], ["fit", kind, "--out", run, "--resume", "--steps", "4"]):
        line = assert_one_error(*run_cli(capsys, *argv))
        assert line == f"rwf: error: {run / name}: not a file (the run keeps its {name} there)", line
    assert snapshot(run) == before


@pytest.mark.parametrize("null", [True, False], ids=["null", "deleted"])
def test_an_sdf_run_whose_config_lost_its_mesh_path_is_not_scored_against_the_built_in_shape(runs, tmp_path, capsys,
                                                                                            null):
    run = copy(runs, "sdf", tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    if null:
        cfg["path"] = None
    else:
        del cfg["path"]
    (run / "config.json").write_text(json.dumps(cfg))
    before = snapshot(run)
    for argv in (["eval", run], ["render", run], ["fit", "sdf", "--out", run, "--resume", "--steps", "4"]):
        line = assert_one_error(*run_cli(capsys, *argv))
        assert "no path, but the run was fitted on a 'obj' file" in line and "None" not in line, line
    assert snapshot(run) == before


@pytest.mark.parametrize("kind", ["image", "sdf", "nerf"])
@pytest.mark.parametrize("which", [0, -1], ids=["first", "last"])
def test_a_checkpoint_with_nan_weights_is_refused_not_rendered_as_nan(runs, tmp_path, capsys, kind, which):
    """The first matrix of each model is its Fourier matrix (a buffer), the last a layer's weight (a parameter)."""
    run = copy(runs, kind, tmp_path)

    def poison(ck):
        name = [k for k, v in ck["model"].items() if v.is_floating_point() and v.dim() == 2][which]
        ck["model"][name][0, 0] = float("nan")
    edit_checkpoint(run, poison)
    before = snapshot(run)
    for argv in (["eval", run], ["fit", kind, "--out", run, "--resume", "--steps", "4"]):
        line = assert_one_error(*run_cli(capsys, *argv))
        assert line.endswith("checkpoint.pt: the weights are not all finite numbers (a damaged file, or a fit that "
                             "diverged)"), line
    assert snapshot(run) == before


def test_eval_refuses_a_checkpoint_whose_step_is_not_a_count(runs, tmp_path, capsys):
    run = copy(runs, "image", tmp_path)
    edit_checkpoint(run, lambda ck: ck.update(step=-5))
    line = assert_one_error(*run_cli(capsys, "eval", run))
    assert "step -5 is not a count of steps" in line, line


@pytest.mark.parametrize("kind", ["image", "sdf"])
def test_eval_says_a_damaged_metrics_file_before_computing_anything(runs, tmp_path, capsys, kind):
    run = copy(runs, kind, tmp_path)
    (run / "metrics.json").write_text('{"psnr": 1')
    code = cli.main(["eval", str(run)])
    out, err = capsys.readouterr()
    line = assert_one_error(code, err)
    assert "metrics.json" in line and out == "", (line, out)  # the figures used to be printed, then exit 2
