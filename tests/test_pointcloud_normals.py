"""`rwf export mesh RUN --pointcloud` writes each point's outward normal (nx ny nz, from the density field as
``--poisson`` orients its points), so the cloud loads as an oriented point cloud in `rwf fit sdf`, open3d, MeshLab or
CloudCompare without estimating normals again (nerfstudio's point-cloud export writes normals too)."""

import numpy as np
import pytest

from rwf_render import cli


def test_the_point_cloud_carries_outward_unit_normals_that_rwf_fit_sdf_reads(still_life_run, tmp_path):
    """Normals are unit length and point out of the source mesh: at 90 % of the points or more, the normal's dot
    product with the source's face normal at the nearest surface point is positive (this fit: about 0.95); the
    file loads in the SDF pipeline's point-cloud reader with its normals as given."""
    trimesh = pytest.importorskip("trimesh")
    from rwf_render.point_cloud import load_point_cloud

    out = tmp_path / "cloud.ply"
    assert cli.main(["export", "mesh", str(still_life_run), "--pointcloud", "--quiet", "--out", str(out)]) == 0
    cloud = load_point_cloud(out)
    assert not cloud.estimated and len(cloud.points) > 1000
    raw = trimesh.load(out, process=False)
    vertex = raw.metadata["_ply_raw"]["vertex"]["data"]
    normals = np.stack([vertex[c] for c in ("nx", "ny", "nz")], -1).astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    assert np.asarray(raw.colors).shape == (len(normals), 4)  # colours kept beside the normals
    ref = trimesh.load(still_life_run.parent / "scene" / "mesh.ply", process=False)
    points = np.asarray(raw.vertices, np.float64)
    from scipy.spatial import cKDTree

    dense, face = trimesh.sample.sample_surface(ref, 400_000, seed=0)  # the nearest of them: the nearest face
    _, nearest = cKDTree(dense).query(points)
    agree = float((np.einsum("ij,ij->i", normals, ref.face_normals[face[nearest]]) > 0).mean())
    print(f"normals agreeing with the source mesh: {agree:.3f}")
    assert agree >= 0.9
