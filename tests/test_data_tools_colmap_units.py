"""``rwf data colmap`` on rescaled images: the reprojection error compared with COLMAP's is in COLMAP's pixels.

Converting the same model with images smaller than its cameras (intrinsics scaled) must report the same error in
the COLMAP cameras' pixels as converting it with images of the cameras' size; the error in the rescaled images'
pixels stays under ``reproj_error``, smaller by the scale."""

import json
import math
import re

import numpy as np
import pytest
import torch

from data_tools.colmap import cameras_from_frames, convert_model, reprojection_errors
from data_tools.colmap_io import Camera, Image, Model, qvec_to_rotation, read_model, rotation_to_qvec, write_model
from data_tools.common import save_image
from rwf_render.cameras import look_at, opencv_to_opengl

W, H = 64, 48  # the COLMAP cameras' size
# camera id -> (model, params, size of its images in the "small" folder): a uniform 0.625 and a 0.5 x 0.521 scale
CAMERAS = {1: ("PINHOLE", [70.0, 72.0, 31.0, 25.0], (40, 30)),
           2: ("OPENCV", [70.0, 71.0, 32.0, 23.0, -0.1, 0.02, 0.003, -0.002], (32, 25))}
NOISE_PX = 0.7  # keypoint noise, COLMAP pixels


def _pixels(model: str, params, p_cv: np.ndarray) -> np.ndarray:
    """(P, 2) COLMAP pixels of (P, 3) OpenCV camera points (PINHOLE and OPENCV as in COLMAP's models.h)."""
    x, y = p_cv[:, 0] / p_cv[:, 2], p_cv[:, 1] / p_cv[:, 2]
    fx, fy, cx, cy = params[:4]
    if model == "OPENCV":
        k1, k2, p1, p2 = params[4:8]
        r2 = x * x + y * y
        rad = k1 * r2 + k2 * r2 * r2
        x, y = (x + x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y + y * rad + 2 * p2 * x * y + p1 * (r2 + 2 * y * y))
    return np.stack([fx * x + cx, fy * y + cy], -1)


def _noisy_model(root) -> Model:
    """4 images (2 per camera) seeing 40 points; keypoints = exact projections + Gaussian noise, and each point's
    stored error the mean of its observations' offsets (as COLMAP stores it), so COLMAP's figure is known exactly.
    Writes root/sparse, root/full (images at the cameras' size) and root/small (rescaled images)."""
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(40, 3)) * 0.5
    eyes = [[4 * math.cos(a), 4 * math.sin(a), 1.5] for a in np.linspace(0, 4.5, 4)]
    c2w_cv = opencv_to_opengl(look_at(torch.tensor(eyes, dtype=torch.float64),
                                      torch.zeros(3, dtype=torch.float64)).numpy())
    cams = {i: Camera(i, m, W, H, np.array(p)) for i, (m, p, _) in CAMERAS.items()}
    images, offsets = {}, np.zeros((4, 40))
    for k in range(4):
        cid = 1 + k % 2
        R, c = c2w_cv[k, :, :3], c2w_cv[k, :, 3]
        qvec, tvec = rotation_to_qvec(R.T), -R.T @ c
        noise = rng.normal(size=(40, 2)) * NOISE_PX
        xys = _pixels(cams[cid].model, cams[cid].params, xyz @ qvec_to_rotation(qvec).T + tvec) + noise
        offsets[k] = np.linalg.norm(noise, axis=1)
        images[k + 1] = Image(k + 1, qvec, tvec, cid, f"im{k}.png", xys, np.arange(40))
        for folder, size in (("full", (W, H)), ("small", CAMERAS[cid][2])):
            (root / folder).mkdir(exist_ok=True)
            save_image(root / folder / f"im{k}.png", np.zeros((size[1], size[0], 3), np.uint8))
    tracks = [np.array([[k + 1, j] for k in range(4)]) for j in range(40)]
    model = Model(cams, images, np.arange(40), xyz, np.full((40, 3), 128, np.uint8), offsets.mean(0), tracks)
    write_model(model, root / "sparse", "txt")
    return model


