"""Loader details of rwf_render.nerf_data."""

import numpy as np

from rwf_render.nerf_data import downscale_image


def test_downscaled_rgba_composites_like_the_mean_of_its_composited_pixels():
    """`--downscale` averaged straight colour: the colour of transparent pixels bled into edges (a red edge over
    transparent green came out brown on white). Box filtering must commute with compositing on any background."""
    rng = np.random.default_rng(0)
    rgba = rng.random((9, 12, 4)).astype(np.float32)
    rgba[:3, :, 3] = 0.0  # a fully transparent block row, with arbitrary colour underneath
    rgba[3:6, :, 3] = rng.choice([0.0, 1.0], size=(3, 12))  # hard edges inside blocks
    small = downscale_image(rgba, 3)
    assert small.shape == (3, 4, 4) and small.dtype == np.float32
    for bg in (np.zeros(3), np.ones(3), rng.random(3)):
        composited = rgba[..., :3] * rgba[..., 3:] + bg * (1 - rgba[..., 3:])
        expected = composited.reshape(3, 3, 4, 3, 3).mean(axis=(1, 3))
        got = small[..., :3] * small[..., 3:] + bg * (1 - small[..., 3:])
        assert np.allclose(got, expected, atol=1e-6)
    assert np.allclose(small[..., 3], rgba[..., 3].reshape(3, 3, 4, 3).mean(axis=(1, 3)), atol=1e-7)
    assert np.all((small[..., :3] >= 0) & (small[..., :3] <= 1))


def test_downscaled_rgb_and_masks_are_plain_block_means():
    rng = np.random.default_rng(1)
    for channels in (1, 3):
        x = rng.random((8, 10, channels)).astype(np.float32)
        assert np.allclose(downscale_image(x, 2), x.reshape(4, 2, 5, 2, channels).mean(axis=(1, 3)), atol=1e-7)
