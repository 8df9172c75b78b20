"""The shape-fitting task: its config, the source mesh, batches from a refreshed pool of exact targets, the losses
(L1 or clamped L1 on distance, BCE on occupancy, eikonal and normal terms) and the metrics. ``sdf.py`` wires it to
the ``rwf`` command; the benchmark uses it directly.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import RwfWarning
from .evalchunk import eval_chunk
from .fields import EncodingConfig, MLPConfig, NeuralField, config_dict, from_dict
from .mesh import MeshQuery, closed_parts, extract_mesh, iou, iou_points, surface_metrics
from .mesh_io import load_mesh, mesh_report
from .point_cloud import (STORED_CLOUD, CloudQuery, PointCloud, cloud_report, is_point_cloud_file,
                          load_point_cloud, load_stored_cloud)
from .shape_samples import draw_samples, orient_outward, trefoil
from .trainer import ConstantWatch, TrainConfig

BUILTIN = "trefoil"
TARGETS = ("sdf", "occupancy")
LOSSES = ("l1", "clamped")
EVAL_SEED = 20221005  # fixed test points and surface samples: metrics are comparable across runs and seeds
HISTORY_POINTS = 2**16  # IoU during training uses the first this many test points of each set


@dataclass
class SDFConfig:
    path: str | None = None
    """mesh file; None uses the built-in trefoil knot"""
    target: str = "sdf"
    """sdf: regress signed distance; occupancy: BCE on inside/outside (logit output)"""
    fill: float = 0.9
    """longest side of the mesh's bounding box in the unit cube"""
    vote_dirs: int = 0
    """rays voting inside/outside per point (0: 3 for watertight meshes, 15 for open ones)"""
    pool: int = 2**17
    """training points with exact targets, redrawn every refresh_every steps"""
    refresh_every: int = 100
    """steps between pool redraws"""
    batch: int = 4096
    """points per step, drawn from the pool"""
    mix: tuple = (0.25, 0.25, 0.2, 0.3)
    """pool shares: surface, near (thin shell), far (wide band), uniform"""
    near_sigmas: tuple = (0.005, 0.05)
    """std of the two Gaussian shells around the surface (unit-cube units)"""
    loss: str = "l1"
    """sdf target: l1 | clamped (DeepSDF: |clamp(f) - clamp(sdf)|, clamp at +-clamp)"""
    clamp: float = 0.1
    """clamped loss: distance beyond which errors are not penalized"""
    eval_points: int = 2**18
    """IoU test points per set (uniform, near-surface)"""
    mesh_res: int = 128
    """grid resolution of mesh.ply and of the mesh metrics"""
    metric_points: int = 100_000
    """surface samples per mesh for Chamfer, F-score and normal consistency"""
    preview_res: int = 128
    """pixels per side of each preview view"""
    encoding: EncodingConfig = field(default_factory=lambda: EncodingConfig(kind="fourier", m=128, sigma=3.0))
    mlp: MLPConfig = field(default_factory=lambda: MLPConfig(depth=4, width=128, param="rwf"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, schedule="exp",
                                                                                  eval_every=100, ckpt_every=250))
    model_seed: int = 0
    """seed of the Fourier matrix, W0 and the RWF scales"""

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(mlp=config_dict(self.mlp), mix=list(self.mix), near_sigmas=list(self.near_sigmas))
        return {"kind": "sdf", **d}

    @classmethod
    def from_dict(cls, d: dict) -> "SDFConfig":
        simple = {k: d[k] for k in ("path", "target", "fill", "vote_dirs", "pool", "refresh_every", "batch", "loss",
                                    "clamp", "eval_points", "mesh_res", "metric_points", "preview_res",
                                    "model_seed") if k in d}
        return cls(**simple, mix=tuple(d.get("mix", cls.mix)), near_sigmas=tuple(d.get("near_sigmas", cls.near_sigmas)),
                   encoding=from_dict(EncodingConfig, d["encoding"]), mlp=from_dict(MLPConfig, d["mlp"]),
                   train=from_dict(TrainConfig, d["train"]))

    @property
    def inside(self) -> str:
        """Where the field's inside lies relative to level 0: below for distances, above for logits."""
        return "below" if self.target == "sdf" else "above"


