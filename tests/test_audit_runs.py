"""Audit of the common command line, run directories, checkpoints and resume: impossible options that used to
train NaN fields, print tracebacks or replace a run before failing; damaged checkpoints and configs; a run folder
written by two fits at once; temporaries a kill -9 leaves; Ctrl+C during start-up. All in-process and tiny."""

import json
import os
import signal
import shutil

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.imgio import write_image

from test_shape_image_bad_input_more import IMG_TINY as TINY  # noqa: E402  (tests/ is on sys.path under pytest)
from test_shape_image_bad_input_more import assert_one_error, run_cli  # noqa: E402


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A 12x16 photo and a 2-step image run of it (copy it before changing it)."""
    root = tmp_path_factory.mktemp("audit")
    image = root / "photo.png"
    write_image(image, np.random.default_rng(0).random((12, 16, 3)).astype(np.float32))
    assert cli.main(["fit", "image", str(image), "--out", str(root / "run"), *TINY]) == 0
    return {"image": image, "run": root / "run"}


def copy_run(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    return run


# -- options that cannot give a field: refused before anything is written, an old run kept ---------------------
@pytest.mark.parametrize("extra", [
    ["--width", "10000000"],                 # used to fail allocating after the folder was made (exit 1)
    ["--features", "100000000000"],
    ["--width", str(2**62)],                 # torch's size computation overflows: a traceback
    ["--depth", "100000000"],                # a Python loop over 1e8 layers: minutes, then memory
    ["--rwf-mu", "nan"], ["--rwf-mu", "1000"], ["--rwf-sigma", "inf"], ["--rwf-sigma", "-1"],  # NaN fields, exit 0
    ["--sigma", "1e38"], ["--encoding", "pe", "--n-freqs", "200"],                              # NaN encodings
    ["--lr", "1e38"], ["--lr-final", "10", "--schedule", "step", "--decay-every", "1", "--steps", "400"],  # Adam
    ["--seed", "-1"], ["--seed", str(2**70)],                                                    # tracebacks
])
def test_impossible_field_options_keep_the_old_run_and_write_nothing(made, tmp_path, capsys, extra):
    run = copy_run(made, tmp_path)
    before = snapshot(run)
    argv = ["fit", "image", str(made["image"]), *TINY, *extra]
    assert_one_error(*run_cli(capsys, *argv, "--out", run, "--force"))
    assert snapshot(run) == before
    assert_one_error(*run_cli(capsys, *argv, "--out", tmp_path / "new"))
    assert not (tmp_path / "new").exists()


def test_sdf_seed_out_of_range_is_one_line(tmp_path, capsys):
    """numpy refused the negative seed deep in the sdf sampler, with a traceback."""
    assert_one_error(*run_cli(capsys, "fit", "sdf", "--seed", "-1", "--out", tmp_path / "s"))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("scale", ["1e308", "1e7"])
def test_render_scale_that_overflows_the_pixel_count(made, capsys, scale):
    """round(height * 1e308) raised OverflowError (a traceback) in the image and sdf renderers."""
    assert "--scale" in assert_one_error(*run_cli(capsys, "render", made["run"], "--scale", scale))


# -- damaged checkpoints and configs -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["resume", "eval", "render"])
def test_a_checkpoint_that_is_not_a_dict_is_one_error(made, tmp_path, capsys, command):
    run = copy_run(made, tmp_path)
    torch.save(torch.zeros(3), run / "checkpoint.pt")
    argv = {"resume": ["fit", "image", "--out", run, "--resume", "--steps", "4", "--quiet"],
            "eval": ["eval", run], "render": ["render", run, "--out", tmp_path / "r.png"]}[command]
    assert "not a checkpoint" in assert_one_error(*run_cli(capsys, *argv))


def test_eval_of_a_checkpoint_without_its_training_state_is_one_error(made, tmp_path, capsys):
    run = copy_run(made, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["step"]
    torch.save(state, run / "checkpoint.pt")
    assert "step" in assert_one_error(*run_cli(capsys, "eval", run))


@pytest.mark.parametrize("step", [-3, 2.5])
def test_resume_refuses_a_checkpoint_step_that_is_no_count(made, tmp_path, capsys, step):
    run = copy_run(made, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["step"] = step
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(run)
    assert_one_error(*run_cli(capsys, "fit", "image", "--out", run, "--resume", "--steps", "4", "--quiet"))
    assert snapshot(run) == before


@pytest.mark.parametrize("key, value", [
    ("eval_every", 0), ("ckpt_every", 0), ("schedule", "bogus"), ("loss_weights", [1]), ("seed", "x"),
    ("seed", 10**30), ("device", "tpu"), ("lr", -1.0), ("steps", "abc"),
])
def test_resume_refuses_a_hand_edited_train_setting(made, tmp_path, capsys, key, value):
    """These failed mid-fit with ZeroDivisionError, ValueError, TypeError, ... tracebacks (or trained on)."""
    run = copy_run(made, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"][key] = value
    (run / "config.json").write_text(json.dumps(cfg))
    before = snapshot(run)
    extra = [] if key == "steps" else ["--steps", "4"]
    line = assert_one_error(*run_cli(capsys, "fit", "image", "--out", run, "--resume", *extra, "--quiet"))
    assert key in line
    assert snapshot(run) == before


def test_nerf_configs_with_impossible_train_or_field_settings_are_refused():
    from rwf_render.errors import UserError
    from rwf_render.nerf_config import NeRFConfig, check_config

    for edit in (lambda c: setattr(c.train, "schedule", "bogus"), lambda c: setattr(c.train, "eval_every", 0),
                 lambda c: setattr(c.field.trunk, "width", 2**62), lambda c: setattr(c.field.pos, "m", 2**62),
                 lambda c: setattr(c.field.trunk, "depth", 10**8), lambda c: setattr(c.field, "appearance_dim", 2**62)):
        cfg = NeRFConfig(data="x")
        check_config(cfg)
        edit(cfg)
        with pytest.raises(UserError):
            check_config(cfg)


# -- one fit per run folder; what a kill leaves behind -----------------------------------------------------------
def test_a_run_folder_another_process_is_writing_is_refused(made, tmp_path, capsys):
    """Two fits into one --out at once both used to succeed, leaving one's config.json beside the other's
    checkpoint; a fit holds the folder until it ends (here a second open file stands for the other process)."""
    import fcntl

    for resume in (False, True):
        run = copy_run(made, tmp_path / str(resume)) if resume else tmp_path / "busy"
        run.mkdir(exist_ok=True)
        before = snapshot(run)
        fd = os.open(run, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            extra = ["--resume", "--steps", "3"] if resume else [str(made["image"]), *TINY]
            line = assert_one_error(*run_cli(capsys, "fit", "image", "--out", run, *extra, "--quiet"))
            assert "another rwf process" in line
        finally:
            os.close(fd)
        assert snapshot(run) == before
    # released at the end of each command: the same folder works again right after, in this process too
    assert cli.main(["fit", "image", "--out", str(tmp_path / "True" / "run"), "--resume", "--steps", "3",
                     "--quiet"]) == 0
    assert cli.main(["fit", "image", "--out", str(tmp_path / "True" / "run"), "--resume", "--steps", "4",
                     "--quiet"]) == 0


def test_resume_removes_the_temporaries_a_kill_left(made, tmp_path, capsys):
    run = copy_run(made, tmp_path)
    stale = [run / ".checkpoint.pt.ab12_xyz.tmp", run / ".reconstruction.png.q0w9e8r7.tmp.png"]
    for path in stale:
        path.write_bytes(b"half a file")
    kept = run / "notes.tmp"
    kept.write_text("mine")
    assert cli.main(["fit", "image", "--out", str(run), "--resume", "--steps", "3", "--quiet"]) == 0
    assert not any(path.exists() for path in stale) and kept.read_text() == "mine"


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    """torch.save's OSError has no file name: the one-line message said only "No space left on device"."""
    from rwf_render import rundir

    def full(f):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as raised:
        rundir.atomic_write(tmp_path / "checkpoint.pt", full)
    assert raised.value.errno == 28 and raised.value.filename == str(tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(torch, "save", lambda *a, **k: full(None))
    code, err = run_cli(capsys, "fit", "image", "--out", tmp_path / "run", *TINY)
    assert code == 1 and err.strip().endswith("(RWF_DEBUG=1 shows the traceback)")
    assert "checkpoint.pt: No space left on device" in err and "Traceback" not in err
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "run").iterdir())


def test_ctrl_c_while_the_pipelines_import_exits_130_without_a_traceback(monkeypatch, capsys):
    """A KeyboardInterrupt inside an import used to end in a traceback, or in another library's error when it
    caught it half-imported; the interrupt now waits for the imports and exits 130."""
    real = cli.build_parser
    finished = []

    def build_parser():
        os.kill(os.getpid(), signal.SIGINT)
        parser = real()
        finished.append(True)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    assert cli.main(["fit", "image", "--help"]) == 130
    assert finished and "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_command_line_starts_without_importing_torch():
    """``rwf`` holds Ctrl+C from the moment it builds its parser; torch (two seconds of import) used to load before
    that, through the package's own exports, so an early Ctrl+C ended in a traceback. The exports now load on
    first use."""
    import subprocess
    import sys

    probe = ("import sys, rwf_render, rwf_render.cli; assert 'torch' not in sys.modules, 'torch'; "
             "from rwf_render import NeuralField, UserError; assert 'torch' in sys.modules; "
             "assert set(rwf_render.__all__) <= set(dir(rwf_render))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
