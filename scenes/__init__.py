"""Named scene presets for ``rwf fit nerf SCENE``.

Each preset is a module holding ``PRESET``: where its data comes from (``prepare()`` returns a dataset folder,
generating or converting it into the cache on first use) and its settings, each with a one-line reason. The
library finds them through the entry point ``rwf_render.scenes`` (it never imports this package); explicit
command-line options override a preset's settings.

    default       built-in synthetic scene, generated on the fly: no data needed, about 2 minutes on a 2-core CPU
    lego          Blender-synthetic lego from $RWF_DATA/nerf/lego_400 at 100x100, sized for a 2-core CPU
    lego-gpu      lego at 400x400 with the hash grid, sized for a GPU
    lego-tancik   the simplified-NeRF protocol of Tancik et al. 2020 (its inverse-rendering experiment), for the comparability check
    bartoszek     a real photo capture: the COLMAP model in $RWF_DATA/colmap/bartoszek, converted on first use
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Preset:
    name: str
    description: str
    prepare: Callable[..., Path]
    """prepare(quiet=False) -> dataset folder"""
    settings: dict = field(default_factory=dict)
    """option name -> (value, one-line reason)"""


def cache_dir() -> Path:
    """Where generated and converted scenes live: $RWF_SCENE_CACHE, else $RWF_CACHE/scenes, else
    ~/.cache/rwf_render/scenes."""
    if os.environ.get("RWF_SCENE_CACHE"):
        return Path(os.environ["RWF_SCENE_CACHE"])
    root = Path(os.environ.get("RWF_CACHE") or Path.home() / ".cache" / "rwf_render")
    return root / "scenes"


def build_once(out: Path, marker: str, make: Callable[..., object]) -> Path:
    """``out`` once ``out/marker`` exists, else after ``make(force)`` writes it there. Two fits that start together
    both build (each into its own staging folder); the one that finishes second finds ``out`` taken, and reuses
    it when it is complete instead of failing. A folder without the marker is left from an interrupted or older
    build (a build only renames complete folders into place): it is rebuilt over (``force``)."""
    from rwf_render.errors import UserError

    if (out / marker).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not (out / marker).is_file():  # this cache's own stale folder: moved aside and removed (the data tools' --force replaces
        # only a dataset, and a stale folder may hold none)
        with contextlib.suppress(OSError):
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.stale-", dir=out.parent))
            os.replace(out, aside / "stale")
            shutil.rmtree(aside, ignore_errors=True)
    try:
        make(force=out.exists())
    except (UserError, OSError):  # "exists", or the rename losing to another process's (ENOTEMPTY)
        if (out / marker).is_file():  # another process finished the same scene first
            return out
        raise
    return out


def shared_data(relative: str) -> Path:
    """A dataset under $RWF_DATA; a clear error when the variable is unset or the folder missing."""
    from rwf_render.errors import UserError

    root = os.environ.get("RWF_DATA")
    if not root:
        raise UserError(f"this preset reads {relative} under $RWF_DATA; set RWF_DATA to the shared data folder "
                        "(or pass the dataset folder itself)")
    path = Path(root) / relative
    if not path.exists():
        raise UserError(f"{path}: not found (check RWF_DATA)")
    return path


def presets() -> dict[str, Preset]:
    """Every preset by name (the ``rwf_render.scenes`` entry point)."""
    from . import bartoszek, default, lego

    found = [default.PRESET, *lego.PRESETS, bartoszek.PRESET]
    return {p.name: p for p in found}
