"""The masked colour loss of a NeRF step is the mask-weighted mean of the rays' errors, however few rays the mask
keeps (it divided by max(sum of weights, 1), so a step whose weights summed under 1 was scaled down)."""

import pytest
import torch

from rwf_render.nerf_config import NeRFConfig
from rwf_render.nerf_task import CollapseWatch, NeRFTask


class _Model:
    pose_correction = None

    def __init__(self, rgb):
        self.rgb = rgb
        self.knob = torch.nn.Parameter(torch.zeros(()))

    def parameters(self):
        return [self.knob]

    def render_rays(self, rays_o, rays_d, **kw):
        n = rays_o.shape[0]
        return {"rgb": self.rgb + self.knob, "n_samples": 4 * n, "opacity": torch.ones(n)}


def _task():
    task = object.__new__(NeRFTask)
    task.cfg, task.device, task.timings, task.last_step = NeRFConfig(), torch.device("cpu"), None, 0
    task.n_rays, task.total_samples, task.collapse = 4, 0, CollapseWatch()
    return task


@pytest.mark.parametrize("weights", [[0.2, 0.1, 0.0, 0.0], [0.0, 0.0, 0.0, 0.05], [1.0, 1.0, 0.5, 0.0],
                                     [0.0, 0.0, 0.0, 0.001]])
def test_the_masked_loss_is_the_weighted_mean_of_the_rays_errors(weights):
    target = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.2, 0.4, 0.6]])
    pred = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    w = torch.tensor(weights)
    b = {"rays_o": torch.zeros(4, 3), "rays_d": torch.ones(4, 3), "near": None, "far": None, "bg": torch.ones(4, 3),
         "image_idx": torch.zeros(4, dtype=torch.long), "jitter": torch.zeros(4), "radii": torch.ones(4),
         "target": target, "weight": w, "depth": None, "occlusion_jitter": None, "occlusion_scale": 0.0}
    terms, stats = _task().loss(_Model(pred), b)
    per_ray = ((pred - target) ** 2).mean(dim=1)
    want = float((per_ray * w).sum() / w.sum())
    assert float(terms["mse"].detach()) == pytest.approx(want, rel=1e-6)
    assert stats["psnr_train"] == pytest.approx(-10 * torch.log10(torch.tensor(want)).item(), rel=1e-5)


def test_a_step_whose_rays_all_miss_the_mask_has_no_loss():
    b = {"rays_o": torch.zeros(2, 3), "rays_d": torch.ones(2, 3), "near": None, "far": None, "bg": torch.ones(2, 3),
         "image_idx": torch.zeros(2, dtype=torch.long), "jitter": torch.zeros(2), "radii": torch.ones(2),
         "target": torch.zeros(2, 3), "weight": torch.zeros(2), "depth": None, "occlusion_jitter": None,
         "occlusion_scale": 0.0}
    terms, _ = _task().loss(_Model(torch.ones(2, 3)), b)
    assert float(terms["mse"].detach()) == 0.0 and torch.isfinite(terms["mse"])
