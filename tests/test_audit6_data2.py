"""Follow-ups of the sixth data audit: inputs that instant-ngp, nerfstudio or exporters accept, loaded as those tools
load them. A vertical focal length alone (fx = fy), instant-ngp's depth keys (``depth_path`` with
``integer_depth_scale``), COLMAP models listing images that are not on disk (skipped with one warning), a flat
16-number ``transform_matrix``, and a palette PNG whose pixels index past its palette (one message saying so).

Rule: valid input loads as it means (checked against the camera or depth it describes, or against the same data in
the form already read); what cannot be read is one clear error.
"""

import json
import math
import warnings
import zlib

import numpy as np
import pytest
import torch

from data_tools.check import check_dataset
from data_tools.cli import main
from data_tools.colmap import convert_model
from rwf_render.cameras import focal_from_fov, pixel_rays, project
from rwf_render.datasets import load_transforms
from rwf_render.errors import RwfWarning, UserError
from rwf_render.imgio import read_image, write_image
from rwf_render.nerf_depth import load_depths

from test_audit6_data import H, W, _blender, _pose  # noqa: E402  (tests/ is on sys.path under pytest)
from test_data_tools_colmap import MODELS, _moved_points, _synthetic_model  # noqa: E402


# -- a vertical focal length alone ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("camera_angle_y", 0.7), ("fl_y", 17.0)])
def test_a_vertical_focal_length_alone_serves_both_axes(tmp_path, key, value):
    """instant-ngp reads fl_y or camera_angle_y alone as the focal length of both axes (square pixels): the ray
    through the middle of the top edge is atan(H / 2 / f) above the optical axis, the one through the middle of the
    left edge atan(W / 2 / f) to its left, with the same f."""
    _blender(tmp_path, ["r_0", "r_1"], {key: value})
    cams = load_transforms(tmp_path, "train").cameras
    f = focal_from_fov(value, H) if key == "camera_angle_y" else value
    assert math.isclose(float(cams.fy[0]), f) and math.isclose(float(cams.fx[0]), f)
    _, d = pixel_rays(cams[0], torch.tensor([[W / 2, 0.0], [0.0, H / 2]], dtype=torch.float64))
    forward, up, right = -cams.c2w[0, :, 2], cams.c2w[0, :, 1], cams.c2w[0, :, 0]
    assert math.isclose(float(torch.atan2(d[0] @ up, d[0] @ forward)), math.atan(H / 2 / f), rel_tol=1e-9)
    assert math.isclose(float(torch.atan2(-(d[1] @ right), d[1] @ forward)), math.atan(W / 2 / f), rel_tol=1e-9)
    errors, _ = check_dataset(tmp_path, log=lambda *a: None)
    assert errors == []


# -- instant-ngp's depth keys --------------------------------------------------------------------------------------
def _depth_dataset(root, frame_keys, top, values=(1000, 2000, 3000)):
    """Three 16x12 frames; frame i has a constant 16-bit depth map d<i>.png of stored value values[i], named by the
    keys ``frame_keys[i]`` (a tuple of depth_file_path / depth_path; empty: no depth map)."""
    rng = np.random.default_rng(3)
    root.mkdir(exist_ok=True)
    frames = []
    for i, keys in enumerate(frame_keys):
        write_image(root / f"img{i}.png", rng.random((H, W, 3)).astype(np.float32))
        write_image(root / f"d{i}.png", np.full((H, W, 1), values[i] / 65535, np.float32), bits=16)
        frames.append({"file_path": f"img{i}.png", "transform_matrix": _pose(i), **{k: f"d{i}.png" for k in keys}})
    (root / "transforms.json").write_text(json.dumps({"fl_x": 20.0, "w": W, "h": H, **top, "frames": frames}))
    return root


def _depths(root):
    tf = load_transforms(root, "all")
    return tf, load_depths(tf, tf.cameras, 1)


