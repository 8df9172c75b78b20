"""``rwf data downscale`` keeps every path a dataset names pointing at the right file: split lists follow their
images when those move into images/, a top-level mask or depth map (the loader gives it to every frame) is
downscaled like a frame's own, a point cloud named outside the dataset is copied inside OUT (nothing is written
outside it, even when the command fails), and a dataset file not named transforms*.json (``rwf export cameras``
writes cameras.json) comes out as a dataset OUT/transforms.json."""

import json
import math

import numpy as np
import pytest

from data_tools.check import check_dataset
from data_tools.cli import main
from rwf_render.cameras import look_at
from rwf_render.datasets import load_transforms
from rwf_render.errors import RwfWarning
from rwf_render.imgio import read_image, write_image

from test_data_tools_bad_input_more import _fails_cleanly  # noqa: E402  (tests/ is on sys.path under pytest)


def _dataset(root, w=16, h=12, folder="images", **top):
    """4 random RGB frames in ROOT/FOLDER (named relative to ROOT), camera_angle_x only, ``top`` merged in."""
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(4):
        write_image(root / folder / f"{i}.png", rng.random((h, w, 3)).astype(np.float32))
        a = 2 * math.pi * i / 4
        eye = [3 * math.cos(a), 3 * math.sin(a), 1.0]
        frames.append({"file_path": f"{folder}/{i}.png",
                       "transform_matrix": look_at(eye, (0.0, 0.0, 0.0)).tolist() + [[0, 0, 0, 1]]})
    (root / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames, **top}))
    return root


def _names(transforms) -> list:
    return [p.name for p in transforms.image_paths]


def test_split_lists_follow_images_moved_into_images(tmp_path):
    """Images outside the dataset (``../imgs/0.png``, as ``rwf export cameras`` names a run's images) move into
    OUT/images/; the train/test lists kept the old paths, which then named the full-size originals: no training
    frame, and the command had exited 0."""
    src = _dataset(tmp_path / "ds", folder="../imgs", train_filenames=[f"../imgs/{i}.png" for i in range(3)],
                   test_filenames=["../imgs/3.png"])
    assert main(["data", "downscale", str(src), str(tmp_path / "half"), "-k", "2"]) == 0
    out = json.loads((tmp_path / "half" / "transforms.json").read_text())
    assert out["train_filenames"] == ["images/0.png", "images/1.png", "images/2.png"]
    assert out["test_filenames"] == ["images/3.png"]
    train, test = load_transforms(tmp_path / "half", "train"), load_transforms(tmp_path / "half", "test")
    assert _names(train) == ["0.png", "1.png", "2.png"] and _names(test) == ["3.png"]
    assert all(p.parent == tmp_path / "half" / "images" for p in (*train.image_paths, *test.image_paths))
    assert check_dataset(tmp_path / "half", log=lambda *a: None)[0] == []


@pytest.mark.parametrize("key", ["mask_path", "depth_file_path"])
def test_a_top_level_mask_or_depth_map_is_downscaled_with_the_frames(tmp_path, key, capsys):
    """The loader gives a top-level mask_path / depth_file_path to every frame; downscale kept the key but wrote no
    file, so every frame of OUT named a missing mask."""
    src = _dataset(tmp_path / "ds", w=17, h=13, **{key: "aux.png"})
    aux = np.zeros((13, 17, 1), np.float32)
    aux[:, :8] = 1.0 if key == "mask_path" else 0.5
    write_image(src / "aux.png", aux, 16 if key == "depth_file_path" else 8)
    assert main(["data", "downscale", str(src), str(tmp_path / "half"), "-k", "2"]) == 0
    said = "(and 1 masks)" if key == "mask_path" else "(and 1 depth maps)"  # it said "masks and depth maps"
    assert said in capsys.readouterr().out
    out = json.loads((tmp_path / "half" / "transforms.json").read_text())
    small, _ = read_image(tmp_path / "half" / out[key])
    assert small.shape[:2] == (6, 8)
    assert np.allclose(small[:, :4, 0], aux[0, 0, 0], atol=1e-3) and np.allclose(small[:, 4:, 0], 0, atol=1e-3)
    assert check_dataset(tmp_path / "half", log=lambda *a: None)[0] == []


def test_a_point_cloud_outside_the_dataset_is_copied_inside_out_and_nothing_outside_is_written(tmp_path, capsys):
    """ply_file_path "../pts.ply" was copied to OUT/../pts.ply, beside OUT, even when the command then failed."""
    src = _dataset(tmp_path / "ds" / "d", ply_file_path="../pts.ply")
    (tmp_path / "ds" / "pts.ply").write_text("ply\n")
    (tmp_path / "outdir").mkdir()
    truncated = (src / "images" / "0.png").read_bytes()[:100]
    (src / "images" / "3.png").write_bytes(truncated)
    _fails_cleanly(capsys, ["data", "downscale", str(src), str(tmp_path / "outdir" / "half"), "-k", "2"], "3.png",
                   tmp_path / "outdir")
    _dataset(src, ply_file_path="../pts.ply")  # repaired
    assert main(["data", "downscale", str(src), str(tmp_path / "outdir" / "half"), "-k", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "outdir").iterdir()) == ["half"]
    out = json.loads((tmp_path / "outdir" / "half" / "transforms.json").read_text())
    assert (tmp_path / "outdir" / "half" / out["ply_file_path"]).read_text() == "ply\n"


