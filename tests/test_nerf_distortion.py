"""mip-NeRF 360's distortion loss on packed samples (rwf_render.nerf_reg.distortion_loss): agreement with the
brute-force double sum, gradients, closed forms, independence from how rays are packed, its preference for
concentrated weight, scene-scale invariance, and low-precision inputs."""

import pytest
import torch

from rwf_render.nerf_reg import distortion_loss

LENGTHS = [0, 3, 1, 0, 7, 2, 12, 0]  # samples per ray: empty rays first, inside and last


def _packed(lengths, seed=0, dtype=torch.float64, offset=0.0):
    """Random packed samples: per ray, intervals in increasing t (gaps between some of them), random weights."""
    g = torch.Generator().manual_seed(seed)
    ri, t0, t1 = [], [], []
    for ray, n in enumerate(lengths):
        widths = torch.rand(n, generator=g, dtype=torch.float64) * 0.3 + 0.01
        gaps = torch.rand(n, generator=g, dtype=torch.float64) * (torch.rand(n, generator=g) < 0.5)
        starts = offset + torch.rand((), generator=g, dtype=torch.float64) + torch.cumsum(widths + gaps, 0) - widths
        ri.append(torch.full((n,), ray, dtype=torch.long))
        t0.append(starts)
        t1.append(starts + widths)
    weights = torch.rand(sum(lengths), generator=g, dtype=torch.float64)
    return weights.to(dtype), torch.cat(t0).to(dtype), torch.cat(t1).to(dtype), torch.cat(ri)


def _brute_force(weights, t_starts, t_ends, ray_indices, n_rays, scale):
    """The definition, one ray and one pair at a time: sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 delta_i."""
    scale = torch.as_tensor(scale, dtype=torch.float64).expand(n_rays)
    out = []
    for ray in range(n_rays):
        sel = ray_indices == ray
        w, a, b = weights[sel].tolist(), t_starts[sel].tolist(), t_ends[sel].tolist()
        s = float(scale[ray])
        m = [(x + y) / 2 / s for x, y in zip(a, b)]
        total = sum(w[i] * w[j] * abs(m[i] - m[j]) for i in range(len(w)) for j in range(len(w)))
        total += sum(w[i] ** 2 * (b[i] - a[i]) / s / 3 for i in range(len(w)))
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_double_sum(seed):
    """O(S) prefix-sum form == the O(n^2) double sum per ray, to 1e-10 in float64, for a scalar and a per-ray
    scale; empty rays score exactly 0."""
    w, t0, t1, ri = _packed(LENGTHS, seed)
    n = len(LENGTHS)
    per_ray = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    for scale in (1.0, 2.5, per_ray):
        got = distortion_loss(w, t0, t1, ri, n, scale)
        assert got.shape == (n,) and got.dtype == torch.float64
        torch.testing.assert_close(got, _brute_force(w, t0, t1, ri, n, scale), rtol=0, atol=1e-10)
        assert all(float(got[r]) == 0.0 for r, k in enumerate(LENGTHS) if k == 0)
        assert all(float(got[r]) > 0.0 for r, k in enumerate(LENGTHS) if k > 0)


def test_no_samples_at_all_gives_zeros():
    empty = torch.zeros(0, dtype=torch.float64)
    got = distortion_loss(empty, empty, empty, torch.zeros(0, dtype=torch.long), 4, 1.0)
    assert got.shape == (4,) and not got.any()


def test_gradcheck():
    """Analytic gradients w.r.t. weights and the interval ends match finite differences (float64)."""
    w, t0, t1, ri = _packed([2, 0, 4, 1, 3], seed=3)
    n = 5
    scale = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0], dtype=torch.float64)

    def fn(w, t0, t1):
        return distortion_loss(w, t0, t1, ri, n, scale)

    inputs = tuple(x.clone().requires_grad_(True) for x in (w, t0, t1))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8)


def test_single_sample_closed_form():
    """One sample of weight w on [t0, t1]: w^2 (t1 - t0) / 3 (divided by the scale)."""
    w, t0, t1 = 0.7, 2.0, 2.6
    one = torch.zeros(1, dtype=torch.long)
    got = distortion_loss(torch.tensor([w]), torch.tensor([t0]), torch.tensor([t1]), one, 1, 1.0)
    assert float(got[0]) == pytest.approx(w * w * (t1 - t0) / 3, rel=1e-6)
    got = distortion_loss(torch.tensor([w]), torch.tensor([t0]), torch.tensor([t1]), one, 1, 4.0)
    assert float(got[0]) == pytest.approx(w * w * (t1 - t0) / 12, rel=1e-6)


