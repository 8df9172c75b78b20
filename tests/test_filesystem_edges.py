"""File-system edge cases (a helper's hunt on mounts, links, full and read-only disks): a render into a folder on
another file system, a checkpoint lost before --resume, links to nothing on the way to an output, a data tool's
output that is a mount point, messages that named hidden temporary files, staging left by a kill -9."""

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import one_cli_error
from rwf_render import cli, locks, rundir
from rwf_render.imgio import write_image
from test_nerf_bad_input_more import TINY
from test_shape_image_bad_input_more import IMG_TINY

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links, locks and mounts")

SMALL = ["--downscale", "8", "--quiet"]
SYNTH = ["--res", "8", "--views", "2", "--val", "0", "--test", "0", "--supersample", "1"]


@pytest.fixture(scope="module")
def nerf_run(tmp_path_factory):
    from data_tools.synth import demo_mesh, render_dataset

    root = tmp_path_factory.mktemp("fs")
    render_dataset(demo_mesh(), root / "scene", res=32, n_views=6, n_val=1, n_test=1, log=lambda *a, **k: None)
    assert cli.main(["fit", "nerf", str(root / "scene"), "--out", str(root / "run"), *TINY]) == 0
    return root / "run"


def _files(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# -- rwf render: frames moved in from inside OUT; an earlier render's frames go only after the moves -------------------
def test_render_into_an_existing_folder_stages_inside_it(nerf_run, tmp_path, monkeypatch):
    """OUT may be a mount point (or a link to another disk): a move from the folder above it fails with EXDEV.
    Simulated: a move whose source is not inside OUT fails as across file systems."""
    out = tmp_path / "frames"
    assert cli.main(["render", str(nerf_run), "--orbit", "5", "--out", str(out), *SMALL]) == 0
    real = Path.replace

    def across_devices(src, dst):
        if Path(src).parent.parent != Path(dst).parent:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        return real(src, dst)
    monkeypatch.setattr(Path, "replace", across_devices)
    assert cli.main(["render", str(nerf_run), "--orbit", "3", "--out", str(out), *SMALL]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{k}_{i:04d}.{ext}" for i in range(3) for k, ext in
                            (("rgb", "png"), ("depth", "exr"), ("depth", "png"))] + [".rwf_render.json"])


def test_render_whose_move_fails_keeps_the_earlier_frames(nerf_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "frames"
    assert cli.main(["render", str(nerf_run), "--orbit", "5", "--out", str(out), *SMALL]) == 0
    before = sorted(p.name for p in out.iterdir())
    real, calls = Path.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src), None, str(dst))
        return real(src, dst)
    monkeypatch.setattr(Path, "replace", second_fails)
    assert cli.main(["render", str(nerf_run), "--orbit", "3", "--out", str(out), *SMALL]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'depth_0000.png'}" in err and ".tmp" not in err
    assert sorted(p.name for p in out.iterdir()) == before  # frames 3 and 4 were deleted before the moves


# -- links to nothing on the way to an output: said before any work ---------------------------------------------------
def test_outputs_through_a_link_to_nothing(nerf_run, tmp_path, capsys):
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "no_such_folder")
    image = tmp_path / "p.png"
    write_image(image, np.random.default_rng(0).random((12, 16, 3)).astype(np.float32))
    for argv in (["render", nerf_run, "--orbit", "2", "--out", link / "frames", *SMALL],
                 ["fit", "image", image, "--out", link / "run", *IMG_TINY],
                 ["data", "synth", "demo", link / "ds", *SYNTH]):
        line = one_cli_error(capsys, argv)
        assert f"{link} is a link to {tmp_path / 'no_such_folder'}, which does not exist" in line, line
    assert not (tmp_path / "no_such_folder").exists()


# -- --resume of a run whose checkpoint is gone -------------------------------------------------------------------------
def _image_run(tmp_path, *extra):
    image = tmp_path / "p.png"
    write_image(image, np.random.default_rng(1).random((12, 16, 3)).astype(np.float32))
    run = tmp_path / "run"
    assert cli.main(["fit", "image", str(image), "--out", str(run), *IMG_TINY, *extra]) == 0
    return run


