"""Behaviour a mutation run (1 Dec 2026) found unpinned: ``rwf fit --compare --force`` stopped by Ctrl+C or an error
(the old comparison and its sub-runs' camera paths come back), a kill -9 settled after a sub-run's first checkpoint,
while putting the old run back, or while dropping it; a fresh fit settling a killed replacement; camera paths saved
with a ``camera_path`` key or a byte-order mark; a run-file name outside any run; the command-line hints of the
installed ``rwf`` (argv from sys.argv), and hints that must not be given."""

import json
import os
import signal
import subprocess
import sys

import pytest

from rwf_render import cli, replacing, rundir
from rwf_render.errors import UserError
from rwf_render.trainer import Trainer

from conftest import one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)
from test_force_keeps_old_run import PATH, _state, old_run  # noqa: E402,F401  (old_run: a fixture)
from test_shape_image_bad_input_more import IMG_TINY  # noqa: E402


@pytest.fixture
def cmp_run(tmp_path):
    out = tmp_path / "cmp"
    assert cli.main(["fit", "image", "--size", "16", "--out", str(out), "--compare", *IMG_TINY]) == 0
    (out / "rwf" / "path.json").write_text(json.dumps(PATH))  # a camera path the viewer saved in a sub-run
    return out


def _killed_aside(run):
    """The state a kill -9 leaves just after ``set_aside``: the hidden folder, and no process replacing."""
    held = replacing.set_aside(run)
    replacing._REPLACING.clear()
    return held


def test_a_ctrl_c_in_a_compare_force_puts_the_old_comparison_back_unsaved(cmp_run, monkeypatch, capsys):
    """The trainer's folder is a sub-run (cmp/plain) of the folder replaced (cmp): its Ctrl+C must not save."""
    before = _state(cmp_run)
    real = Trainer.step

    def step_then_ctrl_c(self):
        stats = real(self)
        os.kill(os.getpid(), signal.SIGINT)
        return stats

    monkeypatch.setattr(Trainer, "step", step_then_ctrl_c)
    code = cli.main(["fit", "image", "--size", "24", "--out", str(cmp_run), "--compare", "--force", *IMG_TINY])
    err = capsys.readouterr().err
    assert code == 130 and "comes back" in err, err
    assert _state(cmp_run) == before and not list(cmp_run.glob(".rwf-replaced-*"))


def test_an_error_in_a_compare_force_keeps_the_camera_path_of_a_sub_run(cmp_run, monkeypatch, capsys):
    before = _state(cmp_run)

    def fail(self):
        raise UserError("stopped")

    monkeypatch.setattr(Trainer, "step", fail)
    assert cli.main(["fit", "image", "--size", "24", "--out", str(cmp_run), "--compare", "--force", *IMG_TINY]) == 2
    assert _state(cmp_run) == before  # rwf/path.json included


def test_a_kill_after_a_compare_sub_runs_first_checkpoint_keeps_the_new_comparison(cmp_run):
    held = _killed_aside(cmp_run)
    (cmp_run / "plain").mkdir()
    (cmp_run / "plain" / "config.json").write_text(json.dumps({"kind": "image", "new": True}))
    (cmp_run / "plain" / "checkpoint.pt").write_bytes(b"new")
    replacing.settle_replaced(cmp_run)
    assert not held.exists()
    assert (cmp_run / "plain" / "checkpoint.pt").read_bytes() == b"new"


def test_a_kill_while_putting_the_old_run_back_is_finished_by_the_next_command(old_run):
    before = _state(old_run)
    held = _killed_aside(old_run)
    (held / replacing.REPLACED_MARK).write_text("returning\n")
    replacing.settle_replaced(old_run)
    assert not held.exists() and _state(old_run) == before


def test_a_kill_while_dropping_the_old_run_is_finished_by_the_next_command(old_run):
    held = _killed_aside(old_run)
    for child in held.iterdir():  # the new run is in place; the old one was being deleted
        if child.name != replacing.REPLACED_MARK:
            child.rename(old_run / child.name)
    dropped = held.rename(held.with_name(held.name + ".drop"))
    replacing.settle_replaced(old_run)
    assert not dropped.exists() and (old_run / "checkpoint.pt").is_file()


