"""``rwf fit --force`` sets the old run aside until the new run's first checkpoint: a Ctrl+C or an error before it
puts the old run back (emptying the folder at once lost a finished run to a Ctrl+C a second later), a kill -9 is
settled by the next command on the folder, and the camera paths the viewer saved in the run stay, under any name
(only camera_path.json was kept)."""

import hashlib
import json
from pathlib import Path

import pytest

from rwf_render import cli, rundir
from rwf_render.errors import UserError
from rwf_render.trainer import Trainer

from test_shape_image_bad_input_more import IMG_TINY  # noqa: E402  (tests/ is on sys.path under pytest)

PATH = {"format": "rwf-camera-path", "keyframes": [{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3,
                                                                         0, 0, 0, 1], "fov": 50.0}]}


def _state(run: Path) -> dict:
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture
def old_run(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--size", "16", "--out", str(run), *IMG_TINY]) == 0
    return run


@pytest.mark.parametrize("failure", [KeyboardInterrupt, UserError])
def test_a_fit_that_ends_before_its_first_checkpoint_puts_the_old_run_back(old_run, monkeypatch, capsys, failure):
    before = _state(old_run)

    def fail(self):
        assert not (old_run / "checkpoint.pt").exists()  # the old run is aside while the new one trains
        raise failure("stopped") if failure is UserError else failure()

    monkeypatch.setattr(Trainer, "step", fail)
    code = cli.main(["fit", "image", "--size", "16", "--out", str(old_run), "--force", *IMG_TINY])
    err = capsys.readouterr().err
    assert code == (130 if failure is KeyboardInterrupt else 2)
    if failure is KeyboardInterrupt:
        assert "the run --force was replacing is back as it was" in err
    assert _state(old_run) == before
    assert not list(old_run.glob(".replaced-*")) and not rundir.run_dirs_replacing()


def test_a_finished_refit_drops_the_old_run_and_keeps_the_saved_camera_paths(old_run, capsys):
    (old_run / "render_x2.png").write_bytes(b"a render of the old run")
    (old_run / "camera_path.json").write_text(json.dumps(PATH))
    (old_run / "my path.JSON").write_text(json.dumps(PATH))  # the viewer saves any name inside the run
    (old_run / "notes.json").write_text(json.dumps({"not": "a camera path"}))
    old_config = (old_run / "config.json").read_text()
    assert cli.main(["fit", "image", "--size", "24", "--out", str(old_run), "--force", *IMG_TINY]) == 0
    names = {p.name for p in old_run.iterdir()}
    assert {"camera_path.json", "my path.JSON"} <= names
    assert not {"render_x2.png", "notes.json"} & names and not any(n.startswith(".replaced-") for n in names)
    assert (old_run / "config.json").read_text() != old_config  # the new run's (24 px)


def test_a_killed_replacement_is_settled_by_the_next_command(old_run):
    before = _state(old_run)
    held = rundir._set_aside(old_run)  # what a --force killed with -9 before its first checkpoint leaves
    rundir._REPLACING.clear()
    (old_run / "config.json").write_text("{}")  # the new run's first file
    try:
        rundir.prepare_run_dir(old_run, resume=True)
    finally:
        rundir.release_run_dirs()
    assert not held.exists() and _state(old_run) == before
    # past the new run's first checkpoint, the set-aside run is the one to go
    held = rundir._set_aside(old_run)
    rundir._REPLACING.clear()
    (old_run / "checkpoint.pt").write_bytes(b"the new run's")
    (old_run / "config.json").write_text(json.dumps({"kind": "image"}))
    try:
        rundir.prepare_run_dir(old_run, resume=True)
    except UserError:
        pass  # the stand-in checkpoint is no run to resume; the settling came first
    finally:
        rundir.release_run_dirs()
    assert not held.exists() and (old_run / "checkpoint.pt").read_bytes() == b"the new run's"