@pytest.mark.parametrize("d", [0.1, 1.0, 7.5])
def test_two_points_closed_form(d):
    """Two zero-width samples of weight w at distance d: 2 w^2 d, whatever their place on the ray."""
    w = 0.4
    ri = torch.zeros(2, dtype=torch.long)
    for start in (0.0, 3.0, 250.0):
        t = torch.tensor([start, start + d], dtype=torch.float64)
        got = distortion_loss(torch.full((2,), w, dtype=torch.float64), t, t.clone(), ri, 1, 1.0)
        assert float(got[0]) == pytest.approx(2 * w * w * d, rel=1e-12)


def test_independent_of_how_rays_are_packed():
    """Packing the same rays' samples in another ray order, or relabelling the rays, permutes nothing but the
    output: each ray's loss depends on its own samples only."""
    w, t0, t1, ri = _packed(LENGTHS, seed=4)
    n = len(LENGTHS)
    base = distortion_loss(w, t0, t1, ri, n, 1.0)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # packing order of the rays
    order = torch.cat([torch.nonzero(ri == r)[:, 0] for r in perm.tolist()])  # each ray kept whole, in t order
    shuffled = distortion_loss(w[order], t0[order], t1[order], ri[order], n, 1.0)
    torch.testing.assert_close(shuffled, base, rtol=0, atol=1e-12)
    relabel = torch.argsort(perm)  # ray perm[k] becomes ray k, packed in order of the new labels
    relabelled = distortion_loss(w[order], t0[order], t1[order], relabel[ri[order]], n, 1.0)
    torch.testing.assert_close(relabelled, base[perm], rtol=0, atol=1e-12)


def test_concentrated_weight_scores_lower_than_spread():
    """All weight in one interval beats the same total spread over the ray (or split between two places)."""
    k, width = 16, 0.1
    t0 = torch.arange(k, dtype=torch.float64) * width
    t1 = t0 + width
    ri = torch.zeros(k, dtype=torch.long)
    one_hot = torch.zeros(k, dtype=torch.float64)
    one_hot[5] = 1.0
    spread = torch.full((k,), 1.0 / k, dtype=torch.float64)
    split = torch.zeros(k, dtype=torch.float64)
    split[[2, 13]] = 0.5
    concentrated = float(distortion_loss(one_hot, t0, t1, ri, 1, 1.0)[0])
    assert concentrated == pytest.approx(width / 3, rel=1e-12)
    assert concentrated < float(distortion_loss(spread, t0, t1, ri, 1, 1.0)[0])
    assert concentrated < float(distortion_loss(split, t0, t1, ri, 1, 1.0)[0])


