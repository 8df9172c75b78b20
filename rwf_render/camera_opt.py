"""Camera pose refinement: a learned rigid correction per training image (nerfstudio's SO3xR3 camera optimizer,
BARF's idea; its coarse-to-fine schedule, ``--coarse-to-fine``, lets the hash grid's levels move the cameras one
after another: ``HashGrid.open_levels``, driven by ``nerf_task.open_levels``).

Each training image i owns a 6-vector (omega_i, tau_i), zero at the start. Its corrected camera-to-world is

    c2w_i' = c2w_i @ [exp(omega_i) | tau_i]

so the correction acts in the camera's own frame: ``tau`` moves the camera along its own right / up / backward axes
(OpenGL), ``omega`` turns it about its own centre. A world ray (o, d) of image i becomes (M_i o + s_i, M_i d) with
M_i = R_i exp(omega_i) R_i^T and s_i = t_i + R_i tau_i - M_i t_i, for any ray origin (pinhole or not).

Only training rays are corrected. Held-out views keep their dataset poses, as nerfstudio's evaluation does: the
corrections also absorb a small drift of the whole scene, which those views do not share.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors ``omega`` (..., 3) (Rodrigues' formula, with its Taylor
    series below 1e-3 rad so the gradient at 0, where every correction starts, is finite and exact)."""
    theta2 = (omega * omega).sum(-1)[..., None, None]
    theta = theta2.clamp_min(1e-12).sqrt()
    small = theta2 < 1e-6
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)  # sin(t) / t
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-12))  # (1 - cos) / t^2
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*omega.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def corrected_c2w(c2w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """(N, 3, 4) camera-to-world ``c2w`` (N, 3|4, 4) right-multiplied by the rigid corrections ``delta`` (N, 6)
    (omega, tau)."""
    rot, pos = c2w[:, :3, :3], c2w[:, :3, 3]
    d_rot = so3_exp(delta[:, :3])
    return torch.cat([rot @ d_rot, (pos + (rot @ delta[:, 3:, None])[..., 0])[..., None]], -1)


class PoseCorrection(nn.Module):
    """Per-image rigid corrections of the training cameras.

    Args:
        n_images: training images.
        lr: their Adam learning rate (an optimizer group of its own, ``camera_poses``; see ``layers.param_groups``).
        unit: the scene length of one unit of the translations trained (the parameters): Adam moves a parameter by
            about ``lr`` a step whatever its gradient's size, so translations in scene units moved cameras 3e-4 of
            a metre or of a millimetre alike; the NeRF pipeline gives 1 / the field's ``density_scale``, a length of
            the scene box (1 for the +-1.515 box, and for runs fitted before).
    """

    def __init__(self, n_images: int, lr: float = 3e-4, unit: float = 1.0):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(n_images, 6))
        self.param_group = {"name": "camera_poses", "lr": lr}
        self.unit = float(unit)

    def scene_delta(self) -> torch.Tensor:
        """(N, 6) the corrections (omega in radians, tau in scene units)."""
        if self.unit == 1.0:
            return self.delta
        return torch.cat([self.delta[:, :3], self.delta[:, 3:] * self.unit], dim=1)

    def extra_repr(self) -> str:
        return f"n_images={self.delta.shape[0]}, lr={self.param_group['lr']:g}, unit={self.unit:g}"

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, image_idx: torch.Tensor, c2w: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrected rays.

        Args:
            rays_o, rays_d: (R, 3) world rays from the dataset poses. image_idx: (R,) training image of each ray.
            c2w: (N, 3|4, 4) those poses (the training split's, on the rays' device).
        Returns:
            rays_o, rays_d: (R, 3); unit directions, as ``cameras.pixel_rays`` gives for the corrected poses.
        """
        rot, pos = c2w[:, :3, :3].to(rays_o), c2w[:, :3, 3].to(rays_o)
        delta = self.scene_delta().to(rays_o)
        # (N, 3, 3): the turn about each camera's centre; the inverse, not the transpose, so a pose whose rotation
        # block is slightly scaled or sheared (datasets are not checked for it) is left alone at zero correction
        m = rot @ so3_exp(delta[:, :3]) @ torch.linalg.inv(rot)
        shift = pos + (rot @ delta[:, 3:, None])[..., 0] - (m @ pos[..., None])[..., 0]  # (N, 3)
        m_r, s_r = m[image_idx], shift[image_idx]  # (R, 3, 3), (R, 3)
        return (m_r @ rays_o[..., None])[..., 0] + s_r, nn.functional.normalize((m_r @ rays_d[..., None])[..., 0],
                                                                                 dim=-1)

    def penalty(self, diagonal: float) -> torch.Tensor:
        """nerfstudio's regularizer of the corrections: 1e-3 x the mean rotation (radians) plus 1e-2 x the mean
        translation, measured here in units of a box whose diagonal is that of nerfstudio's [-1, 1]^3 scene box, so
        it weighs the same in every scene (``diagonal``: this scene box's). Not squared: corrections the photos do not
        ask for are pulled to zero, not merely kept small, so a pose the field cannot judge (a view no other photo
        shares) stays where the dataset put it."""
        unit = diagonal / (2.0 * math.sqrt(3.0))
        return (1e-3 * self.delta[:, :3].norm(dim=-1).mean()
                + 1e-2 * (self.delta[:, 3:] * (self.unit / unit)).norm(dim=-1).mean())

    @torch.no_grad()
    def refined(self, c2w: torch.Tensor) -> torch.Tensor:
        """(N, 3, 4) the corrected poses of the training cameras ``c2w`` (N, 3|4, 4)."""
        return corrected_c2w(c2w.double(), self.scene_delta().detach().double().to(c2w.device)).to(c2w.dtype)

    @torch.no_grad()
    def magnitudes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) rotation of each correction in degrees and (N,) its translation, in the dataset's units."""
        d = self.scene_delta().detach().double()
        return d[:, :3].norm(dim=-1) * (180.0 / math.pi), d[:, 3:].norm(dim=-1)


REFINED = "cameras_refined.json"


def write_refined_cameras(run, correction: PoseCorrection, train, data: str, image_paths=None) -> dict:
    """Write the training cameras' refined poses to RUN/cameras_refined.json (atomically) and return their summary
    for metrics.json: the mean and largest correction, in degrees and in the dataset's units.

    The file is a list of poses, one per training photo, not a dataset: it has no intrinsics. ``file_path`` is each
    photo's path relative to the dataset folder (unique, where bare file names of several cameras may not be).

    Args:
        run: run directory. correction: the fitted corrections. train: the training split (``PosedImages``) whose
            dataset poses they correct. data: the dataset (its folder, or its transforms file).
        image_paths: the training photos' paths, in the split's order (default: their file names).
    """
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from .rundir import write_json  # noqa: PLC0415

    root = Path(data) if Path(data).is_dir() else Path(data).parent
    names = [os.path.relpath(p, root) for p in image_paths] if image_paths is not None else list(train.names)
    c2w = train.cameras.c2w.detach().double().cpu()
    refined = correction.refined(c2w)
    deg, dist = correction.magnitudes()
    bottom = [0.0, 0.0, 0.0, 1.0]
    frames = [{"file_path": name, "transform_matrix": refined[i].tolist() + [bottom],
               "dataset_matrix": c2w[i, :3].tolist() + [bottom], "rotation_deg": float(deg[i]),
               "translation": float(dist[i])} for i, name in enumerate(names)]
    write_json(Path(run) / REFINED, {
        "data": data, "convention": "OpenGL camera-to-world in the dataset's coordinates, as its transforms files",
        "frames": frames})
    return {"camera_rotation_deg_mean": float(deg.mean()), "camera_rotation_deg_max": float(deg.max()),
            "camera_translation_mean": float(dist.mean()), "camera_translation_max": float(dist.max())}
