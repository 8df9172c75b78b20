"""Geometry of a trained NeRF run, on demand: marching-cubes meshes coloured by the field, point clouds where the
training rays stop, (:mod:`rwf_render.nerf_poisson`) Poisson surfaces through them and (:mod:`rwf_render.nerf_tsdf`)
surfaces fused from the rendered depths.

    rwf export mesh RUN [--res N] [--threshold T] [--crop X0 Y0 Z0 X1 Y1 Z1] [--pointcloud | --poisson | --tsdf]
                        [--out FILE]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .cli import option_typed
from .errors import RwfWarning, UserError
from .nerf import load_scene_model
from .nerf_outputs import cameras_missing, frame_bounds, scaled_cameras
from .nerf_render import NeRFModel
from .rundir import atomic_path, check_output_file, refuse_among_inputs

DEFAULT_DENSITY_LEVEL = 10.0  # per reference length, as the field's density: a surface, not haze
MIN_OPACITY = 0.5
"""a training pixel whose accumulated weight is below this sees background: no point (as ``--tsdf``'s depths)"""


def voxel_cov(model: NeRFModel, spacing) -> torch.Tensor | None:
    """(3, 3) covariance of a uniform point in a voxel of ``spacing`` (3,) world units, the scale at which a
    ``mip`` field is read on an export grid; None for a point-sampled field."""
    if not model.field.cfg.mip:
        return None
    return torch.diag(torch.as_tensor(np.asarray(spacing, np.float64) ** 2 / 12.0, dtype=torch.float32,
                                      device=model.aabb.device))


def grid_cov(model: NeRFModel, box, res: int) -> torch.Tensor | None:
    """:func:`voxel_cov` of a res^3 export grid over ``box`` (2, 3)."""
    return voxel_cov(model, (np.asarray(box[1], np.float64) - np.asarray(box[0], np.float64)) / (res - 1))


@torch.no_grad()
def vertex_colors(model: NeRFModel, mesh, chunk: int = 1 << 16, cov: torch.Tensor | None = None) -> np.ndarray:
    """Colour of the radiance field at each vertex, seen from outside along the vertex normal: (V, 4) uint8.
    ``cov`` (3, 3): the footprint of a ``mip`` field's reading (:func:`voxel_cov`)."""
    device = model.aabb.device
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    n = torch.as_tensor(np.array(mesh.vertex_normals, dtype=np.float32), device=device)
    cols = [model.field(v[i:i + chunk], -n[i:i + chunk], None, cov)[0] for i in range(0, v.shape[0], chunk)]
    rgb = torch.cat(cols).clamp(0, 1).cpu().numpy() if cols else np.zeros((0, 3))
    return np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)


