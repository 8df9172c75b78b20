"""Audit 3, the NeRF render path: absurd frame counts and camera paths refused before anything is allocated, write
failures of frames said in one line naming the user's --out, progress over the final test renders of a fit, an
export --crop outside the scene named as such, and the defaults of the render and export options stated in --help.

One 2-step fit of a 16x12 random dataset serves the tests that need a run; every render here is a few pixels.
"""

import json
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from rwf_render import camera_path, cli, frame_folder, nerf_outputs, nerf_poisson, render_paths
from rwf_render.camera_path import MAX_FRAMES, load_camera_path, save_camera_path
from rwf_render.errors import UserError

from test_audit_nerf_input import _dataset  # noqa: E402  (tests/ is on sys.path under pytest)
from test_nerf_bad_input_more import _pose  # noqa: E402

TINY = ["--steps", "2", "--eval-images", "1", "--grid-resolution", "16", "--steps-per-diagonal", "32", "--width",
        "16", "--features", "8", "--target-samples", "512", "--device", "cpu"]


def _fit(data: Path, run: Path, *extra: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(run), *TINY, *extra]) == 0


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("audit3") / "data", n=5)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audit3_run") / "run"
    _fit(data, out, "--quiet")
    return out


def _error(capsys, argv, code: int = 2) -> str:
    """Run ``rwf argv``: it must exit ``code`` with one 'rwf: error:' line and no traceback; returns that line."""
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main([str(a) for a in argv]) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and err[-1].startswith("rwf: error:") and "Traceback" not in "\n".join(err), err
    return err[-1]


def _no_staging_left(folder: Path) -> bool:
    return not any(p.name.endswith(".tmp") for p in folder.iterdir())


# -- A: frame counts ---------------------------------------------------------------------------------------------
def test_an_absurd_orbit_or_interpolate_is_refused_before_any_camera_is_made(run, tmp_path, capsys, monkeypatch):
    """`--orbit 1000000000` grew to 24 GB and was killed by the kernel (exit 137); now a stated limit, exit 2, and
    the cameras are never made (the functions that would make them fail the test if called)."""
    monkeypatch.setattr(nerf_outputs, "orbit_cameras", lambda *a: pytest.fail("orbit cameras made"))
    monkeypatch.setattr(render_paths, "orbit_cameras", lambda *a: pytest.fail("orbit cameras made"))
    monkeypatch.setattr(render_paths, "training_path_cameras", lambda *a: pytest.fail("path cameras made"))
    out = tmp_path / "o"
    for argv, named in ((["--orbit", 10**9], "--orbit"), (["--orbit", MAX_FRAMES + 1], "--orbit"),
                        (["--interpolate", 10**9], "--interpolate"),
                        (["--interpolate", MAX_FRAMES], "--interpolate")):  # N (K - 1) + 1 frames, K > 1
        line = _error(capsys, ["render", run, *argv, "--out", out, "--quiet"])
        assert named in line and f"{MAX_FRAMES:,}" in line, line
    assert not out.exists() and _no_staging_left(tmp_path)


def test_fps_has_an_upper_bound(run, tmp_path, capsys):
    line = _error(capsys, ["render", run, "--orbit", "2", "--video", "--fps", "5000", "--out", tmp_path / "o"])
    assert "--fps" in line and "1000" in line
    assert not (tmp_path / "o").exists()


