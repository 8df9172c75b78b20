"""SIREN (Sitzmann et al. 2020) through the shared MLP: the init's bounds and variance, the paper's claim that hidden
pre-activations stay N(0, 1)-like in every layer, plain = WN = RWF at step 0, eikonal gradients against finite
differences, the image pipeline's central claim (sine beats ReLU on raw coordinates), config and resume, bad input."""

import json
import math

import pytest
import torch

from rwf_render import cli
from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField, from_dict
from rwf_render.image import ImageConfig, build_model
from rwf_render.layers import glorot_normal, rwf_scale_parameters, siren_uniform
from rwf_render.shape_task import eikonal_loss, sdf_gradient
from tests.test_sdf import assert_grads_match_finite_differences

RAW = EncodingConfig(kind="identity")
TINY_IMAGE = ["--size", "32", "--width", "32", "--depth", "3", "--eval-every", "5", "--quiet"]


@pytest.fixture
def one_thread():
    """One BLAS thread: these nets are tiny, and on a shared 2-core machine two threads can be 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("first,d_in,omega0", [(True, 2, 30.0), (True, 3, 30.0), (False, 256, 30.0),
                                              (False, 64, 5.0)])
def test_init_draws_have_the_papers_bounds_and_variance(first, d_in, omega0):
    """U(-c, c) with c = 1/fan_in (first layer) or sqrt(6/fan_in)/omega0 (later ones); variance c^2/3. With
    2^16 draws the variance estimate's relative std is 0.35 %: a 3 % tolerance fails a wrong bound (Glorot, or the
    omega0 left out) by orders of magnitude and passes by accident with negligible probability."""
    w = siren_uniform(2**16 // d_in, d_in, omega0, first, torch.Generator().manual_seed(0)).double()
    c = 1.0 / d_in if first else math.sqrt(6.0 / d_in) / omega0
    assert w.abs().max() <= c and w.abs().max() > 0.99 * c
    assert w.var().item() == pytest.approx(c * c / 3, rel=0.03)
    assert abs(w.mean().item()) < 4 * c / math.sqrt(3 * w.numel())  # centred: 4 standard errors


def test_the_mlp_draws_siren_weights_zero_biases_and_a_linear_output():
    cfg = MLPConfig(depth=4, width=64, activation="sine", omega0=20.0, param="plain")
    mlp = NeuralField(2, 3, RAW, cfg, seed=1).mlp
    bounds = [1 / 2, math.sqrt(6 / 64) / 20, math.sqrt(6 / 64) / 20, math.sqrt(6 / 64) / 20]
    for layer, c in zip(mlp.layers, bounds):
        assert 0.9 * c < layer.weight.abs().max() <= c
        assert torch.count_nonzero(layer.bias) == 0
    x = torch.rand(8, 2)
    h = x
    for layer in mlp.layers[:-1]:
        h = torch.sin(20.0 * layer(h))  # sin(omega0 (W x + b)) in every hidden layer
    assert torch.allclose(mlp(x), mlp.layers[-1](h), atol=1e-6)  # the output layer stays linear


def _hidden_preactivations(mlp, x):
    """omega0 (W h + b) of every hidden layer, recorded where the MLP's own sine receives it."""
    seen = []
    hook = mlp.act.register_forward_hook(lambda mod, inp, out: seen.append(mod.omega0 * inp[0]))
    with torch.no_grad():
        mlp(x)
    hook.remove()
    return seen


