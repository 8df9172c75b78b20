"""What the command prints around its work: this package's warnings as one ``rwf: warning:`` line, the marching-cubes
export's progress bar (off with --quiet), and the warning that a point export of a white- or black-background fit
on transparent images will be poor.

Every NeRF here is an 8x8-pixel Blender-format scene fitted for 2 steps on a 16^3 grid: seconds on a CPU.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from rwf_render import cli, datasets
from rwf_render.errors import RwfRuntimeWarning, RwfWarning

from conftest import random_views_scene  # noqa: E402  (tests/ is on sys.path under pytest)

TINY = ["--steps", "2", "--quiet", "--target-samples", "1024", "--eval-images", "1", "--grid-resolution", "16",
        "--steps-per-diagonal", "128", "--width", "16", "--features", "8", "--device", "cpu"]


def _scene(root: Path, channels: int = 4) -> Path:
    return random_views_scene(root, {"train": 4, "test": 1}, channels)


def _fit(data: Path, out: Path, *extra: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(out), *TINY, *extra]) == 0
    return out


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- 1: this package's warnings are one line on stderr, in the command only ------------------------------------------
def test_a_missing_frame_is_one_warning_line_not_pythons_warning(tmp_path):
    """Python printed "/.../nerf_data.py:111: UserWarning: ..." and the source line below it."""
    data = _scene(tmp_path / "d")
    (data / "train" / "train_1.png").unlink()
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    env.pop("RWF_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "rwf_render", "fit", "nerf", str(data), "--out", str(tmp_path / "run"),
                           *TINY], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    err = _lines(proc.stderr)
    warned = [line for line in err if "skipped 1 frame(s) of the train split whose image is missing" in line]
    assert warned and all(line == f"rwf: warning: {data}: skipped 1 frame(s) of the train split whose image is "
                                  "missing (first: ./train/train_1)" for line in warned), err
    assert not any("UserWarning" in line or ".py:" in line for line in err), err
    assert not any("load_transforms(" in line for line in err), err  # no source line under it


def test_the_one_line_form_is_the_commands_only(tmp_path, monkeypatch):
    """Inside the command our warnings (RwfWarning) format as one line; any other keeps Python's form, also one
    raised at a line of ours (numpy's divide by zero in our code), and ours too with RWF_DEBUG=1; afterwards (and
    for a library user) Python's form is back, and a caller recording warnings still records them."""
    before = warnings.formatwarning
    monkeypatch.delenv("RWF_DEBUG", raising=False)
    with cli.one_line_warnings():
        ours = warnings.formatwarning("a\nb", RwfWarning, datasets.__file__, 212, "source line")
        runtime = warnings.formatwarning("k", RwfRuntimeWarning, datasets.__file__, 3, "source line")
        theirs = warnings.formatwarning("c", UserWarning, np.__file__, 7, "source line")
        numpy_in_ours = warnings.formatwarning("divide by zero", RuntimeWarning, datasets.__file__, 9, "np.log(0)")
        monkeypatch.setenv("RWF_DEBUG", "1")
        debug = warnings.formatwarning("a", RwfWarning, datasets.__file__, 212, "source line")
    assert ours == "rwf: warning: a b\n" and runtime == "rwf: warning: k\n"
    assert theirs.startswith(f"{np.__file__}:7: UserWarning: c") and "source line" in theirs
    assert numpy_in_ours.startswith(f"{datasets.__file__}:9: RuntimeWarning: divide by zero")
    assert debug.startswith(f"{datasets.__file__}:212: RwfWarning: a")
    assert warnings.formatwarning is before
    data = _scene(tmp_path / "d")
    (data / "train" / "train_1.png").unlink()
    with pytest.warns(UserWarning, match="skipped 1 frame"):
        assert cli.main(["fit", "nerf", str(data), "--out", str(tmp_path / "run"), *TINY]) == 0
    assert warnings.formatwarning is before


# -- 2 and 3: fits on transparent images, on a white and a random background, and on opaque ones ---------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("polish")
    rgba, rgb = _scene(root / "rgba"), _scene(root / "rgb", channels=3)
    return {"white": _fit(rgba, root / "white"), "random": _fit(rgba, root / "random", "--background", "random"),
            "opaque": _fit(rgb, root / "opaque")}


def test_marching_cubes_export_shows_progress_unless_quiet(runs, tmp_path, capsys):
    """--quiet was accepted and did nothing: the grid evaluation (minutes at --res 256) showed no progress at all."""
    args = ["export", "mesh", str(runs["white"]), "--res", "32", "--threshold", "0.01", "--device", "cpu"]
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "a.ply")]) == 0
    shown = capsys.readouterr()
    assert "marching cubes" in shown.err and "100%" in shown.err and "32.8k/32.8k" in shown.err, shown.err
    assert cli.main([*args, "--quiet", "--out", str(tmp_path / "b.ply")]) == 0
    quiet = capsys.readouterr()
    assert quiet.err.strip() == ""  # no bar, and no background warning: marching cubes is not a point export
    assert _lines(quiet.out) == [_lines(shown.out)[0].replace("a.ply", "b.ply")]  # the summary line alone
    assert "faces (density 0.01; " in quiet.out
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


