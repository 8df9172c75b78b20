"""transforms.json reader: Blender and instant-ngp/nerfstudio layouts, splits, overrides, clear errors."""

import json
import math

import numpy as np
import pytest
import torch

from rwf_render.cameras import look_at, project
from rwf_render.datasets import HOLDOUT_EVERY, load_transforms
from rwf_render.scene_box import scene_box
from rwf_render.errors import UserError


def test_lego_tiny_loads(data_dir):
    root = data_dir / "nerf" / "lego_tiny"
    meta = json.loads((root / "transforms_train.json").read_text())
    t = load_transforms(root, "train")
    assert len(t) == 1 and t.image_paths[0] == root / "train" / "r_0.png"  # Blender paths omit ".png"
    cam = t.cameras
    assert (cam.width.item(), cam.height.item()) == (50, 50)  # from the image header
    assert cam.fx.item() == pytest.approx(25 / math.tan(meta["camera_angle_x"] / 2))
    assert torch.allclose(cam.c2w[0], torch.tensor(meta["frames"][0]["transform_matrix"], dtype=torch.float64)[:3])
    # the camera looks at the object at the origin: the origin projects near the image center
    pix, depth = project(torch.zeros(1, 3, dtype=torch.float64), cam)
    assert depth.item() > 0 and (pix[0, 0] - 25).abs().max() < 5
    assert torch.allclose(t.aabb, torch.tensor([[-0.5 / 0.33] * 3, [0.5 / 0.33] * 3], dtype=torch.float64))
    assert len(load_transforms(root, "all")) == 2
    with pytest.raises(UserError, match="transforms_test.json"):
        load_transforms(root, "test")


def _write_dataset(tmp_path, n=10, missing=(), **top):
    (tmp_path / "img").mkdir()
    c2w = look_at(torch.tensor([[3.0 * math.cos(a), 3.0 * math.sin(a), 1.0] for a in np.linspace(0, 6, n)],
                               dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    frames = []
    for i in range(n):
        if i not in missing:
            (tmp_path / "img" / f"{i}.png").write_bytes(b"")  # metadata only: the reader never decodes
        frames.append({"file_path": f"img/{i}.png", "transform_matrix": c2w[i].tolist() + [[0, 0, 0, 1]]})
    meta = {"fl_x": 100.0, "fl_y": 101.0, "cx": 60.0, "cy": 40.0, "w": 120, "h": 80, **top, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    return meta


def test_single_file_overrides_splits_and_missing_images(tmp_path):
    meta = _write_dataset(tmp_path, n=10, missing=(3,), k1=0.1, aabb_scale=4)
    meta["frames"][1].update(fl_x=90.0, w=64, h=48, mask_path="img/m1.png")
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="skipped 1 frame"):
        t = load_transforms(tmp_path, "all")
    assert len(t) == 9 and t.skipped == ["img/3.png"]
    assert t.cameras.model_names()[0] == "OPENCV" and t.cameras.dist[0, 0].item() == 0.1  # k1 -> OPENCV
    assert t.cameras.fx[1].item() == 90.0 and t.cameras.width[1].item() == 64 and t.cameras.fy[1].item() == 101.0
    assert t.mask_paths[1] == tmp_path / "img" / "m1.png" and t.mask_paths[0] is None
    # aabb_scale 4 (instant-ngp's rule): the box is its unit cube, with 1 + log2(4) cascades around it
    assert torch.allclose(t.aabb[1], torch.full((3,), 0.5 / 0.33, dtype=torch.float64)) and t.cascades == 3
    with pytest.warns(UserWarning):
        train, test = load_transforms(tmp_path, "train"), load_transforms(tmp_path, "test")
    assert [p.name for p in test.image_paths] == [f"{i}.png" for i in range(0, 10, HOLDOUT_EVERY)]
    assert len(train) + len(test) == 9 and not set(train.image_paths) & set(test.image_paths)
    meta["train_filenames"], meta["test_filenames"] = ["img/1.png", "img/2.png"], ["img/5.png"]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    assert [p.name for p in load_transforms(tmp_path, "train").image_paths] == ["1.png", "2.png"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["frames"][2].pop("transform_matrix"), "frame 2: missing 'transform_matrix'"),
    (lambda m: m["frames"][1].update(transform_matrix=np.zeros((4, 4)).tolist()), "frame 1: .*singular"),
    (lambda m: m["frames"][0].update(transform_matrix=[[1, 2], [3, 4]]), "shape"),
    (lambda m: (m.pop("fl_x"), m.pop("fl_y")), "no focal length"),  # fl_y alone is a focal length (fx = fy)
    (lambda m: m.update(camera_model="EQUIRECTANGULAR"), "unsupported camera_model"),
    (lambda m: m.update(frames="x"), "list of 'frames'"),
])
def test_malformed_metadata_raises_one_clear_error(tmp_path, edit, message):
    meta = _write_dataset(tmp_path, n=4)
    edit(meta)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=message):
        load_transforms(tmp_path, "all")


def test_bad_json_missing_folder_and_no_usable_frame(tmp_path):
    with pytest.raises(UserError, match="no such dataset"):
        load_transforms(tmp_path / "nope")
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_transforms(tmp_path)
    _write_dataset(tmp_path, n=2, missing=(0, 1))
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no frame with an existing image"):
        load_transforms(tmp_path, "all")
    assert torch.allclose(scene_box({"aabb": [[0, 0, 0], [1, 2, 3]]})[1], torch.tensor([1.0, 2, 3], dtype=torch.float64))