def test_rescaled_images_report_the_error_in_colmap_pixels(tmp_path):
    _noisy_model(tmp_path)
    logs = {"full": [], "small": []}
    reports = {name: convert_model(tmp_path / "sparse", tmp_path / name, tmp_path / f"out_{name}", copy_images=False,
                                   log=logs[name].append) for name in logs}
    full, small = reports["full"], reports["small"]
    assert full["rescaled_images"] == 0 and small["rescaled_images"] == 4
    # images at the cameras' size: one pixel unit, ours is COLMAP's figure (exact residuals, same observations)
    assert full["reproj_error"] > 0.5 * NOISE_PX
    assert full["reproj_error_colmap_px"] == pytest.approx(full["reproj_error"], rel=1e-9)
    assert full["reproj_error"] == pytest.approx(full["colmap_reproj_error"], rel=1e-6)
    # rescaled images: the error in COLMAP's pixels agrees with the undownscaled conversion's ...
    assert small["reproj_error_colmap_px"] == pytest.approx(full["reproj_error"], rel=1e-6)
    assert small["colmap_reproj_error"] == full["colmap_reproj_error"]
    # ... while reproj_error keeps its meaning (the rescaled images' pixels): smaller, by about the scale
    assert 0.5 * full["reproj_error"] < small["reproj_error"] < 0.63 * full["reproj_error"]
    # the printed line: ours in COLMAP's pixels next to COLMAP's, the rescaled images' figure labelled as such
    line = next(s for s in logs["small"] if s.startswith("reprojection error of the converted cameras"))
    shown = re.match(r"reprojection error of the converted cameras: ([\d.]+) px in the COLMAP cameras' pixels, "
                     r"([\d.]+) px in the rescaled images' \(COLMAP's, as stored with its points: ([\d.]+) px, in the "
                     r"pixels of the images its last bundle adjustment saw", line)
    assert shown, line
    assert float(shown.group(1)) == pytest.approx(float(shown.group(3)), abs=2e-3)
    assert float(shown.group(2)) == pytest.approx(small["reproj_error"], abs=1e-3)
    line = next(s for s in logs["full"] if s.startswith("reprojection error of the converted cameras"))
    assert line.split(" -> ")[0] == (f"reprojection error of the converted cameras: {full['reproj_error']:.3f} px "
                                     f"(COLMAP's, as stored with its points: {full['colmap_reproj_error']:.3f} px, "
                                     "in the pixels of the images its last bundle adjustment saw, which an undistorted "
                                     "or resized model keeps)")  # one unit: as before


def test_reprojection_errors_units(tmp_path):
    """``reprojection_errors(pixels=...)``: per observation, the COLMAP-pixel error is the output-pixel offset
    divided per axis by the image's scale; an unknown unit is refused."""
    model = _noisy_model(tmp_path)
    convert_model(tmp_path / "sparse", tmp_path / "small", tmp_path / "out", copy_images=False, log=lambda *a: None)
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    cams = cameras_from_frames(meta["frames"], meta)
    ids = [f["colmap_im_id"] for f in meta["frames"]]
    S = np.array(meta["input_to_world"])
    colmap_px = reprojection_errors(model, cams, ids, S, pixels="colmap")
    output_px = reprojection_errors(model, cams, ids, S)
    # the keypoint noise, image by image in the output order: what COLMAP's pixels must give back
    noise = []
    for i in ids:
        im = model.images[i]
        cam = model.cameras[im.camera_id]
        exact = _pixels(cam.model, cam.params, model.xyz @ qvec_to_rotation(im.qvec).T + im.tvec)
        noise.append(np.linalg.norm(im.xys - exact, axis=1))
    noise = np.concatenate(noise)
    np.testing.assert_allclose(colmap_px, noise, rtol=1e-6, atol=1e-6)
    assert (output_px < colmap_px).all()
    with pytest.raises(ValueError, match="pixels"):
        reprojection_errors(model, cams, ids, S, pixels="cm")


def test_bartoszek_half_size_images_keep_the_error(data_dir, tmp_path):
    """Real data: the bartoszek model converted with blank images of half its cameras' size reports the same
    error in COLMAP's pixels as the conversion with the real images (and half of it in the small images')."""
    root = data_dir / "colmap" / "bartoszek"
    if not (root / "sparse" / "0").is_dir():
        pytest.skip("bartoszek capture not in the shared data")
    model = read_model(root / "sparse" / "0")
    for im in model.images.values():
        cam = model.cameras[im.camera_id]
        path = tmp_path / "half" / im.name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, np.zeros((round(cam.height / 2), cam.width // 2, 3), np.uint8))
    quiet = dict(copy_images=False, log=lambda *a: None)
    full = convert_model(root / "sparse" / "0", root / "images", tmp_path / "full", **quiet)
    half = convert_model(root / "sparse" / "0", tmp_path / "half", tmp_path / "half_out", **quiet)
    assert full["rescaled_images"] == 0 and half["rescaled_images"] == len(model.images)
    assert half["reproj_error_colmap_px"] == pytest.approx(full["reproj_error"], rel=1e-6)
    assert half["reproj_error"] == pytest.approx(full["reproj_error"] / 2, rel=0.01)
