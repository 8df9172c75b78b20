"""NeRF pipeline: data and rays, presets, resume, mesh export, bad input."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.cameras import opencv_to_opengl, project
from rwf_render.imgio import read_image, write_image
from rwf_render.nerf_data import load_split

FAST = ["--steps", "2", "--eval-images", "1", "--quiet", "--downscale", "1"]


def _ngp_dataset(root, distorted=True):
    """An instant-ngp transforms.json with per-frame intrinsics and OPENCV / OPENCV_FISHEYE distortion."""
    root.mkdir(parents=True, exist_ok=True)
    frames = []
    rng = np.random.default_rng(0)
    for i in range(4):
        w, h = 40 + 8 * (i % 2), 30
        write_image(root / f"img{i}.png", rng.random((h, w, 3)).astype(np.float32))
        angle = 2 * math.pi * i / 4
        eye = np.array([3 * math.cos(angle), 3 * math.sin(angle), 1.0])
        fwd = -eye / np.linalg.norm(eye)
        right = np.cross(fwd, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, up, -fwd], 1)
        c2w[:3, 3] = eye
        frame = {"file_path": f"img{i}.png", "transform_matrix": c2w.tolist(), "fl_x": 35.0 + i, "fl_y": 36.0 + i,
                 "cx": w / 2 + 0.3, "cy": h / 2 - 0.2, "w": w, "h": h}
        if distorted:
            if i % 2:
                frame.update(camera_model="OPENCV_FISHEYE", k1=0.05, k2=-0.01, k3=0.002, k4=0.0)
            else:
                frame.update(camera_model="OPENCV", k1=-0.08, k2=0.02, p1=0.001, p2=-0.002)
        frames.append(frame)
    meta = {"camera_model": "OPENCV", "aabb_scale": 1, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_rays_hit_the_pixels_projection_predicts(tmp_path):
    """Rays through pixel (u, v) of each frame pass through 3D points whose projection is (u, v)."""
    data = load_split(_ngp_dataset(tmp_path / "ngp"), "all")
    assert len(data) == 4 and data.n_pixels == sum(w * h for w, h in (data.size(i) for i in range(4)))
    gen = torch.Generator().manual_seed(0)
    flat = torch.randint(data.n_pixels, (500,), generator=gen)
    img, uv = data.locate(flat)
    o, d = data.rays(img, uv, torch.device("cpu"))
    points = o + d * (2 + 2 * torch.rand(500, 1, generator=gen))
    for i in range(len(data)):
        sel = img == i
        pix, depth = project(points[sel].double(), data.cameras[i].to(dtype=torch.float64))
        assert torch.allclose(pix[0].float(), uv[sel], atol=2e-3), i
        assert bool((depth > 0).all())
    # the pixel a flat index names really is that pixel of that image
    i0 = int(img[0])
    w = data.size(i0)[0]
    local = int(flat[0] - data.offsets[i0])
    assert uv[0].tolist() == [local % w + 0.5, local // w + 0.5]


def test_opencv_and_opengl_conventions_give_the_same_rays(tmp_path):
    """A pose written in the OpenCV convention and converted gives the rays of the OpenGL original."""
    root = _ngp_dataset(tmp_path / "gl", distorted=False)
    meta = json.loads((root / "transforms.json").read_text())
    data_gl = load_split(root, "all")
    cv = tmp_path / "cv"
    cv.mkdir()
    for f in meta["frames"]:
        (cv / f["file_path"]).write_bytes((root / f["file_path"]).read_bytes())
        c2w_cv = opencv_to_opengl(torch.tensor(f["transform_matrix"], dtype=torch.float64))  # flip is an involution
        f["transform_matrix"] = opencv_to_opengl(c2w_cv).tolist()
    (cv / "transforms.json").write_text(json.dumps(meta))
    data_cv = load_split(cv, "all")
    uv = torch.tensor([[0.5, 0.5], [10.25, 20.75], [39.5, 29.5]])
    for i in range(4):
        img = torch.full((3,), i)
        o1, d1 = data_gl.rays(img, uv, torch.device("cpu"))
        o2, d2 = data_cv.rays(img, uv, torch.device("cpu"))
        assert torch.allclose(o1, o2, atol=1e-5) and torch.allclose(d1, d2, atol=1e-5)
    # and a brute-force pinhole projection in the OpenCV convention agrees with the rays
    c2w = torch.tensor(meta["frames"][0]["transform_matrix"], dtype=torch.float64)
    c2w_cv = opencv_to_opengl(c2w)
    o, d = data_gl.rays(torch.zeros(3, dtype=torch.long), uv, torch.device("cpu"))
    p = (o + 3 * d).double()
    cam = (p - c2w_cv[:3, 3]) @ c2w_cv[:3, :3]  # world -> OpenCV camera (x right, y down, z forward)
    f = meta["frames"][0]
    u = f["fl_x"] * cam[:, 0] / cam[:, 2] + f["cx"]
    v = f["fl_y"] * cam[:, 1] / cam[:, 2] + f["cy"]
    assert torch.allclose(torch.stack([u, v], 1).float(), uv, atol=1e-3)


def test_loader_reads_lego_tiny_and_composites_alpha(data_dir):
    data = load_split(data_dir / "nerf" / "lego_tiny", "train")
    assert len(data) == 1 and data.size(0) == (50, 50)
    assert data.has_alpha and data.pixels.dtype == torch.uint8
    rgba = data.image(0)
    assert rgba.shape == (50, 50, 4) and float(rgba[..., 3].min()) == 0.0
    half = load_split(data_dir / "nerf" / "lego_tiny", "train", downscale=2)
    assert half.size(0) == (25, 25)
    assert float(half.cameras.fx[0]) == pytest.approx(float(data.cameras.fx[0]) / 2)


@pytest.mark.parametrize("defect", ["malformed", "missing_key", "singular", "size_mismatch", "empty_split"])
def test_bad_datasets_are_one_line_exit_2(tmp_path, defect):
    root = _ngp_dataset(tmp_path / "d", distorted=False)
    meta = json.loads((root / "transforms.json").read_text())
    if defect == "malformed":
        (root / "transforms.json").write_text('{"frames": [')
    else:
        if defect == "missing_key":
            del meta["frames"][1]["transform_matrix"]
        elif defect == "singular":
            meta["frames"][2]["transform_matrix"] = np.zeros((4, 4)).tolist()
        elif defect == "size_mismatch":
            meta["frames"][0]["w"] = 41  # img0.png is 40 px wide
        elif defect == "empty_split":
            for f in meta["frames"]:
                f["file_path"] = "gone/" + f["file_path"]
        (root / "transforms.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rwf_render", "fit", "nerf", str(root), "--out", str(run), *FAST],
                       capture_output=True, text=True, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("  warnings.warn")]
    assert r.returncode == 2, r.stderr
    assert lines[-1].startswith("rwf: error:") and "Traceback" not in r.stderr, r.stderr
    assert not run.exists()


def test_presets_fit_two_steps(data_dir, tmp_path, monkeypatch):
    """Every preset in scenes/ runs a 2-step CPU fit end to end (data prepared, contract files written)."""
    from scenes import presets

    monkeypatch.setenv("RWF_DATA", str(data_dir))
    monkeypatch.setenv("RWF_SCENE_CACHE", str(tmp_path / "scenes"))
    for name, preset in presets().items():
        run = tmp_path / name
        # shrink the images for speed; everything else is the preset's (a dense sampler has no grid to shrink)
        dense = preset.settings.get("sampler", (None,))[0] == "dense"
        grid = [] if dense else ["--grid-resolution", "32"]
        assert cli.main(["fit", "nerf", name, "--out", str(run), "--steps", "2", "--eval-images", "1", "--quiet",
                         "--downscale", "8", *grid, "--steps-per-diagonal", "64"]) == 0, name
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["steps"] == 2 and np.isfinite(metrics["psnr"]), name
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["kind"] == "nerf" and cfg["scene"] == name


def test_presets_found_from_an_uninstalled_checkout(monkeypatch):
    """Without entry points (a checkout on PYTHONPATH, not installed), the scenes package beside rwf_render gives
    the presets, but only when that checkout is on sys.path."""
    from importlib import metadata

    from rwf_render import nerf_options

    root = str(Path(nerf_options.__file__).resolve().parents[1])
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [])
    monkeypatch.setattr(sys, "path", [root] + [p for p in sys.path if p and Path(p).resolve() != Path(root)])
    assert {"default", "lego", "lego-gpu", "lego-tancik", "bartoszek"} <= set(nerf_options.scene_presets())
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != Path(root)])
    assert nerf_options.scene_presets() == {}


def test_killed_fit_resumes_to_the_parameters_of_an_uninterrupted_one(tiny_scene, tmp_path):
    """SIGKILL a deterministic fit after its first checkpoint; --resume finishes it with the same parameters."""
    common = ["--steps", "60", "--eval-images", "1", "--quiet", "--deterministic", "--ckpt-every", "10",
              "--eval-every", "20", "--grid-resolution", "32", "--steps-per-diagonal", "128", "--target-samples",
              "2048", "--width", "32"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(a), *common]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "rwf_render", "fit", "nerf", str(tiny_scene), "--out", str(b),
                             *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (b / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    killed_at = torch.load(b / "checkpoint.pt", weights_only=True)["step"]
    assert cli.main(["fit", "nerf", "--out", str(b), "--resume", "--quiet"]) == 0
    sa = torch.load(a / "checkpoint.pt", weights_only=True)
    sb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert killed_at < 60 and sa["step"] == sb["step"] == 60
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    assert sa["task"] == sb["task"]
    torch.use_deterministic_algorithms(False)


def test_trained_scene_renders_and_exports_a_mesh_inside_the_box(tiny_scene, tmp_path):
    run = tmp_path / "run"
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(run), "--steps", "300", "--eval-images", "2",
                     "--quiet", "--grid-resolution", "32", "--steps-per-diagonal", "192", "--width", "64",
                     "--features", "32", "--sigma", "4", "--target-samples", "4096", "--eval-every", "100"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # learned something: well above the PSNR of an all-white prediction of the test views
    test = load_split(tiny_scene, "test")
    rgba = test.image(0)
    white = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    blank_psnr = -10 * math.log10(float(((white - 1) ** 2).mean()))
    assert metrics["psnr"] > blank_psnr + 3
    for name in ("config.json", "metrics.json", "history.csv", "checkpoint.pt", "curve.png", "test_view.png"):
        assert (run / name).is_file(), name
    assert list((run / "val").glob("step_*.png"))
    # mesh export: non-empty, inside the scene box, coloured
    assert cli.main(["export", "mesh", str(run), "--res", "48", "--threshold", "5"]) == 0
    import trimesh

    mesh = trimesh.load(run / "mesh.ply", process=False)
    box = np.array(json.loads((run / "config.json").read_text())["aabb"]).reshape(2, 3)
    assert len(mesh.faces) > 100
    assert (mesh.vertices >= box[0] - 1e-6).all() and (mesh.vertices <= box[1] + 1e-6).all()
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    # renders: test split frames and an orbit video with depth alongside
    assert cli.main(["render", str(run), "--split", "test", "--out", str(tmp_path / "frames")]) == 0
    assert read_image(tmp_path / "frames" / "rgb_0000.png")[0].shape == (32, 32, 3)
    assert read_image(tmp_path / "frames" / "depth_0000.exr")[0].shape == (32, 32, 1)
    assert cli.main(["render", str(run), "--orbit", "3", "--video", "--out", str(tmp_path / "orbit")]) == 0
    assert (tmp_path / "orbit" / "rgb.mp4").stat().st_size > 0
    # a camera path (the viewer's format) whose keyframes are the two test cameras renders those very views
    from rwf_render.camera_path import save_camera_path
    from rwf_render.datasets import load_transforms

    cams = load_transforms(tiny_scene, "test").cameras
    assert float(cams.cx[0]) == 16 and float(cams.cy[0]) == 16 and float(cams.fx[0]) == float(cams.fy[0])
    fov = [math.degrees(2 * math.atan(16 / float(f))) for f in cams.fy[:2]]
    keys = np.tile(np.eye(4), (2, 1, 1))
    keys[:, :3] = cams.c2w[:2].numpy()
    save_camera_path(tmp_path / "path.json", keys, fov, 32, 32, fps=2, seconds=1)
    assert cli.main(["render", str(run), "--camera-path", str(tmp_path / "path.json"), "--video",
                     "--out", str(tmp_path / "path")]) == 0
    assert (tmp_path / "path" / "rgb.mp4").stat().st_size > 0
    for i in range(2):
        along_path = read_image(tmp_path / "path" / f"rgb_{i:04d}.png")[0]
        np.testing.assert_allclose(along_path, read_image(tmp_path / "frames" / f"rgb_{i:04d}.png")[0], atol=2 / 255)
    assert cli.main(["eval", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["test_images"] == 2
    assert cli.main(["render", str(run)]) == 2  # none of --split, --orbit, --camera-path


def test_nerf_loader_reads_a_converted_colmap_capture(data_dir, tmp_path):
    """The training loader reads `rwf data colmap` output, and its rays through COLMAP's observed keypoints pass
    through the triangulated points (to within COLMAP's own reprojection error, in pixels)."""
    from data_tools.colmap import convert_model
    from data_tools.colmap_io import read_model

    src = data_dir / "colmap" / "bartoszek"
    convert_model(src / "sparse" / "0", src / "images", tmp_path / "out", log=lambda *a, **k: None)
    data = load_split(tmp_path / "out", "all")
    model = read_model(src / "sparse" / "0")
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    S = np.array(meta["input_to_world"])
    xyz = model.xyz @ S[:3, :3].T + S[:3, 3]  # COLMAP's points in the dataset's world frame
    index = {int(pid): k for k, pid in enumerate(model.point_ids)}
    by_name = {im.name: im for im in model.images.values()}
    assert len(data) == len(model.images) == 23
    errors = []
    for i in range(0, len(data), 5):
        im = by_name[data.names[i]]
        ok = im.point3D_ids >= 0
        uv = torch.from_numpy(im.xys[ok]).float()
        o, d = data.rays(torch.full((len(uv),), i), uv, torch.device("cpu"))
        p = torch.from_numpy(xyz[[index[int(q)] for q in im.point3D_ids[ok]]]).float()
        t = ((p - o) * d).sum(1, keepdim=True)
        miss = (p - (o + t * d)).norm(dim=1)  # distance of each point from its keypoint's ray
        errors.append((miss / t[:, 0] * data.cameras.fx[i]).numpy())  # as pixels at the point's depth
    assert float(np.median(np.concatenate(errors))) < 1.0


def test_render_under_bfloat16_autocast_matches_float32():
    """CUDA training renders under bfloat16 autocast (``amp``), evaluation in float32; CPU autocast follows the same
    rule for matmul, so the path is checked here. With the Fourier projection in bfloat16 (before it was kept in
    float32) this field's densities were off by up to 26 %, its colours by 0.004 and its depths by 0.017, each
    several times the bounds below."""
    from rwf_render.nerf_field import NeRFFieldConfig  # noqa: PLC0415
    from rwf_render.nerf_render import NeRFModel, RenderConfig  # noqa: PLC0415

    torch.manual_seed(0)
    model = NeRFModel([-1, -1, -1, 1, 1, 1], NeRFFieldConfig(), RenderConfig(grid_resolution=16, sampler="dense",
                                                                             steps_per_diagonal=256), "learned")
    rays_o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(512, 1) + torch.randn(512, 3) * 0.1
    rays_d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0]]) + torch.randn(512, 3) * 0.2, dim=1)
    x = torch.rand(1000, 3) * 2 - 1
    ref, sigma = model.render_rays(rays_o, rays_d, train=True), model.field.density(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, sigma_amp = model.render_rays(rays_o, rays_d, train=True), model.field.density(x)
    assert ((sigma_amp.float() - sigma).abs() / sigma).max() < 0.05
    assert (out["rgb"].float() - ref["rgb"]).abs().max() < 1.5e-3
    assert (out["depth"].float() - ref["depth"]).abs().max() < 5e-3


def test_a_render_reuses_the_pruning_passs_features_and_gives_what_two_passes_give():
    """Rendering prunes samples behind opaque surfaces with a density pass, then colours the kept ones: the trunk's
    features of the first pass serve the second (the trunk ran twice on nearly every kept sample: 31 % of a test-view
    render). Against pruning by the marcher and a whole field pass on the kept samples: the same floats."""
    from rwf_render.nerf_field import NeRFFieldConfig  # noqa: PLC0415
    from rwf_render.nerf_render import NeRFModel, RenderConfig  # noqa: PLC0415
    from rwf_render.raymarch import volume_render  # noqa: PLC0415

    torch.manual_seed(0)
    model = NeRFModel([-1.5] * 3 + [1.5] * 3, NeRFFieldConfig(density_scale=30.0, appearance_dim=4, n_images=3),
                      RenderConfig(grid_resolution=32), seed=1)
    model.grid.fill_(True)
    model.eval()
    o = torch.tensor([[0, 0, 4.0]]).repeat(1024, 1) + torch.randn(1024, 3) * 0.5
    d = torch.nn.functional.normalize(torch.tensor([[0, 0, -1.0]]) + torch.randn(1024, 3) * 0.2, dim=1)
    image_idx = torch.randint(0, 3, (1024,))
    cfg = model.render_cfg

    def at(t0, t1, ri):
        return o[ri] + d[ri] * ((t0 + t1) * 0.5)[:, None]

    with torch.no_grad():
        got = model.render_rays(o, d, image_idx=image_idx)
        kept = model.grid.sampling(o, d, near=model.default_near(), step_size=model.step_size,
                                   max_samples=cfg.max_samples, sigma_fn=lambda t0, t1, ri: model.field.density(
                                       at(t0, t1, ri)), alpha_thre=cfg.alpha_thre, early_stop_eps=cfg.early_stop_eps)
        fg, opacity, depth, _ = volume_render(kept.t_starts, kept.t_ends, kept.ray_indices, 1024,
                                              lambda t0, t1, ri: model.field(at(t0, t1, ri), d[ri], image_idx[ri]))
        every = model.render_rays(o, d, image_idx=image_idx, train=True)
    assert got["n_samples"] == kept.t_starts.numel() < every["n_samples"] / 4  # pruning dropped most samples
    assert torch.equal(got["premultiplied"], fg) and torch.equal(got["opacity"], opacity[:, 0])
    assert torch.equal(got["depth"], depth[:, 0])
