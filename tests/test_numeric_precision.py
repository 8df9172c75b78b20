"""Small numerical contracts found by checking against independent references: the positional encoding keeps a
float64 input's precision, SSIM takes a 2-D grey image, PSNR refuses integer images instead of scoring them on the
wrong scale."""

import math

import numpy as np
import pytest
import torch

from rwf_render.encodings import PositionalEncoding
from rwf_render.metrics import psnr, ssim


def test_positional_encoding_float64_matches_the_definition():
    enc = PositionalEncoding(3, n_freqs=8, include_input=False)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-4, 4, (500, 3)))
    arg = x.numpy()[..., None] * (math.pi * 2.0 ** np.arange(8))  # NeRF eq. 4, in float64
    want = np.stack([np.sin(arg), np.cos(arg)], -1).reshape(500, -1)
    got = enc(x)
    assert got.dtype == torch.float64
    assert np.abs(got.numpy() - want).max() < 1e-12  # the float32 frequencies gave 2.5e-6 here
    assert enc(x.float()).dtype == torch.float32  # float32 input: the float32 buffer, no promotion


def test_integrated_positional_encoding_float64_variance():
    enc = PositionalEncoding(1, n_freqs=4, include_input=False)
    x = torch.tensor([[0.3]], dtype=torch.float64)
    cov = torch.tensor([[[1e-4]]], dtype=torch.float64)
    f = math.pi * 2.0 ** np.arange(4)
    damp = np.exp(-0.5 * 1e-4 * f**2)
    want = np.stack([np.sin(0.3 * f) * damp, np.cos(0.3 * f) * damp], -1).reshape(-1)
    assert np.abs(enc(x, cov).numpy().reshape(-1) - want).max() < 1e-13


def test_ssim_of_small_images_is_finite_down_to_three_pixels():
    """The window shrinks to the image (odd sides): a 5 x 6 or a 3 px image still scores, close to 1 for a slightly
    noisy copy; below 3 px there is no window and the score is NaN, as documented."""
    rng = np.random.default_rng(3)
    for shape in ((5, 6, 3), (4, 4), (3, 7)):
        a = rng.random(shape)
        b = np.clip(a + rng.normal(0, 0.01, a.shape), 0, 1)
        assert 0.95 < ssim(a, b) < 1.0, shape
    assert math.isnan(ssim(np.zeros((2, 9)), np.zeros((2, 9))))


def test_ssim_of_a_two_dimensional_grey_image_equals_the_one_channel_score():
    rng = np.random.default_rng(1)
    a = rng.random((24, 20))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(ssim(a[..., None], b[..., None]), abs=1e-15)
    assert ssim(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("to", [np.asarray, torch.from_numpy])
def test_psnr_refuses_integer_images(to):
    a = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="floating-point"):
        psnr(to(a), to(a.astype(np.float32) / 255))
    with pytest.raises(TypeError, match="floating-point"):  # the target too: 0..255 against [0, 1] is ~48 dB off
        psnr(to(a.astype(np.float32) / 255), to(a))
    assert psnr(to(a.astype(np.float32) / 255), to(a.astype(np.float32) / 255)) == math.inf
