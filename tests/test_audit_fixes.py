"""Fixes of the fresh-user audit (/tmp/dx/audit/FINDINGS.md #2, #3, #4, #5, #7, #9, #10): each test failed before.

Every NeRF here is an 8x8-pixel Blender-format scene fitted for 2 steps on a 16^3 grid: seconds on a CPU.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from rwf_render import cli, nerf_task
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError
from rwf_render.imgio import write_image
from rwf_render import nerf_data
from rwf_render.cameras import look_at

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2", "--quiet", "--downscale", "1", "--target-samples", "1024", "--eval-images", "1",
        "--grid-resolution", "16", "--steps-per-diagonal", "128"]
RADIUS = 4.0  # camera distance to the origin; the Blender scene box is +-0.5 / 0.33 = +-1.52 about it


def _look_at_origin(eye) -> list:
    """OpenGL camera-to-world (4x4 list) of a camera at ``eye`` looking at the origin, +Z up."""
    return look_at(eye, (0.0, 0.0, 0.0)).tolist() + [[0.0, 0.0, 0.0, 1.0]]


def blender_scene(root: Path, counts: dict, missing: dict | None = None) -> Path:
    """A Blender-format dataset (no w/h, extension-less file paths) with ``counts[split]`` 8x8 RGBA views on a
    circle of radius RADIUS; ``missing[split]`` adds frames naming images that do not exist."""
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(n):
            write_image(root / split / f"{split}_{i}.png", rng.random((8, 8, 4)).astype(np.float32))
            a = 2 * math.pi * (i + 0.5 * (split != "train")) / max(n, 1)
            frames.append({"file_path": f"./{split}/{split}_{i}",
                           "transform_matrix": _look_at_origin([RADIUS * math.cos(a), RADIUS * math.sin(a), 1.0])})
        for name in (missing or {}).get(split, []):
            frames.append({"file_path": f"./{split}/{name}", "transform_matrix": _look_at_origin([0, -RADIUS, 1.0])})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    return root


def _fit(data: Path, out: Path, *extra: str) -> int:
    return cli.main(["fit", "nerf", str(data), "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 2-step fit of a scene with train, val and test splits, counting every render_and_target call as (image
    names of the split, index)."""
    root = tmp_path_factory.mktemp("fit")
    data = blender_scene(root / "data", {"train": 3, "val": 1, "test": 2})
    calls, real = [], nerf_task.render_and_target

    def counted(model, split, i, background, **kw):
        calls.append((tuple(split.names), i))
        return real(model, split, i, background, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nerf_task, "render_and_target", counted)
        rc = _fit(data, root / "run")
    return types.SimpleNamespace(rc=rc, run=root / "run", data=data, calls=calls)


# -- A (#2): a missing image in a Blender split is skipped with a warning -------------------------------------------
def test_blender_frame_with_missing_image_is_skipped_with_a_warning(tmp_path):
    data = blender_scene(tmp_path / "d", {"train": 2}, missing={"train": ["nope"]})
    with pytest.warns(UserWarning, match=r"skipped 1 frame.*nope"):
        t = load_transforms(data, "train")
    assert len(t) == 2 and t.skipped == ["./train/nope"]


def test_fit_skips_a_missing_blender_image(tmp_path):
    data = blender_scene(tmp_path / "d", {"train": 2}, missing={"train": ["nope"]})
    with pytest.warns(UserWarning, match="skipped 1 frame"):
        assert _fit(data, tmp_path / "run", "--steps", "1") == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["field"]["n_images"] == 2


@pytest.mark.parametrize("size_given", [False, True])
def test_check_reports_a_missing_image_as_a_skipped_frame(tmp_path, capsys, size_given):
    """Blender files give no w/h (the size would come from the image); with w/h the frame parsed, but rwf fit
    skips it all the same, so neither is an error (test_data_tools_convert's "missing" case used to be one)."""
    from data_tools.check import check_dataset

    data = blender_scene(tmp_path / "d", {"train": 2, "val": 1}, missing={"train": ["nope"]})
    if size_given:
        meta = json.loads((data / "transforms_train.json").read_text())
        (data / "transforms_train.json").write_text(json.dumps({**meta, "w": 8, "h": 8}))
    errors, warns = check_dataset(data, log=lambda *a: None)
    assert errors == []
    assert [w for w in warns if "nope" in w and "skipped" in w]
    assert cli.main(["data", "check", str(data)]) == 0
    out = capsys.readouterr().out
    assert "train: 2/3 frames usable" in out and "OK: 0 error(s)" in out


