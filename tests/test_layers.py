"""RWF layer: same function as the plain layer at init, closed-form gradients, the self-adaptive learning rate."""

import math

import pytest
import torch

from rwf_render import MLP, FactorizedLinear, MLPConfig, PlainLinear, WeightNormLinear, param_groups
from rwf_render.layers import glorot_normal, make_linear

torch.set_default_dtype(torch.float32)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_rwf_at_init_computes_the_plain_function_with_w0():
    plain = PlainLinear(64, 48, generator=_gen(3))
    rwf = FactorizedLinear(64, 48, generator=_gen(3), scale_generator=_gen(99))
    x = torch.randn(1000, 64)
    assert torch.max(torch.abs(rwf.effective_weight() - plain.weight)) <= 1e-6
    assert torch.max(torch.abs(rwf(x) - plain(x))) <= 1e-6
    # the factors themselves are far from W0: V = W0 / s with s = exp(N(1, 0.1)) ~ e
    assert torch.allclose(rwf.v * rwf.scale[:, None], plain.weight, atol=1e-7)
    assert not torch.allclose(rwf.v, plain.weight, atol=1e-3)


def test_wn_at_init_computes_the_plain_function_and_keeps_row_norm_g():
    plain = PlainLinear(32, 16, generator=_gen(1))
    wn = WeightNormLinear(32, 16, generator=_gen(1))
    x = torch.randn(100, 32)
    assert torch.max(torch.abs(wn(x) - plain(x))) <= 1e-6
    with torch.no_grad():
        wn.v.mul_(torch.rand(16, 1) * 3 + 0.1)  # rescaling v leaves W unchanged
    assert torch.allclose(wn.effective_weight().norm(dim=1), wn.g.abs(), atol=1e-6)
    assert torch.max(torch.abs(wn(x) - plain(x))) <= 1e-5


def test_scales_follow_exp_normal_mu_sigma():
    layer = FactorizedLinear(4, 20000, mu=1.0, sigma=0.1, generator=_gen(0), scale_generator=_gen(1))
    g = torch.log(layer.scale.detach())
    assert abs(g.mean().item() - 1.0) < 0.005
    assert abs(g.std().item() - 0.1) < 0.005
    logl = FactorizedLinear(4, 20000, mu=0.5, sigma=0.2, log_scale=True, generator=_gen(0), scale_generator=_gen(1))
    assert abs(logl.scale.detach().mean().item() - 0.5) < 0.01  # the parameter is g itself
    assert torch.allclose(logl.s(), torch.exp(logl.scale))


def test_glorot_normal_std():
    w = glorot_normal(300, 500, _gen(0))
    assert abs(w.std().item() - math.sqrt(2 / 800)) < 0.001


@pytest.mark.parametrize("log_scale", [False, True])
def test_rwf_gradients_match_closed_forms(log_scale):
    torch.manual_seed(0)
    layer = FactorizedLinear(7, 5, log_scale=log_scale).double()
    x = torch.randn(11, 7, dtype=torch.float64)
    c = torch.randn(11, 5, dtype=torch.float64)
    (layer(x) * c).sum().backward()
    # dL/dW for the same W, through a plain matmul
    w = layer.effective_weight().detach().clone().requires_grad_(True)
    (torch.nn.functional.linear(x, w, layer.bias.detach()) * c).sum().backward()
    dw, s, v = w.grad, layer.s().detach(), layer.v.detach()
    ds = (v * dw).sum(dim=1)  # dL/ds_k = v_k . dL/dw_k
    expected_scale_grad = ds * s if log_scale else ds  # chain rule through s = exp(g)
    assert torch.allclose(layer.scale.grad, expected_scale_grad, atol=1e-12)
    assert torch.allclose(layer.v.grad, s[:, None] * dw, atol=1e-12)  # dL/dV = diag(s) dL/dW


def test_one_sgd_step_moves_w_by_the_self_adaptive_rate():
    """Paper, theorem 2: a step of size eta on (s, v) changes w_k = s_k v_k by
    -eta (s_k^2 g_k + (v_k . g_k) v_k) + O(eta^2), g_k = dL/dw_k. Along v_k the rate is exactly (s_k^2 + ||v_k||^2)."""
    torch.manual_seed(1)
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randn(64, 4, dtype=torch.float64)

    def step_error(eta):
        layer = FactorizedLinear(6, 4, generator=_gen(5), scale_generator=_gen(6)).double()
        w_before = layer.effective_weight().detach().clone()
        loss = ((layer(x) - y) ** 2).mean()
        loss.backward()
        wp = w_before.clone().requires_grad_(True)
        ((torch.nn.functional.linear(x, wp, layer.bias.detach()) - y) ** 2).mean().backward()
        g, s, v = wp.grad, layer.scale.detach().clone(), layer.v.detach().clone()
        opt = torch.optim.SGD(layer.parameters(), lr=eta)
        opt.step()
        dw = layer.effective_weight().detach() - w_before
        predicted = -eta * (s[:, None] ** 2 * g + (v * g).sum(1, keepdim=True) * v)
        vhat = v / v.norm(dim=1, keepdim=True)
        along = (vhat * dw).sum(1)
        along_pred = -eta * (s**2 + (v**2).sum(1)) * (vhat * g).sum(1)
        return (dw - predicted).norm() / predicted.norm(), (along - along_pred).abs().max() / along_pred.abs().max()

    e1, a1 = step_error(1e-3)
    e2, a2 = step_error(5e-4)
    assert e1 < 1e-2 and a1 < 1e-2
    assert 1.8 < e1 / e2 < 2.2  # the residual is second order: halving eta halves the relative error
    assert 1.8 < a1 / a2 < 2.2