def test_ngp_depth_path_reads_as_nerfstudios_depth_file_path(tmp_path):
    """A 16-bit map named by ``depth_path`` is z-depth, stored value times ``integer_depth_scale`` (instant-ngp's
    loader and its depth loss): the same ray distances as the same maps given nerfstudio's way, and t * cos(angle to
    the optical axis) = value * scale at every pixel."""
    scale = 0.002
    ngp = _depth_dataset(tmp_path / "ngp", [("depth_path",)] * 3, {"integer_depth_scale": scale})
    ns = _depth_dataset(tmp_path / "ns", [("depth_file_path",)] * 3, {"depth_unit_scale_factor": scale})
    (tf, a), (_, b) = _depths(ngp), _depths(ns)
    assert len(a) == 3 * W * H and torch.equal(a.image, b.image) and torch.equal(a.uv, b.uv)
    torch.testing.assert_close(a.t, b.t, rtol=0, atol=0)
    _, rays_d = pixel_rays(tf.cameras.to(dtype=torch.float64), a.uv.double(), a.image)
    forward = -tf.cameras.c2w[a.image, :3, 2].double()
    z = a.t.double() * (rays_d * forward).sum(-1) / rays_d.norm(dim=-1)
    torch.testing.assert_close(z, torch.tensor([1000.0, 2000, 3000], dtype=torch.float64)[a.image] * scale,
                               rtol=1e-6, atol=0)
    assert tf.meta["depth_unit_scale_factor"] == scale  # what `rwf export cameras` writes beside depth_file_path


def test_ngp_depth_path_without_integer_depth_scale_is_unused_with_a_warning(tmp_path):
    """instant-ngp loads no depth when integer_depth_scale is absent (its default is "no depth"); the maps were
    ignored without a word, and --depth-loss then said no frame had depth_file_path."""
    root = _depth_dataset(tmp_path, [("depth_path",)] * 3, {})
    with pytest.warns(RwfWarning, match=r"3 frame\(s\) give instant-ngp's depth_path but no positive "
                                        r"integer_depth_scale .*add integer_depth_scale"):
        tf = load_transforms(root, "all")
    assert tf.depth_paths == [None] * 3
    with pytest.raises(UserError, match="no depth maps .*depth_path with a positive integer_depth_scale"):
        load_depths(tf, tf.cameras, 1)


def test_a_frame_giving_both_depth_keys_must_mean_one_map(tmp_path):
    """Both keys naming the same file in the same unit (a converter writing for both tools): read once. Two
    different files, or one file in two units: refused (one of them is wrong), where nerfstudio's key won silently."""
    same = _depth_dataset(tmp_path / "same", [("depth_file_path", "depth_path")] * 3,
                          {"depth_unit_scale_factor": 0.01, "integer_depth_scale": 0.01})
    assert _depths(same)[1].t.min() >= 1000 * 0.01
    units = _depth_dataset(tmp_path / "units", [("depth_file_path", "depth_path")] * 3, {"integer_depth_scale": 0.01})
    with pytest.raises(UserError, match="frame 0: gives depth_file_path and depth_path, whose units differ"):
        load_transforms(units, "all")
    other = _depth_dataset(tmp_path / "other", [("depth_file_path", "depth_path")] * 3, {"integer_depth_scale": 1e-3})
    meta = json.loads((other / "transforms.json").read_text())
    meta["frames"][1]["depth_path"] = "d2.png"
    (other / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"frame 1: depth_file_path \(d1.png\) and depth_path \(d2.png\) name "
                                        "different depth maps"):
        load_transforms(other, "all")


def test_a_split_mixing_depth_units_is_refused(tmp_path):
    """Frame 0 in nerfstudio's default millimetres, frame 1 in ngp's centimetres: the depth loss reads one unit, so
    one of them would be off by 10x."""
    root = _depth_dataset(tmp_path, [("depth_file_path",), ("depth_path",), ()], {"integer_depth_scale": 0.01})
    with pytest.raises(UserError, match=r"depth maps in different units: .*frame 0.* in 0.001, .*frame 1.* in 0.01"):
        load_transforms(root, "all")
    meta = json.loads((root / "transforms.json").read_text())
    meta["depth_unit_scale_factor"] = 0.01  # one unit: fine, and each map has its own depth
    (root / "transforms.json").write_text(json.dumps(meta))
    tf, d = _depths(root)
    assert sorted(set(d.image.tolist())) == [0, 1] and tf.meta["depth_unit_scale_factor"] == 0.01


