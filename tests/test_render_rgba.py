"""`rwf render RUN --rgba`: rgba_XXXX.png, the scene alone as a 16-bit RGBA PNG with straight alpha.

Closed form on a stub run: a real NeRFModel (occupancy grid marcher and compositor) whose field is a thin,
semi-transparent tilted sheet of one colour, cut off at x = 0 so that part of each frame sees nothing. The straight
colour is then the sheet's colour wherever the alpha is not 0 (a premultiplied one would be darker where the sheet is
faint), the alpha is the opacity, and the matte over the run's background gives the rgb back: over white for a white
run, over the learned colour of each pixel's direction for a learned run. On conftest's still_life_run (a real fit)
the matte over black is the renderer's colour on black, and over white the rgb, for every path option. The sheet
and the file bookkeeping (nothing else changes, stale frames dropped, an interrupted render leaves the earlier one)
are shared with --opacity's tests, in test_render_opacity.py.
"""

import numpy as np
import pytest
import torch

from rwf_render import nerf_outputs
from rwf_render.imgio import read_image

from test_render_opacity import COLOUR, EYES, HEIGHT, WIDTH, _render, sheet_model, sheet_run  # noqa: F401 (fixture)

Q16, Q8 = 1 / 65535, 1 / 255  # one step of a 16-bit and of an 8-bit PNG
MATTE = 2 * Q16  # colour x alpha from a 16-bit colour and a 16-bit alpha: half a step of each, and float error


def _rgba(path) -> tuple[np.ndarray, np.ndarray]:
    """(colour (H, W, 3), alpha (H, W)) of a 16-bit RGBA PNG."""
    pixels, info = read_image(path)
    assert (info["channels"], info["bit_depth"]) == (4, 16), info
    return pixels[..., :3].astype(np.float64), pixels[..., 3].astype(np.float64)


def _read(path) -> np.ndarray:
    return read_image(path)[0].astype(np.float64)


def _path_cameras(path):
    from rwf_render.camera_path import path_cameras

    return path_cameras(path)[0].to(dtype=torch.float32)


def test_rgba_is_the_straight_colour_and_the_opacity_and_gives_the_white_render_back(sheet_run, tmp_path):
    """White run, two frames: alpha is opacity_XXXX.png value for value; the colour is the sheet's own colour
    wherever alpha > 0 (straight, not multiplied by the alpha of about 0.55) and 0 where alpha is 0, which is part of
    each frame; colour x alpha + (1 - alpha) x white is rgb_XXXX.png to its 8-bit step. --video makes no rgba
    video."""
    run, path, use = sheet_run
    use("white", cut=True)
    out = tmp_path / "frames"
    assert _render(run, "--camera-path", path, "--rgba", "--opacity", "--video", "--out", out) == 0
    assert sorted(p.name for p in out.glob("rgba_*")) == ["rgba_0000.png", "rgba_0001.png"]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["depth.mp4", "rgb.mp4"]
    for i in range(len(EYES)):
        colour, alpha = _rgba(out / f"rgba_{i:04d}.png")
        assert np.array_equal(alpha, _read(out / f"opacity_{i:04d}.png")[..., 0])
        hit = alpha > 0
        assert 0.2 < hit.mean() < 0.8 and 0.3 < alpha[hit].mean() < 0.8  # part empty, the rest semi-transparent
        assert np.abs(colour[hit] - COLOUR).max() <= Q16
        assert (colour[~hit] == 0).all()
        over_white = colour * alpha[..., None] + (1 - alpha[..., None])
        assert np.abs(over_white - _read(out / f"rgb_{i:04d}.png")).max() <= Q8 / 2 + MATTE


def test_learned_background_rgba_is_the_render_on_black(sheet_run, tmp_path):
    """Learned background (a colour by direction that the rgb shows where the opacity is 0): the alpha is the
    opacity file's, colour x alpha is the same scene rendered on black (a twin model with a black background) to
    within 16-bit quantization, and adding (1 - alpha) x the learned colour of each pixel's ray gives
    rgb_XXXX.png back; the rgb alone does not hold the matte (its empty pixels are far from one colour)."""
    from rwf_render.cameras import pixel_rays

    run, path, use = sheet_run
    model = use("learned", cut=True)
    out = tmp_path / "frames"
    assert _render(run, "--camera-path", path, "--rgba", "--opacity", "--out", out) == 0
    black = sheet_model("black", cut=True)
    cams = _path_cameras(path)
    for i in range(len(EYES)):
        colour, alpha = _rgba(out / f"rgba_{i:04d}.png")
        rgb = _read(out / f"rgb_{i:04d}.png")
        assert np.array_equal(alpha, _read(out / f"opacity_{i:04d}.png")[..., 0])
        on_black = black.render_camera(cams[i])["rgb"].numpy()
        assert np.abs(colour * alpha[..., None] - on_black).max() <= MATTE
        assert (colour[alpha == 0] == 0).all() and 0.2 < (alpha > 0).mean() < 0.8
        with torch.no_grad():
            bg = model.background_rgb(pixel_rays(cams[i])[1].reshape(-1, 3), None).reshape(HEIGHT, WIDTH, 3).numpy()
        assert np.ptp(rgb[alpha == 0], axis=0).max() > 0.05  # the background varies: no single colour to key out
        assert np.abs(colour * alpha[..., None] + (1 - alpha[..., None]) * bg - rgb).max() <= Q8 / 2 + MATTE


