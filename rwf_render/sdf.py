"""fit a mesh or point cloud: a coordinate MLP maps 3D points to signed distance or occupancy (Tancik et al. 2020)

The mesh (OBJ, PLY, STL, OFF, GLB; with no MESH a built-in trefoil knot) is moved into the unit cube
[-0.5, 0.5]^3 (bounding-box centre to the origin, longest side to ``--fill``); the transform is stored in
config.json, so every exported mesh comes back in the mesh's own units. Targets come from the mesh: exact distances
(open3d) signed by ray-parity voting (``mesh.py``), which also decides inside/outside for open meshes.

An oriented point cloud (a PLY without faces, or XYZ text ``x y z [nx ny nz]``, SIREN's format) is fitted the
same way; normals missing from the file are estimated. Its targets are its own signed distance (Hoppe et al. 1992:
tangent plane of the nearest point, sign voted by the nearest normals; ``point_cloud.py``), its metrics compare
with its points (Chamfer, F-score, normal consistency) and with the inside that distance implies (IoU; metrics.json
says "reference": "point cloud"), and the preview's source row sphere-traces that distance.

    rwf fit sdf [MESH]                    signed distance, L1 or clamped L1, optional eikonal and normal terms
    rwf fit sdf MESH --target occupancy   the paper's occupancy task: logits, BCE on inside/outside
    rwf export mesh RUN --res 512         marching cubes of the learned field, in the mesh's units: RUN/mesh_512.ply

A run holds config.json, metrics.json, history.csv, checkpoint.pt, mesh.ply, preview.png (top: the learned field
sphere-traced from 4 views; bottom: the source mesh from the same views) and curve.png; a point-cloud run also
cloud.npz, the cloud with the normals it was trained on, which eval and --resume read instead of the source (no
normals estimated again; a source changed or gone since is said in one warning: ``shape_task.load_source``).
Metrics are computed in the unit cube: IoU on uniform and near-surface points from the field itself, Chamfer,
F-score and normal consistency of the extracted mesh (``mesh.surface_metrics``).
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import RwfWarning, UserError
from .field_options import checked_field
from .imgio import output_image_path, write_image
from .mesh import (Normalization, capped_vertices, check_grid_res, extract_mesh, remove_small_components,
                   require_open3d)
from .mesh_io import EXPORT_FORMATS, save_mesh
from .plots import curve_png
from .point_cloud import STORED_CLOUD, PointCloud, save_cloud
from .resume import check_source_unchanged, compare_runs, fit_each, resume_run_config, resume_trainer
from .rundir import (CHECKPOINT, COMPARE_PARAMS, CONFIG, METRICS, atomic_path, atomic_write_text,
                     check_out_holds_no_input, check_output_file, check_output_folder, checkpoint_mismatch,
                     load_run_model, prepare_run_dir, read_json, refuse_source_as_output, write_json)
from .sdf_options import (ALIASES, MAX_VIEW_RES, add_export_arguments, add_fit_arguments,  # noqa: F401 (the CLI's)
                          check_options, config_from_args)
from .shape_task import BUILTIN, SDFConfig, ShapeTask, build_model, field_fn, load_source
from .spheretrace import preview_image, render_field, render_mesh
from .trainer import Trainer, resolve_device

METRIC_KEYS = ("iou", "iou_surface", "chamfer_l1", "chamfer_l2", "fscore", "normal_consistency")


# -- one run ------------------------------------------------------------------------------------------------------
SHARED_OPTIONS = {"add_render_arguments": ("orbit", "video", "fps")}
"""options another pipeline adds that sdf runs take too (cli._add_pipeline_arguments)"""


def fit_one(cfg: SDFConfig, out: Path, mesh, info: dict, resume: bool, force: bool, progress: bool,
            label: str = "", warning: str = "") -> tuple[dict, list[dict], dict]:
    """Train one shape run into ``out`` and write every contract file; ``warning`` is printed once the run folder is
    accepted (a refused fit prints its error alone).

    Returns: metrics.json's content, the history rows and the preview views {"field": [...], "source": [...]}.
    """
    require_open3d("rwf fit sdf")  # distances, and the preview's ray casting (before anything is written)
    run = prepare_run_dir(out, force=force, resume=resume)
    device = resolve_device(cfg.train.device)
    # mesh -> unit cube (the transform goes into config.json) -> exact targets, test points and their labels
    norm = Normalization.fit(mesh, cfg.fill)
    task = ShapeTask(norm.apply(mesh), cfg, device)
    # Fourier features + MLP (plain | wn | rwf), trained on batches from the refreshed pool
    trainer = Trainer(build_model(cfg), task, cfg.train, run_dir=run, progress=progress)
    if resume:
        resume_trainer(trainer, run)  # before config.json is rewritten: a refused resume changes nothing
    if warning:
        print(warning, file=sys.stderr)
    stored = {}
    if isinstance(mesh, PointCloud):  # the cloud as trained on, normals included: no estimate again on this run
        save_cloud(run / STORED_CLOUD, mesh, info["sha256"])
        stored = {"stored_cloud": STORED_CLOUD}
    write_json(run / CONFIG, {**cfg.to_dict(), "normalization": norm.to_dict(),
                              "source": {**info, **stored, "inside_method": task.query.method,
                                         "normals_outward_agreement": round(task.orientation, 4)}})
    trainer.fit()
    model = trainer.model
    # metrics: IoU from the field, surface metrics from its marching-cubes mesh, which goes back to source units
    metrics, extracted = task.final_metrics(model)
    metrics.update(steps=trainer.step_idx, seconds=round(trainer.seconds, 3), param=cfg.mlp.param,
                   target=cfg.target, mesh_res=cfg.mesh_res, units="unit cube")
    save_mesh(norm.apply(extracted, inverse=True), run / "mesh.ply")  # back in the source's units
    # preview (field above, source below), training curve; metrics.json last: it marks a finished run
    views = {"field": field_views(model, cfg, cfg.preview_res, device),
             "source": render_mesh(task.query, cfg.preview_res)}
    write_image(run / "preview.png", preview_image(views))
    curve_png(run / "curve.png", {cfg.mlp.param: trainer.history}, keys=("iou", "iou_surface"), ylabel="IoU",
              title=(label or cfg.mlp.param) + ": IoU (uniform, near-surface) during training")
    write_json(run / METRICS, metrics)
    return metrics, trainer.history, views


def field_views(model, cfg: SDFConfig, res: int, device) -> list:
    """The 4 preview views of the learned field. Occupancy logits are not distances: their first crossing is
    searched in fixed steps across the box, skipping the cells of a 64^3 lattice of the field that cannot hold the
    inside (``spheretrace.CellGrid``), so the views do not depend on ``cfg.mesh_res``."""
    return render_field(field_fn(model), res, cfg.target, device=device)


def fit(args) -> int:
    compare = args.compare
    out = Path(args.out or Path("runs") / f"sdf-{Path(args.path).stem if args.path else BUILTIN}-"
                                          f"{time.strftime('%Y%m%d-%H%M%S')}")
    if compare and args.param != "rwf":
        raise UserError(f"--param {args.param}: --compare trains every parameterization ({', '.join(COMPARE_PARAMS)})")
    saved = None
    if args.resume:
        cfg, saved = resume_run_config(out, "sdf", args, SDFConfig.from_dict, config_from_args, add_fit_arguments,
                                       ALIASES)
        _check_saved(cfg, out / (Path(COMPARE_PARAMS[0]) / CONFIG if compare else CONFIG), saved)
    else:
        cfg = config_from_args(args)
    cfg.train.device = args.device if args.device != "auto" else cfg.train.device
    check_options(cfg)
    # validate the input before anything is written; a resumed point-cloud run reads the cloud it was trained on
    mesh, info = load_source(cfg, (out / COMPARE_PARAMS[0] if compare else out) if args.resume else None)
    checked_field(lambda: build_model(cfg))  # and the field: no run folder for one that overflows or cannot fit
    if not args.resume:
        check_out_holds_no_input(out, [cfg.path])
    if args.resume:
        check_source_unchanged(saved, info, cfg.path)
    resolve_device(cfg.train.device)
    if info.get("kind") == "point cloud":  # one info line: what the targets come from
        warning = (f"rwf: {cfg.path}: a point cloud of {info['points']} points, "
                   + ("no normals in the file: estimated (PCA of neighbours) and oriented consistently"
                      if info["normals"] == "estimated" else "normals from the file")
                   + "; targets: its signed distance (Hoppe et al. 1992)")
        about = f"point cloud source: {info['points']} points, normals {info['normals']}"
    else:
        warning = "" if info["watertight"] else (
            f"rwf: warning: {cfg.path}: the mesh is not watertight (open or non-manifold); inside/outside is decided "
            f"by a ray-parity vote over {cfg.vote_dirs or 15} directions")
        about = f"watertight source: {info['watertight']}"
    if not compare:
        m = fit_one(cfg, out, mesh, info, args.resume, args.force, not args.quiet, warning=warning)[0]
        print(f"{out}: iou {m['iou']:.4f} (near-surface {m['iou_surface']:.4f}), {_surface_text(m)}, "
              f"{m['steps']} steps in {m['seconds']:.1f} s; {about}")
        return 0
    # --compare: plain, wn and rwf with identical seed, data and budget, each a run of its own under OUT
    root, runs = compare_runs(cfg, out, args.resume, args.force)
    views = {}

    def fit_param(param, sub, sub_dir, resume):
        m, history, v = fit_one(sub, sub_dir, mesh, info, resume, False, not args.quiet, param,
                                warning if param == COMPARE_PARAMS[0] else "")
        views[param], views["source"] = v["field"][0], v["source"][0]
        print(f"{param:>5}: iou {m['iou']:.4f} (near-surface {m['iou_surface']:.4f}), {_surface_text(m)}, "
              f"{m['seconds']:.1f} s")
        return m, history

    done, results = fit_each(runs, fit_param)
    write_compare(root, results, {p: done[p][1] for p in done}, views)
    return 0


def _surface_text(m: dict) -> str:
    if m["chamfer_l1"] is None:
        return "no surface extracted"
    return f"chamfer_l1 {m['chamfer_l1']:.5f}, fscore {m['fscore']:.4f}"


def _fmt(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def write_compare(root: Path, results: dict, histories: dict, views: dict) -> None:
    """compare.json, compare.md (one table) and compare.png (IoU curves above, one view of each field below)."""
    write_json(root / "compare.json", results)
    lines = ["| param | IoU | IoU near-surface | Chamfer-L1 | Chamfer-L2 | F-score@1% | normal consistency | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for param, m in results.items():
        if "diverged" in m:
            lines.append(f"| {param} | diverged | - | - | - | - | - | - |")
            continue
        lines.append(f"| {param} | {m['iou']:.4f} | {m['iou_surface']:.4f} | {_fmt(m['chamfer_l1'], 5)} | "
                     f"{_fmt(m['chamfer_l2'], 6)} | {m['fscore']:.4f} | {_fmt(m['normal_consistency'], 4)} | "
                     f"{m['seconds']:.1f} |")
    atomic_write_text(root / "compare.md", "\n".join(lines) + "\n")
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig = plt.figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1.3])
    for col, key in enumerate(("iou", "iou_surface")):
        ax = fig.add_subplot(grid[0, 2 * col: 2 * col + 2])
        for param, rows in histories.items():
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=param)
        ax.set_xlabel("step")
        ax.set_ylabel("IoU" if key == "iou" else "IoU near-surface")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for col, name in enumerate(["source", *histories]):
        ax = fig.add_subplot(grid[1, col])
        ax.imshow(np.clip(views[name], 0, 1))
        ax.set_title(name if name == "source" else f"{name}: IoU {results[name]['iou']:.4f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("plain vs WN vs RWF (equal seed, samples, steps)")
    fig.tight_layout()
    with atomic_path(root / "compare.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# -- commands on an existing run ----------------------------------------------------------------------------------
def run_config(run: Path, cfg_dict: dict) -> tuple[SDFConfig, Normalization]:
    """The saved config and normalization of ``run``, or UserError naming config.json when it is not valid."""
    where = run / CONFIG
    try:
        if cfg_dict.get("kind") != "sdf":
            raise ValueError(f"kind {cfg_dict.get('kind')!r}, not 'sdf'")
        cfg = SDFConfig.from_dict(cfg_dict)
        norm = Normalization.from_dict(cfg_dict["normalization"])
        if len(norm.center) != 3 or not all(math.isfinite(c) for c in norm.center) \
                or not (math.isfinite(norm.scale) and norm.scale > 0):
            raise ValueError(f"normalization {cfg_dict['normalization']!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{where}: not a valid sdf run config ({type(e).__name__}: {e})") from None
    _check_saved(cfg, where, cfg_dict)
    return cfg, norm


def _check_saved(cfg: SDFConfig, where: Path, saved: dict | None) -> None:
    """``check_options`` for a config read from ``where`` (``saved``: its content): every failure is a UserError
    naming the file. A run of a file whose path is gone from the config would be evaluated against the built-in
    shape (a null path means that shape)."""
    source = saved.get("source") if isinstance(saved, dict) else None
    if cfg.path is None and isinstance(source, dict) and source.get("format", "builtin") != "builtin":
        raise UserError(f"{where}: not a valid sdf run config (no path, but the run was fitted on a "
                        f"{source.get('format')!r} file, not the built-in shape)")
    try:
        if cfg.path is not None and not isinstance(cfg.path, str):
            raise TypeError(f"path {cfg.path!r}")
        check_options(cfg)
        build_model(cfg)  # the encoding and the MLP can be built
    except UserError as e:
        raise UserError(f"{where}: not a valid sdf run config ({e})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{where}: not a valid sdf run config ({type(e).__name__}: {e})") from None


def load_run(run: Path, cfg_dict: dict, device_name: str):
    """The config, the trained model (on the device), the normalization, the checkpoint state and the device."""
    cfg, norm = run_config(run, cfg_dict)
    device = resolve_device(device_name)
    model = build_model(cfg)
    state = load_run_model(run, model)
    model.eval()
    return cfg, model.to(device), norm, state, device


def eval_run(run: Path, cfg_dict: dict, args) -> int:
    cfg, model, norm, state, device = load_run(run, cfg_dict, args.device)
    mesh, info = load_source(cfg, run)  # a point-cloud run's stored cloud: the one it was trained on
    source = cfg_dict.get("source")
    saved_sha = source.get("sha256") if isinstance(source, dict) else None
    if saved_sha and info.get("sha256") != saved_sha:
        print(f"rwf: warning: {cfg.path} changed since the fit; metrics refer to the new file", file=sys.stderr)
    try:
        steps, seconds = int(state["step"]), round(float(state["seconds"]), 3)
    except (KeyError, TypeError, ValueError) as e:  # a checkpoint with weights but no training state
        raise checkpoint_mismatch(run / CHECKPOINT, e) from None
    saved = read_json(run / METRICS) if (run / METRICS).is_file() else None  # unreadable: said before any work
    task = ShapeTask(norm.apply(mesh), cfg, device)
    metrics = task.final_metrics(model)[0]
    metrics.update(steps=steps, seconds=seconds, param=cfg.mlp.param, target=cfg.target, mesh_res=cfg.mesh_res,
                   units="unit cube")
    print(json.dumps(metrics))
    if saved is not None:
        saved = saved if isinstance(saved, dict) else {}
        diff = [k for k in METRIC_KEYS if (saved.get(k) is None) != (metrics[k] is None)
                or (metrics[k] is not None and (not isinstance(saved[k], (int, float))
                                                or abs(saved[k] - metrics[k]) > 1e-4 * max(1.0, abs(saved[k]))))]
        if diff:
            print(f"rwf: warning: {', '.join(diff)} differ from {run / METRICS}, the fit's figures (left as they "
                  "are): the source changed since, or the fit ran an earlier version that defined them otherwise",
                  file=sys.stderr)
    return 0


def export_mesh_run(run: Path, cfg_dict: dict, args) -> int:
    check_grid_res(args.res)  # before any work: a typo such as --res 100000 must not run out of memory
    if args.out and Path(args.out).is_dir():
        raise UserError(f"{args.out}: is a folder; --out takes the mesh file to write")
    fmt = args.format or (Path(args.out).suffix.lstrip(".").lower() if args.out else "ply")
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"{args.out}: cannot tell the mesh format from the suffix; pass --format ply|obj|glb")
    # by default beside the fit's mesh.ply (the mesh metrics.json describes), named by its grid, never over it
    out = Path(args.out) if args.out else run / f"mesh_{args.res}.{fmt}"
    if out.suffix.lower().lstrip(".") != fmt:
        raise UserError(f"{out}: the suffix does not match --format {fmt}")
    check_output_folder(out)
    level = getattr(args, "level", None) or 0.0
    if not math.isfinite(level):
        raise UserError(f"--level must be a finite number, got {level}")
    cfg, model, norm, _, device = load_run(run, cfg_dict, args.device)
    refuse_source_as_output(out, cfg.path)
    check_output_file(out, getattr(args, "force", False))
    # a distance level is given in the mesh's units, like the mesh written; the field's are the unit cube's
    field_level = level * norm.scale if cfg.target == "sdf" else level
    t0 = time.perf_counter()
    mesh = extract_mesh(field_fn(model), res=args.res, level=field_level, inside=cfg.inside, device=device,
                        progress=not args.quiet)
    seconds = time.perf_counter() - t0
    if len(mesh.faces) == 0:
        hint = ""
        if cfg.target == "occupancy" and level != 0:  # 0.5 read as a probability is a logit of p = 0.62
            p = 1 / (1 + math.exp(-level)) if abs(level) < 700 else float(level > 0)
            hint = f" (an occupancy run's --level is a logit: {level:g} is p = {p:.3g}; 0 is p = 0.5)"
        raise UserError(f"{run}: the field has no surface at level {level} on a {args.res}^3 grid{hint}")
    capped = capped_vertices(mesh)
    if capped:  # e.g. a --level that moves the surface beyond the box the field was fitted in
        margin = (1 - cfg.fill) / 2 / norm.scale
        warnings.warn(f"the surface at level {level:g} reaches the box the field was fitted in and is capped flat on "
                      f"its faces ({capped} of {len(mesh.vertices)} vertices); the box reaches {margin:.3g} (the "
                      f"mesh's units) beyond the source along its longest side", RwfWarning, stacklevel=2)
    mesh = remove_small_components(mesh, getattr(args, "min_component", 0.0) or 0.0)
    save_mesh(norm.apply(mesh, inverse=True), out, fmt)
    print(f"{out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces; {args.res}^3 grid in {seconds:.1f} s")
    return 0


def render_run(run: Path, cfg_dict: dict, args) -> int:
    """The 4 preview views in one picture, or with ``--orbit N`` a folder of N frames (and videos)."""
    cfg, _ = run_config(run, cfg_dict)
    res = max(8, round(cfg.preview_res * args.scale))
    if res > MAX_VIEW_RES:
        raise UserError(f"--scale {args.scale:g}: views of {res}x{res} pixels exceed {MAX_VIEW_RES} per side "
                        f"(the run's preview is {cfg.preview_res}); use a smaller --scale")
    if getattr(args, "orbit", None):
        return _render_orbit(run, cfg_dict, args, res)
    from .cli import option_typed  # noqa: PLC0415

    for option in ("video", "fps"):
        if option_typed(args, option, False if option == "video" else 24):
            raise UserError(f"--{option} goes with --orbit N for sdf runs (a render without it is one picture)")
    out = output_image_path(args.out, run / f"render_x{args.scale:g}.png")
    check_output_file(out, getattr(args, "force", False))
    cfg, model, _, _, device = load_run(run, cfg_dict, args.device)
    views = field_views(model, cfg, res, device)
    try:
        write_image(out, preview_image({"field": views}))
    except ValueError as e:
        raise UserError(f"{out}: cannot write ({e})") from None
    except OSError as e:  # a folder that cannot be written, a full disk: a failure of the machine (exit 1)
        e.filename, e.filename2 = str(out), None  # the output, not the temporary beside it
        raise
    print(f"{out}: 4 views of {res}x{res}")
    return 0


ORBIT_ELEVATION = 25.0
"""degrees above the horizon of an SDF run's ``--orbit`` cameras: the preview's"""


def _render_orbit(run: Path, cfg_dict: dict, args, res: int) -> int:
    """``rwf render RUN --orbit N`` of an SDF run: N frames on a circle around the shape at the preview's elevation
    and distance, azimuth 360 i / N degrees: ``rgb_XXXX.png`` shaded as the preview (normals as colours on white),
    ``depth_XXXX.exr`` the distance along the ray to the surface in the source mesh's units (0 where the ray meets
    none, as a NeRF render's), ``depth_XXXX.png`` that in colour; with ``--video`` rgb.mp4 and depth.mp4."""
    from .camera_path import check_frame_count  # noqa: PLC0415
    from .cli import option_typed  # noqa: PLC0415
    from .frame_folder import (check_frame_folder, check_out_option, depth_colors, depth_span,  # noqa: PLC0415
                               frame_names, write_frames)
    from .spheretrace import FieldRenderer  # noqa: PLC0415

    n = args.orbit
    check_frame_count(n, f"--orbit {n}")
    if not args.video and option_typed(args, "fps", 24):
        raise UserError("--fps is the frame rate of --video; without --video no video is written")
    check_out_option(args.out, cfg_dict.get("path"), "an SDF render", inputs_are="source")
    out = Path(args.out) if args.out else run / "renders" / "orbit"
    names = frame_names(n, video=args.video)
    fps = args.fps if args.video else None
    force = getattr(args, "force", False)
    check_frame_folder(out, names, fps, force)  # before the model loads and the renderer measures the field
    cfg, model, norm, _, device = load_run(run, cfg_dict, args.device)
    renderer = FieldRenderer(field_fn(model), res, cfg.target, device=device)
    depth_range = None

    def frame(i):
        nonlocal depth_range
        image, t = renderer.view(360.0 * i / n, ORBIT_ELEVATION)
        hit = np.isfinite(t)
        depth = np.where(hit, t / norm.scale, 0.0).astype(np.float32)  # unit-box distances back in the mesh's units
        if depth_range is None:
            depth_range = depth_span(depth, hit)
        depth_rgb = depth_colors(depth, hit.astype(np.float32), *depth_range)
        files = [(f"rgb_{i:04d}.png", image, 8), (f"depth_{i:04d}.exr", depth[..., None], 8),
                 (f"depth_{i:04d}.png", depth_rgb, 8)]
        return files, {"rgb.mp4": image, "depth.mp4": depth_rgb}

    write_frames(out, n, frame, names, fps, force, getattr(args, "quiet", False))
    print(f"{out}: {n} frames of {res}x{res}{f' and rgb.mp4, depth.mp4 at {args.fps:g} fps' if args.video else ''}")
    return 0