def test_check_fails_a_split_whose_images_are_all_missing(tmp_path):
    from data_tools.check import check_dataset

    data = blender_scene(tmp_path / "d", {"train": 0, "val": 1}, missing={"train": ["a", "b"]})
    errors, _ = check_dataset(data, log=lambda *a: None)
    assert errors == ["transforms_train.json: no usable frame"]


# -- B (#3): --near / --far that leave no training ray a sample --------------------------------------------------------
@pytest.mark.parametrize("option", [["--near", "10"], ["--far", "0.5"], ["--near", "7", "--far", "9"]])
def test_impossible_near_far_is_one_line_exit_2_before_writing(tmp_path, capsys, option):
    data = blender_scene(tmp_path / "d", {"train": 2})
    assert _fit(data, tmp_path / "run", *option) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "leaves no training ray a sample" in err and option[0] in err
    assert not (tmp_path / "run").exists()


def _reaches_by_rays(origins, box, near, far, n_dirs=4000, seed=0) -> bool:
    """Brute force: does some ray from some origin, in one of ``n_dirs`` random directions, have a point of the box
    at a distance in [near, far]? (Slab method.)"""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n_dirs, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        for o in origins:
            t0, t1 = (box[0] - o) / d, (box[1] - o) / d
            lo = np.nanmax(np.minimum(t0, t1), axis=1).clip(min=0)
            hi = np.nanmin(np.maximum(t0, t1), axis=1)
            if ((hi >= lo) & (np.maximum(lo, near) <= np.minimum(hi, far))).any():
                return True
    return False


def test_reach_check_never_refuses_a_value_some_ray_can_use():
    """Cameras inside and outside the box; whenever brute-force rays find a sample, the check must accept."""
    rng = np.random.default_rng(1)
    box = np.array([[-1.0, -0.5, -1.5], [1.0, 1.5, 0.5]])
    refused = accepted = 0
    for _ in range(60):
        origins = rng.uniform(-4, 4, size=(int(rng.integers(1, 3)), 3))
        near, far = sorted(rng.uniform(0, 9, size=2))
        c2w = torch.eye(4, dtype=torch.float64).repeat(len(origins), 1, 1)
        c2w[:, :3, 3] = torch.from_numpy(origins)
        train = types.SimpleNamespace(aabb=torch.from_numpy(box.reshape(-1)).float(), near_far=None,
                                      cameras=types.SimpleNamespace(c2w=c2w))
        try:
            nerf_data.check_reach(train, float(near), float(far))
            accepted += 1
        except UserError:
            refused += 1
            assert not _reaches_by_rays(origins, box, near, far), (origins, near, far)
    assert refused > 5 and accepted > 5  # both outcomes exercised


def test_reach_check_uses_the_outer_cascade():
    """A far that ends before the scene box but inside the 2x cascade box still has samples with 2 levels."""
    c2w = torch.eye(4, dtype=torch.float64)[None].clone()
    c2w[0, :3, 3] = torch.tensor([0.0, 0.0, 3.0])
    train = types.SimpleNamespace(aabb=torch.tensor([-1.0, -1, -1, 1, 1, 1]), near_far=None,
                                  cameras=types.SimpleNamespace(c2w=c2w))
    with pytest.raises(UserError, match="--far 1.5 leaves no training ray"):
        nerf_data.check_reach(train, None, 1.5, levels=1)  # the box begins 2 away
    nerf_data.check_reach(train, None, 1.5, levels=2)  # the 2x box begins 1 away