# -- data ---------------------------------------------------------------------------------------------------------
def load_source(cfg: SDFConfig, run: Path | None = None) -> tuple:
    """The mesh or oriented point cloud (``point_cloud.PointCloud``: a PLY without faces, XYZ text) to fit, in its
    own units, and facts about it (format, sha256, watertightness or point count and where the normals came from).

    ``run``: the folder of a run of ``cfg``. Where it holds the cloud its fit trained on (``point_cloud.STORED_CLOUD``,
    written by every point-cloud fit since it was introduced), that copy is returned, normals included, and the
    source file is only hashed, never parsed nor its normals estimated (~20 s per 100k points):
      - source unchanged (same sha256 as when stored): the copy, silently;
      - source changed or gone: the copy, with one ``RwfWarning`` saying so: a run stays evaluable after its input
        moves, and stays what it was trained on (eval's metrics and a --resume use the fit's cloud, not the new
        file; a mesh run's --resume refuses a changed mesh instead). ``info`` then describes the copy: its
        "sha256" is the one of the file it came from;
      - copy unreadable (damaged, truncated): UserError naming it; deleting it makes the run one of the next case.
    Without a stored copy (``run`` None, a mesh, a run made before copies were stored) the source is read as for a
    new fit, missing normals estimated again.
    """
    if cfg.path is not None and run is not None and (Path(run) / STORED_CLOUD).is_file():
        return _stored_source(cfg.path, Path(run) / STORED_CLOUD)
    if cfg.path is None:
        mesh = trefoil()
        info = {"format": "builtin", "name": BUILTIN}
    else:
        mesh = load_point_cloud(cfg.path) if is_point_cloud_file(cfg.path) else load_mesh(cfg.path)
        info = {"format": Path(cfg.path).suffix.lower().lstrip("."),
                "sha256": hashlib.sha256(Path(cfg.path).read_bytes()).hexdigest()}
    return mesh, {**info, **(cloud_report(mesh) if isinstance(mesh, PointCloud) else mesh_report(mesh))}


def _stored_source(path: str, stored: Path) -> tuple[PointCloud, dict]:
    """``load_source`` from a run's stored cloud: the cloud and its facts, warning when ``path`` changed or is gone."""
    cloud, sha = load_stored_cloud(stored)
    try:
        now = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:  # gone (moved, deleted, unreadable): the run keeps its cloud
        warnings.warn(f"{path}: {e.strerror or 'cannot be read'}; using the point cloud the run was trained on "
                      f"({stored})", RwfWarning, stacklevel=3)
    else:
        if now != sha:
            warnings.warn(f"{path} changed since the fit; using the point cloud the run was trained on ({stored}), "
                          f"not the new file (fit it in a new run)", RwfWarning, stacklevel=3)
    return cloud, {"format": Path(path).suffix.lower().lstrip("."), "sha256": sha, **cloud_report(cloud)}


