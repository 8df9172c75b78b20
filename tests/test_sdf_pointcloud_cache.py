"""A point-cloud SDF run stores the cloud it trained on, normals included (RUN/cloud.npz), and the commands on the
run read that copy instead of the source: eval and --resume estimate no normals again and get the fit's results;
a source changed or gone since the fit is said in one warning and the copy is used; a run made before copies were
stored still loads (estimating as before); a damaged copy is one clear error."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from rwf_render import cli, point_cloud, shape_task
from rwf_render.errors import RwfWarning, UserError
from rwf_render.point_cloud import STORED_CLOUD, load_stored_cloud, save_cloud
from rwf_render.sdf import METRIC_KEYS
from test_sdf_pointcloud import sphere_cloud, write_xyz

SMALL = ["--width", "32", "--features", "16", "--sigma", "0.5", "--eval-every", "5", "--mesh-res", "32",
         "--preview-res", "16", "--eval-points", "4096", "--metric-points", "2000", "--pool", "4096", "--batch", "512",
         "--refresh-every", "4", "--schedule", "const", "--deterministic", "--ckpt-every", "5", "--quiet"]
"""a fit of a few seconds; a constant learning rate and a checkpoint every 5 steps, so that a fit resumed at step 10
can reach the parameters of an uninterrupted one (``test_sdf.test_resume_reaches_the_same_parameters...``)"""


def _no_estimate(*_, **__):
    raise AssertionError("normals estimated again")


def _no_parse(*_, **__):
    raise AssertionError("the source cloud parsed again")


@pytest.fixture
def no_reestimate(monkeypatch):
    """Fail the test if anything estimates normals or parses the source cloud."""
    monkeypatch.setattr(point_cloud, "estimate_normals", _no_estimate)
    monkeypatch.setattr(shape_task, "load_point_cloud", _no_parse)


@pytest.fixture(scope="module")
def cloud_run(tmp_path_factory):
    """A 20-step fit of a sphere cloud without normals (so they are estimated, once), and the normals the fit
    estimated."""
    tmp = tmp_path_factory.mktemp("cached")
    p, _ = sphere_cloud(2000, seed=7)
    src, run = write_xyz(tmp / "sphere.xyz", p), tmp / "run"
    estimated = []

    def recording(points):
        estimated.append(real(points))
        return estimated[-1]

    real = point_cloud.estimate_normals
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(point_cloud, "estimate_normals", recording)
        assert cli.main(["fit", "sdf", str(src), "--out", str(run), "--steps", "20", *SMALL]) == 0
    assert len(estimated) == 1
    return run, src, estimated[0]


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _eval(run, capsys):
    """``rwf eval RUN``: the metrics it prints, and its stderr."""
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 0
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1]), err


def _copy(run, tmp_path, source=None):
    """A copy of ``run`` in tmp_path; with ``source``, its config.json names that file as the source."""
    new = tmp_path / "run"
    shutil.copytree(run, new)
    if source is not None:
        cfg = json.loads((new / "config.json").read_text())
        cfg["path"] = str(source)
        (new / "config.json").write_text(json.dumps(cfg))
    return new


# -- what the fit stores ------------------------------------------------------------------------------------------
def test_the_fit_stores_the_points_and_the_normals_it_trained_on(cloud_run):
    """cloud.npz holds the file's points and the estimated normals bit for bit, and the source's sha256; config.json
    names it."""
    run, src, normals = cloud_run
    cloud, sha = load_stored_cloud(run / STORED_CLOUD)
    cfg = json.loads((run / "config.json").read_text())
    assert np.array_equal(cloud.points, np.loadtxt(src)) and np.array_equal(cloud.normals, normals)
    assert cloud.estimated and sha == cfg["source"]["sha256"]
    assert cfg["source"]["stored_cloud"] == STORED_CLOUD and cfg["source"]["normals"] == "estimated"


# -- commands on the run ------------------------------------------------------------------------------------------
def test_eval_export_render_estimate_nothing_and_eval_equals_the_fit(cloud_run, tmp_path, capsys, no_reestimate):
    """With the source unchanged: no normals estimated, no warning, and eval's metrics are the fit's exactly (the
    same targets and test points as the fit's)."""
    run, _, _ = cloud_run
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        metrics, err = _eval(run, capsys)
    saved = _metrics(run)
    assert {k: metrics[k] for k in METRIC_KEYS} == {k: saved[k] for k in METRIC_KEYS}
    assert "warning" not in err
    assert cli.main(["export", "mesh", str(run), "--res", "24", "--out", str(tmp_path / "m.ply"), "--quiet"]) == 0
    assert cli.main(["render", str(run), "--scale", "1", "--out", str(tmp_path / "r.png")]) == 0


def test_resume_uses_the_stored_cloud_and_reaches_the_uninterrupted_fit(cloud_run, tmp_path, monkeypatch):
    """A fit resumed at step 10 reaches the parameters of a 20-step fit without estimating normals again; so does
    one whose source changed since (it warns, and trains on the cloud it started with)."""
    _, src, _ = cloud_run
    half = tmp_path / "half"
    assert cli.main(["fit", "sdf", str(src), "--out", str(half), "--steps", "10", *SMALL]) == 0
    edited = tmp_path / "edited.xyz"
    shutil.copy(src, edited)
    half_edited = _copy(half, tmp_path, source=edited)
    with edited.open("a") as f:
        f.write("0.1 0.2 0.3\n")  # one point more: different targets if it were read
    monkeypatch.setattr(point_cloud, "estimate_normals", _no_estimate)
    monkeypatch.setattr(shape_task, "load_point_cloud", _no_parse)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        assert cli.main(["fit", "sdf", "--out", str(half), "--resume", "--steps", "20", "--quiet"]) == 0
    with pytest.warns(RwfWarning, match="changed since the fit; using the point cloud the run was trained on"):
        assert cli.main(["fit", "sdf", "--out", str(half_edited), "--resume", "--steps", "20", "--quiet"]) == 0
    monkeypatch.undo()
    whole = tmp_path / "whole"
    assert cli.main(["fit", "sdf", str(src), "--out", str(whole), "--steps", "20", *SMALL]) == 0
    reference = torch.load(whole / "checkpoint.pt", weights_only=True)["model"]
    for resumed in (half, half_edited):
        state = torch.load(resumed / "checkpoint.pt", weights_only=True)
        assert state["step"] == 20
        for key, value in reference.items():
            assert torch.equal(value, state["model"][key]), (resumed.name, key)


@pytest.mark.parametrize("change", ["edited", "deleted"])
def test_a_changed_or_deleted_source_warns_and_eval_uses_the_stored_cloud(cloud_run, tmp_path, capsys, change,
                                                                          no_reestimate):
    """The run stays what it was trained on: one warning names the source, the metrics are the fit's."""
    run, src, _ = cloud_run
    moved = tmp_path / "moved.xyz"
    shutil.copy(src, moved)
    run = _copy(run, tmp_path, source=moved)
    if change == "edited":
        moved.write_text(moved.read_text().replace("\n", "\n# a comment\n", 1))
    else:
        moved.unlink()
    match = "changed since the fit" if change == "edited" else "No such file"
    with pytest.warns(RwfWarning, match=match) as record:
        metrics, err = _eval(run, capsys)
    assert len([w for w in record if issubclass(w.category, RwfWarning)]) == 1
    assert "differ" not in err and "refer to the new file" not in err
    assert all(metrics[k] == _metrics(run)[k] for k in METRIC_KEYS)


def test_a_run_without_a_stored_cloud_estimates_as_before_and_resume_stores_it(cloud_run, tmp_path, capsys,
                                                                               monkeypatch):
    """A run from before copies were stored: eval reads the source and estimates its normals (once) as it did, with
    the fit's metrics; resuming it stores the copy, which later commands use."""
    run, _, normals = cloud_run
    run = _copy(run, tmp_path)
    (run / STORED_CLOUD).unlink()
    cfg = json.loads((run / "config.json").read_text())
    del cfg["source"]["stored_cloud"]
    (run / "config.json").write_text(json.dumps(cfg))
    calls = []
    real = point_cloud.estimate_normals
    monkeypatch.setattr(point_cloud, "estimate_normals", lambda p: calls.append(1) or real(p))
    metrics, _ = _eval(run, capsys)
    assert len(calls) == 1
    assert metrics["iou"] == pytest.approx(_metrics(run)["iou"], abs=1e-4)
    assert cli.main(["fit", "sdf", "--out", str(run), "--resume", "--steps", "22", "--quiet"]) == 0
    assert len(calls) == 2 and (run / STORED_CLOUD).is_file()
    assert np.allclose(load_stored_cloud(run / STORED_CLOUD)[0].normals, normals, atol=1e-6)
    _eval(run, capsys)
    assert len(calls) == 2


def test_a_compare_run_resumes_from_its_stored_cloud(tmp_path, monkeypatch):
    """--compare stores the cloud in each of its runs; --resume --compare reads the first one's."""
    p, _ = sphere_cloud(1000, seed=8)
    src, run = write_xyz(tmp_path / "s.xyz", p), tmp_path / "cmp"
    assert cli.main(["fit", "sdf", str(src), "--out", str(run), "--compare", "--steps", "5", *SMALL]) == 0
    for param in ("plain", "wn", "rwf"):
        assert np.array_equal(load_stored_cloud(run / param / STORED_CLOUD)[0].points, np.loadtxt(src))
    monkeypatch.setattr(point_cloud, "estimate_normals", _no_estimate)
    monkeypatch.setattr(shape_task, "load_point_cloud", _no_parse)
    assert cli.main(["fit", "sdf", "--out", str(run), "--compare", "--resume", "--steps", "10", "--quiet"]) == 0
    assert {m["steps"] for m in json.loads((run / "compare.json").read_text()).values()} == {10}


# -- a damaged copy -----------------------------------------------------------------------------------------------
def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # one byte inside the points' array: the zip's CRC-32 no longer matches
        i = len(data) // 4
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif how == "text":
        path.write_text("not an npz\n")
    elif how == "no_normals":
        with np.load(path) as z:
            np.savez(path.with_suffix(".tmp.npz"), points=z["points"], source_sha256=z["source_sha256"])
        path.with_suffix(".tmp.npz").replace(path)
    elif how == "zero_normals":
        with np.load(path) as z:
            arrays = dict(z)
        arrays["normals"][3] = 0
        np.savez(path.with_suffix(".tmp.npz"), **arrays)
        path.with_suffix(".tmp.npz").replace(path)


@pytest.mark.parametrize("how", ["truncated", "flipped", "text", "no_normals", "zero_normals"])
def test_a_damaged_stored_cloud_is_one_clear_error(cloud_run, tmp_path, how, no_reestimate):
    run, _, _ = cloud_run
    run = _copy(run, tmp_path)
    _damage(run / STORED_CLOUD, how)
    with pytest.raises(UserError, match=r"cloud\.npz: not a readable stored point cloud .*delete it"):
        load_stored_cloud(run / STORED_CLOUD)


def test_eval_of_a_run_with_a_damaged_stored_cloud_exits_2_with_one_line(cloud_run, tmp_path, capsys):
    from conftest import one_cli_error

    run, _, _ = cloud_run
    run = _copy(run, tmp_path)
    _damage(run / STORED_CLOUD, "flipped")
    line = one_cli_error(capsys, ["eval", run])
    assert str(run / STORED_CLOUD) in line and "CRC" in line


def test_save_cloud_round_trips_and_leaves_no_temporary(tmp_path):
    p, n = sphere_cloud(300, seed=9)
    cloud = point_cloud.PointCloud(p, n, estimated=True)
    save_cloud(tmp_path / STORED_CLOUD, cloud, "ab" * 32)
    back, sha = load_stored_cloud(tmp_path / STORED_CLOUD)
    assert np.array_equal(back.points, p) and np.array_equal(back.normals, n) and back.estimated
    assert sha == "ab" * 32 and [f.name for f in tmp_path.iterdir()] == [STORED_CLOUD]


def test_the_viewer_shows_the_stored_cloud_without_estimating_normals(cloud_run, no_reestimate):
    """``rwf view`` of a point-cloud run draws the cloud it was trained on, read from the run, not estimated again."""
    from viewer.sdf_source import load_sdf_run

    run, _, normals = cloud_run
    cfg = json.loads((run / "config.json").read_text())
    source = load_sdf_run(run, cfg, torch.device("cpu"))[3]
    assert isinstance(source, point_cloud.PointCloud)
    assert np.array_equal(source.normals, normals)
