"""A ``mask_path`` image of the values 0 and 1 only (a segmentation tool's labels, in an 8- or 16-bit PNG) is read as
black and white, as nerfstudio reads any non-zero mask value: it was read as 1/255, every pixel's loss weighed 255
times less, and ``rwf data check`` said OK."""

import json

import numpy as np
import pytest

from conftest import random_views_scene
from rwf_render.imgio import write_image
from rwf_render.nerf_data import load_split, read_mask


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_labels_0_and_1_read_as_black_and_white(tmp_path, dtype):
    import imageio.v3 as iio  # noqa: PLC0415

    labels = (np.arange(64).reshape(8, 8) % 3 == 0).astype(dtype)
    iio.imwrite(tmp_path / "m.png", labels)
    assert np.array_equal(read_mask(tmp_path / "m.png"), labels.astype(np.float32))
    bits = 8 if dtype == np.uint8 else 16
    level = labels.astype(np.float32) / (2 ** bits - 1)
    write_image(tmp_path / "rgba.png", np.stack([level] * 3 + [np.ones_like(level)], -1), bits=bits)
    assert np.array_equal(read_mask(tmp_path / "rgba.png"), labels.astype(np.float32))


def test_grey_levels_stay_weights(tmp_path):
    """A mask with other levels keeps them: 2/255 is a weight, and so is 1/255 beside it."""
    import imageio.v3 as iio  # noqa: PLC0415

    iio.imwrite(tmp_path / "soft.png", np.array([[0, 1, 2, 255]], dtype=np.uint8))
    assert np.allclose(read_mask(tmp_path / "soft.png"), np.array([[0, 1, 2, 255]]) / 255.0)
    write_image(tmp_path / "float.exr", np.full((2, 2, 1), 0.003, np.float32))  # float: values as they are
    assert np.allclose(read_mask(tmp_path / "float.exr"), 0.003)


def test_a_dataset_with_label_masks_trains_on_its_pixels(tmp_path):
    import imageio.v3 as iio  # noqa: PLC0415

    root = random_views_scene(tmp_path / "scene", {"train": 3})
    meta = json.loads((root / "transforms_train.json").read_text())
    for i, frame in enumerate(meta["frames"]):
        iio.imwrite(root / "train" / f"mask_{i}.png", np.ones((8, 8), np.uint8))
        frame["mask_path"] = f"./train/mask_{i}.png"
    (root / "transforms_train.json").write_text(json.dumps(meta))
    split = load_split(str(root), "train", 1)
    assert split.masks is not None and int(split.masks.min()) == 255


@pytest.mark.parametrize("top, centre", [({}, "its own centre"),
                                         ({"cx": 20.0, "cy": 15.0}, "the principal point's cx 20.0 and cy 15.0 given "
                                                                    "at the top")])
def test_the_shared_focal_warning_names_the_centre_the_fit_uses(tmp_path, top, centre):
    """With cx and cy at the top, the warning said each image gets its own centre, while the fit gives it those."""
    from conftest import sized_frames_dataset  # noqa: PLC0415
    from data_tools.check import check_dataset  # noqa: PLC0415

    root = sized_frames_dataset(tmp_path / "ds", [(40, 30), (40, 20)], {"fl_x": 40.0, "fl_y": 40.0, **top})
    _, warnings = check_dataset(root, log=lambda *a: None)
    shared = [w for w in warnings if "share one focal length" in w]
    assert len(shared) == 1 and f"that focal length and {centre}, right for crops" in shared[0], warnings
