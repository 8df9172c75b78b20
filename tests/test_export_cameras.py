"""``rwf export cameras RUN``: the run's cameras as a transforms.json that loads back as the same cameras.

The reference is always the project's loader on the original dataset (its own reading of camera_angle_x, per-frame
intrinsics and distortion), and for refined runs the run's own corrected training cameras (``load_scene_model``),
against which the exported file, read back by the loader, must agree to 1e-5."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.cameras import pixel_grid, pixel_rays
from rwf_render.datasets import load_transforms

from conftest import one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)

TINY_FIT = ["--steps", "2", "--eval-images", "1", "--quiet", "--grid-resolution", "16", "--steps-per-diagonal", "64",
            "--target-samples", "1024", "--width", "16", "--eval-every", "2", "--device", "cpu"]


def _rwf(*argv) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli.main([str(a) for a in argv])


def _fit(data, run, *extra) -> Path:
    assert _rwf("fit", "nerf", data, "--out", run, *TINY_FIT, *extra) == 0
    return run


def _load(path, split):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_transforms(path, split)


def _rays(cams):
    """Rays through a 5 x 5 lattice of every camera's pixels, (N * 25, 3) each."""
    frac = pixel_grid(5, 5, torch.float64).reshape(-1, 2) / 5
    pix = frac[None] * torch.stack([cams.width, cams.height], -1)[:, None].double()
    return pixel_rays(cams, pix.reshape(-1, 2), torch.arange(len(cams)).repeat_interleave(25))


def assert_same_cameras(a, b, atol=1e-5, poses=True):
    """Two loaded splits (Transforms) hold the same cameras: intrinsics, sizes, lens, poses and rays."""
    ca, cb = a.cameras.to(dtype=torch.float64), b.cameras.to(dtype=torch.float64)
    assert len(ca) == len(cb)
    for name in ("fx", "fy", "cx", "cy", "dist"):
        np.testing.assert_allclose(getattr(ca, name).numpy(), getattr(cb, name).numpy(), atol=atol, err_msg=name)
    assert ca.width.tolist() == cb.width.tolist() and ca.height.tolist() == cb.height.tolist()
    assert ca.model_names() == cb.model_names()
    if poses:
        np.testing.assert_allclose(ca.c2w.numpy(), cb.c2w.numpy(), atol=atol)
        for ra, rb in zip(_rays(ca), _rays(cb)):
            np.testing.assert_allclose(ra.numpy(), rb.numpy(), atol=atol)
    assert [p.resolve() for p in a.image_paths] == [p.resolve() for p in b.image_paths]


@pytest.fixture(scope="module")
def blender_run(tiny_scene, tmp_path_factory):
    """A 2-step fit of the Blender-format tiny scene (camera_angle_x, three split files) at --downscale 2."""
    return _fit(tiny_scene, tmp_path_factory.mktemp("blender") / "run", "--downscale", "2")


def _ngp_dataset(tiny_scene: Path, out: Path) -> Path:
    """The tiny scene's photos as one instant-ngp transforms.json (no split lists: every 8th frame held out), with an
    OPENCV lens, a non-default scene box placement, and frames that override the focal length, principal point and
    distortion. Its images lie in the tiny scene's folder, named by paths relative to ``out``."""
    out.mkdir(parents=True)
    frames = []
    for split in ("train", "val", "test"):
        for f in json.loads((tiny_scene / f"transforms_{split}.json").read_text())["frames"]:
            image = (tiny_scene / f["file_path"]).with_suffix(".png")
            frames.append({"file_path": str(Path("..") / tiny_scene.name / image.relative_to(tiny_scene)),
                           "transform_matrix": f["transform_matrix"]})
    for i, f in enumerate(frames):
        if i % 3 == 1:
            f["fl_x"], f["fl_y"] = 40.0 + i, 41.0 + i
        if i % 4 == 2:
            f["cx"], f["k1"] = 15.0, -0.01
    top = {"camera_model": "OPENCV", "fl_x": 44.0, "fl_y": 45.0, "cx": 16.5, "cy": 15.5, "w": 32, "h": 32,
           "k1": 0.02, "k2": -0.003, "p1": 0.001, "p2": -0.0005, "aabb_scale": 2, "scale": 0.3,
           "offset": [0.5, 0.45, 0.5], "frames": frames}
    (out / "transforms.json").write_text(json.dumps(top))
    shutil.copytree(tiny_scene, out.parent / tiny_scene.name, dirs_exist_ok=True)
    return out


