"""Triangle meshes: the normalization into the unit cube, signed distance and inside/outside, chunked
marching-cubes extraction from any field, small-component removal and metrics against a reference (files are read
and written by ``mesh_io``).

Conventions
    unit cube     the box [-0.5, 0.5]^3 in which fields are trained; ``Normalization`` maps a mesh's own units
                  into it (bounding-box centre to the origin, longest side to ``fill``) and back.
    signed dist.  negative inside, positive outside.
    inside/out    decided by ray-parity voting: a point is inside when a ray from it crosses the surface an odd
                  number of times; ``n_dirs`` rays in fixed directions vote and the majority wins. A watertight
                  mesh needs one ray (3 vote against rays grazing an edge); for an open mesh a ray that leaves
                  through a hole reads "outside", and as long as holes cover less than half of the directions seen
                  from a point the vote is still right (15 directions by default). A watertight mesh of several
                  parts (a GLB scene) is the union of its parts: each ray sums its crossings with their sign (the
                  winding number), so where two parts overlap is inside, not outside as parity would have it.
                  ``winding_number`` (the generalized winding number of Jacobson et al. 2013) is the exact
                  reference, O(points x faces).

The extraction (``evaluate_grid``, ``extract_mesh``) takes plain callables and arrays, so the NeRF pipeline uses it
with a density field.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ._lazy import trimesh
from .errors import UserError
from .evalchunk import eval_chunk
from .parity import inside_points
from .signals import import_held

UNIT_BOX = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


@dataclass
class Normalization:
    """unit = (x - center) * scale and back; the bounding box is centred and its longest side becomes ``fill``."""

    center: tuple
    scale: float

    @classmethod
    def fit(cls, mesh: trimesh.Trimesh, fill: float = 0.9) -> "Normalization":
        lo, hi = np.asarray(mesh.bounds)
        return cls(tuple(float(c) for c in (lo + hi) / 2), float(fill / (hi - lo).max()))

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - np.asarray(self.center)) * self.scale

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u, np.float64) / self.scale + np.asarray(self.center)

    def apply(self, mesh, inverse: bool = False):
        """The mesh (or ``point_cloud.PointCloud``) moved into the unit cube, or back with ``inverse``."""
        f = self.from_unit if inverse else self.to_unit
        if not isinstance(mesh, trimesh.Trimesh):
            return mesh.moved(f)
        return trimesh.Trimesh(f(mesh.vertices), np.asarray(mesh.faces), process=False)

    def to_dict(self) -> dict:
        return {"center": list(self.center), "scale": self.scale, "unit = (x - center) * scale": True}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(tuple(d["center"]), float(d["scale"]))


# -- distances and inside/outside ---------------------------------------------------------------------------------
def fibonacci_directions(n: int) -> np.ndarray:
    """n unit vectors spread evenly over the sphere (golden spiral), turned off the axes: (n, 3) float32."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i + 0.3
    d = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    tilt = trimesh.transformations.rotation_matrix(0.4123, [0.31, 0.77, 0.55])[:3, :3]
    return (d @ tilt.T).astype(np.float32)


def require_open3d(what: str) -> None:
    """One clear error when open3d (a declared dependency, but one that a bare GPU machine may lack) is absent."""
    try:
        import_held("open3d")
    except ImportError as e:
        raise UserError(f"{what} needs open3d, which cannot be imported ({e}); pip install open3d-cpu") from None


def closed_parts(mesh: trimesh.Trimesh) -> int:
    """The number of connected parts of a watertight, consistently wound mesh; 0 for any other mesh."""
    if not (mesh.is_watertight and mesh.is_winding_consistent):
        return 0
    return int(trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces)).max()) + 1


