"""Rendering memory proportional to the output (a helper measured about 100 bytes a pixel for a NeRF frame, 7 GB
at 8000 x 8000, before any sample was taken): the rays of a frame are made chunk by chunk, the chunks' results
written into place, and the depth colours looked up in blocks of rows. Checked as properties: no step makes rays
for more than a chunk, the results equal the whole-frame computation, the depth colours equal matplotlib's."""

import matplotlib
import numpy as np
import pytest
import torch

from rwf_render import cli, nerf_render
from rwf_render.cameras import pixel_rays
from rwf_render.nerf import load_scene_model
from rwf_render.nerf_outputs import depth_colors
from test_nerf_bad_input_more import TINY


@pytest.fixture(scope="module")
def model(tiny_scene, tmp_path_factory):
    run = tmp_path_factory.mktemp("mem") / "run"
    assert cli.main(["fit", "nerf", str(tiny_scene), "--out", str(run), *TINY, "--steps", "30"]) == 0
    return load_scene_model(run)


@pytest.mark.parametrize("image_idx", [None, 0])
def test_render_camera_in_chunks_equals_the_whole_frame(model, monkeypatch, image_idx):
    cam = model.train_cameras[1:2]
    cam = type(cam)(**{**cam.__dict__, "width": cam.width * 0 + 37, "height": cam.height * 0 + 23,
                       "cx": cam.cx * 0 + 18.5, "cy": cam.cy * 0 + 11.5})
    o, d = pixel_rays(cam)  # the whole frame at once: the reference
    idx = None if image_idx is None else torch.full((37 * 23,), image_idx)
    radius = nerf_render.pixel_radius(cam)[:1].expand(37 * 23)
    with torch.no_grad():
        whole = model.render_rays(o.reshape(-1, 3), d.reshape(-1, 3), image_idx=idx, radii=radius)
    sizes, real = [], nerf_render.pixel_rays

    def counted(cams, pixels=None, *a, **k):
        sizes.append(None if pixels is None else len(pixels))
        return real(cams, pixels, *a, **k)
    monkeypatch.setattr(nerf_render, "pixel_rays", counted)
    model.render_cfg.chunk, chunk = 97, model.render_cfg.chunk
    try:
        with torch.no_grad():
            res = model.render_camera(cam, image_idx=image_idx, premultiplied=True)
    finally:
        model.render_cfg.chunk = chunk
    assert sizes and max(sizes) <= 97 and None not in sizes and sum(sizes) == 37 * 23
    assert res["rgb"].shape == (23, 37, 3) and res["premultiplied"].shape == (23, 37, 3)
    assert torch.allclose(res["rgb"], whole["rgb"].reshape(23, 37, 3).clamp(0, 1), atol=1e-6)
    assert torch.allclose(res["depth"], whole["depth"].reshape(23, 37), atol=1e-5)
    assert torch.allclose(res["opacity"], whole["opacity"].reshape(23, 37), atol=1e-6)
    assert float(res["opacity"].max()) > 0.05  # the frame shows something: a comparison of empty frames proves little


def test_depth_colours_equal_matplotlibs_turbo():
    rng = np.random.default_rng(0)
    depth = rng.uniform(-1.0, 5.0, (700, 600)).astype(np.float32)  # more rows than one block
    depth[0, :512] = np.linspace(0.5, 3.0, 512)  # the table's every boundary, and both ends
    opacity = rng.random((700, 600)).astype(np.float32)
    want = matplotlib.colormaps["turbo"](np.clip((depth.astype(np.float64) - 0.5) / 2.5, 0, 1))[..., :3]
    want = np.where(opacity[..., None] >= 0.5, want, 0.0)
    got = depth_colors(depth, opacity, 0.5, 3.0)
    assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-7
    depth[1, :3], opacity[1, :3] = np.nan, [0.0, 1.0, 1.0]  # a NaN depth raised IndexError (a huge negative index)
    assert np.isfinite(depth_colors(depth, opacity, 0.5, 3.0)).all()


def test_the_depth_preview_colours_where_a_ray_stops_whatever_its_opacity():
    """An edge pixel of opacity 0.6 whose ray stops at 3 (expected depth 1.8, as the EXR holds it) takes the colour
    of an opaque pixel at 3, not that of one at 1.8; below opacity 0.5 nothing is coloured."""
    from rwf_render.nerf_outputs import preview_depth

    depth = np.array([[3.0, 1.8, 1.8, 0.2]], np.float32)
    opacity = np.array([[1.0, 0.6, 1.0, 0.4]], np.float32)
    stop = preview_depth(depth, opacity)
    np.testing.assert_allclose(stop, [[3.0, 3.0, 1.8, 0.0]], rtol=1e-6)
    colours = depth_colors(stop, opacity, 1.0, 4.0)
    assert np.array_equal(colours[0, 0], colours[0, 1]) and not np.array_equal(colours[0, 1], colours[0, 2])
    assert (colours[0, 3] == 0).all()


