"""``rwf fit --force`` sets the old run aside until the new run's first checkpoint: a Ctrl+C or an error before it
puts the old run back (emptying the folder at once lost a finished run to a Ctrl+C a second later), a kill -9 is
settled by the next command on the folder (a fit, an eval, a render), and the camera paths the viewer saved in the
run stay, under any name (only camera_path.json was kept), in a --compare's sub-runs too."""

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from rwf_render import cli, replacing, rundir
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
    assert not list(old_run.glob(".rwf-replaced-*")) and not replacing.run_dirs_replacing()


def test_a_finished_refit_drops_the_old_run_and_keeps_the_saved_camera_paths(old_run, capsys):
    (old_run / "render_x2.png").write_bytes(b"a render of the old run")
    (old_run / "camera_path.json").write_text(json.dumps(PATH))
    (old_run / "my path.JSON").write_text(json.dumps(PATH))  # the viewer saves any name inside the run
    (old_run / "notes.json").write_text(json.dumps({"not": "a camera path"}))
    old_config = (old_run / "config.json").read_text()
    assert cli.main(["fit", "image", "--size", "24", "--out", str(old_run), "--force", *IMG_TINY]) == 0
    names = {p.name for p in old_run.iterdir()}
    assert {"camera_path.json", "my path.JSON"} <= names
    assert not {"render_x2.png", "notes.json"} & names and not any(n.startswith(replacing.REPLACED_PREFIX) for n in names)
    assert (old_run / "config.json").read_text() != old_config  # the new run's (24 px)


def test_a_ctrl_c_once_training_started_puts_the_old_run_back_unsaved(old_run, monkeypatch, capsys):
    """The Ctrl+C's own checkpoint counted as the new run's first, which dropped the old run a few steps in."""
    before = _state(old_run)
    real = Trainer.step

    def step_then_ctrl_c(self):
        stats = real(self)
        os.kill(os.getpid(), signal.SIGINT)  # the fit stops after this step
        return stats

    monkeypatch.setattr(Trainer, "step", step_then_ctrl_c)
    code = cli.main(["fit", "image", "--size", "24", "--out", str(old_run), "--force", *IMG_TINY])
    err = capsys.readouterr().err
    assert code == 130 and "the run --force replaces comes back" in err, err
    assert _state(old_run) == before and not list(old_run.glob(".rwf-replaced-*"))


def test_a_killed_replacement_is_settled_by_the_next_command(old_run):
    before = _state(old_run)
    held = replacing.set_aside(old_run)  # what a --force killed with -9 before its first checkpoint leaves
    assert (held / replacing.REPLACED_MARK).read_text() == "held\n"
    replacing._REPLACING.clear()
    (old_run / "config.json").write_text("{}")  # the new run's first file
    try:
        rundir.prepare_run_dir(old_run, resume=True)
    finally:
        rundir.release_run_dirs()
    assert not held.exists() and _state(old_run) == before
    # past the new run's first checkpoint, the set-aside run is the one to go
    held = replacing.set_aside(old_run)
    replacing._REPLACING.clear()
    (old_run / "checkpoint.pt").write_bytes(b"the new run's")
    (old_run / "config.json").write_text(json.dumps({"kind": "image"}))
    try:
        rundir.prepare_run_dir(old_run, resume=True)
    except UserError:
        pass  # the stand-in checkpoint is no run to resume; the settling came first
    finally:
        rundir.release_run_dirs()
    assert not held.exists() and (old_run / "checkpoint.pt").read_bytes() == b"the new run's"


def test_an_eval_after_a_killed_replacement_sees_the_old_run(old_run, capsys):
    """eval, render, view and load_run said "no checkpoint" of a run whose old files sat hidden after a kill -9."""
    before = _state(old_run)
    replacing.set_aside(old_run)
    replacing._REPLACING.clear()
    (old_run / "config.json").write_text(json.dumps({"kind": "image"}))  # the killed fit's first file
    assert cli.main(["eval", str(old_run)]) == 0
    after = _state(old_run)
    assert after.keys() == before.keys() and after["checkpoint.pt"] == before["checkpoint.pt"]
    assert after["config.json"] == before["config.json"]


def test_a_failed_move_and_a_kill_while_moving_leave_the_old_run_in_place(old_run, monkeypatch):
    before = _state(old_run)
    real, moved = Path.rename, []

    def rename_fails_third(self, target):
        moved.append(self.name)
        if len(moved) == 3:
            raise OSError(18, "Invalid cross-device link")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename_fails_third)
    with pytest.raises(OSError):
        replacing.set_aside(old_run)
    monkeypatch.setattr(Path, "rename", real)
    assert _state(old_run) == before and not list(old_run.glob(".rwf-replaced-*"))
    # a kill -9 while moving: the mark still says "moving", so the old checkpoint in place is no new run's
    held = replacing.set_aside(old_run)
    replacing._REPLACING.clear()
    (held / replacing.REPLACED_MARK).write_text("moving\n")
    real(held / "checkpoint.pt", old_run / "checkpoint.pt")  # not moved yet when the kill came
    replacing.settle_replaced(old_run)
    assert _state(old_run) == before