class MeshQuery:
    """Unsigned distance (exact, open3d's closest-point query) and inside/outside (ray-parity vote) of a mesh.

    Without open3d (a bare GPU machine, say) the vote runs in torch (``parity.inside_points``, the same rays and
    the same answers, on ``device``), and the queries that need open3d (``distance``, ``cast``) say so.

    ``union=True`` is for a watertight mesh of several closed parts wound outward (``shape_samples.orient_outward``
    turns them): parity would read the overlap of two parts as outside (a ray leaving it crosses two surfaces), so
    each ray counts its crossings with their sign instead (+1 leaving a part, -1 entering one: the winding number
    of the surface around the point) and votes inside at 1 or more. A cavity's wall, wound inward, still takes
    the cavity out. The faces that lie inside another part are left out of ``surface`` and of the distance: they
    are not on the boundary of the solid.

    Args:
        mesh: the surface; watertight or not.
        n_dirs: voting rays per point (default 3 for watertight meshes, 15 otherwise).
        device: where the torch vote runs when open3d is absent.
        union: the inside of several closed parts is their union (above).
    Shapes: points (N, 3) -> (N,).
    """

    def __init__(self, mesh: trimesh.Trimesh, n_dirs: int | None = None, device: str | torch.device = "cpu",
                 union: bool = False):
        self.watertight, self.union = bool(mesh.is_watertight), union
        self.dirs = fibonacci_directions(n_dirs or (3 if self.watertight else 15))
        self.surface = mesh
        self._normals = np.asarray(mesh.face_normals, np.float64)
        self._v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float64, device=device)
        self._f = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long, device=device)
        rule = (f"winding number (signed ray crossings) over {len(self.dirs)} directions, the union of "
                f"{closed_parts(mesh)} closed parts" if union else f"ray-parity vote over {len(self.dirs)} directions")
        try:
            o3d = import_held("open3d")
        except ImportError:
            self.scene = self.all_faces = None
            self.method = f"{rule} (torch; open3d is not installed)"
            self._trim_inner_faces(mesh)
            return
        self._o3d = o3d
        self.all_faces = self.scene = self._scene(mesh)
        self.method = rule
        if self._trim_inner_faces(mesh):
            self.scene = self._scene(self.surface)  # distances and casts: the solid's boundary only
        if self.surface is not mesh:
            self.method += f"; {len(mesh.faces) - len(self.surface.faces)} faces inside other parts left out"

    def _scene(self, mesh: trimesh.Trimesh):
        scene = self._o3d.t.geometry.RaycastingScene()
        scene.add_triangles(self._o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                            self._o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
        return scene

    def _trim_inner_faces(self, mesh: trimesh.Trimesh) -> bool:
        """With ``union``: ``surface`` without the faces whose outer side lies inside the solid; True if any."""
        if not self.union:
            return False
        eps = 1e-4 * float(np.linalg.norm(mesh.extents))
        inner = self.inside(np.asarray(mesh.triangles_center) + eps * self._normals)
        if inner.any() and not inner.all():
            self.surface = trimesh.Trimesh(mesh.vertices, np.asarray(mesh.faces)[~inner], process=False)
            self.surface.remove_unreferenced_vertices()
        return self.surface is not mesh

    def _need_open3d(self, what: str) -> None:
        if self.scene is None:
            require_open3d(what)

    def distance(self, points: np.ndarray) -> np.ndarray:
        self._need_open3d("the distance to a mesh")
        p = self._o3d.core.Tensor(np.ascontiguousarray(points, np.float32))
        return self.scene.compute_distance(p).numpy()

    def inside(self, points: np.ndarray) -> np.ndarray:
        p = np.ascontiguousarray(points, np.float32)
        if self.all_faces is None:
            return inside_points(torch.from_numpy(p).to(self._v.device), self._v, self._f,
                                 torch.from_numpy(self.dirs), union=self.union).cpu().numpy()
        votes = np.zeros(len(p), np.int32)
        for d in self.dirs:
            rays = self._o3d.core.Tensor(np.concatenate([p, np.broadcast_to(d, p.shape)], 1))
            if not self.union:
                votes += self.all_faces.count_intersections(rays).numpy().astype(np.int32) % 2
                continue
            hits = self.all_faces.list_intersections(rays)
            facing = np.sign(self._normals[hits["primitive_ids"].numpy()] @ d.astype(np.float64))
            votes += np.bincount(hits["ray_ids"].numpy(), facing, minlength=len(p)) >= 1
        return 2 * votes > len(self.dirs)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return np.where(self.inside(points), -1.0, 1.0).astype(np.float32) * self.distance(points)

    def cast(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First hits of rays (N, 6) = [o, d]: distance t (inf on a miss) and the hit triangle's normal (N, 3)."""
        self._need_open3d("ray casting against a mesh")
        out = self.scene.cast_rays(self._o3d.core.Tensor(np.ascontiguousarray(rays, np.float32)))
        return out["t_hit"].numpy(), out["primitive_normals"].numpy()


def winding_number(mesh: trimesh.Trimesh, points: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Generalized winding number (Jacobson, Kavan & Sorkine-Hornung 2013): the sum of the signed solid angles of
    the triangles seen from each point over 4 pi (Van Oosterom & Strackee 1983). 1 inside, 0 outside a closed
    surface, and a smooth vote in between across holes. O(points x faces): a reference for small meshes."""
    tri = torch.tensor(np.asarray(mesh.triangles), dtype=torch.float64)  # (F, 3, 3)
    out = []
    for p in torch.as_tensor(np.asarray(points, np.float64)).split(chunk):
        r = tri[None] - p[:, None, None, :]  # (n, F, 3, 3)
        a, b, c = r.unbind(2)
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        num = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(2 * torch.atan2(num, den).sum(1) / (4 * np.pi))
    return torch.cat(out).numpy()


# -- extraction ---------------------------------------------------------------------------------------------------
FieldFn = Callable[[torch.Tensor], torch.Tensor]
MAX_GRID_RES = 2048
"""largest marching-cubes grid per axis: the mesh of a surface grows as res^2 (some 20 million triangles and
several GB at 2048), the field evaluations as res^3"""


def check_grid_res(res: int, option: str = "--res") -> None:
    """UserError unless 2 <= res <= MAX_GRID_RES (before any work, so a typo never runs out of memory)."""
    if not 2 <= res <= MAX_GRID_RES:
        raise UserError(f"{option} must be in 2..{MAX_GRID_RES} (samples per axis of the grid), got {res}")


def grid_axes(box, res: int) -> list[np.ndarray]:
    """The res sample positions per axis, box corners included."""
    lo, hi = np.asarray(box[0], np.float64), np.asarray(box[1], np.float64)
    return [np.linspace(lo[i], hi[i], res) for i in range(3)]


@torch.no_grad()
def _eval_planes(field_fn: FieldFn, axes, i0: int, i1: int, chunk: int, device,
                 done: Callable[[int], object] | None = None) -> np.ndarray:
    """The field on the x-planes i0..i1-1 of the grid: float32 (i1 - i0, ny, nz); ``done(n)`` is called after each
    chunk of n points (a progress bar's ``update``)."""
    x = torch.as_tensor(axes[0][i0:i1], dtype=torch.float32)
    y, z = (torch.as_tensor(a, dtype=torch.float32) for a in axes[1:])
    pts = torch.stack(torch.meshgrid(x, y, z, indexing="ij"), -1).reshape(-1, 3)  # (n * ny * nz, 3)
    vals = []
    for c in pts.split(eval_chunk(device, chunk)):
        vals.append(torch.as_tensor(field_fn(c.to(device))).reshape(-1).float().cpu())
        if done is not None:
            done(len(c))
    return torch.cat(vals).numpy().reshape(i1 - i0, len(axes[1]), len(axes[2]))


def evaluate_grid(field_fn: FieldFn, box=UNIT_BOX, res: int = 128, chunk: int = 2**18,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """field_fn on the res^3 grid spanning ``box`` (corners included), ``chunk`` points per call: (res, res, res),
    index [i, j, k] at (x_i, y_j, z_k). Holds the whole volume; ``extract_mesh`` streams instead."""
    return _eval_planes(field_fn, grid_axes(box, res), 0, res, chunk, device)


def extract_mesh(field_fn: FieldFn, box=UNIT_BOX, res: int = 256, level: float = 0.0, inside: str = "below",
                 chunk: int = 2**18, slab_points: int = 2**22, device: str | torch.device = "cpu",
                 progress: bool = False) -> trimesh.Trimesh:
    """Marching cubes (scikit-image, Lewiner et al. 2003) of {field = level} on a res^3 grid over ``box``.

    The grid is processed in slabs of x-planes holding about ``slab_points`` samples (the last plane of a slab is
    kept as the first of the next, so the pieces join exactly), and the field is called on ``chunk`` points at a
    time: memory stays bounded at any resolution apart from the output mesh. The volume is closed with "outside"
    beyond the box, so a surface cut by the box is capped there and the mesh is closed.

    Args:
        field_fn: points (N, 3) float32 on ``device`` -> values (N,) (or (N, 1)).
        inside: "below" (signed distance: inside where value < level) or "above" (occupancy logits, density).
        res: 2..MAX_GRID_RES, else UserError.
        progress: a bar on stderr over the res^3 field evaluations, the slow part (a default NeRF field at res 256:
            118 of the export's 131 s on 2 shared CPU cores).
    Returns: the mesh in the coordinates of ``box``, faces oriented outward (empty when no crossing).
    """
    from skimage.measure import marching_cubes  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    if inside not in ("below", "above"):
        raise ValueError(f"inside must be 'below' or 'above', got {inside!r}")
    check_grid_res(res, "res")
    axes = grid_axes(box, res)
    lo = np.asarray(box[0], np.float64)
    spacing = (np.asarray(box[1], np.float64) - lo) / (res - 1)
    sign = 1.0 if inside == "above" else -1.0  # g = sign * (value - level): inside where g > 0
    far = -1e4  # the value beyond the box: far outside, so caps sit on the box faces
    step = max(1, min(res - 1, slab_points // (res * res) - 1))
    verts, faces, count, prev = [], [], 0, None
    bar = tqdm(total=res**3, desc="marching cubes", unit="pt", unit_scale=True, disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    with bar:
        for i0 in range(0, res - 1, step):
            i1 = min(i0 + step, res - 1)
            new = _eval_planes(field_fn, axes, i0 if prev is None else i0 + 1, i1 + 1, chunk, device, bar.update)
            vol = new if prev is None else np.concatenate([prev, new])  # planes i0..i1
            prev = vol[-1:]
            g = sign * (vol.astype(np.float64) - level)
            before, after = int(i0 == 0), int(i1 == res - 1)
            g = np.pad(g, ((before, after), (1, 1), (1, 1)), constant_values=far)
            if not (g.max() > 0 > g.min()):
                continue
            v, f, _, _ = marching_cubes(g, 0.0, gradient_direction="ascent")
            v = v - np.array([before, 1, 1]) + np.array([i0, 0, 0])  # grid index coordinates
            verts.append(lo + v * spacing)
            faces.append(f + count)
            count += len(v)
    if not verts:
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    v = np.clip(np.concatenate(verts), lo, np.asarray(box[1], np.float64))
    f = np.concatenate(faces)
    v, inv = np.unique(v, axis=0, return_inverse=True)  # joins the copies on shared slab planes
    f = inv.reshape(-1)[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    return trimesh.Trimesh(v, f, process=False)


def capped_vertices(mesh: trimesh.Trimesh, box=UNIT_BOX) -> int:
    """How many vertices of an ``extract_mesh`` mesh over ``box`` lie on the box's faces: where the surface left the
    box and was capped flat (a crossing exactly on a grid point of the boundary counts too, a rare tie)."""
    v = np.asarray(mesh.vertices, np.float64)
    lo, hi = (np.asarray(b, np.float64) for b in box)
    return int(((v == lo) | (v == hi)).any(axis=1).sum()) if len(v) else 0


def remove_small_components(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """Drop connected pieces with fewer than ``min_fraction`` of all faces (floaters); 0 keeps everything. Vertex
    colours are kept with their vertices; vertices of the dropped pieces go."""
    if min_fraction <= 0 or len(mesh.faces) == 0:
        return mesh
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    sizes = np.bincount(labels)
    keep = sizes[labels] >= min_fraction * len(mesh.faces)
    if not keep.any():
        keep = labels == sizes.argmax()
    faces = np.asarray(mesh.faces)[keep]
    used = np.unique(faces)
    remap = np.full(len(mesh.vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    out = trimesh.Trimesh(np.asarray(mesh.vertices)[used], remap[faces], process=False)
    if mesh.visual.kind == "vertex":  # colours stay with their vertices (a TSDF mesh is coloured before this)
        out.visual.vertex_colors = np.asarray(mesh.visual.vertex_colors)[used]
    return out


# -- metrics against a reference mesh -----------------------------------------------------------------------------
def surface_metrics(pred: trimesh.Trimesh, ref, n_points: int = 100_000, seed: int = 0,
                    fscore_tau: float = 0.01) -> dict:
    """Distances between ``n_points`` fixed-seed samples on each surface (Chamfer and normal consistency as
    Occupancy Networks define them; the F-score's tau here is relative to the reference's diagonal, where ONet's is
    0.01 absolute in its own normalization):

        chamfer_l1          (mean |p - nn_ref(p)| + mean |q - nn_pred(q)|) / 2   (Euclidean distances)
        chamfer_l2          the same with squared distances
        fscore              2 P R / (P + R); P, R: fractions of pred / ref samples within tau of the other
                            surface, tau = ``fscore_tau`` x the reference's bounding-box diagonal
        fscore_tau          that tau, a distance
        normal_consistency  mean |n_p . n_nn| over both directions (1: every nearest normal parallel)

    Distances are in the meshes' units. An empty prediction gives None distances and fscore 0. ``ref`` may be a
    ``point_cloud.PointCloud``: its points (at most ``n_points`` of them, each once) and normals are the samples.
    """
    from scipy.spatial import cKDTree  # noqa: PLC0415

    tau = fscore_tau * float(np.linalg.norm(np.subtract(*ref.bounds)))
    if len(pred.faces) == 0 or pred.area <= 0:
        return {"chamfer_l1": None, "chamfer_l2": None, "fscore": 0.0, "fscore_tau": tau, "normal_consistency": None}
    p, np_ = sample_surface(pred, n_points, seed=seed)
    q, nq = sample_surface(ref, n_points if isinstance(ref, trimesh.Trimesh) else min(n_points, len(ref)), seed + 1)
    d_pq, i_pq = cKDTree(q).query(p)  # accuracy: prediction -> reference
    d_qp, i_qp = cKDTree(p).query(q)  # completeness: reference -> prediction
    precision, recall = float((d_pq < tau).mean()), float((d_qp < tau).mean())
    nc = 0.5 * (np.abs((np_ * nq[i_pq]).sum(1)).mean() + np.abs((nq * np_[i_qp]).sum(1)).mean())
    return {"chamfer_l1": float(0.5 * (d_pq.mean() + d_qp.mean())),
            "chamfer_l2": float(0.5 * ((d_pq**2).mean() + (d_qp**2).mean())),
            "fscore": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall),
            "fscore_tau": tau, "normal_consistency": float(nc)}


def sample_surface(shape, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points on a mesh (area-weighted, with their face normals) or of a ``point_cloud.PointCloud`` (its own
    points and normals, ``PointCloud.sample``), from ``seed``: (n, 3), (n, 3)."""
    if not isinstance(shape, trimesh.Trimesh):
        return shape.sample(n, seed)
    pts, faces = trimesh.sample.sample_surface(shape, n, seed=seed)
    return pts, np.asarray(shape.face_normals)[faces]


def iou(pred_inside: np.ndarray, ref_inside: np.ndarray) -> float:
    """Intersection over union of two boolean occupancy samples (1.0 when both are empty)."""
    pred_inside, ref_inside = np.asarray(pred_inside, bool), np.asarray(ref_inside, bool)
    union = np.logical_or(pred_inside, ref_inside).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred_inside, ref_inside).sum() / union)


def iou_points(mesh, n: int = 2**18, seed: int = 0, box=UNIT_BOX,
               near_sigma: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Tancik et al.'s IoU test points: (n, 3) uniform in ``box`` ("easy") and (n, 3) surface samples (of a mesh or a
    point cloud, ``sample_surface``) plus N(0, near_sigma^2) noise ("hard"), both float32 from a fixed seed."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(box[0]), np.asarray(box[1])
    uniform = lo + (hi - lo) * rng.random((n, 3))
    surf, _ = sample_surface(mesh, n, seed=seed + 1)
    near = surf + near_sigma * rng.standard_normal((n, 3))
    return uniform.astype(np.float32), near.astype(np.float32)
