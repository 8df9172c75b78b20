"""Oriented point clouds as shapes to fit: reading PLY (vertices, no faces) and XYZ text with checks, normals
estimated where the file has none, and the signed distance to the cloud that ``ShapeTask`` trains on.

Signed distance to an oriented cloud (Hoppe, DeRose, Duchamp, McDonald & Stuetzle 1992, "Surface reconstruction
from unorganized points", sec. 4, over several tangent planes): for a query x with nearest cloud point p_0 at
distance d_0 and k = ``VOTE_K`` nearest points p_i (normals n_i), s_i = (x - p_i) . n_i is x's signed distance to
the tangent plane of p_i, and

    m          the median of s_1 .. s_k
    sign       the sign of m: - exactly where most of the k points see x behind their tangent plane, so one
               flipped normal among them cannot turn it (within about l^2 / 2R of the surface, l the spacing and R
               the radius of curvature, it may err: there the distance is ~0 anyway)
    magnitude  |m| clipped to [d_0 - h, d_0]
               Hoppe's tangent-plane distance near the surface, the median over k planes rather than p_0's alone
               so that noise in the points averages out (a sphere with noise of std 0.004: RMS error 0.0033
               against 0.0049 from p_0's plane), kept within the bounds d_0 - h <= D <= d_0 that hold for the
               distance D to a surface every point of which lies within h of a sample (h = ``SPACING_FACTOR`` x
               the median nearest-neighbour spacing of the cloud): away from the surface the planes would
               underestimate, and the magnitude tends to d_0.

Inside (occupancy targets, IoU) is where that signed distance is negative. Surface samples are the cloud's own
points with their normals.

A fit stores the cloud it trained on, normals included, in its run folder (``STORED_CLOUD``, ``save_cloud``), so
that the commands on the run read it back (``load_stored_cloud``) instead of estimating the normals again
(``shape_task.load_source`` says when the copy is used).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import RwfWarning, UserError
from .rundir import atomic_write
from .signals import import_held

CLOUD_SUFFIXES = (".xyz",)
"""suffixes always read as point clouds; a PLY is a cloud when its header declares no faces"""
MIN_POINTS = 100
VOTE_K = 7  # odd: no ties
NORMAL_K = 30  # neighbours fitting each estimated tangent plane (open3d's hybrid search: at most this many ...)
RADIUS_K = 10  # ... within twice the median distance to the RADIUS_K-th neighbour)
ORIENT_K = 15  # neighbours of the Riemannian graph that propagates the orientation
SPACING_FACTOR = 2.0
STORED_CLOUD = "cloud.npz"
"""a point-cloud run's copy of the cloud it trained on (``save_cloud``): its points, normals and source's sha256"""


@dataclass
class PointCloud:
    """Points (N, 3) float64 with unit normals (N, 3) float64; ``estimated``: the normals did not come from the
    file. Has the ``bounds`` of a mesh, so ``mesh.Normalization`` fits and applies to it."""

    points: np.ndarray
    normals: np.ndarray
    estimated: bool = False

    def __len__(self) -> int:
        return len(self.points)

    @property
    def bounds(self) -> np.ndarray:
        return np.stack([self.points.min(0), self.points.max(0)])

    def moved(self, f) -> "PointCloud":
        """The cloud with ``f`` applied to its points (a translation and a uniform scale: normals unchanged)."""
        return PointCloud(f(self.points), self.normals, self.estimated)

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """n of the points and their normals, from ``seed``: each point once (random order) while n <= N, the rest
        drawn with replacement. (n, 3), (n, 3)."""
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(self))[:n]
        if n > len(self):
            idx = np.concatenate([idx, rng.integers(0, len(self), n - len(self))])
        return self.points[idx], self.normals[idx]


def is_point_cloud_file(path: str | os.PathLike) -> bool:
    """True for an XYZ file and for a PLY whose header declares no faces (or 0); a PLY with faces is a mesh."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in CLOUD_SUFFIXES:
        return True
    if ext != ".ply" or not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(65536)
    if not head.startswith(b"ply") or b"end_header" not in head:
        return False  # not a PLY or a broken header: the mesh reader says what is wrong
    for line in head.split(b"end_header")[0].splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == b"element" and words[1] == b"face":
            return words[2] == b"0"
    return True


