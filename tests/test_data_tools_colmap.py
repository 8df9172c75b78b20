"""COLMAP model -> transforms.json: reprojection on real data, every camera model, binary == text, failures,
bounds and sparse depth maps."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.cli import main
from data_tools.colmap import cameras_from_frames, convert_model, observation_depths
from data_tools.colmap_io import Camera, Image, Model, qvec_to_rotation, read_model, rotation_to_qvec, write_model
from data_tools.common import load_image, save_image
from rwf_render.cameras import look_at, opencv_to_opengl, pixel_rays, project
from rwf_render.datasets import load_transforms
from rwf_render.errors import RwfWarning


def _bartoszek(data_dir):
    root = data_dir / "colmap" / "bartoszek"
    if not (root / "sparse" / "0").is_dir():
        pytest.skip("bartoszek capture not in the shared data")
    return root


def _colmap_pixels(cam: Camera, p_cv: np.ndarray) -> np.ndarray:
    """COLMAP's own camera models written out (src/colmap/sensor/models.h), (P, 3) OpenCV camera points."""
    x, y = p_cv[:, 0] / p_cv[:, 2], p_cv[:, 1] / p_cv[:, 2]
    p, r2 = cam.params, x * x + y * y
    if cam.model == "SIMPLE_PINHOLE":
        return np.stack([p[0] * x + p[1], p[0] * y + p[2]], -1)
    if cam.model in ("PINHOLE", "FULL_OPENCV"):  # (FULL_OPENCV only with zero distortion here)
        return np.stack([p[0] * x + p[2], p[1] * y + p[3]], -1)
    if cam.model in ("SIMPLE_RADIAL", "RADIAL"):
        d = p[3] * r2 + (p[4] * r2 * r2 if cam.model == "RADIAL" else 0)
        return np.stack([p[0] * (x + x * d) + p[1], p[0] * (y + y * d) + p[2]], -1)
    if cam.model == "OPENCV":
        k1, k2, p1, p2 = p[4:8]
        rad = k1 * r2 + k2 * r2 * r2
        dx = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = y * rad + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
        return np.stack([p[0] * (x + dx) + p[2], p[1] * (y + dy) + p[3]], -1)
    if cam.model == "OPENCV_FISHEYE":
        r = np.sqrt(r2)
        th = np.arctan(r)
        thd = th * (1 + p[4] * th ** 2 + p[5] * th ** 4 + p[6] * th ** 6 + p[7] * th ** 8)
        return np.stack([p[0] * x * thd / r + p[2], p[1] * y * thd / r + p[3]], -1)
    raise AssertionError(cam.model)


def _moved_points(model, meta) -> torch.Tensor:
    S = np.array(meta["input_to_world"])
    return torch.from_numpy(model.xyz @ S[:3, :3].T + S[:3, 3])


def test_bartoszek_reprojection_matches_colmap(data_dir, tmp_path):
    root = _bartoszek(data_dir)
    model = read_model(root / "sparse" / "0")
    report = convert_model(root / "sparse" / "0", root / "images", tmp_path / "out", log=lambda *a: None)
    t = load_transforms(tmp_path / "out", "all")  # the NeRF loader reads the output
    assert len(t) == report["n_images"] == len(model.images) == 23
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    xyz = _moved_points(model, meta)
    index = {int(pid): k for k, pid in enumerate(model.point_ids)}
    by_name = {im.name: im for im in model.images.values()}
    ours, theirs = [], []
    for k, path in enumerate(t.image_paths):
        im = by_name[path.name]
        ok = im.point3D_ids >= 0
        pts = model.xyz[[index[int(p)] for p in im.point3D_ids[ok]]]
        pix, depth = project(xyz[[index[int(p)] for p in im.point3D_ids[ok]]], t.cameras[k])
        assert (depth > 0).all()
        # the same points through COLMAP's own pose and camera: the conversion must not move a pixel
        p_cv = pts @ qvec_to_rotation(im.qvec).T + im.tvec
        np.testing.assert_allclose(pix[0].numpy(), _colmap_pixels(model.cameras[im.camera_id], p_cv), atol=1e-6)
        ours.append(np.linalg.norm(pix[0].numpy() - im.xys[ok], axis=1))
        theirs.append(model.errors[[index[int(p)] for p in im.point3D_ids[ok]]])
    ours, theirs = np.concatenate(ours).mean(), np.concatenate(theirs).mean()
    assert abs(ours - theirs) < 1.0 and ours < 1.0
    distorted = root / "sparse_distorted_simple_radial" / "0"
    if distorted.is_dir():  # the stored errors are in the pixels of the original 3031 px photos
        scale = 1000 / next(iter(read_model(distorted).cameras.values())).width
        assert ours == pytest.approx(theirs * scale, abs=0.02)
    assert report["reproj_error"] == pytest.approx(ours)
    # the PLY holds the moved points; the box holds most of them
    ply = (tmp_path / "out" / "sparse_pc.ply").read_bytes()
    body = ply[ply.index(b"end_header\n") + 11:]
    pts = np.frombuffer(body, dtype=[("p", "<f4", 3), ("c", "u1", 3)])["p"]
    np.testing.assert_allclose(pts, xyz.numpy(), atol=1e-5)
    assert ((xyz >= t.aabb[0]) & (xyz <= t.aabb[1])).all(-1).double().mean() > 0.95


