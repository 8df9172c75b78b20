"""Presets build their dataset into a shared cache once; two fits that start together must not fail on it."""

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from rwf_render.errors import UserError
from scenes import build_once

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("error", [UserError("exists; pass --force to replace it"),
                                   OSError(errno.ENOTEMPTY, "Directory not empty")])
def test_the_second_builder_reuses_a_scene_finished_meanwhile(tmp_path, error):
    """The loser of the race fails either at the check before its rename ("exists") or in the rename itself."""
    out = tmp_path / "scene"
    calls = []

    def lose_the_race(force):  # another process renames its finished scene into place first
        calls.append(force)
        out.mkdir()
        (out / "transforms.json").write_text("{}")
        raise error

    assert build_once(out, "transforms.json", lose_the_race) == out and calls == [False]
    assert build_once(out, "transforms.json", lose_the_race) == out and calls == [False]  # built: not again


def test_a_failed_build_is_still_an_error(tmp_path):
    def fail(force):
        raise UserError("the source is unreadable")

    with pytest.raises(UserError, match="unreadable"):
        build_once(tmp_path / "scene", "transforms.json", fail)


def test_a_folder_left_without_its_marker_is_rebuilt_over(tmp_path, monkeypatch):
    """A build renames only complete folders into place, so a cache folder without its marker is stale (an older
    layout, or files put there by hand). It used to fail every preset fit with "exists; pass --force", which the
    fit's own --force (the run folder's) could not help."""
    from scenes import default

    monkeypatch.setenv("RWF_SCENE_CACHE", str(tmp_path / "cache"))
    stale = tmp_path / "cache" / f"default-v{default.VERSION}-{default.RES}px"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    assert default.prepare(quiet=True) == stale
    assert (stale / "transforms_train.json").is_file() and not (stale / "junk").exists()


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