def load_point_cloud(path: str | os.PathLike) -> PointCloud:
    """Read a PLY without faces (x y z, optional nx ny nz) or XYZ text (``x y z [nx ny nz]`` per line, SIREN's
    format; '#' starts a comment) and check it (``checked_cloud``). UserError for anything unreadable."""
    from .mesh_io import check_complete  # noqa: PLC0415  (the truncated-PLY check meshes get)

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a point cloud file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    normals = None
    try:
        if path.suffix.lower() == ".ply":
            import trimesh  # noqa: PLC0415

            loaded = trimesh.load(str(path), file_type="ply", process=False)
            check_complete(path, ".ply", loaded)
            vertex = (loaded.metadata.get("_ply_raw") or {}).get("vertex", {}).get("data")
            # a dict of columns (ASCII) or a structured array (binary)
            names = set(vertex.dtype.names or ()) if isinstance(vertex, np.ndarray) else set(vertex or ())
            if not names >= set("xyz"):
                raise UserError(f"{path}: the PLY has no vertex element with x, y, z")
            points = np.stack([np.asarray(vertex[c], np.float64).reshape(-1) for c in "xyz"], 1)
            if names >= {"nx", "ny", "nz"}:
                normals = np.stack([np.asarray(vertex[c], np.float64).reshape(-1) for c in ("nx", "ny", "nz")], 1)
        else:
            rows = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=2)
            if rows.shape[1] not in (3, 6):
                raise UserError(f"{path}: expected 3 (x y z) or 6 (x y z nx ny nz) numbers per line, "
                                f"found {rows.shape[1]}")
            points, normals = rows[:, :3], (rows[:, 3:] if rows.shape[1] == 6 else None)
    except UserError:
        raise
    except Exception as e:  # numpy's and trimesh's readers raise many types on malformed files
        kind = "PLY" if path.suffix.lower() == ".ply" else "XYZ text"
        raise UserError(f"{path}: cannot read as {kind} ({type(e).__name__}: {e})") from None
    return checked_cloud(points, normals, str(path))


def checked_cloud(points: np.ndarray, normals: np.ndarray | None = None, name: str = "point cloud") -> PointCloud:
    """A PointCloud with unit normals (estimated when ``normals`` is None), or UserError: NaN or infinite
    coordinates, fewer than MIN_POINTS points, all points on a plane, a line or one point, zero or NaN normals."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if len(points) < MIN_POINTS:
        raise UserError(f"{name}: {len(points)} points; a point cloud to fit needs at least {MIN_POINTS}")
    bad = ~np.isfinite(points).all(1)
    if bad.any():
        raise UserError(f"{name}: {int(bad.sum())} points have NaN or infinite coordinates (the first: point "
                        f"{int(np.argmax(bad))})")
    centred = points - points.mean(0)
    s = np.linalg.svd(centred / max(float(np.abs(centred).max()), 1e-300), compute_uv=False)
    if s[2] <= 1e-6 * s[0]:
        what = "one point" if s[0] == 0 else "a line" if s[1] <= 1e-6 * s[0] else "a plane"
        raise UserError(f"{name}: all points lie on {what}; a signed distance needs a surface that encloses volume")
    if normals is None:
        return PointCloud(points, estimate_normals(points), estimated=True)
    normals = np.asarray(normals, np.float64).reshape(-1, 3)
    length = np.linalg.norm(normals, axis=1)
    bad = ~(np.isfinite(length) & (length > 1e-12))
    if bad.any():
        raise UserError(f"{name}: {int(bad.sum())} normals are zero, NaN or infinite (the first: point "
                        f"{int(np.argmax(bad))}); fix them or drop the nx ny nz columns to have them estimated")
    normals = normals / length[:, None]
    if inward(points, normals):  # the fit would take the outside for the inside: a solid box with a shape-shaped hole
        warnings.warn(f"{name}: the given normals point inward on the whole; flipped to point outward, as an "
                      "inside-out mesh is turned", RwfWarning, stacklevel=2)
        normals = -normals
    return PointCloud(points, normals)


def inward(points: np.ndarray, normals: np.ndarray) -> bool:
    """Whether unit ``normals`` (N, 3) of ``points`` (N, 3) point inward on the whole: for a closed surface
    sum_i n_i . (p_i - c) approximates the integral of n . (x - c) over it, 3 x its volume > 0 (divergence theorem)
    when they point outward; negative when they point inward."""
    centred = points - points.mean(0)
    return float(np.einsum("ij,ij->", normals, centred / max(float(np.abs(centred).max()), 1e-300))) < 0


def estimate_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals of an unoriented cloud (N, 3) -> (N, 3), pointing outward.

    Tangent planes by PCA of the neighbours (open3d ``estimate_normals``: at most NORMAL_K within a radius of twice
    the median distance to the RADIUS_K-th neighbour, so the rule scales with the cloud's density), oriented
    consistently by propagation along a minimum spanning tree (Hoppe et al. 1992, open3d
    ``orient_normals_consistent_tangent_plane``), then all flipped if they point inward on the whole: for a closed
    surface sum_i n_i . (p_i - c) approximates the integral of n . (x - c) over it, 3 x its volume > 0 (divergence
    theorem) when the normals point outward.
    """
    o3d = import_held("open3d")
    from scipy.spatial import cKDTree  # noqa: PLC0415

    centred = points - (points.min(0) + points.max(0)) / 2
    unit = centred / float(np.abs(centred).max())  # open3d in a frame of unit size (precision far from the origin)
    k = min(RADIUS_K, len(points) - 1)
    radius = 2.0 * float(np.median(cKDTree(unit).query(unit, k=k + 1)[0][:, k]))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(unit))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=NORMAL_K))
    cloud.orient_normals_consistent_tangent_plane(ORIENT_K)
    normals = np.asarray(cloud.normals, np.float64)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    if inward(unit, normals):
        normals = -normals
    return normals


