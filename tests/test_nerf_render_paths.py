"""`rwf render RUN --interpolate N` (a path through the training cameras) and `rwf export mesh RUN --poisson` (a
screened Poisson surface through the points where training rays stop).

One fit of the tiny_scene still life (conftest's still_life_run: 24 training views of a known mesh, 32x32) serves
every test here and the --tsdf tests; renders are 4x4 pixels (--downscale 8).
"""

import json
import math
import sys

import numpy as np
import pytest
import torch

from rwf_render import cli
from rwf_render.cameras import Cameras, look_at
from rwf_render.imgio import read_image
from rwf_render.render_paths import nearest_neighbour_tour, training_path_cameras

from conftest import interrupt_render_writes, one_cli_error  # noqa: E402  (tests/ is on sys.path under pytest)

SMALL = ["--downscale", "8"]


@pytest.fixture(scope="module")
def fitted(still_life_run):
    return still_life_run


@pytest.fixture(scope="module")
def tiny_scene(still_life_run):
    """The scene that run was fitted to (conftest's tiny_scene, rendered alike)."""
    return still_life_run.parent / "scene"




# -- the tour and the path -----------------------------------------------------------------------------------------
def test_the_tour_follows_shuffled_cameras_along_a_curve():
    """Cameras on an arc, in shuffled file order: the tour from camera 0 (one end of the arc) visits each once, in
    order along the arc."""
    angle = np.linspace(0, 2.5, 12)
    shuffle = np.random.default_rng(0).permutation(np.arange(1, 12))
    order = np.concatenate([[0], shuffle])  # file position -> arc position; camera 0 stays at the end
    pos = np.stack([np.cos(angle), np.sin(angle), 0.1 * angle], 1)[order]
    tour = nearest_neighbour_tour(pos)
    assert sorted(tour) == list(range(12)) and tour[0] == 0
    assert order[tour].tolist() == list(range(12))


def _cameras(sizes) -> Cameras:
    """Cameras on a circle looking at the origin, each with its own focal length, principal point and size."""
    n = len(sizes)
    angle = np.random.default_rng(1).permutation(n) * 2 * math.pi / (n + 3)
    eyes = torch.tensor(np.stack([3 * np.cos(angle), 3 * np.sin(angle), np.full(n, 1.0)], 1))
    w = torch.tensor([s[0] for s in sizes], dtype=torch.float64)
    h = torch.tensor([s[1] for s in sizes], dtype=torch.float64)
    return Cameras.create(look_at(eyes, torch.zeros(3, dtype=torch.float64)), fx=w * (0.9 + 0.05 * torch.arange(n)),
                          fy=h * 1.2, cx=w / 2 + 0.25, cy=h / 2 - 0.5, width=w, height=h)


def test_the_path_passes_through_every_training_camera_in_tour_order():
    """N frames per interval; frame N j is the tour's camera j: its pose, its intrinsics scaled to camera 0's size,
    its bounds; in between, focal lengths and bounds lie between those of the two cameras."""
    train = _cameras([(40, 30), (40, 30), (80, 60), (40, 30), (48, 30)])
    near_far = torch.tensor([[1.0, 5.0], [2.0, 6.0], [1.5, 4.0], [0.5, 7.0], [1.0, 3.0]], dtype=torch.float64)
    steps = 3
    cams, bounds, tour = training_path_cameras(train, steps, near_far)
    k = len(train)
    assert len(cams) == steps * (k - 1) + 1 and bounds.shape == (len(cams), 2)
    assert tour[0] == 0 and sorted(tour) == list(range(k))
    assert cams.model_names() == ["PINHOLE"] * len(cams)
    assert (cams.width == 40).all() and (cams.height == 30).all()
    for j, i in enumerate(tour):
        f = steps * j
        np.testing.assert_allclose(cams.c2w[f].numpy(), train.c2w[i].numpy(), atol=1e-9)
        sx, sy = 40 / float(train.width[i]), 30 / float(train.height[i])
        want = [float(train.fx[i]) * sx, float(train.fy[i]) * sy, float(train.cx[i]) * sx, float(train.cy[i]) * sy]
        got = [float(cams.fx[f]), float(cams.fy[f]), float(cams.cx[f]), float(cams.cy[f])]
        np.testing.assert_allclose(got, want, rtol=1e-9)
        np.testing.assert_allclose(bounds[f].numpy(), near_far[i].numpy(), rtol=1e-9)
    for j in range(k - 1):  # between keyframes: in between, and moving
        seg = slice(steps * j, steps * (j + 1) + 1)
        lo, hi = sorted([float(cams.fx[seg][0]), float(cams.fx[seg][-1])])
        assert ((cams.fx[seg] >= lo - 1e-9) & (cams.fx[seg] <= hi + 1e-9)).all()
        assert (cams.c2w[seg][1:, :, 3] - cams.c2w[seg][:-1, :, 3]).norm(dim=1).min() > 1e-3
    # one camera: one frame, that camera
    one, _, tour1 = training_path_cameras(train[2], 5)
    assert len(one) == 1 and tour1 == [0] and torch.allclose(one.c2w[0], train.c2w[2])