@pytest.fixture(scope="module")
def ngp_run(tiny_scene, tmp_path_factory):
    root = tmp_path_factory.mktemp("ngp")
    data = _ngp_dataset(tiny_scene, root / "ngp")
    return data, _fit(data, root / "run")


def test_blender_run_exports_the_datasets_cameras_at_full_resolution(blender_run, tiny_scene):
    assert _rwf("export", "cameras", blender_run) == 0
    out = blender_run / "cameras.json"
    top = json.loads(out.read_text())
    for split in ("train", "val", "test"):  # the file splits as the dataset did, and loads as the same cameras
        assert_same_cameras(_load(out, split), _load(tiny_scene, split))
        names = top[f"{split}_filenames"]
        assert len(names) == len(json.loads((tiny_scene / f"transforms_{split}.json").read_text())["frames"])
    assert len(top["frames"]) == len(set(top["train_filenames"] + top["val_filenames"] + top["test_filenames"]))
    # intrinsics of the 32 px photos the paths name, not of the 16 px images the fit held (--downscale 2)
    assert top["w"] == top["h"] == 32 and "fl_x" in top and "fl_x" not in top["frames"][0]
    camera_angle_x = json.loads((tiny_scene / "transforms_train.json").read_text())["camera_angle_x"]
    assert top["fl_x"] == pytest.approx(16 / np.tan(camera_angle_x / 2), rel=1e-12)
    # poses in the dataset's own coordinates: the numbers of its files; paths relative to the exported file
    src = json.loads((tiny_scene / "transforms_train.json").read_text())["frames"]
    by_path = {f["file_path"]: f for f in top["frames"]}
    for f, name in zip(src, top["train_filenames"]):
        assert not Path(name).is_absolute() and (out.parent / name).is_file()
        assert (out.parent / name).resolve() == (tiny_scene / f["file_path"]).with_suffix(".png").resolve()
        np.testing.assert_allclose(by_path[name]["transform_matrix"], f["transform_matrix"], atol=1e-12)
        assert "camera_correction" not in by_path[name]
    assert torch.equal(_load(out, "train").aabb, _load(tiny_scene, "train").aabb)


def test_one_split_and_a_file_elsewhere(blender_run, tiny_scene, tmp_path):
    """--split test writes that split alone, to RUN/cameras_test.json by default; --out elsewhere keeps paths that
    resolve from the file's own folder."""
    assert _rwf("export", "cameras", blender_run, "--split", "test") == 0
    top = json.loads((blender_run / "cameras_test.json").read_text())
    assert set(k for k in top if k.endswith("_filenames")) == {"test_filenames"}
    assert_same_cameras(_load(blender_run / "cameras_test.json", "test"), _load(tiny_scene, "test"))
    out = tmp_path / "deeper" / "x.json"
    out.parent.mkdir()
    assert _rwf("export", "cameras", blender_run, "--split", "train", "--out", out) == 0
    assert_same_cameras(_load(out, "train"), _load(tiny_scene, "train"))


