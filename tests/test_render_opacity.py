"""`rwf render RUN --opacity`: opacity_XXXX.png (16-bit grey) beside each frame's rgb and depth.

Closed form on a stub run: a real NeRFModel (occupancy grid marcher and compositor) whose field is a thin,
semi-transparent tilted sheet of constant density, seen by two cameras of a camera path; depth_XXXX.exr divided by
opacity_XXXX.png is then the distance along each pixel's ray to the sheet. On conftest's still_life_run (a real fit)
the files hold the opacity ``model.render_camera`` gives for the same cameras.
"""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rwf_render import cli, nerf_outputs
from rwf_render.imgio import read_image

from conftest import interrupt_render_writes, one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)

QUANTUM = 1 / 65535  # one step of a 16-bit PNG
NORMAL = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])  # the sheet: |NORMAL . x| < HALF
HALF, SIGMA = 0.02, 20.0  # optical thickness 0.8 across the sheet: opacity about 0.55 at these cameras' angles
COLOUR = (0.2, 0.5, 0.8)
EYES = [(0.1, -0.2, 2.5), (0.0, 0.15, 3.0)]  # camera centres above the sheet, looking down -z (identity rotation)
WIDTH, HEIGHT, FOV = 16, 12, 24.0  # a narrow view: every pixel's ray meets the sheet inside the box [-1, 1]^3


class SheetField(torch.nn.Module):
    """sigma = SIGMA inside the sheet (with ``cut``, only where x < 0, so part of each frame sees nothing), 0
    elsewhere; COLOUR everywhere (the field interface NeRFModel calls)."""

    def __init__(self, cut: bool = False):
        super().__init__()
        self.cfg = SimpleNamespace(mip=False)
        self.cut = cut
        self.register_buffer("aabb", torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]))
        self.register_buffer("normal", torch.tensor(NORMAL, dtype=torch.float32))

    def density(self, x, cov=None):
        inside = (x @ self.normal).abs() < HALF
        return torch.where(inside & (x[:, 0] < 0) if self.cut else inside, SIGMA, 0.0)

    def forward(self, x, d=None, image_idx=None, cov=None):
        return torch.tensor(COLOUR).expand(len(x), 3), self.density(x)


def sheet_model(background: str = "white", cut: bool = False):
    """A NeRFModel whose field is the sheet, on ``background``; a learned one gets a colour that varies strongly
    with direction."""
    from rwf_render.nerf_field import NeRFFieldConfig
    from rwf_render.nerf_render import NeRFModel, RenderConfig

    model = NeRFModel([-1, -1, -1, 1, 1, 1], NeRFFieldConfig(), RenderConfig(grid_resolution=16,
                                                                             steps_per_diagonal=512), background, seed=0)
    model.field = SheetField(cut)
    model.grid.fill_(True)  # every cell occupied: the marcher steps through the whole box (6 samples in the sheet)
    if model.bg_model is not None:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            model.bg_model.weight.copy_(torch.randn(model.bg_model.weight.shape, generator=gen) * 3)
    model.eval()
    return model


