"""One rule for every file a render or an export writes: an existing file is replaced only with --force, and never
when it is a file of a run (config.json, checkpoint.pt, ...) or of the run's dataset, even with --force.

``rwf render`` (image and sdf runs) and ``rwf export mesh`` replaced an existing --out file without a word, ``rwf
export cameras --force`` wrote its JSON over a training photo or another run's config.json, and a NeRF render into a
folder replaced the user's own rgb_0000.png (an overwrite-protection audit, 2026-12-01)."""

import hashlib
import json
from pathlib import Path

import pytest

from rwf_render import cli
from rwf_render.datasets import load_transforms

from conftest import random_views_scene  # noqa: E402  (tests/ is on sys.path under pytest)
from test_shape_image_bad_input_more import IMG_TINY, SDF_TINY, assert_one_error, run_cli  # noqa: E402

NERF_TINY = ["--steps", "2", "--grid-resolution", "16", "--width", "16", "--features", "8", "--eval-images", "1",
             "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    scene = random_views_scene(root / "scene", {"train": 3, "test": 1})
    assert cli.main(["fit", "image", "--size", "16", "--out", str(root / "img"), *IMG_TINY]) == 0
    assert cli.main(["fit", "sdf", "--out", str(root / "sdf"), *SDF_TINY]) == 0
    assert cli.main(["fit", "nerf", str(scene), "--out", str(root / "nerf"), *NERF_TINY]) == 0
    return {"root": root, "scene": scene, "img": root / "img", "sdf": root / "sdf", "nerf": root / "nerf"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("what, name", [("render img", "r.png"), ("render sdf", "s.png"),
                                        ("mesh sdf", "m.ply"), ("mesh nerf", "n.ply"), ("cameras nerf", "c.json")])
def test_an_existing_file_is_replaced_only_with_force(runs, capsys, tmp_path, what, name):
    verb, kind = what.split()
    low = ["--threshold", "0.01"] if kind == "nerf" else []  # a 2-step NeRF: a surface at a low density
    argv = {"render": ["render", runs[kind]], "mesh": ["export", "mesh", runs[kind], "--res", "8", "--quiet", *low],
            "cameras": ["export", "cameras", runs[kind]]}[verb]
    out = tmp_path / name
    out.write_bytes(b"the user's own file")
    line = assert_one_error(*run_cli(capsys, *argv, "--out", out))
    assert line == f"rwf: error: {out}: exists; --force replaces it"
    assert out.read_bytes() == b"the user's own file"
    code, err = run_cli(capsys, *argv, "--out", out, "--force")
    assert code == 0, err
    assert out.read_bytes() != b"the user's own file"


def test_a_default_output_inside_the_run_is_replaced_only_with_force(runs, capsys):
    out = runs["img"] / "render_x0.5.png"
    assert run_cli(capsys, "render", runs["img"], "--scale", "0.5")[0] == 0
    before = _digest(out)
    line = assert_one_error(*run_cli(capsys, "render", runs["img"], "--scale", "0.5"))
    assert f"{out}: exists; --force replaces it" in line and _digest(out) == before
    assert run_cli(capsys, "render", runs["img"], "--scale", "0.5", "--force")[0] == 0


def test_force_never_writes_over_a_runs_files_or_the_datasets(runs, capsys):
    photo = load_transforms(runs["scene"], "train").image_paths[0]
    protected = [(photo, "is a file of the run's dataset"), (runs["sdf"] / "config.json", "is a file of the run"),
                 (runs["nerf"] / "metrics.json", "is a file of the run"),
                 (runs["nerf"] / "checkpoint.pt", "is a file of the run")]
    for target, says in protected:
        before = _digest(target)
        line = assert_one_error(*run_cli(capsys, "export", "cameras", runs["nerf"], "--out", target, "--force"))
        assert says in line, line
        assert _digest(target) == before
    assert json.loads((runs["sdf"] / "config.json").read_text())["kind"] == "sdf"


def test_a_nerf_render_replaces_an_earlier_renders_frames_but_not_the_users(runs, capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "rgb_0000.png").write_bytes(b"my own photo")
    (mine / "notes.txt").write_text("notes")
    line = assert_one_error(*run_cli(capsys, "render", runs["nerf"], "--split", "test", "--out", mine, "--quiet"))
    assert f"{mine}: holds rgb_0000.png that no earlier render there wrote; --force replaces it" in line
    assert (mine / "rgb_0000.png").read_bytes() == b"my own photo"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "rgb_0000.png"]
    assert run_cli(capsys, "render", runs["nerf"], "--split", "test", "--out", mine, "--quiet", "--force")[0] == 0
    assert (mine / "rgb_0000.png").read_bytes() != b"my own photo" and (mine / "notes.txt").exists()
    # the frames are this render's now: rendering there again needs no --force
    assert run_cli(capsys, "render", runs["nerf"], "--split", "test", "--out", mine, "--quiet")[0] == 0
