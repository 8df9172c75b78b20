"""An audit of the NeRF and SDF deliverables against the code: an empty split is refused, a mesh crop is held to the
box the field was fitted in, the training bar shows samples per ray, SSIM is the NeRF papers' (11 x 11 Gaussian
window), the view direction takes positional encoding as well as spherical harmonics, LPIPS is scored when its
package and weights are on the machine, and a broken link given as the mesh is named as typed."""

import json

import pytest

from rwf_render.datasets import load_transforms
from rwf_render.errors import RwfWarning, UserError

from conftest import one_cli_error, random_views_scene  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.mark.parametrize("split", ["test", "val"])
def test_an_empty_split_is_refused_not_taken_as_absent(tmp_path, capsys, split):
    """A transforms_test.json whose 'frames' list is empty was read as 'no test split': the fit scored the val
    (or, both empty, the training) views and exited 0."""
    root = random_views_scene(tmp_path / "scene", {"train": 3, "val": 1, "test": 1})
    path = root / f"transforms_{split}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "frames": []}))
    with pytest.raises(UserError, match="'frames' is empty"):
        load_transforms(root, split)
    err = one_cli_error(capsys, ["fit", "nerf", root, "--out", tmp_path / "run", "--steps", "2", "--quiet"])
    assert f"transforms_{split}.json" in err and "empty" in err
    assert not (tmp_path / "run").exists()
    (root / "train" / "train_0.png").rename(root / "train" / "gone.png")  # a missing image still only skips its frame
    with pytest.warns(RwfWarning, match="skipped 1 frame"):
        assert len(load_transforms(root, "train")) == 2


def test_a_crop_reaching_beyond_the_fitted_box_is_clipped_to_it(still_life_run, tmp_path):
    """--crop -4..4 around a scene fitted in +-1.5 exported the untrained field's extrapolation: 95 % of the
    vertices lay outside the box, capped at the crop's faces. Clipped, it is the export of the scene box itself."""
    import numpy as np
    import trimesh

    from rwf_render import cli

    common = ["export", "mesh", str(still_life_run), "--res", "24", "--quiet"]
    assert cli.main([*common, "--out", str(tmp_path / "box.ply")]) == 0
    with pytest.warns(RwfWarning, match="reaches beyond the scene box"):
        assert cli.main([*common, "--crop", "-4", "-4", "-4", "4", "4", "4", "--out", str(tmp_path / "big.ply")]) == 0
    box, big = (trimesh.load(tmp_path / f"{n}.ply", process=False) for n in ("box", "big"))
    assert len(box.vertices) > 100
    np.testing.assert_array_equal(big.vertices, box.vertices)
    aabb = [f"{v:.7g}" for v in json.loads((still_life_run / "config.json").read_text())["aabb"]]
    assert aabb[3] == "1.515152"  # typed as printed, 5e-7 beyond the float32 box the grid holds
    import warnings

    with warnings.catch_warnings():  # the scene box typed as printed: no warning for float32's last digits
        warnings.simplefilter("error")
        assert cli.main([*common, "--crop", *aabb, "--out", str(tmp_path / "same.ply")]) == 0