def test_black_background_rgba_over_black_is_the_rgb(sheet_run, tmp_path):
    """Black run: the matte over black is rgb_XXXX.png (its colour on black) to its 8-bit step."""
    run, path, use = sheet_run
    use("black", cut=True)
    out = tmp_path / "frames"
    assert _render(run, "--camera-path", path, "--rgba", "--out", out) == 0
    for i in range(len(EYES)):
        colour, alpha = _rgba(out / f"rgba_{i:04d}.png")
        assert alpha.max() > 0.3
        assert np.abs(colour * alpha[..., None] - _read(out / f"rgb_{i:04d}.png")).max() <= Q8 / 2 + MATTE


def test_rgba_pixels_divides_by_the_opacity_and_zeroes_empty_pixels():
    """The conversion alone: colour = premultiplied / opacity in [0, 1]; 0 where the opacity rounds to a 16-bit
    alpha of 0 (even with a premultiplied colour of float noise there); alpha clipped to [0, 1]."""
    premultiplied = np.array([[[0.1, 0.2, 0.3], [1e-6, 1e-6, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]], np.float32)
    opacity = np.array([[0.5, 1e-6, 1.0000001, 0.0]], np.float32)
    out = nerf_outputs.rgba_pixels(premultiplied, opacity)
    assert out.shape == (1, 4, 4) and out.dtype == np.float32
    assert np.allclose(out[0, 0], [0.2, 0.4, 0.6, 0.5])
    assert (out[0, 1, :3] == 0).all() and out[0, 1, 3] < nerf_outputs.EMPTY and (out[0, 3] == 0).all()
    assert np.allclose(out[0, 2], [0.5, 0.5, 0.5, 1.0]) and out.max() <= 1 and out.min() >= 0


def test_still_life_rgba_is_the_render_on_black(still_life_run, tmp_path):
    """A real fit (random backgrounds, shown on white), --split test at --downscale 4: per frame, the alpha is the
    renderer's opacity, colour x alpha is the run rendered on black (its background forced to black) to within 16-bit
    quantization, and over white it is rgb_XXXX.png; the object covers part of each frame."""
    from rwf_render.datasets import load_transforms
    from rwf_render.nerf import load_scene_model

    out = tmp_path / "test"
    assert _render(still_life_run, "--split", "test", "--rgba", "--downscale", "4", "--out", out) == 0
    model = load_scene_model(still_life_run)
    model.background = "black"  # what background_rgb reads: no background added
    tf = load_transforms(model.cfg.data, "test")
    cams = nerf_outputs.scaled_cameras(nerf_outputs.scaled_cameras(tf.cameras.to(dtype=torch.float32),
                                                                   model.cfg.downscale), 4)
    assert len(cams) == len(list(out.glob("rgba_*.png"))) == len(list(out.glob("rgb_*.png"))) > 0
    for i in range(len(cams)):
        colour, alpha = _rgba(out / f"rgba_{i:04d}.png")
        res = model.render_camera(cams[i], **nerf_outputs.frame_bounds(tf.near_far, i))
        assert alpha.shape == (8, 8) and np.abs(alpha - res["opacity"].numpy()).max() <= Q16 / 2 + 1e-7
        assert alpha.max() > 0.9 and alpha.min() < 0.1
        assert np.abs(colour * alpha[..., None] - res["rgb"].numpy()).max() <= MATTE
        over_white = colour * alpha[..., None] + (1 - alpha[..., None])
        assert np.abs(over_white - _read(out / f"rgb_{i:04d}.png")).max() <= Q8 / 2 + MATTE


@pytest.mark.filterwarnings("ignore:--spiral")  # the still life is no forward-facing capture; the path still renders
@pytest.mark.parametrize("how", [["--orbit", "2"], ["--spiral", "2"], ["--interpolate", "1"]])
def test_still_life_rgba_for_every_path(still_life_run, tmp_path, how):
    """--orbit, --spiral and --interpolate (with --downscale 4): one rgba file per rgb frame, whose matte over white
    is that frame and whose alpha is in [0, 1] and not all of one value."""
    out = tmp_path / "path"
    assert _render(still_life_run, *how, "--rgba", "--downscale", "4", "--out", out) == 0
    frames = sorted(out.glob("rgb_*.png"))
    assert len(frames) == len(list(out.glob("rgba_*.png"))) >= 2
    for rgb_file in frames:
        colour, alpha = _rgba(out / rgb_file.name.replace("rgb_", "rgba_"))
        assert 0 <= alpha.min() < alpha.max() <= 1 and 0 <= colour.min() and colour.max() <= 1
        over_white = colour * alpha[..., None] + (1 - alpha[..., None])
        assert np.abs(over_white - _read(rgb_file)).max() <= Q8 / 2 + MATTE

