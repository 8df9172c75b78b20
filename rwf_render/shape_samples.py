"""Training samples for shape fields, and the built-in procedural shape.

A pool of points with exact targets is drawn from a seed (so a resumed fit redraws the same pool):

    surface   uniform on the triangles (area-weighted); signed distance 0, outward face normal
              (a point cloud: its own points and normals)
    near      surface samples + N(0, near_sigmas[0]^2) per axis   (the thin shell that decides the surface)
    far       surface samples + N(0, near_sigmas[1]^2) per axis   (the band around it)
    uniform   uniform in the unit cube                             (keeps the rest of the box empty)

Targets: signed distance (open3d's exact closest-point distance, sign from ``MeshQuery.inside``; for a point
cloud ``point_cloud.CloudQuery``'s) and the inside/outside label. Occupancy training has no use for points exactly
on the surface (their label is a coin flip), so for it the surface share goes to "near".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ._lazy import trimesh
from .mesh import UNIT_BOX, MeshQuery, extract_mesh, sample_surface
from .mesh_io import checked_mesh

KINDS = ("surface", "near", "far", "uniform")


@dataclass
class Samples:
    """A pool of N training points. points (N, 3), sdf (N,), inside (N,) bool, normals (N, 3) (zero off the
    surface), surface (N,) bool: which points lie on the surface."""

    points: torch.Tensor
    sdf: torch.Tensor
    inside: torch.Tensor
    normals: torch.Tensor
    surface: torch.Tensor

    def __len__(self) -> int:
        return self.points.shape[0]

    def index(self, idx: torch.Tensor) -> "Samples":
        return Samples(*(t[idx] for t in (self.points, self.sdf, self.inside, self.normals, self.surface)))

    def to(self, device) -> "Samples":
        return Samples(*(t.to(device) for t in (self.points, self.sdf, self.inside, self.normals, self.surface)))


def split_counts(n: int, mix) -> list[int]:
    """n split by the fractions ``mix`` (normalized), rounding so the counts add up to n."""
    w = np.asarray(mix, np.float64)
    w = w / w.sum()
    counts = np.floor(w * n).astype(int)
    counts[np.argmax(w)] += n - counts.sum()
    return counts.tolist()


def draw_samples(mesh, query, n: int, mix=(0.25, 0.25, 0.2, 0.3), near_sigmas=(0.005, 0.05), seed: int = 0,
                 distances: bool = True, box=UNIT_BOX) -> Samples:
    """A pool of ``n`` points in ``box`` around ``mesh`` (see the module docstring), from ``seed``. ``mesh`` may be a
    ``point_cloud.PointCloud`` with its ``CloudQuery``: surface samples are then its points with their normals.

    ``distances=False`` skips the closest-point queries (occupancy training needs only the labels; ``sdf`` then
    holds -1 inside and +1 outside) and gives the surface share to "near".
    """
    rng = np.random.default_rng(seed)
    mix = list(mix)
    if not distances:
        mix = [0.0, mix[0] + mix[1], mix[2], mix[3]]
    n_surf, n_near, n_far, n_uni = split_counts(n, mix)
    lo, hi = np.asarray(box[0]), np.asarray(box[1])
    pts, normals = sample_surface(mesh, n_surf + n_near + n_far, seed=int(rng.integers(2**31)))
    normals = normals[:n_surf]
    offsets = np.concatenate([np.zeros((n_surf, 1)), np.full((n_near, 1), near_sigmas[0]),
                              np.full((n_far, 1), near_sigmas[1])])
    off = pts + offsets * rng.standard_normal(pts.shape)
    uniform = lo + (hi - lo) * rng.random((n_uni, 3))
    points = np.clip(np.concatenate([off, uniform]), lo, hi).astype(np.float32)
    surface = np.zeros(n, bool)
    surface[:n_surf] = True
    inside = np.zeros(n, bool)
    if distances:  # one query for both (a point cloud's sign and distance come from the same neighbours)
        sdf = np.zeros(n, np.float32)
        sdf[n_surf:] = query.signed_distance(points[n_surf:])
        inside[n_surf:] = np.signbit(sdf[n_surf:])  # -0.0 too: inside at distance 0
    else:
        inside[n_surf:] = query.inside(points[n_surf:])
        sdf = np.where(inside, -1.0, 1.0).astype(np.float32)
    all_normals = np.zeros((n, 3), np.float32)
    all_normals[:n_surf] = normals
    return Samples(torch.from_numpy(points), torch.from_numpy(sdf), torch.from_numpy(inside),
                   torch.from_numpy(all_normals), torch.from_numpy(surface))


def orient_outward(mesh: trimesh.Trimesh, query: MeshQuery, n: int = 2000, seed: int = 0) -> tuple[trimesh.Trimesh,
                                                                                                     float]:
    """The mesh with the faces of each connected part flipped if most of its face normals point inward (judged by
    ``query.inside`` a small step on either side of sampled surface points), and the fraction of samples that agree
    with the final orientation (near 1 for a consistently oriented mesh). Part by part, so a part wound the other
    way round (a mirrored one) is turned too, and the wall of a cavity keeps facing into the cavity."""
    pts, faces = trimesh.sample.sample_surface(mesh, n, seed=seed)
    nrm = np.asarray(mesh.face_normals)[faces]
    eps = 1e-3 * float(np.linalg.norm(mesh.extents))
    votes = query.inside(pts - eps * nrm).astype(int) - query.inside(pts + eps * nrm).astype(int)  # +1: outward
    decided = votes != 0
    if not decided.any():
        return mesh, 1.0
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    part = labels[faces[decided]]
    out = np.bincount(part, votes[decided] > 0, minlength=labels.max() + 1)  # outward samples per part
    total = np.bincount(part, minlength=labels.max() + 1)
    flip = 2 * out < total
    agree = float(np.where(flip, total - out, out).sum() / total.sum())
    if flip.any():
        f = np.asarray(mesh.faces).copy()
        f[flip[labels]] = f[flip[labels]][:, ::-1]
        mesh = trimesh.Trimesh(mesh.vertices, f, process=False)
    return mesh, agree


def trefoil(res: int = 64, tube: float = 0.45) -> trimesh.Trimesh:
    """The built-in shape: a trefoil knot (x, y, z) = (sin t + 2 sin 2t, cos t - 2 cos 2t, -sin 3t) swept by a
    round tube, meshed by marching cubes of its distance field: watertight, genus 1, generated on the fly."""
    return _trefoil(res, tube).copy()


@functools.lru_cache(maxsize=2)
def _trefoil(res: int, tube: float) -> trimesh.Trimesh:
    from scipy.spatial import cKDTree  # noqa: PLC0415

    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    curve = np.stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t), -np.sin(3 * t)], 1)
    tree = cKDTree(curve)
    half = np.abs(curve).max(0) + tube + 0.2
    box = (tuple(-half), tuple(half))

    def sdf(x: torch.Tensor) -> torch.Tensor:  # distance to the densely sampled curve, minus the radius
        return torch.from_numpy(tree.query(x.numpy())[0] - tube).float()

    m = extract_mesh(sdf, box=box, res=res, chunk=2**20)
    return checked_mesh(np.asarray(m.vertices), np.asarray(m.faces), "built-in trefoil")