def point_cloud(model: NeRFModel, box: np.ndarray | None = None, max_points: int = 1_000_000, size: int = 200,
                progress: bool = True, k: int | None = None,
                counts: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points where training rays stop (:func:`depth_points`) inside ``box`` (2, 3) when given, with their rendered
    colours and outward normals from the density field (``nerf_poisson.density_normals``, as ``--poisson`` orients
    its points; towards the camera that saw a point where the gradient is noise): positions (P, 3), colours (P, 3) in
    [0, 1] and unit normals (P, 3). ``progress`` shows a bar over the training cameras on stderr (each is rendered:
    minutes on a 100-view scene). ``counts``: see :func:`depth_points`."""
    from .nerf_poisson import density_normals  # noqa: PLC0415

    pts, cols, origins = depth_points(model, max_points, size, progress, k, box, counts)
    normals, _ = density_normals(model.field.density, pts, origins, device=model.aabb.device)
    return pts, cols, normals


def write_point_ply(path, points: np.ndarray, colors: np.ndarray, normals: np.ndarray) -> None:
    """A binary PLY of points with normals (nx ny nz, as ``rwf fit sdf`` and open3d read them) and 8-bit RGBA
    colours (colours in [0, 1], alpha 255)."""
    n = len(points)
    rec = np.empty(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
                       ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    for i, c in enumerate("xyz"):
        rec[c], rec["n" + c] = points[:, i], normals[:, i]
    rgb = np.round(np.clip(colors, 0, 1) * 255).astype(np.uint8)
    rec["red"], rec["green"], rec["blue"], rec["alpha"] = rgb[:, 0], rgb[:, 1], rgb[:, 2], 255
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}",
              *(f"property float {c}" for c in ("x", "y", "z", "nx", "ny", "nz")),
              *(f"property uchar {c}" for c in ("red", "green", "blue", "alpha")), "end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rec.tobytes())


@torch.no_grad()
def depth_points(model: NeRFModel, max_points: int = 1_000_000, size: int = 200, progress: bool = True,
                 k: int | None = None, box: np.ndarray | None = None, counts: dict | None = None):
    """The points of :func:`point_cloud` as arrays: positions (P, 3), colours (P, 3) in [0, 1] and the centre of the
    camera that saw each (P, 3), those inside ``box`` (2, 3) when given, at most ``max_points`` of them (a fixed-seed
    sample, drawn after the crop: ``--num-points N --crop`` gives N points in the crop when it holds that many);
    training images are rendered at 1 / ``k`` of their resolution (``--downscale``), else at about ``size`` pixels
    across. ``counts``, when given, receives "surface" (the pixels that hold a surface) and "outside" (those of them
    whose point ``box`` leaves out).

    A pixel of opacity ``sum_i w_i`` >= ``MIN_OPACITY`` gives the point at distance ``sum_i w_i t_i / sum_i w_i``
    along its unit ray: the weights' mean distance. ``render_camera``'s depth, ``sum_i w_i t_i``, is that times the
    opacity; taken as the distance it put a pixel of opacity 0.8 a fifth of the way short of the surface, towards
    its camera."""
    from tqdm import tqdm  # noqa: PLC0415

    from .cameras import pixel_rays  # noqa: PLC0415

    if model.train_cameras is None:
        raise UserError(f"--pointcloud and --poisson need the run's training cameras ({cameras_missing(model)})")
    cams = model.train_cameras
    k = k or max(1, int(cams.width.max()) // size)
    from .nerf_tsdf import check_downscale  # noqa: PLC0415

    check_downscale(cams.width, cams.height, k)
    cams = scaled_cameras(cams, k)
    pts, cols, origins = [], [], []
    near_far = getattr(model, "train_near_far", None)
    for i in tqdm(range(len(cams)), desc="point cloud", unit="camera", disable=not progress, dynamic_ncols=True,
                  file=sys.stderr):
        res = model.render_camera(cams[i], **frame_bounds(near_far, i))
        o, d = pixel_rays(cams[i].to(device=model.aabb.device))
        t, keep = stop_distance(res)
        trained = trained_pixels(model, i, k, keep.shape)
        keep = keep if trained is None else keep & trained.to(keep.device)
        p = o + d * t[..., None]
        surface = int(keep.sum())
        if box is not None:
            lo, hi = (torch.as_tensor(np.asarray(b), dtype=p.dtype, device=p.device) for b in box)
            keep = keep & ((p >= lo) & (p <= hi)).all(-1)
        if counts is not None:
            counts["surface"] = counts.get("surface", 0) + surface
            counts["outside"] = counts.get("outside", 0) + surface - int(keep.sum())
        pts.append(p[keep].cpu())
        cols.append(res["rgb"][keep].cpu())
        origins.append(o[keep].cpu())
    pts, cols, origins = (torch.cat(x).numpy() for x in (pts, cols, origins))
    if len(pts) > max_points:
        pick = np.random.default_rng(0).choice(len(pts), max_points, replace=False)
        pts, cols, origins = pts[pick], cols[pick], origins[pick]
    return pts, cols, origins


def trained_pixels(model: NeRFModel, i: int, k: int, shape: tuple) -> torch.Tensor | None:
    """(H, W) bool, the pixels of training image ``i`` its ``mask_path`` keeps (mask >= 0.5), at the render size
    ``shape``: ``k`` times smaller again than the fit's images (``model.train_cameras``); None without a mask. The
    field was never fitted where a mask leaves pixels out, so the point exports and --tsdf drop them too."""
    from .nerf_data import downscale_image, read_mask  # noqa: PLC0415

    paths = getattr(model, "train_mask_paths", None) or []
    if i >= len(paths) or paths[i] is None:
        return None
    mask = downscale_image(read_mask(paths[i])[..., None], max(1, int(model.cfg.downscale)) * k)[..., 0]
    if mask.shape != tuple(shape):
        raise UserError(f"{paths[i]}: the mask is {mask.shape[1]}x{mask.shape[0]} at the export's scale, its view "
                        f"{shape[1]}x{shape[0]}: the dataset changed since the fit")
    return torch.from_numpy(mask >= 0.5)


def stop_distance(res: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each ray of a render (``NeRFModel.render_camera``'s dict) stops: the weights' mean distance along the
    unit ray, depth / opacity (H, W), and whether the pixel holds a surface at all, opacity >= ``MIN_OPACITY``
    (H, W) bool (the distance is meaningless where not)."""
    opacity = res["opacity"]
    return res["depth"] / opacity.clamp_min(MIN_OPACITY), opacity >= MIN_OPACITY


def painted_background(model: NeRFModel, tsdf: bool = False) -> str | None:
    """Why the points of ``--pointcloud`` and ``--poisson`` (``tsdf``: the depths ``--tsdf`` fuses) will be poor, or
    None: a fit on a fixed white or black background of transparent images (README: the field paints that colour
    into the scene where the images are see-through, and those rays stop on it). config.json does not record the
    alpha, so the first training image tells (one image read; the fit refuses ``learned`` on such images, and
    ``random`` is the cure)."""
    from .imgio import read_image  # noqa: PLC0415

    background = model.cfg.background
    if background not in ("white", "black") or not model.train_image_paths:
        return None
    first = model.train_image_paths[0]
    try:
        pixels, _ = read_image(first)
    except UserError:
        return None  # the export reads no image: an unreadable one is not its error
    if pixels.shape[2] != 4 or not bool((pixels[..., 3] < 1).any()):
        return None
    return (f"{model.cfg.data}: transparent training images ({first.name}) fitted on a {background} background: the "
            f"field paints {background} into the scene where rays see through, so the "
            f"{'rendered depths --tsdf fuses' if tsdf else 'points'} lie off the surface; refit with --background "
            "random")


def _crop_box(model: NeRFModel, args) -> np.ndarray:
    """(2, 3) box to export: ``--crop`` (finite, max > min per axis) held to the box the field was fitted in (the
    occupancy grid's outermost cascade: rays are marched there only), or the scene box. Outside that box the field
    holds its extrapolation, no surface of the scene: a crop wholly outside is refused, one reaching beyond it is
    clipped, with a warning."""
    scene = model.aabb.cpu().numpy().astype(np.float64).reshape(2, 3)
    if not args.crop:
        return scene
    box = np.asarray(args.crop, np.float64).reshape(2, 3)
    if not np.isfinite(box).all() or not (box[1] > box[0]).all():
        raise UserError(f"--crop: six finite numbers X0 Y0 Z0 X1 Y1 Z1 with each max above its min, "
                        f"got {box.reshape(-1).tolist()}")
    fitted = model.grid.level_aabbs()[-1].cpu().numpy().astype(np.float64).reshape(2, 3)
    reach = "the scene box" if model.grid.levels == 1 else f"the outermost of the {model.grid.levels} cascades"
    if not ((box[0] < fitted[1]) & (box[1] > fitted[0])).all():
        raise UserError(f"--crop {_box_text(box)} lies outside {reach} {_box_text(fitted)}, where the field was "
                        "fitted: it holds none of the scene's surface")
    clipped = np.stack([np.maximum(box[0], fitted[0]), np.minimum(box[1], fitted[1])])
    if not np.allclose(clipped, box, rtol=0, atol=1e-6 * float(np.abs(fitted).max())):  # (the box is float32)
        warnings.warn(f"--crop {_box_text(box)} reaches beyond {reach} {_box_text(fitted)}, where the field was "
                      f"fitted; exporting {_box_text(clipped)}", RwfWarning, stacklevel=2)
    return clipped


def _box_text(box: np.ndarray) -> str:
    return " ".join(f"{v:.4g}" for v in np.asarray(box).reshape(-1))


def _out_file(out: Path) -> Path:
    """``out``, or UserError before any work when it cannot be written: a folder, or in a folder that does not
    exist (the point cloud's atomic write failed there as a failure of the machine, exit 1, after rendering)."""
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the file to write")
    from .rundir import check_output_folder  # noqa: PLC0415

    check_output_folder(out)
    return out


def density_mesh(model: NeRFModel, box, res: int, level: float = DEFAULT_DENSITY_LEVEL, min_component: float = 0.0,
                 progress: bool = False):
    """Marching cubes of {density = ``level``} on a res^3 grid over ``box`` (2, 3), components under
    ``min_component`` of all faces dropped, vertex colours from the field (seen along +z when view-dependent): the
    mesh ``rwf export mesh`` writes, in the run's world coordinates (empty when nothing crosses the level). The level
    is a density per reference length (``nerf_field.REFERENCE_DIAGONAL``), as the field's: the same surface for one
    scene in any units."""
    from .mesh import extract_mesh, remove_small_components  # noqa: PLC0415

    cov = grid_cov(model, box, res)
    mesh = extract_mesh(lambda x: model.field.density(x, cov), box, res=res, level=level * model.field.density_scale,
                        inside="above", device=model.aabb.device, progress=progress)
    if len(mesh.faces) == 0:
        return mesh
    mesh = remove_small_components(mesh, min_component)
    mesh.visual.vertex_colors = vertex_colors(model, mesh, cov=cov)
    return mesh


@torch.no_grad()
def occupied_density(model: NeRFModel, box, cov: torch.Tensor | None = None, max_cells: int = 200_000,
                     chunk: int = 1 << 16) -> np.ndarray:
    """The field's density at the centres of the occupancy grid's occupied cells inside ``box`` (2, 3) (at most
    ``max_cells`` of them, a fixed-seed sample), in ``--threshold``'s units (per reference length): what tells a
    user which level a surface of this fit lies at (an early fit's density is low: after 77 steps on lego the
    default 10 gave 660 faces, 3 gave 14,642). Empty when no occupied cell lies in the box."""
    grid = model.grid
    flat = torch.nonzero((grid.occupancy & grid.visible()).reshape(-1)).reshape(-1)
    x = grid.cell_points(flat)
    lo, hi = (torch.as_tensor(np.asarray(b), dtype=x.dtype, device=x.device) for b in box)
    x = x[((x >= lo) & (x <= hi)).all(-1)]
    if len(x) > max_cells:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:max_cells]
        x = x[pick.to(x.device)]
    values = [model.field.density(c, cov).float().reshape(-1) for c in x.split(chunk)]
    dens = torch.cat(values) if values else torch.zeros(0)
    return (dens / model.field.density_scale).cpu().numpy().astype(np.float64)