def save_cloud(path: str | os.PathLike, cloud: PointCloud, source_sha256: str) -> None:
    """Write ``cloud`` (in its own units, normals as trained on) and the sha256 of the file it was read from to
    ``path`` atomically, as an uncompressed .npz of plain arrays (no pickle): 48 bytes a point, float64 so that it
    reads back bit for bit (4.8 MB for 100k points)."""

    def write(f):
        np.savez(f, points=np.asarray(cloud.points, np.float64), normals=np.asarray(cloud.normals, np.float64),
                 estimated=np.array(bool(cloud.estimated)), source_sha256=np.array(str(source_sha256)))

    atomic_write(path, write)


def load_stored_cloud(path: str | os.PathLike) -> tuple[PointCloud, str]:
    """The cloud ``save_cloud`` wrote to ``path`` and the sha256 of its source file; UserError, one line naming
    ``path``, for a file that is not such a cloud (truncated, damaged: the zip's CRC-32 of each array is checked,
    arrays missing or of the wrong shape, coordinates not finite, normals not of unit length)."""
    import zipfile  # noqa: PLC0415

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            points, normals = np.asarray(z["points"]), np.asarray(z["normals"])
            estimated, sha = bool(z["estimated"]), str(z["source_sha256"])
        if points.dtype != np.float64 or normals.dtype != np.float64 or points.ndim != 2 or points.shape[1:] != (3,) \
                or normals.shape != points.shape or len(points) < MIN_POINTS:
            raise ValueError(f"points {points.dtype} {points.shape}, normals {normals.dtype} {normals.shape}")
        if not (np.isfinite(points).all() and np.isfinite(normals).all()) \
                or np.abs(np.linalg.norm(normals, axis=1) - 1).max() > 1e-6:
            raise ValueError("coordinates not finite or normals not of unit length")
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable stored point cloud ({type(e).__name__}: {e}); delete it to have the "
                        f"source file read again (its normals estimated anew if it has none)") from None
    return PointCloud(points, normals, estimated), sha


def cloud_report(cloud: PointCloud) -> dict:
    """Facts worth storing with a run (the counterpart of ``mesh_io.mesh_report``)."""
    return {"kind": "point cloud", "points": len(cloud), "normals": "estimated" if cloud.estimated else "given",
            "bounds": cloud.bounds.tolist()}