def test_resume_refuses_a_finished_run_without_its_checkpoint(tmp_path, capsys):
    run = _image_run(tmp_path)
    (run / rundir.CHECKPOINT).unlink()
    history = (run / rundir.HISTORY).read_text()
    line = one_cli_error(capsys, ["fit", "image", "--resume", "--out", run, "--steps", "4"])
    assert "checkpoint.pt: missing, though the fit finished" in line
    assert (run / rundir.HISTORY).read_text() == history and not (run / rundir.CHECKPOINT).exists()


def test_resume_refuses_a_checkpoint_link_to_nothing(nerf_run, tmp_path, capsys):
    import shutil

    run = Path(shutil.copytree(nerf_run, tmp_path / "copy"))
    (run / rundir.CHECKPOINT).unlink()
    (run / rundir.CHECKPOINT).symlink_to(tmp_path / "elsewhere.pt")
    line = one_cli_error(capsys, ["fit", "nerf", "--resume", "--out", run, "--quiet"])
    assert "checkpoint.pt: a link to" in line and "start the fit over at step 0" in line


def test_resume_refuses_history_past_the_first_checkpoint(tmp_path, capsys):
    run = _image_run(tmp_path, "--ckpt-every", "1")
    (run / rundir.CHECKPOINT).unlink()
    (run / rundir.METRICS).unlink()
    line = one_cli_error(capsys, ["fit", "image", "--resume", "--out", run, "--steps", "4"])
    assert "history.csv records step 2 (a checkpoint is written every 1 steps)" in line


def test_resume_after_a_kill_while_the_first_checkpoint_was_written_starts_over(tmp_path, capsys):
    """The history row of a checkpoint step is written before the checkpoint: a kill during the first checkpoint's
    write left a row at that step and no checkpoint, and --resume refused the run as one whose checkpoint was lost."""
    run = _image_run(tmp_path, "--ckpt-every", "2")  # 2 steps: the row of step 2, then the checkpoint
    (run / rundir.CHECKPOINT).unlink()
    (run / rundir.METRICS).unlink()
    capsys.readouterr()
    assert cli.main(["fit", "image", "--resume", "--out", str(run), "--steps", "3"]) == 0
    assert [row["step"] for row in rundir.read_history(run / rundir.HISTORY)] == [1, 2, 3]


def test_resume_before_the_first_checkpoint_starts_over(tmp_path, capsys):
    run = _image_run(tmp_path)  # 2 steps, a checkpoint every 500: a kill before it leaves history rows only
    (run / rundir.CHECKPOINT).unlink()
    (run / rundir.METRICS).unlink()
    capsys.readouterr()
    assert cli.main(["fit", "image", "--resume", "--out", str(run), "--steps", "3"]) == 0
    assert "no checkpoint yet; training starts at step 0" in capsys.readouterr().err
    assert json.loads((run / rundir.METRICS).read_text())["steps"] == 3


def test_resume_of_a_nerf_run_without_a_checkpoint_says_so(nerf_run, tmp_path, capsys):
    import shutil

    run = Path(shutil.copytree(nerf_run, tmp_path / "copy"))
    (run / rundir.CHECKPOINT).unlink()
    (run / rundir.METRICS).unlink()
    capsys.readouterr()
    assert cli.main(["fit", "nerf", "--resume", "--out", str(run), "--quiet"]) == 0
    assert "no checkpoint yet; training starts at step 0" in capsys.readouterr().err


def test_resume_checks_the_run_folder_before_training(tmp_path, capsys, monkeypatch):
    run = _image_run(tmp_path)
    (run / "val").write_text("not the renders' folder")
    assert "val: not a folder" in one_cli_error(capsys, ["fit", "image", "--resume", "--out", run, "--steps", "4"])
    (run / "val").unlink()
    (run / "curve.png").unlink()
    (run / "curve.png").mkdir()  # failed the fit after training, naming a hidden temporary file
    assert "curve.png: not a file" in one_cli_error(capsys, ["fit", "image", "--resume", "--out", run, "--steps", "4"])
    (run / "curve.png").rmdir()
    real = os.access
    monkeypatch.setattr(rundir.os, "access", lambda p, mode: False if Path(p) == run else real(p, mode))
    line = one_cli_error(capsys, ["fit", "image", "--resume", "--out", run, "--steps", "4"])
    assert line == f"rwf: error: {run}: cannot write the run's files there (folder not writable)"
    assert json.loads((run / rundir.METRICS).read_text())["steps"] == 2


