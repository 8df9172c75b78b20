"""An image run writes light in the encoding of each output file: a fit of a linear EXR wrote its values into PNGs
unchanged (dark: mean 0.28 against the photo's 0.45), and a PNG run's EXR render held sRGB values that EXR readers
take as linear."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from rwf_render import cli
from rwf_render.image import encoded_for, run_transfer
from rwf_render.imgio import read_image, write_image
from rwf_render.mesh_io import linear_to_srgb, srgb_to_linear

from test_shape_image_bad_input_more import IMG_TINY  # noqa: E402  (tests/ is on sys.path under pytest)


def test_encoded_for_converts_colour_not_alpha_and_only_across_encodings():
    rgba = np.random.default_rng(0).uniform(0, 1, (4, 5, 4)).astype(np.float32)
    png = encoded_for(rgba, "linear", "x.png")
    assert np.allclose(png[..., :3], linear_to_srgb(rgba[..., :3]), atol=1e-6) and np.array_equal(png[..., 3],
                                                                                                 rgba[..., 3])
    exr = encoded_for(rgba, "srgb", "x.EXR")
    assert np.allclose(exr[..., :3], srgb_to_linear(rgba[..., :3]), atol=1e-6) and np.array_equal(exr[..., 3],
                                                                                                 rgba[..., 3])
    grey_alpha = rgba[..., :2]
    assert np.array_equal(encoded_for(grey_alpha, "linear", "x.tif")[..., 1], grey_alpha[..., 1])
    for transfer, out in (("linear", "x.exr"), ("srgb", "x.png"), ("srgb", "x.jpg"), ("srgb", "x.tiff")):
        assert encoded_for(rgba, transfer, out) is rgba  # the same encoding: the values as they are
    assert np.allclose(encoded_for(encoded_for(rgba, "linear", "a.png"), "srgb", "a.exr"), rgba, atol=1e-5)


def test_old_runs_take_their_encoding_from_the_source_path():
    assert run_transfer({"path": "/x/photo.EXR", "source": {}}) == "linear"
    assert run_transfer({"path": "/x/photo.png"}) == "srgb" and run_transfer({"path": None}) == "srgb"
    assert run_transfer({"path": "/x/a.exr", "source": {"transfer": "srgb"}}) == "srgb"


@pytest.fixture(scope="module")
def exr_and_png_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    y, x = np.mgrid[0:24, 0:24] / 23.0
    srgb = np.stack([x, y, 0.5 * (x + y)], axis=-1).astype(np.float32)  # a smooth ramp, easy to fit
    write_image(root / "lin.exr", srgb_to_linear(srgb).astype(np.float32))
    write_image(root / "photo.png", srgb, bits=16)
    steps = ["--steps", "300", "--width", "64", "--features", "64", "--eval-every", "100", "--sigma", "3", "--split", "all",
             "--quiet", "--device", "cpu"]
    for name in ("lin.exr", "photo.png"):
        assert cli.main(["fit", "image", str(root / name), "--out", str(root / name.split(".")[0]), *steps]) == 0
    return root, srgb


def test_an_exr_runs_pngs_are_srgb_and_a_png_runs_exr_is_linear(exr_and_png_runs, capsys):
    root, srgb = exr_and_png_runs
    assert json.loads((root / "lin" / "config.json").read_text())["source"]["transfer"] == "linear"
    assert json.loads((root / "photo" / "config.json").read_text())["source"]["transfer"] == "srgb"
    recon = read_image(root / "lin" / "reconstruction.png")[0]
    assert np.abs(recon - srgb).mean() < 0.03  # as the picture looks, not its linear values (0.1 darker here)
    assert np.abs(srgb_to_linear(srgb) - srgb).mean() > 0.1
    assert cli.main(["render", str(root / "lin"), "--out", str(root / "lin.jpg")]) == 0
    assert np.abs(read_image(root / "lin.jpg")[0] - srgb).mean() < 0.04
    assert cli.main(["render", str(root / "photo"), "--out", str(root / "photo_render.exr")]) == 0
    assert np.abs(read_image(root / "photo_render.exr")[0] - srgb_to_linear(srgb)).mean() < 0.03
    assert cli.main(["render", str(root / "photo"), "--out", str(root / "photo_render.png")]) == 0
    assert np.abs(read_image(root / "photo_render.png")[0] - srgb).mean() < 0.03


def test_the_viewer_shows_an_exr_run_srgb_encoded(exr_and_png_runs):
    """The browser's panels and views showed a linear run's values as they are: dark."""
    import torch  # noqa: PLC0415

    from viewer.sources import open_run  # noqa: PLC0415

    root, srgb = exr_and_png_runs
    for name, want in (("lin", srgb), ("photo", srgb)):
        imgs = open_run(root / name, torch.device("cpu")).images()
        assert np.abs(imgs["ground truth"] - want).mean() < 1e-3, name  # the target as the photo looks
        assert np.abs(imgs["reconstruction"] - want).mean() < 0.03, name


def test_the_live_viewer_shows_an_exr_fit_srgb_encoded(exr_and_png_runs):
    """``rwf fit image lin.exr --view``: the live page reads the encoding from the run's config.json, as the
    viewer of a finished run does (a mutant taking sRGB there survived every test)."""
    import torch  # noqa: PLC0415

    from rwf_render import image  # noqa: PLC0415
    from rwf_render.rundir import load_run_config  # noqa: PLC0415
    from viewer.sources import live_source  # noqa: PLC0415

    root, srgb = exr_and_png_runs
    for name, transfer in (("lin", "linear"), ("photo", "srgb")):
        run = root / name
        cfg = load_run_config(run)
        _, target, model, _, device = image.load_run(run, cfg, "cpu")
        trainer = SimpleNamespace(model=model, task=SimpleNamespace(image=target), device=torch.device("cpu"),
                                  run_dir=run)
        source = live_source("image", trainer)
        assert source.transfer == transfer
        assert np.abs(source.images()["ground truth"] - srgb).mean() < 1e-3, name