def test_a_video_is_streamed_frame_by_frame_not_kept_in_memory(run, tmp_path, monkeypatch):
    """Frame i reaches the video before frame i + 1 is written (the frames used to be kept in two lists, 24 bytes
    a pixel, until the end); the video holds every frame, each close to its PNG."""
    import imageio.v3 as iio

    events = []
    real_append, real_write = nerf_outputs.VideoWriter.append, frame_folder.write_image

    def append(self, frame):
        events.append("video")
        real_append(self, frame)

    def write(path, pixels, bits=8):
        events.append(Path(path).name)
        real_write(path, pixels, bits)

    monkeypatch.setattr(nerf_outputs.VideoWriter, "append", append)
    monkeypatch.setattr(frame_folder, "write_image", write)
    out = tmp_path / "v"
    assert cli.main(["render", str(run), "--orbit", "3", "--video", "--fps", "3", "--out", str(out), "--quiet"]) == 0
    assert events.index("video") < events.index("rgb_0001.png")
    assert events.count("video") == 6  # rgb and depth, three frames each
    frames = iio.imread(out / "rgb.mp4", plugin="FFMPEG")
    assert frames.shape == (3, 12, 16, 3)
    for i in range(3):
        png = iio.imread(out / f"rgb_{i:04d}.png")[..., :3].astype(float)
        assert np.abs(frames[i].astype(float) - png).mean() < 12, i  # H.264 at quality 5 on 16x12 noise


# -- B: camera_path.json ------------------------------------------------------------------------------------------
def _keyframes() -> tuple[np.ndarray, list]:
    return np.stack([np.array(_pose(0, 4)), np.array(_pose(1, 4))]), [50.0, 50.0]


@pytest.fixture
def path_file(tmp_path):
    """A valid camera path (two keyframes, 2 fps, 1 s); ``edit(obj)`` writes a changed copy and returns its path."""
    obj = save_camera_path(tmp_path / "ok.json", *_keyframes(), 16, 12, fps=2, seconds=1)

    def edit(drop_frames: bool, **changes) -> Path:
        new = {k: v for k, v in obj.items() if not (drop_frames and k == "camera_path")}
        new.update(changes)
        p = tmp_path / "edited.json"
        p.write_text(json.dumps(new))  # Python's json writes NaN and Infinity, and reads them back
        return p
    return edit


@pytest.mark.parametrize("drop_frames, changes, named", [
    (True, {"fps": math.inf}, "'fps'"), (False, {"fps": math.inf}, "'fps'"), (True, {"fps": math.nan}, "'fps'"),
    (True, {"fps": -3}, "'fps'"), (True, {"fps": "24"}, "'fps'"), (False, {"fps": 10**6}, "'fps'"),
    (True, {"seconds": math.nan}, "'seconds'"), (True, {"seconds": "long"}, "'seconds'"),
    (True, {"seconds": math.inf}, "'seconds'"), (True, {"seconds": 0}, "'seconds'"),
    (True, {"seconds": 1e9}, "frames"), (True, {"fps": 1000, "seconds": 101}, "frames"),
    (False, {"render_width": 100000, "render_height": 100000}, "render size"),
    (False, {"render_width": math.inf}, "render_width"), (False, {"render_height": math.nan}, "render_height"),
    (False, {"render_width": 640.7}, "render_width"), (False, {"render_height": True}, "render_height"),
    (False, {"render_width": "640"}, "render_width")])
def test_impossible_camera_path_settings_are_one_readable_error(path_file, monkeypatch, drop_frames, changes, named):
    """fps Infinity was an OverflowError, seconds NaN or "long" a ValueError, seconds 1e9 and a 100000 px render ran
    out of memory; each is a UserError naming the setting, before any frame is interpolated."""
    monkeypatch.setattr(camera_path, "interpolate", lambda *a, **k: pytest.fail("frames interpolated"))
    with pytest.raises(UserError) as e:
        load_camera_path(path_file(drop_frames, **changes))
    assert named in str(e.value) and "\n" not in str(e.value)


def test_a_camera_path_at_the_limits_still_loads(path_file, monkeypatch):
    """MAX_FRAMES frames at MAX_FPS: accepted (the interpolation is replaced by a stand-in, to keep the test fast)."""
    asked = []

    def stand_in(c2w, fov, n, is_cycle=False):
        asked.append(n)
        return np.tile(np.eye(4), (2, 1, 1)), np.full(2, 50.0)

    monkeypatch.setattr(camera_path, "interpolate", stand_in)
    *_, w, h, fps = load_camera_path(path_file(True, fps=camera_path.MAX_FPS, seconds=MAX_FRAMES / camera_path.MAX_FPS))
    assert asked == [MAX_FRAMES] and (w, h, fps) == (16, 12, camera_path.MAX_FPS)