@pytest.fixture
def sheet_run(tmp_path, monkeypatch):
    """(run, camera path file, use): a nerf run folder, a two-frame path, and ``use(background, cut)``, which makes
    the run load as that sheet (white and whole by default) and returns the model."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "nerf", "data": str(tmp_path / "none"), "downscale": 1,
                                                 "aabb": [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]}))
    frames = [{"camera_to_world": [[1, 0, 0, x], [0, 1, 0, y], [0, 0, 1, z], [0, 0, 0, 1]], "fov": FOV}
              for x, y, z in EYES]
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"render_width": WIDTH, "render_height": HEIGHT, "fps": 24, "camera_path": frames}))

    def use(background: str = "white", cut: bool = False):
        model = sheet_model(background, cut)
        monkeypatch.setattr(nerf_outputs, "load_scene_model", lambda run, device="cpu": model)
        return model

    return run, path, use


def _sheet_distance(eye) -> tuple[np.ndarray, np.ndarray]:
    """Closed form, per pixel (HEIGHT, WIDTH): the distance along the unit ray to the sheet's mid-plane, and half
    the sheet's thickness along that ray (pinhole: focal 0.5 H / tan(fov / 2), pixel centres at +0.5, OpenGL camera
    looking down -z with y up)."""
    f = 0.5 * HEIGHT / math.tan(math.radians(FOV) / 2)
    v, u = np.meshgrid(np.arange(HEIGHT) + 0.5, np.arange(WIDTH) + 0.5, indexing="ij")
    d = np.stack([(u - WIDTH / 2) / f, -(v - HEIGHT / 2) / f, -np.ones_like(u)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    cos = -(d @ NORMAL)
    return float(np.dot(NORMAL, eye)) / cos, HALF / cos


def _render(run, *extra) -> int:
    return cli.main(["render", str(run), "--quiet", *map(str, extra)])


def _opacity(path) -> np.ndarray:
    pixels, info = read_image(path)
    assert info["bit_depth"] == 16 and pixels.shape[2] == 1, info
    return pixels[..., 0]


def test_depth_over_opacity_is_the_distance_to_the_sheet(sheet_run, tmp_path):
    """Closed form: depth_XXXX.exr / opacity_XXXX.png is, at every pixel of both frames, the distance along the ray
    to the sheet, to within half its thickness there (the weighted samples lie inside it); the depth alone falls
    short by about half that distance. The opacity is the renderer's for that camera (to one 16-bit step); --video
    makes rgb and depth videos only."""
    from rwf_render.camera_path import path_cameras

    run, path, use = sheet_run
    model = use()
    out = tmp_path / "frames"
    assert _render(run, "--camera-path", path, "--opacity", "--video", "--out", out) == 0
    assert sorted(p.name for p in out.glob("opacity_*")) == ["opacity_0000.png", "opacity_0001.png"]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["depth.mp4", "rgb.mp4"]
    cams = path_cameras(path)[0].to(dtype=torch.float32)
    for i, eye in enumerate(EYES):
        opacity = _opacity(out / f"opacity_{i:04d}.png")
        depth = read_image(out / f"depth_{i:04d}.exr")[0][..., 0]
        want = model.render_camera(cams[i])["opacity"].numpy()
        assert np.abs(opacity - want).max() <= QUANTUM
        assert 0.3 < opacity.min() and opacity.max() < 0.8  # semi-transparent everywhere: the division matters
        t, half = _sheet_distance(eye)
        assert np.abs(depth / opacity - t).max() < 0.1  # sanity, before the tight bound
        assert (np.abs(depth / opacity - t) <= half + 1e-3).all(), np.abs(depth / opacity - t).max()
        assert (np.abs(depth - t) > 0.3 * t).all()


@pytest.mark.parametrize("option", ["opacity", "rgba"])
def test_without_the_option_nothing_changes_and_a_rerender_drops_its_stale_frames(sheet_run, tmp_path, option):
    """No opacity (rgba) file without --opacity (--rgba); with it, rgb (8-bit RGB, no alpha), depth and its preview
    are the same bytes as without it (a learned background, which rgba takes off). A later render into that folder
    without the option removes the frames the earlier render wrote for it (its manifest lists them), as it does
    other frames it does not write again, and keeps a file of the user's own named like one."""
    run, path, use = sheet_run
    use("learned", cut=True)
    plain, more = tmp_path / "plain", tmp_path / "more"
    assert _render(run, "--camera-path", path, "--out", plain) == 0
    assert _render(run, "--camera-path", path, f"--{option}", "--out", more) == 0
    assert not list(plain.glob(f"{option}_*"))
    names = sorted(p.name for p in plain.iterdir())
    assert sorted(p.name for p in more.iterdir()) == sorted(names + [f"{option}_0000.png", f"{option}_0001.png"])
    for name in names:
        if name != nerf_outputs.MANIFEST:
            assert (plain / name).read_bytes() == (more / name).read_bytes(), name
    info = read_image(more / "rgb_0000.png")[1]
    assert (info["channels"], info["bit_depth"]) == (3, 8)
    (more / f"{option}_0007.png").write_bytes(b"the user's")
    assert _render(run, "--camera-path", path, "--out", more) == 0
    assert sorted(p.name for p in more.iterdir()) == sorted(names + [f"{option}_0007.png"])


@pytest.mark.parametrize("option", ["opacity", "rgba"])
@pytest.mark.parametrize("after", [3, 7])
def test_an_interrupted_render_leaves_the_earlier_render(sheet_run, tmp_path, monkeypatch, after, option):
    """Ctrl+C at the first frame's opacity (rgba) write (4th write) or the second's (8th): exit 130, the folder
    holds the earlier render byte for byte, no opacity (rgba) file, no staging folder."""
    run, path, use = sheet_run
    use()
    out = tmp_path / "frames"
    assert _render(run, "--camera-path", path, "--out", out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = interrupt_render_writes(monkeypatch, after=after)
    assert _render(run, "--camera-path", path, f"--{option}", "--out", out) == 130
    assert calls[-1].name == f"{option}_{after // 4:04d}.png"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "path.json", "run"]


def test_still_life_opacity_is_the_renderers(still_life_run, tmp_path):
    """A real fit, --split test: one opacity file per frame, each the opacity model.render_camera gives for that
    split's camera at --downscale 4 (to one 16-bit step); the object covers part of each frame, not all of it."""
    from rwf_render.datasets import load_transforms
    from rwf_render.nerf import load_scene_model

    out = tmp_path / "test"
    assert _render(still_life_run, "--split", "test", "--opacity", "--downscale", "4", "--out", out) == 0
    model = load_scene_model(still_life_run)
    tf = load_transforms(model.cfg.data, "test")
    cams = nerf_outputs.scaled_cameras(nerf_outputs.scaled_cameras(tf.cameras.to(dtype=torch.float32),
                                                                   model.cfg.downscale), 4)
    frames = sorted(out.glob("rgb_*.png"))
    assert len(frames) == len(cams) == len(list(out.glob("opacity_*.png"))) > 0
    for i in range(len(cams)):
        opacity = _opacity(out / f"opacity_{i:04d}.png")
        want = model.render_camera(cams[i], **nerf_outputs.frame_bounds(tf.near_far, i))["opacity"].numpy()
        assert opacity.shape == want.shape == (8, 8)
        assert np.abs(opacity - want).max() <= QUANTUM
        assert opacity.max() > 0.9 and opacity.min() < 0.1


@pytest.mark.parametrize("option", ["opacity", "rgba"])
def test_the_option_is_refused_for_an_image_run(tmp_path, capsys, option):
    """As every nerf-only render option: exit 2, one line, nothing written."""
    run = tmp_path / "run"
    assert cli.main(["fit", "image", "--size", "16", "--features", "8", "--width", "16", "--steps", "1", "--quiet",
                     "--out", str(run)]) == 0
    before = sorted(p.name for p in run.iterdir())
    err = one_cli_error(capsys, ["render", run, f"--{option}", "--out", tmp_path / "r.png"])
    assert f"--{option} applies to nerf runs" in err
    assert not (tmp_path / "r.png").exists() and sorted(p.name for p in run.iterdir()) == before