def _density_text(dens: np.ndarray) -> str:
    if len(dens) == 0:
        return "no occupied cell of the grid lies there"
    q50, q90, top = np.percentile(dens, [50, 90, 100])
    return f"the field's density at its occupied cells there: median {q50:.3g}, 90th percentile {q90:.3g}, max {top:.3g}"


def export_mesh_run(run: Path, cfg_dict: dict, args) -> int:
    from .mesh import check_grid_res  # noqa: PLC0415
    from .mesh_io import EXPORT_FORMATS, save_mesh  # noqa: PLC0415
    from .nerf_poisson import check_options, export_poisson  # noqa: PLC0415
    from .nerf_tsdf import check_options as check_tsdf_options, check_sizes, export_tsdf  # noqa: PLC0415

    poisson, tsdf = getattr(args, "poisson", False), getattr(args, "tsdf", False)
    check_options(args)
    check_tsdf_options(args)
    if not (args.pointcloud or poisson or tsdf):
        check_grid_res(args.res)  # before the model loads, as for sdf runs (--res 1 also divided by zero)
    suffix = Path(args.out).suffix.lstrip(".").lower() if args.out else ""
    fmt = args.format or suffix or "ply"
    # before the model loads, as for sdf runs: an --out such as m.stl failed only at the write, after the grid's
    # evaluation or (--poisson, --tsdf) every training view's render, and --format obj --out m.stl wrote OBJ there
    if args.format and suffix and suffix != args.format:
        raise UserError(f"--format {args.format} but --out {args.out} names a .{suffix} file")
    if args.pointcloud and fmt != "ply":
        raise UserError("--pointcloud writes PLY only")
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"{args.out}: cannot tell the mesh format from the suffix .{suffix}; name a .ply, .obj or "
                        ".glb file, or pass --format ply|obj|glb")
    if args.threshold is not None and not (np.isfinite(args.threshold) and args.threshold > 0):
        raise UserError(f"--threshold must be a positive density, got {args.threshold}")
    if args.pointcloud and args.threshold is not None:
        raise UserError("--pointcloud keeps points where rays become opaque; --threshold applies to meshes only")
    for dest, default in (("res", 256), ("min_component", 0.0)):
        if args.pointcloud and option_typed(args, dest, default):
            raise UserError(f"--{dest.replace('_', '-')} applies to meshes; --pointcloud keeps points where training "
                            "rays become opaque")
    default = ("pointcloud.ply" if args.pointcloud else f"mesh_poisson.{fmt}" if poisson else
               f"mesh_tsdf.{fmt}" if tsdf else f"mesh.{fmt}")
    out = _out_file(Path(args.out) if args.out else run / default)  # Poisson, TSDF beside marching cubes, not over it
    if args.out:
        refuse_among_inputs(out, cfg_dict.get("data"))
    check_output_file(out, getattr(args, "force", False))
    if poisson or tsdf:
        from .mesh import require_open3d  # noqa: PLC0415

        require_open3d("--poisson" if poisson else "--tsdf")
    check_sizes(cfg_dict, args)  # --tsdf-voxel and --downscale, before the model loads
    model = load_scene_model(run, args.device)
    box = _crop_box(model, args)
    if args.pointcloud or poisson or tsdf:
        note = painted_background(model, tsdf)
        if note:
            print(f"rwf: warning: {note}", file=sys.stderr)
    if poisson:
        return export_poisson(model, box, out, fmt, args)
    if tsdf:
        return export_tsdf(model, box, out, fmt, args)
    if args.pointcloud:
        # inside the scene box by default, as --poisson and --tsdf, and nerfstudio's ns-export pointcloud (before,
        # every point: 93.5 % of a short bartoszek fit's lay out in its cascades, the background the fit painted)
        counts = {}
        points, colors, normals = point_cloud(model, box, getattr(args, "num_points", None) or 1_000_000,
                                              progress=not getattr(args, "quiet", False),
                                              k=getattr(args, "downscale", None), counts=counts)
        where = f"--crop {_box_text(box)}" if args.crop else f"the scene box {_box_text(box)}"
        if counts.get("outside"):
            fitted = model.grid.level_aabbs()[-1].cpu().numpy().astype(np.float64).reshape(2, 3)
            more = "" if args.crop or model.grid.levels == 1 else \
                f"; --crop up to the outermost cascade {_box_text(fitted)} keeps more of them"
            print(f"rwf: {counts['outside']} of {counts['surface']} surface points lie outside {where}, left "
                  f"out{more}", file=sys.stderr)
        if len(points) == 0:
            raise UserError(f"no training ray reaches an opaque surface inside {where}: nothing to export")
        with atomic_path(out) as tmp:
            write_point_ply(tmp, points, colors, normals)
        print(f"{out}: {len(points)} points with normals")
        return 0
    level = DEFAULT_DENSITY_LEVEL if args.threshold is None else args.threshold
    mesh = density_mesh(model, box, args.res, level, getattr(args, "min_component", 0.0) or 0.0,
                        progress=not getattr(args, "quiet", False))
    density = _density_text(occupied_density(model, box, grid_cov(model, box, args.res)))
    if len(mesh.faces) == 0:
        if args.crop:
            raise UserError(f"no surface at density {level:g} inside --crop {_box_text(box)}: the crop box holds none "
                            f"of the surface ({density}); try a larger --crop (the scene box: no --crop) or a lower "
                            "--threshold")
        raise UserError(f"no surface at density {level:g} inside the scene box ({density}); try a lower --threshold")
    save_mesh(mesh, out, fmt)
    print(f"{out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces (density {level:g}; {density})")
    return 0