def test_eval_of_a_run_it_cannot_write_is_refused_before_the_renders(nerf_run, capsys, monkeypatch):
    """rwf eval writes metrics.json: on a read-only run it rendered and scored every test view (minutes), printed
    the figures, then failed at the write (exit 1). Now one line and exit 2 before any render."""
    from rwf_render import nerf

    real = os.access
    monkeypatch.setattr(rundir.os, "access", lambda p, mode: False if Path(p) == nerf_run else real(p, mode))
    monkeypatch.setattr(nerf, "test_metrics", lambda *a, **k: pytest.fail("scored before checking the folder"))
    line = one_cli_error(capsys, ["eval", nerf_run])
    assert line == f"rwf: error: {nerf_run}: cannot write the run's files there (folder not writable)"


# -- messages name the output, not the hidden file written first --------------------------------------------------------
def test_atomic_writes_name_the_output(tmp_path, monkeypatch):
    target = tmp_path / "curve.png"
    target.mkdir()  # a folder where the file goes
    with pytest.raises(OSError) as e:
        rundir.atomic_write_text(target, "x")
    assert e.value.filename == str(target) and e.value.filename2 is None
    with pytest.raises(OSError) as e, rundir.atomic_path(target) as tmp:
        Path(tmp).write_text("x")
    assert e.value.filename == str(target)

    def no_space(prefix="", suffix="", dir=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(dir, prefix + "abcdefgh" + suffix))
    monkeypatch.setattr(rundir.tempfile, "mkstemp", no_space)
    for write in (lambda p: rundir.atomic_write_text(p, "x"), lambda p: rundir.atomic_path(p).__enter__()):
        with pytest.raises(OSError) as e:
            write(tmp_path / "metrics.json")
        assert e.value.filename == str(tmp_path / "metrics.json") and e.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


# -- data tools: OUT a mount point, a failed swap, errors inside the staging folder, long names -------------------------
def test_data_tool_refuses_a_mount_point_before_the_work(tmp_path, capsys, monkeypatch):
    from data_tools import common

    out = tmp_path / "mnt"
    out.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(common.os.path, "ismount", lambda p: Path(p) == out or real(p))
    line = one_cli_error(capsys, ["data", "synth", "demo", out, *SYNTH])
    assert "is a mount point" in line and str(out / "dataset") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt"] and not any(out.iterdir())


def test_data_tool_swap_that_fails_restores_the_old_dataset(tmp_path, capsys, monkeypatch):
    from data_tools import common
    from data_tools.cli import main

    out = tmp_path / "out"
    assert main(["data", "synth", "demo", str(out), *SYNTH]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    real = os.replace

    def stage_move_fails(src, dst):
        if Path(src).name.startswith(".out.partial-"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(src), None, str(dst))
        return real(src, dst)
    monkeypatch.setattr(common.os, "replace", stage_move_fails)
    capsys.readouterr()
    assert main(["data", "synth", "demo", str(out), *SYNTH, "--views", "3", "--force"]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and ".partial-" not in err and ".old-" not in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden folder left beside it


def test_data_tool_error_inside_staging_names_out(tmp_path):
    from data_tools.common import staged_output

    out = tmp_path / "ds"
    with pytest.raises(OSError) as e, staged_output(out, force=False) as stage:
        (stage / "images").mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(stage / "images" / "a.jpg"))
    assert e.value.filename == str(out / "images" / "a.jpg")
    with pytest.raises(OSError) as e, staged_output(out, force=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # trimesh's export names no file
    assert e.value.filename == str(out)
    assert list(tmp_path.iterdir()) == []


def test_data_tool_output_with_a_long_name(tmp_path):
    from data_tools.cli import main

    out = tmp_path / ("d" * 245)
    assert main(["data", "synth", "demo", str(out), *SYNTH]) == 0
    assert (out / "transforms_train.json").is_file()


# -- staging left by a kill -9: swept by the next command once its maker is gone ---------------------------------------
def _lock_holder(path: Path) -> subprocess.Popen:
    """Another process holding an exclusive flock on ``path`` (as a live command holds its staging or temporary)
    until its stdin is closed."""
    script = textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(path)!r}, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _old(path: Path) -> Path:
    path.mkdir()
    (path / "half.png").write_bytes(b"x")
    past = time.time() - 2 * locks.STALE_AFTER_S
    os.utime(path, (past, past))
    return path


def test_stale_staging_is_swept_and_a_live_one_kept(nerf_run, tmp_path):
    from data_tools.cli import main

    dead_data = _old(tmp_path / ".out.partial-abcd1234")
    dead_old = _old(tmp_path / ".out.old-abcd1234")
    dead_render = _old(tmp_path / ".frames.abcd1234.tmp")
    live = _old(tmp_path / ".out.partial-live0000")
    other = _old(tmp_path / ".notes.partial-abcd1234")  # another output's: not this command's to sweep
    holder = _lock_holder(live)
    try:
        assert main(["data", "synth", "demo", str(tmp_path / "out"), *SYNTH]) == 0
        assert cli.main(["render", str(nerf_run), "--orbit", "2", "--out", str(tmp_path / "frames"), *SMALL]) == 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not dead_data.exists() and not dead_old.exists() and not dead_render.exists()
    assert live.is_dir() and other.is_dir()


def test_a_bind_mount_is_a_mount_point(tmp_path):
    """os.path.ismount sees another device only: a bind mount of a folder of the same file system passed, and the
    data tool failed at its final swap, after all the work."""
    from data_tools.common import _mount_point

    target = tmp_path / "my data"
    target.mkdir()
    info = tmp_path / "mountinfo"
    info.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                    f"97 22 8:1 /src {str(target).replace(' ', chr(92) + '040')} rw - ext4 /dev/sda1 rw\n")
    assert _mount_point(target, str(info)) and not _mount_point(tmp_path, str(info))


