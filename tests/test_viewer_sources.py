"""The render callback of every run kind, without a browser: image size, and what the pixels must be."""

import math

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.cameras import Cameras, look_at, pixel_rays, project
from rwf_render.errors import UserError
from rwf_render.mesh import Normalization
from rwf_render.rundir import CHECKPOINT, load_checkpoint, save_checkpoint
from viewer.camera import ViewCamera, image_size
from viewer.nerf_source import NeRFSource, nerf_api
from viewer.sdf_source import SDFSource
from viewer.sources import FAR, open_run, render_view

CPU = torch.device("cpu")
SMALL = ["--steps", "10", "--width", "32", "--features", "16", "--quiet"]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("viewer") / "image"
    assert cli.main(["fit", "image", "--out", str(run), "--size", "24", *SMALL]) == 0
    return run


@pytest.fixture(scope="module")
def sdf_fit(tmp_path_factory):
    """One SDF fit with the live viewer attached as ``rwf fit sdf --view`` attaches it (the process's trainer
    callbacks), and a probe that renders the live snapshot and a slice after the last step."""
    pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")
    from rwf_render import trainer as trainer_module
    from viewer.live import LiveViewer

    run = tmp_path_factory.mktemp("viewer") / "sdf"
    live, seen = LiveViewer("sdf", port=0), {}

    class Probe:
        def on_end(self, trainer):
            source = live.app.source
            source.offer_state({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            c2w = np.eye(4)
            c2w[:3, 3] = source.center + [0.0, 0.0, 3 * source.scene_radius()]
            frame = render_view(source, ViewCamera.from_c2w(c2w, 0.8, 1.0), 24, "shaded")
            seen.update(shape=frame.rgb.shape, slice=source.slice_image("y", 0.1, "RdBu", res=16).shape,
                        source_mesh=source.source_mesh is not None, version=source.version)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "_PROCESS_CALLBACKS", [live, Probe()])
        try:
            assert cli.main(["fit", "sdf", "--out", str(run), "--pool", "4096", "--batch", "512", "--eval-points",
                             "2048", "--mesh-res", "24", "--preview-res", "8", *SMALL]) == 0
        finally:
            if live.app is not None:
                live.app.stop()
    return run, seen


@pytest.fixture(scope="module")
def sdf_run(sdf_fit):
    return sdf_fit[0]


def views(source, aspects=(4 / 3, 0.6)):
    pos, target = source.initial_view()
    c2w = look_at(torch.as_tensor(pos, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64),
                  up=torch.tensor(source.up, dtype=torch.float64))
    return [ViewCamera.from_c2w(c2w, math.radians(50), a) for a in aspects]


def check_sizes(source, modes, sides=(40, 57), aspects=(4 / 3, 0.6)):
    for view in views(source, aspects):
        for side in sides:
            w, h = image_size(side, view.aspect)
            for mode in modes:
                frame = render_view(source, view, side, mode)
                assert frame.rgb.shape == (h, w, 3), (mode, side, view.aspect)
                assert frame.rgb.dtype == np.float32 and 0 <= frame.rgb.min() and frame.rgb.max() <= 1
                assert frame.depth is None or frame.depth.shape == (h, w)


# -- image runs ----------------------------------------------------------------------------------------------------
def test_image_run_renders_requested_sizes(image_run):
    source = open_run(image_run, CPU)
    check_sizes(source, source.modes)


def test_image_plane_seen_straight_on_is_the_image(image_run):
    """A camera whose frustum exactly covers the image plane sees, pixel for pixel, the training image (target
    mode) and the field at the pixel centres (reconstruction mode)."""
    from rwf_render.image import render

    source = open_run(image_run, CPU)
    h, w = source.target.shape[:2]
    ex, ey = source.extent
    dist = 2.0
    fov = 2 * math.atan(ey / 2 / dist)  # vertical: the image's height exactly
    c2w = np.eye(4)
    c2w[:3, 3] = [ex / 2, -ey / 2, dist]  # OpenGL: looks down -z at the plane z = 0, +y up
    view = ViewCamera.from_c2w(c2w, fov, w / h)
    target = render_view(source, view, max(w, h), "target")
    np.testing.assert_array_equal(target.rgb, source.target[..., :3])
    np.testing.assert_allclose(target.depth, dist, rtol=1e-6)
    recon = render_view(source, view, max(w, h), "reconstruction")
    np.testing.assert_allclose(recon.rgb, render(source.model, h, w, 1.0, CPU)[..., :3], atol=2e-5)
    panels = source.images()
    assert panels["error"].shape == (h, w, 3) and np.isfinite(panels["psnr_all"])


def test_an_image_run_whose_source_is_gone_opens_with_the_reconstruction_only(tmp_path, capsys):
    """The source image moved after the fit: the run still opens (a warning), with the reconstruction mode and
    panel only, rendering what it rendered while the image was there."""
    from rwf_render.imgio import write_image

    src = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    write_image(src, rng.random((12, 16, 3)).astype(np.float32))
    run = tmp_path / "run"
    assert cli.main(["fit", "image", str(src), "--out", str(run), *SMALL]) == 0
    with_source = open_run(run, CPU)
    view = next(iter(views(with_source, (4 / 3,))))
    before = render_view(with_source, view, 40, "reconstruction").rgb
    src.unlink()
    capsys.readouterr()
    alone = open_run(run, CPU)
    assert "source image unavailable" in capsys.readouterr().err
    assert alone.modes == ("reconstruction",) and alone.target.shape[:2] == (12, 16)
    np.testing.assert_array_equal(render_view(alone, view, 40, "reconstruction").rgb, before)
    panels = alone.images()
    assert set(panels) == {"reconstruction", "psnr_all"} and panels["reconstruction"].shape == (12, 16, 3)
    assert "unavailable" in alone._psnr_text(panels["psnr_all"])


def test_reload_shows_the_newest_checkpoint(image_run):
    source = open_run(image_run, CPU)
    saved = {k: v.clone() for k, v in source.model.state_dict().items()}
    with torch.no_grad():
        for p in source.model.parameters():
            p.zero_()
    assert source.reload() and source.sync() and source.version == 1
    for k, v in source.model.state_dict().items():
        assert torch.equal(v, saved[k]), k


# -- SDF runs ------------------------------------------------------------------------------------------------------
def test_sdf_run_renders_requested_sizes(sdf_run):
    source = open_run(sdf_run, CPU)
    assert source.extracted is not None and source.source_mesh is not None
    assert source.default_mode == "off"  # the extracted mesh is shown; the field render is one click away
    check_sizes(source, ("shaded", "normals", "depth"), sides=(33,), aspects=(0.6,))


def test_live_viewer_on_an_sdf_fit(sdf_fit):
    assert sdf_fit[1] == {"shape": (24, 24, 3), "slice": (16, 16, 3), "source_mesh": True, "version": 1}


class Sphere(torch.nn.Module):
    """Exact signed distance to a sphere of radius r at the unit-cube origin: (N, 3) -> (N, 1)."""

    def __init__(self, r):
        super().__init__()
        self.r = r

    def forward(self, x):
        return x.norm(dim=-1, keepdim=True) - self.r


def test_sdf_depth_is_in_source_units():
    """Normalization center c, scale s: a sphere of unit-cube radius 0.3 has radius 0.3 / s in the scene; the
    camera's z-depth to its front must be (distance to c) - 0.3 / s at the image centre."""
    norm = Normalization((1.0, -2.0, 0.5), 0.25)
    source = SDFSource(Sphere(0.3), "sdf", norm, CPU)
    eye = torch.tensor([1.0, -2.0, 0.5]) + torch.tensor([0.0, 0.0, 6.0])
    c2w = look_at(eye.double(), torch.tensor(norm.center, dtype=torch.float64), up=torch.tensor([0.0, 1.0, 0.0]))
    frame = render_view(source, ViewCamera.from_c2w(c2w, 0.6, 1.0), 31, "depth")
    assert frame.depth[15, 15] == pytest.approx(6.0 - 0.3 / 0.25, abs=2e-3 / 0.25)
    assert frame.depth[0, 0] == FAR  # a corner ray misses


def test_slice_texture_and_its_placement_agree():
    """Texture pixel (row i, column j) sampled at the world point where the image node puts that pixel. viser
    draws image nodes in the OpenCV convention: local +x right, +y down (client ThreeAssets.tsx, ViserImage)."""
    from rwf_render.camera_path import matrix_from_quat

    norm = Normalization((0.5, 0.2, -1.0), 2.0)
    source = SDFSource(Sphere(0.3), "sdf", norm, CPU)
    res = 8
    for axis in ("x", "y", "z"):
        pts = source.slice_points(axis, 0.1, res)
        assert torch.allclose(pts[..., "xyz".index(axis)], torch.tensor(0.1))
        wxyz, position = source.slice_pose(axis, 0.1)
        R, side = matrix_from_quat(wxyz), 1.0 / norm.scale
        for i, j in ((0, 0), (0, res - 1), (res - 1, 2)):
            local = np.array([(j + 0.5) / res - 0.5, (i + 0.5) / res - 0.5, 0.0]) * side  # +x right, +y down
            np.testing.assert_allclose(position + R @ local, norm.from_unit(pts[i, j].numpy()), atol=1e-6)
    img = source.slice_image("z", 0.0, "RdBu", res=64)
    assert img.shape == (64, 64, 3)
    assert (img[32, 32] != img[0, 0]).any()  # inside (centre) and outside (corner) colour differently


# -- NeRF runs -----------------------------------------------------------------------------------------------------
class StandInScene(torch.nn.Module):
    """The contract's scene model, with an analytic renderer: a sphere of radius 0.5 at the origin."""

    def __init__(self, image_paths=()):
        super().__init__()
        self.field = torch.nn.Linear(3, 4)
        self.grid = None
        self.register_buffer("aabb", torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]))
        self.register_buffer("background", torch.ones(3))
        eyes = torch.tensor([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [-3.0, 0.0, 1.0]])
        self.train_cameras = Cameras.create(look_at(eyes, torch.zeros(3)), fx=30.0, width=32, height=24)
        self.train_image_paths = list(image_paths)


