"""synth: depth and silhouettes of a known mesh agree with closed-form ray casting; colors come from the mesh."""

import json

import numpy as np
import pytest
import torch

from data_tools.cli import main
from data_tools.common import load_image
from data_tools.synth import procedural_albedo, render_dataset
from rwf_render.cameras import pixel_rays
from rwf_render.datasets import load_transforms

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("open3d")

# The flat faces of icosphere(4) lie inside the sphere, no deeper than the nearest face plane (computed below,
# ~1.2e-3 for a unit sphere); 16-bit depth adds half a unit (~3e-5). Along a ray the depth error grows as
# 1 / cos(incidence), so depth is compared in closed form where the incidence is below 60 degrees.
QUANT_TOL = 1e-4


def _sphere_depth(rays_o, rays_d, center, radius):
    """z-depth (rays_d has z-depth 1) of the first hit with a sphere; inf for misses."""
    oc = rays_o - center
    a, b, c = (rays_d * rays_d).sum(-1), 2 * (oc * rays_d).sum(-1), (oc * oc).sum(-1) - radius ** 2
    disc = b * b - 4 * a * c
    return torch.where(disc >= 0, (-b - disc.clamp_min(0).sqrt()) / (2 * a), torch.full_like(a, float("inf")))


def test_sphere_depth_and_alpha_match_closed_form(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=2.0)
    sagitta = 1 - np.abs((mesh.face_normals * mesh.triangles[:, 0]).sum(-1)).min() / 2.0  # deepest face plane
    assert sagitta < 2e-3
    mesh.apply_translation([0.5, -1.0, 3.0])  # any size and place: synth normalizes to the unit sphere
    report = render_dataset(mesh, tmp_path / "d", res=48, n_views=5, n_val=0, n_test=2, depth=True,
                            supersample=1, layout="sphere", log=lambda *a: None)
    assert report["train"] == 5 and report["material"] == "procedural" and report["watertight"]
    meta = json.loads((tmp_path / "d" / "transforms_train.json").read_text())
    S = np.array(meta["mesh_to_world"])
    center = torch.from_numpy(S[:3, :3] @ [0.5, -1.0, 3.0] + S[:3, 3])
    radius = 2.0 * S[0, 0]
    assert center.norm() < 1e-9 and radius == pytest.approx(1.0, abs=1e-9)  # bounding sphere -> unit sphere
    t = load_transforms(tmp_path / "d", "train")
    n_checked = 0
    for k in range(len(t)):
        o, d = pixel_rays(t.cameras[k], normalize=False)
        truth = _sphere_depth(o.reshape(-1, 3), d.reshape(-1, 3), center, radius).reshape(48, 48).numpy()
        depth = load_image(tmp_path / "d" / "train" / f"r_{k}_depth.png") * meta["depth_unit_scale_factor"]
        rgba = load_image(t.image_paths[k])
        hit = np.isfinite(truth)
        both = hit & (depth > 0)
        # silhouettes agree except where a pixel-center ray grazes between the polygon and the sphere
        assert (hit != (depth > 0)).mean() < 0.02 and ((rgba[..., 3] > 0) == (depth > 0)).all()
        o, d = o.numpy().reshape(-1, 3), d.numpy().reshape(-1, 3)
        pts = (o + depth.reshape(-1, 1) * d)[both.ravel()]  # the surface points the depth map encodes
        r = np.linalg.norm(pts - center.numpy(), axis=1)
        assert (r < 1 + QUANT_TOL).all() and (r > 1 - sagitta - QUANT_TOL).all()
        normal = (o + truth.reshape(-1, 1) * d)[both.ravel()] - center.numpy()
        cos_inc = -(normal * d[both.ravel()]).sum(-1) / np.linalg.norm(d[both.ravel()], axis=1)
        front = cos_inc > 0.5
        assert np.abs(depth[both] - truth[both])[front].max() < 2 * (sagitta + QUANT_TOL)
        n_checked += front.sum()
    assert n_checked > 2000


def test_colors_from_mesh_and_procedural(tmp_path):
    mesh = trimesh.creation.box((1.0, 2.0, 0.5))
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.tile([255, 0, 0, 255], (len(mesh.vertices), 1)))
    report = render_dataset(mesh, tmp_path / "red", res=24, n_views=3, n_val=0, n_test=0, log=lambda *a: None)
    assert report["material"] == "vertex colors"
    img = load_image(tmp_path / "red" / "train" / "r_0.png")
    assert img.shape == (24, 24, 4)
    solid = img[..., 3] == 255
    assert solid.mean() > 0.05 and (img[solid][:, 1:3] == 0).all()  # only red, shaded
    assert (img[solid][:, 0] >= round(0.3 * 255)).all()  # at least the ambient part of the light
    assert (img[0, 0, 3] == 0)  # transparent where nothing is hit
    render_dataset(mesh, tmp_path / "white", res=24, n_views=3, n_val=0, n_test=0, background="white",
                   log=lambda *a: None)
    white = load_image(tmp_path / "white" / "train" / "r_0.png")
    assert white.shape == (24, 24, 3) and (white[img[..., 3] == 0] == 255).all()
    pts = np.random.default_rng(0).normal(size=(500, 3))
    a, b = procedural_albedo(pts, seed=1), procedural_albedo(pts, seed=1)
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() <= 1 and a.std(0).min() > 0.1


def test_cli_never_replaces_out_without_force(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["data", "synth", "demo", str(out), "--res", "16", "--views", "2", "--val", "0", "--test", "0"]
    err = capsys.readouterr().err if main(args) == 2 else "exit 0"
    # not a dataset: said at once, not "pass --force", which would then be refused for that reason
    assert "not a dataset" in err and "pass --force" not in err, err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["data", "synth", str(tmp_path / "nope.obj"), str(tmp_path / "x")]) == 2
    assert "mesh file not found" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(args + ["--force"]) == 2 and "not a dataset" in capsys.readouterr().err  # --force: datasets only
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert main(args) == 0
    (out / "keep.txt").write_text("mine")  # a file added to a dataset goes with it
    assert main(args + ["--force", "--depth"]) == 0
    assert not (out / "keep.txt").exists() and (out / "transforms_train.json").is_file()
    assert (out / "mesh.ply").is_file() and (out / "train" / "r_1_depth.png").is_file()
    assert main(["data", "check", str(out)]) == 0


def test_a_mesh_split_at_its_seams_is_reported_watertight(tmp_path):
    """An OBJ is split at its texture seams (spot: 3225 vertices as stored, 2930 merged); the mesh is rendered
    unprocessed to keep its UVs, and the report called such a closed surface open."""
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    split = trimesh.Trimesh(box.triangles.reshape(-1, 3), np.arange(3 * len(box.faces)).reshape(-1, 3),
                            process=False)  # every face with its own three vertices
    assert not split.is_watertight
    report = render_dataset(split, tmp_path / "d", res=16, n_views=2, n_val=0, n_test=0, log=lambda *a: None)
    assert report["watertight"]