@pytest.mark.parametrize("run, warned", [("white", True), ("random", False), ("opaque", False)])
def test_point_export_of_a_fixed_background_fit_on_transparent_images_warns(runs, tmp_path, capsys, run, warned):
    """README: such a fit paints its background into the scene and its points lie off the surface; the export said
    nothing."""
    capsys.readouterr()
    assert cli.main(["export", "mesh", str(runs[run]), "--pointcloud", "--quiet", "--out", str(tmp_path / "p.ply"),
                     "--device", "cpu"]) == 0
    err = [line for line in _lines(capsys.readouterr().err) if "surface points lie outside the scene box" not in line]
    if not warned:
        assert err == []
        return
    assert len(err) == 1 and err[0].startswith("rwf: warning: ") and "white background" in err[0], err
    assert err[0].endswith("refit with --background random")


def test_poisson_export_of_a_white_background_fit_on_transparent_images_warns(runs, tmp_path, capsys):
    pytest.importorskip("open3d")
    capsys.readouterr()
    cli.main(["export", "mesh", str(runs["white"]), "--poisson", "--quiet", "--out", str(tmp_path / "p.ply"),
              "--device", "cpu"])  # 2 steps: a surface or "too few points", either way after the warning
    err = _lines(capsys.readouterr().err)
    assert err[0].startswith("rwf: warning: ") and err[0].endswith("refit with --background random"), err


def test_sdf_mesh_export_shows_progress_unless_quiet(tmp_path, capsys):
    """--quiet belongs to every mesh export (it used to be refused for sdf runs as a nerf-only option)."""
    run = tmp_path / "sdf"
    assert cli.main(["fit", "sdf", "--out", str(run), "--steps", "5", "--width", "32", "--features", "16",
                     "--mesh-res", "32", "--preview-res", "16", "--eval-points", "4096", "--metric-points", "5000",
                     "--pool", "4096", "--batch", "512", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["export", "mesh", str(run), "--res", "24", "--out", str(tmp_path / "a.ply")]) == 0
    err = capsys.readouterr().err
    assert "marching cubes" in err and "100%" in err, err
    assert cli.main(["export", "mesh", str(run), "--res", "24", "--out", str(tmp_path / "b.ply"), "--quiet"]) == 0
    assert capsys.readouterr().err.strip() == ""
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def test_the_rwf_command_leaves_ctrl_c_to_end_the_exit_silently():
    """A second Ctrl+C a few ms after the first, while torch's exit handlers ran, printed a KeyboardInterrupt
    traceback: main() gives Python's own handler back. The command's entry point then lets SIGINT end the process."""
    import subprocess
    import sys

    code = ("import signal, sys\nfrom rwf_render import cli\nsys.argv = ['rwf', 'eval', '/nonexistent/run']\n"
            "rc = cli.console()\nprint(rc, signal.getsignal(signal.SIGINT) is signal.SIG_DFL)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["2", "True"], (r.stdout, r.stderr)
    from importlib import metadata

    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.name == "rwf"}
    assert scripts == {"rwf": "rwf_render.cli:console"}


def test_a_tilde_inside_an_option_value_is_the_home_folder(tmp_path, monkeypatch, capsys):
    """--out=~/x reaches rwf unexpanded (the shell expands ~ only at a word's start): the run went into ./~/x and was
    printed as ~/x, as though in the home folder."""
    import warnings

    from rwf_render import cli

    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "image", "--size", "16", "--steps", "2", "--width", "16", "--features", "16",
                         "--quiet", "--device", "cpu", "--out=~/runs/img"]) == 0
    assert (home / "runs" / "img" / "config.json").is_file()
    assert not (here / "~").exists()


def test_the_parser_is_built_without_importing_trimesh():
    """Every rwf command, --help included, imported trimesh (about 0.5 s of a 1.9 s `rwf --help`) through the mesh
    modules the parser imports; it is now imported where a mesh is read or written."""
    import subprocess
    import sys

    code = ("import sys\nfrom rwf_render import cli\ncli.build_parser()\nbefore = 'trimesh' in sys.modules\n"
            "from rwf_render.mesh_io import trimesh\nbox = trimesh.creation.box()\n"
            "print(before, 'trimesh' in sys.modules, len(box.faces))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "True", "12"], (r.stdout, r.stderr)


def test_a_run_or_an_image_given_as_a_dataset_is_named_as_such(tmp_path, still_life_run, capsys):
    """A run folder given to `rwf fit nerf` was offered structure from motion on its renders ("photos without
    poses"); an image was read as JSON ("not valid JSON ('utf-8' codec can't decode byte 0x89")."""
    from conftest import one_cli_error
    from rwf_render.imgio import write_image

    said = one_cli_error(capsys, ["fit", "nerf", still_life_run, "--out", tmp_path / "o"])
    assert "a run of rwf fit" in said and "data photos" not in said, said
    write_image(tmp_path / "photo.png", np.zeros((4, 4, 3), np.float32))
    said = one_cli_error(capsys, ["fit", "nerf", tmp_path / "photo.png", "--out", tmp_path / "o"])
    assert "an image, not a dataset" in said and "rwf fit image" in said and "JSON" not in said, said
    assert not (tmp_path / "o").exists()
