"""mesh.py: extraction against closed-form surfaces, chunking invariance, signed distance against references
(open3d's own occupancy, the generalized winding number), the unit-cube transform, loading, export, metrics."""

import numpy as np
import pytest
import torch
import trimesh

from rwf_render.errors import UserError
from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField
from rwf_render.mesh import (UNIT_BOX, MeshQuery, Normalization, closed_parts, evaluate_grid, extract_mesh, iou,
                             remove_small_components, surface_metrics, winding_number)
from rwf_render.mesh_io import load_mesh, save_mesh

R = 0.3
HALF = torch.tensor([0.3, 0.2, 0.25], dtype=torch.float64)


def sphere_sdf(x):
    return x.double().norm(dim=-1) - R


def box_sdf(x):
    """Exact signed distance of the axis-aligned box with half sizes HALF (Quilez)."""
    q = x.double().abs() - HALF
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


@pytest.mark.parametrize("res", [32, 64])
def test_sphere_extraction_lies_on_the_sphere(res):
    """Marching cubes of the exact sphere SDF: linear interpolation of |x| along a grid edge of length h is off by
    at most h^2 / (2 r), so every vertex is within that of the true surface; the mesh is closed and outward."""
    h = 1.0 / (res - 1)
    mesh = extract_mesh(sphere_sdf, res=res)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radius - R).max() <= h * h / (2 * R)
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * R**3, rel=0.02)


def test_box_extraction_lies_on_the_box():
    """For the box the SDF is linear along grid edges except within a voxel of its edges and corners: vertices lie
    within one voxel h of the surface everywhere and on it (to rounding) on the flat faces; the bounds match."""
    res = 64
    h = 1.0 / (res - 1)
    mesh = extract_mesh(box_sdf, res=res)
    d = box_sdf(torch.from_numpy(mesh.vertices)).abs().numpy()
    assert d.max() <= h
    q = np.abs(mesh.vertices) - HALF.numpy()
    flat = (q < -h).sum(1) == 2  # well inside one face: two coordinates strictly inside
    assert flat.sum() > 0.5 * len(d) and d[flat].max() < 1e-6
    assert np.allclose(mesh.bounds, [-HALF.numpy(), HALF.numpy()], atol=h)
    assert mesh.is_watertight and mesh.volume > 0
    true_volume = float(8 * HALF.prod())
    assert abs(mesh.volume - true_volume) <= h * float(8 * (HALF[0] * HALF[1] + HALF[1] * HALF[2] + HALF[0] * HALF[2]))


def test_inside_above_and_levels():
    """An occupancy-style field (inside above) gives the same surface as the distance it is built from, and a level
    set at +delta of the sphere SDF is the sphere of radius r + delta."""
    a = extract_mesh(sphere_sdf, res=40)
    b = extract_mesh(lambda x: -sphere_sdf(x), res=40, inside="above")
    assert len(a.faces) == len(b.faces) and np.allclose(a.vertices, b.vertices, atol=1e-9)
    assert b.volume > 0
    c = extract_mesh(sphere_sdf, res=40, level=0.05)
    assert np.allclose(np.linalg.norm(c.vertices, axis=1), R + 0.05, atol=2e-3)


def test_surface_cut_by_the_box_is_capped_and_clipped():
    mesh = extract_mesh(lambda x: x.double().norm(dim=-1) - 0.7, res=32)
    assert mesh.is_watertight
    assert (mesh.vertices >= -0.5).all() and (mesh.vertices <= 0.5).all()


