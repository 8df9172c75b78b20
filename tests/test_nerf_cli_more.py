"""Gaps of the NeRF commands a user meets: `rwf eval` of a dataset without a test split, the frame rate of a camera
path video, progress of a point-cloud export, and `--background learned` on transparent images.

Every NeRF here is an 8x8-pixel Blender-format scene fitted for 2 steps on a 16^3 grid: seconds on a CPU.
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from rwf_render import cli
from rwf_render.cameras import look_at

from conftest import RANDOM_VIEWS_RADIUS as RADIUS  # noqa: E402  (tests/ is on sys.path under pytest)
from conftest import random_views_scene as _scene  # noqa: E402

TINY = ["--steps", "2", "--quiet", "--target-samples", "1024", "--eval-images", "1", "--grid-resolution", "16",
        "--steps-per-diagonal", "128", "--width", "16", "--features", "8", "--device", "cpu"]


def _fit(data: Path, out: Path, *extra: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli.main(["fit", "nerf", str(data), "--out", str(out), *TINY, *extra])


def _one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rwf: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 2-step fit of a scene with train, val and test splits."""
    root = tmp_path_factory.mktemp("cli_more")
    data = _scene(root / "data", {"train": 4, "val": 1, "test": 2})
    assert _fit(data, root / "run") == 0
    return root / "run"


# -- 1: rwf eval of a dataset without a test split scores val, else train, as the fit does ----------------------------
@pytest.mark.parametrize("counts, split", [({"train": 3, "val": 2}, "val"), ({"train": 3}, "train")])
def test_eval_without_a_test_split_scores_the_split_the_fit_scored(tmp_path, capsys, counts, split):
    """`rwf eval` refused such a run ("no test split to evaluate") though the fit had scored val or train."""
    data, run = _scene(tmp_path / "d", counts), tmp_path / "run"
    assert _fit(data, run) == 0
    fitted_metrics = json.loads((run / "metrics.json").read_text())
    assert fitted_metrics["psnr_split"] == split
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    printed, saved = json.loads(captured.out), json.loads((run / "metrics.json").read_text())
    assert printed["psnr_split"] == saved["psnr_split"] == split
    assert saved["test_images"] == counts[split]  # the whole split
    note = [line for line in captured.err.splitlines() if line.strip() and f"rwf: {split} view " not in line]
    assert len(note) == 1 and "no test split" in note[0] and split in note[0], note  # (and a line per view)
    if split == "train":  # the fit scored --eval-images of the training views, evenly spaced; eval all of them
        assert fitted_metrics["test_images"] == 1 < saved["test_images"]  # TINY: --eval-images 1