def test_ngp_run_with_distortion_and_per_frame_intrinsics_round_trips(ngp_run):
    data, run = ngp_run
    out = run / "cameras.json"
    assert _rwf("export", "cameras", run) == 0
    top = json.loads(out.read_text())
    for split in ("train", "val", "test"):
        assert_same_cameras(_load(out, split), _load(data, split))
    # its val split is its test frames (no val_filenames: nerfstudio's fallback), so the file lists no val split of
    # its own and falls back alike (it listed the test frames as val_filenames, counting them twice)
    assert _load(data, "val").image_paths == _load(data, "test").image_paths
    assert "val_filenames" not in top and "test_filenames" in top
    # what every camera shares sits at the top level, what differs in the frames
    assert top["camera_model"] == "OPENCV" and top["cy"] == 15.5 and top["k2"] == -0.003
    assert "fl_x" not in top and "cx" not in top and "k1" not in top
    assert {f["fl_x"] for f in top["frames"]} >= {44.0, 41.0} and {f["k1"] for f in top["frames"]} == {0.02, -0.01}
    assert top["aabb_scale"] == 2 and top["scale"] == 0.3 and top["offset"] == [0.5, 0.45, 0.5]
    assert torch.equal(_load(out, "train").aabb, _load(data, "train").aabb)
    # a dataset that `rwf fit nerf` trains on, split as the original (every 8th frame held out there, listed here)
    assert _rwf("fit", "nerf", out, "--out", run.parent / "refit", *TINY_FIT) == 0
    cfg = json.loads((run.parent / "refit" / "config.json").read_text())
    assert cfg["aabb"] == json.loads((run / "config.json").read_text())["aabb"]


@pytest.fixture(scope="module")
def refined_run(tiny_scene, tmp_path_factory):
    """A 2-step --optimize-cameras fit at --downscale 2 whose checkpoint then holds known corrections of about 3
    degrees and 0.1 units (a 2-step fit moves the cameras too little for a test to tell them from no correction)."""
    run = _fit(tiny_scene, tmp_path_factory.mktemp("refined") / "run", "--optimize-cameras", "--downscale", "2")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    n = state["model"]["pose_correction.delta"].shape[0]
    g = torch.Generator().manual_seed(3)
    delta = torch.cat([torch.randn(n, 3, generator=g) * 0.05, torch.randn(n, 3, generator=g) * 0.1], 1)
    state["model"]["pose_correction.delta"] = delta
    torch.save(state, run / "checkpoint.pt")
    return run


def test_refined_run_exports_the_runs_corrected_training_poses(refined_run, tiny_scene):
    from rwf_render.nerf import load_scene_model

    assert _rwf("export", "cameras", refined_run) == 0
    out = refined_run / "cameras.json"
    model = load_scene_model(refined_run)
    exported, dataset = _load(out, "train"), _load(tiny_scene, "train")
    # the poses the run sees: its own corrected training cameras, read back through the loader
    np.testing.assert_allclose(exported.cameras.c2w.numpy(), model.train_cameras.c2w.double().numpy(), atol=1e-5)
    moved = (exported.cameras.c2w - dataset.cameras.c2w).abs().amax(dim=(1, 2))
    assert bool((moved > 1e-2).all())  # and not the dataset's
    # at full resolution: the run holds the 16 px cameras, the file those of the 32 px photos
    assert_same_cameras(exported, dataset, poses=False)
    np.testing.assert_allclose(exported.cameras.fx.numpy(), 2 * model.train_cameras.fx.double().numpy(), rtol=1e-6)
    # the corrections written beside each pose; the held-out views keep the dataset's poses
    top = json.loads(out.read_text())
    by_path = {f["file_path"]: f for f in top["frames"]}
    delta = model.pose_correction.delta.detach().double()
    for i, name in enumerate(top["train_filenames"]):
        corr = by_path[name]["camera_correction"]
        np.testing.assert_allclose(corr["omega"] + corr["tau"], delta[i].numpy(), atol=1e-7)
        np.testing.assert_allclose(np.asarray(corr["dataset_transform_matrix"])[:3], dataset.cameras.c2w[i].numpy(),
                                   atol=1e-12)
    for split in ("val", "test"):
        assert_same_cameras(_load(out, split), _load(tiny_scene, split))
        assert all("camera_correction" not in by_path[name] for name in top[f"{split}_filenames"])
    assert top["rwf_export"]["refined_train_poses"] is True


def test_an_existing_file_is_replaced_only_with_force(blender_run, tmp_path, capsys):
    out = tmp_path / "cams.json"
    out.write_text("mine")
    line = one_cli_error(capsys, ["export", "cameras", blender_run, "--out", out])
    assert str(out) in line and "--force" in line and out.read_text() == "mine"
    assert _rwf("export", "cameras", blender_run, "--out", out, "--force") == 0
    assert len(json.loads(out.read_text())["frames"]) > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written atomically, nothing left over