def test_binary_and_text_models_convert_identically(data_dir, tmp_path):
    root = _bartoszek(data_dir)
    model = read_model(root / "sparse" / "0")
    write_model(model, tmp_path / "bin", "bin")  # our writer reproduces COLMAP's files byte for byte
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (tmp_path / "bin" / name).read_bytes() == (root / "sparse" / "0" / name).read_bytes()
    write_model(model, tmp_path / "txt", "txt")
    outs = []
    for kind in ("bin", "txt"):
        src = root / "sparse" / "0" if kind == "bin" else tmp_path / "txt"
        assert main(["data", "colmap", str(src), str(root / "images"), str(tmp_path / f"out_{kind}"),
                     "--no-copy"]) == 0
        meta = json.loads((tmp_path / f"out_{kind}" / "transforms.json").read_text())
        meta.pop("source")
        outs.append(meta)
    assert outs[0] == outs[1]
    assert (tmp_path / "out_bin/sparse_pc.ply").read_bytes() == (tmp_path / "out_txt/sparse_pc.ply").read_bytes()


MODELS = {"SIMPLE_PINHOLE": [70.0, 33.0, 23.5], "PINHOLE": [70.0, 72.0, 31.0, 25.0],
          "SIMPLE_RADIAL": [70.0, 32.0, 24.0, -0.08], "RADIAL": [68.0, 32.5, 24.0, -0.1, 0.02],
          "OPENCV": [70.0, 71.0, 32.0, 23.0, -0.1, 0.02, 0.003, -0.002],
          "OPENCV_FISHEYE": [60.0, 61.0, 32.0, 24.0, 0.03, -0.01, 0.002, -0.001]}


def _synthetic_model(tmp_path, models=MODELS):
    """A model with one image per camera model, exact observations, and blank 64x48 images."""
    from data_tools.common import save_image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(40, 3)) * 0.5
    eyes = [[4 * math.cos(a), 4 * math.sin(a), 1.5] for a in np.linspace(0, 5, len(models))]
    c2w_cv = opencv_to_opengl(look_at(torch.tensor(eyes, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)).numpy())
    cams, images, tracks = {}, {}, [[] for _ in xyz]
    (tmp_path / "images").mkdir()
    for k, (name, params) in enumerate(models.items()):
        cams[k + 1] = Camera(k + 1, name, 64, 48, np.array(params))
        R, c = c2w_cv[k, :, :3], c2w_cv[k, :, 3]
        qvec, tvec = rotation_to_qvec(R.T), -R.T @ c
        xys = _colmap_pixels(cams[k + 1], xyz @ R + tvec)  # (R^T p - R^T c) as rows
        images[k + 1] = Image(k + 1, qvec, tvec, k + 1, f"im{k}.png", xys, np.arange(40))
        for j in range(40):
            tracks[j].append([k + 1, j])
        save_image(tmp_path / "images" / f"im{k}.png", np.zeros((48, 64, 3), np.uint8))
    model = Model(cams, images, np.arange(40), xyz, np.full((40, 3), 128, np.uint8), np.zeros(40),
                  [np.array(t) for t in tracks])
    write_model(model, tmp_path / "sparse", "txt")
    return model


