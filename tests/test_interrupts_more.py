"""Ctrl+C and SIGTERM at the moments a hunt found them mishandled (30 Nov 2026).

- `rwf render` of a NeRF run moved its frames into place one by one: an interrupt there left part of them and no
  list of them, so the next, shorter render left the rest lingering. The move is now held against interrupts
  (``signals.uninterrupted``): the frames all land, then the command ends as interrupted (exit 130).
- The data tools swap a finished dataset in (``staged_output``): an interrupt between the moves left OUT gone or the
  old dataset hidden beside it. Held alike.
- trimesh catches every exception, KeyboardInterrupt included, so a Ctrl+C during one of its calls was swallowed and
  `rwf eval` of an SDF run finished with exit 0. The signal is now remembered: no output is published after it, and
  the command ends as interrupted.
"""

import os
import signal
import time
import warnings
from pathlib import Path

import pytest

from rwf_render import cli
from rwf_render.signals import interrupt_pending, terminate_like_interrupt, uninterrupted


@pytest.fixture(autouse=True)
def _restore_handlers():
    from rwf_render.signals import restore_signals

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    restore_signals(previous)  # and the flag cleared: later tests write files


def _signal_self(sig=signal.SIGINT):
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # delivered at the next bytecode of the main thread


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_uninterrupted_block_finishes_then_the_interrupt_is_raised(sig):
    terminate_like_interrupt()
    done = []
    with pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            _signal_self(sig)
            done.append("rest of the block")
    assert done == ["rest of the block"] and interrupt_pending()
    terminate_like_interrupt()  # the next command starts afresh
    assert not interrupt_pending()


def test_a_swallowed_interrupt_publishes_no_output(tmp_path):
    from rwf_render.rundir import atomic_write_text

    terminate_like_interrupt()
    try:
        _signal_self()
    except BaseException:  # noqa: BLE001  (as trimesh does)
        pass
    assert interrupt_pending()
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(tmp_path / "metrics.json", "{}")
    assert sorted(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            pytest.fail("an uninterrupted block does not start after an interrupt")


def test_a_command_whose_library_swallowed_ctrl_c_ends_as_interrupted(tmp_path, monkeypatch, capsys):
    from rwf_render import image

    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--out", str(run), "--steps", "2", "--width", "16", "--features", "8",
                     "--quiet", "--device", "cpu"]) == 0

    def swallowing_eval(run, cfg_dict, args):
        try:
            _signal_self()
        except BaseException:  # noqa: BLE001
            pass
        print("{}")  # the figures it would print; nothing written
        return 0

    monkeypatch.setattr(image, "eval_run", swallowing_eval)
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 130
    assert "rwf: interrupted" in capsys.readouterr().err


def test_ctrl_c_while_a_render_moves_its_frames_in_leaves_every_frame_and_their_list(still_life_run, tmp_path,
                                                                                    monkeypatch, capsys):
    from rwf_render.nerf_outputs import MANIFEST

    real, calls = Path.replace, []

    def replace(self, target):
        calls.append(target)
        if len(calls) == 2:
            _signal_self()
        return real(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    out = tmp_path / "frames"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["render", str(still_life_run), "--split", "test", "--out", str(out), "--quiet"]) == 130
    assert "rwf: interrupted" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert len(calls) > 2 and sorted(Path(c).name for c in calls) == sorted(n for n in names if n != MANIFEST)
    assert MANIFEST in names and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ctrl_c_while_a_data_tool_swaps_its_output_in_leaves_the_new_dataset_whole(tmp_path, monkeypatch, capsys):
    from data_tools import common
    from data_tools.cli import main

    tiny = ["--res", "8", "--views", "2", "--val", "0", "--test", "0", "--supersample", "1"]
    out = tmp_path / "out"
    assert main(["data", "synth", "demo", str(out), *tiny]) == 0
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(Path(dst))
        real(src, dst)
        if Path(dst).name == "x" and Path(dst).parent.name.startswith(".out.old-"):  # the old dataset moved aside,
            _signal_self()                                                         # the new one not yet in

    monkeypatch.setattr(common.os, "replace", replace)
    assert main(["data", "synth", "demo", str(out), *tiny, "--views", "3", "--force"]) == 130
    assert calls[-1] == out and (out / "transforms_train.json").is_file()
    assert len(list((out / "train").iterdir())) == 3  # the new dataset, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden old or partial folder beside it


def test_ctrl_c_while_open3d_sets_up_is_an_interrupt_not_a_missing_open3d(tmp_path, monkeypatch):
    """open3d turns a KeyboardInterrupt during its set-up into ImportError("initialization failed"): a Ctrl+C 2 s
    into `rwf fit sdf` said "needs open3d, which cannot be imported; pip install open3d-cpu", and `rwf data synth`
    printed a traceback. Imports of open3d hold the interrupt until the import is done, then raise it."""
    import signal
    import sys

    from rwf_render.signals import import_held

    (tmp_path / "like_open3d_s29.py").write_text(
        "import os, signal, time\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        "    raise ImportError('initialization failed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "like_open3d_s29", raising=False)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        import_held("like_open3d_s29")
    assert "like_open3d_s29" in sys.modules  # the import itself went through
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    with pytest.raises(ImportError, match="no_such_module_s29"):  # a module really absent stays an ImportError
        import_held("no_such_module_s29")
