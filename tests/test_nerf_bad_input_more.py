"""NeRF pipeline against an adversarial user: impossible cameras and options, damaged runs, half-written outputs.

Each case states the rule it checks: bad input is one line on stderr and exit 2 with nothing written; outputs are
replaced whole; what a render shows agrees with what ``rwf eval`` scored.
"""

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.datasets import load_transforms
from rwf_render.errors import RwfWarning, UserError
from rwf_render.imgio import read_image, write_image

TINY = ["--steps", "2", "--eval-images", "1", "--quiet", "--grid-resolution", "16", "--steps-per-diagonal", "32",
        "--width", "16", "--features", "8", "--target-samples", "512", "--device", "cpu"]


def _pose(i: int, n: int) -> list:
    """Camera ``i`` of ``n`` on a circle of radius 3 at height 1, looking at the origin (OpenGL c2w, 4x4)."""
    a = 2 * math.pi * i / n
    eye = np.array([3 * math.cos(a), 3 * math.sin(a), 1.0])
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(right, fwd), -fwd], 1)
    c2w[:3, 3] = eye
    return c2w.tolist()


def _dataset(root: Path, n: int = 9, sizes=((16, 12),), **top) -> Path:
    """A single-file (instant-ngp) dataset of ``n`` random images on a circle around the origin."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        write_image(root / f"img{i}.png", rng.random((h, w, 3)).astype(np.float32))
        frames.append({"file_path": f"img{i}.png", "transform_matrix": _pose(i, n), "w": w, "h": h,
                       "cx": w / 2, "cy": h / 2})
    meta = {"fl_x": 14.0, "fl_y": 14.0, "aabb_scale": 1, **top, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def _edit(root: Path, edit) -> None:
    meta = json.loads((root / "transforms.json").read_text())
    edit(meta)
    (root / "transforms.json").write_text(json.dumps(meta))


def _fails_cleanly(capsys, argv: list[str]) -> str:
    """Run ``rwf argv``: it must exit 2 with exactly one 'rwf: error:' line; returns that line."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) >= 1 and err[-1].startswith("rwf: error:") and "Traceback" not in "\n".join(err), err
    return err[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step fit on a tiny dataset whose frames carry per-image near/far bounds (as `rwf data llff` writes)."""
    root = tmp_path_factory.mktemp("nerf_more")
    data = _dataset(root / "data")
    _edit(data, lambda m: [f.update(near=2.0, far=4.0) for f in m["frames"]])
    run = root / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(run), *TINY]) == 0
    return run


# -- the loader ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(fl_x=0), "fl_x: must be positive"),  # rays of inf/nan: the C++ marcher crawled for hours
    (lambda m: m["frames"][5].update(fl_y=-14), "frame 5: fl_y: must be positive"),  # mirrored image
    (lambda m: (m.pop("fl_x"), m.pop("fl_y"), m.update(camera_angle_x=0)), "camera_angle_x must be in"),
    (lambda m: m["frames"][3].update(w=16.5), "frame 3: w: must be a whole number"),
    (lambda m: m["frames"][2].update(h=0), "frame 2: h: must be positive"),
    (lambda m: m.update(aabb="big"), "aabb must be"),
    (lambda m: m.update(offset=[1, 2]), "offset must be"),
    (lambda m: m["frames"][4].update(near=5.0, far=1.0), "frame 4: near and far"),
    (lambda m: m["frames"][6].update(file_path=None), "frame 6: file_path"),
    (lambda m: m["frames"][1].update(mask_path=5), "frame 1: mask_path"),
    (lambda m: m.update(is_fisheye="maybe"), "is_fisheye"),
])
def test_impossible_metadata_is_one_clear_error_naming_the_json_frame(tmp_path, edit, message):
    """Errors name the frame by its index in the file (not within the split), and nothing invalid loads."""
    root = _dataset(tmp_path / "d")
    _edit(root, edit)
    with pytest.raises(UserError, match=message):
        load_transforms(root, "train")  # frame 0 and 8 are held out: indices 1..7 are the train split


def test_split_lists_compare_paths_and_never_leak_training_frames_into_test(tmp_path):
    root = _dataset(tmp_path / "d")
    _edit(root, lambda m: m.update(train_filenames=["./img0.png", "img1.png", "img2.png"]))
    assert [p.name for p in load_transforms(root, "train").image_paths] == ["img0.png", "img1.png", "img2.png"]
    with pytest.raises(UserError, match="no frame"):  # no test list: no test split (not every 8th training frame)
        load_transforms(root, "test")
    _edit(root, lambda m: (m.pop("train_filenames"), m.update(test_filenames=["img5.png"])))
    assert [p.name for p in load_transforms(root, "val").image_paths] == ["img5.png"]  # val falls back to test
    assert "img5.png" not in [p.name for p in load_transforms(root, "train").image_paths]
    assert len(load_transforms(root, "train")) == 8


# -- rwf fit nerf --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("defect", ["zero_focal", "corrupt_test_image", "black_masks", "cone_angle", "appearance_dim",
                                    "near_far", "grid_resolution", "grid_cells", "huge_field"])
def test_fit_refuses_bad_input_before_writing_anything(tmp_path, capsys, defect):
    root = _dataset(tmp_path / "d")
    extra = []
    if defect == "zero_focal":
        _edit(root, lambda m: m.update(fl_x=0))
    elif defect == "corrupt_test_image":  # frame 8 is a test view scored only after training
        (root / "img8.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        extra = ["--eval-images", "2"]
    elif defect == "black_masks":
        write_image(root / "mask.png", np.zeros((12, 16, 1), np.float32))
        _edit(root, lambda m: m.update(mask_path="mask.png"))
    else:
        extra = {"cone_angle": ["--cone-angle", "-1"], "appearance_dim": ["--appearance-dim", "-3"],
                 "near_far": ["--near", "5", "--far", "1"], "grid_resolution": ["--grid-resolution", "15"],
                 "grid_cells": ["--grid-resolution", "100000"],
                 "huge_field": ["--width", "2000000"]}[defect]  # 16 TB of trunk weights
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _fails_cleanly(capsys, ["fit", "nerf", str(root), "--out", str(run), *TINY, *extra])
    assert not run.exists()


def test_force_never_deletes_the_dataset_it_trains_on(tmp_path, capsys):
    root = _dataset(tmp_path / "d")
    before = sorted(p.name for p in root.iterdir())
    for out in (root, tmp_path):  # the dataset's folder and the one above it are no runs: refused before any read
        line = _fails_cleanly(capsys, ["fit", "nerf", str(root), "--out", str(out), "--force", *TINY])
        assert "holds files but is not a run" in line, line
    assert sorted(p.name for p in root.iterdir()) == before


def test_resume_refuses_what_it_would_silently_ignore(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    config = (run / "config.json").read_text()
    err = _fails_cleanly(capsys, ["fit", "nerf", "--out", str(run), "--resume", "--width", "8"])
    assert "--width" in err and "--deterministic be turned on" in err  # the message names all a resume may change
    assert "past --steps 1" in _fails_cleanly(capsys, ["fit", "nerf", "--out", str(run), "--resume", "--steps", "1"])
    assert (run / "config.json").read_text() == config  # the refused resumes left the run as it was
    image_run = tmp_path / "image_run"
    image_run.mkdir()
    (image_run / "config.json").write_text(json.dumps({"kind": "image", "mlp": {}}))
    assert "not a nerf run" in _fails_cleanly(capsys, ["fit", "nerf", "--out", str(image_run), "--resume"])


def test_nerf_resume_accepts_its_own_command_and_refuses_a_change(tmp_path, capsys):
    """Options typed at the run's values pass (the fit's own command); other values, or another SCENE, do not."""
    data, other, run = _dataset(tmp_path / "data"), _dataset(tmp_path / "other", n=8), tmp_path / "run"
    tiny = [*TINY, "--out", str(run)]  # TINY has --steps 2; a later --steps wins
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), *tiny]) == 0
        config = (run / "config.json").read_text()
        assert "SCENE" in _fails_cleanly(capsys, ["fit", "nerf", str(other), "--out", str(run), "--resume", "--steps",
                                                  "3"])
        err = _fails_cleanly(capsys, ["fit", "nerf", "--out", str(run), "--resume", "--steps", "3", "--width", "128"])
        assert "--width (run: 16, given: 128)" in err  # 128 is the built-in default
        assert "--seed" in _fails_cleanly(capsys, ["fit", "nerf", "--out", str(run), "--resume", "--steps", "3",
                                                   "--seed", "1"])
        assert (run / "config.json").read_text() == config
        # the same command with --resume (it used to be refused: "drop SCENE, --width, ...")
        assert cli.main(["fit", "nerf", str(data), *tiny, "--steps", "3", "--resume"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 3


def test_resume_with_another_runs_checkpoint_leaves_config_json_alone(trained, tmp_path, capsys):
    """The checkpoint is checked before config.json is rewritten (it used to get the new --steps first)."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"] = {k: torch.cat([v, v]) if v.ndim else v for k, v in state["model"].items()}
    torch.save(state, run / "checkpoint.pt")
    config = (run / "config.json").read_text()
    assert "does not match" in _fails_cleanly(capsys, ["fit", "nerf", "--out", str(run), "--resume", "--steps", "9"])
    assert (run / "config.json").read_text() == config


