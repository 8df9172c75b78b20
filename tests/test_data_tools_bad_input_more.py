"""More bad input for ``rwf data``: each case ends in one line on stderr and exit 2 (or is converted correctly), and
nothing is written, neither OUT nor a staging folder nor a file beside it."""

import contextlib
import json
import re
import struct
import warnings

import numpy as np
import pytest

from data_tools.cli import main
from data_tools.colmap_io import read_model, write_model
from data_tools.common import load_image, save_image
from data_tools.llff import write_poses_bounds
from rwf_render.errors import RwfWarning
from rwf_render.imgio import read_image

from test_data_tools_colmap import MODELS, _moved_points, _synthetic_model  # noqa: E402  (tests/ on sys.path)


def _fails_cleanly(capsys, argv, message, root):
    """``rwf data ARGV`` exits 2 with one line containing ``message`` and leaves ``root`` as it was."""
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


@pytest.fixture
def model_dir(tmp_path):
    """A text COLMAP model of two cameras (sparse/) with its images (images/)."""
    _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    return tmp_path


def _edit(path, pattern, repl, line=0):
    lines = path.read_text().splitlines()
    lines[line] = re.sub(pattern, repl, lines[line], count=1)
    path.write_text("\n".join(lines) + "\n")


# -- COLMAP --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("file, pattern, repl, message", [
    ("cameras.txt", r"PINHOLE 64", "PINHOLE 0", "needs a positive size and focal length"),  # was ZeroDivisionError
    ("cameras.txt", r"PINHOLE 64 48 70.0", "PINHOLE 64 48 -70.0", "needs a positive size and focal length"),
    ("cameras.txt", r"PINHOLE 64 48 70.0", "PINHOLE 64 48 nan", "finite parameters"),  # was NaN in the JSON
    ("images.txt", r"^1 \S+ \S+ \S+ \S+", "1 0 0 0 0", "non-finite or zero pose"),
    ("points3D.txt", r"^0 \S+", "0 nan", "non-finite coordinates"),  # one point made every pose NaN
    ("points3D.txt", r" 128 128 128", " 300 128 128", "malformed COLMAP txt model"),  # was OverflowError
    ("images.txt", r" im0.png", " im1.png", "appear more than once"),
    ("images.txt", r" im0.png", " ../../im0.png", "points outside the images folder"),  # was written beside OUT
])
def test_colmap_bad_values_fail_cleanly(model_dir, capsys, file, pattern, repl, message):
    _edit(model_dir / "sparse" / file, pattern, repl)
    if ".." in repl:  # the image exists where the name points, so only the name itself is wrong
        (model_dir / "images" / "im0.png").rename(model_dir.parent / "im0.png")
    (model_dir / "o").mkdir()
    argv = ["data", "colmap", str(model_dir / "sparse"), str(model_dir / "images"), str(model_dir / "o" / "out")]
    _fails_cleanly(capsys, argv, message, model_dir.parent)


def test_binary_count_beyond_the_file_is_truncation_not_allocation(model_dir, capsys):
    model = read_model(model_dir / "sparse")
    write_model(model, model_dir / "bin", "bin")
    data = bytearray((model_dir / "bin" / "points3D.bin").read_bytes())
    data[:8] = struct.pack("<Q", 2 ** 62)  # numpy would fail (or try) to allocate this many points
    (model_dir / "bin" / "points3D.bin").write_bytes(bytes(data))
    argv = ["data", "colmap", str(model_dir / "bin"), str(model_dir / "images"), str(model_dir / "out")]
    _fails_cleanly(capsys, argv, "truncated or not a COLMAP binary file", model_dir)