def test_every_supported_camera_model_reprojects_exactly(tmp_path):
    model = _synthetic_model(tmp_path)
    report = convert_model(tmp_path / "sparse", tmp_path / "images", tmp_path / "out", orient=True,
                           log=lambda *a: None)
    t = load_transforms(tmp_path / "out", "all")
    assert t.cameras.model_names() == ["PINHOLE", "PINHOLE", "OPENCV", "OPENCV", "OPENCV", "OPENCV_FISHEYE"]
    xyz = _moved_points(model, json.loads((tmp_path / "out" / "transforms.json").read_text()))
    for k in range(len(t)):
        pix, _ = project(xyz, t.cameras[k])
        np.testing.assert_allclose(pix[0].numpy(), model.images[k + 1].xys, atol=1e-6)
    assert report["reproj_error"] < 1e-6
    # orientation: the mean camera up is +Z; the rotation blocks stay orthonormal after the similarity
    up = t.cameras.c2w[:, :, 1].mean(0)
    assert torch.allclose(up / up.norm(), torch.tensor([0.0, 0, 1], dtype=torch.float64), atol=1e-9)
    R = t.cameras.c2w[:, :, :3]
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3, dtype=torch.float64).expand(len(t), 3, 3), atol=1e-9)


def test_failures_leave_nothing_behind(tmp_path, capsys):
    _synthetic_model(tmp_path, {"FULL_OPENCV": [70.0, 71.0, 32, 23] + [0.0] * 8})
    assert main(["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"), str(tmp_path / "o")]) == 2
    assert "FULL_OPENCV is not supported" in capsys.readouterr().err and not (tmp_path / "o").exists()
    shutil.rmtree(tmp_path / "sparse")
    shutil.rmtree(tmp_path / "images")
    _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    for name in ("im0.png", "im1.png"):  # some missing: skipped (test_audit6_data2.py); all missing: refused
        (tmp_path / "images" / name).unlink()
    assert main(["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"), str(tmp_path / "o")]) == 2
    assert "none of the 2 images of the model is there" in capsys.readouterr().err
    assert main(["data", "colmap", str(tmp_path), str(tmp_path / "images"), str(tmp_path / "o")]) == 2
    assert "not a COLMAP model" in capsys.readouterr().err
    (tmp_path / "sparse" / "images.txt").write_text("1 2 3\n")
    assert main(["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"), str(tmp_path / "o")]) == 2
    assert "bad image line" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