def test_hidden_preactivations_stay_standard_normal_with_siren_init_not_with_glorot():
    """The paper's sec. 3.2 claim: with its init, the input of every hidden sine after the first is close to
    N(0, 1) whatever the depth (6 x 256 here, inputs uniform in [-1, 1]^2). Exactly: its variance v maps to
    2 E[sin^2] = 1 - exp(-2 v), from 1 after layer 1 (uniform phases) to the fixed point v = 0.80 (std 0.89).
    A Glorot draw at omega0 = 30 gives pre-activations with a std of about 20, which sine folds into noise."""
    x = torch.rand(4096, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = MLPConfig(depth=6, width=256, activation="sine", omega0=30.0)
    mlp = NeuralField(2, 1, RAW, cfg, seed=0).mlp
    z = _hidden_preactivations(mlp, x)[1:]  # layers 2..5: inputs are sines (layer 1 spans periods on purpose)
    stds = [t.std().item() for t in z]
    assert all(0.85 < s < 1.15 for s in stds), stds
    assert 0.8 < stds[0] / stds[-1] < 1.2  # layer 2 against layer 5
    for t in z:  # normal-ish: the share within one std of the mean and the kurtosis of a Gaussian
        within = ((t - t.mean()).abs() < t.std()).float().mean().item()
        kurtosis = (((t - t.mean()) / t.std()) ** 4).mean().item()
        assert abs(within - 0.683) < 0.05 and abs(kurtosis - 3.0) < 0.6, (within, kurtosis)
    gen = torch.Generator().manual_seed(0)
    for layer in mlp.layers:  # the naive init: Glorot normal, omega0 still 30
        layer.reset_parameters(glorot_normal(layer.d_out, layer.d_in, gen))
    naive = [t.std().item() for t in _hidden_preactivations(mlp, x)[1:]]
    assert all(s > 5 for s in naive), naive


@pytest.mark.parametrize("in_dim,enc", [(2, RAW), (3, EncodingConfig(kind="fourier", m=8, sigma=1.0))])
def test_plain_wn_rwf_start_from_one_siren_function(in_dim, enc):
    x = torch.rand(64, in_dim, generator=torch.Generator().manual_seed(2))
    nets = {p: NeuralField(in_dim, 3, enc, MLPConfig(depth=4, width=32, activation="sine", param=p), seed=5)
            for p in ("plain", "wn", "rwf")}
    with torch.no_grad():
        out = {p: net(x) for p, net in nets.items()}
    w_plain = [layer.effective_weight() for layer in nets["plain"].mlp.layers]
    for p in ("wn", "rwf"):
        assert torch.allclose(out[p], out["plain"], rtol=1e-5, atol=1e-6), p
        for w, layer in zip(w_plain, nets[p].mlp.layers):
            assert torch.allclose(layer.effective_weight(), w, rtol=1e-6, atol=1e-9)
    rwf_v = nets["rwf"].mlp.layers[1].v  # V = W0 / s: not W0 itself
    assert not torch.allclose(rwf_v, w_plain[1])


def _sine_rwf(omega0=30.0):
    cfg = MLPConfig(depth=3, width=16, activation="sine", omega0=omega0, param="rwf")
    return NeuralField(3, 1, RAW, cfg, seed=1).double()


def test_spatial_and_eikonal_gradients_through_a_sine_rwf_mlp_equal_finite_differences():
    model = _sine_rwf()
    x = (torch.rand(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5).requires_grad_()
    h = 1e-6
    grad = sdf_gradient(model(x)[:, 0], x)
    with torch.no_grad():
        fd = torch.stack([(model(x + h * e)[:, 0] - model(x - h * e)[:, 0]) / (2 * h)
                          for e in torch.eye(3, dtype=torch.float64)], -1)
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-7)

    def loss():
        return eikonal_loss(sdf_gradient(model(x)[:, 0], x, create_graph=True))

    model.zero_grad()
    loss().backward()  # second derivatives through sin, the scale s and the direction V
    params = list(rwf_scale_parameters(model)) + [model.mlp.layers[0].v, model.mlp.layers[1].v,
                                                  model.mlp.layers[1].bias]
    assert_grads_match_finite_differences(loss, params, h=h, rel=1e-4, abs_tol=1e-7)


def test_sine_beats_relu_on_raw_coordinates_at_equal_steps(tmp_path, one_thread):
    """SIREN's central claim on the built-in photo: same net, same steps, no encoding; held-out PSNR."""
    psnr = {}
    for act in ("sine", "relu"):
        run = tmp_path / act
        assert cli.main(["fit", "image", "--out", str(run), "--activation", act, "--encoding", "identity",
                         "--size", "64", "--width", "128", "--steps", "300", "--eval-every", "300", "--param",
                         "plain", "--lr", "1e-3", "--quiet"]) == 0
        psnr[act] = json.loads((run / "metrics.json").read_text())["psnr"]
    assert psnr["sine"] > psnr["relu"] + 3.0, psnr  # measured: about 21 dB against 15 dB


def test_sine_run_saves_omega0_and_raw_coordinates_eval_render_and_old_configs_load(tmp_path, one_thread, capsys):
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--out", str(run), "--activation", "sine", "--steps", "10", *TINY_IMAGE]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["mlp"]["activation"] == "sine" and cfg["mlp"]["omega0"] == 30.0
    assert cfg["encoding"]["kind"] == "identity"  # no --encoding: raw coordinates
    metrics = json.loads((run / "metrics.json").read_text())
    del cfg["mlp"]["omega0"]  # a run saved before the key existed: loads with the default
    (run / "config.json").write_text(json.dumps(cfg))
    assert from_dict(MLPConfig, cfg["mlp"]).omega0 == 30.0
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 0  # the rebuilt model reproduces metrics.json
    out = capsys.readouterr()
    assert "differ" not in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["psnr"] == pytest.approx(metrics["psnr"], abs=1e-6)
    assert cli.main(["render", str(run), "--scale", "2"]) == 0
    assert (run / "render_x2.png").is_file()
    again = ImageConfig.from_dict({**cfg, "mlp": {**cfg["mlp"], "omega0": 12.5}})
    assert again.mlp.omega0 == 12.5 and build_model(again, 3).mlp.act.omega0 == 12.5
    assert ImageConfig.from_dict(again.to_dict()).mlp.omega0 == 12.5
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == metrics["steps"] == 10


def test_a_fourier_encoding_is_kept_with_sine(tmp_path, one_thread):
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--out", str(run), "--activation", "sine", "--encoding", "fourier",
                     "--features", "8", "--steps", "2", *TINY_IMAGE]) == 0
    assert json.loads((run / "config.json").read_text())["encoding"]["kind"] == "fourier"


