"""A real photo capture: $RWF_DATA/colmap/bartoszek (23 photos, COLMAP model), converted on first use."""

from pathlib import Path

from . import Preset, cache_dir, shared_data


def prepare(quiet: bool = False) -> Path:
    src = shared_data("colmap/bartoszek")
    out = cache_dir() / "bartoszek-v1"
    if (out / "transforms.json").is_file():
        return out
    from data_tools.colmap import convert_model

    if not quiet:
        print(f"rwf: converting {src} into {out} (once)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert_model(src / "sparse" / "0", src / "images", out, log=lambda *a, **k: None)
    return out


PRESET = Preset(
    name="bartoszek",
    description="real capture (23 photos, 1000 px), at 250 px for a CPU; held-out views fail so far (BENCHMARKS.md)",
    prepare=prepare,
    settings={
        "downscale": (4, "250 px wide keeps a CPU fit within minutes"),
        "background": ("learned", "real photos have no alpha: what lies beyond the box needs its own colour"),
        "appearance_dim": (8, "exposure and white balance vary between the photos"),
        "grid_levels": (2, "the capture reaches beyond the scene box"),
        "cone_angle": (1 / 256, "unbounded scene: coarser steps far from the cameras, as instant-ngp"),
        "target_samples": (1 << 15, "CPU-sized batches"),
        "steps": (4000, "about one pass over the 20 photos at ~190 rays per step (1000 steps took 19 min on 2 cores)"),
        "eval_every": (500, "validation renders of 250 px photos cost a few steps each"),
    },
)
