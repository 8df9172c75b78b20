"""Synthetic posed-image datasets from a mesh, ray-cast on the CPU (open3d ``RaycastingScene``, headless).

Output (Blender / NeRF-synthetic layout, read by :mod:`rwf_render.datasets`)::

    OUT/transforms_{train,val,test}.json   camera_angle_x, w, h, fl_x, fl_y, cx, cy, frames (OpenGL c2w)
    OUT/{train,val,test}/r_{i}.png         RGBA (straight alpha) or RGB on a white/black background
    OUT/{split}/r_{i}_depth.png            with depth: 16-bit z-depth, meters = value * depth_unit_scale_factor
    OUT/mesh.ply                           the mesh as rendered (normalized), for ground-truth geometry

The mesh is moved into the unit sphere (its bounding-box center at the origin, farthest vertex at distance 1);
``mesh_to_world`` in the JSON records that similarity. Shading is Lambertian with one fixed directional light
plus ambient, so a surface point looks the same from every view (what NeRF assumes). Colors come from the mesh
(vertex or face colors, or its texture image), or from a procedural solid texture (:func:`procedural_albedo`:
random 3-D cells at three scales, so structure from motion finds features on it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras, focal_from_fov, look_at, pixel_rays
from rwf_render.errors import UserError
from rwf_render.rundir import write_json
from rwf_render.signals import import_held

from .common import save_image, staged_output

LIGHT_DIR = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])  # toward the light, world
SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------------ materials
def procedural_albedo(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Solid texture: (P, 3) points -> (P, 3) colors in [0, 1].

    Axis-aligned cells at three scales (edge 0.31, 0.11 and 0.045 in unit-sphere units) get hashed random
    brightness (mixed 45/35/20) and the two coarser ones a random hue: strong grey-level contrast at several
    scales (SIFT sees grey), corners everywhere, and no periodicity (no false matches).
    """
    table = np.random.default_rng(seed).uniform(0.0, 1.0, size=(8192, 4))

    def cell(size: float) -> np.ndarray:
        ijk = np.floor(points / size).astype(np.int64)
        return table[((ijk[:, 0] * 73856093) ^ (ijk[:, 1] * 19349663) ^ (ijk[:, 2] * 83492791)) % len(table)]

    a, b, c = cell(0.31), cell(0.11), cell(0.045)
    lum = 0.15 + 0.85 * (0.45 * a[:, 3] + 0.35 * b[:, 3] + 0.2 * c[:, 3])
    hue = 0.5 * a[:, :3] + 0.5 * b[:, :3]
    return np.clip(0.8 * lum[:, None] * hue / hue.mean(1, keepdims=True).clip(0.05), 0, 1)


def demo_mesh():
    """A small colorless still life (trimesh.Trimesh): base plate, sphere, box, torus and cylinder.

    Meant for the procedural material: occlusions, flat and curved parts, every side textured.
    """
    import trimesh  # noqa: PLC0415

    tf = trimesh.transformations
    parts = [trimesh.creation.box((1.9, 1.9, 0.12), tf.translation_matrix((0, 0, -0.5))),
             trimesh.creation.icosphere(3, 0.36).apply_translation((-0.38, -0.32, -0.08)),
             trimesh.creation.box((0.45, 0.45, 0.45), tf.concatenate_matrices(
                 tf.translation_matrix((0.42, -0.25, -0.215)), tf.rotation_matrix(0.5, (0, 0, 1)))),
             trimesh.creation.torus(0.3, 0.1).apply_transform(tf.concatenate_matrices(
                 tf.translation_matrix((0.15, 0.42, -0.04)), tf.rotation_matrix(math.pi / 2, (1, 0, 0)))),
             trimesh.creation.cylinder(0.15, 0.8, sections=48).apply_translation((-0.48, 0.45, -0.04))]
    return trimesh.util.concatenate(parts)