# -- C (#5): no training frame ----------------------------------------------------------------------------------------
def test_synth_refuses_zero_training_views(tmp_path, capsys):
    assert cli.main(["data", "synth", "demo", str(tmp_path / "s"), "--views", "0", "--res", "8"]) == 2
    assert "--views" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_check_fails_a_dataset_without_training_frames(tmp_path, capsys):
    from data_tools.check import check_dataset

    blender = blender_scene(tmp_path / "b", {"val": 1, "test": 1})
    errors, _ = check_dataset(blender, log=lambda *a: None)
    assert any("no transforms_train.json" in e for e in errors)
    assert cli.main(["data", "check", str(blender)]) == 1
    assert "FAILED" in capsys.readouterr().out
    single = tmp_path / "single"  # one frame in a transforms.json: the every-8th hold-out keeps it for val/test
    single.mkdir()
    frame = json.loads((blender / "transforms_val.json").read_text())["frames"][0]
    write_image(single / "a.png", np.zeros((8, 8, 3), np.float32))
    (single / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": [
        {**frame, "file_path": "a.png"}]}))
    errors, _ = check_dataset(single, log=lambda *a: None)
    assert any("no training frame" in e for e in errors)


# -- E (#10) and F (#4): the end of a fit --------------------------------------------------------------------------
def test_finish_renders_test_view_0_once(fitted):
    assert fitted.rc == 0
    test_calls = [i for names, i in fitted.calls if names[0].startswith("test_")]
    assert test_calls.count(0) == 1, fitted.calls  # scored, and the same render reused for test_view.png
    assert [i for names, i in fitted.calls if names[0].startswith("train_")] == [0]  # psnr_train
    assert (fitted.run / "test_view.png").is_file()


def test_metrics_name_the_split_they_were_computed_on(fitted, tmp_path, capsys):
    assert json.loads((fitted.run / "metrics.json").read_text())["psnr_split"] == "test"
    data = blender_scene(tmp_path / "d", {"train": 2, "val": 1})  # no test split: scored on val
    assert _fit(data, tmp_path / "run") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["psnr_split"] == "val" and math.isfinite(metrics["psnr"])
    out = capsys.readouterr().out
    assert "val psnr" in out and "test psnr" not in out and "no test split" in out


# -- D (#7): options that do not apply are refused ----------------------------------------------------------------
@pytest.mark.parametrize("argv, option", [
    (["render", "{run}", "--fps", "5", "--orbit", "2"], "--fps"),
    (["render", "{run}", "--fps", "24", "--orbit", "2"], "--fps"),  # typed at its default: still not applicable
    (["export", "mesh", "{run}", "--pointcloud", "--res", "48"], "--res"),
    (["export", "mesh", "{run}", "--pointcloud", "--min-component", "0.1"], "--min-component"),
])
def test_inapplicable_output_options_are_refused(fitted, tmp_path, capsys, argv, option):
    out = tmp_path / "o"
    argv = [a.replace("{run}", str(fitted.run)) for a in argv] + ["--out", str(out / "pc.ply" if "export" in argv
                                                                            else out)]
    out.mkdir()
    before = sorted(p.name for p in fitted.run.rglob("*"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err
    assert list(out.iterdir()) == [] and sorted(p.name for p in fitted.run.rglob("*")) == before


# -- G (#9): rwf view exits 130 when interrupted; a typed busy port is an error --------------------------------------
def test_serve_forever_lets_the_interrupt_through():
    pytest.importorskip("viser")
    import _thread

    from viewer.app import ViewerApp
    from test_viewer_app import tiny_image_source  # noqa: PLC0415  (tests/ is on sys.path under pytest)

    app = ViewerApp(tiny_image_source(), port=0)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        app.serve_forever()
    assert app._stop.is_set()  # stopped before the interrupt went on


def test_typed_busy_port_is_an_error_and_port_0_any_free():
    from viewer.app import listen_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"--port {port}: busy"):
            listen_port("127.0.0.1", port, move=False)
        assert listen_port("127.0.0.1", port) > port  # the default port (not typed) still moves up
    assert listen_port("127.0.0.1", 0, move=False) == 0


def _view(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "viewer", "view", str(run), "--device", "cpu", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_view_exits_130_on_sigterm_and_ctrl_c(fitted, sig):
    pytest.importorskip("viser")
    proc = _view(fitted.run, "--port", "0")
    try:
        for line in proc.stdout:
            if "Ctrl+C to stop" in line:
                break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err


def test_view_on_a_typed_busy_port_is_one_line_exit_2(fitted):
    pytest.importorskip("viser")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _view(fitted.run, "--port", str(port))
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"rwf view served instead of refusing busy port {port}")
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1 and f"--port {port}" in err, err
