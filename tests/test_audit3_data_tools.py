"""Audit 3 of ``rwf data``: seeds, unwritable or misplaced OUT folders, argparse messages and help text, and the
out-of-memory hint of synth. Every case ends in one line and the documented exit code, with nothing written."""

import argparse
import json
import os

import numpy as np
import pytest

import data_tools.common as common
from data_tools.cli import main, register
from data_tools.colmap import convert_model
from data_tools.common import save_image
from rwf_render.cli import Parser
from rwf_render.errors import UserError

from test_data_tools_bad_input_more import _fails_cleanly, _flat_dataset, _llff  # noqa: E402  (tests/ on sys.path)
from test_data_tools_colmap import MODELS, _synthetic_model  # noqa: E402

TETRA = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
TINY = ["--res", "8", "--views", "1", "--val", "0", "--test", "0", "--supersample", "1"]


def _photos_without_sfm(monkeypatch, tmp_path, n=3):
    """A folder of ``n`` images, with pycolmap and SfM replaced so that reaching SfM fails the test."""
    import data_tools.sfm as sfm  # noqa: PLC0415

    monkeypatch.setattr(sfm, "import_pycolmap", lambda: None)
    monkeypatch.setattr(sfm, "run_sfm", lambda *a, **k: pytest.fail("SfM ran"))
    (tmp_path / "imgs").mkdir()
    for i in range(n):
        save_image(tmp_path / "imgs" / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    return tmp_path / "imgs"


def _data_commands() -> dict:
    """{name: sub-parser} of ``rwf data``."""
    parser = Parser(prog="rwf")
    register(parser.add_subparsers(dest="command", parser_class=Parser))
    data = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["data"]
    return next(a for a in data._actions if isinstance(a, argparse._SubParsersAction)).choices


# -- A. seeds --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**32), "x"])
def test_synth_refuses_a_seed_numpy_cannot_take(tmp_path, capsys, seed):
    """--seed -1 used to end in numpy's "ValueError: expected non-negative integer" traceback."""
    (tmp_path / "m.obj").write_text(TETRA)
    _fails_cleanly(capsys, ["data", "synth", str(tmp_path / "m.obj"), str(tmp_path / "out"), *TINY, "--seed", seed],
                   "--seed", tmp_path)


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_photos_refuses_a_seed_colmap_cannot_take(tmp_path, capsys, monkeypatch, seed):
    """photos took any integer (type=int) and handed it to pycolmap.set_random_seed, an unsigned int."""
    imgs = _photos_without_sfm(monkeypatch, tmp_path)
    _fails_cleanly(capsys, ["data", "photos", str(imgs), str(tmp_path / "out"), "--seed", seed], "--seed", tmp_path)


def test_library_calls_refuse_a_negative_seed(tmp_path):
    from data_tools.sfm import photos_to_dataset  # noqa: PLC0415
    from data_tools.synth import render_dataset  # noqa: PLC0415

    with pytest.raises(UserError, match="seed"):
        render_dataset(tmp_path / "no-mesh.obj", tmp_path / "out", seed=-1)
    with pytest.raises(UserError, match="seed"):
        photos_to_dataset(tmp_path / "out", images_dir=tmp_path, seed=-1)
    assert not (tmp_path / "out").exists()


# -- B. an OUT that cannot be written --------------------------------------------------------------------------------
def test_out_under_a_file_is_exit_2_naming_out(tmp_path, capsys):
    """A parent of OUT that is a file (as root, the one case chmod cannot make): was exit 1, 'File exists'."""
    _flat_dataset(tmp_path)
    (tmp_path / "f.txt").write_text("mine")
    out = tmp_path / "f.txt" / "sub" / "out"
    _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(out), "-k", "2"],
                   f"{out}: cannot create the output folder", tmp_path)
    assert (tmp_path / "f.txt").read_text() == "mine"


def test_unwritable_out_names_out_not_the_staging_folder(tmp_path, capsys, monkeypatch):
    """mkdtemp failing (a read-only parent for a non-root user) used to be exit 1 naming '.out.partial-xxxx'."""
    def refuse(prefix="", dir=None, **_):
        raise PermissionError(13, "Permission denied", os.path.join(dir, prefix + "nn46v5ca"))

    _flat_dataset(tmp_path)
    from rwf_render import locks
    monkeypatch.setattr(locks.tempfile, "mkdtemp", refuse)  # the staging folder is made by locks.staging_dir
    out = tmp_path / "new" / "out"
    assert main(["data", "downscale", str(tmp_path / "ds"), str(out), "-k", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rwf: error: {out}: cannot create the output folder (Permission denied)", err
    assert not (tmp_path / "new").exists()  # the folder made for OUT went again


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_read_only_parent_is_exit_2_naming_out(tmp_path, capsys):
    _flat_dataset(tmp_path)
    (tmp_path / "rofs").mkdir()
    (tmp_path / "rofs").chmod(0o555)
    try:
        _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "rofs" / "x"), "-k", "2"],
                       f"{tmp_path / 'rofs' / 'x'}: cannot create the output folder", tmp_path)
    finally:
        (tmp_path / "rofs").chmod(0o755)


