"""Where the NeRF exports put a pixel that is not fully opaque, and what ``--tsdf`` checks before the model loads.

``render_camera`` returns ``depth = sum_i w_i t_i`` and ``opacity = sum_i w_i``: a ray stops at depth / opacity.
A stub model whose renders see a plane with opacity 0.8 (a closed form: no fit) tells whether ``--pointcloud`` and
``--poisson`` points (``depth_points``) lie on the plane or a fifth of the way short of it.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rwf_render import nerf_export
from rwf_render.cameras import Cameras, look_at, pixel_rays
from rwf_render.errors import UserError

from conftest import one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)

PLANE_Z = 0.25  # the surface: the plane z = 0.25
EYES = [(0.3, 0.2, 2.0), (-0.5, 0.4, 3.0)]  # two training cameras looking down at it, obliquely


class PlaneModel:
    """A trained run's interface as the exports read it: renders of the plane z = PLANE_Z with opacity ``opacity``
    on the left half of every image and ``edge`` on the right half (depth = opacity x distance, as a compositor
    gives for weights bunched at the plane)."""

    def __init__(self, opacity=0.8, edge=0.3, size=(12, 10)):
        w, h = size
        eyes = torch.tensor(EYES, dtype=torch.float32)
        c2w = look_at(eyes, torch.tensor([0.0, 0.0, PLANE_Z]), up=(0.0, 1.0, 0.0))
        self.train_cameras = Cameras.create(c2w, fx=11.0, fy=10.0, cx=w / 2 - 0.3, cy=h / 2 + 0.2, width=w, height=h,
                                            dtype=torch.float32)
        self.train_near_far = None
        self.aabb = torch.tensor([-4.0, -4.0, -4.0, 4.0, 4.0, 4.0])
        self.opacity, self.edge = opacity, edge

    def render_camera(self, cam, image_idx=None, near=None, far=None):
        o, d = pixel_rays(cam.to(dtype=torch.float32))  # (H, W, 3) unit rays
        t = (PLANE_Z - o[..., 2]) / d[..., 2]  # (H, W) distance to the plane
        opacity = torch.full_like(t, self.opacity)
        opacity[:, t.shape[1] // 2:] = self.edge
        return {"rgb": torch.full((*t.shape, 3), 0.5), "depth": opacity * t, "opacity": opacity}


def test_points_of_partly_opaque_pixels_lie_on_the_surface():
    """Opacity 0.8: each point on the plane (depth / opacity), not at 0.8 of the distance; pixels of opacity 0.3
    are background (none); each point's camera is the one that saw it."""
    model = PlaneModel()
    pts, cols, origins = nerf_export.depth_points(model, progress=False)
    w, h = 12, 10
    assert len(pts) == len(EYES) * h * (w // 2)  # the left halves only
    assert np.abs(pts[:, 2] - PLANE_Z).max() < 1e-4, np.abs(pts[:, 2] - PLANE_Z).max()
    eyes = np.repeat(np.array(EYES, np.float32), h * (w // 2), axis=0)
    assert np.allclose(origins, eyes, atol=1e-5)
    assert np.allclose(cols, 0.5)
    # the points lie on their rays: collinear with the camera and the pixel's direction
    _, d = pixel_rays(model.train_cameras[0])
    d0 = d[:, : w // 2].reshape(-1, 3).numpy()
    v = pts[: h * (w // 2)] - origins[: h * (w // 2)]
    assert np.allclose(v / np.linalg.norm(v, axis=1, keepdims=True), d0, atol=1e-5)


def test_opaque_pixels_keep_their_depth():
    """Opacity 1: depth / opacity is the depth, so fully opaque pixels land where they always did."""
    pts, _, _ = nerf_export.depth_points(PlaneModel(opacity=1.0, edge=1.0), progress=False)
    assert len(pts) == len(EYES) * 120 and np.abs(pts[:, 2] - PLANE_Z).max() < 1e-4


def test_point_cloud_and_tsdf_depths_agree():
    """--tsdf's z-depths, back along their pixels' z-depth-1 directions, give the same points as --pointcloud."""
    from rwf_render.nerf_tsdf import depth_frames, pinhole_cameras

    model = PlaneModel()
    pts, _, _ = nerf_export.depth_points(model, progress=False)
    cams = pinhole_cameras(model.train_cameras)
    box = model.aabb.numpy().reshape(2, 3)
    fused = []
    for cam, _, z in depth_frames(model, cams, [0, 1], box, progress=False):
        o, d1 = pixel_rays(cam, normalize=False)
        fused.append((o + d1 * torch.from_numpy(z)[..., None])[torch.from_numpy(z > 0)].numpy())
    assert np.allclose(np.concatenate(fused), pts, atol=1e-4)


# -- the painted-background warning names what each export reads -----------------------------------------------
@pytest.mark.parametrize("tsdf, reads", [(False, "points"), (True, "rendered depths --tsdf fuses")])
def test_the_painted_background_warning_names_what_the_export_reads(tmp_path, tsdf, reads):
    from rwf_render.imgio import write_image

    image = tmp_path / "r_0.png"
    rgba = np.ones((4, 4, 4), np.float32)
    rgba[0, 0, 3] = 0.0  # one see-through pixel
    write_image(image, rgba)
    model = SimpleNamespace(cfg=SimpleNamespace(background="white", data=str(tmp_path)), train_image_paths=[image])
    note = nerf_export.painted_background(model, tsdf=tsdf)
    assert note is not None and f"so the {reads} lie off the surface" in note, note
    assert note.endswith("refit with --background random")
    assert ("--tsdf" in note) == tsdf


# -- --tsdf-voxel and --downscale are refused before the model loads ---------------------------------------------
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Two 8x8 training images of data_tools' still life (a ray caster: seconds)."""
    from data_tools.synth import demo_mesh, render_dataset

    out = tmp_path_factory.mktemp("depth") / "tiny8"
    render_dataset(demo_mesh(), out, res=8, n_views=2, n_val=1, n_test=1, log=lambda *a, **k: None)
    return out


@pytest.fixture
def unloadable_run(tmp_path, small_dataset, monkeypatch):
    """A nerf run's config.json (box [-1, 1]^3) without a checkpoint; loading its model is recorded and refused."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "nerf", "data": str(small_dataset), "downscale": 1,
                                                 "aabb": [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]}))
    loads = []

    def load(path, device="cpu"):
        loads.append(path)
        raise UserError("the model was loaded")

    monkeypatch.setattr(nerf_export, "load_scene_model", load)
    return run, loads




@pytest.mark.parametrize("extra, says", [
    (["--tsdf-voxel", "0.0001"], "--tsdf-voxel 0.0001: the box diagonal (3.464) would span 34641 voxels"),
    (["--crop", "0", "0", "0", "0.1", "0.1", "0.1", "--tsdf-voxel", "0.00005"],
     "--tsdf-voxel 5e-05: the box diagonal (0.1732) would span 3464 voxels"),  # the crop box, not the scene's
    (["--downscale", "9"], "--downscale 9: the smallest training image (8 x 8) would have no pixel left"),
])
def test_bad_tsdf_sizes_are_refused_before_the_model_loads(unloadable_run, capsys, extra, says):
    pytest.importorskip("open3d")
    run, loads = unloadable_run
    err = one_cli_error(capsys, ["export", "mesh", run, "--tsdf", "--device", "cpu", *extra])
    assert says in err, err
    assert loads == []


@pytest.mark.parametrize("extra", [[], ["--tsdf-voxel", "0.05"], ["--downscale", "8"],
                                   ["--crop", "0", "0", "0", "0.1", "0.1", "0.1", "--tsdf-voxel", "0.0001"]])
def test_sound_tsdf_sizes_go_on_to_load_the_model(unloadable_run, capsys, extra):
    """The control: sizes that fit reach the model load (the stub refuses it)."""
    pytest.importorskip("open3d")
    run, loads = unloadable_run
    assert "the model was loaded" in one_cli_error(capsys, ["export", "mesh", run, "--tsdf", "--device", "cpu", *extra])
    assert loads == [run]