# -- COLMAP images missing on disk ---------------------------------------------------------------------------------
def test_colmap_images_missing_on_disk_are_skipped_with_one_warning(tmp_path, capsys):
    """nerfstudio's converter skips them; the others convert exactly as before (their reprojection is exact)."""
    models = {k: MODELS[k] for k in ("PINHOLE", "OPENCV", "SIMPLE_RADIAL")}
    model = _synthetic_model(tmp_path, models)
    (tmp_path / "images" / "im1.png").unlink()
    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = convert_model(tmp_path / "sparse", tmp_path / "images", tmp_path / "out", log=lines.append)
    warned = [str(w.message) for w in caught if issubclass(w.category, RwfWarning)]
    assert len(warned) == 1 and "skipped 1 of the model's 3 images" in warned[0] and "im1.png" in warned[0]
    assert not any("warning" in line for line in lines)  # a warning, not a line of the report
    assert report["n_images"] == 2 and report["reproj_error"] < 1e-6
    # the cameras counted are the converted images' (the skipped image's own camera was counted too)
    assert report["n_cameras"] == 2 and lines[0].startswith("converted 2 images, 2 camera(s)")
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert [f["file_path"] for f in meta["frames"]] == ["images/im0.png", "images/im2.png"]
    t = load_transforms(tmp_path / "out", "all")
    xyz = _moved_points(model, meta)
    for k, image_id in enumerate((1, 3)):
        pix, _ = project(xyz, t.cameras[k])
        np.testing.assert_allclose(pix[0].numpy(), model.images[image_id].xys, atol=1e-6)
    for name in ("im0.png", "im2.png"):  # none left: still one clear error, nothing written
        (tmp_path / "images" / name).unlink()
    assert main(["data", "colmap", str(tmp_path / "sparse"), str(tmp_path / "images"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "none of the 3 images of the model is there (first: im0.png)" in err and not (tmp_path / "o").exists()


# -- a flat transform_matrix ---------------------------------------------------------------------------------------
def _flat_dataset(root, flatten, top=None):
    """Three frames whose matrices are written by ``flatten(4x4 nested list)``; returns the loaded split."""
    rng = np.random.default_rng(4)
    root.mkdir()
    frames = []
    for i in range(3):
        write_image(root / f"img{i}.png", rng.random((H, W, 3)).astype(np.float32))
        frames.append({"file_path": f"img{i}.png", "transform_matrix": flatten(_pose(i))})
    (root / "transforms.json").write_text(json.dumps({"fl_x": 20.0, **(top or {}), "frames": frames}))
    return root


def test_a_flat_row_major_transform_matrix_is_the_same_camera(tmp_path):
    """16 numbers whose last four are 0 0 0 1: row-major, the same cameras (and the same nerfstudio scene box from
    the cameras) as the nested rows. A column-major list ends with the translation and 1: still refused, saying
    how a flat list is read."""
    top = {"applied_transform": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}  # box from the cameras' positions
    nested = load_transforms(_flat_dataset(tmp_path / "nested", lambda m: m, top), "all")
    flat = load_transforms(_flat_dataset(tmp_path / "flat", lambda m: sum(m, []), top), "all")
    assert torch.equal(flat.cameras.c2w, nested.cameras.c2w) and torch.equal(flat.aabb, nested.aabb)
    cols = _flat_dataset(tmp_path / "cols", lambda m: np.asarray(m).T.ravel().tolist())
    with pytest.raises(UserError, match=r"frame 0: transform_matrix has shape \(16,\), expected 4x4 or 3x4 \(a flat "
                                        "list of 16 is read as a row-major 4x4 only when its last four are 0 0 0 1"):
        load_transforms(cols, "all")
    # nested rows whose last row is not 0 0 0 1 (a fuzzing hunt: the row was dropped, the pose used as it was)
    bottom = _flat_dataset(tmp_path / "bottom", lambda m: [*m[:3], [0, 0, 0, 2]])
    with pytest.raises(UserError, match=r"frame 0: transform_matrix's last row is \[0.0, 0.0, 0.0, 2.0\], not 0 0 0 1"):
        load_transforms(bottom, "all")
    near = _flat_dataset(tmp_path / "near", lambda m: [*m[:3], [0, 0, 1e-9, 1]])  # float noise is fine
    assert torch.equal(load_transforms(near, "all").cameras.c2w, nested.cameras.c2w)


# -- a palette PNG indexing past its palette -----------------------------------------------------------------------
def _chunk(name: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + name + data + zlib.crc32(name + data).to_bytes(4, "big")


def test_a_palette_png_indexing_past_its_palette_is_called_corrupt(tmp_path):
    """An 8-bit palette PNG of two colours whose pixels use indices 0-5 (valid chunks and checksums: only the
    indices are wrong). pypng said only "IndexError ..."; now the message says what is wrong with the file."""
    rows = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 6
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 per row
    ihdr = W.to_bytes(4, "big") + H.to_bytes(4, "big") + bytes([8, 3, 0, 0, 0])  # 8-bit, colour type 3 (palette)
    (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"PLTE", bytes(range(6)))
                                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ResourceWarning either
        with pytest.raises(UserError, match=r"p.png: corrupt PNG: a pixel's palette index is beyond its 2-colour "
                                            r"palette \(PLTE chunk\)"):
            read_image(tmp_path / "p.png")
    rows %= 2  # the same file with indices in range reads
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"PLTE", bytes(range(6)))
                                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    pixels, _ = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(np.round(pixels * 255), np.where(rows[..., None] == 0, [0, 1, 2], [3, 4, 5]))


def test_rwf_data_downscale_carries_ngp_depth_maps(tmp_path):
    """`rwf data downscale` copied the maps of ``depth_file_path`` only: a downscaled instant-ngp dataset kept a
    ``depth_path`` naming a map it had not written. Now the map is downscaled beside the images and reads back with
    the same depth values."""
    from data_tools.downscale import downscale_dataset

    src = _depth_dataset(tmp_path / "src", [("depth_path",)] * 3, {"integer_depth_scale": 0.002})
    downscale_dataset(src, tmp_path / "half", 2, log=lambda *a, **k: None)
    tf, depths = _depths(tmp_path / "half")
    assert all(p is not None and p.parent == tmp_path / "half" for p in tf.depth_paths)
    _, rays_d = pixel_rays(tf.cameras.to(dtype=torch.float64), depths.uv.double(), depths.image)
    forward = -tf.cameras.c2w[depths.image, :3, 2].double()
    z = depths.t.double() * (rays_d * forward).sum(-1) / rays_d.norm(dim=-1)  # back to the stored z-depth
    assert len(depths) == 3 * (W // 2) * (H // 2)
    torch.testing.assert_close(z, torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64)[depths.image], rtol=1e-6, atol=0)


def test_an_edited_ngp_depth_map_changes_the_dataset_fingerprint(tmp_path):
    """``--resume`` refuses changed data by its fingerprint; the maps named by instant-ngp's ``depth_path`` were not
    in it, so an edited one went unnoticed."""
    from rwf_render.nerf_data import dataset_fingerprint

    root = _depth_dataset(tmp_path, [("depth_path",)] * 3, {"integer_depth_scale": 0.002})
    before = dataset_fingerprint(root)
    write_image(root / "d1.png", np.full((H, W, 1), 2500 / 65535, np.float32), bits=16)
    assert dataset_fingerprint(root) != before