def test_chunked_extraction_equals_unchunked():
    """Slabs of a few planes and small field chunks give the same mesh as one slab and one call (up to float32
    rounding in scikit-image), with the copies on the slab boundaries joined: a closed surface."""
    torch.manual_seed(0)
    net = NeuralField(3, 1, EncodingConfig(m=16, sigma=2.0), MLPConfig(depth=3, width=32, param="rwf"), seed=3)
    net.eval()

    def fn(x):
        return x.norm(dim=-1) - 0.3 + 0.05 * net(x)[:, 0]

    res = 48
    whole = extract_mesh(fn, res=res, chunk=res**3, slab_points=res**3 * 2)
    parts = extract_mesh(fn, res=res, chunk=5000, slab_points=res * res * 5)
    assert len(whole.vertices) == len(parts.vertices) and len(whole.faces) == len(parts.faces)
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(whole.vertices).query(parts.vertices)
    assert dist.max() < 1e-6
    assert len(np.unique(idx)) == len(idx)
    mapped = np.sort(idx[parts.faces], axis=1)
    assert {tuple(f) for f in mapped} == {tuple(f) for f in np.sort(whole.faces, axis=1)}
    assert parts.is_watertight
    vol = evaluate_grid(fn, res=res, chunk=7777)
    assert vol.shape == (res, res, res)
    assert np.allclose(vol, evaluate_grid(fn, res=res, chunk=res**3), atol=1e-6)


def test_signed_distance_of_spot_has_the_right_sign(data_dir):
    mesh = load_mesh(data_dir / "meshes" / "spot.obj")
    assert mesh.is_watertight
    q = MeshQuery(mesh)
    pts, faces = trimesh.sample.sample_surface(mesh, 3000, seed=0)
    n = mesh.face_normals[faces]
    eps = 2e-3
    inner, outer = q.signed_distance(pts - eps * n), q.signed_distance(pts + eps * n)
    # a step of eps along the normal lands at distance <= eps on the right side (curvature can only shorten it)
    assert (inner < 0).mean() > 0.99 and (outer > 0).mean() > 0.99
    assert np.abs(inner).max() <= eps * 1.001 and np.abs(outer).max() <= eps * 1.001
    corners = np.array([[x, y, z] for x in (-2, 2) for y in (-2, 2) for z in (-2, 2)], np.float32)
    assert (q.signed_distance(corners) > 0).all()
    # agreement with open3d's own occupancy and with the winding number on uniform points
    import open3d as o3d

    rng = np.random.default_rng(1)
    box = rng.uniform(mesh.bounds[0], mesh.bounds[1], (4000, 3)).astype(np.float32)
    occ = q.scene.compute_occupancy(o3d.core.Tensor(box)).numpy() > 0.5
    assert (q.inside(box) == occ).mean() > 0.999
    w = winding_number(mesh, box[:800])
    assert (q.inside(box[:800]) == (w > 0.5)).mean() > 0.995
    assert np.allclose(np.abs(q.signed_distance(box)), q.distance(box))


def test_inside_of_the_open_bunny_is_sane(data_dir):
    """bunny.obj has holes at its base: the 15-ray vote agrees with the generalized winding number (the reference
    for open surfaces) nearly everywhere, and points far away are outside."""
    mesh = load_mesh(data_dir / "meshes" / "bunny.obj")
    assert not mesh.is_watertight
    q = MeshQuery(mesh)
    assert "15" in q.method
    rng = np.random.default_rng(0)
    lo, hi = mesh.bounds
    uniform = rng.uniform(lo, hi, (1500, 3))
    surf, _ = trimesh.sample.sample_surface(mesh, 1500, seed=2)
    near = surf + 0.01 * np.linalg.norm(hi - lo) * rng.standard_normal(surf.shape)
    for pts in (uniform, near):
        w = winding_number(mesh, pts)
        assert (q.inside(pts) == (w > 0.5)).mean() > 0.97
    assert q.inside(uniform).any()
    far = (lo + hi) / 2 + 3 * np.linalg.norm(hi - lo) * np.eye(3)
    assert (q.signed_distance(far) > 0).all()
    # distances stay exact (unsigned part) where the sign is uncertain
    assert np.allclose(np.abs(q.signed_distance(near)), q.distance(near))