class StandInAPI:
    @staticmethod
    def load_scene_model(run, device):
        return StandInScene()

    @staticmethod
    def render_camera(model, cam, max_samples=None, chunk=None):
        o, d = pixel_rays(cam)  # unit directions (H, W, 3)
        b = (o * d).sum(-1)
        disc = b * b - ((o * o).sum(-1) - 0.25)
        hit = disc > 0
        t = torch.where(hit, -b - disc.clamp(min=0).sqrt(), torch.zeros_like(b))
        normal = torch.nn.functional.normalize(o + t[..., None] * d, dim=-1)
        rgb = torch.where(hit[..., None], 0.5 + 0.5 * normal, model.background.expand_as(normal))
        return {"rgb": rgb, "depth": t, "opacity": hit.float()}


def test_nerf_source_renders_sizes_and_z_depth():
    source = NeRFSource.from_run(None, {"kind": "nerf"}, CPU, api=StandInAPI)
    check_sizes(source, source.modes)
    view = views(source, aspects=(1.5,))[0]
    frame = render_view(source, view, 48, "rgb")
    hit = frame.depth < FAR
    assert 0 < hit.sum() < hit.size
    # composited depth is z-depth: the hit points' projections agree with it
    w, h = image_size(48, 1.5)
    cams = view.cameras(w, h)
    o, d = pixel_rays(cams, normalize=False)
    pts = (o + torch.from_numpy(frame.depth)[..., None] * d)[torch.from_numpy(hit)]
    np.testing.assert_allclose(pts.norm(dim=-1).numpy(), 0.5, atol=1e-4)  # on the sphere
    _, zdepth = project(pts, cams)
    np.testing.assert_allclose(zdepth[0].numpy(), frame.depth[hit], rtol=1e-5)


