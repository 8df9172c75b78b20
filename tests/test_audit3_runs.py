"""Run folders and the fit's run options: what ``--force`` may delete, a full disk while saving a checkpoint,
and options that only mean something beside another one."""

import errno
import io
import json

import numpy as np
import pytest
import torch

from rwf_render import cli, rundir
from rwf_render.imgio import write_image

TINY = ["--steps", "2", "--features", "8", "--width", "16", "--quiet"]


def _image(path):
    write_image(path, np.random.default_rng(0).random((8, 8, 3)).astype(np.float32))
    return path


def _fit(image, out, *extra):
    return cli.main(["fit", "image", str(image), "--out", str(out), *TINY, *extra])


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_force_never_empties_a_folder_of_runs_with_other_files(tmp_path, capsys):
    """``--out allruns --force`` (a slip for allruns/x) once deleted every run, the notes and the data in it."""
    image = _image(tmp_path / "a.png")
    runs = tmp_path / "allruns"
    assert _fit(image, runs / "photo_run") == 0
    (runs / "notes.txt").write_text("what I tried")
    (runs / "data").mkdir()
    (runs / "data" / "b.png").write_bytes(b"precious")
    before = _tree(runs)
    capsys.readouterr()
    assert _fit(image, runs, "--force") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run" in err
    assert _tree(runs) == before


def test_force_never_empties_a_folder_of_nothing_but_runs(tmp_path, capsys):
    """Two runs side by side are a folder of runs, not one run: a --compare's sub-runs are only plain, wn, rwf."""
    image = _image(tmp_path / "a.png")
    runs = tmp_path / "runs"
    assert _fit(image, runs / "first") == 0
    assert _fit(image, runs / "second") == 0
    before = _tree(runs)
    assert _fit(image, runs, "--force") == 2
    assert _tree(runs) == before


@pytest.mark.parametrize("layout", ["checkout", "other_tools_config", "compare_plus_notes", "subrun_not_a_run"])
def test_force_never_empties_a_folder_that_only_looks_like_a_run(tmp_path, capsys, layout):
    image = _image(tmp_path / "a.png")
    out = tmp_path / "proj"
    if layout == "checkout":  # proj/rwf/ is a code checkout, named like a --compare's sub-run
        (out / "rwf" / ".git").mkdir(parents=True)
        (out / "rwf" / "main.py").write_text("print(1)")
    elif layout == "other_tools_config":  # a config.json, but not one of this toolkit's runs
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"name": "my app", "version": 2}))
        (out / "index.js").write_text("//")
    elif layout == "compare_plus_notes":  # a --compare, with the user's notes beside it
        assert _fit(image, out, "--compare") == 0
        (out / "notes.txt").write_text("keep")
    else:  # a folder named like a sub-run that holds the user's files
        (out / "wn").mkdir(parents=True)
        (out / "wn" / "paper.pdf").write_bytes(b"%PDF")
    before = _tree(out)
    capsys.readouterr()
    assert _fit(image, out, "--force") == 2
    assert "not a run" in capsys.readouterr().err
    assert _tree(out) == before


def test_force_still_replaces_a_run_and_a_compare(tmp_path, capsys):
    image = _image(tmp_path / "a.png")
    run, cmp = tmp_path / "run", tmp_path / "cmp"
    assert _fit(image, run) == 0
    (run / "renders").mkdir()  # what `rwf render` adds to a run stays part of it
    (run / "renders" / "x.png").write_bytes(b"old")
    assert _fit(image, run, "--force") == 0
    assert not (run / "renders").exists() and (run / "checkpoint.pt").is_file()
    assert _fit(image, cmp, "--compare") == 0
    assert _fit(image, cmp, "--compare", "--force") == 0
    assert sorted(p.name for p in cmp.iterdir() if p.name != rundir.READ_LOCK) == [
        "compare.json", "compare.md", "compare.png", "plain", "rwf", "wn"]


def test_force_keeps_the_camera_path_saved_by_the_viewer(tmp_path, capsys):
    """The viewer saves RUN/camera_path.json, the user's work; a refit with --force used to delete it."""
    image = _image(tmp_path / "a.png")
    run = tmp_path / "run"
    assert _fit(image, run) == 0
    (run / "camera_path.json").write_text('{"camera_path": []}')
    (run / "notes.json").write_text("{}")  # any other file of the run goes
    assert _fit(image, run, "--force") == 0
    assert (run / "camera_path.json").read_text() == '{"camera_path": []}'
    assert not (run / "notes.json").exists() and (run / "checkpoint.pt").is_file()
    keep_only = tmp_path / "paths"  # a folder holding only a camera path: nothing to replace, the fit goes in
    keep_only.mkdir()
    (keep_only / "camera_path.json").write_text("{}")
    assert _fit(image, keep_only) == 0
    assert (keep_only / "camera_path.json").read_text() == "{}" and (keep_only / "config.json").is_file()


class _FullDisk(io.RawIOBase):
    """A file on a disk with 1 kB left: writing past it fails with ENOSPC."""

    def __init__(self):
        self.written = 0

    def writable(self):
        return True

    def write(self, b):
        if self.written + len(b) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(b)
        return len(b)


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """torch's zip writer reports ENOSPC as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``;
    the user sees which file could not be written and why, and no temporary file is left behind."""
    real_save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        real_save(obj, io.BufferedWriter(_FullDisk()), *args, **kwargs)

    with pytest.raises(RuntimeError, match="inline_container"):  # the premise: what torch does on a full disk
        save_on_a_full_disk({"w": torch.zeros(10_000)}, None)
    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    run = tmp_path / "run"
    assert _fit(_image(tmp_path / "a.png"), run) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.pt" in err and "No space left on device" in err
    assert "Traceback" not in err and not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("extra, option", [
    (["--port", "9000"], "--port"),
    (["--host", "0.0.0.0"], "--host"),
    (["--port", "8080"], "--port"),  # typed, even at its default value
])
def test_live_viewer_address_without_view_is_refused(tmp_path, capsys, extra, option):
    out = tmp_path / "run"
    assert _fit(_image(tmp_path / "a.png"), out, *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and "--view" in err and not out.exists()


def test_resume_and_force_together_are_refused(tmp_path, capsys):
    image, run = _image(tmp_path / "a.png"), tmp_path / "run"
    assert _fit(image, run) == 0
    before = (run / "history.csv").read_text()
    capsys.readouterr()
    assert _fit(image, run, "--resume", "--force") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--force" in err
    assert (run / "history.csv").read_text() == before


def test_every_device_option_says_what_auto_means():
    parser = cli.build_parser()
    helps = []
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if action.dest == "device":
                helps.append(action.help)
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
    assert len(helps) >= 6  # fit image, sdf, nerf; eval; render; export mesh; view
    assert all(h and "default: auto" in h for h in helps)


@pytest.mark.parametrize("argv", [["eval"], ["render"], ["export", "mesh"]])
def test_a_command_on_a_compare_folder_names_its_runs(tmp_path, capsys, argv):
    image, cmp = _image(tmp_path / "a.png"), tmp_path / "cmp"
    assert _fit(image, cmp, "--compare") == 0
    capsys.readouterr()
    assert cli.main([*argv, str(cmp)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--compare" in err and all(str(cmp / p) in err for p in ("plain", "wn", "rwf"))