def test_parity_inside_points_of_a_sphere_in_any_chunking_and_direction():
    """Closed form: points of a tessellated unit sphere farther than its chord error from the surface are inside
    exactly when |p| < 1, for one ray, for a 3-direction vote, and in chunks of a few pairs."""
    from rwf_render.parity import inside_points

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)  # chord error < 0.02
    p = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    clear = ((p.norm(dim=1) - 1).abs() > 0.02)
    v, f = torch.tensor(sphere.vertices), torch.tensor(sphere.faces)
    dirs = torch.tensor([[0.3, -0.2, 0.9], [-0.8, 0.5, 0.1], [0.1, 0.9, -0.4]])
    for kw in ({}, {"chunk": 50}, {"directions": dirs}, {"directions": dirs, "chunk": 300}):
        got = inside_points(p, v, f, **kw)
        assert torch.equal(got[clear], (p.norm(dim=1) < 1)[clear]), kw


@pytest.mark.parametrize("name", ["spot", "bunny"])
def test_inside_without_open3d_gives_open3d_answers(data_dir, monkeypatch, name):
    """Without open3d, MeshQuery votes with the same rays in torch (parity.inside_points): the same answers on
    uniform and near-surface points of a watertight and an open mesh; what needs open3d says so."""
    pytest.importorskip("open3d")
    mesh = load_mesh(data_dir / "meshes" / f"{name}.obj")
    rng = np.random.default_rng(3)
    lo, hi = mesh.bounds
    surf, _ = trimesh.sample.sample_surface(mesh, 3000, seed=4)
    pts = np.concatenate([rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), (3000, 3)),
                          surf + 0.005 * np.linalg.norm(hi - lo) * rng.standard_normal(surf.shape)])
    expected = MeshQuery(mesh).inside(pts)
    monkeypatch.setitem(__import__("sys").modules, "open3d", None)  # import open3d now fails
    q = MeshQuery(mesh)
    assert q.scene is None and "torch" in q.method
    assert 0.05 < expected.mean() < 0.95
    assert (q.inside(pts) == expected).mean() >= 0.999
    with pytest.raises(UserError, match="open3d"):
        q.distance(pts[:3])


def _two_balls():
    """Two unit icospheres whose centres are 1 apart (they overlap), one mesh of two closed parts."""
    a, b = trimesh.creation.icosphere(3), trimesh.creation.icosphere(3)
    b.apply_translation([1.0, 0.0, 0.0])
    return trimesh.util.concatenate([a, b])


@pytest.mark.parametrize("torch_vote", [False, True])
def test_overlapping_closed_parts_are_their_union(monkeypatch, torch_vote):
    """Parity reads the lens where two closed parts overlap as outside; the union query (signed crossings) agrees
    with the generalized winding number > 0.5 everywhere, with open3d and in torch; its distance is to the
    union's boundary (the faces inside the other ball are left out), sqrt(3)/2 from the lens centre."""
    if torch_vote:
        monkeypatch.setitem(__import__("sys").modules, "open3d", None)
    else:
        pytest.importorskip("open3d")
    mesh = _two_balls()
    assert closed_parts(mesh) == 2 and closed_parts(trimesh.creation.icosphere(2)) == 1
    pts = np.random.default_rng(0).uniform([-1.3, -1.2, -1.2], [2.3, 1.2, 1.2], (4000, 3))
    truth = winding_number(mesh, pts) > 0.5
    lens = (np.linalg.norm(pts, axis=1) < 0.95) & (np.linalg.norm(pts - [1, 0, 0], axis=1) < 0.95)
    assert lens.sum() > 100
    parity, union = MeshQuery(mesh), MeshQuery(mesh, union=True)
    assert not parity.inside(pts[lens]).any()  # the failure this mode exists for
    assert (union.inside(pts) == truth).all() and "union of 2 closed parts" in union.method
    assert 0 < len(union.surface.faces) < len(mesh.faces)
    inner = np.linalg.norm(union.surface.triangles_center - [[0.5, 0, 0]], axis=1).min()
    assert inner > 0.8  # no face of the boundary runs through the lens
    if not torch_vote:
        centre = np.array([[0.5, 0.0, 0.0]])  # parity's distance is to the faces inside: 0.5
        assert parity.distance(centre)[0] == pytest.approx(0.5, abs=0.01)
        assert union.distance(centre)[0] == pytest.approx(3**0.5 / 2, abs=0.06)  # within one edge of the cut


