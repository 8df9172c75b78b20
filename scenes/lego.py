"""Blender-synthetic lego (NeRF, Mildenhall et al. 2020) from $RWF_DATA/nerf/lego_400 (400x400 RGBA)."""

from . import Preset, shared_data


def prepare(quiet: bool = False):
    return shared_data("nerf/lego_400")


COMMON = {
    "background": ("white", "the standard protocol composites the RGBA images on white"),
}

PRESETS = [
    Preset(
        name="lego",
        description="lego at 100x100 for a 2-core CPU (the benchmark's CPU setting)",
        prepare=prepare,
        settings={
            **COMMON,
            "downscale": (4, "100x100 keeps a CPU fit within minutes"),
            "steps_per_diagonal": (512, "100 px images: twice coarser steps than at 400 px lose nothing"),
            "grid_resolution": (64, "a 64^3 grid resolves 100 px views; its full-grid warm-up updates cost 8x less"),
            "target_samples": (1 << 15, "CPU-sized batches"),
            "steps": (6000, "about 19 minutes on a 2-core CPU; past 30 dB by 15 minutes (BENCHMARKS.md)"),
            "eval_every": (500, "a 100x100 validation render costs a few steps' time"),
        },
    ),
    Preset(
        name="lego-gpu",
        description="lego at 400x400 with the hash grid, for a GPU",
        prepare=prepare,
        settings={
            **COMMON,
            "downscale": (1, "full resolution"),
            "encoding": ("hashgrid", "on an H200: 31.7 dB on the test views after 66 s, 34.2 dB after 266 s "
                                     "(BENCHMARKS.md); Fourier features widened to 256 collapsed to empty space"),
            "target_samples": (1 << 18, "GPU-sized batches, as instant-ngp"),
            "steps": (10000, "about 5 minutes on an H200 (32 steps/s)"),
        },
    ),
    Preset(
        name="lego-tancik",
        description="the simplified-NeRF protocol of Tancik et al. 2020 (its inverse-rendering experiment), 400x400, for GPUs",
        prepare=prepare,
        settings={
            **COMMON,
            "sampler": ("dense", "stratified samples at every lattice point, no occupancy grid"),
            "near": (2.0, "the protocol's near plane"),
            "far": (6.0, "the protocol's far plane"),
            "steps_per_diagonal": (166, "box diagonal 5.2 / 166 = 4 / 128: 128 samples over [2, 6]"),
            "no_view_dependence": (True, "the simplified NeRF has no view direction input"),
            "depth": (4, "MLP 4 x 256"),
            "width": (256, "MLP 4 x 256"),
            "features": (256, "256 Gaussian features"),
            "sigma": (12.41, "scale 26 without 2 pi in world units = 4.14 per unit x 3 units of box"),
            "density_act": ("relu", "ReLU density output"),
            "rays": (1024, "1024 rays per step"),
            "lr": (5e-4, "Adam 5e-4"),
            "lr_warmup": (0, "the protocol has no warm-up"),
            "schedule": ("const", "constant learning rate"),
            "steps": (50000, "50000 steps"),
        },
    ),
]