def test_bounds_hold_the_points_each_frame_observes(data_dir, tmp_path, capsys):
    """--bounds: each frame's [near, far] holds the distances to the points it observes (0.1th-99.9th percentile,
    with a 10 % margin); the NeRF loader reads them as per-image bounds. Without --bounds, no frame has them."""
    root = _bartoszek(data_dir)
    model = read_model(root / "sparse" / "0")
    argv = ["data", "colmap", str(root / "sparse" / "0"), str(root / "images"), str(tmp_path / "b"), "--no-copy"]
    assert main(argv + ["--bounds"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("near/far bounds")]
    assert main(argv[:4] + [str(tmp_path / "plain"), "--no-copy"]) == 0
    assert "near/far" not in capsys.readouterr().out
    assert load_transforms(tmp_path / "plain", "all").near_far is None
    meta = json.loads((tmp_path / "b" / "transforms.json").read_text())
    t = load_transforms(tmp_path / "b", "all")
    assert t.near_far is not None and len(t.near_far) == 23
    near, far = t.near_far[:, 0], t.near_far[:, 1]  # the printed line says the written figures (--bounds said none)
    assert said == [f"near/far bounds per frame: near {float(near.min()):.3g}-{float(near.max()):.3g}, far "
                    f"{float(far.min()):.3g}-{float(far.max()):.3g} (from the points each image observes)"]
    xyz = np.asarray(_moved_points(model, meta))
    index = {int(pid): k for k, pid in enumerate(model.point_ids)}
    inside = []
    for frame in meta["frames"]:
        im = model.images[frame["colmap_im_id"]]
        seen = xyz[[index[int(p)] for p in im.point3D_ids if int(p) in index]]
        dist = np.linalg.norm(seen - np.array(frame["transform_matrix"])[:3, 3], axis=1)
        assert 0 < frame["near"] < frame["far"]
        inside.append((dist >= frame["near"]) & (dist <= frame["far"]))
        assert inside[-1].mean() >= 0.99
    assert np.concatenate(inside).mean() >= 0.998


def test_bounds_are_left_out_when_an_image_observes_too_few_points(tmp_path):
    from data_tools.colmap import MIN_BOUND_POINTS, frame_bounds  # noqa: PLC0415

    model = _synthetic_model(tmp_path)
    ids = sorted(model.images)
    c2w = np.stack([opencv_to_opengl(np.linalg.inv(model.images[i].world_to_camera())) for i in ids])
    near_far = frame_bounds(model, ids, c2w, model.xyz)
    assert near_far is not None and (near_far[:, 0] < near_far[:, 1]).all()
    model.images[ids[0]].point3D_ids[:] = -1  # untriangulated: nothing to bound that frame with
    assert frame_bounds(model, ids, c2w, model.xyz) is None and MIN_BOUND_POINTS > 1


def test_depth_maps_lift_to_the_points_each_frame_observes(data_dir, tmp_path):
    """--depth on real data, closed form: each pixel with a depth, lifted to that z-depth along the ray through its
    centre, lies on a point the frame observes, within the pixel's angular offset from that point's projection
    (half a pixel diagonal + the point's reprojection error) at its depth plus half a depth unit along the ray.
    Each map has one depth per distinct pixel of the image's triangulated observations, and the unit fits the
    farthest point. The loader and ``rwf data check`` accept the output."""
    root = _bartoszek(data_dir)
    model = read_model(root / "sparse" / "0")
    out = tmp_path / "d"
    assert main(["data", "colmap", str(root / "sparse" / "0"), str(root / "images"), str(out), "--no-copy",
                 "--depth"]) == 0
    meta = json.loads((out / "transforms.json").read_text())
    unit = meta["depth_unit_scale_factor"]
    cams = cameras_from_frames(meta["frames"], meta)
    xyz = _moved_points(model, meta)
    index = {int(pid): k for k, pid in enumerate(model.point_ids)}
    z_max, counts = 0.0, []
    for k, frame in enumerate(meta["frames"]):
        im, cam = model.images[frame["colmap_im_id"]], cams[k]
        w, h = int(cam.width[0]), int(cam.height[0])
        assert frame["depth_file_path"] == f"depth/{Path(im.name).stem}.png"
        dmap = load_image(out / frame["depth_file_path"])
        assert dmap.dtype == np.uint16 and dmap.shape == (h, w)
        ok = np.isin(im.point3D_ids, model.point_ids)
        seen = xyz[[index[int(p)] for p in im.point3D_ids[ok]]]
        pix, z = project(seen, cam)
        pix, z = pix[0].numpy(), z[0].numpy()
        assert (z > 0).all()
        kp = im.xys[ok] * [w / model.cameras[im.camera_id].width, h / model.cameras[im.camera_id].height]
        cells = np.floor(kp).astype(np.int64)
        cells = cells[(cells >= 0).all(1) & (cells < [w, h]).all(1)]
        counts.append(int(np.count_nonzero(dmap)))
        assert counts[-1] == len(np.unique(cells, axis=0)) > 100
        v, u = np.nonzero(dmap)
        o, d = pixel_rays(cam, np.stack([u + 0.5, v + 0.5], -1).astype(np.float64), normalize=False)
        lifted = (o + torch.from_numpy(dmap[v, u] * unit)[:, None] * d).numpy()
        dist = np.linalg.norm(lifted[:, None] - seen.numpy()[None], axis=-1)  # (pixels, observed points)
        reproj = np.linalg.norm(pix - kp, axis=1)
        f = min(float(cam.fx[0]), float(cam.fy[0]))
        tol = z * (math.sqrt(0.5) + reproj) / f + unit / 2 * d.norm(dim=-1).numpy()[:, None] + 1e-9
        assert (dist <= tol).any(1).all()
        z_max = max(z_max, float(z.max()))
    assert unit * 65535 >= z_max and unit == pytest.approx(z_max * 1.05 / 65535)
    t = load_transforms(out, "all")
    assert all(p is not None and p.is_file() for p in t.depth_paths)
    assert main(["data", "check", str(out)]) == 0


def _depth_case(tmp_path):
    """The synthetic model (PINHOLE + OPENCV) with, in image 1 (renamed sub/a.jpg): two keypoints on one free
    pixel, a point behind the camera, a point 1e-5 in front of it, an observation of a point absent from points3D
    and a keypoint outside the image; image 2 is stored at twice its camera's size. Returns (model, free pixels)."""
    model = _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    im = model.images[1]
    taken = {tuple(c) for c in np.floor(im.xys).astype(int).tolist()}
    free = [np.array([u, v]) for v in range(48) for u in range(64) if (u, v) not in taken][:4]
    R, t = qvec_to_rotation(im.qvec), im.tvec
    center, forward = -R.T @ t, R[2]  # COLMAP: camera z points forward
    im.xys[0], im.xys[1] = free[0] + [0.2, 0.3], free[0] + [0.7, 0.6]  # a collision
    im.xys[2] = [64.5, 10.0]  # outside the image
    im.xys = np.vstack([im.xys, free[1] + 0.5, free[2] + 0.5, free[3] + 0.5])
    im.point3D_ids = np.append(im.point3D_ids, [40, 41, 999])  # behind, very near, absent from points3D
    model.point_ids = np.append(model.point_ids, [40, 41])
    model.xyz = np.vstack([model.xyz, center - forward, center + 1e-5 * forward])
    model.rgb, model.errors = np.vstack([model.rgb, model.rgb[:2]]), np.append(model.errors, [0.0, 0.0])
    model.tracks += [np.array([[1, 40]]), np.array([[1, 41]])]
    (tmp_path / "images" / "sub").mkdir()
    (tmp_path / "images" / "im0.png").unlink()
    save_image(tmp_path / "images" / "sub" / "a.jpg", np.zeros((48, 64, 3), np.uint8))
    im.name = "sub/a.jpg"
    save_image(tmp_path / "images" / "im1.png", np.zeros((96, 128, 3), np.uint8))
    write_model(model, tmp_path / "sparse", "txt")
    return model, free


def test_depth_maps_keep_the_nearest_point_in_front_per_pixel(tmp_path):
    """Each written pixel holds round(z / unit) (at least 1) of the nearest point observed there, z from
    :func:`project` of the converted cameras; points behind the camera, points absent from points3D and keypoints
    outside the image write nothing; a rescaled image's map has the image's size, keypoints scaled to it.
    :func:`observation_depths` in COLMAP's own frame gives COLMAP's camera-frame z."""
    model, free = _depth_case(tmp_path)
    logs = []
    with pytest.warns(RwfWarning, match="absent from points3D"):  # the case's point without a 3D entry
        report = convert_model(tmp_path / "sparse", tmp_path / "images", tmp_path / "out", depth=True,
                               log=logs.append)
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    unit, cams = meta["depth_unit_scale_factor"], cameras_from_frames(meta["frames"], meta)
    xyz = _moved_points(model, meta)
    index = {int(pid): k for k, pid in enumerate(model.point_ids)}
    maps, all_z = {}, []
    for k, frame in enumerate(meta["frames"]):
        im = model.images[frame["colmap_im_id"]]
        w, h = int(cams.width[k]), int(cams.height[k])
        sx, sy = w / model.cameras[im.camera_id].width, h / model.cameras[im.camera_id].height
        near = {}
        for (x, y), pid in zip(im.xys, im.point3D_ids):
            if int(pid) not in index:
                continue
            z = float(project(xyz[index[int(pid)]][None], cams[k])[1][0, 0])
            u, v = math.floor(x * sx), math.floor(y * sy)
            if z > 0 and 0 <= u < w and 0 <= v < h:
                near[u, v] = min(z, near.get((u, v), math.inf))
                all_z.append(z)
        maps[im.id] = load_image(tmp_path / "out" / frame["depth_file_path"])
        expected = np.zeros((h, w), np.uint16)
        for (u, v), z in near.items():
            expected[v, u] = max(1, round(z / unit))
        np.testing.assert_array_equal(maps[im.id], expected)
    assert unit == pytest.approx(max(all_z) * 1.05 / 65535)
    assert [f["depth_file_path"] for f in meta["frames"]] == ["depth/im1.png", "depth/sub/a.png"]
    assert maps[2].shape == (96, 128) and maps[1].shape == (48, 64)
    assert report["depth_pixels"] == [int(np.count_nonzero(maps[2])), int(np.count_nonzero(maps[1]))]
    assert any(line.startswith("depth maps:") for line in logs)
    # the collision: the nearer of the two points, which are several units apart
    z0, z1 = (float(project(xyz[j][None], cams[1])[1][0, 0]) for j in (0, 1))
    assert abs(z0 - z1) > 10 * unit and maps[1][free[0][1], free[0][0]] == round(min(z0, z1) / unit)
    assert float(project(xyz[40][None], cams[1])[1][0, 0]) < 0  # behind: nothing written
    assert maps[1][free[1][1], free[1][0]] == 0 and maps[1][free[3][1], free[3][0]] == 0  # absent point too
    assert maps[1][free[2][1], free[2][0]] == 1  # 1e-5 in front rounds to 0: clamped to 1
    # observation_depths in COLMAP's frame: z is the camera-frame z of each kept observation
    ids = sorted(model.images)
    c2w = np.stack([opencv_to_opengl(np.linalg.inv(model.images[i].world_to_camera())) for i in ids])
    (pix, z), _ = observation_depths(model, ids, c2w, model.xyz, [(64, 48), (128, 96)])
    im = model.images[1]
    kept = [j for j, p in enumerate(im.point3D_ids) if p in (0, 1, *range(3, 40), 41)]
    np.testing.assert_array_equal(pix, np.floor(im.xys[kept]).astype(np.int64))
    np.testing.assert_allclose(z, (model.xyz[[index[int(im.point3D_ids[j])] for j in kept]]
                                   @ qvec_to_rotation(im.qvec).T + im.tvec)[:, 2], rtol=1e-9, atol=1e-12)


def test_without_depth_nothing_changes(tmp_path):
    """Without --depth: no depth folder, no depth keys; with it, transforms.json differs only by those keys."""
    _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    argv = ["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images")]
    assert main(argv + [str(tmp_path / "plain")]) == 0 and main(argv + [str(tmp_path / "d"), "--depth"]) == 0
    plain = json.loads((tmp_path / "plain" / "transforms.json").read_text())
    with_depth = json.loads((tmp_path / "d" / "transforms.json").read_text())
    assert not (tmp_path / "plain" / "depth").exists() and (tmp_path / "d" / "depth").is_dir()
    assert "depth_unit_scale_factor" not in plain and with_depth.pop("depth_unit_scale_factor") > 0
    assert all("depth_file_path" not in f for f in plain["frames"])
    for f in with_depth["frames"]:
        assert f.pop("depth_file_path").startswith("depth/")
    assert plain == with_depth