def test_a_dataset_file_of_another_name_comes_out_as_transforms_json(tmp_path):
    """cameras.json downscaled came out as OUT/cameras.json: not a dataset to the loader, and --force then refused
    to replace it ('not a dataset')."""
    src = _dataset(tmp_path / "ds")
    (src / "transforms.json").rename(src / "cameras.json")
    for force in ([], ["--force"]):
        assert main(["data", "downscale", str(src / "cameras.json"), str(tmp_path / "half"), "-k", "2", *force]) == 0
        assert sorted(p.name for p in (tmp_path / "half").iterdir()) == ["images", "transforms.json"]
    assert len(load_transforms(tmp_path / "half", "all")) == 4


def test_a_split_whose_images_are_all_missing_stays_absent_and_a_null_mask_is_none(tmp_path):
    """A split without any image on disk is absent to the loader; downscale wrote it as "frames": [], an error to
    the loader, so the copy of a dataset that fits did not. A top-level "mask_path": null (read as none by the
    loader) was refused as not a path."""
    import shutil

    from data_tools.synth import demo_mesh, render_dataset

    src = tmp_path / "ds"
    render_dataset(demo_mesh(), src, res=8, n_views=3, n_val=1, n_test=1, supersample=1, log=lambda *a, **k: None)
    for f in (src / "test").glob("r_*.png"):
        f.unlink()
    for name in ("train", "val", "test"):
        path = src / f"transforms_{name}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "mask_path": None}))
    with pytest.warns(RwfWarning, match="missing"):
        assert main(["data", "downscale", str(src), str(tmp_path / "half"), "-k", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "half").glob("*.json")) == ["transforms_train.json",
                                                                         "transforms_val.json"]
    assert len(load_transforms(tmp_path / "half", "train")) == 3
    assert json.loads((tmp_path / "half" / "transforms_train.json").read_text())["mask_path"] is None
    shutil.rmtree(tmp_path / "half")


def test_the_field_of_view_follows_the_focal_of_a_cropped_size(tmp_path):
    """A size not a multiple of K is cropped, so the focal in pixels is not the one camera_angle_x gives at the new
    width: the frames get fl_x, and camera_angle_x was left as it was, 4% off for readers that use only it (a
    helper's hunt: the original NeRF loader, nerfstudio's Blender parser)."""
    src = _dataset(tmp_path / "ds", w=50, h=50)
    assert main(["data", "downscale", str(src), str(tmp_path / "third"), "-k", "3"]) == 0
    out = json.loads((tmp_path / "third" / "transforms.json").read_text())
    fl = 50 / (2 * math.tan(0.4)) / 3
    assert all(f["fl_x"] == pytest.approx(fl, rel=1e-12) for f in out["frames"])
    assert 16 / (2 * math.tan(out["camera_angle_x"] / 2)) == pytest.approx(fl, rel=1e-9)
    assert "camera_angle_y" not in out  # only the angles the source gave
    cams = load_transforms(tmp_path / "third", "train").cameras
    assert float(cams.fx[0]) == pytest.approx(fl, rel=1e-6)


def test_the_top_field_of_view_stays_for_frames_whose_size_needs_no_crop(tmp_path):
    """Frames of 50 and 51 pixels sharing the top camera_angle_x, downscaled by 2: only the 51-pixel ones are cropped
    and rewritten; the top angle, which the 50-pixel ones still read, must stay (the review of the fix above found
    it rewritten for all: the 50-pixel frames' focal 2% off)."""
    src = _dataset(tmp_path / "ds", w=50, h=50)
    meta = json.loads((src / "transforms.json").read_text())
    for i in (2, 3):
        write_image(src / "images" / f"{i}.png", np.random.default_rng(i).random((51, 51, 3)).astype(np.float32))
    (src / "transforms.json").write_text(json.dumps(meta))
    before = load_transforms(src, "train").cameras
    assert main(["data", "downscale", str(src), str(tmp_path / "half"), "-k", "2"]) == 0
    out = json.loads((tmp_path / "half" / "transforms.json").read_text())
    assert out["camera_angle_x"] == 0.8
    after = load_transforms(tmp_path / "half", "train").cameras
    np.testing.assert_allclose(after.fx.numpy(), before.fx.numpy() / 2, rtol=1e-9)
