"""The built-in default scene: a procedural still life rendered on the fly (no data needed).

data_tools' CPU ray caster renders the demo mesh (plate, sphere, box, torus, cylinder with a solid procedural
texture) into a Blender-format dataset in the cache, once; later fits reuse it.
"""

from pathlib import Path

from . import Preset, build_once, cache_dir

VERSION = 2  # bump when the generated scene changes (2: the renderer's float32 frames moved pixels on a rounding
# boundary by 1/255, 30 Nov 2026)
RES, VIEWS, VAL, TEST = 64, 60, 2, 8


def prepare(quiet: bool = False) -> Path:
    out = cache_dir() / f"default-v{VERSION}-{RES}px"

    def make(force: bool = False):
        from data_tools.synth import demo_mesh, render_dataset

        if not quiet:
            print(f"rwf: generating the built-in scene into {out} (once)", flush=True)
        render_dataset(demo_mesh(), out, res=RES, n_views=VIEWS, n_val=VAL, n_test=TEST, force=force,
                       log=lambda *a, **k: None)

    return build_once(out, "transforms_train.json", make)


PRESET = Preset(
    name="default",
    description="built-in procedural still life, 64x64, about 2 minutes on a 2-core CPU",
    prepare=prepare,
    settings={
        "background": ("random", "the renders are RGBA: on random colours the field leaves the empty space empty "
                                 "(here 0.2-0.5 dB over white, and exports on the surface; scored on white)"),
        "steps": (2000, "the scene is recognizable after about 1000 steps at 64x64 on a CPU"),
        "width": (64, "a small field is enough at 64x64 and keeps CPU steps fast"),
        "features": (64, "as above"),
        "steps_per_diagonal": (384, "64x64 images need no finer step; fewer samples per ray on a CPU"),
        "grid_resolution": (64, "as above"),
        "target_samples": (1 << 14, "CPU-sized batches"),
        "eval_every": (200, "one 64x64 validation render is cheap"),
    },
)
