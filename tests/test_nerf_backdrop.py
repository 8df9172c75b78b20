"""Opaque images on a plain white or black backdrop (a render saved without alpha, a studio shot) keep the synthetic
settings on that colour, instead of the real capture's: with the learned background, lego rendered on white without
alpha scored 10.6 dB on its test views after 1000 steps, against 26.1 dB on white (BENCHMARKS.md)."""

import json

import numpy as np
import pytest

from rwf_render import cli
from rwf_render.imgio import write_image
from rwf_render.nerf_data import load_split
from rwf_render.nerf_options import REAL_CAPTURE, REAL_CAPTURE_FOURIER, config_from_args, real_capture_config
from test_datasets_nerfstudio_box import _nerfstudio

TINY = ["--steps", "2", "--eval-every", "2", "--eval-images", "1", "--width", "16", "--features", "8",
        "--target-samples", "512", "--quiet"]


def _framed(root, level: float, spoil: int = 0):
    """The random opaque ring of views, each with a one-pixel frame of ``level``, ``spoil`` pixels of each frame mid
    grey."""
    root = _nerfstudio(root)
    for i in range(16):
        img = np.random.default_rng(i).random((12, 16, 3)).astype(np.float32)
        img[0], img[-1], img[:, 0], img[:, -1] = level, level, level, level
        if spoil:
            img[0, 1:1 + spoil] = 0.5  # not a corner (those count in a row and a column)
        write_image(root / f"f{i}.png", img)
    return root


@pytest.mark.parametrize("level, name", [(1.0, "white"), (0.0, "black")])
def test_a_plain_frame_is_the_backdrop(tmp_path, level, name):
    assert load_split(_framed(tmp_path / "d", level), "train", 1).backdrop() == name


def test_photos_of_the_world_have_no_backdrop(tmp_path):
    assert load_split(_nerfstudio(tmp_path / "ns"), "train", 1).backdrop() is None
    # a 16 x 12 view's frame: 56 pixels (corners twice); one grey pixel each leaves 98.2 %, two 96.4 % (< 98 %)
    assert load_split(_framed(tmp_path / "a", 1.0, spoil=1), "train", 1).backdrop() == "white"
    assert load_split(_framed(tmp_path / "b", 1.0, spoil=2), "train", 1).backdrop() is None


def test_a_backdrop_keeps_the_synthetic_settings_on_its_colour(tmp_path):
    args = cli.build_parser().parse_args(["fit", "nerf", str(tmp_path)])
    for backdrop in ("white", "black"):
        cfg, taken = real_capture_config(args, config_from_args(args), True, True, backdrop=backdrop)
        assert taken == {"background": backdrop} and cfg.background == backdrop
        assert (cfg.render.grid_levels, cfg.render.grid_resolution, cfg.render.cone_angle) == (1, 128, 0.0)
        assert cfg.render.far_bounds and "occlusion" not in cfg.train.loss_weights
    assert real_capture_config(args, config_from_args(args), True, False)[1] == {**REAL_CAPTURE,
                                                                              **REAL_CAPTURE_FOURIER}  # no backdrop
    typed = cli.build_parser().parse_args(["fit", "nerf", str(tmp_path), "--background", "learned"])
    cfg, taken = real_capture_config(typed, config_from_args(typed), True, False, backdrop="white")
    assert taken == {} and cfg.background == "learned"


def test_the_fit_of_renders_on_black_says_so_and_trains_on_black(tmp_path, capsys):
    root = _framed(tmp_path / "d", 0.0)
    assert cli.main(["fit", "nerf", str(root), "--out", str(tmp_path / "run"), *TINY]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "backdrop" in x)
    assert "plain black backdrop" in line and "--background black" in line and "(a real capture)" not in err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["background"] == "black" and saved["render"]["grid_levels"] == 1


def test_transparent_images_are_not_asked_for_a_backdrop(tmp_path, monkeypatch):
    from conftest import random_views_scene  # noqa: PLC0415
    from rwf_render import nerf_data  # noqa: PLC0415

    def refuse(self, *a, **k):
        raise AssertionError("backdrop() read for transparent images")

    monkeypatch.setattr(nerf_data.PosedImages, "backdrop", refuse)
    data = random_views_scene(tmp_path / "rgba", {"train": 3, "test": 1})
    assert cli.main(["fit", "nerf", str(data), "--out", str(tmp_path / "run"), *TINY]) == 0