def test_photos_checks_out_is_writable_before_sfm(tmp_path, capsys, monkeypatch):
    """photos writes OUT only after minutes of SfM: an OUT that cannot be made is refused first."""
    imgs = _photos_without_sfm(monkeypatch, tmp_path)
    (tmp_path / "f.txt").write_text("")
    _fails_cleanly(capsys, ["data", "photos", str(imgs), str(tmp_path / "f.txt" / "out")],
                   "cannot create the output folder", tmp_path)


# -- C. argparse type names --------------------------------------------------------------------------------------------
def test_min_registered_not_a_number_is_readable(tmp_path, capsys, monkeypatch):
    imgs = _photos_without_sfm(monkeypatch, tmp_path)
    _fails_cleanly(capsys, ["data", "photos", str(imgs), str(tmp_path / "out"), "--min-registered", "abc"],
                   "expected a fraction in [0, 1], got 'abc'", tmp_path)


def test_no_option_message_names_a_type_function(capsys):
    """argparse prints "invalid <function name> value" when a type function raises ValueError: every typed option
    of every data command, given a word, must say what it expected instead."""
    base = {"synth": ["demo", "o"], "colmap": ["s", "i", "o"], "photos": ["i", "o"], "llff": ["d", "o"],
            "check": ["d"], "downscale": ["d", "o", "-k", "2"]}
    typed = 0
    for name, p in _data_commands().items():
        for action in p._actions:
            if action.type is None or not action.option_strings:
                continue
            typed += 1
            assert main(["data", name, *base[name], action.option_strings[0], "abc"]) == 2
            err = capsys.readouterr().err
            assert "invalid" not in err and "_" not in err.split(":")[-1], err
            assert "expected" in err, err
    assert typed >= 9


# -- D. synth out of memory --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [
    MemoryError("Unable to allocate 96.0 GiB for an array with shape (4096, 4096, 768) and data type float64"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 103079215104 bytes."),
])
def test_synth_out_of_memory_suggests_its_own_options(tmp_path, capsys, monkeypatch, error):
    """The shared message said '--target-samples', an option of rwf fit that synth does not have."""
    import data_tools.synth as synth  # noqa: PLC0415

    def render_dataset(*a, **k):
        raise error
    monkeypatch.setattr(synth, "render_dataset", render_dataset)
    assert main(["data", "synth", str(tmp_path / "m.obj"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rwf: error: out of memory"), err
    # --res only: the frame is cast in blocks, one sub-pixel pass after another, so --supersample adds no memory
    assert "--res" in err and "--supersample" not in err and "--target-samples" not in err, err
    assert "96.0 GiB" in err or "103079215104 bytes" in err


def test_synth_keeps_other_runtime_errors(tmp_path, monkeypatch):
    """Only memory errors are turned into the message; any other RuntimeError is a bug and keeps its traceback."""
    import data_tools.synth as synth  # noqa: PLC0415

    def render_dataset(*a, **k):
        raise RuntimeError("a bug")
    monkeypatch.setattr(synth, "render_dataset", render_dataset)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["data", "synth", str(tmp_path / "m.obj"), str(tmp_path / "out")])


# -- E. help text ------------------------------------------------------------------------------------------------------
def test_every_option_with_a_value_states_its_default():
    missing = []
    for name, p in _data_commands().items():
        for a in p._actions:
            if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction)):
                continue
            if (a.default is not None or a.choices) and not a.required and "default" not in (a.help or ""):
                missing.append(f"{name} {a.option_strings[0]}")
    assert not missing, missing


def test_photos_usage_and_positionals():
    p = _data_commands()["photos"]
    usage = p.format_usage()
    assert "[IMAGES_DIR] OUT" in usage and "[[" not in usage and "..." not in usage, usage
    assert vars(p.parse_args(["imgs", "out"]))["images"] == "imgs"
    args = p.parse_args(["--video", "v.mp4", "out"])
    assert args.images is None and args.out == "out"
    with pytest.raises(UserError):
        p.parse_args(["a", "b", "c"])


def test_photos_still_needs_images_or_video(capsys):
    assert main(["data", "photos", "out"]) == 2
    assert "give IMAGES_DIR and OUT" in capsys.readouterr().err
    assert main(["data", "photos", "--video", "v.mp4", "imgs", "out"]) == 2
    assert "give only OUT" in capsys.readouterr().err


