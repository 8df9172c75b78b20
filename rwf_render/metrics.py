"""Image metrics on values in [0, 1]."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.hub


def mse_to_psnr(mse: float) -> float:
    """PSNR = -10 log10(MSE) for signals in [0, 1]; inf for a perfect match."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def psnr(pred, target) -> float:
    """PSNR between two arrays/tensors of equal shape, values in [0, 1], MSE over every entry. Integer images (0..255
    read as they are would score about 48 dB too low) are refused."""
    for a in (pred, target):
        kind = a.dtype.is_floating_point if isinstance(a, torch.Tensor) else np.asarray(a).dtype.kind == "f"
        if not kind:
            raise TypeError(f"psnr takes floating-point images in [0, 1], got {a.dtype}")
    if isinstance(pred, torch.Tensor):
        return mse_to_psnr(float(torch.mean((pred.double() - target.double()) ** 2)))
    return mse_to_psnr(float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2)))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity of (H, W, C) (or (H, W)) images in [0, 1] as NeRF papers report it (Wang et al. 2004; mip-NeRF's
    and nerfstudio's): an 11 x 11 Gaussian window of sigma 1.5, population (co)variances, K1 0.01, K2 0.03, the
    mean over the pixels whose window lies inside the image, averaged over channels (scikit-image's implementation
    with those settings; its default, a 7 x 7 uniform window, scores differently). Images narrower than 11 px keep
    the Gaussian and lose a thinner border. NaN below 3 px."""
    from skimage.metrics import structural_similarity  # noqa: PLC0415

    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.ndim == 2:  # (H, W): one channel
        pred, target = pred[..., None], target[..., None]
    side = min(pred.shape[0], pred.shape[1])
    if side < 3:
        return float("nan")
    win = min(11, side if side % 2 == 1 else side - 1)
    return float(structural_similarity(pred, target, data_range=1.0, channel_axis=2, win_size=win,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


LPIPS_MIN_SIDE = 32
"""the smallest image side AlexNet's layers leave a feature map of (31 px and less fail in its second pooling)"""
LPIPS_BACKBONE = "alexnet-owt-7be5be79.pth"
"""torchvision's AlexNet weights, the backbone of lpips' "alex" network, as torch's hub cache names them"""


def lpips_metric():
    """``(score, note)``: ``score(pred, target)`` the LPIPS distance (lpips 0.1, the AlexNet network, as nerfstudio
    and most NeRF tables report it) of two (H, W, 3) images in [0, 1], when the lpips package is installed and
    torchvision's AlexNet weights lie in torch's hub cache (nothing is downloaded: a fit may run offline); else
    ``(None, why it is absent)``. Never estimated."""
    try:
        import lpips  # noqa: PLC0415  (optional)
    except ImportError:
        return None, ("absent: the lpips package is not installed (pip install lpips, with torchvision's AlexNet "
                      "weights in torch's hub cache)")
    weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE
    if not weights.is_file():
        return None, f"absent: torchvision's AlexNet weights are not in {weights.parent}, and nothing is downloaded"
    try:
        net = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as e:  # noqa: BLE001  (a broken optional install: the metric is absent, the fit is not lost)
        return None, f"absent: lpips could not load its network ({type(e).__name__}: {e})"

    def score(pred, target) -> float:
        if min(np.shape(pred)[:2]) < LPIPS_MIN_SIDE:  # AlexNet's pooling leaves nothing of a smaller image
            raise ValueError(f"a {np.shape(pred)[1]}x{np.shape(pred)[0]} image is under the {LPIPS_MIN_SIDE} px "
                             "AlexNet's LPIPS needs")

        def nchw(x):  # [0, 1] (H, W, 3) -> [-1, 1] (1, 3, H, W)
            return torch.as_tensor(np.asarray(x), dtype=torch.float32).permute(2, 0, 1)[None] * 2 - 1

        with torch.no_grad():
            return float(net(nchw(pred), nchw(target)).reshape(()))

    return score, "lpips 0.1, AlexNet"


def steps_to_reach(history: list[dict], target: float, key: str = "psnr") -> float | None:
    """The first logged step at which ``history[key]`` reaches ``target``; None if it never does."""
    for row in history:
        if row.get(key, -math.inf) >= target:
            return row["step"]
    return None