def test_scale_makes_the_loss_independent_of_scene_size():
    """Stretching a scene by c and passing scale c gives the loss of the unstretched scene with scale 1."""
    w, t0, t1, ri = _packed(LENGTHS, seed=5)
    n = len(LENGTHS)
    base = distortion_loss(w, t0, t1, ri, n, 1.0)
    for c in (0.01, 3.0, 40.0):
        torch.testing.assert_close(distortion_loss(w, c * t0, c * t1, ri, n, c), base, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(distortion_loss(w, 3.0 * t0, 3.0 * t1, ri, n, 1.0), base)


def test_float32_far_from_the_origin_keeps_precision():
    """Samples at t ~ 10^4 in float32 score what float64 arithmetic gives on the same float32 inputs, to 1e-5:
    distances are taken from each ray's first sample before midpoints and products are formed (measured from
    t = 0 instead, the products cancel and the error is ~2e-3)."""
    w, t0, t1, ri = (x.float() if x.is_floating_point() else x for x in _packed(LENGTHS, seed=6, offset=1e4))
    n = len(LENGTHS)
    exact = distortion_loss(w.double(), t0.double(), t1.double(), ri, n, 1.0)
    got = distortion_loss(w, t0, t1, ri, n, 1.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_run_and_backpropagate(dtype):
    """float32 and bfloat16 weights (CPU): the loss is at least float32, close to float64, with finite gradients."""
    w, t0, t1, ri = _packed(LENGTHS, seed=7)
    n = len(LENGTHS)
    exact = distortion_loss(w, t0, t1, ri, n, 2.0)
    wl = w.to(dtype).requires_grad_(True)
    got = distortion_loss(wl, t0.to(dtype), t1.to(dtype), ri, n, 2.0)
    assert got.dtype == torch.float32
    got.sum().backward()
    assert wl.grad.dtype == dtype and torch.isfinite(wl.grad.float()).all()
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got.double(), exact, rtol=tol, atol=tol)


# -- the loss in training (--distortion-loss) -----------------------------------------------------------------------
def _tiny_model():
    from rwf_render.nerf_field import NeRFFieldConfig
    from rwf_render.nerf_render import NeRFModel, RenderConfig

    cfg = NeRFFieldConfig()
    cfg.trunk.width = 32
    model = NeRFModel([-1, -1, -1, 1, 1, 1], cfg, RenderConfig(grid_resolution=16, steps_per_diagonal=64),
                      "white", seed=0)
    model.grid.fill_(True)  # every cell occupied: the rays march the whole box
    return model


def test_training_render_returns_the_packed_weights_it_composited():
    """render_rays(train=True) hands out its packed samples and weights: per ray they sum to the opacity, their
    weighted midpoints to the depth, and the distortion loss on them backpropagates into the field."""
    model = _tiny_model()
    g = torch.Generator().manual_seed(0)
    rays_o = torch.randn(64, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, -3.0])
    rays_d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + torch.randn(64, 3, generator=g) * 0.1,
                                           dim=-1)
    out = model.render_rays(rays_o, rays_d, train=True)
    w, ri = out["weights"], out["ray_indices"]
    assert w.numel() == out["n_samples"] > 0
    assert torch.allclose(torch.zeros(64).index_add_(0, ri, w), out["opacity"], atol=1e-5)
    mid = (out["t_starts"] + out["t_ends"]) * 0.5
    assert torch.allclose(torch.zeros(64).index_add_(0, ri, w * mid), out["depth"], atol=1e-4)
    loss = distortion_loss(w, out["t_starts"], out["t_ends"], ri, 64, model.diagonal).mean()
    loss.backward()
    grads = [p.grad for p in model.field.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)
    assert "weights" not in model.render_rays(rays_o, rays_d, train=False)


def _mean_distortion(run, tiny_scene):
    from rwf_render.nerf import load_scene_model
    from rwf_render.nerf_data import load_split

    model = load_scene_model(run)
    train = load_split(str(tiny_scene), "train", 1)
    g = torch.Generator().manual_seed(5)
    img, uv = train.locate(torch.randint(train.n_pixels, (2048,), generator=g))
    rays_o, rays_d = train.rays(img, uv, torch.device("cpu"))
    with torch.no_grad():
        out = model.render_rays(rays_o, rays_d, train=True)
    return float(distortion_loss(out["weights"], out["t_starts"], out["t_ends"], out["ray_indices"], 2048,
                                 model.diagonal).mean())


def test_fit_with_the_distortion_loss_concentrates_the_weights(tiny_scene, tmp_path):
    """The same 60-step fit with and without --distortion-loss: the training rays' weights end more compact."""
    from rwf_render import cli

    common = [str(tiny_scene), "--steps", "60", "--eval-images", "1", "--quiet", "--grid-resolution", "32",
              "--steps-per-diagonal", "128", "--target-samples", "2048", "--width", "32", "--eval-every", "60"]
    assert cli.main(["fit", "nerf", *common, "--out", str(tmp_path / "off")]) == 0
    assert cli.main(["fit", "nerf", *common, "--out", str(tmp_path / "on"), "--distortion-loss", "0.5"]) == 0
    history = (tmp_path / "on" / "history.csv").read_text().splitlines()
    assert "distortion" in history[0].split(",")
    off, on = _mean_distortion(tmp_path / "off", tiny_scene), _mean_distortion(tmp_path / "on", tiny_scene)
    assert on < 0.8 * off, (on, off)


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_negative_or_non_finite_weight_is_refused(tiny_scene, tmp_path, capsys, value):
    from rwf_render import cli

    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(tmp_path / "r"), "--steps", "2", "--quiet",
                     "--distortion-loss", value]) == 2
    err = capsys.readouterr().err
    assert "--distortion-loss" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