def test_depth_refuses_names_whose_maps_would_clash_or_leave_out(tmp_path, capsys):
    """Two images differing only by suffix would share one depth map; a name outside the images folder would put
    its map outside OUT: both stop with one message and write nothing, and convert without --depth."""
    model = _synthetic_model(tmp_path, {"PINHOLE": MODELS["PINHOLE"], "OPENCV": MODELS["OPENCV"]})
    shutil.copy(tmp_path / "images" / "im1.png", tmp_path / "images" / "im0.jpg")
    model.images[2].name = "im0.jpg"
    write_model(model, tmp_path / "sparse", "txt")
    argv = ["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images")]
    assert main(argv + [str(tmp_path / "o"), "--depth"]) == 2
    assert "would share the depth map depth/im0.png" in capsys.readouterr().err
    assert main(argv + [str(tmp_path / "o")]) == 0
    (tmp_path / "sub").mkdir()
    shutil.move(tmp_path / "images", tmp_path / "sub" / "images")
    model.images[2].name = "../images/im0.jpg"
    write_model(model, tmp_path / "sparse", "txt")
    argv = ["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "sub" / "images")]
    assert main(argv + [str(tmp_path / "o2"), "--no-copy", "--depth"]) == 2
    assert "points outside the images folder" in capsys.readouterr().err
    assert main(argv + [str(tmp_path / "o2"), "--no-copy"]) == 0
    assert not list(tmp_path.glob(".o*"))
