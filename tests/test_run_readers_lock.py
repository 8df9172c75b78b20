"""``rwf fit --force`` and the commands that read a run (render, eval, export, view): the fit must not empty a run
whose checkpoint another process is rendering from, and a render must not start in a run being emptied. A fit that is
still training does not keep a render out (rendering a checkpoint during training is a use)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rwf_render import cli, rundir
from rwf_render.imgio import write_image

from conftest import one_cli_error
from test_nerf_bad_input_more import TINY
from test_shape_image_bad_input_more import IMG_TINY

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="advisory file locks are POSIX only")


@pytest.fixture
def image_run(tmp_path):
    image = tmp_path / "photo.png"
    write_image(image, np.random.default_rng(0).random((12, 16, 3)).astype(np.float32))
    run = tmp_path / "run"
    assert cli.main(["fit", "image", str(image), "--out", str(run), *IMG_TINY]) == 0
    return image, run


class Holder:
    """Another process that runs ``code`` (with ``run`` bound to the run's path) and keeps what it took until
    closed, as a render would for its whole length."""

    def __init__(self, code: str, run):
        script = textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from rwf_render import rundir
            run = Path({str(run)!r})
            {code}
            print("held", flush=True)
            sys.stdin.read()
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0


def test_force_refused_while_a_render_reads_the_run(image_run, capsys):
    image, run = image_run
    before = sorted(p.name for p in run.iterdir())
    holder = Holder("rundir.hold_run(run)", run)
    try:
        line = one_cli_error(capsys, ["fit", "image", image, "--out", run, "--force", *IMG_TINY])
        assert "render, eval, export or view of this run is going on" in line
        assert sorted(p.name for p in run.iterdir()) == before  # nothing deleted
    finally:
        holder.close()
    assert cli.main(["fit", "image", str(image), "--out", str(run), "--force", *IMG_TINY]) == 0


def test_force_refused_after_a_resume_rewrote_the_config(image_run, capsys):
    """A lock is held on a file, not on its name: held on config.json, it was lost when --resume replaced that file
    (a helper's hunt: --force then emptied the run under the render)."""
    image, run = image_run
    holder = Holder("rundir.hold_run(run)", run)
    try:
        assert cli.main(["fit", "image", "--resume", "--out", str(run), "--steps", "3"]) == 0  # a reader allows it
        line = one_cli_error(capsys, ["fit", "image", image, "--out", run, "--force", *IMG_TINY])
        assert "render, eval, export or view of this run is going on" in line
        assert (run / rundir.CHECKPOINT).is_file()
    finally:
        holder.close()


def test_a_run_of_an_earlier_version_is_held_by_its_config(image_run, capsys):
    image, run = image_run
    (run / rundir.READ_LOCK).unlink()  # fitted before the reader-lock file existed
    holder = Holder("rundir.hold_run(run)", run)
    try:
        line = one_cli_error(capsys, ["fit", "image", image, "--out", run, "--force", *IMG_TINY])
        assert "render, eval, export or view of this run is going on" in line
    finally:
        holder.close()
    assert cli.main(["fit", "image", str(image), "--out", str(run), "--force", *IMG_TINY]) == 0
    assert (run / rundir.READ_LOCK).is_file()


def test_force_of_a_compare_refused_while_a_sub_run_is_read(tmp_path, capsys):
    image = tmp_path / "photo.png"
    write_image(image, np.random.default_rng(1).random((12, 16, 3)).astype(np.float32))
    out = tmp_path / "cmp"
    assert cli.main(["fit", "image", str(image), "--out", str(out), "--compare", *IMG_TINY]) == 0
    holder = Holder("rundir.hold_run(run / 'wn')", out)
    try:
        line = one_cli_error(capsys, ["fit", "image", image, "--out", out, "--force", "--compare", *IMG_TINY])
        assert "wn: an rwf render, eval, export or view" in line
        assert (out / "wn" / rundir.CHECKPOINT).is_file() and (out / "plain" / rundir.CHECKPOINT).is_file()
    finally:
        holder.close()


def test_render_refused_while_force_empties_the_run(image_run, capsys, tmp_path):
    _, run = image_run
    holder = Holder("held = rundir._refuse_if_read(run); assert held", run)
    try:
        line = one_cli_error(capsys, ["render", run, "--out", tmp_path / "r.png"])
        assert "'rwf fit --force' is replacing this run" in line
        assert not (tmp_path / "r.png").exists()
    finally:
        holder.close()


def test_render_during_training_and_locks_released(image_run, tmp_path):
    _, run = image_run
    holder = Holder("assert rundir._lock_run_dir(run)", run)  # what a fit in progress holds
    try:
        assert cli.main(["render", str(run), "--out", str(tmp_path / "r.png")]) == 0
        assert cli.main(["eval", str(run)]) == 0
    finally:
        holder.close()
    assert rundir._READING == [] and rundir._LOCKS == {}  # the command's locks end with it


def test_a_force_fit_lets_readers_in_once_it_has_emptied_the_run(image_run, tmp_path):
    """The locks that keep readers out while --force deletes the old run's files were held until the fit ended, so a
    --force fit refused renders for its whole length where a plain fit allows them (a filesystem hunt)."""
    image, run = image_run
    other = tmp_path / "other"
    assert cli.main(["fit", "image", str(image), "--out", str(other), *IMG_TINY]) == 0
    holder = Holder("rundir.prepare_run_dir(run, force=True); import shutil; "
                    "[shutil.copy(p, run / p.name) for p in Path(sys.argv[1] if len(sys.argv) > 1 else "
                    f"{str(other)!r}).iterdir() if p.is_file()]", run)  # emptied; a first checkpoint written
    try:
        assert not (run / "metrics.json").read_text() == ""
        assert cli.main(["render", str(run), "--out", str(tmp_path / "r.png")]) == 0
    finally:
        holder.close()


# -- rwf eval of a NeRF run while a fit of it goes on (--resume): metrics.json is the fit's, then the eval's ---------
@pytest.fixture
def nerf_run(tiny_scene, tmp_path):
    run = tmp_path / "nerf"
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(run), *TINY]) == 0
    return run