def test_nerf_pipeline_missing_is_one_readable_error():
    with pytest.raises(UserError, match="NeRF pipeline"):
        nerf_api("rwf_render.no_such_pipeline")


def test_reload_takes_a_checkpoint_saved_before_rwf_layers_recorded_their_kind(image_run, tmp_path):
    # Checkpoints written before the RWF layers' `_extra_state` have no such keys; the run's config.json says the
    # kind. A checkpoint of RWF layers of the other kind (log scales) is refused, as one of another model.
    source = open_run(image_run, CPU)
    original = (image_run / CHECKPOINT).read_bytes()
    state = load_checkpoint(image_run / CHECKPOINT)
    try:
        extra = [k for k in state["model"] if k.endswith("_extra_state")]
        assert extra
        legacy = {**state, "model": {k: v for k, v in state["model"].items() if k not in extra}}
        save_checkpoint(image_run / CHECKPOINT, legacy)
        assert source.reload() and source.sync()
        flipped = {**state, "model": {**state["model"], **{k: torch.tensor(1) for k in extra}}}
        save_checkpoint(image_run / CHECKPOINT, flipped)
        with pytest.raises(UserError, match="does not fit the model shown"):
            source.reload()
    finally:
        (image_run / CHECKPOINT).write_bytes(original)