def test_min_component_applies_to_nerf_meshes_too(trained, tmp_path, capsys):
    out = tmp_path / "m.ply"
    assert cli.main(["export", "mesh", str(trained), "--res", "24", "--threshold", "0.001", "--min-component", "0.1",
                     "--out", str(out)]) == 0
    assert "applies to" not in capsys.readouterr().err and out.is_file()


# -- commands on a run ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["width", "aabb", "checkpoint"])
def test_damaged_run_is_one_line(trained, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    cfg = json.loads((run / "config.json").read_text())
    if damage == "width":  # config.json edited after the fit: the checkpoint no longer fits the model
        cfg["field"]["trunk"]["width"] = 32
    elif damage == "aabb":
        del cfg["aabb"]
    else:  # a checkpoint from another run (different width)
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["model"] = {k: torch.cat([v, v]) if v.ndim else v for k, v in state["model"].items()}
        torch.save(state, run / "checkpoint.pt")
    cfg["a_newer_version_key"] = 1  # unknown keys are ignored, as for the other pipelines
    (run / "config.json").write_text(json.dumps(cfg))
    _fails_cleanly(capsys, ["eval", str(run)])
    _fails_cleanly(capsys, ["render", str(run), "--orbit", "2", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where, key, value", [
    (("field", "trunk"), "width", "16"), (("field", "trunk"), "width", 16.0), (("field", "pos"), "m", 8.5),
    (("field", "pos"), "sigma", "8"), (("render",), "early_stop_eps", "x"), (("render",), "alpha_thre", "x"),
    (("field",), "features", True), (("train",), "lr", None)])
def test_a_config_value_of_the_wrong_type_is_named_in_one_line(trained, tmp_path, capsys, where, key, value):
    """A hand-edited config.json: eval, render and export each name the setting (they crashed deep in torch, and
    export even exited 0 with a string for early_stop_eps)."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    cfg = json.loads((run / "config.json").read_text())
    node = cfg
    for k in where:
        node = node[k]
    node[key] = value
    (run / "config.json").write_text(json.dumps(cfg))
    for argv in (["eval", str(run)], ["render", str(run), "--orbit", "2", "--out", str(tmp_path / "o")],
                 ["export", "mesh", str(run), "--res", "8", "--out", str(tmp_path / "m.ply")]):
        assert key in _fails_cleanly(capsys, argv)
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.ply").exists()


def test_eval_replaces_a_metrics_json_that_is_not_an_object_and_reads_it_first(trained, tmp_path, capsys,
                                                                               monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "metrics.json").write_text("[]")
    assert cli.main(["eval", str(run)]) == 0
    assert {"psnr", "ssim"} <= json.loads((run / "metrics.json").read_text()).keys()
    (run / "metrics.json").write_text("{not json")
    monkeypatch.setattr("rwf_render.nerf.test_metrics", lambda *a, **k: pytest.fail("rendered before reading"))
    assert "metrics.json" in _fails_cleanly(capsys, ["eval", str(run)])


def test_render_refuses_impossible_requests_and_writes_nothing(trained, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    _fails_cleanly(capsys, ["render", str(trained), "--split", "test", "--out", str(afile)])
    assert afile.read_text() == "keep"
    assert "not both" in _fails_cleanly(capsys, ["render", str(trained), "--split", "test", "--scale", "3",
                                                 "--downscale", "2", "--out", str(tmp_path / "a")])
    assert "no pixels" in _fails_cleanly(capsys, ["render", str(trained), "--orbit", "2", "--downscale", "100",
                                                  "--out", str(tmp_path / "b")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_video_of_cameras_of_several_sizes_is_refused_before_rendering(tmp_path, capsys):
    data = _dataset(tmp_path / "d", sizes=((16, 12), (20, 12)))
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(run), *TINY]) == 0
    assert "one size" in _fails_cleanly(capsys, ["render", str(run), "--split", "train", "--video",
                                                 "--out", str(tmp_path / "v")])
    assert not (tmp_path / "v").exists()


def test_a_render_replaces_an_earlier_one_whole(trained, tmp_path):
    out = tmp_path / "frames"
    assert cli.main(["render", str(trained), "--orbit", "3", "--out", str(out)]) == 0
    assert len(list(out.glob("rgb_*.png"))) == 3
    assert cli.main(["render", str(trained), "--orbit", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("rgb_*.png")) == ["rgb_0000.png", "rgb_0001.png"]  # no stale frame 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no staging folder left behind


def test_a_render_into_a_folder_of_the_users_files_deletes_none(trained, tmp_path):
    """Only what an earlier render wrote there (its manifest) is replaced; files of the user's named like frames
    stay (a render used to delete every rgb_NNNN.png it did not write)."""
    out = tmp_path / "photos"
    out.mkdir()
    for name in ("rgb_0042.png", "depth.mp4", "notes.txt"):
        (out / name).write_text("mine")
    assert cli.main(["render", str(trained), "--orbit", "2", "--out", str(out)]) == 0
    assert all((out / n).read_text() == "mine" for n in ("rgb_0042.png", "depth.mp4", "notes.txt"))
    assert (out / "rgb_0001.png").is_file()


def test_split_render_shows_what_eval_scores(trained, tmp_path):
    """With per-frame near/far in the dataset, `rwf render --split test` uses the bounds `rwf eval` renders with."""
    from rwf_render.nerf import load_scene_model
    from rwf_render.nerf_data import load_split
    from rwf_render.nerf_task import render_and_target

    assert cli.main(["render", str(trained), "--split", "test", "--out", str(tmp_path / "f")]) == 0
    model = load_scene_model(trained)
    test = load_split(model.cfg.data, "test", model.cfg.downscale)
    pred, _ = render_and_target(model, test, 0, model.cfg.background)
    rendered = read_image(tmp_path / "f" / "rgb_0000.png")[0]
    np.testing.assert_allclose(rendered, pred.numpy(), atol=1.5 / 255)
    unbounded = model.render_camera(test.cameras[0])["rgb"].numpy()
    assert np.abs(unbounded - pred.numpy()).max() > 2 / 255  # the bounds matter, so the check above can fail


def test_export_refuses_nonsense_and_crops_point_clouds(trained, tmp_path, capsys):
    import trimesh

    (tmp_path / "somedir").mkdir()
    for extra in (["--threshold", "nan"], ["--threshold", "-1"], ["--pointcloud", "--threshold", "3"],
                  ["--out", str(tmp_path / "somedir")], ["--format", "ply", "--out", str(tmp_path / "m.obj")],
                  ["--crop", "0", "0", "0", "inf", "1", "1"]):
        _fails_cleanly(capsys, ["export", "mesh", str(trained), "--res", "8", *extra])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somedir"]
    default, full, crop = tmp_path / "default.ply", tmp_path / "full.ply", tmp_path / "crop.ply"
    capsys.readouterr()
    assert cli.main(["export", "mesh", str(trained), "--pointcloud", "--out", str(default)]) == 0
    err = capsys.readouterr().err
    with pytest.warns(RwfWarning, match="reaches beyond the outermost of the 3 cascades"):  # clipped to them
        assert cli.main(["export", "mesh", str(trained), "--pointcloud", "--crop", "-9", "-9", "-9", "9", "9", "9",
                         "--out", str(full)]) == 0
    capsys.readouterr()
    with pytest.warns(RwfWarning, match="reaches beyond the outermost of the 3 cascades"):
        assert cli.main(["export", "mesh", str(trained), "--pointcloud", "--crop", "0", "-9", "-9", "9", "9", "9",
                         "--out", str(crop)]) == 0  # the half x >= 0 of the scene
    assert "surface points lie outside --crop 0 " in capsys.readouterr().err
    line = _fails_cleanly(capsys, ["export", "mesh", str(trained), "--pointcloud", "--crop", "5", "5", "5", "5.01",
                                   "5.01", "5.01", "--out", str(tmp_path / "none.ply")])
    assert "no training ray reaches an opaque surface inside --crop 5 5 5 5.01 5.01 5.01" in line, line
    assert not (tmp_path / "none.ply").exists()
    pts, all_pts, in_box = (trimesh.load(f).vertices for f in (crop, full, default))
    assert (pts[:, 0] >= 0).all() and len(pts) == (all_pts[:, 0] >= 0).sum() < len(all_pts)
    # by default, the scene box (as --poisson and nerfstudio's ns-export pointcloud), and a line says what it left
    box = np.asarray(json.loads((trained / "config.json").read_text())["aabb"]).reshape(2, 3)
    inside = ((all_pts >= box[0] - 1e-6) & (all_pts <= box[1] + 1e-6)).all(1)
    assert ((in_box >= box[0] - 1e-6) & (in_box <= box[1] + 1e-6)).all() and len(in_box) == inside.sum()
    assert not inside.all()  # this fit's points reach its cascades (248 of 1344 when written)
    assert f"{(~inside).sum()} of {len(all_pts)} surface points lie outside the scene box" in err, err
    assert "--crop up to the outermost cascade" in err


def test_near_and_far_options_win_over_a_datasets_per_image_bounds():
    """--near/--far were silently ignored for datasets with per-frame bounds (LLFF conversions write them)."""
    import torch

    from rwf_render.nerf_field import NeRFFieldConfig
    from rwf_render.nerf_render import NeRFModel, RenderConfig

    aabb = [-1, -1, -1, 1, 1, 1]
    fixed = NeRFModel(aabb, NeRFFieldConfig(), RenderConfig(grid_resolution=16, near=1.2, far=2.0), seed=0)
    free = NeRFModel(aabb, NeRFFieldConfig(), RenderConfig(grid_resolution=16), seed=0)
    for m in (fixed, free):
        m.grid.fill_(True)  # a fresh grid is empty: mark every cell so rays get samples
    gen = torch.Generator().manual_seed(0)
    o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(64, 1) + 0.3 * torch.randn(64, 3, generator=gen)
    d = torch.tensor([[0.0, 0.0, 1.0]]).repeat(64, 1)
    dataset_near, dataset_far = torch.full((64,), 0.5), torch.full((64,), 5.0)
    with torch.no_grad():
        a = fixed.render_rays(o, d, near=dataset_near, far=dataset_far)
        b = free.render_rays(o, d, near=1.2, far=2.0)
        c = free.render_rays(o, d, near=dataset_near, far=dataset_far)
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["depth"], b["depth"])
    assert not torch.equal(a["depth"], c["depth"])  # the bounds matter for these rays
    assert float(a["depth"].max()) <= 2.0 + 1e-4
    # --no-far-bounds: the per-image far is not used (rays end where they leave the grid); the near still is
    free.render_cfg.far_bounds = False
    with torch.no_grad():
        e = free.render_rays(o, d, near=1.2, far=dataset_far.clamp(max=2.0))
        f = free.render_rays(o, d, near=1.2)
    assert torch.equal(e["depth"], f["depth"]) and e["n_samples"] == f["n_samples"] > b["n_samples"]


def test_near_alone_beyond_the_datasets_far_bounds_is_refused(tmp_path, capsys):
    """--near 5 over per-image bounds [2, 4] left every ray without samples, training only the background."""
    data = _dataset(tmp_path / "data")
    _edit(data, lambda m: [f.update(near=2.0, far=4.0 if i % 2 else 6.0) for i, f in enumerate(m["frames"])])
    out = tmp_path / "run"
    # --far-bounds typed: these opaque photos would otherwise take the real-capture settings, without far bounds
    err = _fails_cleanly(capsys, ["fit", "nerf", str(data), "--out", str(out), *TINY, "--near", "5", "--far-bounds"])
    # train = frames 1-7 (every 8th is held out); the odd ones, 1 3 5 7, end at 4
    assert "--near 5 leaves no ray segment in 4 of 7 train images" in err and "far bound reaches 4" in err
    err = _fails_cleanly(capsys, ["fit", "nerf", str(data), "--out", str(out), *TINY, "--far", "1.5"])
    assert "--far 1.5 leaves no ray segment in" in err and "--near" in err
    assert not out.exists()
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(out), *TINY, "--near", "3", "--far-bounds"]) == 0
    assert "near 3, far 4..6 (per image)" in capsys.readouterr().err  # the start summary shows the bounds used
    # without the far bounds, --near 5 clashes with nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(tmp_path / "run2"), *TINY, "--near", "5",
                         "--no-far-bounds"]) == 0
    assert "near 5, far grid" in capsys.readouterr().err  # the real capture's 3 cascades: the grid's outer box
