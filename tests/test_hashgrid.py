"""The hash grid encoding (instant-ngp's multiresolution hash tables): layout, interpolation, hashing, the compiled
CPU lookup against the torch reference, and its use in the NeRF pipeline."""

import json
import math

import pytest
import torch

from rwf_render.encodings import HashGrid, make_encoding
from rwf_render.layers import param_groups

PRIMES = (1, 2654435761, 805459861)


def tcnn_layout(d, levels, log2_size, base_res, max_res):
    """tiny-cuda-nn's level scales, resolutions and parameter counts, computed here independently."""
    b = (max_res / base_res) ** (1 / (levels - 1))
    out = []
    for lv in range(levels):
        scale = math.fsum([base_res * 2.0 ** (lv * math.log2(b)), -1.0])
        res = math.ceil(float(torch.tensor(scale, dtype=torch.float32))) + 1
        size = min(res**d, 2**log2_size)
        out.append((res, -(-size // 8) * 8))
    return out


@pytest.mark.parametrize("d", [2, 3])
def test_layout_matches_tiny_cuda_nn(d):
    enc = HashGrid(d, levels=8, log2_size=12, base_res=4, max_res=300)
    expect = tcnn_layout(d, 8, 12, 4, 300)
    assert enc.resolutions.tolist() == [r for r, _ in expect]
    assert enc.sizes.tolist() == [s for _, s in expect]
    assert enc.offsets.tolist() == [sum(s for _, s in expect[:i]) for i in range(8)]
    assert enc.table.shape == (sum(s for _, s in expect), 2) and enc.out_dim == 16
    # the coarse levels are dense, the rest hashed, as their vertex counts say
    assert enc.hashed.tolist() == [r**d > 2**12 for r, _ in expect]
    assert 0 < sum(enc.hashed.tolist()) < 8


@pytest.mark.parametrize("d", [2, 3])
def test_dense_level_interpolates_linear_functions_exactly(d):
    """d-linear interpolation reproduces a linear function of the vertex coordinates: fill a dense level's table
    with a . v + c and the encoding at x is a . (x s + 0.5) + c."""
    enc = HashGrid(d, levels=1, level_features=1, log2_size=16, base_res=20, max_res=20).double()
    assert not enc.hashed[0]
    res = int(enc.resolutions[0])
    a = torch.tensor([0.3, -1.7, 0.9][:d], dtype=torch.float64)
    grids = torch.meshgrid(*[torch.arange(res, dtype=torch.float64)] * d, indexing="ij")
    v = torch.stack([g.flatten() for g in grids], -1)  # vertex (i0, i1, ...); row i0 + res i1 + res^2 i2
    rows = sum(v[:, i].long() * res**i for i in range(d))
    with torch.no_grad():
        enc.table.zero_()
        enc.table[rows, 0] = v @ a + 0.25
    x = torch.rand(500, d, dtype=torch.float64) * 0.9  # x s + 0.5 < res - 1: every vertex is on the grid
    expect = (x * float(enc.scales[0]) + 0.5) @ a + 0.25
    torch.testing.assert_close(enc.encode_torch(x)[:, 0], expect, rtol=0, atol=1e-9)


def test_hashed_level_reads_the_vertex_the_hash_names():
    """Just past a vertex, nearly all the weight is the vertex's: the table row that gets it is the one the
    xor-of-primes hash names (coordinate x prime, wrapped to 32 bits, modulo the table size)."""
    enc = HashGrid(3, levels=1, level_features=1, log2_size=10, base_res=64, max_res=64)
    assert enc.hashed[0]
    scale = float(enc.scales[0])
    gen = torch.Generator().manual_seed(0)
    for v in torch.randint(1, 60, (40, 3), generator=gen).tolist():
        x = (torch.tensor(v, dtype=torch.float64) - 0.5 + 1e-3) / scale  # x s + 0.5 = v + 0.001
        enc.table.grad = None
        enc.encode_torch(x.float()[None]).sum().backward()
        h = 0
        for c, p in zip(v, PRIMES):
            h ^= (c * p) & 0xFFFFFFFF
        assert int(enc.table.grad[:, 0].argmax()) == h % 1024
        assert float(enc.table.grad.max()) > 0.99


def test_points_outside_the_unit_cube_are_clamped():
    enc = HashGrid(3, levels=4, log2_size=12, base_res=4, max_res=64)
    x = torch.tensor([[-0.5, 0.3, 1.7], [2.0, -1.0, 0.5]])
    torch.testing.assert_close(enc(x), enc(x.clamp(0, 1)))


def test_gradient_in_x_matches_finite_differences():
    """Inside a cell the encoding is smooth in x; its gradient (the SDF eikonal term needs it) is autograd's."""
    enc = HashGrid(3, levels=3, log2_size=8, base_res=3, max_res=12).double()
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    x = torch.tensor([[0.31, 0.52, 0.73], [0.11, 0.84, 0.47]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(enc.encode_torch, (x,), eps=1e-7, atol=1e-6)


def kernel_or_skip():
    from rwf_render.raymarch import _backend

    ext = _backend.load("cpu")
    if ext is None or not hasattr(ext, "hashgrid_forward"):
        pytest.skip(f"the compiled CPU kernel is unavailable: {_backend.reason('cpu')}")
    return ext


@pytest.mark.parametrize("d,kw", [(3, dict(levels=16, log2_size=14, base_res=4, max_res=512)),
                                  (2, dict(levels=6, log2_size=10, base_res=2, max_res=300, level_features=4))])
def test_compiled_lookup_matches_torch_reference(d, kw):
    kernel_or_skip()
    enc = HashGrid(d, **kw)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5000, d, generator=gen)
    x[:3], x[3:6] = 1.0, 0.0  # the faces of the cube: vertices past the last one wrap as in tiny-cuda-nn
    y = enc(x)  # compiled (x needs no gradient)
    ref = enc.encode_torch(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=2e-6)
    g = torch.randn(y.shape, generator=gen)
    (y * g).sum().backward()
    g_kernel, enc.table.grad = enc.table.grad, None
    (ref * g).sum().backward()
    torch.testing.assert_close(g_kernel, enc.table.grad, rtol=1e-5, atol=1e-4)
    assert g_kernel.abs().max() > 1  # rows were hit


def test_compiled_backward_is_deterministic():
    kernel_or_skip()
    enc = HashGrid(3, levels=8, log2_size=10, base_res=8, max_res=256)
    x = torch.rand(20000, 3)
    grads = []
    for _ in range(2):
        enc.table.grad = None
        enc(x).square().sum().backward()
        grads.append(enc.table.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_hash_tables_get_their_own_optimizer_group():
    field = torch.nn.Sequential(make_encoding("hashgrid", 3, levels=2, log2_size=8, base_res=4, max_res=8),
                                torch.nn.Linear(4, 1))
    groups = {g["name"]: g for g in param_groups(field, lr=1e-2)}
    assert [p is field[0].table for p in groups["hash_tables"]["params"]] == [True]
    assert groups["hash_tables"]["eps"] == 1e-15
    assert all(p is not field[0].table for p in groups["main"]["params"])


@pytest.mark.parametrize("kw,match", [(dict(levels=0), "levels"), (dict(log2_size=40), "log2_size"),
                                      (dict(base_res=32, max_res=16), "base_res"), (dict(level_features=3),
                                                                                    "level_features")])
def test_impossible_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        HashGrid(3, **kw)


def test_mip_covariance_is_refused():
    enc = HashGrid(3, levels=2, log2_size=8, base_res=4, max_res=8)
    with pytest.raises(ValueError, match="mip"):
        enc(torch.rand(4, 3), torch.eye(3))


def test_tcnn_backend_matches_torch():
    tcnn = pytest.importorskip("tinycudann", reason="tinycudann is not installed (optional CUDA backend)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    del tcnn
    ref = HashGrid(3, levels=8, log2_size=12, base_res=4, max_res=256).cuda()
    with torch.no_grad():
        ref.table.uniform_(-1, 1)
    fast = HashGrid(3, levels=8, log2_size=12, base_res=4, max_res=256, backend="tcnn").cuda()
    with torch.no_grad():
        fast.table.copy_(ref.table.detach().flatten())
    x = torch.rand(4096, 3, device="cuda")
    torch.testing.assert_close(fast(x), ref.encode_torch(x), rtol=1e-3, atol=1e-3)


# -- in the pipelines ---------------------------------------------------------------------------------------------
NERF_TINY = ["--eval-images", "1", "--quiet", "--grid-resolution", "32", "--steps-per-diagonal", "128",
             "--target-samples", "2048", "--encoding", "hashgrid", "--hash-levels", "8", "--hash-log2-size", "14",
             "--hash-max-res", "128", "--eval-every", "50"]


def test_nerf_hashgrid_fit_learns_resumes_deterministically_and_refuses(tiny_scene, tmp_path, capsys):
    """A short hash-grid fit learns the scene (far above a constant render), saves its encoding in config.json,
    exports a mesh; an interrupted deterministic fit resumed ends with the parameters of an uninterrupted one (the
    tables' fused Adam state survives the checkpoint); options of the other encodings are refused."""
    from rwf_render import cli

    full, part = tmp_path / "full", tmp_path / "part"
    args = NERF_TINY + ["--deterministic", "--ckpt-every", "30", "--schedule", "const"]  # const: 60 + 60 = 120
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(full), "--steps", "120", *args]) == 0
    cfg = json.loads((full / "config.json").read_text())
    assert cfg["field"]["pos"]["kind"] == "hashgrid" and cfg["field"]["pos"]["levels"] == 8
    assert cfg["field"]["trunk"]["width"] == 64 and cfg["train"]["lr"] == 1e-2
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["psnr"] > 17, metrics  # a white image scores about 11 dB on these views

    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(part), "--steps", "60", *args]) == 0
    capsys.readouterr()
    assert cli.main(["fit", "nerf", "--out", str(part), "--resume", "--steps", "120", "--hash-levels", "4",
                     "--quiet"]) == 2
    assert "--hash-levels" in capsys.readouterr().err
    assert cli.main(["fit", "nerf", "--out", str(part), "--resume", "--steps", "120", "--quiet"]) == 0
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 120
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    torch.use_deterministic_algorithms(False)

    mesh = tmp_path / "m.ply"
    assert cli.main(["export", "mesh", str(full), "--res", "32", "--out", str(mesh)]) == 0
    assert mesh.stat().st_size > 0

    for bad, what in [(["--features", "32"], "--features"), (["--mip"], "--mip")]:
        capsys.readouterr()
        assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(tmp_path / "bad"), "--steps", "1",
                         *NERF_TINY, *bad]) == 2
        assert what in capsys.readouterr().err
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(tmp_path / "bad"), "--steps", "1",
                     "--hash-levels", "4", "--quiet"]) == 2
    assert not (tmp_path / "bad").exists()


