"""Audit 3, NeRF dataset loading: `rwf fit nerf` refuses what `rwf data check` rejects (one shared check), numeric
fields must be numbers, RGB depth maps and half-given bounds are refused, check names unreadable images plainly,
and --resume refuses a dataset changed since the run was trained.

Rule: bad input is one line on stderr and exit 2 with nothing written; check lists the same problem as an error.
"""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.check import check_dataset
from rwf_render import cli
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.imgio import write_image
from rwf_render.nerf_config import NeRFConfig
from rwf_render.nerf_data import dataset_fingerprint, load_split
from rwf_render.resume import check_dataset_unchanged, resume_config

from test_audit_nerf_input import _fails_cleanly as _fit_fails_cleanly  # noqa: E402  (tests/ is on sys.path)
from test_nerf_bad_input_more import TINY, _edit, _pose  # noqa: E402


def _dataset(root: Path, n: int = 9, **top) -> Path:
    """A single-file dataset of ``n`` random 16x12 images in images/, cameras on a circle looking at the origin
    (the scene box, aabb_scale 1, is +-1.5; every camera sees it)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        write_image(root / "images" / f"img{i}.png", rng.random((12, 16, 3)).astype(np.float32))
        frames.append({"file_path": f"images/img{i}.png", "transform_matrix": _pose(i, n)})
    meta = {"fl_x": 14.0, "fl_y": 14.0, "w": 16, "h": 12, "aabb_scale": 1, **top, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def _check_errors(root: Path) -> list[str]:
    return check_dataset(root, log=lambda *a: None)[0]


def _far(m):  # every camera 1e4 away, looking the same way: none sees the box
    for f in m["frames"]:
        for r in range(3):
            f["transform_matrix"][r][3] += 1e4


def _scaled(m):
    t = m["frames"][1]["transform_matrix"]
    for r in range(3):
        t[r][:3] = [3 * v for v in t[r][:3]]


def _sheared(m):
    t = m["frames"][1]["transform_matrix"]
    for r in range(3):
        t[r][1] += 2 * t[r][0]


def _reflected(m):
    t = m["frames"][1]["transform_matrix"]
    for r in range(3):
        t[r][0] = -t[r][0]


# -- A: the fit refuses what check rejects, naming the frame, before writing anything ------------------------------
@pytest.mark.parametrize("edit, message", [
    (_far, "frame 1, images/img1.png: the camera sees none of the scene box"),
    (lambda m: m.update(aabb=[[100, 100, 100], [101, 101, 101]]), "frame 1, images/img1.png: the camera sees none"),
    (lambda m: m.update(cx=-1e9), "frame 1, images/img1.png: principal point (-1e+09, 6) is outside"),
    (_scaled, "frame 1, images/img1.png: rotation is not orthonormal"),
    (_sheared, "frame 1, images/img1.png: rotation is not orthonormal"),
    (_reflected, "frame 1, images/img1.png: rotation is a reflection"),
    (lambda m: m.update(fl_x=True), "fl_x: expected a number, got true"),
], ids=["allfar", "aabb_offscene", "cx_out", "tm_scaled", "tm_shear", "tm_reflect", "fl_bool"])
def test_fit_refuses_cameras_that_check_rejects(tmp_path, capsys, edit, message):
    """These trained to exit 0 ("0 samples/s", or fl_x true read as 1 px) though check rejected them."""
    data = _dataset(tmp_path / "d")
    _edit(data, edit)
    run = tmp_path / "run"
    err = _fit_fails_cleanly(capsys, ["fit", "nerf", str(data), "--out", str(run), *TINY])
    assert "transforms.json" in err and message in err, err
    assert not run.exists()
    assert any(message.split(": ", 1)[-1].split(" (")[0] in e for e in _check_errors(data))


def test_a_good_dataset_still_loads_and_checks_clean(tmp_path):
    data = _dataset(tmp_path / "d")
    assert len(load_split(data, "train")) == 7
    assert _check_errors(data) == []


# -- E: numeric fields are JSON numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(w="16"), 'w: expected a number, got "16"'),
    (lambda m: m.update(fl_x="14"), 'fl_x: expected a number, got "14"'),
    (lambda m: m["frames"][3].update(cx=True), "frame 3: cx: expected a number, got true"),
    (lambda m: m["frames"][3].update(k1=False), "frame 3: k1: expected a number, got false"),
    (lambda m: m["frames"][3]["transform_matrix"][0].__setitem__(3, "1"), "frame 3: transform_matrix: expected"),
    (lambda m: m["frames"][3]["transform_matrix"][3].__setitem__(3, True), "frame 3: transform_matrix: expected"),
    (lambda m: m.update(aabb=[[-1, -1, -1], [1, 1, "1"]]), "aabb: expected numbers"),
    (lambda m: m.update(scale="0.33"), 'scale: expected a number, got "0.33"'),
])
def test_numbers_given_as_strings_or_booleans_are_refused(tmp_path, edit, message):
    """"w": "50" and "fl_x": "60" loaded as numbers; true/false as 1/0."""
    data = _dataset(tmp_path / "d")
    _edit(data, edit)
    with pytest.raises(UserError, match="expected") as e:
        load_transforms(data, "all")
    assert message in str(e.value) and "\n" not in str(e.value)
    in_check = message.replace("frame 3: ", "frame 3 (images/img3.png): ")  # how check names a frame
    assert any(in_check in err for err in _check_errors(data)), (in_check, _check_errors(data))


# -- D: near without far ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, other", [("near", "far"), ("far", "near")])
def test_a_frame_with_one_bound_is_refused(tmp_path, key, other):
    """A frame with "near" but no "far" was silently dropped (the dataset then had no per-image bounds at all)."""
    data = _dataset(tmp_path / "d")
    _edit(data, lambda m: m["frames"][1].update({key: 2.0}))
    with pytest.raises(UserError, match=f"frame 1: gives {key} but no {other}"):
        load_split(data, "train")
    assert any(f"gives {key} but no {other}" in e for e in _check_errors(data))
    _edit(data, lambda m: [f.update(near=0.5, far=6.0) for f in m["frames"]])
    assert load_split(data, "train").near_far.shape == (7, 2)  # both given: used


# -- C: RGB depth maps ------------------------------------------------------------------------------------------------
def test_an_rgb_depth_map_is_refused(tmp_path, capsys):
    """An 8-bit RGB PNG as depth map trained the depth loss on its red channel."""
    data = _dataset(tmp_path / "d")
    (data / "aux").mkdir()
    for i in range(9):
        write_image(data / "aux" / f"{i}.png", np.full((12, 16, 1), 40 / 255, np.float32), bits=16)
    _edit(data, lambda m: [f.update(depth_file_path=f"aux/{i}.png") for i, f in enumerate(m["frames"])])
    assert len(load_split(data, "train", depth=True).depth) > 0  # one channel: loads
    for i in range(9):
        write_image(data / "aux" / f"{i}.png", np.full((12, 16, 3), 40 / 255, np.float32))
    with pytest.raises(UserError, match=r"a depth map has one channel \(or, in a float file, three equal ones\), this "
                                        "image has 3"):
        load_split(data, "train", depth=True)
    err = _fit_fails_cleanly(capsys, ["fit", "nerf", str(data), "--out", str(tmp_path / "run"), "--depth-loss",
                                      "0.1", *TINY])
    assert "aux/1.png: a depth map has one channel" in err and not (tmp_path / "run").exists()
    assert any("depth map has one channel" in e for e in _check_errors(data))


def test_a_float_depth_map_with_the_depth_in_every_channel_is_read(tmp_path):
    """Blender's compositor writes z-depth into R, G and B of a float EXR: channel 0 is the depth, as before the
    RGB refusal; a float file whose channels differ is still a colour image."""
    data = _dataset(tmp_path / "d")
    (data / "aux").mkdir()
    z = np.random.default_rng(0).uniform(1.0, 3.0, (12, 16, 1)).astype(np.float32)
    for i in range(9):
        write_image(data / "aux" / f"{i}.exr", z)
    _edit(data, lambda m: [f.update(depth_file_path=f"aux/{i}.exr") for i, f in enumerate(m["frames"])])
    one_channel = load_split(data, "train", depth=True).depth.t
    for i in range(9):
        write_image(data / "aux" / f"{i}.exr", np.repeat(z, 3, axis=2))
    three_equal = load_split(data, "train", depth=True).depth.t
    assert len(one_channel) > 0 and torch.equal(three_equal, one_channel)
    assert not any("depth map" in e for e in _check_errors(data))
    colour = np.concatenate([z, z * 0.5, z], axis=2)
    write_image(data / "aux" / "4.exr", colour)
    with pytest.raises(UserError, match="this image has 3 different ones"):
        load_split(data, "train", depth=True)


# -- F: check's messages ----------------------------------------------------------------------------------------------
def test_check_says_plainly_what_is_wrong_with_an_image(tmp_path):
    """Empty and truncated images gave pillow's "can not handle the given uri" / "unknown error ... plugin"."""
    data = _dataset(tmp_path / "d")
    (data / "images" / "img1.png").write_bytes(b"")
    good = (data / "images" / "img2.png").read_bytes()
    (data / "images" / "img2.png").write_bytes(good[: len(good) // 2])
    (data / "images" / "img3.png").write_text("not an image at all")
    errors = _check_errors(data)
    text = "\n".join(errors)
    assert "pillow" not in text and "uri" not in text, text
    assert any("frame 1 (images/img1.png)" in e and "is empty (0 bytes)" in e for e in errors), text
    assert any("frame 2 (images/img2.png)" in e and "PNG image is truncated" in e for e in errors), text
    assert any("frame 3 (images/img3.png)" in e and "not a readable image" in e for e in errors), text


def test_check_names_the_frame_index_and_path_of_a_camera_that_sees_no_box(tmp_path):
    """The no-box errors said "transforms.json frame (img0.png)": no index, no folder."""
    data = _dataset(tmp_path / "d")
    _edit(data, _far)
    errors = [e for e in _check_errors(data) if "sees none of the scene box" in e]
    assert len(errors) == 9
    assert errors[4].startswith("transforms.json frame 4 (images/img4.png): "), errors[4]


# -- B: --resume and a changed dataset ------------------------------------------------------------------------------
def test_fingerprint_follows_the_bytes_of_the_json_and_of_each_image(tmp_path):
    data = _dataset(tmp_path / "d")
    first = dataset_fingerprint(data)
    assert set(first["files"]) == {"transforms.json", *(f"images/img{i}.png" for i in range(9))}
    assert dataset_fingerprint(data) == first
    copy = shutil.copytree(data, tmp_path / "copy")  # a copy (new times) is the same data
    assert dataset_fingerprint(copy) == first
    raw = bytearray((data / "images" / "img5.png").read_bytes())
    write_image(data / "images" / "img5.png", np.zeros((12, 16, 3), np.float32))
    second = dataset_fingerprint(data)
    assert second["sha256"] != first["sha256"]
    assert [k for k in first["files"] if first["files"][k] != second["files"][k]] == ["images/img5.png"]
    (data / "images" / "img5.png").write_bytes(raw)
    assert dataset_fingerprint(data) == first


@pytest.fixture(scope="module")
def run_with_fingerprint(tmp_path_factory):
    """A fitted run whose config.json holds its dataset's fingerprint, as the fit writes it."""
    root = tmp_path_factory.mktemp("audit3_resume")
    data, run = _dataset(root / "data"), root / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "nerf", str(data), "--out", str(run), *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["dataset"] == dataset_fingerprint(data)  # the fit's record
    return data, run


def _resume_argv(data, run):
    return ["fit", "nerf", str(data), "--out", str(run), "--resume", "--steps", "3", *TINY[2:]]


def test_resume_refuses_an_edited_image(run_with_fingerprint, capsys):
    data, run = run_with_fingerprint
    path = data / "images" / "img2.png"
    raw = path.read_bytes()
    try:
        write_image(path, np.zeros((12, 16, 3), np.float32))
        before = (run / "config.json").read_text()
        err = _fit_fails_cleanly(capsys, _resume_argv(data, run))
        assert "images/img2.png differs" in err and "sha256 differs" in err, err
        assert (run / "config.json").read_text() == before
    finally:
        path.write_bytes(raw)


def test_resume_refuses_a_changed_focal_length(run_with_fingerprint, capsys):
    data, run = run_with_fingerprint
    raw = (data / "transforms.json").read_bytes()
    try:
        _edit(data, lambda m: m.update(fl_x=2 * m["fl_x"]))
        err = _fit_fails_cleanly(capsys, _resume_argv(data, run))
        assert "transforms.json differs" in err, err
    finally:
        (data / "transforms.json").write_bytes(raw)


def test_resume_of_unchanged_data_and_of_runs_without_a_fingerprint(run_with_fingerprint):
    data, run = run_with_fingerprint
    saved = json.loads((run / "config.json").read_text())
    assert resume_config(run, NeRFConfig.from_dict, None).data == str(data)  # unchanged: no refusal
    raw = (data / "transforms.json").read_bytes()
    try:
        _edit(data, lambda m: m.update(fl_x=2 * m["fl_x"]))
        with pytest.raises(UserError, match="transforms.json differs"):
            resume_config(run, NeRFConfig.from_dict, None)
        old = {k: v for k, v in saved.items() if k != "dataset"}  # saved before the fingerprint existed
        check_dataset_unchanged(old, str(data))
        (run / "config.json").write_text(json.dumps(old))
        assert resume_config(run, NeRFConfig.from_dict, None).data == str(data)
    finally:
        (data / "transforms.json").write_bytes(raw)
        (run / "config.json").write_text(json.dumps(saved))



def test_bounds_on_some_frames_only_are_refused_not_dropped(tmp_path, capsys):
    """Frames 2 and 5 with near/far and the rest without: every frame's bounds were dropped without a word."""
    data = _dataset(tmp_path / "d")

    def some(m):
        for i in (2, 5):
            m["frames"][i].update(near=0.5, far=4.0)

    _edit(data, some)
    with pytest.raises(UserError, match=r"frame 0, images/img0.png: gives no near/far while 2 of the 9 frames do"):
        load_transforms(data, "all")
    assert any("2 of 9 frames give near/far" in e for e in _check_errors(data))
    _edit(data, lambda m: [f.update(near=0.5, far=4.0) for f in m["frames"]])
    assert load_transforms(data, "all").near_far.shape == (9, 2)


@pytest.mark.parametrize("value", [True, "14", None, [14.0]])
def test_the_frame_parser_itself_takes_only_numbers(value):
    """``rwf data downscale`` parses frames directly (not through the loader's checks): ``true`` was read as 1."""
    from rwf_render.frames import _num

    with pytest.raises(UserError, match="fl_x: expected a number"):
        _num(value, "fl_x")
    assert _num(14, "fl_x") == 14.0 and _num(np.float32(1.5), "fl_x") == 1.5


def test_one_camera_that_sees_no_box_is_a_warning_not_a_refusal(tmp_path):
    """A capture may hold a frame turned away from the scene, or a camera beyond the box that the grid's cascades
    reach: the fit trains on the others after a warning. Only a split where no camera sees the box is refused."""
    from rwf_render.errors import RwfWarning

    data = _dataset(tmp_path / "d")

    def away(m):
        for r in range(3):
            m["frames"][1]["transform_matrix"][r][3] += 1e4

    _edit(data, away)
    with pytest.warns(RwfWarning, match="frame 1, images/img1.png: the camera sees none of the scene box"):
        assert len(load_transforms(data, "all").cameras) == 9
    errors, warned = check_dataset(data, log=lambda *a: None)
    assert errors == [] and sum("sees none of the scene box" in w for w in warned) == 1