def test_observations_of_pruned_points_count_as_untriangulated(tmp_path, capsys):
    """points3D.txt without some points an image still refers to: converted exactly from the points that remain
    (was a KeyError)."""
    model = _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    lines = (tmp_path / "sparse" / "points3D.txt").read_text().splitlines()
    (tmp_path / "sparse" / "points3D.txt").write_text("\n".join(lines[10:]) + "\n")
    with pytest.warns(RwfWarning, match=r"20 observation\(s\) refer to 3D points absent"):  # 10 points, 2 images
        assert main(["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    reproj = float(re.search(r"converted cameras: ([\d.]+) px", out).group(1))
    assert reproj < 1e-3
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert np.isfinite(np.array([f["transform_matrix"] for f in meta["frames"]])).all()
    assert _moved_points(model, meta).shape == (40, 3)


# -- LLFF ----------------------------------------------------------------------------------------------------------
def _llff(tmp_path, n=3):
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, 3] = np.stack([np.linspace(-0.5, 0.5, n), np.zeros(n), np.full(n, 4.0)], 1)
    (tmp_path / "images").mkdir()
    for i in range(n):
        save_image(tmp_path / "images" / f"{i}.png", np.zeros((30, 40, 3), np.uint8))
    write_poses_bounds(tmp_path / "poses_bounds.npy", c2w, [30.0, 40.0, 35.0], np.array([[2.0, 8.0]] * n))
    return np.load(tmp_path / "poses_bounds.npy")


def _set(col, value):
    def edit(a):
        a = a.copy()
        a[:, col] = value
        return a
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.astype(str), "expected a real-valued (N, 17) array"),  # was a TypeError traceback
    (lambda a: a.astype(complex), "expected a real-valued (N, 17) array"),  # was silently the real part
    ("npz", "an .npz archive"),  # was an AttributeError traceback
    (_set(4, 0.0), "height, width, focal"),  # H = 0: was Infinity focal lengths in the JSON
    (_set(14, -35.0), "height, width, focal"),
    (_set(15, 9.0), "expected 0 < near < far"),
    (lambda a: np.concatenate([a[:, :15] * 3, a[:, 15:]], 1), "is not a rotation"),
    (_set(16, np.nan), "row 0 holds a non-finite value (nan) at column 16"),  # said "got shape (3, 17)"
])
def test_llff_bad_arrays_fail_cleanly(tmp_path, capsys, edit, message):
    src = tmp_path / "scene"
    src.mkdir()
    arr = _llff(src)
    if edit == "npz":
        with open(src / "poses_bounds.npy", "wb") as f:
            np.savez(f, poses=arr)
    else:
        np.save(src / "poses_bounds.npy", edit(arr))
    _fails_cleanly(capsys, ["data", "llff", str(src), str(tmp_path / "out")], message, tmp_path)


# -- synth ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--fov", "180"], "between 0 and 180"),  # 500 used to write camera_angle_x 8.7 rad beside a 140-degree focal
    (["--supersample", "1000"], "1..16"),  # used to run for ever
    (["--res", "100000000"], "1..8192"),  # used to end in an allocator traceback
    # used to write a dataset of a mesh.ply; --views 0 alone wrote one without training frames (audit #5)
    (["--views", "0", "--val", "0", "--test", "0"], "--views: must be a positive integer"),
])
def test_synth_impossible_options(tmp_path, capsys, extra, message):
    _fails_cleanly(capsys, ["data", "synth", "demo", str(tmp_path / "out"), "--views", "1", *extra], message,
                   tmp_path)


@pytest.mark.parametrize("text, message", [
    ("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n", "non-finite coordinates"),
    ("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n", "no extent"),
    # a fuzzing hunt: what rwf fit sdf refused, synth rendered (a shifted cube, 0 % of every image)
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 0 1 2\nf 1 2 3\n", "OBJ indices start at 1"),
    ("v 0 0 0\nv 1 1 1\nv 2 2 2\nf 1 2 3\n", "no area"),
    ("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
     "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
     "truncated"),
])
def test_synth_unusable_meshes(tmp_path, capsys, text, message):
    pytest.importorskip("trimesh")
    name = "m.ply" if text.startswith("ply") else "m.obj"
    (tmp_path / name).write_text(text)
    _fails_cleanly(capsys, ["data", "synth", str(tmp_path / name), str(tmp_path / "out")], message, tmp_path)


def test_synth_face_index_beyond_the_vertices(tmp_path, capsys):
    pytest.importorskip("trimesh")
    (tmp_path / "m.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                                    "property float z\nelement face 1\nproperty list uchar int vertex_indices\n"
                                    "end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n")
    _fails_cleanly(capsys, ["data", "synth", str(tmp_path / "m.ply"), str(tmp_path / "out")],
                   "faces refer to vertices that do not exist", tmp_path)


def test_synth_force_never_replaces_the_folder_holding_the_mesh(tmp_path, capsys):
    """``rwf data synth DIR/m.obj DIR --force`` used to delete the mesh and everything else in DIR."""
    pytest.importorskip("open3d")
    (tmp_path / "m.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    _fails_cleanly(capsys, ["data", "synth", str(tmp_path / "m.obj"), str(tmp_path), "--force", "--res", "8"],
                   "would replace the input", tmp_path)


# -- downscale -----------------------------------------------------------------------------------------------------
def _flat_dataset(tmp_path):
    """transforms.json in ds/ whose frames name images in two folders outside it, with the same file names."""
    (tmp_path / "ds").mkdir()
    frames = []
    for k, sub in enumerate(("camA", "camB")):
        (tmp_path / sub).mkdir()
        save_image(tmp_path / sub / "0001.png", np.full((8, 12, 3), 60 * (k + 1), np.uint8))
        frames.append({"file_path": f"../{sub}/0001.png", "transform_matrix": np.eye(4).tolist()})
    meta = {"fl_x": 10.0, "fl_y": 10.0, "cx": 6.0, "cy": 4.0, "w": 12, "h": 8, "frames": frames}
    (tmp_path / "ds" / "transforms.json").write_text(json.dumps(meta))
    return meta