class ShapeTask:
    """Fit a field to a mesh or an oriented point cloud in the unit cube; see the trainer's task protocol.

    Args:
        mesh: the mesh (or ``point_cloud.PointCloud``) in unit-cube coordinates; cfg: SDFConfig; device: where the
            batches go.
    """

    def __init__(self, mesh, cfg: SDFConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.dead = ConstantWatch("evaluation point")
        self.cloud = isinstance(mesh, PointCloud)
        if self.cloud:  # targets, labels and metrics from the cloud's own signed distance (``point_cloud``)
            self.query, self.mesh = CloudQuery(mesh), mesh
            self.orientation = self.query.outward_agreement()
        else:
            self.query = MeshQuery(mesh, cfg.vote_dirs or None, device=device)  # (the device: only without open3d)
            self.mesh, self.orientation = orient_outward(mesh, self.query)
        if not self.cloud and closed_parts(self.mesh) > 1:  # overlapping closed parts (a GLB scene): their union
            self.query = MeshQuery(self.mesh, cfg.vote_dirs or None, device=device, union=True)
            self.mesh = self.query.surface  # the solid's boundary: faces inside other parts are not targets
        self.uniform, self.near = iou_points(self.mesh, cfg.eval_points, seed=EVAL_SEED)
        self.in_uniform, self.in_near = self.query.inside(self.uniform), self.query.inside(self.near)
        self.pool, self.pool_id = None, -1
        w = cfg.train.loss_weights
        self.w_eikonal, self.w_normal = w.get("eikonal", 0.0), w.get("normal", 0.0)

    def batch(self, step: int, generator: torch.Generator):
        pool_id = step // self.cfg.refresh_every
        if pool_id != self.pool_id:  # a function of (seed, pool_id) only, so a resumed fit draws the same pool
            self.pool = draw_samples(self.mesh, self.query, self.cfg.pool, self.cfg.mix, self.cfg.near_sigmas,
                                     seed=self.cfg.train.seed * 1_000_003 + pool_id,
                                     distances=self.cfg.target == "sdf")
            self.pool_id = pool_id
        idx = torch.randint(len(self.pool), (min(self.cfg.batch, len(self.pool)),), generator=generator)
        return self.pool.index(idx).to(self.device)

    def loss(self, model, b):
        need_grad = self.cfg.target == "sdf" and (self.w_eikonal > 0 or self.w_normal > 0)
        x = b.points.requires_grad_(need_grad)
        f = model(x)[:, 0]
        if self.cfg.target == "occupancy":
            terms = {"bce": F.binary_cross_entropy_with_logits(f, b.inside.float())}
            return terms, {"acc_train": float(((f.detach() > 0) == b.inside).float().mean())}
        if self.cfg.loss == "clamped":
            c = self.cfg.clamp
            terms = {"sdf": (f.clamp(-c, c) - b.sdf.clamp(-c, c)).abs().mean()}
        else:
            terms = {"sdf": (f - b.sdf).abs().mean()}
        if need_grad:
            grad = sdf_gradient(f, x, create_graph=True)
            if self.w_eikonal > 0:
                terms["eikonal"] = eikonal_loss(grad)
            if self.w_normal > 0 and b.surface.any():
                terms["normal"] = (1 - F.cosine_similarity(grad[b.surface], b.normals[b.surface], dim=-1)).mean()
        return terms, {}

    def inside_of(self, model, points: np.ndarray, watch: bool = False) -> np.ndarray:
        values = predict(model, torch.from_numpy(points).to(self.device))
        if watch:
            self.dead.check(values.reshape(values.shape[0], -1))
        return (values < 0 if self.cfg.target == "sdf" else values > 0).cpu().numpy()

    def evaluate(self, model) -> dict:
        n = HISTORY_POINTS
        return {"iou": iou(self.inside_of(model, self.uniform[:n], watch=True), self.in_uniform[:n]),
                "iou_surface": iou(self.inside_of(model, self.near[:n]), self.in_near[:n])}

    def final_metrics(self, model) -> tuple[dict, object]:
        """IoU on every test point, and the surface metrics of the mesh extracted at ``mesh_res``; returns the
        metrics and that mesh (unit-cube coordinates). For a point cloud, IoU compares with the inside its signed
        distance implies, the surface metrics with its points and normals: "reference" says so."""
        extracted = extract_mesh(field_fn(model), res=self.cfg.mesh_res, inside=self.cfg.inside,
                                 device=self.device)
        metrics = {"iou": iou(self.inside_of(model, self.uniform), self.in_uniform),
                   "iou_surface": iou(self.inside_of(model, self.near), self.in_near),
                   **surface_metrics(extracted, self.mesh, self.cfg.metric_points, seed=EVAL_SEED)}
        if self.cloud:
            metrics["reference"] = "point cloud"
        return metrics, extracted


def sdf_gradient(f: torch.Tensor, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """d f / d x for values f (N,) of points x (N, 3) that require grad; with ``create_graph`` the result can be
    differentiated again (the eikonal and normal terms train the weights through it): (N, 3)."""
    (grad,) = torch.autograd.grad(f.sum(), x, create_graph=create_graph)
    return grad


def eikonal_loss(grad: torch.Tensor) -> torch.Tensor:
    """Eikonal penalty (Gropp et al. 2020, IGR): mean (|grad f| - 1)^2; zero for a true distance field."""
    return ((grad.norm(dim=-1) - 1) ** 2).mean()


def field_fn(model):
    """The model as a callable points (N, 3) -> values (N,) for extraction and rendering."""
    return lambda x: model(x)[:, 0]


@torch.no_grad()
def predict(model, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """model(x)[:, 0] in chunks: x (N, 3) -> (N,)."""
    model.eval()
    return torch.cat([model(c)[:, 0] for c in x.split(eval_chunk(x.device, chunk))]) if len(x) else x[:, 0]


def build_model(cfg: SDFConfig) -> NeuralField:
    return NeuralField(3, 1, cfg.encoding, cfg.mlp, seed=cfg.model_seed)