def test_a_far_surface_of_a_large_scene_is_no_empty_pixel():
    # "Nothing here" was a z-depth of 1e4 scene units, tested before the view scale: a surface 3.2e4 units away in a
    # scene shown at 1e-4 went to viser as behind everything instead of at 3.2 viewer units (a units hunt).
    from viewer.sources import VISER_MAX_DEPTH, viser_depth

    got = viser_depth(np.array([[3.2e4, FAR, np.nan]]), 1e-4)
    np.testing.assert_allclose(got, [[3.2, VISER_MAX_DEPTH, VISER_MAX_DEPTH]], rtol=1e-6)


class SteepSphere(Sphere):
    """The sphere's distance times 3: the same surface, a field three times steeper than a distance (learned fields
    reach 2 to 7)."""

    def forward(self, x):
        return 3.0 * super().forward(x)


def test_a_steep_field_is_traced_to_its_surface():
    """Steps of 0.9 f overshot a slope-3 field by far: every ray stepped over the sphere and the view was blank.
    Steps are shortened by the field's slope (once per model version), as the fit's preview does."""
    norm = Normalization((0.0, 0.0, 0.0), 1.0)
    eye = torch.tensor([0.0, 0.0, 2.5])
    c2w = look_at(eye.double(), torch.zeros(3, dtype=torch.float64), up=torch.tensor([0.0, 1.0, 0.0]))
    exact = render_view(SDFSource(Sphere(0.3), "sdf", norm, CPU), ViewCamera.from_c2w(c2w, 0.6, 1.0), 31, "depth")
    steep_source = SDFSource(SteepSphere(0.3), "sdf", norm, CPU)
    steep = render_view(steep_source, ViewCamera.from_c2w(c2w, 0.6, 1.0), 31, "depth")
    assert steep_source.slope() == pytest.approx(3.0, rel=0.05)
    hits, found = exact.depth < FAR, steep.depth < FAR
    assert hits.sum() > 100 and not (found & ~hits).any()
    assert found.sum() >= 0.9 * hits.sum()  # measured 113 of 121: a few grazing rays at the silhouette run out
    close = np.abs(steep.depth[found] - exact.depth[found]) < 5e-3  # (a few grazing rays land a little off)
    assert close.mean() > 0.95