def test_downscale_keeps_images_of_the_same_name_apart(tmp_path):
    """Two frames whose images share a file name in different folders outside the dataset (a --no-copy COLMAP rig)
    used to end up as one file, so the second frame showed the first one's image."""
    _flat_dataset(tmp_path)
    assert main(["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "half"), "-k", "2"]) == 0
    frames = json.loads((tmp_path / "half" / "transforms.json").read_text())["frames"]
    paths = [f["file_path"] for f in frames]
    assert len(set(paths)) == 2
    for k, rel in enumerate(paths):
        img = load_image(tmp_path / "half" / rel)
        assert img.shape == (4, 6, 3) and (img == 60 * (k + 1)).all()


@pytest.mark.parametrize("key, value, message", [
    ("w", "abc", "w must be a whole number of pixels"),  # was a ValueError traceback
    ("fl_x", [1], "fl_x must be a finite number"),
    ("mask_path", 5, "mask_path must be a file path"),  # was a TypeError traceback
])
def test_downscale_bad_values_fail_cleanly(tmp_path, capsys, key, value, message):
    meta = _flat_dataset(tmp_path)
    meta["frames"][1][key] = value
    (tmp_path / "ds" / "transforms.json").write_text(json.dumps(meta))
    _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "half"), "-k", "2"], message,
                   tmp_path)


@pytest.mark.parametrize("frames", ["none", "missing"])
def test_downscale_of_a_dataset_without_a_usable_frame_fails_cleanly(tmp_path, capsys, frames):
    """It wrote an empty dataset and exited 0, which the fit and the check then refused."""
    meta = _flat_dataset(tmp_path)
    if frames == "none":
        meta["frames"] = []
    else:
        for f in meta["frames"]:
            f["file_path"] = "gone/" + f["file_path"].split("/")[-1]
    (tmp_path / "ds" / "transforms.json").write_text(json.dumps(meta))
    with pytest.warns(RwfWarning) if frames == "missing" else contextlib.nullcontext():
        _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "half"), "-k", "2"],
                       "no frame with an existing image to downscale", tmp_path)


def test_a_failure_while_writing_removes_the_folders_made_for_out(tmp_path, capsys):
    """A corrupt image is found only while OUT is being staged; the parent folders made for OUT used to stay."""
    _flat_dataset(tmp_path)
    (tmp_path / "camB" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "new" / "deeper" / "out"),
                            "-k", "2"], "cannot decode image", tmp_path)


def test_downscale_force_never_replaces_a_folder_of_its_images(tmp_path, capsys):
    _flat_dataset(tmp_path)
    _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "ds"), str(tmp_path / "camB"), "-k", "2", "--force"],
                   "would replace the input", tmp_path)


# -- photos --------------------------------------------------------------------------------------------------------
def test_photos_with_too_few_images_stops_before_sfm(tmp_path, capsys, monkeypatch):
    import data_tools.sfm as sfm

    monkeypatch.setattr(sfm, "import_pycolmap", lambda: None)
    monkeypatch.setattr(sfm, "run_sfm", lambda *a, **k: pytest.fail("SfM ran on 2 images"))
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        save_image(tmp_path / "imgs" / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    _fails_cleanly(capsys, ["data", "photos", str(tmp_path / "imgs"), str(tmp_path / "out")], "at least 3", tmp_path)


def test_unreadable_video_is_one_line(tmp_path, capsys):
    """ffmpeg appends its whole log (30 lines) to the error of a file it cannot open."""
    pytest.importorskip("imageio_ffmpeg", reason="reading videos needs imageio-ffmpeg")
    (tmp_path / "v.mp4").write_text("not a video")
    _fails_cleanly(capsys, ["data", "photos", "--video", str(tmp_path / "v.mp4"), str(tmp_path / "out")],
                   "cannot read the video", tmp_path)


@pytest.mark.parametrize("options", [["--bounds"], ["--depth"], ["--bounds", "--depth"]])
def test_colmap_bounds_or_depth_without_3d_points_fail_cleanly(model_dir, capsys, options):
    """With points3D empty, --bounds wrote no near/far and --depth all-zero depth maps, and the command exited 0
    (the fit refused the depth maps later); without those options such a model still converts."""
    (model_dir / "sparse" / "points3D.txt").write_text("")
    with pytest.warns(RwfWarning):  # the images' observations now point at absent points
        _fails_cleanly(capsys, ["data", "colmap", *options, str(model_dir / "sparse"), str(model_dir / "images"),
                                str(model_dir / "out")], "has no 3D points", model_dir)
        assert main(["data", "colmap", str(model_dir / "sparse"), str(model_dir / "images"),
                     str(model_dir / "plain")]) == 0
    assert "nan" not in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [("[" * 100000 + "]" * 100000, "nested too deeply"),
                                           ('{"frames": [], "w": ' + "9" * 5000 + "}", "not valid JSON")],
                         ids=["deep", "huge-integer"])