def test_union_keeps_a_cavity_hollow():
    """A ball with a ball-shaped cavity (its wall wound inward, as orient_outward leaves it): the cavity and the
    space outside are outside, the shell between them inside."""
    outer, wall = trimesh.creation.icosphere(3), trimesh.creation.icosphere(3)
    wall.apply_scale(0.5)
    wall.invert()
    q = MeshQuery(trimesh.util.concatenate([outer, wall]), union=True)
    assert q.inside(np.array([[0, 0, 0], [0.1, 0.2, 0], [0.75, 0, 0], [0, -0.7, 0.1], [1.5, 0, 0]])).tolist() == [
        False, False, True, True, False]


def test_fit_sdf_without_open3d_is_one_message_before_writing(tmp_path, monkeypatch, capsys):
    from rwf_render import cli

    monkeypatch.setitem(__import__("sys").modules, "open3d", None)
    out = tmp_path / "run"
    assert cli.main(["fit", "sdf", "--out", str(out), "--steps", "2", "--quiet"]) == 2
    assert "open3d" in capsys.readouterr().err and not out.exists()


def test_normalization_round_trip_puts_exports_in_source_units(data_dir):
    """Extracting the exact SDF of the normalized spot and mapping back gives vertices in spot's own coordinate
    range (to one voxel) and on its surface."""
    mesh = load_mesh(data_dir / "meshes" / "spot.obj")
    norm = Normalization.fit(mesh, fill=0.9)
    unit = norm.apply(mesh)
    assert np.abs(unit.vertices).max() <= 0.45 + 1e-9
    assert np.allclose(norm.from_unit(norm.to_unit(mesh.vertices)), mesh.vertices)
    q = MeshQuery(unit)
    res = 64
    out = norm.apply(extract_mesh(lambda x: torch.from_numpy(q.signed_distance(x.numpy())), res=res), inverse=True)
    voxel = 1.0 / (res - 1) / norm.scale
    assert np.allclose(out.bounds, mesh.bounds, atol=voxel)
    back = Normalization.from_dict(norm.to_dict())
    assert np.allclose(back.from_unit([[0.1, 0.2, 0.3]]), norm.from_unit([[0.1, 0.2, 0.3]]))


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl", "off", "glb"])
def test_loads_every_format(tmp_path, fmt):
    src = trimesh.creation.icosphere(2, 0.5)
    path = tmp_path / f"m.{fmt}"
    src.export(path)
    mesh = load_mesh(path)
    assert mesh.is_watertight and len(mesh.faces) == len(src.faces)
    assert np.allclose(mesh.bounds, src.bounds, atol=1e-5)


def test_glb_scene_parts_are_merged_with_their_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box((1, 1, 1)))
    shift = trimesh.transformations.translation_matrix([3, 0, 0])
    scene.add_geometry(trimesh.creation.icosphere(1, 0.5), transform=shift)
    path = tmp_path / "scene.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert np.allclose(mesh.bounds, [[-0.5, -0.5, -0.5], [3.5, 0.5, 0.5]], atol=1e-5)
    assert len(mesh.faces) == 12 + 80


def test_inside_out_watertight_mesh_is_reoriented(tmp_path):
    src = trimesh.creation.icosphere(2, 0.5)
    src.invert()
    path = tmp_path / "inv.ply"
    src.export(path)
    assert load_mesh(path).volume > 0