def test_nerf_hashgrid_spans_the_cascades():
    """With 3 grid cascades the tables span the outer cascade (4x the box about its centre): its corners map to the
    unit cube's, so points outside the box still get features of their own."""
    from rwf_render.nerf_field import NeRFField, NeRFFieldConfig
    from rwf_render.fields import EncodingConfig

    cfg = NeRFFieldConfig(pos=EncodingConfig(kind="hashgrid", levels=2, log2_size=8, base_res=4, max_res=8),
                          pos_extent=4.0)
    field = NeRFField([-1.0, 0.0, 0.0, 1.0, 2.0, 2.0], cfg)
    pts = torch.tensor([[-4.0, -3.0, -3.0], [4.0, 5.0, 5.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(field.normalize(pts), torch.tensor([[0.0] * 3, [1.0] * 3, [0.5] * 3]))


def test_image_hashgrid_fits_a_photo(data_dir, tmp_path, capsys):
    """``rwf fit image --encoding hashgrid`` on a real photo: a few hundred steps reproduce the training pixels
    closely (hash tables memorize fast); the hash options are refused with another encoding."""
    from rwf_render import cli

    run = tmp_path / "img"
    assert cli.main(["fit", "image", str(data_dir / "images" / "camera.png"), "--out", str(run), "--size", "64",
                     "--steps", "150", "--encoding", "hashgrid", "--hash-levels", "8", "--hash-max-res", "64",
                     "--width", "64", "--depth", "3", "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["psnr_train"] > 30 and metrics["psnr"] > 18, metrics
    assert json.loads((run / "config.json").read_text())["encoding"]["kind"] == "hashgrid"
    capsys.readouterr()
    assert cli.main(["fit", "image", str(data_dir / "images" / "camera.png"), "--out", str(tmp_path / "x"),
                     "--hash-log2-size", "12"]) == 2
    assert "--hash-log2-size apply to --encoding hashgrid only" in capsys.readouterr().err


def test_sdf_hashgrid_with_eikonal_fits(tmp_path):
    """The SDF pipeline's eikonal term differentiates the encoding in x (the torch path runs there). The tables
    cover the shapes' box [-0.5, 0.5]^3: clamped to [0, 1]^3 instead, 7/8 of the box shared one feature vector and
    this fit reached IoU 0.23 (0.99 after 200 steps without the eikonal term once fixed)."""
    from rwf_render import cli

    run = tmp_path / "sdf"
    assert cli.main(["fit", "sdf", "--out", str(run), "--steps", "100", "--encoding", "hashgrid", "--hash-levels",
                     "6", "--hash-log2-size", "14", "--hash-max-res", "64", "--width", "64", "--depth", "3",
                     "--eikonal", "0.1", "--mesh-res", "32", "--preview-res", "32", "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iou"] > 0.9, metrics


def test_a_preset_sized_for_fourier_features_gives_the_hash_grid_its_own_field_size(data_dir, monkeypatch):
    """lego-tancik sizes a Fourier field (4 x 256, 256 features, lr 5e-4); `--encoding hashgrid` on it used to keep
    that size (a 4 x 256 trunk behind the tables) and the Fourier lr. Another encoding than the preset's drops the
    preset's field size and lr; typed ones still win, and the preset's other settings (sampler, steps) stay."""
    from rwf_render import cli
    from rwf_render.nerf_options import config_from_args

    monkeypatch.setenv("RWF_DATA", str(data_dir))

    def config(*typed, scene="lego-tancik"):
        return config_from_args(cli.build_parser().parse_args(["fit", "nerf", scene, *typed]))

    fourier = config()
    assert fourier.field.trunk.width == 256 and fourier.field.pos.m == 256 and fourier.train.lr == 5e-4
    hashed = config("--encoding", "hashgrid")
    assert (hashed.field.trunk.width, hashed.field.trunk.depth, hashed.train.lr) == (64, 2, 1e-2)
    assert hashed.render.sampler == fourier.render.sampler == "dense" and hashed.train.steps == 50000
    assert config("--encoding", "hashgrid", "--width", "128").field.trunk.width == 128


def test_the_gpu_preset_fits_with_the_hash_grid_and_falls_back_to_the_fourier_defaults(data_dir, monkeypatch):
    """lego-gpu is a hash-grid preset (the one measured past 30 dB at 400x400 in minutes on a GPU); its earlier
    Fourier field, widened to 256 with RWF layers at lr 3e-3, collapsed to empty space. `--encoding fourier` on it
    gets the Fourier defaults (4 x 128, lr 3e-3), not a width chosen for another encoding."""
    from rwf_render import cli
    from rwf_render.nerf_options import config_from_args

    monkeypatch.setenv("RWF_DATA", str(data_dir))

    def config(*typed):
        return config_from_args(cli.build_parser().parse_args(["fit", "nerf", "lego-gpu", *typed]))

    gpu = config()
    assert gpu.field.pos.kind == "hashgrid" and (gpu.field.trunk.depth, gpu.field.trunk.width) == (2, 64)
    assert gpu.train.lr == 1e-2 and gpu.target_samples == 1 << 18 and gpu.downscale == 1
    fourier = config("--encoding", "fourier")
    assert fourier.field.pos.kind == "fourier" and (fourier.field.trunk.width, fourier.field.pos.m) == (128, 128)
    assert fourier.train.lr == 3e-3 and fourier.target_samples == 1 << 18