def test_json_nested_too_deeply_or_with_a_huge_integer_is_one_message(tmp_path, capsys, text, message):
    """json.loads raises RecursionError for deep nesting and ValueError for an integer of more than 4300 digits:
    both were tracebacks from every command that reads a transforms.json."""
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "transforms.json").write_text(text)
    assert main(["data", "check", str(tmp_path / "deep")]) == 1  # the check's verdict: the dataset has errors
    out = capsys.readouterr()
    assert f"error: {tmp_path / 'deep' / 'transforms.json'}: {message}" in out.out or message in out.out, out
    assert "Traceback" not in out.err
    _fails_cleanly(capsys, ["data", "downscale", str(tmp_path / "deep"), str(tmp_path / "o"), "-k", "2"], message,
                   tmp_path)


def test_synth_scales_a_mesh_with_coordinates_near_the_float_limit(tmp_path, capsys):
    """A tetrahedron with coordinates of 1e308 overflowed the normalization: mesh_to_world all zero, the mesh
    called open, and an empty dataset written with exit 0. Scaled without overflow, 1e300 renders like a small copy;
    1e308 would need a subnormal scale (flushed to zero where denormals are off): refused in one line."""
    from data_tools.synth import load_mesh, normalize_mesh

    def tet(one):
        return f"v -{one} 0 0\nv {one} 0 0\nv 0 {one} 0\nv 0 0 {one}\nf 1 2 3\nf 1 2 4\nf 2 3 4\nf 1 3 4\n"

    for name, one in (("small", "1"), ("huge", "1e300"), ("limit", "1e308")):
        (tmp_path / f"{name}.obj").write_text(tet(one))
    small, s_small = normalize_mesh(load_mesh(tmp_path / "small.obj"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        huge, s_huge = normalize_mesh(load_mesh(tmp_path / "huge.obj"))
    np.testing.assert_allclose(huge.vertices, small.vertices, atol=1e-12)
    assert s_huge[0, 0] * 1e300 == pytest.approx(s_small[0, 0])
    assert main(["data", "synth", str(tmp_path / "huge.obj"), str(tmp_path / "out"), "--res", "8", "--views", "1",
                 "--val", "0", "--test", "0"]) == 0
    assert read_image(tmp_path / "out" / "train" / "r_0.png")[0][..., 3].max() > 0  # the object is in view
    _fails_cleanly(capsys, ["data", "synth", str(tmp_path / "limit.obj"), str(tmp_path / "out2"), "--res", "8",
                            "--views", "1", "--val", "0", "--test", "0"], "too large to scale", tmp_path)


def test_synth_demo_beside_a_folder_named_demo_renders_the_built_in_scene(tmp_path, monkeypatch):
    """A folder ./demo made `rwf data synth demo OUT` look for a mesh file named demo: "demo: mesh file not
    found". A folder is no mesh: the built-in still life is rendered."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert main(["data", "synth", "demo", "out", "--res", "8", "--views", "1", "--val", "0", "--test", "0"]) == 0
    import trimesh

    from data_tools.synth import demo_mesh

    meta = json.loads((tmp_path / "out" / "transforms_train.json").read_text())
    assert len(trimesh.load(tmp_path / "out" / meta["mesh_file_path"], process=False).faces) == len(demo_mesh().faces)


def test_the_standalone_entry_point_takes_the_commands_without_the_data_word(tmp_path, capsys):
    """``python -m data_tools synth ...`` is ``rwf data synth ...`` (the ``data`` word is optional there, as a
    user coming from the module name expects); an unknown command is one line listing the commands, exit 2."""
    assert main(["synth", "demo", str(tmp_path / "a"), "--res", "8", "--views", "2", "--val", "1", "--test",
                 "1"]) == 0
    assert main(["data", "synth", "demo", str(tmp_path / "b"), "--res", "8", "--views", "2", "--val", "1", "--test",
                 "1"]) == 0
    assert (tmp_path / "a" / "transforms_train.json").read_text() == (tmp_path / "b" / "transforms_train.json"
                                                                      ).read_text()
    capsys.readouterr()
    assert main(["sinth", "demo", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'sinth'" in err[0] and "'synth'" in err[0]
    assert not (tmp_path / "c").exists()
