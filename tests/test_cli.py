"""The ``rwf`` command's error contract: input errors exit 2, failures of the machine exit 1, both in one line."""

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.errors import UserError, out_of_memory


def _parser_raising(exc: BaseException) -> argparse.ArgumentParser:
    parser = cli.Parser(prog="rwf")

    def func(args):
        raise exc
    parser.set_defaults(func=func)
    return parser


@pytest.mark.parametrize("exc, code, words", [
    (UserError("bad.json: not valid JSON"), 2, "bad.json: not valid JSON"),
    (PermissionError(13, "Permission denied", "/data/run/metrics.json"), 1,
     "/data/run/metrics.json: Permission denied"),
    (OSError(28, "No space left on device", "/data/run/checkpoint.pt"), 1, "No space left on device"),
    (MemoryError(), 1, "out of memory"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1, "Tried to allocate 2.00 GiB"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"), 1,
     "out of memory (can't allocate memory: you tried to allocate 40000000000000 bytes"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_each_failure_is_one_line_with_its_exit_code(exc, code, words, capsys, monkeypatch):
    monkeypatch.delenv("RWF_DEBUG", raising=False)
    assert cli.dispatch(_parser_raising(exc), []) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_a_bug_keeps_its_traceback_and_debug_keeps_every_traceback(monkeypatch):
    monkeypatch.delenv("RWF_DEBUG", raising=False)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        cli.dispatch(_parser_raising(RuntimeError("shape mismatch")), [])
    monkeypatch.setenv("RWF_DEBUG", "1")
    with pytest.raises(PermissionError):
        cli.dispatch(_parser_raising(PermissionError(13, "Permission denied", "/x")), [])


def test_an_out_folder_that_cannot_be_made_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = cli.main(["fit", "image", "--steps", "1", "--quiet", "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot create the run directory" in err
    assert blocker.read_text() == "not a folder"


def test_resuming_from_another_runs_checkpoint_is_a_user_error(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["fit", "image", "--steps", "2", "--quiet", "--out", str(a)]) == 0
    assert cli.main(["fit", "image", "--steps", "2", "--features", "16", "--quiet", "--out", str(b)]) == 0
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())
    before = (b / "history.csv").read_text()
    capsys.readouterr()
    assert cli.main(["fit", "image", "--resume", "--steps", "4", "--quiet", "--out", str(b)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match this run's config.json" in err and "size mismatch" in err
    assert (b / "history.csv").read_text() == before


def test_force_replaces_a_run_but_never_a_folder_of_other_files(tmp_path, capsys):
    data = tmp_path / "photos"
    data.mkdir()
    (data / "a.png").write_bytes(b"precious")
    code = cli.main(["fit", "image", "--steps", "1", "--quiet", "--force", "--out", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and "not a run" in err and (data / "a.png").read_bytes() == b"precious"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_permissions_of_a_plain_open(tmp_path, monkeypatch, umask, mode):
    """mkstemp makes 0600 files; a file written atomically gets what a plain open() gives under the umask."""
    import stat

    from rwf_render import rundir

    monkeypatch.setattr(rundir, "_UMASK", umask)
    rundir.write_json(tmp_path / "m.json", {"a": 1})
    with rundir.atomic_path(tmp_path / "x.bin") as tmp:
        Path(tmp).write_bytes(b"1")
    for name in ("m.json", "x.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


@pytest.mark.parametrize("kind, argv, option", [
    ("image", ["render", "{run}", "--split", "test"], "--split"),
    ("image", ["render", "{run}", "--orbit", "3", "--video"], "--orbit"),
    ("sdf", ["export", "mesh", "{run}", "--threshold", "3"], "--threshold"),
    ("sdf", ["export", "mesh", "{run}", "--pointcloud"], "--pointcloud"),
    ("nerf", ["export", "mesh", "{run}", "--level", "0.1"], "--level"),
])
def test_an_option_of_another_kind_of_run_is_refused_not_ignored(tmp_path, capsys, kind, argv, option):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(f'{{"kind": "{kind}"}}')
    assert cli.main([a.format(run=run) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{option} applies to" in err and f"{kind} run" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_sigterm_unwinds_like_ctrl_c_so_cleanup_runs(tmp_path):
    """``kill`` (SIGTERM) must run the same cleanup as Ctrl+C: a staging file made in a ``finally`` is removed and
    the exit code is 130, where Python's default would die on the spot and leave it behind."""
    import signal
    import subprocess
    import sys
    import time

    staging = tmp_path / ".staging"
    script = f"""
import sys, time
from pathlib import Path
from rwf_render import cli
p = cli.Parser(prog="rwf")
def func(args):
    Path({str(staging)!r}).write_text("partial")
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        Path({str(staging)!r}).unlink()
p.set_defaults(func=func)
sys.exit(cli.dispatch(p, []))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    start = time.time()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.time() - start < 30
    assert "interrupted" in err and "Traceback" not in err
    assert not staging.exists()


def test_an_interrupted_fit_saves_at_a_step_boundary_and_resumes_there(tmp_path):
    """Ctrl+C or SIGTERM during a fit: the step in flight finishes, a checkpoint is written at once (not only
    every --ckpt-every steps), exit 130; --resume continues from exactly that step."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    fit = [sys.executable, "-m", "rwf_render", "fit", "image", "--size", "32", "--features", "16", "--width", "32",
           "--quiet", "--out", str(run), "--eval-every", "1", "--ckpt-every", "100000"]
    proc = subprocess.Popen(fit + ["--steps", "100000"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "history.csv").is_file() or len((run / "history.csv").read_text().splitlines()) < 4:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    step = int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])
    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert step >= 3 and int(float(rows[-1].split(",")[0])) == step
    done = subprocess.run(fit + ["--resume", "--steps", str(step + 2)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming {run} at step {step}/{step + 2}" in done.stderr
    import json
    assert json.loads((run / "metrics.json").read_text())["steps"] == step + 2


def test_image_compare_resumes_and_refuses_a_single_param(tmp_path, capsys):
    """--compare with --param is refused in one line, and a --compare run resumes all three of its runs."""
    out = tmp_path / "cmp"
    tiny = ["fit", "image", "--size", "16", "--features", "8", "--width", "16", "--quiet", "--out", str(out)]
    assert cli.main(tiny + ["--compare", "--param", "wn", "--steps", "2"]) == 2
    assert "--compare trains every parameterization" in capsys.readouterr().err and not out.exists()
    assert cli.main(tiny + ["--compare", "--steps", "2"]) == 0
    assert cli.main(tiny + ["--compare", "--resume", "--steps", "3"]) == 0
    import json
    for param in ("plain", "wn", "rwf"):
        assert json.loads((out / param / "metrics.json").read_text())["steps"] == 3


def test_force_refuses_an_out_holding_the_input_and_accepts_an_interrupted_compare(tmp_path, capsys):
    """--force would delete the image being fitted when --out is its folder; a --compare interrupted before its
    first config.json leaves only empty sub-run folders, which --force may replace."""
    from rwf_render.imgio import write_image

    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "a.png", np.random.default_rng(0).random((8, 8, 3)).astype(np.float32))
    (folder / "config.json").write_text('{"kind": "image"}')  # even a folder that looks like a run
    before = (folder / "a.png").read_bytes()
    tiny = ["--steps", "1", "--features", "8", "--width", "16", "--quiet", "--force"]
    assert cli.main(["fit", "image", str(folder / "a.png"), "--out", str(folder), *tiny]) == 2
    assert "holds the input" in capsys.readouterr().err and (folder / "a.png").read_bytes() == before
    cmp = tmp_path / "cmp"
    (cmp / "plain").mkdir(parents=True)
    assert cli.main(["fit", "image", str(folder / "a.png"), "--out", str(cmp), "--compare", *tiny]) == 0
    assert all((cmp / p / "metrics.json").is_file() for p in ("plain", "wn", "rwf"))


def test_out_of_memory_is_recognized_on_a_torch_without_torch_out_of_memory_error(monkeypatch):
    """torch < 2.5 (allowed by setup.py) has only torch.cuda.OutOfMemoryError."""
    monkeypatch.delattr(torch, "OutOfMemoryError")
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not out_of_memory(RuntimeError("shape mismatch"))


def test_an_sdf_run_saved_with_an_even_vote_count_still_loads():
    """Odd --vote-dirs is a rule for new fits; runs saved before it (vote_dirs 4) must still render and export."""
    from rwf_render.sdf_options import check_options
    from rwf_render.shape_task import SDFConfig

    cfg = SDFConfig()
    cfg.vote_dirs = 4
    check_options(cfg)  # raises UserError if the fit-time rule leaked into the check of saved configs
    cfg.vote_dirs = 10_000
    with pytest.raises(UserError, match="--vote-dirs"):
        check_options(cfg)


def test_abbreviated_options_are_refused(tmp_path, capsys):
    """argparse's prefix matching read ``rwf fit sdf --res 32`` as ``--resume`` with a mesh named 32; options are
    now matched whole, so a prefix is an unknown option: exit 2, nothing written."""
    run = tmp_path / "run"
    assert cli.main(["fit", "sdf", "--res", "32", "--out", str(run)]) == 2
    assert "unrecognized arguments: --res" in capsys.readouterr().err
    assert cli.main(["fit", "image", "--ste", "5", "--out", str(run)]) == 2
    assert "--ste" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("argv, says", [
    (["fit", "image", "", "--steps", "2"], "an empty value as an argument"),
    (["fit", "image", "--out", "", "--steps", "2"], "an empty value for --out"),
    (["fit", "image", "--out=", "--steps", "2"], "an empty value for --out"),
    (["render", " "], "an empty value as an argument"),
    (["fit", "image", "--quiet", ""], "an empty value as an argument"),  # --quiet takes none: not its value
])
def test_an_empty_argument_is_refused_not_read_as_left_out(tmp_path, monkeypatch, capsys, argv, says):
    """A fuzzing hunt: rwf fit image "" fitted the built-in image into runs/ and --out "" wrote to the default run
    folder, as if the argument were absent (a script's unset variable); now one line, exit 2, nothing written."""
    from conftest import one_cli_error  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    assert says in one_cli_error(capsys, argv)
    assert list(tmp_path.iterdir()) == []
