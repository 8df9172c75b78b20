"""Image runs in the viewer: the field on a plane in 3D, and ground truth / reconstruction / error with PSNR.

The image lies in the world plane z = 0: field coordinates (x, y) (pixel centres / long side, y down, see
:mod:`rwf_render.image`) sit at world (x, -y, 0), so the picture is upright seen from +z with +y up. The browser
camera renders the field where its rays meet that plane, so zooming in samples the continuous field at any
resolution; ``target`` and ``error`` look up the training image (nearest pixel) instead. When the source image
is gone, the run still opens (a warning), with the reconstruction only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from rwf_render.cameras import Cameras, pixel_rays
from rwf_render.errors import UserError
from rwf_render.metrics import psnr as psnr_of
from rwf_render.plots import error_map

from .sources import FAR, Source, as_rgb, run_metrics, to_uint8

BACKGROUND = 0.12  # grey around the image
ERROR_VMAX = 0.2  # error colormap range, as rwf_render.plots.error_map
PANEL_SIDE = 256  # side-panel images smaller than this are enlarged by an integer factor


class ImageSource(Source):
    kind = "image"
    modes = ("reconstruction", "target", "error")
    panels = ("ground truth", "reconstruction", "error")
    up = (0.0, 1.0, 0.0)

    def __init__(self, model, target: np.ndarray | None, device: torch.device, run: Path | None = None,
                 metrics: dict | None = None, size: tuple[int, int] | None = None, transfer: str = "srgb"):
        """model: the image field ((N, 2) -> (N, C)); target: (H, W, C) float32 in [0, 1], or None when the source
        image is unavailable (then ``size`` (H, W) gives the lattice and only the reconstruction is shown);
        ``transfer``: the source's encoding (``image.run_transfer``): a linear (EXR) run is shown sRGB-encoded, as
        its PNG outputs are (it showed dark)."""
        super().__init__(model, device, run)
        self.transfer = transfer
        if target is None:
            self.modes = ("reconstruction",)
            self.panels = ("reconstruction",)
            target = np.full((*size, 1), np.nan, np.float32)
        self.target = np.asarray(target, np.float32)
        h, w = self.target.shape[:2]
        self.long = max(h, w)
        self.extent = (w / self.long, h / self.long)  # field coordinates span [0, W/L] x [0, H/L]
        self.target_t = torch.from_numpy(self.target).to(device)
        self.saved_metrics = metrics or {}
        self._gui = {}

    @classmethod
    def from_run(cls, run: Path, cfg: dict, device: torch.device) -> "ImageSource":
        from rwf_render import image  # noqa: PLC0415

        try:
            _, target, model, _, device = image.load_run(run, cfg, str(device))
        except UserError as e:  # the source image moved or changed shape: the model alone is still worth a look
            _, model, _, device = image.load_model(run, cfg, str(device))  # raises again if the run itself is bad
            print(f"rwf: warning: source image unavailable ({e}); showing the reconstruction only", file=sys.stderr)
            target = None
        model.eval()
        return cls(model, target, device, run, run_metrics(run, warn=False),  # the app warns
                   size=(cfg["height"], cfg["width"]), transfer=image.run_transfer(cfg))

    @classmethod
    def from_trainer(cls, trainer, cfg: dict) -> "ImageSource":
        from rwf_render.image import run_transfer  # noqa: PLC0415

        return cls(cls.snapshot(trainer.model), trainer.task.image, trainer.device, trainer.run_dir,
                   transfer=run_transfer(cfg))

    def shown(self, img: np.ndarray) -> np.ndarray:
        """(H, W, C) values of the fit as the browser shows them: RGB, sRGB-encoded as a PNG of them (alpha
        dropped)."""
        from rwf_render.image import encoded_for  # noqa: PLC0415

        return as_rgb(encoded_for(np.asarray(img, np.float32), self.transfer, ".png"))

    # -- geometry -----------------------------------------------------------------------------------------------
    def initial_view(self):
        cx, cy = self.extent[0] / 2, -self.extent[1] / 2
        return np.array([cx, cy, 1.25 * max(self.extent)]), np.array([cx, cy, 0.0])

    def scene_radius(self) -> float:
        return 0.5 * float(np.hypot(*self.extent))

    def plane_hits(self, cams: Cameras):
        """Where the camera's pixel rays meet z = 0: field coords (H, W, 2), inside mask (H, W), z-depth (H, W)."""
        rays_o, rays_d = pixel_rays(cams, normalize=False)  # (H, W, 3); t along rays_d is z-depth
        dz = rays_d[..., 2]
        t = -rays_o[..., 2] / torch.where(dz.abs() < 1e-12, torch.full_like(dz, 1e-12), dz)
        p = rays_o + t[..., None] * rays_d
        xy = torch.stack([p[..., 0], -p[..., 1]], -1)
        inside = (t > 0) & (xy[..., 0] >= 0) & (xy[..., 0] <= self.extent[0]) & (xy[..., 1] >= 0) \
            & (xy[..., 1] <= self.extent[1])
        return xy, inside, t

    def _lookup(self, xy: torch.Tensor) -> torch.Tensor:
        """Nearest training pixel at field coordinates (M, 2): (M, C)."""
        h, w = self.target.shape[:2]
        col = (xy[:, 0] * self.long).floor().long().clamp(0, w - 1)
        row = (xy[:, 1] * self.long).floor().long().clamp(0, h - 1)
        return self.target_t[row, col]

    def render(self, cams: Cameras, mode: str):
        xy, inside, t = self.plane_hits(cams.to(self.device))
        h, w = inside.shape
        rgb = torch.full((h, w, 3), BACKGROUND, device=self.device)
        pts = xy[inside].float()
        if len(pts):
            if mode == "target":
                vals = torch.from_numpy(self.shown(self._lookup(pts).cpu().numpy()))
            else:
                pred = self.model(pts).clamp(0, 1)
                if mode == "error":
                    err = error_map(pred[:, None].cpu().numpy(), self._lookup(pts)[:, None].cpu().numpy(),
                                    ERROR_VMAX)
                    vals = torch.from_numpy(err[:, 0])
                else:
                    vals = torch.from_numpy(self.shown(pred.cpu().numpy()))
            rgb[inside] = vals.to(rgb)
        depth = torch.where(inside, t, torch.full_like(t, FAR))
        return rgb, depth

    # -- panels -------------------------------------------------------------------------------------------------
    def images(self) -> dict[str, np.ndarray]:
        """Ground truth, reconstruction and error map at the training resolution, (H, W, 3) each, and PSNR."""
        from rwf_render.image import pixel_coords  # noqa: PLC0415

        h, w = self.target.shape[:2]
        with self.lock, torch.no_grad():
            coords = pixel_coords(h, w).reshape(-1, 2).to(self.device)
            recon = torch.cat([self.model(c) for c in coords.split(65536)]).clamp(0, 1)
        recon = recon.reshape(h, w, -1).cpu().numpy()
        if "ground truth" not in self.panels:
            return {"reconstruction": self.shown(recon), "psnr_all": float("nan")}
        return {"ground truth": self.shown(self.target), "reconstruction": self.shown(recon),
                "error": error_map(recon, self.target, ERROR_VMAX),
                "psnr_all": psnr_of(torch.from_numpy(recon), torch.from_numpy(self.target))}

    def setup_gui(self, server) -> None:
        imgs = self.images()
        with server.gui.add_folder("Image"):
            self._gui["psnr"] = server.gui.add_markdown(self._psnr_text(imgs["psnr_all"]))
            for name in self.panels:
                self._gui[name] = server.gui.add_image(self._panel(imgs[name]), label=name, format="png")

    def refresh_gui(self) -> None:
        if not self._gui:
            return
        imgs = self.images()
        for name in self.panels:
            self._gui[name].image = self._panel(imgs[name])
        self._gui["psnr"].content = self._psnr_text(imgs["psnr_all"])

    def _panel(self, img: np.ndarray) -> np.ndarray:
        """uint8 image for the side panel; small images are enlarged (nearest pixel) so their pixels show."""
        k = max(1, PANEL_SIDE // max(img.shape[:2]))
        return to_uint8(np.repeat(np.repeat(img, k, 0), k, 1))

    def _psnr_text(self, psnr_all: float) -> str:
        h, w = self.target.shape[:2]
        if "ground truth" not in self.panels:
            return f"source image unavailable: the reconstruction ({w}x{h}) only, no PSNR"
        lines = [f"**PSNR** {psnr_all:.2f} dB on all {h}x{w} pixels"]
        if isinstance(self.saved_metrics.get("psnr"), (int, float)):
            lines.append(f"(held-out lattice, metrics.json: {self.saved_metrics['psnr']:.2f} dB)")
        lines.append(f"error map: mean |error| over channels, inferno on [0, {ERROR_VMAX}]")
        return "  \n".join(lines)
