"""Encodings: shapes, frequencies, closed forms and seed determinism; tiny-cuda-nn agreement when present."""

import importlib.util
import math

import pytest
import torch

from rwf_render import GaussianFourierFeatures, PositionalEncoding, SphericalHarmonics, make_encoding
from rwf_render.encodings import HashGrid


def test_fourier_features_closed_form_and_out_dim():
    enc = GaussianFourierFeatures(2, m=16, sigma=10.0, generator=torch.Generator().manual_seed(0))
    x = torch.rand(50, 2)
    out = enc(x)
    assert enc.out_dim == 32 and out.shape == (50, 32)
    proj = (2 * math.pi) * (x.double() @ enc.B.double().T)
    assert torch.allclose(out[:, :16].double(), torch.sin(proj), atol=1e-4)
    assert torch.allclose(out[:, 16:].double(), torch.cos(proj), atol=1e-4)
    assert torch.allclose(out[:, :16] ** 2 + out[:, 16:] ** 2, torch.ones(50, 16), atol=1e-5)
    assert GaussianFourierFeatures(3, m=4, include_input=True).out_dim == 11


def test_fourier_features_keep_float32_under_bfloat16_autocast():
    """NeRF training runs the field under bfloat16 autocast on CUDA (CPU autocast has the same rule for matmul):
    the projection x B^T in bfloat16 put high-frequency features off by up to 1.8 (of a range of 2)."""
    enc = GaussianFourierFeatures(3, m=128, sigma=8.0, include_input=True, generator=torch.Generator().manual_seed(0))
    x, cov = torch.rand(4096, 3), torch.eye(3).expand(4096, 3, 3) * 1e-4
    ref, ref_cov = enc(x), enc(x, cov)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.rand(4, 3) @ torch.rand(3, 4)).dtype == torch.bfloat16  # autocast is on for matmul
        out, out_cov = enc(x), enc(x, cov)
    assert out.dtype == torch.float32 and torch.equal(out, ref) and torch.equal(out_cov, ref_cov)


def test_fourier_frequency_std_is_sigma_and_fixed_unless_trainable():
    enc = GaussianFourierFeatures(2, m=20000, sigma=12.0, generator=torch.Generator().manual_seed(1))
    assert abs(enc.B.std().item() - 12.0) < 0.2
    assert "B" in dict(enc.named_buffers()) and not list(enc.parameters())
    trainable = GaussianFourierFeatures(2, m=8, trainable=True)
    assert [n for n, _ in trainable.named_parameters()] == ["B"]


def test_fourier_feature_has_its_frequency():
    """A feature sin(2 pi b x) sampled on [0, 1) has its FFT peak at bin b (the 2-pi convention)."""
    enc = GaussianFourierFeatures(1, m=3, sigma=1.0)
    with torch.no_grad():
        enc.B.copy_(torch.tensor([[3.0], [17.0], [40.0]]))
    x = torch.arange(256, dtype=torch.float64)[:, None] / 256
    feats = enc.double()(x)
    peaks = torch.fft.rfft(feats[:, :3], dim=0).abs().argmax(dim=0)
    assert peaks.tolist() == [3, 17, 40]


def test_fourier_seed_determinism():
    a = GaussianFourierFeatures(2, m=8, generator=torch.Generator().manual_seed(7)).B
    b = GaussianFourierFeatures(2, m=8, generator=torch.Generator().manual_seed(7)).B
    c = GaussianFourierFeatures(2, m=8, generator=torch.Generator().manual_seed(8)).B
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_positional_encoding_layout_and_frequencies():
    enc = PositionalEncoding(3, n_freqs=4, include_input=True)
    assert enc.out_dim == 3 + 3 * 4 * 2
    x = torch.rand(10, 3) * 2 - 1
    out = enc(x)
    assert out.shape == (10, enc.out_dim)
    assert torch.equal(out[:, :3], x)
    body = out[:, 3:].reshape(10, 3, 4, 2)  # (dim, octave, sin/cos), tiny-cuda-nn's layout
    for k in range(4):
        assert torch.allclose(body[:, :, k, 0], torch.sin(2**k * math.pi * x), atol=1e-5)
        assert torch.allclose(body[:, :, k, 1], torch.cos(2**k * math.pi * x), atol=1e-5)