def _during_scoring(monkeypatch, action):
    """Run ``action`` after the eval's renders, before it writes: what a fit finishing meanwhile does."""
    from rwf_render import nerf

    def scoring(*args, **kwargs):
        result = real(*args, **kwargs)
        action()
        return result
    real = nerf.test_metrics
    monkeypatch.setattr(nerf, "test_metrics", scoring)


def test_eval_leaves_metrics_to_a_fit_that_went_on(nerf_run, monkeypatch, capsys):
    metrics = nerf_run / rundir.METRICS

    def fit_writes():  # a newer checkpoint (atomically replaced) and the fit's final figures
        shutil.copy(nerf_run / rundir.CHECKPOINT, nerf_run / "newer.pt")
        os.replace(nerf_run / "newer.pt", nerf_run / rundir.CHECKPOINT)
        rundir.write_json(metrics, {"steps": 99, "psnr": 12.5})
    _during_scoring(monkeypatch, fit_writes)
    capsys.readouterr()
    assert cli.main(["eval", str(nerf_run)]) == 0
    err = capsys.readouterr().err
    assert "changed while it was scored" in err
    assert json.loads(metrics.read_text()) == {"steps": 99, "psnr": 12.5}


def test_eval_merges_into_the_metrics_as_they_are_when_it_writes(nerf_run, monkeypatch, capsys):
    metrics = nerf_run / rundir.METRICS
    _during_scoring(monkeypatch, lambda: rundir.write_json(metrics, {"written_meanwhile": 1, "psnr": -1.0}))
    assert cli.main(["eval", str(nerf_run)]) == 0
    saved = json.loads(metrics.read_text())
    assert saved["written_meanwhile"] == 1 and saved["psnr"] > 0 and saved["psnr_split"] == "test"


def test_force_refused_while_the_viewer_shows_the_run(image_run, capsys):
    # `rwf view RUN` reads the checkpoint and writes camera_path.json into the run for as long as it runs.
    image, run = image_run
    holder = Holder("import torch; from viewer.sources import open_run; source = open_run(run, torch.device('cpu'))",
                    run)
    try:
        line = one_cli_error(capsys, ["fit", "image", image, "--out", run, "--force", *IMG_TINY])
        assert "render, eval, export or view of this run is going on" in line
        assert (run / rundir.CHECKPOINT).is_file()
    finally:
        holder.close()
