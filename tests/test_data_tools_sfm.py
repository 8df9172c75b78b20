"""photos: structure from motion on a synthetic capture recovers the true poses up to a similarity."""

import json
import shutil

import numpy as np
import pytest

from data_tools.cli import main
from data_tools.sfm import extract_frames, photos_to_dataset
from data_tools.synth import demo_mesh, render_dataset
from rwf_render.datasets import load_transforms
from rwf_render.errors import UserError


def _umeyama(src: np.ndarray, dst: np.ndarray):
    """Similarity (s, R, t) minimizing |s R src + t - dst|^2 (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd(b.T @ a / len(src))
    E = np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))])
    R = U @ E @ Vt
    s = np.trace(np.diag(D) @ E) / (a * a).sum(1).mean()
    return s, R, mu_d - s * R @ mu_s


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """16 views orbiting the demo still life at 30 degrees elevation, 320 px, white background."""
    pytest.importorskip("pycolmap", reason="pycolmap (optional) is not installed: pip install pycolmap")
    root = tmp_path_factory.mktemp("capture")
    render_dataset(demo_mesh(), root / "truth", res=320, n_views=0, n_val=0, n_test=16, radius=2.6,
                   background="white", log=lambda *a: None)
    return root / "truth"


def test_photos_registers_every_view_with_true_poses(capture, tmp_path):
    report = photos_to_dataset(tmp_path / "out", images_dir=capture / "test", log=lambda *a: None, bounds=True,
                               depth=True)
    assert report["registered"] == report["total"] == 16
    assert report["sfm_reproj_error"] < 1.0 and report["reproj_error"] == pytest.approx(report["sfm_reproj_error"],
                                                                                           abs=0.05)
    est = load_transforms(tmp_path / "out", "all")
    truth = load_transforms(capture, "test")
    gt = {p.name: k for k, p in enumerate(truth.image_paths)}
    order = [gt[p.name] for p in est.image_paths]
    c_est = est.cameras.c2w[:, :, 3].numpy()
    c_gt = truth.cameras.c2w[order, :, 3].numpy()
    s, R, t = _umeyama(c_est, c_gt)
    pos_err = np.linalg.norm(s * c_est @ R.T + t - c_gt, axis=1)
    # SfM estimates focal and radial distortion too (no EXIF), so it is not exact: about 0.5 % of the camera
    # distance here on average; a wrong convention or a misregistered view is off by tens of percent
    assert pos_err.mean() < 0.01 * 2.6 and pos_err.max() < 0.02 * 2.6
    R_est, R_gt = est.cameras.c2w[:, :, :3].numpy(), truth.cameras.c2w[order, :, :3].numpy()
    cos = (np.trace(np.swapaxes(R_gt, 1, 2) @ (R @ R_est), axis1=1, axis2=2) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 1.5  # OpenGL axes of every camera
    # the focal length SfM found (no EXIF) matches the renderer's
    assert est.cameras.fx[0].item() == pytest.approx(truth.cameras.fx[0].item(), rel=0.02)
    assert (tmp_path / "out" / "colmap" / "sparse" / "0" / "images.bin").is_file()
    # the source is the photos, the model the one kept in OUT (the folder SfM wrote it in is gone)
    source = json.loads((tmp_path / "out" / "transforms.json").read_text())["source"]
    assert source == f"photos:{(capture / 'test').resolve()} (colmap/sparse/0)"
    assert main(["data", "check", str(tmp_path / "out")]) == 0
    _depths_lie_on_the_mesh(tmp_path / "out", capture / "mesh.ply", (s, R, t))


def _depths_lie_on_the_mesh(data, mesh_path, similarity):
    """The SfM depth maps, read by the NeRF loader and moved into the renderer's frame, lie on the true surface,
    and each frame's near/far hold the distances its depth samples have."""
    import open3d as o3d  # noqa: PLC0415

    from rwf_render.nerf_data import load_split  # noqa: PLC0415

    split = load_split(data, "all", depth=True)
    d = split.depth
    assert split.near_far is not None and len(d) > 50 * len(split)  # about 90 per image
    rays_o, rays_d = split.rays(d.image, d.uv, "cpu")
    near_far = split.near_far[d.image]
    inside = ((d.t >= near_far[:, 0]) & (d.t <= near_far[:, 1])).float().mean()
    assert inside > 0.99
    s, R, t = similarity
    points = s * (rays_o + d.t[:, None] * rays_d).double().numpy() @ R.T + t
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(o3d.io.read_triangle_mesh(str(mesh_path))))
    dist = scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()
    # the mesh fits the unit sphere; SfM points sit on it up to the error of the estimated cameras (measured:
    # median 0.009, 90th percentile 0.015); reading z-depth as ray distance gave 0.052 and 0.084
    assert np.median(dist) < 0.02 and np.percentile(dist, 90) < 0.04


def test_too_few_registered_fails_clearly(tmp_path, capsys):
    pytest.importorskip("pycolmap", reason="pycolmap (optional) is not installed")
    from data_tools.common import save_image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    (tmp_path / "noise").mkdir()
    for i in range(4):  # unrelated noise images: nothing to match
        save_image(tmp_path / "noise" / f"{i}.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert main(["data", "photos", str(tmp_path / "noise"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "of 4 images registered" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_pycolmap_and_bad_arguments(tmp_path, monkeypatch, capsys):
    (tmp_path / "imgs").mkdir()
    shutil.copy(__file__, tmp_path / "imgs" / "not_an_image.txt")
    assert main(["data", "photos", str(tmp_path / "imgs"), str(tmp_path / "o")]) == 2
    says = capsys.readouterr().err
    assert "no images (.png, .jpg, .jpeg, .tif, .tiff)" in says, says  # not the .bmp and .webp that are refused
    assert main(["data", "photos", "--video", "v.mp4", "a", "b"]) == 2
    assert "give only OUT" in capsys.readouterr().err
    from data_tools.common import save_image  # noqa: PLC0415

    save_image(tmp_path / "imgs" / "a.png", np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setitem(__import__("sys").modules, "pycolmap", None)  # import pycolmap -> ImportError
    with pytest.raises(UserError, match="needs pycolmap.*pip install pycolmap"):
        photos_to_dataset(tmp_path / "o", images_dir=tmp_path / "imgs")
    assert not (tmp_path / "o").exists()


def test_video_frames_at_requested_fps(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is needed to write the test video")
    frames = [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(10)]
    iio.imwrite(tmp_path / "v.mp4", np.stack(frames), fps=10, plugin="FFMPEG", macro_block_size=16)
    paths = extract_frames(tmp_path / "v.mp4", tmp_path / "frames", fps=5)
    assert len(paths) == 5
    got = [iio.imread(p).mean() for p in paths]
    assert np.allclose(got, [20 * i for i in range(0, 10, 2)], atol=6)  # frames 0, 2, 4, ...: 1 of every 2
    with pytest.raises(UserError, match="not found"):
        extract_frames(tmp_path / "nope.mp4", tmp_path / "f2", fps=1)
