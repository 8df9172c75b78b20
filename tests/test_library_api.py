"""The public Python API as a library user's own code uses it (a helper's hunt): defaults not shared between
models, options checked instead of ignored, the layers' common start kept at a zero weight, half precision and
torch.func working, optimizer groups without duplicates."""

import math

import pytest
import torch

import rwf_render
from rwf_render.encodings import GaussianFourierFeatures, HashGrid, PositionalEncoding, SphericalHarmonics
from rwf_render.fields import MLP, EncodingConfig, MLPConfig, NeuralField
from rwf_render.layers import FactorizedLinear, PlainLinear, WeightNormLinear, param_groups


def test_models_built_with_the_defaults_do_not_share_their_config():
    a = NeuralField(2, 3)
    a.mlp.cfg.param, a.mlp.cfg.width = "rwf", 32
    b = NeuralField(2, 3)
    assert b.mlp.cfg.param == "plain" and b.mlp.cfg.width == MLPConfig().width
    assert type(b.mlp.layers[0]) is PlainLinear
    assert MLP(3, 1).cfg is not MLP(3, 1).cfg


@pytest.mark.parametrize("skips", [(0,), (4,), (-1,), (2.7,), (True,)])
def test_skips_outside_the_hidden_layers_are_refused(skips):
    with pytest.raises(ValueError, match="skips must be layer indices 1 .. depth - 1 = 3"):
        MLP(3, 1, MLPConfig(depth=4, skips=skips))
    assert MLP(3, 1, MLPConfig(depth=4, skips=(2,))).skips == (2,)


def test_the_three_layers_start_alike_from_a_zero_weight():
    w0 = torch.zeros(2, 3)
    x = torch.randn(5, 3, requires_grad=True)
    for layer in (PlainLinear(3, 2, w0=w0), WeightNormLinear(3, 2, w0=w0), FactorizedLinear(3, 2, w0=w0)):
        y = layer(x)
        y.sum().backward()
        assert torch.equal(y, torch.zeros(5, 2)), type(layer).__name__
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters()), type(layer).__name__


@pytest.mark.parametrize("mu, sigma", [(100.0, 0.1), (float("nan"), 0.1), (1.0, float("inf")), (1.0, -0.1)])
def test_rwf_scales_float32_cannot_hold_are_refused(mu, sigma):
    with pytest.raises(ValueError, match="RWF scales"):
        FactorizedLinear(3, 2, mu=mu, sigma=sigma)


def test_reset_parameters_without_arguments():
    torch.manual_seed(0)
    for layer in (PlainLinear(4, 3), WeightNormLinear(4, 3), FactorizedLinear(4, 3)):
        before = layer.effective_weight().clone()
        layer.reset_parameters()  # nn.Linear's convention, which meta-device construction relies on
        after = layer.effective_weight()
        assert after.shape == (3, 4) and not torch.equal(before, after) and torch.isfinite(after).all()


def test_positional_encoding_of_a_double_module_is_exact():
    enc = PositionalEncoding(2, n_freqs=16, include_input=False).double()
    x = torch.rand(100, 2, dtype=torch.float64) * 2 - 1
    arg = x[..., None] * (math.pi * 2.0 ** torch.arange(16, dtype=torch.float64))
    want = torch.stack([torch.sin(arg), torch.cos(arg)], -1).flatten(-3)
    assert (enc(x) - want).abs().max() < 1e-9  # 2.9e-3 with the float32-rounded buffer


@pytest.mark.parametrize("shape", [(5, 4), (6,), (5, 2)])
def test_spherical_harmonics_take_three_dimensional_directions(shape):
    with pytest.raises(ValueError, match=r"3-D directions"):
        SphericalHarmonics(3)(torch.randn(*shape))


@pytest.mark.parametrize("kind", ["fourier", "hashgrid", "pe"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_fields_run(kind, dtype):
    field = NeuralField(3, 2, EncodingConfig(kind=kind, m=16, levels=4, log2_size=10, max_res=64),
                        MLPConfig(width=16, depth=2)).to(dtype)
    x = torch.rand(7, 3, dtype=dtype)
    y = field(x)
    assert y.dtype == dtype and y.shape == (7, 2) and torch.isfinite(y.float()).all()
    reference = NeuralField(3, 2, EncodingConfig(kind=kind, m=16, levels=4, log2_size=10, max_res=64),
                            MLPConfig(width=16, depth=2))
    assert (y.float() - reference(x.float())).abs().max() < 0.1  # the same function, to half precision


def test_hash_grid_under_torch_func():
    enc = HashGrid(3, levels=4, level_features=2, log2_size=10, base_res=4, max_res=64)
    with torch.no_grad():
        enc.table.normal_(0, 0.1)
    x = torch.rand(6, 3)
    per_point = torch.vmap(lambda p: enc(p[None])[0])(x)
    assert torch.allclose(per_point, enc(x), atol=1e-6)
    _, tangent = torch.func.jvp(lambda p: enc(p), (x,), (torch.ones_like(x),))
    assert tangent.shape == (6, enc.out_dim) and torch.isfinite(tangent).all()
    params = dict(enc.named_parameters())
    grads = torch.func.grad(lambda p, q: torch.func.functional_call(enc, p, (q,)).sum())(params, x)
    assert grads["table"].abs().sum() > 0


def test_param_groups_list_each_parameter_once():
    class Owned(torch.nn.Module):
        param_group = {"name": "mine", "lr": 1e-4}

        def __init__(self):
            super().__init__()
            self.inner = FactorizedLinear(3, 3)

    model = torch.nn.Sequential(Owned(), FactorizedLinear(3, 2))
    model[1].scale.requires_grad_(False)  # a frozen scale is trained by no group
    groups = param_groups(model, 1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert id(model[0].inner.scale) in {id(p) for g in groups if g["name"] == "mine" for p in g["params"]}
    assert id(model[1].scale) not in ids
    torch.optim.Adam(groups)  # refused "some parameters appear in more than one parameter group" before


def test_hash_grid_is_exported():
    assert rwf_render.HashGrid is HashGrid and "HashGrid" in rwf_render.__all__
    assert isinstance(GaussianFourierFeatures(3, 4), torch.nn.Module)