def test_the_datasets_own_file_is_never_replaced(ngp_run, capsys):
    data, run = ngp_run
    before = (data / "transforms.json").read_bytes()
    line = one_cli_error(capsys, ["export", "cameras", run, "--out", data / "transforms.json", "--force"])
    assert "dataset" in line and (data / "transforms.json").read_bytes() == before


@pytest.mark.parametrize("kind", ["image", "sdf"])
def test_image_and_sdf_runs_are_refused(tmp_path, capsys, kind):
    run = tmp_path / kind
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": kind}))
    line = one_cli_error(capsys, ["export", "cameras", run])
    assert "nerf runs" in line and kind in line and not (run / "cameras.json").exists()


def test_bad_input_is_one_message(blender_run, tmp_path, capsys):
    assert "not a run directory" in one_cli_error(capsys, ["export", "cameras", tmp_path])
    assert "no such run directory" in one_cli_error(capsys, ["export", "cameras", tmp_path / "none"])
    assert "is a folder" in one_cli_error(capsys, ["export", "cameras", blender_run, "--out", tmp_path])
    line = one_cli_error(capsys, ["export", "cameras", blender_run, "--out", f"{tmp_path / 'new'}/"])
    assert "names a folder" in line and not (tmp_path / "new").exists()
    assert "does not exist" in one_cli_error(capsys, ["export", "cameras", blender_run, "--out", tmp_path / "a" / "b"])
    one_cli_error(capsys, ["export", "cameras", blender_run, "--split", "nope"])


def test_a_dataset_changed_since_a_refined_fit_is_said(refined_run, tmp_path):
    """The corrections belong to the poses the fit trained on: a dataset whose files changed since (here: the
    fingerprint the run saved no longer matches) still exports, with a warning; an unchanged one has none."""
    from rwf_render.errors import RwfWarning

    run = tmp_path / "run"
    shutil.copytree(refined_run, run)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        assert cli.main(["export", "cameras", str(run), "--force"]) == 0  # (an earlier test may have exported)
    saved = json.loads((run / "config.json").read_text())

    def export_with(**changes):
        cfg = json.loads(json.dumps(saved))
        cfg["dataset"] = {k: v for k, v in {**cfg["dataset"], **changes}.items() if v is not None}
        (run / "config.json").write_text(json.dumps(cfg))
        return cli.main(["export", "cameras", str(run), "--force"])

    splits = saved["dataset"]["splits"]
    assert sorted(splits) == ["test", "train", "val"]
    # only the test split changed: the training poses are the fitted ones, nothing to say (it warned)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RwfWarning)
        assert export_with(sha256="0" * 64, splits={**splits, "test": "0" * 16}) == 0
    with pytest.warns(RwfWarning, match="the training split changed since the fit"):
        assert export_with(sha256="0" * 64, splits={**splits, "train": "0" * 16}) == 0
    with pytest.warns(RwfWarning, match="changed since the fit"):  # a run fitted before splits were saved
        assert export_with(sha256="0" * 64, splits=None) == 0


def test_a_nerfstudio_datasets_camera_box_is_kept_in_a_one_split_export(tmp_path):
    """A nerfstudio transforms.json without box keys gets its box from all of its cameras; an export of the
    training split alone holds fewer cameras, so it writes that box as ``aabb`` and loads back with the same box."""
    from test_datasets_nerfstudio_box import _nerfstudio  # noqa: PLC0415

    data = _nerfstudio(tmp_path / "ns", n=12)  # frames 0 and 8 held out: the training cameras' mean is elsewhere
    run = _fit(data, tmp_path / "run")
    out = tmp_path / "train.json"
    assert _rwf("export", "cameras", run, "--split", "train", "--out", out) == 0
    original, exported = _load(data, "train"), _load(out, "train")
    assert_same_cameras(original, exported)
    np.testing.assert_allclose(exported.aabb.numpy(), original.aabb.numpy(), atol=1e-9)