def test_a_users_own_hidden_folder_of_a_like_name_is_left_alone(old_run):
    for name in (".rwf-replaced-backup", ".replaced-notes"):
        (old_run / name).mkdir()
        (old_run / name / "notes.txt").write_text("mine")
    (old_run / "checkpoint.pt").unlink()  # even where a new run would have no checkpoint
    replacing.settle_replaced(old_run)
    assert (old_run / ".rwf-replaced-backup" / "notes.txt").read_text() == "mine"
    assert (old_run / ".replaced-notes" / "notes.txt").read_text() == "mine"
    assert (old_run / "config.json").is_file()


def test_compare_force_keeps_camera_paths_in_sub_runs_and_resume_settles_a_kill(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli.main(["fit", "image", "--size", "16", "--out", str(out), "--compare", *IMG_TINY]) == 0
    (out / "rwf" / "path.json").write_text(json.dumps(PATH))
    (out / "camera_path.json").write_text(json.dumps(PATH))  # at the top: still a --compare folder to --force
    assert cli.main(["fit", "image", "--size", "24", "--out", str(out), "--compare", "--force", *IMG_TINY]) == 0
    assert json.loads((out / "rwf" / "path.json").read_text()) == PATH and (out / "camera_path.json").is_file()
    assert json.loads((out / "rwf" / "config.json").read_text())["size"] == 24
    before = _state(out)
    replacing.set_aside(out)  # a --compare --force killed before its first checkpoint
    replacing._REPLACING.clear()
    (out / "plain").mkdir()
    (out / "plain" / "config.json").write_text(json.dumps({"kind": "image"}))
    assert cli.main(["fit", "image", "--out", str(out), "--compare", "--resume", "--quiet"]) == 0
    capsys.readouterr()
    assert _state(out)["rwf/checkpoint.pt"] == before["rwf/checkpoint.pt"]  # the old comparison, finished already
    assert not list(out.glob(".rwf-replaced-*"))


def test_a_dangling_link_as_out_is_named_as_such(old_run, tmp_path, capsys):
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "nowhere" / "x.png")
    for extra in ([], ["--force"]):
        assert cli.main(["render", str(old_run), "--out", str(link), *extra]) == 2
        assert "is a link to" in capsys.readouterr().err and link.is_symlink()


def test_a_fit_reading_its_own_folder_while_replacing_it_does_not_put_the_old_run_back(old_run, monkeypatch):
    """From Python 3.12 mkdtemp's path is absolute: a relative --out's own hidden folder was not recognised, and
    the live viewer's load_run_config put the old run back in the middle of the new fit (--force --view)."""
    import tempfile  # noqa: PLC0415

    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: os.path.abspath(real(*a, **k)))
    monkeypatch.chdir(old_run.parent)
    relative = Path(old_run.name)
    try:
        rundir.prepare_run_dir(relative, force=True)
        (relative / "config.json").write_text(json.dumps({"kind": "image", "new": True}))
        replacing.settle_replaced(relative)
        replacing.settle_replaced(relative / "plain")
        assert json.loads((relative / "config.json").read_text())["new"] is True
        assert not (relative / "checkpoint.pt").exists()
    finally:
        rundir.release_run_dirs()


def test_a_callbacks_stop_saves_the_new_run(old_run, monkeypatch, capsys):
    """Only a Ctrl+C drops the new run: a callback's stop_requested (the library's way to end a fit) saves it."""
    def stop_at_first(self):
        stats = real(self)
        self.stop_requested = True
        return stats

    real = Trainer.step
    monkeypatch.setattr(Trainer, "step", stop_at_first)
    assert cli.main(["fit", "image", "--size", "24", "--out", str(old_run), "--force", *IMG_TINY]) == 0
    assert json.loads((old_run / "config.json").read_text())["size"] == 24 and (old_run / "checkpoint.pt").is_file()
    assert not list(old_run.glob(".rwf-replaced-*"))


def test_a_command_on_a_compare_sub_run_settles_its_root(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli.main(["fit", "image", "--size", "16", "--out", str(out), "--compare", *IMG_TINY]) == 0
    before = _state(out)
    replacing.set_aside(out)  # a --compare --force killed once its first sub-run had a config.json
    replacing._REPLACING.clear()
    (out / "plain").mkdir()
    (out / "plain" / "config.json").write_text(json.dumps({"kind": "image"}))
    assert cli.main(["eval", str(out / "plain")]) == 0
    capsys.readouterr()
    assert _state(out)["plain/checkpoint.pt"] == before["plain/checkpoint.pt"]


def test_the_viewer_settles_before_it_names_the_runs_of_a_folder(old_run):
    pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
    from viewer.sources import check_run_dir  # noqa: PLC0415

    before = _state(old_run)
    replacing.set_aside(old_run)
    replacing._REPLACING.clear()
    assert check_run_dir(old_run)["kind"] == "image"  # said "holds several runs (.rwf-replaced-...)"
    assert _state(old_run) == before


def test_a_users_dropped_looking_folder_is_left_alone(old_run):
    (old_run / ".rwf-replaced-notes.drop").mkdir()
    (old_run / ".rwf-replaced-notes.drop" / "keep.txt").write_text("precious")
    replacing.settle_replaced(old_run)
    assert (old_run / ".rwf-replaced-notes.drop" / "keep.txt").read_text() == "precious"