# -- rwf render --interpolate --------------------------------------------------------------------------------------
def test_interpolate_renders_n_frames_per_interval_through_the_training_views(fitted, tiny_scene, tmp_path):
    """N (K - 1) + 1 frames and videos in RUN/renders/interpolate; the first and the last frame are the renders of
    the tour's first and last training cameras (the pixels of --split train)."""
    from rwf_render.datasets import load_transforms

    train = load_transforms(tiny_scene, "train").cameras
    k, n = len(train), 2
    assert cli.main(["render", str(fitted), "--interpolate", str(n), "--video", "--fps", "12", *SMALL]) == 0
    out = fitted / "renders" / "interpolate"
    frames = sorted(out.glob("rgb_*.png"))
    assert len(frames) == n * (k - 1) + 1 == len(list(out.glob("depth_*.exr")))
    assert (out / "rgb.mp4").stat().st_size > 0 and (out / "depth.mp4").stat().st_size > 0
    assert cli.main(["render", str(fitted), "--split", "train", "--out", str(tmp_path / "train"), *SMALL]) == 0
    tour = nearest_neighbour_tour(train.c2w[:, :3, 3].numpy())
    for frame, cam in ((0, tour[0]), (len(frames) - 1, tour[-1])):
        along = read_image(out / f"rgb_{frame:04d}.png")[0]
        assert along.shape == (4, 4, 3)
        np.testing.assert_allclose(along, read_image(tmp_path / "train" / f"rgb_{cam:04d}.png")[0], atol=2 / 255)