def test_eval_with_a_test_split_scores_it_and_says_nothing_more(fitted, capsys):
    capsys.readouterr()
    assert cli.main(["eval", str(fitted), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["psnr_split"] == "test" and metrics["test_images"] == 2 and math.isfinite(metrics["psnr"])
    assert "no test split" not in captured.err


def test_eval_says_when_it_replaces_the_fits_figures_over_the_same_views(fitted, tmp_path, capsys):
    """A run of an earlier version scored otherwise (SSIM's window, alpha-weighted downscaling): `rwf eval` replaced
    its figures over the same views without a word, as image and SDF evals warn (a helper's hunt)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fitted, run)
    saved = json.loads((run / "metrics.json").read_text())
    for views, warned in ((2, True), (1, False)):  # the fit scored all 2 test views / only 1 of them
        (run / "metrics.json").write_text(json.dumps({**saved, "test_images": views, "psnr": 99.0}))
        capsys.readouterr()
        assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
        err = capsys.readouterr().err
        assert ("psnr differ from the fit's" in err and "99.0000), now replaced" in err) == warned, err
        assert json.loads((run / "metrics.json").read_text())["psnr"] < 99


def test_eval_of_a_checkpoint_newer_than_the_figures_records_its_steps(fitted, tmp_path, capsys):
    """A --resume killed after a later checkpoint, before its final figures: `rwf eval` put the new weights' PSNR
    beside the old step count, seconds and psnr_train, and blamed the dataset (a filesystem hunt). The figures are
    now the checkpoint's, with its steps and seconds, and the warning names the steps."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(fitted, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["steps"] == state["step"] == 2
    (run / "metrics.json").write_text(json.dumps({**saved, "steps": 1, "seconds": 0.5, "psnr_train": 99.0}))
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "held the figures of step 1, the checkpoint is at step 2" in err and "dataset changed" not in err
    now = json.loads((run / "metrics.json").read_text())
    assert now["steps"] == 2 and now["seconds"] == pytest.approx(state["seconds"], abs=1e-3)
    assert "psnr_train" not in now and math.isfinite(now["psnr"]) and now["test_images"] == 2
    # no figures of the fit at all (killed before its first evaluation): eval's own, with the checkpoint's steps
    (run / "metrics.json").unlink()
    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2


# -- 2: a typed --fps wins over a camera path's rate; an untyped one takes the file's --------------------------------
@pytest.mark.parametrize("fps_option, expected", [([], 3), (["--fps", "7"], 7), (["--fps", "24"], 24)])
def test_camera_path_video_frame_rate(fitted, tmp_path, fps_option, expected):
    """The path file's rate silently won over a typed --fps (also --fps 24, the default typed)."""
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v3 as iio

    from rwf_render.camera_path import save_camera_path

    keys = np.tile(np.eye(4), (2, 1, 1))
    for k, a in enumerate((0.0, 1.0)):
        keys[k, :3] = look_at([RADIUS * math.cos(a), RADIUS * math.sin(a), 1.0], (0.0, 0.0, 0.0)).numpy()
    save_camera_path(tmp_path / "path.json", keys, [40.0, 40.0], 8, 8, fps=3, seconds=1)
    out = tmp_path / "frames"
    assert cli.main(["render", str(fitted), "--camera-path", str(tmp_path / "path.json"), "--video", "--out",
                     str(out), "--device", "cpu", *fps_option]) == 0
    assert len(list(out.glob("rgb_*.png"))) == 3  # the path's frames either way: only the playback rate changes
    for name in ("rgb.mp4", "depth.mp4"):
        assert float(iio.immeta(out / name, plugin="FFMPEG")["fps"]) == pytest.approx(expected), name


# -- 3: a point-cloud export shows its progress over the training cameras, unless --quiet ----------------------------
def test_pointcloud_export_shows_progress_unless_quiet(fitted, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(["export", "mesh", str(fitted), "--pointcloud", "--out", str(tmp_path / "a.ply"),
                     "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "point cloud" in err and "4/4" in err, err  # the fit's 4 training cameras
    assert cli.main(["export", "mesh", str(fitted), "--pointcloud", "--quiet", "--out", str(tmp_path / "b.ply"),
                     "--device", "cpu"]) == 0
    err = capsys.readouterr().err  # no progress; the transparent-images-on-white warning stays, one line
    assert [line for line in err.splitlines() if line.strip() and not line.startswith("rwf: warning:")] == [], err
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()  # the same cloud either way


def test_render_shows_progress_unless_quiet(fitted, tmp_path, capsys):
    """The frame counter was a bare "\\r" print that --quiet could not silence; it is a progress bar like the
    point cloud's now."""
    capsys.readouterr()
    args = ["render", str(fitted), "--orbit", "3", "--downscale", "4", "--device", "cpu"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "3/3" in err, err
    assert cli.main([*args, "--quiet", "--out", str(tmp_path / "b")]) == 0
    assert "3/3" not in capsys.readouterr().err
    assert (tmp_path / "a" / "rgb_0002.png").read_bytes() == (tmp_path / "b" / "rgb_0002.png").read_bytes()


# -- 4: --background learned needs images without transparency --------------------------------------------------------
def test_learned_background_on_transparent_images_is_refused_before_writing(tmp_path, capsys):
    """Targets of transparent pixels are composited on a random colour per ray, which a background by direction
    cannot match (lego_tiny fitted to 7.4 dB)."""
    data = _scene(tmp_path / "d", {"train": 3, "test": 1})
    capsys.readouterr()
    assert _fit(data, tmp_path / "run", "--background", "learned") == 2
    err = _one_error(capsys)
    assert "--background learned" in err and "white, black or random" in err and "alpha" in err
    assert not (tmp_path / "run").exists()
    assert _fit(data, tmp_path / "run", "--background", "random") == 0  # the suggested way works


def test_a_run_fitted_with_learned_on_transparent_images_before_the_refusal_says_it_cannot_resume(tmp_path,
                                                                                                    capsys):
    """Such a run (saved before the refusal existed) was told to use another --background, which --resume then
    refused as a changed option: the user went in a circle. The message now says to start a new run."""
    data = _scene(tmp_path / "d", {"train": 3, "test": 1})
    run = tmp_path / "run"
    assert _fit(data, run, "--background", "random") == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["background"] = "learned"  # as an older version saved it
    (run / "config.json").write_text(json.dumps(cfg))
    before = sorted(p.name for p in run.iterdir())
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(run), "--resume", "--steps", "4"]) == 2
    err = _one_error(capsys)
    assert "cannot continue" in err and "new run" in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_poisson_depth_below_two_is_refused_before_open3d_aborts(fitted, tmp_path, capsys):
    """open3d aborted the whole process (exit 134, no message) at octree depth 1."""
    capsys.readouterr()
    assert cli.main(["export", "mesh", str(fitted), "--poisson", "--poisson-depth", "1", "--out",
                     str(tmp_path / "p.ply")]) == 2
    assert "2..12" in capsys.readouterr().err and not (tmp_path / "p.ply").exists()


def test_learned_background_on_rgb_images_fits(tmp_path):
    data = _scene(tmp_path / "d", {"train": 3, "test": 1}, channels=3)
    assert _fit(data, tmp_path / "run", "--background", "learned") == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["background"] == "learned"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2


def test_the_real_capture_preset_keeps_its_learned_background(data_dir, tmp_path):
    """scenes/bartoszek.py sets --background learned: its photos (JPEG, no alpha) pass the check."""
    from data_tools.colmap import convert_model
    from rwf_render.nerf import check_background
    from rwf_render.nerf_data import load_split
    from scenes import presets

    assert presets()["bartoszek"].settings["background"][0] == "learned"
    src = data_dir / "colmap" / "bartoszek"
    convert_model(src / "sparse" / "0", src / "images", tmp_path / "out", copy_images=False,
                  log=lambda *a, **k: None)
    train = load_split(tmp_path / "out", "train", downscale=8, indices=[0, 1])
    assert not train.has_alpha
    check_background("learned", train, str(tmp_path / "out"))


def test_each_scored_view_has_its_own_figures_and_their_mean_is_the_split_figure(fitted, capsys):
    """metrics.json's `views`: one entry per view scored, named by its image file; the split's psnr and ssim are their
    means (nerfstudio users look for the views a fit gets wrong; a mean alone hides them)."""
    capsys.readouterr()
    assert cli.main(["eval", str(fitted), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((fitted / "metrics.json").read_text())
    assert "views" not in printed  # the printed line stays one summary; each view's figures are in the file
    views = saved["views"]
    assert len(views) == saved["test_images"] == 2
    test_files = sorted(p.name for p in (fitted.parent / "data" / "test").iterdir())
    assert sorted(v["image"] for v in views) == test_files
    assert math.isclose(np.mean([v["psnr"] for v in views]), saved["psnr"], rel_tol=1e-9)
    assert math.isclose(np.mean([v["ssim"] for v in views]), saved["ssim"], rel_tol=1e-9)
    assert all(v["lpips"] is None for v in views) == (saved["lpips"] is None)


def test_views_of_one_name_in_two_folders_stay_apart(tmp_path):
    """Two cameras' folders with the same file names (left/0001.png, right/0001.png): metrics.json's views named
    both "0001.png", so the bad one could not be told apart."""
    from rwf_render.nerf_data import load_split
    from rwf_render.nerf_task import view_names

    data = _scene(tmp_path / "d", {"train": 2, "test": 2})
    meta = json.loads((data / "transforms_test.json").read_text())
    for side, frame in zip(("left", "right"), meta["frames"]):
        (data / side).mkdir()
        old = data / (frame["file_path"] + ("" if frame["file_path"].endswith(".png") else ".png"))
        old.rename(data / side / "0001.png")
        frame["file_path"] = f"{side}/0001.png"
    (data / "transforms_test.json").write_text(json.dumps(meta))
    assert view_names(load_split(data, "test", 1)) == ["left/0001.png", "right/0001.png"]
    assert view_names(load_split(data, "train", 1)) == ["train_0.png", "train_1.png"]  # one folder: file names