def load_mesh(mesh):
    """A trimesh.Trimesh from a path (any format trimesh reads) or a Trimesh; UserError when unusable."""
    import trimesh  # noqa: PLC0415

    if isinstance(mesh, trimesh.Trimesh):
        return mesh
    path = Path(mesh)
    if not path.is_file():
        raise UserError(f"{path}: mesh file not found")
    from rwf_render.mesh_io import SUFFIXES, check_complete, quiet_trimesh  # noqa: PLC0415

    try:
        with quiet_trimesh():
            out = trimesh.load(path, force="mesh", process=False)
            if path.suffix.lower() in SUFFIXES:  # what trimesh reads wrongly without a word, as rwf fit sdf refuses it
                check_complete(path, path.suffix.lower(), out)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  (trimesh raises many types on bad files)
        raise UserError(f"{path}: cannot read mesh ({type(e).__name__}: {e})") from None
    if not isinstance(out, trimesh.Trimesh) or len(out.faces) == 0:
        raise UserError(f"{path}: no triangles in the mesh")
    if path.suffix.lower() in (".glb", ".gltf") and out.visual.kind in ("vertex", "face"):
        from rwf_render.mesh_io import linear_to_srgb  # noqa: PLC0415  (glTF's colours are linear; renders are sRGB)

        key = "vertex_colors" if out.visual.kind == "vertex" else "face_colors"
        rgba = np.asarray(getattr(out.visual, key), np.float64) / 255
        rgba[:, :3] = linear_to_srgb(rgba[:, :3])
        setattr(out.visual, key, np.round(rgba * 255).astype(np.uint8))
    faces = np.asarray(out.faces)
    if faces.min() < 0 or faces.max() >= len(out.vertices):
        raise UserError(f"{path}: faces refer to vertices that do not exist (indices {faces.min()}..{faces.max()}, "
                        f"{len(out.vertices)} vertices)")
    if not np.isfinite(np.asarray(out.vertices)).all():
        raise UserError(f"{path}: the mesh has vertices with non-finite coordinates")
    used = np.asarray(out.vertices)[np.unique(faces)]
    if (used.max(axis=0) <= used.min(axis=0)).all():  # (no subtraction: coordinates near 1e308 overflow it)
        raise UserError(f"{path}: the mesh's triangles have no extent (all their vertices coincide)")
    v = np.asarray(out.vertices, np.float64) / np.abs(used).max()  # scaled: areas of 1e300 units overflow
    if not np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1).max() > 0:
        raise UserError(f"{path}: the mesh's triangles have no area (their vertices lie on a line): nothing to see")
    return out


def _watertight(mesh) -> bool:
    """Whether the surface is closed once coincident vertices are merged (an OBJ is split at its texture seams, and
    the mesh is loaded unprocessed to keep its UVs, so its own ``is_watertight`` would call spot.obj open)."""
    import trimesh  # noqa: PLC0415

    return bool(trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=True).is_watertight)


def _color_source(mesh):
    """(name, fn(face_ids (P,), bary (P, 3), points (P, 3)) -> (P, 3) colors in [0, 1]) or (name, None)."""
    vis = mesh.visual
    kind = getattr(vis, "kind", None)
    if kind == "vertex":
        vc = np.asarray(vis.vertex_colors, dtype=np.float64)[:, :3] / 255
        return "vertex colors", lambda fid, bary, _: np.einsum("pk,pkc->pc", bary, vc[mesh.faces[fid]])
    if kind == "face":
        fc = np.asarray(vis.face_colors, dtype=np.float64)[:, :3] / 255
        return "face colors", lambda fid, bary, _: fc[fid]
    if kind == "texture" and getattr(vis, "uv", None) is not None:
        mat = vis.material
        img = getattr(mat, "image", None) or getattr(mat, "baseColorTexture", None)
        if img is not None:
            tex = np.asarray(img.convert("RGB"), dtype=np.float64) / 255
            uv = np.asarray(vis.uv, dtype=np.float64)
            th, tw = tex.shape[:2]

            def sample(fid, bary, _):
                u, v = np.einsum("pk,pkc->pc", bary, uv[mesh.faces[fid]]).T % 1.0
                return tex[np.clip(((1 - v) * th).astype(int), 0, th - 1), np.clip((u * tw).astype(int), 0, tw - 1)]
            return "texture", sample
    return "procedural", None