def test_an_interrupted_interpolate_render_leaves_the_earlier_frames(fitted, tmp_path, monkeypatch):
    """Frames are staged beside the folder and moved in only when all are written: a render stopped half-way leaves
    the folder holding the earlier render, untouched."""
    out = tmp_path / "frames"
    assert cli.main(["render", str(fitted), "--orbit", "2", "--out", str(out), *SMALL]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = interrupt_render_writes(monkeypatch, after=7)
    assert cli.main(["render", str(fitted), "--interpolate", "3", "--out", str(out), *SMALL]) == 130
    assert len(calls) == 8
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no staging folder left


@pytest.mark.parametrize("extra, says", [(["--orbit", "3"], "exactly one"), (["--split", "test"], "exactly one"),
                                         (["--fps", "12"], "--fps"), (["--interpolate", "0"], "--interpolate")])
def test_interpolate_refuses_what_it_cannot_do(fitted, tmp_path, capsys, extra, says):
    argv = ["render", fitted, "--out", tmp_path / "r", *SMALL, *extra]
    if extra[0] != "--interpolate":
        argv += ["--interpolate", "2"]
    assert says in one_cli_error(capsys, argv)
    assert not (tmp_path / "r").exists()


# -- rwf export mesh --poisson -------------------------------------------------------------------------------------
def test_density_normals_point_out_of_a_ball_and_at_the_camera_where_flat():
    """sigma = 50 exp(-4 (|x| - 0.5)) inside out: -grad sigma is the radial direction; where the field is flat (a
    constant beyond |x| = 1) the normal is the direction to the camera."""
    from rwf_render.nerf_poisson import density_normals

    def density(x):
        r = x.norm(dim=1)
        return torch.where(r < 1.0, 50 * torch.exp(-4 * (r - 0.5)), torch.full_like(r, 50 * math.exp(-2)))

    rng = np.random.default_rng(0)
    d = rng.normal(size=(200, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    points = np.concatenate([0.5 * d[:150], 1.5 * d[150:]])
    origins = points + rng.normal(size=points.shape) * 3
    normals, from_camera = density_normals(density, points, origins, chunk=64)
    assert from_camera == 50
    np.testing.assert_allclose(normals[:150], d[:150], atol=1e-5)
    view = (origins - points) / np.linalg.norm(origins - points, axis=1, keepdims=True)
    np.testing.assert_allclose(normals[150:], view[150:], atol=1e-9)


def _surface_metrics(mesh, ref):
    from rwf_render.mesh import surface_metrics

    return surface_metrics(mesh, ref, n_points=20000)


def test_poisson_mesh_lies_on_the_source_mesh(fitted, tiny_scene, tmp_path):
    """Non-empty, inside the scene box, coloured, faces wound outwards like the source mesh's, and within 3 % of the
    source mesh's bounding-box diagonal of it (Chamfer-L1; this fit: 0.035, where the marching-cubes export at its
    defaults has 0.031 and no trimming 0.086); the same fit's marching-cubes mesh is measured alongside."""
    pytest.importorskip("open3d")
    import trimesh

    ref = trimesh.load(tiny_scene / "mesh.ply", process=False)
    out = tmp_path / "poisson.ply"
    assert cli.main(["export", "mesh", str(fitted), "--poisson", "--quiet", "--out", str(out)]) == 0
    mesh = trimesh.load(out, process=False)
    box = np.array(json.loads((fitted / "config.json").read_text())["aabb"]).reshape(2, 3)
    assert len(mesh.faces) > 1000
    assert (mesh.vertices >= box[0] - 1e-6).all() and (mesh.vertices <= box[1] + 1e-6).all()
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    poisson = _surface_metrics(mesh, ref)
    diag = float(np.linalg.norm(np.subtract(*ref.bounds)))
    assert poisson["chamfer_l1"] < 0.03 * diag, poisson
    # outward like the source: a face's normal agrees with the normal of the nearest point of the source mesh
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(ref.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(ref.faces, np.uint32)))
    near = scene.compute_closest_points(o3d.core.Tensor(mesh.triangles_center.astype(np.float32)))
    agree = (mesh.face_normals * ref.face_normals[near["primitive_ids"].numpy()]).sum(1) > 0
    assert np.average(agree, weights=mesh.area_faces) > 0.8
    assert cli.main(["export", "mesh", str(fitted), "--res", "128", "--out", str(tmp_path / "mc.ply")]) == 0
    mc = _surface_metrics(trimesh.load(tmp_path / "mc.ply", process=False), ref)
    print(f"chamfer_l1: poisson {poisson['chamfer_l1']:.4f}, marching cubes {mc['chamfer_l1']:.4f}")


@pytest.mark.parametrize("extra, says", [
    (["--poisson", "--res", "256"], "--res"),  # typed at its default: still refused
    (["--poisson", "--threshold", "5"], "--threshold"),
    (["--poisson", "--pointcloud"], "choose one"),
    (["--poisson-depth", "9"], "--poisson only"),
    (["--poisson-trim", "0.2"], "--poisson only"),
    (["--poisson", "--poisson-depth", "13"], "--poisson-depth"),
    (["--poisson", "--poisson-trim", "1"], "--poisson-trim"),
])
def test_poisson_refuses_options_it_would_not_use(fitted, tmp_path, capsys, monkeypatch, extra, says):
    from rwf_render import nerf_export

    monkeypatch.setattr(nerf_export, "depth_points", lambda *a, **k: pytest.fail("rendered before refusing"))
    assert says in one_cli_error(capsys, ["export", "mesh", fitted, "--out", tmp_path / "m.ply", *extra])
    assert sorted(tmp_path.iterdir()) == []


def test_poisson_without_open3d_is_one_clear_error(fitted, tmp_path, capsys, monkeypatch):
    from rwf_render import nerf_export

    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d raises ImportError
    monkeypatch.setattr(nerf_export, "depth_points", lambda *a, **k: pytest.fail("rendered before checking"))
    err = one_cli_error(capsys, ["export", "mesh", fitted, "--poisson", "--out", tmp_path / "m.ply"])
    assert "--poisson needs open3d" in err
    assert sorted(tmp_path.iterdir()) == []
