"""The scene box of a transforms.json written by nerfstudio's ``ns-process-data``: poses in the capture's own (COLMAP)
units, ``applied_transform`` recorded, no box keys. instant-ngp's default box (+-1.5 around the origin) missed such
a scene: on the real capture moved back to COLMAP units 19 of 23 cameras saw none of it and the fit trained on about
3 % of the pixels, with only a warning. The box now comes from the cameras as nerfstudio's loader makes it.
"""

import json
import math

import numpy as np
import pytest
import torch

from data_tools.check import check_dataset
from rwf_render.cameras import look_at
from rwf_render.datasets import load_transforms
from rwf_render.scene_box import box_coverage, camera_box
from rwf_render.errors import RwfWarning, UserError
from rwf_render.imgio import write_image

CENTER = np.array([30.0, -20.0, 50.0])  # far from the origin, as COLMAP's frame puts a capture anywhere
RADIUS = 12.0


def _nerfstudio(root, n: int = 16, **top):
    """A single transforms.json of ``n`` cameras on a ring around CENTER looking at it, in nerfstudio's layout."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = CENTER + RADIUS * np.array([math.cos(a), math.sin(a), 0.6])
        write_image(root / f"f{i}.png", rng.random((12, 16, 3)).astype(np.float32))
        c2w = look_at(torch.tensor(eye), torch.tensor(CENTER)).tolist() + [[0.0, 0.0, 0.0, 1.0]]
        frames.append({"file_path": f"f{i}.png", "transform_matrix": c2w, "colmap_im_id": i + 1})
    meta = {"w": 16, "h": 12, "fl_x": 14.0, "fl_y": 14.0, "cx": 8.0, "cy": 6.0, "camera_model": "OPENCV",
            "applied_transform": [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]], **top}
    (root / "transforms.json").write_text(json.dumps({**meta, "frames": frames}))
    return root


def test_a_nerfstudio_file_without_box_keys_gets_the_cameras_box_in_every_split(tmp_path):
    root = _nerfstudio(tmp_path / "ns")
    train, val = load_transforms(root, "train"), load_transforms(root, "val")
    assert torch.equal(train.aabb, val.aabb)  # from every frame of the file, not from the split's own cameras
    eyes = np.concatenate([train.cameras.c2w[:, :3, 3].numpy(), val.cameras.c2w[:, :3, 3].numpy()])
    box = train.aabb.numpy()
    np.testing.assert_allclose(box.mean(0), eyes.mean(0), atol=1e-9)  # centred on the mean camera position
    half = np.linalg.norm(eyes - eyes.mean(0), axis=1).max()
    np.testing.assert_allclose((box[1] - box[0]) / 2, half, rtol=1e-9)
    assert ((eyes >= box[0]) & (eyes <= box[1])).all()
    assert ((CENTER > box[0]) & (CENTER < box[1])).all()  # the object the ring looks at is inside
    # every camera now sees most of its image in the box
    assert float(box_coverage(train.cameras, train.aabb).min()) > 0.9
    errors, warnings = check_dataset(root, decode=False, log=lambda *a: None)
    assert errors == [] and warnings == []


def test_without_applied_transform_or_with_box_keys_the_instant_ngp_rule_stays(tmp_path):
    """Only nerfstudio's own files (applied_transform) without box keys change rule: an instant-ngp file keeps its
    +-1.5 box (here every camera misses it: refused, as before), and one that gives aabb_scale keeps
    instant-ngp's rule: its unit cube, with the cascades aabb_scale asks for."""
    plain = _nerfstudio(tmp_path / "ngp")
    data = json.loads((plain / "transforms.json").read_text())
    del data["applied_transform"]
    (plain / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="sees none of the scene box"):
        load_transforms(plain, "train")
    scaled = _nerfstudio(tmp_path / "scaled", aabb_scale=4, offset=[0.5, 0.5, 0.5])
    with pytest.warns(RwfWarning, match="sees none of the scene box's 3 cascades"):
        tf = load_transforms(scaled, "train")  # the file's own box rules (in the wrong place here)
    np.testing.assert_allclose(tf.aabb.numpy(), [[-1.5152] * 3, [1.5152] * 3], atol=1e-4)  # 0.5 / 0.33
    assert tf.cascades == 3  # 1 + log2(4), reaching +-6.06
    assert camera_box([{"transform_matrix": np.eye(4).tolist()}]) is None  # one camera gives no box


def test_rwf_data_check_reports_the_same_box(tmp_path, capsys):
    from data_tools.cli import main

    root = _nerfstudio(tmp_path / "ns")
    code = main(["data", "check", str(root)])
    out = capsys.readouterr().out
    assert code == 0, out
    box = load_transforms(root, "train").aabb.numpy()
    assert f"box [{box[0, 0]:.2f}" in out and "16/16 cameras see the box" in out