class CloudQuery:
    """Signed distance and inside/outside of an oriented point cloud (module docstring), with ``MeshQuery``'s
    interface: ``distance``, ``inside``, ``signed_distance``, ``cast`` and ``method``.

    Args:
        cloud: the cloud, in the unit cube.
    Shapes: points (N, 3) -> (N,).
    """

    def __init__(self, cloud: PointCloud):
        from scipy.spatial import cKDTree  # noqa: PLC0415

        self.cloud = cloud
        # sliding-midpoint splits: 3x faster than median splits for queries far from the surface (half the pool)
        self.tree = cKDTree(cloud.points, balanced_tree=False, compact_nodes=False)
        spacing = float(np.median(self.tree.query(cloud.points, k=2)[0][:, 1]))
        self.h = SPACING_FACTOR * spacing
        self.method = (f"point cloud of {len(cloud)} points, normals {'estimated' if cloud.estimated else 'given'}: "
                       f"the median of the signed distances to the {VOTE_K} nearest points' tangent planes (its sign "
                       f"their majority vote), its size within [d - {self.h:.3g}, d] (Hoppe et al. 1992)")

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        x = np.asarray(points, np.float64).reshape(-1, 3)
        d, i = self.tree.query(x, k=min(VOTE_K, len(self.cloud)))
        d, i = d.reshape(len(x), -1), i.reshape(len(x), -1)  # (N, k)
        side = np.einsum("nkc,nkc->nk", x[:, None] - self.cloud.points[i], self.cloud.normals[i])  # (N, k)
        med = np.median(side, axis=1)  # negative exactly where most of the k tangent planes see x behind them
        magnitude = np.clip(np.abs(med), d[:, 0] - self.h, d[:, 0])
        return np.where(med < 0, -magnitude, magnitude).astype(np.float32)

    def distance(self, points: np.ndarray) -> np.ndarray:
        return np.abs(self.signed_distance(points))

    def inside(self, points: np.ndarray) -> np.ndarray:
        return self.signed_distance(points) < 0

    def outward_agreement(self, n: int = 2000, seed: int = 0) -> float:
        """Share of n cloud points whose normal agrees with the vote a small step along it (1: consistent)."""
        p, nrm = self.cloud.sample(min(n, len(self.cloud)), seed)
        eps = 0.5 * self.h
        return float(np.mean(~self.inside(p + eps * nrm) & self.inside(p - eps * nrm)))

    def cast(self, rays: np.ndarray, eps: float = 1e-3, steps: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """First hits of rays (N, 6) = [o, d] with the level {signed distance < eps} inside the unit cube, as
        ``MeshQuery.cast``: t (N,) (inf on a miss) and the nearest cloud point's normal there (N, 3).

        Sphere tracing (Hart 1996) that steps forward only, by max(f, eps): the magnitude never exceeds the
        distance to the nearest point, and a point where the vote already reads inside counts as a hit (stepping
        back from it, as ``spheretrace.sphere_trace`` does, can oscillate across a gap between points)."""
        from .mesh import UNIT_BOX  # noqa: PLC0415
        from .spheretrace import box_interval  # noqa: PLC0415

        o, d = (torch.as_tensor(np.asarray(rays, np.float32)[:, i:i + 3]) for i in (0, 3))
        t0, t1, meets = box_interval(o, d, UNIT_BOX)
        t, out = t0.numpy().astype(np.float64), np.full(len(o), np.inf)
        o, d, t1 = o.numpy().astype(np.float64), d.numpy().astype(np.float64), t1.numpy()
        active = np.flatnonzero(meets.numpy())
        for _ in range(steps):
            if not len(active):
                break
            f = self.signed_distance(o[active] + t[active, None] * d[active])
            done = f < eps
            out[active[done]] = t[active[done]]
            t[active] += np.maximum(f, eps)
            active = active[~done & (t[active] < t1[active])]
        normals = np.zeros((len(o), 3), np.float32)
        hit = np.isfinite(out)
        if hit.any():
            normals[hit] = self.cloud.normals[self.tree.query(o[hit] + out[hit, None] * d[hit])[1]]
        return out.astype(np.float32), normals