# -- F. OUT inside an input folder -------------------------------------------------------------------------------------
def test_colmap_refuses_out_inside_its_images_folder(tmp_path, capsys):
    """``rwf data colmap SRC SRC/images2 --force`` wrote a dataset into the input dataset."""
    _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    for out in (tmp_path / "images" / "images2", tmp_path / "sparse" / "a" / "b"):
        _fails_cleanly(capsys, ["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"), str(out),
                                "--force"], "lies inside the input folder", tmp_path)


def test_llff_refuses_out_inside_its_folder(tmp_path, capsys):
    _llff(tmp_path)
    _fails_cleanly(capsys, ["data", "llff", str(tmp_path), str(tmp_path / "images_ngp")],
                   f"lies inside the input folder {tmp_path}", tmp_path)


def test_downscale_refuses_out_inside_the_dataset_or_its_image_folders(tmp_path, capsys):
    _flat_dataset(tmp_path)  # ds/transforms.json naming ../camA/0001.png and ../camB/0001.png
    for out in (tmp_path / "ds" / "half", tmp_path / "camA" / "half"):
        _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(out), "-k", "2"],
                       "lies inside the input folder", tmp_path)
    assert main(["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "half"), "-k", "2"]) == 0  # beside: fine


def test_downscale_may_write_beside_a_dataset_whose_images_lie_in_the_folder_above(tmp_path, capsys):
    """proj/ds/transforms.json naming ../0.png: proj holds the dataset, so OUT beside it (proj/half, the README's
    ``rwf data downscale out/ out_half/``) stays allowed; OUT inside the dataset does not."""
    (tmp_path / "ds").mkdir()
    save_image(tmp_path / "0.png", np.full((8, 12, 3), 90, np.uint8))
    meta = {"fl_x": 10.0, "fl_y": 10.0, "cx": 6.0, "cy": 4.0, "w": 12, "h": 8,
            "frames": [{"file_path": "../0.png", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "ds" / "transforms.json").write_text(json.dumps(meta))
    _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "ds" / "half"), "-k", "2"],
                   "lies inside the input folder", tmp_path)
    assert main(["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "half"), "-k", "2"]) == 0
    assert (tmp_path / "half" / "transforms.json").is_file()


def test_photos_refuses_out_inside_the_photos_before_sfm(tmp_path, capsys, monkeypatch):
    imgs = _photos_without_sfm(monkeypatch, tmp_path)
    _fails_cleanly(capsys, ["data", "photos", str(imgs), str(imgs / "out")], "lies inside the input folder", tmp_path)


def test_synth_may_write_beside_its_mesh(tmp_path):
    """synth's input is a file: OUT in the mesh's folder (``rwf data synth mesh.obj out/``) is the usual case."""
    pytest.importorskip("open3d")
    (tmp_path / "m.obj").write_text(TETRA)
    assert main(["data", "synth", str(tmp_path / "m.obj"), str(tmp_path / "out"), *TINY]) == 0
    assert (tmp_path / "out" / "transforms_train.json").is_file()


# -- G. the reprojection errors say what they average ------------------------------------------------------------------
def test_converter_line_says_its_errors_are_means_over_the_observations(tmp_path):
    model = _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    lines = []
    report = convert_model(tmp_path / "sparse", tmp_path / "images", tmp_path / "out", log=lines.append)
    assert report["observations"] == sum(len(im.xys) for im in model.images.values()) == 80
    line = next(s for s in lines if s.startswith("reprojection error"))
    assert line.endswith("; means over 80 observations") and "as stored with its points" in line, line
    assert json.loads((tmp_path / "out" / "transforms.json").read_text())["frames"]


@pytest.mark.parametrize("what", ["project", "runs"])
def test_force_replaces_only_a_dataset_never_a_folder_of_other_files(tmp_path, capsys, what):
    """``rwf data synth demo OUT --force`` with OUT a slip for a folder of the user's files must not delete them."""
    out = tmp_path / "proj"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("keep")
    if what == "runs":
        (out / "sub" / "config.json").write_text('{"kind": "nerf"}')
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["data", "synth", "demo", str(out), "--res", "8", "--views", "2", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a dataset" in err
    assert sorted(p.name for p in out.rglob("*")) == before
    ds = tmp_path / "ds"
    assert main(["data", "synth", "demo", str(ds), "--res", "8", "--views", "2"]) == 0
    (ds / "mine.txt").write_text("x")  # a dataset, even with an extra file, is replaced
    assert main(["data", "synth", "demo", str(ds), "--res", "8", "--views", "2", "--force"]) == 0
    assert not (ds / "mine.txt").exists() and any(ds.glob("transforms*.json"))