def _sphere_points(n):
    """Fibonacci-lattice points on the unit sphere: a near-uniform quadrature rule."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = torch.sqrt(1 - z**2)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def test_spherical_harmonics_are_orthonormal():
    d = _sphere_points(200_000)
    y = SphericalHarmonics(degree=4).double()(d)
    assert y.shape == (200_000, 25)
    gram = 4 * math.pi * (y.T @ y) / d.shape[0]
    assert torch.allclose(gram, torch.eye(25, dtype=torch.float64), atol=2e-3)


def test_spherical_harmonics_addition_theorem_and_normalization():
    """sum_m Y_lm(d)^2 = (2l + 1) / (4 pi) for every direction d; inputs need not be unit length."""
    d = torch.randn(1000, 3, dtype=torch.float64) * 5
    y = SphericalHarmonics(degree=4).double()(d)
    start = 0
    for l in range(5):
        band = y[:, start:start + 2 * l + 1]
        assert torch.allclose((band**2).sum(1), torch.full((1000,), (2 * l + 1) / (4 * math.pi),
                                                          dtype=torch.float64), atol=1e-10)
        start += 2 * l + 1
    assert SphericalHarmonics(degree=2).out_dim == 9
    with pytest.raises(ValueError):
        SphericalHarmonics(degree=5)


def test_make_encoding_and_tcnn_fallback_warns():
    for kind, dim, out in [("fourier", 2, 512), ("pe", 3, 60), ("sh", 3, 16), ("identity", 3, 3)]:
        assert make_encoding(kind, dim).out_dim == out
    if importlib.util.find_spec("tinycudann") is None or not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="tcnn"):
            enc = PositionalEncoding(3, 4, backend="tcnn")
        assert enc.backend == "torch" and "backend=torch" in repr(enc)


@pytest.mark.skipif(importlib.util.find_spec("tinycudann") is None, reason="tinycudann is not installed")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="tinycudann needs a CUDA device")
def test_tcnn_backend_matches_torch():
    x = torch.rand(4096, 3, device="cuda") * 2 - 1
    pe_t = PositionalEncoding(3, 6, backend="torch").cuda()
    pe_c = PositionalEncoding(3, 6, backend="tcnn").cuda()
    assert pe_c.backend == "tcnn"
    assert torch.allclose(pe_c(x), pe_t(x), atol=1e-3)  # tcnn uses fast __sinf
    sh_t = SphericalHarmonics(3, backend="torch").cuda()
    sh_c = SphericalHarmonics(3, backend="tcnn").cuda()
    assert torch.allclose(sh_c(x), sh_t(x), atol=1e-4)
    hg_t = HashGrid(3, levels=8, log2_size=14, base_res=16, max_res=256).cuda()
    with torch.no_grad():
        hg_t.table.uniform_(-1.0, 1.0)
    hg_c = HashGrid(3, levels=8, log2_size=14, base_res=16, max_res=256, backend="tcnn").cuda()
    assert hg_c.backend == "tcnn"
    hg_c.load_state_dict(hg_t.state_dict())  # one table layout on both backends
    u = (x + 1) / 2
    assert torch.allclose(hg_c(u), hg_t(u), atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA autocast cannot run here")
def test_fourier_features_and_a_nerf_render_keep_float32_under_cuda_autocast():
    """The NeRF fit's own setting on a GPU: bfloat16 autocast on CUDA. The features equal float32's exactly and a
    render of a fresh field agrees with float32 (the CPU twin of this check is in test_nerf.py)."""
    from rwf_render.nerf_field import NeRFFieldConfig  # noqa: PLC0415
    from rwf_render.nerf_render import NeRFModel, RenderConfig  # noqa: PLC0415

    enc = GaussianFourierFeatures(3, m=128, sigma=8.0, generator=torch.Generator().manual_seed(0)).cuda()
    x = torch.rand(4096, 3, device="cuda")
    ref = enc(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = enc(x)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-5)
    torch.manual_seed(0)
    model = NeRFModel([-1, -1, -1, 1, 1, 1], NeRFFieldConfig(), RenderConfig(grid_resolution=16, sampler="dense",
                                                                             steps_per_diagonal=256), "learned").cuda()
    rays_o = (torch.tensor([[0.0, 0.0, -3.0]]).repeat(512, 1) + torch.randn(512, 3) * 0.1).cuda()
    rays_d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0]]) + torch.randn(512, 3) * 0.2, dim=1).cuda()
    want = model.render_rays(rays_o, rays_d, train=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = model.render_rays(rays_o, rays_d, train=True)
    assert (got["rgb"].float() - want["rgb"]).abs().max() < 1.5e-3
    assert (got["depth"].float() - want["depth"]).abs().max() < 5e-3


@pytest.mark.parametrize("include_input", [True, False])
@pytest.mark.parametrize("shape", [(257, 3), (4, 5, 3), (3,), (0, 3)])
def test_fourier_features_without_autograd_are_the_same_floats(include_input, shape):
    """Without autograd the features are written into one output (no concatenation); the same floats as the path
    autograd takes, for every input shape and precision, and under inference mode."""
    enc = GaussianFourierFeatures(3, 13, 6.0, include_input=include_input)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    slow = {}
    for dtype in (torch.float32, torch.float64, torch.float16):
        xi = x.to(dtype)
        with torch.no_grad():
            fast = enc(xi)
        slow[dtype] = enc(xi.clone().requires_grad_(True)).detach()
        assert fast.shape == (*shape[:-1], 13 * 2 + (3 if include_input else 0)) and fast.dtype == dtype
        assert torch.equal(fast, slow[dtype])
    with torch.inference_mode():
        assert torch.equal(enc(x), slow[torch.float32])