def test_camera_path_dict_refuses_an_infinite_rate_as_a_value_error():
    """The viewer's writer raised OverflowError (round of inf) where it documents ValueError."""
    for fps, seconds in ((math.inf, 1), (24, math.inf), (24, math.nan), (1000, 1000)):
        with pytest.raises(ValueError):
            camera_path.camera_path_dict(*_keyframes(), 16, 12, fps, seconds)


def test_render_of_an_infinite_rate_camera_path_is_exit_2(run, path_file, tmp_path, capsys):
    line = _error(capsys, ["render", run, "--camera-path", path_file(False, fps=math.inf), "--video",
                           "--out", tmp_path / "o"])
    assert "'fps'" in line and not (tmp_path / "o").exists()


# -- C: write failures ---------------------------------------------------------------------------------------------
def test_a_full_disk_while_writing_an_exr_frame_is_one_line_naming_the_output(run, tmp_path, capsys, monkeypatch):
    """OpenEXR says a full disk as a RuntimeError (a traceback); now one line, exit 1 as every failure of the machine
    (cli.dispatch), naming the frame in --out rather than the staging folder, and nothing is left behind."""
    real = frame_folder.write_image

    def full(path, pixels, bits=8):
        if Path(path).name == "depth_0001.exr":
            raise RuntimeError(f'Failed to write pixel data to image file "{path}". No space left on device')
        real(path, pixels, bits)

    monkeypatch.setattr(frame_folder, "write_image", full)
    out = tmp_path / "frames"
    line = _error(capsys, ["render", run, "--orbit", "3", "--out", out, "--quiet"], code=1)
    assert f"{out / 'depth_0001.exr'}: No space left on device" in line and ".tmp" not in line, line
    assert not out.exists() and _no_staging_left(tmp_path)


def test_a_failing_video_write_names_the_video_in_out(run, tmp_path, capsys, monkeypatch):
    def broken(self, frame):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(nerf_outputs.VideoWriter, "append", broken)
    out = tmp_path / "frames"
    line = _error(capsys, ["render", run, "--orbit", "2", "--video", "--out", out, "--quiet"], code=1)
    assert f"{out / 'rgb.mp4'}: Broken pipe" in line, line
    assert not out.exists() and _no_staging_left(tmp_path)


def test_an_unwritable_out_is_exit_2_naming_out_not_the_staging_folder(run, tmp_path, capsys, monkeypatch):
    """Tests run as root, who may write anywhere: the refusal of the file system is simulated."""
    def refused(*a, **k):
        raise OSError(30, "Read-only file system", str(tmp_path / ".frames.nn46v5ca.tmp"))

    out = tmp_path / "frames"
    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkdtemp", refused)
        line = _error(capsys, ["render", run, "--orbit", "2", "--out", out, "--quiet"])
    assert line == f"rwf: error: {out}: cannot write the frames there (Read-only file system)"
    out.mkdir()  # an existing folder that cannot be written (a read-only mount)
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == out else real_access(p, mode, **k))
    line = _error(capsys, ["render", run, "--orbit", "2", "--out", out, "--quiet"])
    assert str(out) in line and "not writable" in line and list(out.iterdir()) == []


# -- D: progress over the final renders of a fit -----------------------------------------------------------------
def test_the_final_renders_of_a_fit_show_their_count_and_progress_unless_quiet(data, run, tmp_path, capsys):
    """The fit says how many views of what size it renders for its scores and shows a bar over them; --quiet
    shows neither; the scores are the same either way."""
    capsys.readouterr()
    loud = tmp_path / "loud"
    _fit(data, loud)
    err = capsys.readouterr().err
    assert "rendering 1 test view at 16x12" in err, err  # the single-file dataset holds one frame out of five
    assert "test views: 100%" in err and "1/1" in err and "dB" in err
    quiet = tmp_path / "quiet"
    _fit(data, quiet, "--quiet")
    err = capsys.readouterr().err
    assert "views" not in err, err
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (loud, quiet))
    assert (a["psnr"], a["ssim"], a["test_images"]) == (b["psnr"], b["ssim"], b["test_images"])


