"""NeRF input side and the commands on a NeRF run, against inputs real users produce: Windows paths, EXR frames,
float masks, odd scene boxes, a Blender split file given alone, damaged config.json, interrupted renders.

Rule: bad input is one line on stderr and exit 2 with nothing written; odd but valid input loads as it means.
"""

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from rwf_render import cli
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.imgio import read_image, write_image
from rwf_render.nerf_data import load_split

from conftest import interrupt_render_writes  # noqa: E402  (tests/ is on sys.path under pytest)
from test_nerf_bad_input_more import TINY, _pose  # noqa: E402


def _dataset(root: Path, n: int = 9, **top) -> Path:
    """A single-file (instant-ngp) dataset of ``n`` random 16x12 images on a circle around the origin."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        write_image(root / f"img{i}.png", rng.random((12, 16, 3)).astype(np.float32))
        frames.append({"file_path": f"img{i}.png", "transform_matrix": _pose(i, n)})
    meta = {"fl_x": 14.0, "fl_y": 14.0, "w": 16, "h": 12, "aabb_scale": 1, **top, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def _edit(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _fails_cleanly(capsys, argv: list[str]) -> str:
    """Run ``rwf argv``: it must exit 2 with exactly one line on stderr, 'rwf: error: ...'; returns that line."""
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rwf: error:") and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_nerf")
    run = root / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(_dataset(root / "data")), "--out", str(run), *TINY]) == 0
    return run


# -- the loader ----------------------------------------------------------------------------------------------------
def test_paths_written_on_windows_load(tmp_path):
    """instant-ngp's colmap2nerf on Windows writes "images\\0001.jpg": every frame used to be skipped as missing."""
    root = _dataset(tmp_path / "d")
    (root / "images").mkdir()
    for p in root.glob("img*.png"):
        p.rename(root / "images" / p.name)
    write_image(root / "images" / "mask.png", np.ones((12, 16, 1), np.float32))
    _edit(root / "transforms.json", lambda m: [f.update(file_path=".\\images\\" + f["file_path"],
                                                        mask_path="images\\mask.png") for f in m["frames"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no frame skipped
        split = load_split(root, "train")
    assert len(split) == 7 and split.masks is not None


@pytest.mark.parametrize("fmt", ["exr", "float_tiff"])
def test_float_images_without_a_stated_size_load(tmp_path, fmt):
    """A Blender layout (camera_angle_x, no w/h) of EXR or float TIFF frames: the size came from Pillow, which
    cannot open them, so every such dataset was refused ("cannot read the image size")."""
    root = tmp_path / "d"
    root.mkdir()
    frames = []
    for i in range(3):
        name = f"r_{i}.exr" if fmt == "exr" else f"r_{i}.tif"
        write_image(root / name, np.full((12, 16, 3), 0.25 * (i + 1), np.float32), bits=32)
        frames.append({"file_path": name, "transform_matrix": _pose(i, 3)})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    split = load_split(root, "train")
    assert split.size(0) == (16, 12)
    assert split.cameras.fx[0].item() == pytest.approx(8 / math.tan(0.4), rel=1e-5)


def test_an_impossible_image_size_is_one_clear_error(tmp_path, capsys):
    """w = 1e30 ended in a TypeError from torch (a Python int beyond int64)."""
    root = _dataset(tmp_path / "d")
    _edit(root / "transforms.json", lambda m: m["frames"][3].update(w=1e30))
    with pytest.raises(UserError, match="frame 3: w: .*more than any image"):
        load_transforms(root, "train")
    assert "frame 3: w" in _fails_cleanly(capsys, ["fit", "nerf", str(root), "--out", str(tmp_path / "run"), *TINY])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("top, message", [
    ({"aabb_scale": 1e40}, "cascades"),  # a float32 box of inf: a run was written, then unusable
    ({"aabb": [[-1e25, -1, -1], [1e25, 1, 1]]}, "units across"),  # near plane inf: no sample, junk run
    ({"offset": -1e30}, "shortest side"),  # box sides round to 0 in float32: traceback from the grid
    ({"scale": 1e30}, "shortest side"),  # a 1e-30 box: traceback from the marcher, config.json left behind
])
def test_a_scene_box_float32_cannot_resolve_is_refused_before_writing(tmp_path, capsys, top, message):
    root = _dataset(tmp_path / "d", **top)
    run = tmp_path / "run"
    assert message in _fails_cleanly(capsys, ["fit", "nerf", str(root), "--out", str(run), *TINY])
    assert not run.exists()


def test_float_masks_are_clipped_not_wrapped(tmp_path):
    """A float mask stored 0..255 (or with negatives) wrapped around in uint8: 255 became weight 1/255, -1 full."""
    root = _dataset(tmp_path / "d")
    mask = np.zeros((12, 16, 1), np.float32) - 1
    mask[:, :8] = 255.0
    write_image(root / "mask.tif", mask, bits=32)
    _edit(root / "transforms.json", lambda m: [f.update(mask_path="mask.tif") for f in m["frames"]])
    split = load_split(root, "train")
    weights = split.masks.reshape(len(split), 12, 16)
    assert (weights[:, :, :8] == 255).all() and (weights[:, :, 8:] == 0).all()


def test_hdr_frames_are_clipped_with_a_warning(tmp_path):
    """Float frames brighter than white were clipped without a word (the image fit warns)."""
    root = _dataset(tmp_path / "d")
    write_image(root / "img1.exr", np.full((12, 16, 3), 3.0, np.float32))
    _edit(root / "transforms.json", lambda m: m["frames"][1].update(file_path="img1.exr"))
    with pytest.warns(UserWarning, match=r"1 image\(s\) .*outside \[0, 1\], clipped \(first: img1.exr\)"):
        split = load_split(root, "train")
    assert (split.image(0)[..., :3] == 1).all()


def test_a_corrupt_png_is_named_for_what_is_wrong(tmp_path):
    """Pillow's reason was "`pillow` can not handle the given uri"; the chunk walk names the bad checksum."""
    path = tmp_path / "img.png"
    write_image(path, np.zeros((12, 16, 3), np.float32))
    data = bytearray(path.read_bytes())
    data[29] ^= 0xFF  # the IHDR chunk's checksum
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="cannot decode PNG image") as e:
        read_image(path)
    assert "uri" not in str(e.value) and "Checksum" in str(e.value)


def test_a_dataset_whose_frames_are_all_held_out_says_so(tmp_path, capsys):
    """One frame: it is frame 0, held out for test; the message said no frame had an existing image."""
    root = _dataset(tmp_path / "d", n=1)
    err = _fails_cleanly(capsys, ["fit", "nerf", str(root), "--out", str(tmp_path / "run"), *TINY])
    assert "held out" in err and "existing image" not in err
    _edit(root / "transforms.json", lambda m: m.update(train_filenames=[]))
    assert "train_filenames" in _fails_cleanly(capsys, ["fit", "nerf", str(root), "--out", str(tmp_path / "run"),
                                                        *TINY])
    assert not (tmp_path / "run").exists()


def test_a_blender_split_file_given_alone_is_only_that_split(tmp_path, capsys):
    """`rwf fit nerf scene/transforms_train.json`: its "test" split was the training frames, so `rwf eval` scored
    training images as held-out ones and `rwf render --split test` rendered the training cameras."""
    root = _dataset(tmp_path / "d", n=4)
    meta = json.loads((root / "transforms.json").read_text())
    (root / "transforms.json").unlink()
    for name, frames in (("train", meta["frames"][:3]), ("test", meta["frames"][3:])):
        (root / f"transforms_{name}.json").write_text(json.dumps({**meta, "frames": frames}))
    alone = root / "transforms_train.json"
    assert len(load_transforms(alone, "train")) == 3 and len(load_transforms(alone, "all")) == 3
    with pytest.raises(UserError, match="no transforms_test.json"):
        load_transforms(alone, "test")
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(alone), "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 0  # no test split: the training frames, named as such
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["psnr_split"] == "train" and "no test split" in err
    assert json.loads((run / "metrics.json").read_text())["psnr_split"] == "train"
    assert "no transforms_test.json" in _fails_cleanly(capsys, ["render", str(run), "--split", "test",
                                                                "--out", str(tmp_path / "frames")])
    assert not (tmp_path / "frames").exists()
    # a file of another name is one file of every frame, held out as transforms.json is
    other = root / "transforms_colmap.json"
    other.write_text(json.dumps(meta))
    assert len(load_transforms(other, "test")) == 1 and len(load_transforms(other, "train")) == 3


# -- commands on a run ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [5, None, ["scene"], ""])
def test_a_config_whose_dataset_is_not_a_path_is_one_line(trained, tmp_path, capsys, data):
    """config.json with "data": 5 (or null, a list) ended in a TypeError traceback from pathlib; "" read the
    current folder as the dataset."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _edit(run / "config.json", lambda c: c.update(data=data))
    assert "dataset" in _fails_cleanly(capsys, ["eval", str(run)])
    _fails_cleanly(capsys, ["render", str(run), "--split", "test", "--out", str(tmp_path / "frames")])
    assert not (tmp_path / "frames").exists()


def test_export_checks_res_first(trained, tmp_path, capsys):
    """--res 1 printed numpy's divide-by-zero warning before the error, which named "res" rather than --res."""
    err = _fails_cleanly(capsys, ["export", "mesh", str(trained), "--res", "1", "--out", str(tmp_path / "m.ply")])
    assert "--res must be" in err
    assert not (tmp_path / "m.ply").exists()


def test_an_interrupted_render_leaves_no_folder(trained, tmp_path, monkeypatch):
    """The output folder (and those above it) used to be made before the first frame: Ctrl+C left them empty."""
    calls = interrupt_render_writes(monkeypatch, after=3)
    assert cli.main(["render", str(trained), "--orbit", "3", "--out", str(tmp_path / "a" / "frames")]) == 130
    assert len(calls) == 4 and sorted(p.name for p in tmp_path.iterdir()) == []


def test_render_into_a_path_below_a_file_is_refused_before_rendering(trained, tmp_path, capsys):
    """--out afile/frames failed at mkdir with an OSError (exit 1, "a failure of the machine")."""
    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert "not a folder" in _fails_cleanly(capsys, ["render", str(trained), "--orbit", "1",
                                                     "--out", str(afile / "frames")])
    assert afile.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("name", ["orbit.mp4", "frame.PNG"])
def test_render_out_named_like_a_file_is_refused(trained, tmp_path, capsys, monkeypatch, name):
    """--out o.mp4 made a folder o.mp4/ holding rgb.mp4, depth.mp4 and the frames (a feature-gap hunt); a NeRF
    render's --out is a folder, so a file-like name is refused before the model loads. An existing folder of that
    name is still a folder."""
    from rwf_render import nerf_outputs

    monkeypatch.setattr(nerf_outputs, "load_scene_model", lambda *a, **k: pytest.fail("loaded before checking"))
    err = _fails_cleanly(capsys, ["render", str(trained), "--orbit", "1", "--out", str(tmp_path / name)])
    assert "names the folder" in err and not (tmp_path / name).exists()
    monkeypatch.undo()
    (tmp_path / name).mkdir()
    assert cli.main(["render", str(trained), "--orbit", "1", "--out", str(tmp_path / name)]) == 0


@pytest.mark.parametrize("layout, says", [("colmap", "rwf data colmap {d}/sparse/0 {d}/images OUT"),
                                          ("llff", "rwf data llff {d} OUT"), ("photos", "rwf data photos {d} OUT"),
                                          ("empty", "transforms_{{train,val,test}}.json")])
def test_a_folder_without_transforms_says_how_to_convert_it(tmp_path, capsys, layout, says):
    """A COLMAP model, an LLFF capture or plain photos given to fit nerf: the error names the converter."""
    d = tmp_path / "capture"
    d.mkdir()
    if layout == "colmap":
        (d / "sparse" / "0").mkdir(parents=True)
        (d / "sparse" / "0" / "cameras.bin").write_bytes(b"")
        (d / "images").mkdir()
    elif layout == "llff":
        (d / "poses_bounds.npy").write_bytes(b"")
    elif layout == "photos":
        (d / "IMG_1.JPG").write_bytes(b"")
    err = _fails_cleanly(capsys, ["fit", "nerf", str(d), "--steps", "1", "--out", str(tmp_path / "run")])
    assert says.format(d=d) in err and ("rwf data" in err) == (layout != "empty"), err
    assert not (tmp_path / "run").exists()


def test_a_point_cloud_into_a_missing_folder_is_refused_before_rendering(trained, tmp_path, capsys, monkeypatch):
    """--pointcloud --out missing/pc.ply rendered every training camera, then failed at the atomic write: exit 1
    ("a failure of the machine") naming the temporary file."""
    from rwf_render import nerf_export

    monkeypatch.setattr(nerf_export, "point_cloud", lambda *a, **k: pytest.fail("rendered before checking --out"))
    err = _fails_cleanly(capsys, ["export", "mesh", str(trained), "--pointcloud", "--out",
                                  str(tmp_path / "missing" / "pc.ply")])
    assert "missing does not exist" in err and ".tmp" not in err
    assert sorted(tmp_path.iterdir()) == []


def test_a_fit_scored_on_its_training_views_renders_only_eval_images_of_them(tmp_path, capsys, monkeypatch):
    """With no test or val split the fit scores training views: all of them, whatever --eval-images said (100 views
    of a capture with only a train file: hours of renders on a CPU after a short fit). Its training view 0, scored
    among them, is not rendered a second time for psnr_train."""
    from rwf_render import nerf_task

    scored, renders = [], []
    real_metrics, real_render = nerf_task.test_metrics, nerf_task.render_and_target

    def test_metrics(*a, **k):
        scored.append(True)
        return real_metrics(*a, **k)

    def render_and_target(model, split, i, *a, **k):
        if scored:  # after training: the final scores
            renders.append(i)
        return real_render(model, split, i, *a, **k)

    monkeypatch.setattr(nerf_task, "test_metrics", test_metrics)
    monkeypatch.setattr(nerf_task, "render_and_target", render_and_target)
    root = _dataset(tmp_path / "d", n=7)
    meta = json.loads((root / "transforms.json").read_text())
    (root / "transforms.json").unlink()
    (root / "transforms_train.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(root / "transforms_train.json"), "--out", str(run), *TINY,
                         "--eval-images", "2"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["psnr_split"] == "train" and metrics["test_images"] == 2
    assert "(2 train images; the dataset has no test split)" in capsys.readouterr().out
    assert sorted(renders) == [0, 6] and metrics["psnr_train"] == metrics["views"][0]["psnr"]


def test_a_transforms_json_with_a_byte_order_mark_loads(tmp_path):
    """Windows tools write UTF-8 with a BOM, which instant-ngp's JSON reader skips; json.loads refused it."""
    root = _dataset(tmp_path / "d", n=4)
    text = (root / "transforms.json").read_text()
    (root / "transforms.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert len(load_transforms(root, "all")) == 4


def test_training_images_listed_as_held_out_views_are_said(tiny_scene, tmp_path, capsys):
    """A fuzzing hunt: a frames list written twice (or one photo in transforms_train.json and transforms_test.json)
    put training photos into the test split, and the test PSNR measured them without a word. rwf data check and
    rwf fit nerf warn, naming the split and a first image."""
    import shutil

    from data_tools.cli import main as data_main
    from rwf_render.errors import RwfWarning

    data = tmp_path / "scene"
    shutil.copytree(tiny_scene, data)
    assert data_main(["data", "check", str(data)]) == 0
    assert "held-out split" not in capsys.readouterr().out
    (data / "transforms_test.json").write_text((data / "transforms_train.json").read_text())
    assert data_main(["data", "check", str(data)]) == 0
    assert "training images are listed in a held-out split too: 24 of the test split" in capsys.readouterr().out
    with pytest.warns(RwfWarning, match="24 of the test split .first: r_0.png.; their scores measure photos"):
        assert cli.main(["fit", "nerf", str(data), "--steps", "1", "--quiet", "--out", str(tmp_path / "run"),
                         "--grid-resolution", "16", "--eval-images", "1"]) == 0