def test_the_training_bar_shows_samples_per_ray(tmp_path, monkeypatch):
    """The issue asks for tqdm showing PSNR and samples per ray; the bar had loss and training PSNR only."""
    import csv

    import tqdm

    from rwf_render import cli

    shown = []
    real = tqdm.tqdm.set_postfix
    monkeypatch.setattr(tqdm.tqdm, "set_postfix", lambda self, post=None, **kw: (shown.append(dict(post)),
                                                                                  real(self, post, **kw)))
    root = random_views_scene(tmp_path / "scene", {"train": 3, "test": 1})
    assert cli.main(["fit", "nerf", str(root), "--out", str(tmp_path / "run"), "--steps", "3", "--eval-images", "1",
                     "--grid-resolution", "16", "--width", "16", "--features", "8", "--device", "cpu"]) == 0
    fit_posts = [p for p in shown if "loss" in p]
    assert len(fit_posts) == 3 and all("psnr_train" in p for p in fit_posts)
    with open(tmp_path / "run" / "history.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert fit_posts[-1]["samples/ray"] == f"{float(last['samples_per_ray']):.1f}"


def _reference_ssim(a, b):
    """SSIM written out as mip-NeRF computes it: separable 11-tap Gaussian (sigma 1.5), 'valid' filtering,
    population statistics, C1 = 0.01^2, C2 = 0.03^2, mean over the map and the channels."""
    import numpy as np

    x = np.arange(11) - 5.0
    g = np.exp(-0.5 * (x / 1.5) ** 2)
    g /= g.sum()

    def blur(z):  # (H, W, C) -> (H - 10, W - 10, C)
        rows = sum(g[i] * z[i:z.shape[0] - 10 + i] for i in range(11))
        return sum(g[j] * rows[:, j:rows.shape[1] - 10 + j] for j in range(11))

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    return float((num / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean())


def test_ssim_is_the_nerf_papers_gaussian_window_ssim():
    """scikit-image's default (a 7 x 7 uniform window, sample covariance) scored 0.706 where the NeRF papers'
    SSIM gives 0.687 on a noisy image: the figures were not comparable with published tables."""
    import numpy as np

    from rwf_render.metrics import ssim

    rng = np.random.default_rng(3)
    truth = rng.random((40, 53, 3)).cumsum(axis=1) / 30 % 1.0  # structure, not just noise
    noisy = np.clip(truth + 0.08 * rng.standard_normal(truth.shape), 0, 1)
    assert ssim(noisy, truth) == pytest.approx(_reference_ssim(noisy, truth), abs=1e-9)
    assert ssim(truth, truth) == pytest.approx(1.0)
    assert ssim(noisy, truth) == pytest.approx(ssim(truth, noisy))


def test_the_view_direction_takes_positional_encoding_from_the_command_line(tmp_path, capsys):
    """The issue names spherical harmonics or positional encoding for the view direction; only SH was reachable
    from `rwf fit nerf`. PE (NeRF's, 4 frequencies and the direction itself: 27 values) is --dir-encoding pe; it is
    saved, resumed, refused with --no-view-dependence, and the run renders through the same loader."""
    import torch

    from rwf_render import cli
    from rwf_render.encodings import PositionalEncoding
    from rwf_render.nerf import load_scene_model

    root, run = random_views_scene(tmp_path / "scene", {"train": 3, "test": 1}), tmp_path / "run"
    tiny = ["--grid-resolution", "16", "--width", "16", "--features", "8", "--eval-images", "1", "--quiet",
            "--device", "cpu"]
    assert cli.main(["fit", "nerf", str(root), "--out", str(run), "--steps", "2", "--dir-encoding", "pe", *tiny]) == 0
    saved = json.loads((run / "config.json").read_text())["field"]["dirs"]
    assert (saved["kind"], saved["n_freqs"], saved["include_input"]) == ("pe", 4, True)
    model = load_scene_model(run, "cpu")
    enc = model.field.dir_enc
    assert isinstance(enc, PositionalEncoding) and enc.out_dim == 27
    d = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    assert torch.allclose(enc(d)[:, :3], d) and torch.allclose(enc(d)[:, 3 + 2 + 1], torch.cos(2 * torch.pi * d[:, 0]))
    err = one_cli_error(capsys, ["fit", "nerf", root, "--out", run, "--resume", "--steps", "3", "--dir-encoding",
                                 "sh"])
    assert "--dir-encoding" in err
    assert cli.main(["fit", "nerf", str(root), "--out", str(run), "--steps", "3", "--resume"]) == 0
    err = one_cli_error(capsys, ["fit", "nerf", root, "--out", tmp_path / "flat", "--no-view-dependence",
                                 "--dir-encoding", "pe", *tiny])
    assert "--dir-encoding" in err and not (tmp_path / "flat").exists()


def test_lpips_is_scored_when_its_package_and_weights_are_on_the_machine(tmp_path, monkeypatch):
    """The issue asks for LPIPS when its weights are available offline; it was null whatever was installed. With
    neither lpips nor its backbone here, a stand-in module (a known distance, the mean absolute difference of the
    [-1, 1] images) checks the wiring: absent without the weights file, each view's distance averaged with it."""
    import sys
    import types

    import numpy as np
    import torch

    from rwf_render import metrics, nerf_task
    from rwf_render.metrics import LPIPS_BACKBONE, lpips_metric
    from rwf_render.nerf_data import load_split
    from rwf_render.nerf_render import NeRFModel
    from rwf_render.nerf_field import NeRFFieldConfig
    from rwf_render.nerf_config import RenderConfig

    class StandIn(torch.nn.Module):
        def __init__(self, net, verbose):
            super().__init__()
            assert (net, verbose) == ("alex", False)

        def forward(self, a, b):
            assert a.shape[:2] == (1, 3) and float(a.min()) >= -1 and float(a.max()) <= 1
            return (a - b).abs().mean().reshape(1, 1, 1, 1)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=StandIn))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    score, note = lpips_metric()
    assert score is None and "AlexNet weights are not in" in note
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / LPIPS_BACKBONE).write_bytes(b"")
    score, note = lpips_metric()
    assert score is not None and note == "lpips 0.1, AlexNet"

    rng = np.random.default_rng(0)
    a, b = rng.random((40, 33, 3)), rng.random((40, 33, 3))
    assert score(a, b) == pytest.approx(float(np.abs(a - b).mean() * 2), rel=1e-5)

    root = random_views_scene(tmp_path / "scene", {"train": 1, "test": 2}, channels=3)  # 8 x 8 views
    test = load_split(root, "test", 1)
    model = NeRFModel(test.aabb, NeRFFieldConfig(), RenderConfig(grid_resolution=16))
    m = nerf_task.test_metrics(model, test, "white", None)  # AlexNet's pooling fails under 32 px: absent, the
    assert m["lpips"] is None and "under the 32 px" in m["lpips_note"] and np.isfinite(m["psnr"])  # fit kept
    monkeypatch.setattr(metrics, "LPIPS_MIN_SIDE", 8)  # the stand-in takes any size: each view's, averaged
    m = nerf_task.test_metrics(model, test, "white", None)
    expect = []
    for i in range(2):
        pred, target = nerf_task.render_and_target(model, test, i, "white")
        expect.append(float(np.abs(pred.numpy() - target.numpy()).mean() * 2))
    assert m["lpips"] == pytest.approx(float(np.mean(expect)), rel=1e-5) and m["lpips_note"] == note
    monkeypatch.setitem(sys.modules, "lpips", None)  # `import lpips` raises ImportError: not installed
    assert nerf_task.test_metrics(model, test, "white", None)["lpips"] is None
    assert "not installed" in lpips_metric()[1]


def test_a_broken_link_as_the_mesh_is_named_as_typed(tmp_path, capsys):
    """The path was resolved before it was checked, so the error named the link's target ('/nonexistent: file not
    found'), not the path the user typed."""
    (tmp_path / "shape.obj").symlink_to(tmp_path / "gone.obj")
    err = one_cli_error(capsys, ["fit", "sdf", tmp_path / "shape.obj", "--out", tmp_path / "run", "--steps", "1"])
    assert f"{tmp_path / 'shape.obj'}: a link to {tmp_path / 'gone.obj'}, which does not exist" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"camera_path": ' + "9" * 5000 + "}"],
                         ids=["deep", "huge-integer"])
def test_a_camera_path_too_deep_or_with_a_huge_integer_is_one_message(tmp_path, text):
    """json's RecursionError and its 4300-digit ValueError were tracebacks from rwf render --camera-path."""
    from rwf_render.camera_path import load_camera_path
    from viewer.panels import is_camera_path

    (tmp_path / "path.json").write_text(text)
    with pytest.raises(UserError, match="not a readable JSON camera path"):
        load_camera_path(tmp_path / "path.json")
    assert not is_camera_path(tmp_path / "path.json")