# -- SDF previews and renders: normals by autograd chunk by chunk, rays traced in blocks ------------------------------
def _mlp_field():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Softplus(beta=10), torch.nn.Linear(32, 1))
    return lambda x: (x.norm(dim=-1, keepdim=True) - 0.3) + 0.05 * net(x)  # a lumpy sphere


@pytest.mark.parametrize("h", [0.0, 1e-3])
def test_field_normals_in_chunks_equal_one_graph(h):
    from rwf_render.spheretrace import field_normals

    field, seen = _mlp_field(), []

    def counted(x):
        seen.append(len(x))
        return field(x)
    points = torch.rand(1000, 3) - 0.5
    whole = field_normals(field, points, h=h, chunk=10**6)
    parts = field_normals(counted, points, h=h, chunk=77)
    # float32 differences over h: a matrix product's rounding with the batch size, divided by 2h
    assert max(seen) <= 77 and torch.allclose(parts, whole, atol=1e-4 if h else 1e-6)
    assert field_normals(field, points[:0], h=h).shape == (0, 3)


@pytest.mark.parametrize("kind", ["sdf", "occupancy"])
def test_render_field_in_ray_blocks_equals_one_block(monkeypatch, kind):
    from rwf_render import spheretrace

    field = _mlp_field()
    fn = field if kind == "sdf" else (lambda x: -20 * field(x))
    one = spheretrace.render_field(fn, 24, kind, grid_res=8, views=[(30, 20), (200, -10)])
    monkeypatch.setattr(spheretrace, "RAY_BLOCK", 50)
    blocks = spheretrace.render_field(fn, 24, kind, grid_res=8, views=[(30, 20), (200, -10)])
    for a, b in zip(one, blocks):
        assert np.abs(a - b).max() < 1e-5
        assert (a < 0.99).any(axis=-1).mean() > 0.1  # the shape covers part of the view


def test_synth_renders_in_blocks_of_rows_as_in_one(monkeypatch):
    """rwf data synth casts a frame a block of rows at a time (the whole frame at once held about 350 bytes a
    pixel): the same frame, a block of 7 rows' worth or the whole at once."""
    from data_tools import synth

    mesh, _ = synth.normalize_mesh(synth.demo_mesh())
    cams = synth.make_cameras(synth.orbit_directions(2), 3.0, 40, 40.0)
    renderer = synth.Renderer(mesh, supersample=2)
    whole = renderer.render(cams[1])
    monkeypatch.setattr(synth, "RAYS_PER_BLOCK", 7 * 40 + 3)
    blocks = renderer.render(cams[1])
    for a, b in zip(whole, blocks):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert 0.05 < whole[1].mean() < 0.95  # the object covers part of the frame


# -- rwf fit image: the end of a fit predicts the image once, not three times -----------------------------------------
@pytest.mark.parametrize("split", ["all", "tancik"])
def test_image_fit_predicts_the_image_once_at_the_end(tmp_path, monkeypatch, split):
    import json

    from rwf_render import image as image_mod
    from rwf_render.imgio import read_image, write_image

    src = tmp_path / "p.png"
    write_image(src, np.random.default_rng(0).random((20, 30, 3)).astype(np.float32))
    rows, real = [], image_mod.predict

    def counted(model, x, chunk=65536):
        rows.append(len(x))
        return real(model, x, chunk)
    monkeypatch.setattr(image_mod, "predict", counted)
    run = tmp_path / "run"
    assert cli.main(["fit", "image", str(src), "--out", str(run), "--steps", "1", "--eval-every", "1",
                     "--width", "16", "--features", "8", "--split", split, "--quiet"]) == 0
    # the last step's evaluation (the held-out and training lattices: one image's worth for "all", half for
    # "tancik"), then one prediction of the whole image for the metrics and the reconstruction
    assert sum(rows) == (600 if split == "all" else 300) + 600, rows
    monkeypatch.setattr(image_mod, "predict", real)
    metrics = json.loads((run / "metrics.json").read_text())
    assert cli.main(["render", str(run), "--out", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(read_image(run / "reconstruction.png")[0], read_image(tmp_path / "again.png")[0])
    cfg = image_mod.ImageConfig.from_dict(json.loads((run / "config.json").read_text()))
    _, img, model, _, device = image_mod.load_run(run, json.loads((run / "config.json").read_text()), "cpu")
    task = image_mod.ImageTask(img, cfg, device)
    separately = {"psnr": real(model, task.test_x), "psnr_train": real(model, task.train_x)}  # the split lattices
    for key, pred in separately.items():
        y = task.test_y if key == "psnr" else task.train_y
        assert metrics[key] == pytest.approx(float(-10 * torch.log10(((pred.double() - y.double()) ** 2).mean())),
                                             abs=1e-4)