class _Payload:
    """What a malicious checkpoint holds: unpickling it would call ``touch`` on ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("write", ["pickle", "torch"])
def test_a_checkpoint_holding_python_objects_is_refused_unrun_in_one_line(tmp_path, capsys, write):
    """A pickle renamed checkpoint.pt (a fuzzing hunt): never executed (weights_only), and said in one line of our
    own, not torch's two warning lines and its advice to load with weights_only=False. What torch.save wrote is
    named as Python objects; a plain pickle stops the safe loader at its first opcode, as a damaged file does."""
    import pickle

    import torch

    run = _image_run(tmp_path)
    marker = tmp_path / "PWNED"
    payload = {"model": _Payload(marker)}
    if write == "pickle":
        (run / "checkpoint.pt").write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, run / "checkpoint.pt")
    line = one_cli_error(capsys, ["eval", run])
    says = "not a checkpoint of this toolkit (it holds Python objects" if write == "torch" else "cannot load checkpoint"
    assert says in line and "weights_only" not in line
    assert not marker.exists()


# -- temporary files left by a kill -9: swept by the next writer in that folder once stale and unheld -----------------
def _stale_file(path: Path) -> Path:
    path.write_bytes(b"half a file")
    past = time.time() - 2 * locks.STALE_AFTER_S
    os.utime(path, (past, past))
    return path


def aged_and_held(path: Path) -> None:
    """Make ``path`` look stale (untouched for twice the sweep's age) and check that some process holds its lock."""
    import fcntl

    past = time.time() - 2 * locks.STALE_AFTER_S
    os.utime(path, (past, past))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_killed_writers_temporaries_are_swept_by_the_next_write_there(tmp_path, monkeypatch):
    """A render or export killed during its write left ``.NAME.XXXXXXXX.tmp`` for good (only --resume swept a run's);
    the README promised the next command writing that file there removes it once 30 s old and unheld (a filesystem
    hunt). Only the file's own: another program's hidden temporary of that shape beside it stays (a review)."""
    monkeypatch.setattr(rundir, "_FOUND", {})
    dead = [_stale_file(tmp_path / ".m.ply.qqn0a93d.tmp.ply"), _stale_file(tmp_path / ".m.ply.abcd1234.tmp")]
    other = _stale_file(tmp_path / ".thesis.docx.k3j9x_2a.tmp")
    fresh = tmp_path / ".m.ply.fresh000.tmp.ply"
    fresh.write_bytes(b"a writer started a moment ago")
    held = _stale_file(tmp_path / ".m.ply.held0000.tmp.ply")
    mine = _stale_file(tmp_path / "notes.tmp")  # not a name rwf gives its temporaries
    holder = _lock_holder(held)
    try:
        with rundir.atomic_path(tmp_path / "m.ply") as tmp:
            Path(tmp).write_text("ply")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not any(p.exists() for p in dead)
    assert fresh.exists() and held.exists() and mine.exists() and (tmp_path / "m.ply").read_text() == "ply"
    assert other.exists()
    # the folder is listed once per process (a render writes thousands of frames): a temporary that appears later
    # is left to the next command
    again = _stale_file(tmp_path / ".x.json.abcd1234.tmp")
    rundir.atomic_write_text(tmp_path / "x.json", "{}")
    assert again.exists()


def test_a_live_writers_temporary_is_locked_while_it_writes(tmp_path, monkeypatch):
    """What keeps a sweep off a write in progress: the writer's lock on its own temporary (an old mtime alone would
    not: a slow video writer may leave its file untouched for a while)."""
    seen = []

    def write(f):
        tmp = next(p for p in tmp_path.iterdir() if p.name.startswith(".out.json."))
        aged_and_held(tmp)
        rundir.sweep_temporaries(tmp_path, "out.json", fresh=True)  # another command's sweep, here
        seen.append(tmp.exists())
        f.write(b"{}")

    rundir.atomic_write(tmp_path / "out.json", write)
    assert seen == [True] and (tmp_path / "out.json").read_text() == "{}"


def test_a_killed_renders_staging_beside_an_existing_output_folder_is_swept(nerf_run, tmp_path):
    """A render killed before its --out folder existed staged beside it; once a later render had made the folder,
    renders staged and swept only inside it, and the dead staging stayed."""
    out = tmp_path / "frames"
    out.mkdir()
    dead = _old(tmp_path / ".frames.be9o598a.tmp")
    assert cli.main(["render", str(nerf_run), "--orbit", "2", "--out", str(out), *SMALL]) == 0
    assert not dead.exists() and len(list(out.glob("rgb_*.png"))) == 2


@pytest.mark.parametrize("argv", [["fit", "image", "--steps", "1", "--quiet", "--out", "{long}"],
                                  ["render", "{long}"], ["eval", "{long}"], ["fit", "image", "{long}.png"],
                                  ["data", "check", "{long}"]])
def test_a_name_too_long_is_bad_input(tmp_path, capsys, argv):
    """A path component over 255 bytes failed the first stat of it: exit 1, "a failure of the machine"."""
    long = str(tmp_path / ("a" * 300))
    line = one_cli_error(capsys, [a.replace("{long}", long) for a in argv])
    assert "File name too long" in line


def test_a_run_folder_that_cannot_be_made_leaves_no_folder_on_the_way(tmp_path, capsys):
    out = tmp_path / "x" / "y" / ("a" * 300) / "run"
    assert "cannot create the run directory" in one_cli_error(capsys, ["fit", "image", "--steps", "1", "--quiet",
                                                                       "--out", out])
    assert sorted(tmp_path.iterdir()) == []


@pytest.fixture
def image_run_dir(tmp_path):
    run = tmp_path / "img"
    assert cli.main(["fit", "image", "--size", "16", "--out", str(run), *IMG_TINY]) == 0
    return run


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` as a read-only file system shows it (root passes permission bits, so os.access is asked)."""
    real = os.access

    def access(path, mode, *a, **k):
        if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
            return False
        return real(path, mode, *a, **k)
    monkeypatch.setattr(os, "access", access)


def test_render_and_export_into_a_folder_they_cannot_write_are_refused_before_the_work(image_run_dir, tmp_path,
                                                                                      capsys, monkeypatch):
    """They rendered, or ran marching cubes for a minute, and then failed at the write with exit 1."""
    from rwf_render import image

    _read_only(monkeypatch, image_run_dir)
    monkeypatch.setattr(image, "render", lambda *a, **k: pytest.fail("rendered before checking"))
    line = one_cli_error(capsys, ["render", image_run_dir])
    assert "cannot write there" in line and "not writable" in line
    # eval of an image run writes nothing there: a read-only run can be scored
    assert cli.main(["eval", str(image_run_dir)]) == 0


def test_an_output_under_a_file_says_so(image_run_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    line = one_cli_error(capsys, ["render", image_run_dir, "--out", tmp_path / "afile" / "x.png"])
    assert "afile is a file, not a folder" in line
