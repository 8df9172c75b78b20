"""`rwf fit image` of a grey + alpha image (PNG LA, TIFF or EXR with Y and A): fitted and written as two channels.

It was read as RGBA with the grey repeated, so the reconstruction came back in colour (R, G and B differing by up to
0.17) and PSNR counted the grey's error three times (a helper's hunt, 30 Nov 2026). The NeRF loader and the data
tools still read grey + alpha as RGBA; runs fitted the old way (config.json: 4 channels) still evaluate as fitted.
"""

import hashlib
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from rwf_render import cli
from rwf_render.errors import RwfWarning
from rwf_render.imgio import read_image
from rwf_render.mesh_io import srgb_to_linear

FIT = ["--steps", "30", "--size", "32", "--width", "32", "--features", "16", "--device", "cpu", "--quiet"]


def _grey_alpha(path) -> np.ndarray:
    """A 32x32 LA PNG: a grey ramp, transparent on its left quarter; returns its pixels (32, 32, 2) in [0, 1]."""
    y, x = np.mgrid[0:32, 0:32]
    la = np.stack([(x * 8 + y * 3) % 256, np.where(x < 8, 0, 255)], -1).astype(np.uint8)
    Image.fromarray(la, "LA").save(path)
    return la.astype(np.float32) / 255


def _fit(src, run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "image", str(src), "--out", str(run), *FIT]) == 0


def test_a_grey_alpha_image_is_fitted_and_written_as_two_channels(tmp_path):
    _grey_alpha(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png")[0].shape == (32, 32, 4)  # the NeRF loader's reading, unchanged
    run = tmp_path / "run"
    _fit(tmp_path / "la.png", run)
    assert json.loads((run / "config.json").read_text())["channels"] == 2
    assert Image.open(run / "reconstruction.png").mode == "LA"
    for suffix in (".png", ".exr", ".tif"):
        assert cli.main(["render", str(run), "--out", str(tmp_path / f"r{suffix}")]) == 0
        pixels, info = read_image(tmp_path / f"r{suffix}", grey_alpha=True)
        assert pixels.shape == (32, 32, 2) and info["channels"] == 2, suffix
    reference = read_image(tmp_path / "r.png", grey_alpha=True)[0]
    tif = read_image(tmp_path / "r.tif", grey_alpha=True)[0]
    assert np.abs(tif - reference).max() <= 0.5 / 255 + 1e-3
    exr = read_image(tmp_path / "r.exr", grey_alpha=True)[0]  # linear, as EXR defines it: the grey decoded
    assert np.abs(exr[..., 1] - reference[..., 1]).max() <= 0.5 / 255 + 1e-3
    assert np.abs(exr[..., 0] - srgb_to_linear(reference[..., 0])).max() <= 1.2 / 255 + 1e-3
    with pytest.warns(RwfWarning, match="JPEG has no alpha channel"):
        assert cli.main(["render", str(run), "--out", str(tmp_path / "r.jpg")]) == 0
    assert read_image(tmp_path / "r.jpg")[0].shape == (32, 32, 1)


@pytest.mark.parametrize("then", ["RGBA", "L"])
def test_a_run_fitted_when_grey_alpha_was_read_otherwise_still_evaluates_and_resumes(tmp_path, then):
    """Fit the image as an earlier version read the LA file (RGBA, the grey repeated, until 30 Nov 2026; the grey
    alone, alpha dropped, before 28 Nov), then put the LA file of the same pixels in its place, with its sha256: what
    such a run holds. eval gives the same figures, a render keeps the run's channels, --resume goes on."""
    la = _grey_alpha(tmp_path / "la.png")
    pixels = np.concatenate([np.repeat(la[..., :1], 3, -1), la[..., 1:]], -1) if then == "RGBA" else la[..., 0]
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), then).save(tmp_path / "src.png")
    channels = {"RGBA": 4, "L": 1}[then]
    run = tmp_path / "run"
    _fit(tmp_path / "src.png", run)
    before = json.loads((run / "metrics.json").read_text())
    (tmp_path / "src.png").write_bytes((tmp_path / "la.png").read_bytes())
    cfg = json.loads((run / "config.json").read_text())
    cfg["source"]["sha256"] = hashlib.sha256((tmp_path / "src.png").read_bytes()).hexdigest()
    (run / "config.json").write_text(json.dumps(cfg))
    assert cfg["channels"] == channels
    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    after = json.loads((run / "metrics.json").read_text())
    assert after["psnr"] == pytest.approx(before["psnr"], abs=1e-6) and after["ssim"] == pytest.approx(before["ssim"])
    assert cli.main(["render", str(run), "--out", str(tmp_path / "old.png")]) == 0
    assert read_image(tmp_path / "old.png")[0].shape == (32, 32, channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["fit", "image", str(tmp_path / "src.png"), "--out", str(run), "--resume", "--steps", "40",
                         "--quiet", "--device", "cpu"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 40