def test_param_switch_and_scale_group():
    for param, cls in [("plain", PlainLinear), ("wn", WeightNormLinear), ("rwf", FactorizedLinear)]:
        assert type(make_linear(3, 4, param)) is cls
    with pytest.raises(ValueError):
        make_linear(3, 4, "sine")
    mlp = MLP(8, 2, MLPConfig(depth=3, width=16, param="rwf"))
    groups = {g["name"]: g for g in param_groups(mlp, lr=1e-3, scale_lr=1e-2)}
    assert {id(p) for p in groups["rwf_scales"]["params"]} == {id(layer.scale) for layer in mlp.layers}
    assert groups["rwf_scales"]["lr"] == 1e-2
    n_all = sum(p.numel() for p in mlp.parameters())
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == n_all
    assert [g["name"] for g in param_groups(MLP(8, 2, MLPConfig(param="plain")), 1e-3)] == ["main"]


def test_plain_wn_rwf_mlps_with_one_seed_start_from_one_function():
    x = torch.randn(256, 10)
    outs = {p: MLP(10, 3, MLPConfig(depth=4, width=32, param=p, skips=(2,)), seed=4)(x) for p in ("plain", "wn", "rwf")}
    assert torch.max(torch.abs(outs["rwf"] - outs["plain"])) <= 1e-5
    assert torch.max(torch.abs(outs["wn"] - outs["plain"])) <= 1e-5
    other = MLP(10, 3, MLPConfig(depth=4, width=32, param="plain", skips=(2,)), seed=5)(x)
    assert torch.max(torch.abs(other - outs["plain"])) > 1e-3


def test_rwf_layer_overhead_is_only_the_elementwise_product():
    """The factorized layer's forward is one matmul with diag(s) V: same output as F.linear on that product."""
    layer = FactorizedLinear(256, 256)
    x = torch.randn(512, 256)
    w = layer.scale[:, None] * layer.v
    assert torch.equal(layer(x), torch.nn.functional.linear(x, w, layer.bias))
    assert "param=rwf" in repr(layer)


def test_rwf_state_says_which_scale_it_holds():
    # The key `scale` holds s for one layer and g = log s for the other: loading one into the other would give
    # W = g V (or exp(s) V) without a word. The state carries the flag, and a mismatch is refused.
    torch.manual_seed(0)
    plain_scale, log_scale = FactorizedLinear(3, 4), FactorizedLinear(3, 4, log_scale=True)
    with pytest.raises(ValueError, match="log_scale=False"):
        log_scale.load_state_dict(plain_scale.state_dict())
    with pytest.raises(ValueError, match="log_scale=True"):
        plain_scale.load_state_dict(log_scale.state_dict())
    twin = FactorizedLinear(3, 4, log_scale=True, mu=0.0)
    twin.load_state_dict(log_scale.state_dict())
    x = torch.randn(5, 3)
    assert torch.equal(twin(x), log_scale(x))
    # A state saved before the flag was (no "_extra_state") still loads, as the CLI's config.json says which.
    legacy = {k: v for k, v in plain_scale.state_dict().items() if k != "_extra_state"}
    assert set(legacy) == {"scale", "v", "bias"}
    loaded = FactorizedLinear(3, 4, mu=0.0)
    loaded.load_state_dict(legacy)
    assert torch.equal(loaded(x), plain_scale(x))


def test_a_run_whose_checkpoint_holds_the_other_kind_of_scale_is_one_error(tmp_path, capsys):
    # The review of the change above: render, eval and view caught the loader's RuntimeError but not this
    # ValueError, and showed a traceback.
    from conftest import one_cli_error
    from rwf_render import cli
    from test_shape_image_bad_input_more import IMG_TINY

    runs = {kind: tmp_path / kind for kind in ("s", "log_s")}
    assert cli.main(["fit", "image", "--size", "16", "--out", str(runs["s"]), *IMG_TINY]) == 0
    assert cli.main(["fit", "image", "--size", "16", "--out", str(runs["log_s"]), "--rwf-log-scale", *IMG_TINY]) == 0
    (runs["s"] / "checkpoint.pt").write_bytes((runs["log_s"] / "checkpoint.pt").read_bytes())
    for command in (["render", runs["s"], "--out", tmp_path / "r.png"], ["eval", runs["s"]]):
        line = one_cli_error(capsys, command)
        assert "does not match this run's config.json" in line and "log_scale=True" in line
