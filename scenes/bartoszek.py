"""A real photo capture: $RWF_DATA/colmap/bartoszek (23 photos, COLMAP model), converted on first use."""

from pathlib import Path

from . import Preset, build_once, cache_dir, shared_data


def prepare(quiet: bool = False) -> Path:
    src = shared_data("colmap/bartoszek")
    out = cache_dir() / "bartoszek-v3"  # v2: per-frame near/far; v3: sparse depth maps

    def make(force: bool = False):
        from data_tools.colmap import convert_model

        if not quiet:
            print(f"rwf: converting {src} into {out} (once)", flush=True)
        convert_model(src / "sparse" / "0", src / "images", out, force=force, log=lambda *a, **k: None, bounds=True,
                      depth=True)

    return build_once(out, "transforms.json", make)


PRESET = Preset(
    name="bartoszek",
    description="real capture (23 photos, 1000 px) at 250 px; held-out views stay blurred (BENCHMARKS.md)",
    prepare=prepare,
    settings={
        "downscale": (4, "250 px wide keeps a CPU fit within minutes"),
        "background": ("learned", "real photos have no alpha: what lies beyond the grid needs its own colour"),
        "appearance_dim": (0, "per-image codes let the field fit each photo apart: held-out 12.5 dB with, 16 without"),
        "far_bounds": (False, "the far bounds (the farthest point a photo observes, +10 %) cut off the table and "
                             "wall behind the statue: 18.0 against 15.3 dB after 600 steps (BENCHMARKS.md)"),
        "sigma": (0.5, "a smooth field generalizes to the held-out photos: at 2000 steps the statue is in place and "
                       "shaped where sigma 8 leaves a faint blotch, PSNR level (BENCHMARKS.md, 'Fourier frequencies "
                       "for the real capture')"),
        "grid_levels": (3, "the photos reach beyond the scene box"),
        "grid_resolution": (64, "the warm-up queries every cell for 256 steps: 64^3 made them 3x faster on a CPU"),
        "cone_angle": (1 / 64, "coarser steps far from the cameras, as instant-ngp for large scenes"),
        "target_samples": (1 << 15, "CPU-sized batches"),
        "depth_loss": (0.0, "COLMAP's depth maps (--depth-loss 0.1) add nothing once the occlusion loss is ramped "
                            "in: 18.37 / 17.83 dB with, 18.37 / 17.90 without, SSIM 0.512 / 0.479 against 0.530 / "
                            "0.531 on seeds 0 / 1 at 2000 steps (BENCHMARKS.md)"),
        "occlusion_loss": (1.0, "no density just past each photo's near bound (FreeNeRF): 18.0 against 16.8 dB, "
                                "SSIM 0.47 against 0.39 at 600 steps (BENCHMARKS.md); ramped in over the default "
                                "--occlusion-warmup 300 steps, without which the field empties"),
        "steps": (2000, "test PSNR keeps rising to 2000 steps: 17.1 dB against 16.4 after 1000 (BENCHMARKS.md)"),
        "eval_every": (500, "validation renders of 250 px photos cost a few steps each"),
    },
)