@pytest.mark.parametrize("text,match", [("hello\n", "no triangles"), ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no triangles"),
                                        ("v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n", "NaN"),
                                        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n", "degenerate")])
def test_bad_meshes_raise_user_errors(tmp_path, text, match):
    path = tmp_path / "bad.obj"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        load_mesh(path)


def test_export_formats_round_trip_and_are_atomic(tmp_path):
    mesh = trimesh.creation.icosphere(2, 0.3)
    for fmt in ("ply", "obj", "glb"):
        path = save_mesh(mesh, tmp_path / f"out.{fmt}")
        back = load_mesh(path)
        assert len(back.faces) == len(mesh.faces) and np.allclose(back.bounds, mesh.bounds, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.glb", "out.obj", "out.ply"]  # no temporaries left
    with pytest.raises(UserError):
        save_mesh(mesh, tmp_path / "out.xyz")
    with pytest.raises(UserError):
        save_mesh(mesh, tmp_path / "missing" / "out.ply")


def _glb_json(path) -> dict:
    import json
    import struct

    data = path.read_bytes()
    return json.loads(data[20:20 + struct.unpack("<I", data[12:16])[0]])


@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["near", "far"])
def test_glb_colours_are_linear_and_normals_stay_far_from_the_origin(tmp_path, offset):
    """glTF's COLOR_0 is linear (PLY's and OBJ's colours are sRGB, as rendered): the GLB held the sRGB bytes, which
    Blender and three.js show washed out. A mesh far from the origin (written as double PLY, or as offsets in GLB)
    lost its vertex normals in both formats (a helper's hunt)."""
    mesh = trimesh.creation.icosphere(2, 0.3)
    mesh.apply_translation([offset, 0.0, 0.0])
    srgb = np.array([128, 64, 10, 200], np.uint8)
    mesh.visual.vertex_colors = np.tile(srgb, (len(mesh.vertices), 1))
    normals = mesh.vertex_normals.copy()
    ply = trimesh.load(save_mesh(mesh, tmp_path / "m.ply"), process=False)
    assert np.array_equal(ply.visual.vertex_colors[0], srgb)
    assert b"property float nx" in (tmp_path / "m.ply").read_bytes()[:600]
    np.testing.assert_allclose(ply.vertex_normals, normals, atol=1e-6)
    glb_path = save_mesh(mesh, tmp_path / "m.glb")
    attributes = _glb_json(glb_path)["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "COLOR_0"} <= set(attributes)
    glb = trimesh.load(glb_path, force="mesh", process=False)
    c = srgb[:3] / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    assert np.array_equal(glb.visual.vertex_colors[0], [*np.round(linear * 255).astype(int), 200])  # [55, 13, 1]
    np.testing.assert_allclose(glb.vertices, mesh.vertices, atol=1e-4)
    assert np.array_equal(mesh.visual.vertex_colors[0], srgb)  # the caller's mesh is left as it was


def test_small_components_are_removed():
    big = trimesh.creation.icosphere(3, 0.3)
    small = trimesh.creation.icosphere(0, 0.02)
    small.apply_translation([0.4, 0, 0])
    both = trimesh.util.concatenate([big, small])
    kept = remove_small_components(both, 0.05)
    assert len(kept.faces) == len(big.faces) and np.allclose(kept.bounds, big.bounds)
    assert len(remove_small_components(both, 0.0).faces) == len(both.faces)


def test_surface_metrics_closed_forms():
    """Concentric spheres r and r + d: every nearest distance is d (up to facets and sampling), so Chamfer-L1 ~ d,
    Chamfer-L2 ~ d^2, normals parallel; the F-score is 1 when d < tau and 0 when d > tau."""
    ref = trimesh.creation.icosphere(5, R)
    tau = 0.01 * np.linalg.norm(ref.extents)
    for d, n in ((0.002, 100_000), (0.03, 20_000)):
        pred = trimesh.creation.icosphere(5, R + d)
        m = surface_metrics(pred, ref, n_points=n)
        spacing = np.sqrt(4 * np.pi * R**2 / n)  # typical gap between samples
        assert d * 0.95 <= m["chamfer_l1"] <= d + spacing
        assert m["chamfer_l2"] == pytest.approx(d * d, rel=0.5, abs=spacing**2)
        assert m["normal_consistency"] > 0.99
        if d < tau:
            assert m["fscore"] > 0.999
        else:
            assert m["fscore"] == 0.0
    same = surface_metrics(ref, ref, n_points=5000)
    assert same == surface_metrics(ref, ref, n_points=5000)  # fixed seeds
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int))
    assert surface_metrics(empty, ref)["fscore"] == 0.0
    assert iou([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(1 / 3) and iou([0, 0], [0, 0]) == 1.0


def test_surface_metrics_of_half_a_sphere_follow_their_formulas():
    """The upper half of a sphere against the whole: where precision (about 1) and recall (about 1/2) differ and the
    two directions of Chamfer and normal consistency differ, each formula shows. Closed forms: a point at angle phi
    below the equator is 2 r sin(phi / 2) from the rim, its normal at cos(phi) to the rim's; area weight cos(phi)."""
    ref = trimesh.creation.icosphere(5, R)
    upper = ref.submesh([np.flatnonzero(ref.triangles_center[:, 2] > 0)], append=True)
    m = surface_metrics(upper, ref, n_points=40_000)
    phi = np.linspace(0, np.pi / 2, 100_001)
    lower_gap = np.trapezoid(2 * R * np.sin(phi / 2) * np.cos(phi), phi)  # mean over the lower half's area
    lower_nc = np.trapezoid(np.cos(phi) ** 2, phi)  # pi / 4
    tau = 0.01 * np.linalg.norm(ref.extents)
    recall = 0.5 + np.sin(2 * np.arcsin(tau / (2 * R))) / 2  # the upper half and a band of chord tau below
    # (0 + (0 + lower_gap) / 2) / 2, plus the gap to the nearest sample rather than the surface (one-sided: 0.003)
    assert m["chamfer_l1"] == pytest.approx(lower_gap / 4, rel=0.1)
    assert m["fscore"] == pytest.approx(2 * recall / (1 + recall), abs=0.01)
    assert m["normal_consistency"] == pytest.approx((1 + (1 + lower_nc) / 2) / 2, abs=0.01)
    # scale: the F-score's tau follows the diagonal and normals do not care; Chamfer scales as a length
    big = surface_metrics(upper.copy().apply_scale(10.0), ref.copy().apply_scale(10.0), n_points=40_000)
    assert big["fscore"] == pytest.approx(m["fscore"], abs=1e-6)
    assert big["normal_consistency"] == pytest.approx(m["normal_consistency"], abs=1e-6)
    assert big["chamfer_l1"] == pytest.approx(10 * m["chamfer_l1"], rel=1e-5)
    assert big["chamfer_l2"] == pytest.approx(100 * m["chamfer_l2"], rel=1e-5)
    # a mesh whose faces point inwards (the other inside convention) is as consistent: |cos|
    flipped = ref.copy()
    flipped.invert()
    assert surface_metrics(flipped, ref, n_points=20_000)["normal_consistency"] > 0.99


@pytest.mark.parametrize("sigma", [0.01, 0.03])
def test_iou_near_points_scatter_about_the_surface_by_sigma(sigma):
    """Tancik's "hard" IoU points: surface samples plus N(0, sigma^2) noise, so their distance to a sphere has a
    standard deviation of sigma (the normal component of the noise) and a mean of about 0."""
    from rwf_render.mesh import iou_points

    sphere = trimesh.creation.icosphere(5, R)
    uniform, near = iou_points(sphere, n=50_000, seed=3, near_sigma=sigma)
    off = np.linalg.norm(near, axis=1) - R
    assert off.std() == pytest.approx(sigma, rel=0.1) and abs(off.mean()) < 0.2 * sigma
    assert uniform.min() >= -0.5 and uniform.max() <= 0.5 and abs(uniform.mean()) < 0.01


def test_unit_box_constant():
    assert UNIT_BOX == ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


def test_the_renderer_reads_glb_colours_back_as_srgb(tmp_path):
    # rwf data synth renders sRGB images: a GLB's linear colours (as save_mesh writes them) are turned back, so an
    # exported mesh renders as coloured (the review of the change above: it rendered 128 as 55)
    from data_tools.synth import load_mesh as synth_mesh

    mesh = trimesh.creation.icosphere(1, 0.3)
    srgb = np.array([128, 64, 200, 255], np.uint8)
    mesh.visual.vertex_colors = np.tile(srgb, (len(mesh.vertices), 1))
    back = synth_mesh(save_mesh(mesh, tmp_path / "m.glb"))
    assert np.abs(back.visual.vertex_colors[0].astype(int) - srgb).max() <= 2  # 8-bit linear: a level or two
    assert np.array_equal(synth_mesh(save_mesh(mesh, tmp_path / "m.ply")).visual.vertex_colors[0], srgb)
