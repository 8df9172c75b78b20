"""Mutation-testing gaps of session 30: behaviour of the last session's changes that no test pinned down (each test
here fails on one or more single-line mutants of the code it names, and passes on the code as it is)."""

import argparse
import json
import os
import time
import types

import numpy as np
import pytest
import torch

from rwf_render.errors import UserError


# -------------------------------------------------------------------------------------------- data_tools.check
def test_one_shared_focal_length_over_images_of_one_size_is_no_warning(tmp_path):
    """The usual nerfstudio-style dataset (fl_x at the top, no w/h, every photo the same size) must check clean:
    the "share one focal length in pixels but the images have N sizes" warning is for two sizes or more."""
    from data_tools.check import check_dataset
    from rwf_render.cameras import look_at
    from rwf_render.imgio import write_image

    root = tmp_path / "ds"
    root.mkdir()
    frames = []
    for i in range(2):
        write_image(root / f"{i}.png", np.full((30, 40, 3), 0.5, np.float32))
        frames.append({"file_path": f"{i}.png",
                       "transform_matrix": look_at([4.0, 2.0 * i, 1.0], (0.0, 0.0, 0.0)).tolist() + [[0, 0, 0, 1]]})
    (root / "transforms.json").write_text(json.dumps({"fl_x": 40.0, "fl_y": 40.0, "frames": frames}))
    errors, warnings = check_dataset(root, log=lambda *a: None)
    assert errors == [] and [w for w in warnings if "sizes" in w] == [], warnings


# ---------------------------------------------------------------------------------------- viewer.render_loop
def test_the_work_clock_is_the_threads_cpu_time_only_for_one_cpu_thread():
    """Beside a trainer (one intra-op thread on the CPU) a viewer thread's work is its own CPU time; with several
    threads, on a GPU (the thread waits for the device: its CPU time is not the work), or alone (threads None) it is
    wall time. A source without a device computes on the CPU. The process's CPU time would charge the trainer's."""
    from viewer.render_loop import work_clock

    assert work_clock(1, torch.device("cpu")) is time.thread_time
    assert work_clock(1, None) is time.thread_time  # a source without a device attribute
    assert work_clock(1, torch.device("cuda")) is time.perf_counter  # a device object only: no GPU needed
    assert work_clock(2, torch.device("cpu")) is time.perf_counter
    assert work_clock(None, torch.device("cpu")) is time.perf_counter


# ------------------------------------------------------------------------------------------------ rundir
def test_a_folder_of_the_users_files_is_named_as_not_a_run_before_force_is_suggested(tmp_path):
    """--out naming a folder of photos without --force was told "pass --force to overwrite", and --force then refused
    it as not a run: the refusal that --force cannot lift comes first."""
    from rwf_render.rundir import prepare_run_dir

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(UserError, match="is not a run") as e:
        prepare_run_dir(photos)
    assert "pass --force" not in str(e.value)
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg"]


def test_resume_does_not_sweep_a_validation_folder_that_links_elsewhere(tmp_path, monkeypatch):
    """A run's val/ that is a link to another folder (say a shared renders folder) is not the run's: --resume's sweep
    of leftover temporaries stays out of it."""
    from rwf_render import rundir

    monkeypatch.setattr(rundir, "_FOUND", {})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    theirs = elsewhere / ".step_000040.png.gt7188wp.tmp"
    theirs.write_bytes(b"another writer's")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(elsewhere, run / "val")
    rundir._remove_temporaries(run)
    assert theirs.exists()


# ------------------------------------------------------------------------------------------------ cli
def test_home_expansion_takes_a_bare_tilde_and_leaves_other_tildes(tmp_path, monkeypatch):
    """``--out=~`` is the home folder; ``~name`` (a folder named so, or another user's home) is not expanded: only
    ``~`` and ``~/...`` are the user's home, as the shell expands them."""
    from rwf_render.cli import _expand_home

    monkeypatch.setenv("HOME", str(tmp_path))
    args = argparse.Namespace(out="~", scene="~root/x", data="~backup", run="~/runs/a", steps=3)
    _expand_home(args)
    assert args.out == str(tmp_path) and args.run == str(tmp_path / "runs" / "a")
    assert args.scene == "~root/x" and args.data == "~backup" and args.steps == 3


# ------------------------------------------------------------------------------------------------ api
def test_nerf_query_refuses_non_finite_colours_even_where_the_density_is_finite(tmp_path):
    """query() promises finite figures or a UserError: a point whose colour is NaN came back as NaN when its
    density was finite (the check looked at densities only, or at points where both were non-finite)."""
    from rwf_render.api import NeRFRun

    def field(x, d):
        rgb = torch.full((len(x), 3), 0.5)
        rgb[1, 0] = float("nan")
        return rgb, torch.ones(len(x))

    run = NeRFRun(tmp_path, {}, types.SimpleNamespace(field=field), torch.device("cpu"))
    with pytest.raises(UserError, match="no finite value at 1 of them"):
        run.query(np.zeros((3, 3)))
    ok = types.SimpleNamespace(field=lambda x, d: (torch.full((len(x), 3), 0.5), torch.ones(len(x))))
    rgb, sigma = NeRFRun(tmp_path, {}, ok, torch.device("cpu")).query(np.zeros((3, 3)))
    assert np.isfinite(rgb).all() and np.isfinite(sigma).all()