def test_test_metrics_progress_is_on_stderr_only_when_asked(run, capsys):
    from rwf_render.nerf import load_scene_model
    from rwf_render.nerf_data import load_split
    from rwf_render.nerf_task import test_metrics

    model = load_scene_model(run, "cpu")
    split = load_split(model.cfg.data, "train", 1)
    capsys.readouterr()
    quiet = test_metrics(model, split, "white", 3, progress=False)
    assert capsys.readouterr().err == ""
    loud = test_metrics(model, split, "white", 3, progress=True, split="val")
    err = capsys.readouterr().err
    assert "val views" in err and "3/3" in err
    assert quiet["psnr"] == loud["psnr"] and quiet["test_images"] == loud["test_images"] == 3


# -- E: export --crop outside the scene ---------------------------------------------------------------------------
def test_a_crop_box_outside_the_scene_is_named_as_such(run, tmp_path, capsys):
    line = _error(capsys, ["export", "mesh", run, "--crop", 100, 100, 100, 101, 101, 101, "--out", tmp_path / "m.ply",
                           "--quiet"])
    assert "--crop" in line and "lies outside the outermost of the 3 cascades" in line and "threshold" not in line, \
        line  # (this run's opaque photos took 3 cascades: the field was fitted out to the outermost)
    line = _error(capsys, ["export", "mesh", run, "--crop", -0.1, -0.1, -0.1, 0.1, 0.1, 0.1, "--res", 8,
                           "--threshold", 1e30, "--out", tmp_path / "m.ply", "--quiet"])
    assert "inside --crop" in line and "larger --crop" in line, line
    assert not (tmp_path / "m.ply").exists()


def test_poisson_writes_beside_the_marching_cubes_mesh_not_over_it(run, monkeypatch):
    """``rwf export mesh RUN`` then ``--poisson`` (the README's order) replaced RUN/mesh.ply without a word."""
    pytest.importorskip("open3d")
    written = []
    monkeypatch.setattr(nerf_poisson, "export_poisson", lambda model, box, out, fmt, args: written.append(out) or 0)
    assert cli.main(["export", "mesh", str(run), "--poisson", "--quiet"]) == 0
    assert written == [run / "mesh_poisson.ply"]


# -- F: defaults in --help ----------------------------------------------------------------------------------------
def test_render_and_export_options_state_their_defaults():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    mesh = next(a for a in sub["export"]._actions if a.dest == "what").choices["mesh"]
    want = {sub["render"]: ["--downscale", "--fps", "--scale"],
            mesh: ["--res", "--threshold", "--crop", "--poisson-depth", "--poisson-trim", "--min-component"]}
    for p, options in want.items():
        helps = {s: a.help or "" for a in p._actions for s in a.option_strings}
        for option in options:
            assert "default" in helps[option], (option, helps[option])


def test_a_run_whose_dataset_no_longer_loads_says_why_its_cameras_are_missing(tmp_path, capsys):
    """A dataset edited after the fit (here a focal length written as a string) used to leave only "training
    cameras unavailable"; the loader's reason now comes along."""
    data, run = _dataset(tmp_path / "data", n=5), tmp_path / "run"
    _fit(data, run, "--quiet")
    meta = json.loads((data / "transforms.json").read_text())
    meta["fl_x"] = "14"
    (data / "transforms.json").write_text(json.dumps(meta))
    line = _error(capsys, ["render", run, "--orbit", 2, "--out", tmp_path / "o", "--quiet"])
    assert "training cameras unavailable" in line and "fl_x: expected a number" in line, line
    line = _error(capsys, ["export", "mesh", run, "--pointcloud", "--out", tmp_path / "p.ply", "--quiet"])
    assert "fl_x: expected a number" in line, line
