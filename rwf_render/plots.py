"""Figures: training curves and side-by-side comparisons (matplotlib, headless)."""

from __future__ import annotations

import os

import numpy as np

from .rundir import atomic_path


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _plt().close(fig)


def curve_png(path: str | os.PathLike, runs: dict[str, list[dict]], keys=("psnr", "psnr_train"),
              title: str = "", ylabel: str = "PSNR (dB)") -> None:
    """A metric (PSNR by default) against step (left) and against training seconds (right), one line per run and
    key."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in runs.items():
        for key in keys:
            pts = [(r["step"], r["seconds"], r[key]) for r in rows if np.isfinite(r.get(key, np.nan))]
            if not pts:
                continue
            step, sec, val = map(np.asarray, zip(*pts))
            label = f"{name} {key}" if len(runs) > 1 else key
            style = "-" if key == keys[0] else ":"
            axes[0].plot(step, val, style, label=label)
            axes[1].plot(sec, val, style, label=label)
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("seconds (training only)")
    for ax in axes:
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def crops_png(path: str | os.PathLike, images: dict[str, np.ndarray], runs: dict[str, list[dict]],
              title: str = "") -> None:
    """Overlaid test-PSNR curves on top, and the same centre crop of each image side by side below."""
    plt = _plt()
    n = len(images)
    fig = plt.figure(figsize=(3.2 * max(n, 3), 7))
    grid = fig.add_gridspec(2, max(n, 2), height_ratios=[1, 1.2])
    ax_step = fig.add_subplot(grid[0, : max(n, 2) // 2])
    ax_sec = fig.add_subplot(grid[0, max(n, 2) // 2:])
    for name, rows in runs.items():
        pts = [(r["step"], r["seconds"], r["psnr"]) for r in rows if np.isfinite(r.get("psnr", np.nan))]
        if pts:
            step, sec, val = map(np.asarray, zip(*pts))
            ax_step.plot(step, val, label=name)
            ax_sec.plot(sec, val, label=name)
    ax_step.set_xlabel("step")
    ax_sec.set_xlabel("seconds (training only)")
    for ax in (ax_step, ax_sec):
        ax.set_ylabel("test PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for i, (name, img) in enumerate(images.items()):
        h, w = img.shape[:2]
        ch, cw = max(h // 3, 1), max(w // 3, 1)
        crop = img[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        ax = fig.add_subplot(grid[1, i])
        grey = crop.shape[2] < 3  # grey, or grey + alpha: the grey
        shown = np.clip(crop[..., 0] if grey else crop[..., :3], 0, 1)
        ax.imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def error_map(pred: np.ndarray, target: np.ndarray, vmax: float = 0.2) -> np.ndarray:
    """Absolute error averaged over channels, through the 'inferno' colormap on [0, vmax]; (H, W, 3) in [0, 1]."""
    import matplotlib  # noqa: PLC0415

    err = np.abs(np.asarray(pred) - np.asarray(target)).mean(axis=2)
    return matplotlib.colormaps["inferno"](np.clip(err / vmax, 0, 1))[..., :3].astype(np.float32)