# ------------------------------------------------------------------------------------------------ cameras
def sphere_directions(n: int, hemisphere: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """(n, 3) unit directions: a Fibonacci lattice (rng None) or uniform random; upper half when hemisphere."""
    zmin = 0.08 if hemisphere else -1.0  # keep hemisphere cameras a few degrees above the horizon
    if rng is None:
        z = zmin + (1 - zmin) * (np.arange(n) + 0.5) / n
        phi = np.arange(n) * math.pi * (3 - math.sqrt(5))
    else:
        z, phi = rng.uniform(zmin, 1, n), rng.uniform(0, 2 * math.pi, n)
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def orbit_directions(n: int, elevation_deg: float = 30.0) -> np.ndarray:
    """(n, 3) unit directions on a circle at ``elevation_deg`` (the usual test path)."""
    phi = np.arange(n) * 2 * math.pi / n
    e = math.radians(elevation_deg)
    return np.stack([math.cos(e) * np.cos(phi), math.cos(e) * np.sin(phi), np.full(n, math.sin(e))], -1)


def make_cameras(dirs: np.ndarray, radius: float, res: int, fov_deg: float) -> Cameras:
    """Square PINHOLE cameras at ``radius * dirs`` looking at the origin, world +Z up (float64)."""
    c2w = look_at(torch.from_numpy(radius * dirs), torch.zeros(3, dtype=torch.float64))
    return Cameras.create(c2w, fx=focal_from_fov(math.radians(fov_deg), res), width=res, height=res)


# ------------------------------------------------------------------------------------------------ rendering
RAYS_PER_BLOCK = 2**18
"""pixels :class:`Renderer` casts together (each ray is cast alone, so blocks give the same image)"""


class Renderer:
    """Ray-casts one normalized mesh. ``render(cams[i])`` -> (H, W, 3) rgb, (H, W) alpha, (H, W) z-depth."""

    def __init__(self, mesh, ambient: float = 0.3, supersample: int = 2, seed: int = 0):
        o3d = import_held("open3d")

        self.mesh = mesh
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                                 o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
        self.material, self.color_fn = _color_source(mesh)
        self.ambient, self.ss, self.seed = ambient, supersample, seed

    def cast(self, rays_o: np.ndarray, rays_d: np.ndarray) -> dict:
        """Cast (R, 3) rays; returns t_hit (R,) (inf for misses, in units of |rays_d|), face ids, barycentrics."""
        o3d = import_held("open3d")

        out = self.scene.cast_rays(o3d.core.Tensor(np.concatenate([rays_o, rays_d], 1).astype(np.float32)))
        uv = out["primitive_uvs"].numpy().astype(np.float64)
        return {"t": out["t_hit"].numpy().astype(np.float64), "face": out["primitive_ids"].numpy().astype(np.int64),
                "bary": np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], -1),
                "normal": out["primitive_normals"].numpy().astype(np.float64)}

    def shade(self, hit: dict, rays_o: np.ndarray, rays_d: np.ndarray) -> np.ndarray:
        """(R, 3) Lambertian colors of the rays that hit (rows of misses are garbage)."""
        ok = np.isfinite(hit["t"])
        pts = rays_o + np.where(ok, hit["t"], 0)[:, None] * rays_d
        face = np.where(ok, hit["face"], 0)
        if self.color_fn is None:
            albedo = procedural_albedo(pts, self.seed)
        else:
            albedo = self.color_fn(face, hit["bary"], pts)
        n = hit["normal"]
        n = np.where(((n * rays_d).sum(-1) > 0)[:, None], -n, n)  # the side facing the camera
        light = self.ambient + (1 - self.ambient) * np.clip(n @ LIGHT_DIR, 0, None)
        return np.clip(albedo * light[:, None], 0, 1)

    def render(self, cam: Cameras) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(H, W, 3) straight colour, (H, W) alpha and (H, W) z-depth (0 where no surface), float32, cast in blocks of
        rows (the whole frame at once held about 350 bytes a pixel: 23 GB at the largest --res)."""
        W, H, ss = int(cam.width[0]), int(cam.height[0]), self.ss
        rgb, alpha, depth = (np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.float32),
                             np.zeros((H, W), np.float32))
        rows = max(1, RAYS_PER_BLOCK // W)
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            grid = np.stack(np.meshgrid(np.arange(W) + 0.5, np.arange(r0, r1) + 0.5), -1).reshape(-1, 2)
            rgb[r0:r1], alpha[r0:r1], depth[r0:r1] = (a.reshape(r1 - r0, W, *a.shape[1:])
                                                      for a in self._pixels(cam, grid, ss))
        return rgb, alpha, depth

    def _pixels(self, cam: Cameras, grid: np.ndarray, ss: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The colour (P, 3), alpha (P,) and z-depth (P,) of the pixels whose centres are ``grid`` (P, 2)."""
        # depth from the pixel-center rays, with z-depth-1 directions so t is the z-depth
        o, d = pixel_rays(cam, torch.from_numpy(grid), normalize=False)
        depth = self.cast(o.numpy(), d.numpy())["t"]
        # color: ss x ss sub-pixel rays per pixel, averaged
        offsets = (np.arange(ss) + 0.5) / ss - 0.5
        rgb_sum, hits = np.zeros((len(grid), 3)), np.zeros(len(grid))
        for dy in offsets:
            for dx in offsets:
                o, d = pixel_rays(cam, torch.from_numpy(grid + [dx, dy]))
                o, d = o.numpy(), d.numpy()
                hit = self.cast(o, d)
                ok = np.isfinite(hit["t"])
                rgb_sum += np.where(ok[:, None], self.shade(hit, o, d), 0)
                hits += ok
        rgb = rgb_sum / np.maximum(hits, 1)[:, None]  # straight (not premultiplied) color
        return rgb, hits / ss ** 2, np.where(np.isfinite(depth), depth, 0.0)


