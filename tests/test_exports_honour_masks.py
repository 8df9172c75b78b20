"""The point exports (`--pointcloud`, `--poisson`) and `--tsdf` of a NeRF run leave out the pixels its training
images' masks leave out (mask_path, nerfstudio's convention: black = not a pixel to fit): the field was never fitted
there, and on a capture masked to its object 76 % of the exported points were fog from those pixels.

A stand-in model (tests/test_nerf_tsdf.py's SphereModel: exact depths of an analytic sphere) with masks written as
files: the right-half and left-half masks split the unmasked points between them, and all-black masks leave nothing
(no point; no surface to fuse).
"""

import numpy as np
import pytest

from rwf_render.errors import UserError
from rwf_render.imgio import write_image

from test_nerf_tsdf import BOX, SphereModel, _sphere_cameras  # noqa: E402  (tests/ is on sys.path under pytest)

SIZE = 64


class _Cfg:
    downscale = 1


def _masked_model(tmp_path, which: str) -> SphereModel:
    model = SphereModel(_sphere_cameras(size=SIZE))
    model.cfg, model.train_near_far = _Cfg(), None
    if which == "none":
        return model
    mask = np.zeros((SIZE, SIZE, 1), np.float32)
    if which == "right":
        mask[:, SIZE // 2:] = 1
    elif which == "left":
        mask[:, : SIZE // 2] = 1
    path = tmp_path / f"mask_{which}.png"
    write_image(path, mask)
    model.train_mask_paths = [path] * len(model.train_cameras)
    return model


def test_masked_pixels_give_no_points(tmp_path):
    from rwf_render.nerf_export import depth_points

    count = {w: len(depth_points(_masked_model(tmp_path, w), progress=False)[0])
             for w in ("none", "right", "left", "black")}
    assert count["right"] > 1000 and count["left"] > 1000, count
    assert count["right"] + count["left"] == count["none"], count
    assert count["black"] == 0


def test_tsdf_fuses_no_masked_pixel(tmp_path):
    from rwf_render.nerf_tsdf import tsdf_mesh

    half, _, _ = tsdf_mesh(_masked_model(tmp_path, "right"), BOX, progress=False)  # 20 views: still all round
    assert len(half.faces) > 1000
    with pytest.raises(UserError, match="no training view has pixels"):
        tsdf_mesh(_masked_model(tmp_path, "black"), BOX, progress=False)


def test_a_mask_of_another_size_is_one_error(tmp_path):
    from rwf_render.nerf_export import depth_points

    model = _masked_model(tmp_path, "right")
    write_image(model.train_mask_paths[0], np.ones((SIZE // 2, SIZE, 1), np.float32))
    with pytest.raises(UserError, match="the dataset changed since the fit"):
        depth_points(model, progress=False)
