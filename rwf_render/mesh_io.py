"""Triangle mesh files: reading OBJ, PLY, STL, OFF and GLB/glTF with checks (a truncated file, 0-based OBJ
indices, NaN vertices, a degenerate or inside-out surface), and atomic export as PLY, OBJ or GLB that keeps the
coordinates' precision far from the origin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ._lazy import trimesh
from .errors import UserError
from .rundir import atomic_path

SUFFIXES = {".obj": "obj", ".ply": "ply", ".stl": "stl", ".off": "off", ".glb": "glb", ".gltf": "gltf"}
EXPORT_FORMATS = ("ply", "obj", "glb")


@contextlib.contextmanager
def quiet_trimesh():
    """Python warnings and trimesh's log lines (``unable to convert colors!`` before a refusal) kept off the user's
    terminal while a file is read: what is wrong is said once, by this toolkit."""
    log = logging.getLogger("trimesh")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Read OBJ, PLY, STL, OFF or GLB/glTF (every part of a scene, with its transform, merged into one mesh).

    Vertices that coincide are merged (an OBJ split at texture seams becomes one surface again), so
    ``is_watertight`` judges the geometry. Raises UserError for a missing, unreadable, empty, non-finite or
    degenerate mesh.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a mesh file")
    ext = path.suffix.lower()
    if ext not in SUFFIXES:
        raise UserError(f"{path}: unsupported mesh format {ext or '(no suffix)'!r}; expected OBJ, PLY, STL, OFF or GLB")
    try:
        if path.stat().st_size == 0:
            raise UserError(f"{path}: empty file")
        with quiet_trimesh():
            loaded = trimesh.load(str(path), file_type=SUFFIXES[ext], process=False)
        check_complete(path, ext, loaded)
        parts = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
        parts = [p for p in parts if isinstance(p, trimesh.Trimesh) and len(p.faces)]
        vertices = np.concatenate([np.asarray(p.vertices, np.float64) for p in parts]) if parts else np.zeros((0, 3))
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        faces = (np.concatenate([np.asarray(p.faces, np.int64) + o for p, o in zip(parts, offsets)])
                 if parts else np.zeros((0, 3), np.int64))
    except UserError:
        raise
    except Exception as e:  # trimesh's readers raise many types on corrupt files
        raise UserError(f"{path}: cannot read as {SUFFIXES[ext].upper()} ({type(e).__name__}: {e})") from None
    return checked_mesh(vertices, faces, str(path))


def check_complete(path: Path, ext: str, loaded) -> None:
    """UserError for what trimesh reads without complaint but wrongly: a truncated ASCII PLY or OFF (fewer rows than
    the header declares: part of the surface), an OBJ with 0-based indices (OBJ counts from 1; index 0 was read as
    -1, the last vertex, so every face came out shifted), and a binary STL whose size contradicts its triangle count
    (read as an empty ASCII file: "no triangles")."""
    if ext == ".ply":
        raw = getattr(loaded, "metadata", {}).get("_ply_raw") or {}
        for name, element in raw.items():
            data, n = element.get("data"), element.get("length", 0)
            held = min((len(v) for v in data.values()), default=n) if isinstance(data, dict) else n
            if held < n:
                raise UserError(f"{path}: truncated: the header declares {n} {name} elements, the file holds {held}")
    elif ext == ".off":
        lines = [line.split("#")[0].split() for line in path.read_bytes().decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line]
        counts, start = (lines[0][1:], 1) if len(lines[0]) > 1 else (lines[1], 2)  # "OFF 8 6 0" or "OFF\n8 6 0"
        nv, nf = int(counts[0]), int(counts[1])
        rows = lines[start + nv: start + nv + nf]
        if len(lines) < start + nv or len(rows) < nf or any(len(r) < 1 + int(float(r[0])) for r in rows):
            raise UserError(f"{path}: truncated: the header declares {nv} vertices and {nf} faces, the file holds "
                            f"fewer or shorter rows")
    elif ext == ".stl" and not len(getattr(loaded, "faces", ())):
        data = path.read_bytes()  # a binary STL whose size does not match its count was tried as ASCII, and empty
        if len(data) >= 84 and not data.isascii():
            count = int.from_bytes(data[80:84], "little")
            raise UserError(f"{path}: binary STL whose header declares {count} triangles ({84 + 50 * count} bytes), "
                            f"but the file has {len(data)} bytes: truncated or written wrongly")
    elif ext == ".obj" and _OBJ_ZERO_INDEX.search(path.read_bytes()):
        raise UserError(f"{path}: a face refers to vertex 0, but OBJ indices start at 1 (a 0-based export?)")


_OBJ_ZERO_INDEX = re.compile(rb"^[ \t]*f[ \t](?:[^\n]*?[ \t])?-?0(?=[/ \t\r\n]|\Z)", re.M)
"""an OBJ face line with a vertex index 0 (``f 0 1 2``, ``f 1//2 0//3 4``)"""


def checked_mesh(vertices: np.ndarray, faces: np.ndarray, name: str = "mesh") -> trimesh.Trimesh:
    """A processed Trimesh from arrays, or UserError when there is nothing to fit (see ``load_mesh``)."""
    vertices, faces = np.asarray(vertices, np.float64).reshape(-1, 3), np.asarray(faces, np.int64).reshape(-1, 3)
    if len(faces) == 0 or len(vertices) == 0:
        raise UserError(f"{name}: no triangles (not a mesh, or an empty one)")
    if not np.isfinite(vertices).all():
        raise UserError(f"{name}: vertex coordinates contain NaN or infinity")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise UserError(f"{name}: faces refer to vertices that do not exist")
    # Merge coincident vertices in a frame of unit size: trimesh merges on coordinates rounded to a fixed number
    # of decimals, which merges distinct vertices of a tiny mesh and overflows int64 for a huge one (1e11 units).
    used = vertices[faces.reshape(-1)]  # a stray vertex no face uses must not set the frame
    lo, hi = used.min(0), used.max(0)
    center, size = (lo + hi) / 2, float((hi - lo).max())
    size = size if size > 0 else 1.0
    # The checks run in that frame too (volumes of a mesh over 1e103 units overflow). A face stored twice (a part
    # exported twice) is dropped: rays would cross the surface twice there, and its edges would read as open; so is
    # a face naming one vertex twice (after the merge of coincident ones): it covers nothing, and its edges read as
    # open too (300 such faces made spot.obj "not watertight": a 15-ray vote and a warning instead of 3 rays).
    mesh = trimesh.Trimesh((vertices - center) / size, faces, process=True)
    mesh.update_faces(mesh.unique_faces())
    f = np.asarray(mesh.faces)
    if len(f):
        mesh.update_faces((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
    extent = mesh.extents if len(mesh.faces) else np.zeros(3)
    if len(mesh.faces) == 0 or extent.min() <= 1e-9 * max(extent.max(), 1e-300) or mesh.area <= 0:
        raise UserError(f"{name}: degenerate mesh (zero volume: flat, a line, a point or zero-area triangles)")
    if mesh.is_watertight and mesh.is_winding_consistent:  # else signed volumes mean nothing (faces flipped at random)
        # each closed part on its own: parts wound in opposite senses (a mirrored part) cancel in the total
        parts = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
        tri = np.asarray(mesh.triangles)
        signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6
        if np.abs(np.bincount(parts, signed)).sum() <= 1e-9 * np.prod(extent):
            raise UserError(f"{name}: degenerate mesh (encloses zero volume)")
        if mesh.volume < 0:
            mesh.invert()  # inside-out: faces reoriented so normals point outward (each part: ``orient_outward``)
    mesh.vertices = np.asarray(mesh.vertices) * size + center
    return mesh


def mesh_report(mesh: trimesh.Trimesh) -> dict:
    """Facts worth storing with a run: sizes, watertightness, bounds."""
    return {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
            "watertight": bool(mesh.is_watertight), "winding_consistent": bool(mesh.is_winding_consistent),
            "bounds": np.asarray(mesh.bounds).tolist()}



def save_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``mesh`` as PLY (binary), OBJ or GLB, atomically; ``fmt`` defaults to the suffix of ``path``."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"{path}: cannot write mesh format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    v = np.asarray(mesh.vertices, np.float64)
    size = float(np.ptp(v, 0).max()) if len(v) else 0.0
    # float32 (PLY's usual vertex type, glTF's only one) moves a vertex by up to 6e-8 of its distance from the
    # origin: a metre-sized object at UTM coordinates lands on a 0.5 m lattice. A mesh that would lose more than
    # 1e-6 of its size goes to PLY as double and to GLB as float32 offsets from its centre, the centre in the node's
    # matrix (JSON numbers, full precision).
    coarse = len(v) > 0 and float(np.abs(v.astype(np.float32) - v).max()) > 1e-6 * size
    normals = _has_normals(mesh)
    if fmt == "glb":
        mesh = _linear_colors(mesh)
    try:
        with atomic_path(path) as tmp:
            if fmt == "ply" and coarse:
                Path(tmp).write_bytes(_ply_float64(mesh, normals))
            elif fmt == "glb" and coarse:
                center = (v.min(0) + v.max(0)) / 2
                moved = trimesh.Trimesh(v - center, mesh.faces, process=False, visual=mesh.visual.copy(),
                                        vertex_normals=mesh.vertex_normals if normals else None)
                scene = trimesh.Scene()
                scene.add_geometry(moved, transform=trimesh.transformations.translation_matrix(center))
                scene.export(tmp, file_type="glb")
            elif fmt == "obj":  # fixed-point decimals: as many as keep 1e-8 of the mesh's size
                digits = 8 if size <= 0 else int(np.clip(8 - np.floor(np.log10(size)), 8, 330))
                mesh.export(tmp, file_type="obj", digits=digits)
            else:
                mesh.export(tmp, file_type=fmt)
    except OSError as e:  # a folder that cannot be written, a full disk: a failure of the machine (exit 1)
        e.filename, e.filename2 = str(path), None  # the output, not the temporary beside it
        raise
    return path


def _has_normals(mesh: trimesh.Trimesh) -> bool:
    """Whether the mesh carries vertex normals: what trimesh's own exports write them for."""
    return "vertex_normals" in mesh._cache


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] to linear ones (IEC 61966-2-1)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] to sRGB ones: the inverse of :func:`srgb_to_linear`."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _linear_colors(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """For glTF, whose COLOR_0 is linear (a multiplier of the material's colour), not sRGB as PLY's and OBJ's colours
    are: a copy of ``mesh`` with its vertex (or face) colours turned from sRGB to linear (the 8 bits trimesh writes
    keep sRGB 0..12 as linear 0..1 of 255: the darkest shades merge); the mesh itself when it has none."""
    kind = mesh.visual.kind
    if kind not in ("vertex", "face"):
        return mesh
    rgba = np.asarray(mesh.visual.vertex_colors if kind == "vertex" else mesh.visual.face_colors, np.float64) / 255
    rgba[:, :3] = srgb_to_linear(rgba[:, :3])
    colors = {f"{kind}_colors": np.round(rgba * 255.0).astype(np.uint8)}
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False,
                           vertex_normals=mesh.vertex_normals if _has_normals(mesh) else None, **colors)


def _ply_float64(mesh: trimesh.Trimesh, normals: bool = False) -> bytes:
    """Binary PLY with double vertex coordinates (and the vertex colours, and with ``normals`` float32 vertex
    normals, when the mesh has them)."""
    fields = [("xyz", "<f8", (3,))]
    props = [f"property double {c}" for c in "xyz"]
    if normals:
        fields.append(("n", "<f4", (3,)))
        props += [f"property float {c}" for c in ("nx", "ny", "nz")]
    if mesh.visual.kind == "vertex":
        fields.append(("rgba", "u1", (4,)))
        props += [f"property uchar {c}" for c in ("red", "green", "blue", "alpha")]
    vert = np.empty(len(mesh.vertices), fields)
    vert["xyz"] = np.asarray(mesh.vertices, np.float64)
    if normals:
        vert["n"] = np.asarray(mesh.vertex_normals, np.float32)
    if mesh.visual.kind == "vertex":
        vert["rgba"] = np.asarray(mesh.visual.vertex_colors, np.uint8)
    face = np.empty(len(mesh.faces), [("n", "u1"), ("index", "<i4", (3,))])
    face["n"], face["index"] = 3, np.asarray(mesh.faces)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vert)}", *props,
              f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + vert.tobytes() + face.tobytes()
