"""Presets build their dataset into a shared cache once; two fits that start together must not fail on it."""

import subprocess
import sys
from pathlib import Path

import pytest

from rwf_render.errors import UserError
from scenes import build_once

ROOT = Path(__file__).resolve().parents[1]


def test_the_second_builder_reuses_a_scene_finished_meanwhile(tmp_path):
    out = tmp_path / "scene"
    calls = []

    def lose_the_race():  # another process renames its finished scene into place first
        calls.append(1)
        out.mkdir()
        (out / "transforms.json").write_text("{}")
        raise UserError(f"{out}: exists; pass --force to replace it")

    assert build_once(out, "transforms.json", lose_the_race) == out and calls == [1]
    assert build_once(out, "transforms.json", lose_the_race) == out and calls == [1]  # built: not again


def test_a_failed_build_is_still_an_error(tmp_path):
    def fail():
        raise UserError("the source is unreadable")

    with pytest.raises(UserError, match="unreadable"):
        build_once(tmp_path / "scene", "transforms.json", fail)
    half = tmp_path / "half"  # a folder without its marker is not a finished scene

    def leave_half():
        half.mkdir()
        raise UserError(f"{half}: exists; pass --force to replace it")

    with pytest.raises(UserError, match="exists"):
        build_once(half, "transforms.json", leave_half)


def test_two_processes_prepare_the_built_in_scene_together(tmp_path):
    code = "from scenes import default; print(default.prepare(quiet=True))"
    env = {"PYTHONPATH": str(ROOT), "RWF_SCENE_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), results
    outs = {Path(o.strip()) for o, _, _ in results}
    assert len(outs) == 1 and (outs.pop() / "transforms_train.json").is_file()