def test_preparing_a_fresh_force_fit_settles_a_killed_replacement_first(old_run):
    """Not only --resume and the readers: ``prepare_run_dir(force=True)`` (a fit from code, which no command settled
    before) puts a killed fit's old run back before it sets that aside itself: one hidden folder, the new one."""
    before = _state(old_run)
    held = _killed_aside(old_run)
    try:
        rundir.prepare_run_dir(old_run, force=True)
        hidden = list(old_run.glob(replacing.REPLACED_PREFIX + "*"))
        assert len(hidden) == 1 and hidden[0] != held and not held.exists()
    finally:
        rundir.release_run_dirs()  # no checkpoint of a new run: the old one comes back
    assert _state(old_run) == before and not list(old_run.glob(replacing.REPLACED_PREFIX + "*"))


@pytest.mark.parametrize("name, content", [
    ("orbit.json", json.dumps({"camera_path": [{"camera_to_world": list(range(16)), "fov": 50}], "fps": 24})),
    ("bom path.json", "\ufeff" + json.dumps(PATH)),  # saved by an editor that writes a byte-order mark
])
def test_force_keeps_camera_paths_of_either_format(old_run, capsys, name, content):
    (old_run / name).write_text(content, encoding="utf-8")
    kept = (old_run / name).read_bytes()
    assert cli.main(["fit", "image", "--size", "24", "--out", str(old_run), "--force", *IMG_TINY]) == 0
    assert (old_run / name).read_bytes() == kept


def test_force_drops_a_link_named_like_the_kept_camera_path(old_run, tmp_path, capsys):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(PATH))
    (old_run / "camera_path.json").symlink_to(target)
    assert not rundir.kept_by_force(old_run / "camera_path.json")
    assert cli.main(["fit", "image", "--size", "24", "--out", str(old_run), "--force", *IMG_TINY]) == 0
    assert not (old_run / "camera_path.json").is_symlink() and target.read_text() == json.dumps(PATH)


def test_a_run_files_name_outside_any_run_is_replaced_with_force(old_run, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "config.json").write_text(json.dumps({"foo": 1}))  # another tool's config.json: not a run
    rundir.check_output_file(notes / "config.json", force=True)  # no error
    with pytest.raises(UserError, match="exists; --force replaces it"):
        rundir.check_output_file(notes / "config.json", force=False)
    with pytest.raises(UserError, match="is a file of the run"):
        rundir.check_output_file(old_run / "config.json", force=True)


def test_the_installed_command_reads_its_arguments_and_gives_the_hint(tmp_path):
    """``rwf`` calls main() without argv: the sub-command parser that failed is found from sys.argv too."""
    proc = subprocess.run([sys.executable, "-m", "rwf_render", "fit", "image", "--stepz", "5", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["rwf: error: rwf fit image: unrecognized arguments: --stepz (did you mean --steps?) (see --help)"]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv, line", [
    (["fit", "image", "--bogus"], "rwf fit image: unrecognized arguments: --bogus (see --help)"),  # no far guess
    (["render", "run", "--stpes", "3"], "rwf render: unrecognized arguments: --stpes 3 (see --help)"),
    (["eval", "run", "--force"], "rwf eval: unrecognized arguments: --force (--force is an option of rwf render, "
                                 "rwf data colmap, rwf data downscale and 8 more) (see --help)"),
    (["fit", "image", "--stepz", "1", "--sizes", "3"], "rwf fit image: unrecognized arguments: --stepz --sizes 3 "
                                                       "(did you mean --steps?; did you mean --size?) (see --help)"),
    # an option named like a command: the command is said too
    (["data", "colmap", "a", "b", "--downscale", "2"], "rwf data colmap: unrecognized arguments: --downscale "
                                                       "(--downscale is an option of rwf render, rwf export mesh and "
                                                       "rwf fit nerf, and rwf data downscale a command of its own) "
                                                       "(see --help)"),
    (["eval", "run", "--check"], "rwf eval: unrecognized arguments: --check (rwf data check is a command of its "
                                 "own) (see --help)"),
])
def test_hints_are_given_for_near_spellings_only_and_for_each_option(capsys, tmp_path, argv, line):
    assert one_cli_error(capsys, argv + (["--out", tmp_path / "r"] if argv[0] == "fit" else [])) == f"rwf: error: {line}"