def test_resume_of_a_sine_run_rebuilds_its_omega0(tmp_path, one_thread):
    """10 steps + resume to 20 equals 20 straight steps only if the resumed model has the saved omega0 (20, not
    the default 30): the checkpoint holds weights, the config the function they are weights of."""
    common = ["--activation", "sine", "--omega0", "20", *TINY_IMAGE, "--deterministic", "--ckpt-every", "5"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["fit", "image", "--out", str(a), "--steps", "20", *common]) == 0
    assert cli.main(["fit", "image", "--out", str(b), "--steps", "10", *common]) == 0
    assert cli.main(["fit", "image", "--out", str(b), "--resume", "--steps", "20", "--quiet"]) == 0
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert mb["steps"] == 20 and mb["psnr"] == pytest.approx(ma["psnr"], abs=1e-5)
    sa, sb = (torch.load(r / "checkpoint.pt", weights_only=True)["model"] for r in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_refuses_another_omega0(tmp_path, one_thread, capsys):
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--out", str(run), "--activation", "sine", "--steps", "2", *TINY_IMAGE]) == 0
    capsys.readouterr()
    assert cli.main(["fit", "image", "--out", str(run), "--resume", "--steps", "4", "--omega0", "25"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--omega0 (run: 30.0, given: 25.0)" in err[0]


def test_sdf_fit_with_sine_and_mesh_export(tmp_path, one_thread):
    run = tmp_path / "run"
    assert cli.main(["fit", "sdf", "--out", str(run), "--activation", "sine", "--steps", "5", "--width", "32",
                     "--eval-every", "5", "--mesh-res", "24", "--preview-res", "16", "--eval-points", "2048",
                     "--metric-points", "2000", "--pool", "2048", "--batch", "256", "--eikonal", "0.1",
                     "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["mlp"]["activation"], cfg["mlp"]["omega0"], cfg["encoding"]["kind"]) == ("sine", 30.0, "identity")
    assert cli.main(["export", "mesh", str(run), "--res", "24", "--out", str(tmp_path / "m.ply")]) == 0


@pytest.mark.parametrize("kind,extra", [("image", ["--omega0", "0"]), ("image", ["--omega0", "-3"]),
                                        ("image", ["--omega0", "nan"]), ("image", ["--omega0", "inf"]),
                                        ("sdf", ["--omega0", "0"])])
def test_bad_omega0_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, kind, extra):
    run = tmp_path / "run"
    assert cli.main(["fit", kind, "--out", str(run), "--steps", "2", "--quiet", "--activation", "sine", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--omega0" in err[0], err
    assert not run.exists()


def test_omega0_without_sine_is_refused(tmp_path, one_thread, capsys):
    """An option that cannot act is refused, not ignored (it used to warn and fit a ReLU network anyway)."""
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--out", str(run), "--omega0", "2", "--steps", "1", "--features", "8",
                     *TINY_IMAGE]) == 2
    assert "--omega0 applies to --activation sine only, not relu" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("value", [-1.0, 0.0, "30"])
def test_a_hand_edited_omega0_is_refused_naming_the_config(tmp_path, one_thread, capsys, value):
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--out", str(run), "--activation", "sine", "--steps", "2", *TINY_IMAGE]) == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["mlp"]["omega0"] = value
    (run / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0] and "omega0" in err[0], err


def test_sine_runs_default_to_sirens_learning_rate_and_an_explicit_lr_wins(tmp_path, one_thread):
    """At the shared default 1e-3 a 5 x 256 SIREN diverged on the 256 px photo (benchmarks/siren.py): a sine run
    without --lr now trains at SIREN's 1e-4; ReLU runs keep 1e-3; a given --lr is kept."""
    cases = {"sine": (["--activation", "sine"], 1e-4), "relu": ([], 1e-3),
             "sine-given": (["--activation", "sine", "--lr", "5e-4"], 5e-4)}
    for name, (extra, want) in cases.items():
        run = tmp_path / name
        assert cli.main(["fit", "image", "--out", str(run), "--steps", "2", *extra, *TINY_IMAGE]) == 0
        assert json.loads((run / "config.json").read_text())["train"]["lr"] == want, name