def normalize_mesh(mesh):
    """Copy of ``mesh`` moved into the unit sphere, and the (4, 4) similarity applied (x_world = S @ x_mesh)."""
    v = np.asarray(mesh.vertices, np.float64)
    unit = max(float(np.abs(v).max()), 1e-300)  # measured in units of the largest coordinate: no overflow to inf
    u = v / unit
    center_u = (u.min(0) + u.max(0)) / 2
    s = 1.0 / max(float(np.linalg.norm(u - center_u, axis=1).max()) * unit, 1e-12)
    center = center_u * unit
    if not (np.isfinite(s) and s >= np.finfo(np.float64).tiny and np.isfinite(center).all()):  # not subnormal
        raise UserError(f"mesh coordinates up to {unit:.3g}: too large to scale into the unit sphere in float64 "
                        "(rescale the mesh)")
    S = np.diag([s, s, s, 1.0])
    S[:3, 3] = -s * center
    out = mesh.copy()
    out.apply_transform(S)
    return out, S


def render_dataset(mesh, out: str | Path, res: int = 200, n_views: int = 100, n_val: int = 10, n_test: int = 20,
                   layout: str = "hemisphere", radius: float = 3.2, fov_deg: float = 40.0, depth: bool = False,
                   background: str = "transparent", supersample: int = 2, ambient: float = 0.3, seed: int = 0,
                   force: bool = False, log=print) -> dict:
    """Render a Blender-format dataset of ``mesh`` (a path or a trimesh.Trimesh) into ``out``.

    Args:
        res: image width = height in pixels. n_views, n_val, n_test: images per split (0 leaves a split out).
        layout: "sphere" or "hemisphere" (upper half, +Z up) for train (Fibonacci lattice) and val (random);
            test views orbit at 30 degrees elevation.
        radius: camera distance from the origin (the mesh fits the unit sphere). fov_deg: horizontal fov.
        depth: also write 16-bit z-depth PNGs. background: "transparent" (RGBA), "white" or "black" (RGB).
        supersample: sub-pixel rays per pixel and axis (anti-aliasing).
    Returns:
        numbers for the report: material, vertex and face counts, images per split, coverage (mean alpha).
    """
    if layout not in ("sphere", "hemisphere"):
        raise UserError(f"layout must be 'sphere' or 'hemisphere', got {layout!r}")
    if background not in ("transparent", "white", "black"):
        raise UserError(f"background must be transparent, white or black, got {background!r}")
    if not radius > 1.0:
        raise UserError(f"radius {radius} puts the camera inside the unit sphere holding the mesh")
    if not 0 < fov_deg < 180:
        raise UserError(f"field of view {fov_deg} deg: expected a value between 0 and 180")
    if n_views + n_val + n_test == 0:
        raise UserError("no views to render: --views, --val and --test are all 0")
    if not (isinstance(seed, int) and 0 <= seed < 2**32):  # numpy's generators refuse a negative seed
        raise UserError(f"seed must be an integer in 0..2^32-1, got {seed!r}")
    mesh_path = Path(mesh) if isinstance(mesh, (str, Path)) else None
    mesh, S = normalize_mesh(load_mesh(mesh))
    renderer = Renderer(mesh, ambient=ambient, supersample=supersample, seed=seed)
    rng = np.random.default_rng(seed)
    hemi = layout == "hemisphere"
    dirs = {"train": sphere_directions(n_views, hemi), "val": sphere_directions(n_val, hemi, rng),
            "test": orbit_directions(n_test, 30.0 if hemi else 0.0)}
    fl = focal_from_fov(math.radians(fov_deg), res)
    unit = (radius + 1.0) * 1.05 / 65535  # meters per depth unit: the farthest surface point still fits
    report = {"material": renderer.material, "vertices": len(mesh.vertices), "faces": len(mesh.faces),
              "watertight": _watertight(mesh), "coverage": []}
    inputs = (mesh_path,) if mesh_path is not None else ()  # --force must not replace the folder holding MESH
    with staged_output(out, force, inputs=inputs) as stage:
        mesh.export(stage / "mesh.ply")
        for split in SPLITS:
            if len(dirs[split]) == 0:
                continue
            (stage / split).mkdir()
            cams = make_cameras(dirs[split], radius, res, fov_deg)
            frames = []
            for i in range(len(cams)):
                rgb, alpha, z = renderer.render(cams[i])
                if background == "transparent":
                    img = np.concatenate([rgb, alpha[..., None]], -1)
                else:
                    bg = 1.0 if background == "white" else 0.0
                    img = rgb * alpha[..., None] + bg * (1 - alpha[..., None])
                save_image(stage / split / f"r_{i}.png", np.round(img * 255).astype(np.uint8))
                frame = {"file_path": f"{split}/r_{i}.png", "transform_matrix": cams.c2w[i].tolist() + [[0, 0, 0, 1]]}
                if depth:
                    save_image(stage / split / f"r_{i}_depth.png", np.round(z / unit).astype(np.uint16))
                    frame["depth_file_path"] = f"{split}/r_{i}_depth.png"
                frames.append(frame)
                report["coverage"].append(float(alpha.mean()))
            meta = {"camera_angle_x": math.radians(fov_deg), "w": res, "h": res, "fl_x": fl, "fl_y": fl,
                    "cx": res / 2, "cy": res / 2, "camera_model": "PINHOLE", "aabb_scale": 1,
                    "mesh_to_world": S.tolist(), "mesh_file_path": "mesh.ply", "background": background}
            if depth:
                meta["depth_unit_scale_factor"] = unit
            write_json(stage / f"transforms_{split}.json", {**meta, "frames": frames})
            report[split] = len(frames)
    cov = report.pop("coverage")
    log(f"rendered {sum(report.get(s, 0) for s in SPLITS)} views ({', '.join(f'{s} {report.get(s, 0)}' for s in SPLITS)})"
        f" at {res}x{res} of a {report['faces']}-face mesh ({'watertight' if report['watertight'] else 'open'}, "
        f"{report['material']} material); the object covers {100 * np.mean(cov):.1f}% of each image on average "
        f"-> {out}")
    report["mean_coverage"] = float(np.mean(cov))
    return report
